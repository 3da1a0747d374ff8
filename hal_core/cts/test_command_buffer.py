"""CTS: command-buffer basics, fill, copy and update, with direct and indirect references,
plus recording-time and submit-time validation (IREE's codes)."""

from __future__ import annotations

import numpy as np
import pytest

import hal_core as hal
from hal_core import (
    BufferRef,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    QueueAffinity,
)

from .context import TIMEOUT, deterministic_bytes
from .dispatch_support import Refs, pytest_generate_tests, submit_and_wait  # noqa: F401

ANY = QueueAffinity.ANY


# -- basic ----------------------------------------------------------------------------------


def test_create(cts):
    cb = cts.device.create_command_buffer(
        CommandBufferMode.ONE_SHOT, CommandCategory.TRANSFER, ANY, 4
    )
    assert cb.mode == CommandBufferMode.ONE_SHOT
    assert cb.categories == CommandCategory.TRANSFER
    assert cb.binding_capacity == 4
    assert not cb.is_recording and not cb.is_ended


def test_begin_end_and_submit_empty(cts):
    cb = cts.device.create_command_buffer()
    cb.begin()
    assert cb.is_recording
    cb.end()
    assert cb.is_ended
    submit_and_wait(cts, cb)
    submit_and_wait(cts, cb)  # reusable: a second submission works


def test_execute_without_command_buffer_is_a_barrier(cts):
    a, b = cts.semaphore(), cts.semaphore()
    cts.device.queue_execute(ANY, [(a, 1)], [(b, 1)], None)
    assert b.value == 0
    a.signal(1)
    b.wait(1, TIMEOUT)


def test_debug_groups(cts):
    cb = cts.device.create_command_buffer()
    cb.begin()
    cb.begin_debug_group("outer", 0xFF0000)
    cb.begin_debug_group("inner")
    cb.end_debug_group()
    cb.end_debug_group()
    cb.end()
    submit_and_wait(cts, cb)


# -- fill -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern,size,offset,length",
    [
        (b"\x07", 16, 0, 16),
        (b"\x07", 17, 3, 11),
        (b"\x01\x02", 32, 2, 12),
        (b"\x01\x02\x03\x04", 64, 8, 32),
        (b"\x01\x02\x03\x04", 4096, 0, 4096),
    ],
)
def test_fill(cts, ref_mode, pattern, size, offset, length):
    refs = Refs(ref_mode)
    target = cts.buffer(size, b"\xaa" * size)
    cb = refs.command_buffer(cts)
    cb.begin()
    cb.fill_buffer(refs(target, offset, length), pattern)
    cb.end()
    refs.execute(cts, cb)
    expected = bytearray(b"\xaa" * size)
    expected[offset : offset + length] = (pattern * length)[:length]
    assert cts.read_bytes(target) == bytes(expected)


def test_fill_int_pattern_and_zero_length(cts, ref_mode):
    refs = Refs(ref_mode)
    target = cts.buffer(8)
    cb = refs.command_buffer(cts)
    cb.begin()
    cb.fill_buffer(refs(target, 0, 8), 0x01020304, 4)
    cb.fill_buffer(refs(target, 0, 0), b"\xff")  # zero length: a no-op
    cb.end()
    refs.execute(cts, cb)
    assert cts.read_bytes(target) == b"\x04\x03\x02\x01" * 2


# -- copy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,src_off,dst_off,length", [(64, 0, 0, 64), (100, 3, 17, 41), (8192, 4, 0, 8000)]
)
def test_copy(cts, ref_mode, size, src_off, dst_off, length):
    refs = Refs(ref_mode)
    data = deterministic_bytes(size)
    src = cts.buffer(size, data)
    dst = cts.buffer(size)
    cb = refs.command_buffer(cts)
    cb.begin()
    cb.copy_buffer(refs(src, src_off, length), refs(dst, dst_off, length))
    cb.end()
    refs.execute(cts, cb)
    expected = bytearray(size)
    expected[dst_off : dst_off + length] = data[src_off : src_off + length]
    assert cts.read_bytes(dst) == bytes(expected)


