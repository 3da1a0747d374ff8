"""Device-side waits between member devices of a device group over one HSA system: a wait
in device B on a semaphore that a queue of device A published waits on A's epoch signal
on B's queue (barrier-value or PM4 ``WAIT_REG_MEM64``), with no host deferral; the
topology edge says so; failures and closes on A reach B's waiting work without a hang.

Tests with threads run with Python's default ``sys.unraisablehook`` (pytest installs its
own, which would hide a reporter that kills a thread)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from hal_amdgpu import queue_completion
from hal_amdgpu.wait_barriers import WAIT_TIER_BARRIER_VALUE, WAIT_TIER_DEFER, WAIT_TIER_PM4

import hal_core
from hal_core.backend import InteropMode

from .test_device_waits import _block

TIMEOUT = 60.0
EDGES = 512
SOFT = "amdgpu://{}?hsa=soft"
_VISIBLE = hal_core.BufferParams(
    type=hal_core.MemoryType.DEVICE_LOCAL | hal_core.MemoryType.HOST_VISIBLE,
    usage=hal_core.BufferUsage.DEFAULT | hal_core.BufferUsage.MAPPING,
)


@pytest.fixture
def default_hooks(monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)


def _qset(device):
    backend = device.backend
    return backend._host_queue_set or backend._create_host_queues()


def _deferred(device) -> int:
    return sum(q.deferred_waits for q in _qset(device).queues)


def _alternating_chain(a, b, edges: int, gate=None):
    """Zero a's buffer on a, fill slot 0 on b, then ``edges - 1`` 4-byte copies each
    moving the previous slot forward, alternating between the two devices (queue 0 of
    each), each waiting on the previous op's semaphore. With ``gate`` (a host semaphore)
    the first op waits for it, signalled once everything is submitted."""
    buf = a.allocator.allocate_buffer(_VISIBLE, 4 * edges)
    devices = (a, b)
    sems = [devices[i & 1].create_semaphore() for i in range(edges)]
    zeroed = a.create_semaphore()
    a.queue_fill(1, [] if gate is None else [(gate, 1)], [(zeroed, 1)], buf, 0, 4 * edges, b"\0")
    b.queue_fill(1, [(zeroed, 1)], [(sems[0], 1)], buf, 0, 4, b"\x01\x02\x03\x04")
    prev = (sems[0], 1)
    for i in range(1, edges):
        sig = (sems[i], 1)
        devices[i & 1].queue_copy(1, [prev], [sig], buf, 4 * (i - 1), buf, 4 * i, 4)
        prev = sig
    if gate is not None:
        gate.signal(1)
    prev[0].wait(1, TIMEOUT)
    return buf


@pytest.mark.parametrize(
    ("uris", "tier"),
    [
        ((SOFT.format(0), SOFT.format(1)), WAIT_TIER_PM4),  # two GPUs, gfx1100
        ((SOFT.format(0), SOFT.format(0)), WAIT_TIER_PM4),  # two devices over one GPU
        (
            (
                SOFT.format(0) + "&soft_gpus=gfx90a,gfx90a",
                SOFT.format(1) + "&soft_gpus=gfx90a,gfx90a",
            ),
            WAIT_TIER_BARRIER_VALUE,
        ),
    ],
    ids=["gfx1100-peers", "gfx1100-same-gpu", "gfx90a-peers"],
)
def test_512_edge_chain_between_member_devices_defers_no_wait(default_hooks, uris, tier):
    with hal_core.create_device_group(list(uris)) as group:
        a, b = group.devices
        assert a.backend.hsa is b.backend.hsa  # one HSA system
        qa, qb = _qset(a).queues[0], _qset(b).queues[0]
        assert qa.wait_tier == tier and qb.wait_tier == tier
        buf = _alternating_chain(a, b, EDGES)
        assert _deferred(a) == 0 and _deferred(b) == 0
        words = np.frombuffer(buf.read(), np.uint32)
        assert (words == 0x04030201).all()  # every copy ran after the one before it
        # Each device's queue waited on the other device's queue epochs on the device.
        assert qa.frontier.get(qb, 0) > 0 and qb.frontier.get(qa, 0) > 0
        for s, d in ((0, 1), (1, 0)):
            edge = group.topology.edge(s, d)
            assert edge.wait_mode == InteropMode.NATIVE and edge.wait_cost == 0


def test_a_consumer_without_a_wait_tier_defers_and_its_edge_says_so(default_hooks):
    """Device 1 forces software deferral: waits on device 0 are deferred (COPY edge into
    device 1) while device 0 still waits on device 1 on the device (NATIVE edge)."""
    uris = [SOFT.format(0), SOFT.format(1) + "&wait_barrier=defer"]
    with hal_core.create_device_group(uris) as group:
        a, b = group.devices
        assert _qset(b).queues[0].wait_tier == WAIT_TIER_DEFER
        into_b, into_a = group.topology.edge(0, 1), group.topology.edge(1, 0)
        assert into_b.wait_mode == InteropMode.COPY and into_b.wait_cost == 4
        assert into_a.wait_mode == InteropMode.NATIVE and into_a.wait_cost == 0
        buf = _alternating_chain(a, b, 16, a.create_semaphore())
        assert (np.frombuffer(buf.read(), np.uint32) == 0x04030201).all()
        # Gated, nothing had run at submit: b deferred its pattern fill and 8 copies; so
        # a's 7 copies found their producers unpublished (deferred too), plus the gate.
        assert _deferred(b) == 9 and _deferred(a) == 8
        # a waits on a published b epoch on the device.
        qa, qb = _qset(a).queues[0], _qset(b).queues[0]
        release, destroy = _block(qb)
        sb, sa = b.create_semaphore(), a.create_semaphore()
        b.queue_barrier(1, [], [(sb, 1)])
        a.queue_barrier(1, [(sb, 1)], [(sa, 1)])
        assert qa.frontier.get(qb) == qb.published_epoch and _deferred(a) == 8
        release()
        sa.wait(1, TIMEOUT)
        destroy()
    # gfx1030 has neither tier: its waits are deferred whatever the strategy
    rdna2 = "&soft_gpus=gfx1030,gfx1030"
    with hal_core.create_device_group([SOFT.format(0) + rdna2, SOFT.format(1) + rdna2]) as g:
        assert g.topology.edge(0, 1).wait_mode == InteropMode.COPY


def test_devices_over_different_hsa_systems_wait_through_the_host():
    uris = [SOFT.format(0), SOFT.format(0) + "&soft_gpus=gfx90a"]
    with hal_core.create_device_group(uris) as g:
        assert g.devices[0].backend.hsa is not g.devices[1].backend.hsa
        edge = g.topology.edge(0, 1)
        assert edge.wait_mode == InteropMode.COPY and edge.wait_cost == 4


def test_a_producer_failure_fails_the_op_waiting_on_it_on_the_other_device(default_hooks):
    with hal_core.create_device_group([SOFT.format(0), SOFT.format(1)]) as group:
        a, b = group.devices
        qa, qb = _qset(a).queues[0], _qset(b).queues[0]
        sa, sb = a.create_semaphore(), b.create_semaphore()
        buf_a = a.allocator.allocate_buffer(_VISIBLE, 64)
        buf_b = b.allocator.allocate_buffer(_VISIBLE, 64)
        release, destroy = _block(qa)  # a's queue 0 stalls before the fill
        a.backend.hsa.lib.inject_fault()  # the next kernel dispatch faults: a's fill
        a.queue_fill(1, [], [(sa, 1)], buf_a, 0, 64, b"\x01")
        b.queue_fill(1, [(sa, 1)], [(sb, 1)], buf_b, 0, 64, b"\x02")
        assert qb.frontier == {qa: 1}  # a device barrier on a's epoch 1
        release()
        with pytest.raises(hal_core.HalError, match="MEMORY_FAULT"):
            sb.wait(1, TIMEOUT)  # fails instead of hanging
        with pytest.raises(hal_core.HalError, match="MEMORY_FAULT"):
            sa.wait(1, TIMEOUT)
        destroy()
        assert _deferred(b) == 0
        # Both devices' other queues still work.
        for device, buf in ((a, buf_a), (b, buf_b)):
            done = device.create_semaphore()
            device.queue_fill(2, [], [(done, 1)], buf, 0, 64, b"\x07")
            done.wait(1, TIMEOUT)
            assert buf.read() == b"\x07" * 64


def test_a_group_with_local_task_still_defers_the_cpu_side(default_hooks):
    """Waits on local-task's semaphores have no amdgpu producer to wait on: deferred to
    the host (counted), the chain still correct."""
    with hal_core.create_device_group(["local-task://", SOFT.format(0)]) as group:
        cpu, gpu = group.devices
        gate = cpu.create_semaphore()
        sems = []
        prev = (gate, 1)
        for i in range(32):
            device = gpu if i & 1 else cpu
            sem = device.create_semaphore()
            device.queue_barrier(1, [prev], [(sem, 1)])
            sems.append(sem)
            prev = (sem, 1)
        gate.signal(1)
        prev[0].wait(1, TIMEOUT)
        assert _deferred(gpu) == 16  # every amdgpu op waited on a local-task semaphore


def test_leaving_the_group_defers_waits_between_the_devices_again(default_hooks):
    a = hal_core.create_device(SOFT.format(0))
    b = hal_core.create_device(SOFT.format(1))
    try:
        with hal_core.DeviceGroup.from_devices([a, b], owns_devices=False):
            _alternating_chain(a, b, 8)
            assert _deferred(a) == 0 and _deferred(b) == 0
            assert _qset(a).last_signal is _qset(b).last_signal
        assert _qset(a).last_signal is not _qset(b).last_signal
        assert not _qset(a).wait_peers and not _qset(b).wait_peers
        # Outside a group neither device may touch the other's buffers: a barrier chain.
        gate = a.create_semaphore()
        prev = (gate, 1)
        for i in range(8):
            device = (a, b)[i & 1]
            sem = device.create_semaphore()
            device.queue_barrier(1, [prev], [(sem, 1)])
            prev = (sem, 1)
        gate.signal(1)
        prev[0].wait(1, TIMEOUT)
        assert _deferred(a) == 4 and _deferred(b) == 4  # every wait, the gate's too
    finally:
        a.close()
        b.close()


def test_a_barrier_on_a_closed_devices_epoch_signal_still_completes(default_hooks):
    """b publishes a device barrier on a's epoch, a finishes and closes before b's packet
    processor reaches the barrier: the wait domain kept a's epoch signal, so b's barrier
    reads it (it would fault on a destroyed signal) and b's op completes."""
    a = hal_core.create_device(SOFT.format(0))
    b = hal_core.create_device(SOFT.format(1))
    try:
        with hal_core.DeviceGroup.from_devices([a, b], owns_devices=False):
            qa, qb = _qset(a).queues[0], _qset(b).queues[0]
            release_a, destroy_a = _block(qa)
            release_b, destroy_b = _block(qb)
            sa, sb = a.create_semaphore(), b.create_semaphore()
            buf = b.allocator.allocate_buffer(_VISIBLE, 64)
            a.queue_barrier(1, [], [(sa, 1)])
            b.queue_fill(1, [(sa, 1)], [(sb, 1)], buf, 0, 64, b"\x09")
            assert qb.frontier == {qa: 1}
            release_a()
            sa.wait(1, TIMEOUT)
            destroy_a()
            a.close()  # its epoch signal outlives it: b's barrier has yet to read it
            release_b()
            sb.wait(1, TIMEOUT)
            destroy_b()
            assert buf.read() == b"\x09" * 64
    finally:
        a.close()
        b.close()


