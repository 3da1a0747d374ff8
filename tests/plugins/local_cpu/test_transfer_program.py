"""The short transfer-only finalize path: it must build exactly the program the general
builder builds (records, address table, segments, inline decision), refuse what the
builder refuses, hand anything else to the builder, and run to the same results."""

from __future__ import annotations

import numpy as np
import pytest
from hal_local_cpu import command_buffer as lcb
from hal_local_cpu.executable_native import replay_available

import hal_core as hal
from hal_core import BufferRef, CommandBufferMode, CommandCategory, QueueAffinity
from hal_core.backend import CMD_BARRIER, CMD_COPY, CMD_DISPATCH, CMD_FILL, CMD_UPDATE

ANY = QueueAffinity.ANY
TIMEOUT = 20.0


@pytest.fixture(scope="module", params=["local-task://", "local-sync://"])
def device(request):
    dev = hal.create_device(request.param)
    yield dev
    dev.close()


def _buf(device, size: int) -> hal.Buffer:
    return device.allocator.allocate_buffer(
        hal.BufferParams(usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.MAPPING), size
    )


def _built(commands: list, mode: int, cap: int, parallel: bool) -> lcb.LocalProgram:
    """The general builder's program for ``commands`` (what ``_finalize`` did before)."""
    b = lcb._ProgramBuilder(cap, parallel)
    b.record(commands)
    p = lcb.LocalProgram()
    b.fill_records(p)
    b.fill_direct(p, commands, mode)
    p.capacity = cap
    p.native = replay_available()
    p.segments = lcb.segments_of(p.records, b.any_special, p.native, parallel)
    p.inline = lcb.inline_allowed(p, b.transfer_bytes, b.any_dispatch, int(mode))
    return p


def _same(a: lcb.LocalProgram, b: lcb.LocalProgram) -> None:
    assert np.array_equal(a.records, b.records)
    assert np.array_equal(a.static_table, b.static_table)
    assert np.array_equal(a.static_bases, b.static_bases)
    assert np.array_equal(a.static_lens, b.static_lens)
    assert a.segments == b.segments
    assert a.inline == b.inline
    assert a.slot_count == b.slot_count
    assert a.dynamic_direct == b.dynamic_direct
    assert a.direct == b.direct
    assert a.capacity == b.capacity and a.native == b.native


@pytest.mark.parametrize("mode", [0, int(CommandBufferMode.ONE_SHOT) | 0x10])
@pytest.mark.parametrize("parallel", [False, True])
def test_transfer_path_builds_the_builders_program(device, mode, parallel):
    a, b, c = _buf(device, 256), _buf(device, 256), _buf(device, 1 << 20)
    commands = [
        (CMD_FILL, BufferRef(a, 0, 64), b"\x01\x02"),
        (CMD_BARRIER,),
        (CMD_COPY, BufferRef(b, 8, 64), BufferRef(a, 0, 64)),
        (CMD_COPY, BufferRef.indirect(2, 0, 32), BufferRef(b, 0, 32)),
        (CMD_FILL, BufferRef.indirect(0, 16, hal.WHOLE_BUFFER), b"\xaa\xbb\xcc\xdd"),
        (CMD_COPY, BufferRef(c, 0, 100_000), BufferRef(c, 200_000, 100_000)),
    ]
    fast = lcb._transfer_program(commands, mode, 3, replay_available())
    assert fast is not None
    _same(fast, _built(commands, mode, 3, parallel))
    # An empty recording (barriers only) too.
    only_barrier = [(CMD_BARRIER,)]
    empty = lcb._transfer_program(only_barrier, mode, 0, replay_available())
    assert empty is not None and empty.segments == ()
    _same(empty, _built(only_barrier, mode, 0, parallel))


def test_transfer_path_leaves_dispatches_and_updates_to_the_builder(device):
    a = _buf(device, 64)
    for cmd in [(CMD_UPDATE, BufferRef(a, 0, 4), b"abcd"), (CMD_DISPATCH,)]:
        commands = [(CMD_FILL, BufferRef(a, 0, 4), b"\x00"), cmd]
        assert lcb._transfer_program(commands, 0, 0, True) is None


def test_transfer_path_refuses_what_the_builder_refuses(device):
    a = _buf(device, 64)
    past = [(CMD_COPY, BufferRef(a, 0, 4), BufferRef.indirect(1, 0, 4))]
    # As from the builder: finalize reports the slot past the capacity as a malformed
    # command (only UNVALIDATED recordings get this far).
    with pytest.raises(hal.InvalidArgumentError, match="binding_capacity 1"):
        lcb.finalize(past, 0, 1, False)
    with pytest.raises(hal.OutOfRangeError, match="binding_capacity 1"):
        lcb._transfer_program(past, 0, 1, False)
    with pytest.raises(hal.OutOfRangeError, match="binding_capacity 1"):
        _built(past, 0, 1, False)
    bogus = [(CMD_FILL, object(), b"\x00")]
    with pytest.raises(hal.InvalidArgumentError, match="expected a Buffer or BufferRef"):
        lcb.finalize(bogus, 0, 0, False)


def test_one_shot_readback_runs_through_the_transfer_path(device):
    """A readback as IREE records it: one-shot, inline allowed, a copy out of a
    queue-allocated (movable) buffer; the bytes arrive, and the next one reuses nothing."""
    for round_ in range(3):
        sem = device.create_semaphore(0)
        src = device.queue_alloca(
            ANY,
            [],
            [(sem, 1)],
            hal.BufferParams(usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.MAPPING),
            128,
        )
        sem.wait(1, timeout=TIMEOUT)
        src.write(bytes([round_ + 1]) * 128)
        dst = _buf(device, 128)
        cb = device.create_command_buffer(
            CommandBufferMode.ONE_SHOT | CommandBufferMode.ALLOW_INLINE_EXECUTION,
            CommandCategory.TRANSFER,
            ANY,
            0,
        )
        cb.begin()
        cb.copy_buffer(BufferRef(src, 0, 128), BufferRef(dst, 0, 128))
        cb.fill_buffer(BufferRef(dst, 120, 8), b"\x07")
        cb.end()
        done = device.create_semaphore(0)
        device.queue_execute(ANY, [], [(done, 1)], cb)
        device.queue_flush(ANY)
        done.wait(1, timeout=TIMEOUT)
        assert bytes(dst.read()) == bytes([round_ + 1]) * 120 + b"\x07" * 8
        freed = device.create_semaphore(0)
        device.queue_dealloca(ANY, [], [(freed, 1)], src)
        freed.wait(1, timeout=TIMEOUT)