def test_copy_within_subspans_of_one_allocation(cts, ref_mode):
    refs = Refs(ref_mode)
    data = deterministic_bytes(64)
    whole = cts.buffer(64, data)
    lo, hi = whole.subspan(0, 32), whole.subspan(32, 32)
    cb = refs.command_buffer(cts)
    cb.begin()
    cb.copy_buffer(refs(lo, 0, 16), refs(hi, 8, 16))
    cb.end()
    refs.execute(cts, cb)
    out = cts.read_bytes(whole)
    assert out[40:56] == data[0:16]
    assert out[:40] == data[:40] and out[56:] == data[56:]


# -- update ---------------------------------------------------------------------------------


def test_update(cts, ref_mode):
    refs = Refs(ref_mode)
    target = cts.buffer(32)
    host = bytearray(range(100, 132))
    cb = refs.command_buffer(cts)
    cb.begin()
    cb.update_buffer(host, 4, refs(target, 8, 16))
    cb.end()
    host[:] = b"\xee" * 32  # the bytes were copied at record time
    refs.execute(cts, cb)
    out = cts.read_bytes(target)
    assert out[8:24] == bytes(range(104, 120))
    assert out[:8] == bytes(8) and out[24:] == bytes(8)


def test_update_into_subspan_and_max_size(cts, ref_mode):
    refs = Refs(ref_mode)
    size = hal.MAX_UPDATE_SIZE
    target = cts.buffer(size + 64)
    payload = deterministic_bytes(size, seed=5)
    cb = refs.command_buffer(cts)
    cb.begin()
    cb.update_buffer(payload, 0, refs(target.subspan(64), 0, size))
    cb.end()
    refs.execute(cts, cb)
    assert cts.read_bytes(target, 64, size) == payload


def test_fill_copy_update_in_order(cts, ref_mode):
    refs = Refs(ref_mode)
    a = cts.buffer(16)
    b = cts.buffer(16)
    cb = refs.command_buffer(cts)
    cb.begin()
    cb.fill_buffer(refs(a, 0, 16), b"\x11")
    cb.execution_barrier()
    cb.update_buffer(b"\x22\x22\x22\x22", 0, refs(a, 4, 4))
    cb.execution_barrier()
    cb.copy_buffer(refs(a, 0, 16), refs(b, 0, 16))
    cb.end()
    refs.execute(cts, cb)
    assert cts.read_bytes(b) == b"\x11" * 4 + b"\x22" * 4 + b"\x11" * 8


def test_reusable_resubmission(cts, ref_mode):
    refs = Refs(ref_mode)
    a = cts.buffer(16)
    cb = refs.command_buffer(cts)
    cb.begin()
    cb.fill_buffer(refs(a, 0, 16), b"\x5a")
    cb.end()
    for _ in range(3):
        refs.execute(cts, cb)
    assert cts.read_bytes(a) == b"\x5a" * 16


def test_indirect_binding_ranges_compose(cts):
    if not cts.has_tag("indirect"):
        pytest.skip("needs the indirect tag")
    target = cts.buffer(64)
    cb = cts.device.create_command_buffer(0, CommandCategory.ANY, ANY, 1)
    cb.begin()
    cb.fill_buffer(BufferRef.indirect(0, 4, 8), b"\x33")
    cb.end()
    # slot 0 binds [16, 48): the fill lands at 16 + 4.
    submit_and_wait(cts, cb, [hal.BufferBinding(target, 16, 32)])
    out = cts.read_bytes(target)
    assert out[20:28] == b"\x33" * 8
    assert out[:20] == bytes(20) and out[28:] == bytes(36)
    # A different table rebinds the same recording.
    other = cts.buffer(16)
    submit_and_wait(cts, cb, [other])
    assert cts.read_bytes(other)[4:12] == b"\x33" * 8


# -- bad input: recording -------------------------------------------------------------------


def _new(cts, mode=0, categories=CommandCategory.ANY, capacity=0):
    return cts.device.create_command_buffer(mode, categories, ANY, capacity)


def test_recording_outside_begin_end(cts):
    target = cts.buffer(16)
    cb = _new(cts)
    with pytest.raises(hal.FailedPreconditionError, match="before begin"):
        cb.fill_buffer(target, b"\x01")
    cb.begin()
    cb.end()
    with pytest.raises(hal.FailedPreconditionError, match="after end"):
        cb.fill_buffer(target, b"\x01")
    with pytest.raises(hal.FailedPreconditionError):
        cb.end()