def test_closing_a_device_fails_the_work_stuck_behind_it_on_the_other(default_hooks, monkeypatch):
    """a closes with the awaited work never run (its queue stalled): b's op behind a device
    barrier on it fails (CANCELLED) instead of waiting forever."""
    monkeypatch.setattr(queue_completion, "CLOSE_DRAIN_TIMEOUT", 0.2)  # a's wait for idle
    a = hal_core.create_device(SOFT.format(0))
    b = hal_core.create_device(SOFT.format(1))
    try:
        with hal_core.DeviceGroup.from_devices([a, b], owns_devices=False):
            qa, qb = _qset(a).queues[0], _qset(b).queues[0]
            _release, destroy = _block(qa)
            sa, sb = a.create_semaphore(), b.create_semaphore()
            a.queue_barrier(1, [], [(sa, 1)])
            b.queue_barrier(1, [(sa, 1)], [(sb, 1)])
            assert qb.frontier == {qa: 1}
            a.close()
            with pytest.raises(hal_core.HalError, match="CANCELLED"):
                sb.wait(1, TIMEOUT)
            destroy()
    finally:
        a.close()
        b.close()


def test_work_published_before_the_group_formed_is_waited_on_on_the_device(default_hooks):
    """Joining moves a set's last-signal entries into the shared table: b waits on a's
    epoch published before either joined the group."""
    a = hal_core.create_device(SOFT.format(0))
    b = hal_core.create_device(SOFT.format(1))
    try:
        qa, qb = _qset(a).queues[0], _qset(b).queues[0]
        release, destroy = _block(qa)
        sa = a.create_semaphore()
        a.queue_barrier(1, [], [(sa, 1)])
        with hal_core.DeviceGroup.from_devices([a, b], owns_devices=False):
            sb = b.create_semaphore()
            b.queue_barrier(1, [(sa, 1)], [(sb, 1)])
            assert qb.frontier == {qa: 1} and _deferred(b) == 0
            release()
            sb.wait(1, TIMEOUT)
            destroy()
    finally:
        a.close()
        b.close()


