"""Device-side cross-queue waits: PM4 ``WAIT_REG_MEM64`` through AQL PM4-IB packets on
gfx11, the soft agent's PM4 command processor (real encodings, faults on anything else),
and the host-deferred wait counter.

Tests with threads run with Python's default ``sys.unraisablehook`` (pytest installs its
own, which would hide a reporter that kills a thread)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from hal_amdgpu import wait_barriers as wait_barriers_module
from hal_amdgpu.aql_packets import (
    PM4_IB_DTYPE,
    AmdFormat,
    FenceScope,
    PacketType,
    emit_barrier_and,
    emit_pm4_ib,
    encode_header,
    header_setup_word,
    make_header,
    new_staging,
    vendor_header_word,
)
from hal_amdgpu.hsa_enums import HsaStatus, SignalCondition
from hal_amdgpu.pm4_packets import (
    Pm4Opcode,
    WaitFunction,
    decode_type3,
    encode_acquire_mem,
    encode_epoch_wait,
    encode_wait_reg_mem64,
    type3_header,
)
from hal_amdgpu.wait_barriers import WAIT_TIER_DEFER, WAIT_TIER_PM4

import hal_core

from .test_soft_hsa_queue import Harness

URI = "amdgpu://0?hsa=soft"
TIMEOUT = 60.0
EDGES = 512
_HOST = hal_core.BufferParams(
    type=hal_core.MemoryType.HOST_LOCAL | hal_core.MemoryType.DEVICE_VISIBLE,
    usage=hal_core.BufferUsage.DEFAULT | hal_core.BufferUsage.MAPPING,
)


@pytest.fixture
def default_hooks(monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)


def _queues(device):
    backend = device.backend
    return (backend._host_queue_set or backend._create_host_queues()).queues


def _deferred(device) -> int:
    return sum(q.deferred_waits for q in _queues(device))


# -- the encodings ------------------------------------------------------------------------


def test_wait_reg_mem64_words():
    out = np.zeros(32, np.uint32)
    end = encode_wait_reg_mem64(out, 0, 0x1_2345_6788, 0xAABB_CCDD_0011_2233, (1 << 63) - 1, 2)
    assert end == 9
    # type 3, count 7 (8 body dwords), opcode 0x93
    assert int(out[0]) == 0xC0079300
    assert decode_type3(int(out[0])) == (Pm4Opcode.WAIT_REG_MEM64, 8)
    assert int(out[1]) == WaitFunction.LE | (1 << 4)  # memory space
    assert [int(w) for w in out[2:9]] == [
        0x2345_6788,
        0x1,
        0x0011_2233,
        0xAABB_CCDD,
        0xFFFF_FFFF,
        0x7FFF_FFFF,
        4,
    ]
    end = encode_acquire_mem(out, end)
    assert end == 17
    assert decode_type3(int(out[9])) == (Pm4Opcode.ACQUIRE_MEM, 7)
    assert decode_type3(0x0000_1234) is None  # a type-0 header


# -- the soft agent's command processor ---------------------------------------------------


@pytest.fixture
def h(soft_hsa):
    harness = Harness(soft_hsa)
    yield harness
    soft_hsa.lib.hsa_queue_destroy(harness.queue)


_PM4_WORD = vendor_header_word(
    make_header(PacketType.VENDOR_SPECIFIC, True, FenceScope.NONE, FenceScope.NONE),
    AmdFormat.PM4_IB,
)


def _publish_ib(h, ib_address: int, dwords: int, done) -> None:
    index, slot = h.reserve()
    emit_pm4_ib(slot.reshape(1, 64), ib_address=ib_address, dword_count=dwords)
    slot.view(PM4_IB_DTYPE)[0]["completion_signal"] = done.handle
    slot.view(np.uint32)[0] = _PM4_WORD
    h.lib.hsa_signal_store_screlease(h.queue.doorbell_signal, index)


def test_wait_reg_mem64_on_a_signal_waits_for_its_value(h):
    producer = h.signal(10)
    done = h.signal(1)
    address = h.alloc(h.cpu_pools.kernarg, 4096)
    ib = h.host(address, 64, np.uint32)
    end = encode_epoch_wait(ib, 0, producer.handle, 7)  # until value <= 7
    _publish_ib(h, address, end, done)
    assert h.lib.hsa_signal_wait_scacquire(done, SignalCondition.EQ, 0, 1_000_000, 0) == 1
    h.lib.hsa_signal_store_screlease(producer, 8)
    assert h.lib.hsa_signal_wait_scacquire(done, SignalCondition.EQ, 0, 1_000_000, 0) == 1
    h.lib.hsa_signal_store_screlease(producer, 7)
    h.wait(done, 0)
    assert not h.errors


def test_wait_reg_mem64_on_plain_memory_polls(h):
    done = h.signal(1)
    address = h.alloc(h.cpu_pools.kernarg, 4096)
    ib = h.host(address, 32, np.uint32)
    flag = h.host(address + 512, 1, np.uint64)
    end = encode_wait_reg_mem64(ib, 0, address + 512, 0x55, 0xFF, WaitFunction.EQ)
    ib[end] = type3_header(Pm4Opcode.NOP, 2)  # a NOP with a two-dword body is skipped
    _publish_ib(h, address, end + 3, done)
    assert h.lib.hsa_signal_wait_scacquire(done, SignalCondition.EQ, 0, 1_000_000, 0) == 1
    flag[0] = 0x1255  # masked to 0x55
    h.wait(done, 0)
    assert not h.errors


def _bad_streams():
    def unknown_opcode(ib, address):
        ib[0] = type3_header(0x77, 1)
        return 2

    def type2_packet(ib, address):
        ib[0] = 2 << 30
        return 1

    def count_past_buffer(ib, address):
        encode_wait_reg_mem64(ib, 0, address + 512, 0, 0, WaitFunction.ALWAYS)
        return 5  # the IB ends inside the packet

    def register_space(ib, address):
        end = encode_wait_reg_mem64(ib, 0, address + 512, 0, 0, WaitFunction.ALWAYS)
        ib[1] = WaitFunction.ALWAYS  # mem_space 0: a register offset
        return end

    def unaligned_address(ib, address):
        end = encode_wait_reg_mem64(ib, 0, address + 512, 0, 0, WaitFunction.ALWAYS)
        ib[2] = (address + 516) & 0xFFFFFFFF
        return end

    def bad_function(ib, address):
        end = encode_wait_reg_mem64(ib, 0, address + 512, 0, 0, WaitFunction.ALWAYS)
        ib[1] = 7 | (1 << 4)
        return end

    def short_acquire(ib, address):
        ib[0] = type3_header(Pm4Opcode.ACQUIRE_MEM, 3)
        return 4

    return {
        "unknown_opcode": (unknown_opcode, HsaStatus.ERROR_INVALID_PACKET_FORMAT),
        "type2_packet": (type2_packet, HsaStatus.ERROR_INVALID_PACKET_FORMAT),
        "count_past_buffer": (count_past_buffer, HsaStatus.ERROR_INVALID_PACKET_FORMAT),
        "register_space": (register_space, HsaStatus.ERROR_INVALID_PACKET_FORMAT),
        "unaligned_address": (unaligned_address, HsaStatus.ERROR_INVALID_PACKET_FORMAT),
        "bad_function": (bad_function, HsaStatus.ERROR_INVALID_PACKET_FORMAT),
        "short_acquire": (short_acquire, HsaStatus.ERROR_INVALID_PACKET_FORMAT),
    }


@pytest.mark.parametrize("name", sorted(_bad_streams()))
def test_undecodable_pm4_faults_the_queue(h, name):
    write, status = _bad_streams()[name]
    done = h.signal(1)
    address = h.alloc(h.cpu_pools.kernarg, 4096)
    ib = h.host(address, 32, np.uint32)
    _publish_ib(h, address, write(ib, address), done)
    assert h.error_event.wait(10)
    assert h.errors == [status]
    assert h.lib.hsa_signal_load_scacquire(done) == 1  # the packet never completed


def test_bad_jump_and_unmapped_buffer_fault(h, soft_hsa):
    done = h.signal(1)
    index, slot = h.reserve()
    emit_pm4_ib(slot.reshape(1, 64), ib_address=0x1000, dword_count=4)
    slot.view(PM4_IB_DTYPE)[0]["ib_jump_cmd"][0] = type3_header(Pm4Opcode.NOP, 3)
    slot.view(np.uint32)[0] = _PM4_WORD
    h.lib.hsa_signal_store_screlease(h.queue.doorbell_signal, index)
    assert h.error_event.wait(10)
    assert h.errors == [HsaStatus.ERROR_INVALID_PACKET_FORMAT]

    other = Harness(soft_hsa)
    try:
        _publish_ib(other, 0x10, 4, done)  # no allocation there
        assert other.error_event.wait(10)
        assert other.errors == [HsaStatus.AMD_ERROR_MEMORY_APERTURE_VIOLATION]
    finally:
        soft_hsa.lib.hsa_queue_destroy(other.queue)


# -- the driver ---------------------------------------------------------------------------


def _copy_chain(device, edges: int, gate=None):
    """Zero the buffer, fill slot 0, then ``edges - 1`` copies each moving the previous
    slot forward, on alternating queues, each waiting on the previous op's semaphore.
    With ``gate`` (a host semaphore) the first op waits for it, signalled once all is
    submitted."""
    buf = device.allocator.allocate_buffer(_HOST, 4 * edges)
    sems = [device.create_semaphore() for _ in range(edges)]
    waits = [] if gate is None else [(gate, 1)]
    device.queue_fill(1, waits, [(sems[0], 1)], buf, 0, 4 * edges, b"\x00")
    head = device.create_semaphore()
    device.queue_fill(2, [(sems[0], 1)], [(head, 1)], buf, 0, 4, b"\x01\x02\x03\x04")
    prev = (head, 1)
    for i in range(1, edges):
        sig = (sems[i], 1)
        device.queue_copy(1 if i & 1 else 2, [prev], [sig], buf, 4 * (i - 1), buf, 4 * i, 4)
        prev = sig
    if gate is not None:
        gate.signal(1)
    prev[0].wait(1, TIMEOUT)
    return buf


def test_512_edge_chain_runs_with_no_host_deferred_wait(default_hooks):
    with hal_core.create_device(URI) as device:
        queues = _queues(device)
        assert all(q.wait_tier == WAIT_TIER_PM4 for q in queues)  # gfx1100: PM4-IB waits
        buf = _copy_chain(device, EDGES)
        assert _deferred(device) == 0
        words = np.frombuffer(buf.read(), np.uint32)
        assert (words == 0x04030201).all()  # every copy ran after the one before it
        # Each queue waited on the other's epochs on the device.
        assert queues[0].frontier.get(queues[1], 0) > 0
        assert queues[1].frontier.get(queues[0], 0) > 0


def test_deferred_wait_counter_counts_host_waits(default_hooks):
    with hal_core.create_device(URI + "&wait_barrier=defer") as device:
        assert all(q.wait_tier == WAIT_TIER_DEFER for q in _queues(device))
        buf = _copy_chain(device, 8, device.create_semaphore())
        assert _deferred(device) == 9  # the gated zero fill, the pattern fill, 7 copies
        assert (np.frombuffer(buf.read(), np.uint32) == 0x04030201).all()
    with hal_core.create_device(URI) as device:
        host = device.create_semaphore()
        done = device.create_semaphore()
        device.queue_barrier(1, [(host, 1)], [(done, 1)])  # host-signalled: deferred
        assert _deferred(device) == 1
        host.signal(1)
        done.wait(1, TIMEOUT)


def _block(queue):
    """Publish a raw barrier-AND on a fresh HSA signal (test-only): the GPU queue stalls
    until ``release()``; ``destroy()`` frees the signal once the queue moved past it (the
    soft runtime is shared by the process: a leaked signal shows in later tests). No
    epoch is used."""
    hsa = queue.hsa
    ffi = hsa.ffi
    sig = ffi.new("hsa_signal_t*")
    hsa.check(hsa.lib.hsa_amd_signal_create(1, 0, ffi.NULL, 0, sig), "signal")
    with queue._lock:
        first = queue.ring.try_reserve(1)
        assert first >= 0
        rows = new_staging(1)
        emit_barrier_and(rows, dep_signals=np.array([sig[0].handle], np.uint64))
        queue.ring.write_bodies(first, rows)
        queue.ring.commit_header(first, header_setup_word(encode_header(PacketType.BARRIER_AND)))
        queue.ring.ring_doorbell(first)
    handle = sig[0]
    return (
        lambda: hsa.lib.hsa_signal_store_screlease(handle, 0),
        lambda: hsa.lib.hsa_signal_destroy(handle),
    )


def test_undecodable_wait_stream_fails_exactly_its_queue(default_hooks, monkeypatch):
    def broken_wait(out, at, handle, value):
        out[at] = type3_header(0x77, 16)  # an opcode the command processor does not know
        return at + 17

    monkeypatch.setattr(wait_barriers_module, "encode_epoch_wait", broken_wait)
    with hal_core.create_device(URI) as device:
        q0, q1 = _queues(device)[:2]
        buf = device.allocator.allocate_buffer(_HOST, 64)
        other = device.allocator.allocate_buffer(_HOST, 64)
        s0, s1 = device.create_semaphore(), device.create_semaphore()
        release, destroy = _block(q0)
        device.queue_fill(1, [], [(s0, 1)], buf, 0, 64, b"\x05")  # q0: stalled on the device
        device.queue_fill(2, [(s0, 1)], [(s1, 1)], other, 0, 64, b"\x06")  # q1: PM4 wait
        assert q1.frontier == {q0: 1}
        with pytest.raises(hal_core.HalError, match="INVALID_PACKET_FORMAT"):
            s1.wait(1, TIMEOUT)
        release()
        s0.wait(1, TIMEOUT)  # the producer's queue and its signal are untouched
        destroy()  # q0 has run past the blocking packet
        assert s0.failure is None
        done = device.create_semaphore()
        device.queue_fill(1, [(s0, 1)], [(done, 1)], buf, 0, 64, b"\x07")
        done.wait(1, TIMEOUT)
        assert buf.read() == b"\x07" * 64
        assert _deferred(device) == 0