def test_recording_twice(cts):
    cb = _new(cts)
    cb.begin()
    with pytest.raises(hal.FailedPreconditionError, match="twice"):
        cb.begin()
    cb.end()
    with pytest.raises(hal.FailedPreconditionError):
        cb.begin()
    submit_and_wait(cts, cb)  # the command buffer is still usable


def test_unbalanced_debug_groups(cts):
    cb = _new(cts)
    cb.begin()
    with pytest.raises(hal.FailedPreconditionError, match="without a matching"):
        cb.end_debug_group()
    cb.begin_debug_group("open")
    with pytest.raises(hal.FailedPreconditionError, match="still open"):
        cb.end()
    cb.end_debug_group()
    cb.end()
    submit_and_wait(cts, cb)


def test_wrong_category(cts):
    target = cts.buffer(16)
    cb = _new(cts, categories=CommandCategory.DISPATCH)
    cb.begin()
    with pytest.raises(hal.FailedPreconditionError, match="TRANSFER"):
        cb.fill_buffer(target, b"\x01")
    with pytest.raises(hal.FailedPreconditionError, match="TRANSFER"):
        cb.copy_buffer(target.subspan(0, 8), target.subspan(8, 8))
    cb.end()


def test_missing_usage_bits(cts):
    src_only = cts.device.allocator.allocate_buffer(
        hal.BufferParams(usage=BufferUsage.TRANSFER_SOURCE | BufferUsage.DISPATCH_STORAGE), 16
    )
    dst = cts.buffer(16)
    cb = _new(cts)
    cb.begin()
    with pytest.raises(hal.PermissionDeniedError, match="TRANSFER_TARGET"):
        cb.fill_buffer(src_only, b"\x01")
    with pytest.raises(hal.PermissionDeniedError, match="TRANSFER_TARGET"):
        cb.update_buffer(b"1234", 0, BufferRef(src_only, 0, 4))
    with pytest.raises(hal.PermissionDeniedError, match="TRANSFER_SOURCE"):
        cb.copy_buffer(dst, src_only)
    cb.end()


def test_out_of_range(cts):
    target = cts.buffer(16)
    cb = _new(cts, capacity=2)
    cb.begin()
    with pytest.raises(hal.OutOfRangeError):
        cb.fill_buffer(BufferRef(target, 8, 16), b"\x01")
    with pytest.raises(hal.OutOfRangeError):
        cb.fill_buffer(BufferRef(target, 32, 4), b"\x01")
    with pytest.raises(hal.OutOfRangeError, match="binding_capacity 2"):
        cb.fill_buffer(BufferRef.indirect(2, 0, 4), b"\x01")
    cb.end()


def test_misaligned_fill(cts):
    target = cts.buffer(16)
    cb = _new(cts)
    cb.begin()
    with pytest.raises(hal.InvalidArgumentError, match="multiples"):
        cb.fill_buffer(BufferRef(target, 2, 8), b"\x01\x02\x03\x04")
    with pytest.raises(hal.InvalidArgumentError, match="multiples"):
        cb.fill_buffer(BufferRef(target, 0, 6), b"\x01\x02\x03\x04")
    with pytest.raises(hal.InvalidArgumentError, match="1, 2 or 4"):
        cb.fill_buffer(target, b"\x01\x02\x03")
    cb.end()


def test_overlapping_and_mismatched_copies(cts):
    a = cts.buffer(64)
    b = cts.buffer(64)
    cb = _new(cts)
    cb.begin()
    with pytest.raises(hal.InvalidArgumentError, match="overlap"):
        cb.copy_buffer(BufferRef(a, 0, 32), BufferRef(a, 16, 32))
    with pytest.raises(hal.InvalidArgumentError, match="overlap"):
        cb.copy_buffer(BufferRef(a.subspan(0, 32), 8, 16), BufferRef(a.subspan(16, 32), 0, 16))
    with pytest.raises(hal.InvalidArgumentError, match="differs"):
        cb.copy_buffer(BufferRef(a, 0, 16), BufferRef(b, 0, 8))
    cb.end()