def test_a_barrier_published_after_its_producer_closed_fails_instead_of_hanging(
    default_hooks, monkeypatch
):
    """b's op resolves a device barrier on a's epoch but also waits on a host semaphore, so
    it publishes only later: a closes in between with that epoch cancelled (its scan for
    stuck queues cannot see a barrier not yet published). Publishing sees the closed
    producer and fails b's queue (CANCELLED) instead of leaving it stuck."""
    monkeypatch.setattr(queue_completion, "CLOSE_DRAIN_TIMEOUT", 0.2)
    a = hal_core.create_device(SOFT.format(0))
    b = hal_core.create_device(SOFT.format(1))
    try:
        with hal_core.DeviceGroup.from_devices([a, b], owns_devices=False):
            qa, qb = _qset(a).queues[0], _qset(b).queues[0]
            _release, destroy = _block(qa)
            sa, sb, gate = a.create_semaphore(), b.create_semaphore(), b.create_semaphore()
            a.queue_barrier(1, [], [(sa, 1)])
            b.queue_barrier(1, [(sa, 1), (gate, 1)], [(sb, 1)])
            assert _deferred(b) == 1 and not qb.frontier  # the gate; not published yet
            a.close()
            gate.signal(1)
            with pytest.raises(hal_core.HalError, match="CANCELLED"):
                sb.wait(1, TIMEOUT)
            assert qb.frontier == {qa: 1}
            destroy()
    finally:
        a.close()
        b.close()