def test_update_too_large(cts):
    target = cts.buffer(hal.MAX_UPDATE_SIZE + 4)
    cb = _new(cts)
    cb.begin()
    with pytest.raises(hal.InvalidArgumentError, match="at most 65536"):
        cb.update_buffer(bytes(hal.MAX_UPDATE_SIZE + 4), 0, target)
    cb.end()


def test_invalid_create_arguments(cts):
    dev = cts.device
    with pytest.raises(hal.InvalidArgumentError, match="ONE_SHOT"):
        dev.create_command_buffer(CommandBufferMode.ALLOW_INLINE_EXECUTION)
    with pytest.raises(hal.InvalidArgumentError, match="binding_capacity"):
        dev.create_command_buffer(
            CommandBufferMode.ALLOW_INLINE_EXECUTION | CommandBufferMode.ONE_SHOT, 3, ANY, 1
        )
    with pytest.raises(hal.InvalidArgumentError, match="mode bits"):
        dev.create_command_buffer(1 << 20)
    with pytest.raises(hal.InvalidArgumentError, match="binding_capacity"):
        dev.create_command_buffer(0, 3, ANY, -1)


# -- bad input: submission ------------------------------------------------------------------


def test_submit_not_ended(cts):
    cb = _new(cts)
    sem = cts.semaphore()
    with pytest.raises(hal.FailedPreconditionError, match="not recorded and ended"):
        cts.device.queue_execute(ANY, (), [(sem, 1)], cb)
    cb.begin()
    with pytest.raises(hal.FailedPreconditionError):
        cts.device.queue_execute(ANY, (), [(sem, 1)], cb)
    cb.end()
    cts.device.queue_execute(ANY, (), [(sem, 1)], cb)
    sem.wait(1, TIMEOUT)


def test_one_shot_submitted_twice(cts):
    cb = _new(cts, CommandBufferMode.ONE_SHOT)
    cb.begin()
    cb.end()
    submit_and_wait(cts, cb)
    with pytest.raises(hal.FailedPreconditionError, match="ONE_SHOT"):
        submit_and_wait(cts, cb)


def test_inline_execution_rejects_waits(cts):
    cb = _new(cts, CommandBufferMode.ONE_SHOT | CommandBufferMode.ALLOW_INLINE_EXECUTION)
    cb.begin()
    cb.end()
    a, b = cts.semaphore(), cts.semaphore()
    with pytest.raises(hal.InvalidArgumentError, match="wait"):
        cts.device.queue_execute(ANY, [(a, 1)], [(b, 1)], cb)
    submit_and_wait(cts, cb)


def test_binding_table_problems(cts):
    target = cts.buffer(16)
    small = cts.buffer(4)
    cb = _new(cts, capacity=2)
    cb.begin()
    cb.fill_buffer(BufferRef.indirect(1, 0, 8), b"\x01")
    cb.end()
    sem = cts.semaphore()
    ex = cts.device.queue_execute
    with pytest.raises(hal.InvalidArgumentError, match="no binding table"):
        ex(ANY, (), [(sem, 1)], cb)
    with pytest.raises(hal.OutOfRangeError, match="binding table has 1"):
        ex(ANY, (), [(sem, 1)], cb, [target])
    with pytest.raises(hal.InvalidArgumentError, match="empty"):
        ex(ANY, (), [(sem, 1)], cb, [target, None])
    with pytest.raises(hal.OutOfRangeError, match="up to byte 8"):
        ex(ANY, (), [(sem, 1)], cb, [target, small])
    ro = cts.device.allocator.allocate_buffer(
        hal.BufferParams(usage=BufferUsage.TRANSFER_SOURCE), 16
    )
    with pytest.raises(hal.PermissionDeniedError):
        ex(ANY, (), [(sem, 1)], cb, [target, ro])
    with pytest.raises(hal.InvalidArgumentError, match="entry 0"):
        ex(ANY, (), [(sem, 1)], cb, ["not a buffer", target])
    assert sem.value == 0  # nothing was submitted
    ex(ANY, (), [(sem, 1)], cb, [None, target])  # slot 0 is unused: None is fine
    sem.wait(1, TIMEOUT)
    assert cts.read_bytes(target) == b"\x01" * 8 + bytes(8)


def test_unvalidated_errors_fail_semaphores(cts):
    """UNVALIDATED skips recording checks; bad ranges then fail at execution with
    OUT_OF_RANGE, the process survives and later work runs."""
    target = cts.buffer(16)
    cb = _new(cts, CommandBufferMode.UNVALIDATED, capacity=1)
    cb.begin()
    cb.fill_buffer(BufferRef.indirect(0, 8, 64), b"\x01")
    cb.end()
    sem = cts.semaphore()
    cts.device.queue_execute(ANY, (), [(sem, 1)], cb, [target])
    with pytest.raises(hal.OutOfRangeError):
        sem.wait(1, TIMEOUT)
    assert cts.read_bytes(target) == bytes(16)
    ok = _new(cts)
    ok.begin()
    ok.fill_buffer(target, b"\x02")
    ok.end()
    submit_and_wait(cts, ok)
    assert cts.read_bytes(target) == b"\x02" * 16


@pytest.mark.parametrize(
    "offset, length",
    [(1 << 63, 4), (4, 1 << 63), ((1 << 64) - 8, 4)],
    ids=["offset", "length", "wrap"],
)
@pytest.mark.parametrize(
    "mode", [0, CommandBufferMode.UNVALIDATED], ids=["validated", "unvalidated"]
)
def test_indirect_range_past_any_buffer(cts, offset, length, mode):
    """An indirect reference reaching past byte 2**63-1 fits no buffer: OUT_OF_RANGE at
    record time as for a direct one (validated), and never an escaped OverflowError from
    a backend's 64-bit program tables (unvalidated: at end() or at execution)."""
    if not cts.has_tag("indirect"):
        pytest.skip("needs the indirect tag")
    target = cts.buffer(16)
    ref = BufferRef.indirect(0, offset, length)
    cb = _new(cts, mode, capacity=1)
    cb.begin()
    if not mode:
        with pytest.raises(hal.OutOfRangeError, match="beyond any buffer"):
            cb.fill_buffer(ref, b"\x01")
        with pytest.raises(hal.OutOfRangeError, match="beyond any buffer"):
            cb.copy_buffer(ref, BufferRef(target, 0, 4))
        with pytest.raises(hal.OutOfRangeError):  # the host bytes or the slot range
            cb.update_buffer(bytes(4), 0, ref)
        cb.end()  # the refused commands left the recording usable
        return
    cb.fill_buffer(ref, b"\x01")
    try:
        cb.end()
    except hal.OutOfRangeError:
        pass  # refused when the backend built its replay form
    else:
        sem = cts.semaphore()
        cts.device.queue_execute(ANY, (), [(sem, 1)], cb, [target])
        with pytest.raises(hal.OutOfRangeError):
            sem.wait(1, TIMEOUT)
    assert cts.read_bytes(target) == bytes(16)


# -- stress ---------------------------------------------------------------------------------


def test_many_commands_signal_once_at_the_end(cts, ref_mode):
    refs = Refs(ref_mode)
    target = cts.buffer(4 * 256)
    cb = refs.command_buffer(cts)
    cb.begin()
    for i in range(256):
        cb.fill_buffer(refs(target, 4 * i, 4), i.to_bytes(4, "little"))
    cb.end()
    gate, done = cts.semaphore(), cts.semaphore()
    cts.device.queue_execute(ANY, [(gate, 1)], [(done, 1)], cb, refs.table or None)
    assert done.value == 0
    gate.signal(1)
    done.wait(1, TIMEOUT)
    assert np.frombuffer(cts.read_bytes(target), np.uint32).tolist() == list(range(256))


def test_rapid_submissions(cts):
    a = cts.buffer(64, deterministic_bytes(64))
    b = cts.buffer(64)
    cb = cts.device.create_command_buffer()
    cb.begin()
    cb.copy_buffer(a, b)
    cb.end()
    sem = cts.semaphore()
    for i in range(1, 101):
        cts.device.queue_execute(ANY, [(sem, i - 1)] if i > 1 else (), [(sem, i)], cb)
    sem.wait(100, TIMEOUT)
    assert cts.read_bytes(b) == deterministic_bytes(64)
