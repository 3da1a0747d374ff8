"""CTS: the front door. Misuse of any public operation is refused at the call with the
same ``HalError`` code on every backend, nothing is queued, and later work still runs.

Covered: numpy integers as offsets and lengths (normalised, never wrapped), buffers of
another device, ``queue_alloca`` sizes no heap can ever hold, a semaphore named twice in
one signal list, wrong-type arguments, closed files and allocators, and the allocator's
statistics.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import hal_core
from hal_core import (
    BufferParams,
    BufferRef,
    DispatchConfig,
    MemoryAccess,
    QueueAffinity,
    StatusCode,
)

from .context import TIMEOUT
from .dispatch_support import (  # noqa: F401 - pytest_generate_tests parametrizes exe_format
    DISPATCH_USAGE,
    count_constant,
    dbuffer,
    executable,
    f32,
    pytest_generate_tests,
    read_f32,
)

ANY = QueueAffinity.ANY
HUGE = np.int64(2**63 - 4)


def _refused(code: StatusCode, fn, *args, **kwargs) -> None:
    with pytest.raises(hal_core.HalError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value


def _later_work_runs(cts) -> None:
    buf = cts.buffer(64)
    sem = cts.semaphore(0)
    cts.device.queue_fill(ANY, [], [(sem, 1)], buf, 0, 64, b"\x5a")
    cts.wait(sem, 1)
    assert cts.read_bytes(buf) == b"\x5a" * 64


@pytest.fixture
def other_device(cts):
    """A second device of the same backend, outside any device group."""
    device = hal_core.create_device(cts.device.uri)
    yield device
    device.close()


# --------------------------------------------------------------------- numpy integers


def test_numpy_offsets_cannot_wrap_a_range(cts):
    buf = cts.buffer(256)
    sem = cts.semaphore(0)
    _refused(StatusCode.OUT_OF_RANGE, buf.subspan, np.int64(1), np.int64(2**63 - 1))
    _refused(StatusCode.OUT_OF_RANGE, buf.subspan, np.uint64(2**64 - 2), np.uint64(4))
    q = cts.device
    _refused(
        StatusCode.OUT_OF_RANGE,
        q.queue_fill,
        ANY,
        [],
        [(sem, 1)],
        buf,
        np.int64(4),
        HUGE,
        b"\0\0\0\0",
    )
    _refused(
        StatusCode.OUT_OF_RANGE,
        q.queue_copy,
        ANY,
        [],
        [(sem, 1)],
        buf,
        np.int64(0),
        buf,
        np.int64(128),
        HUGE,
    )
    _refused(
        StatusCode.OUT_OF_RANGE,
        q.queue_update,
        ANY,
        [],
        [(sem, 1)],
        bytes(8),
        np.int64(4),
        buf,
        0,
        HUGE,
    )
    _refused(
        StatusCode.OUT_OF_RANGE,
        q.queue_update,
        ANY,
        [],
        [(sem, 1)],
        bytes(8),
        0,
        buf,
        np.int64(252),
        np.int64(8),
    )
    out = bytearray(256)
    file = cts.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    _refused(
        StatusCode.OUT_OF_RANGE, q.queue_read, ANY, [], [(sem, 1)], file, 0, buf, np.int64(4), HUGE
    )
    _refused(
        StatusCode.OUT_OF_RANGE, q.queue_write, ANY, [], [(sem, 1)], buf, np.int64(4), file, 0, HUGE
    )
    _refused(StatusCode.INVALID_ARGUMENT, BufferRef, buf, np.int64(-1))
    cb = q.create_command_buffer()
    cb.begin()
    _refused(
        StatusCode.OUT_OF_RANGE, cb.fill_buffer, BufferRef(buf, np.int64(4), HUGE), b"\0\0\0\0"
    )
    _refused(
        StatusCode.OUT_OF_RANGE,
        cb.copy_buffer,
        BufferRef(buf, 0, HUGE),
        BufferRef(buf, np.int64(128), HUGE),
    )
    cb.end()
    assert sem.query() == 0 and sem.failure is None
    _later_work_runs(cts)


def test_numpy_offsets_in_range_work_as_ints(cts):
    buf = cts.buffer(64)
    sem = cts.semaphore(0)
    cts.device.queue_fill(ANY, [], [(sem, np.int64(1))], buf, np.int64(8), np.uint32(16), b"\x11")
    cts.device.queue_update(
        ANY, [(sem, np.int64(1))], [(sem, 2)], b"abcd", np.int64(1), buf, np.int64(32), np.int64(3)
    )
    cts.wait(sem, 2)
    data = cts.read_bytes(buf)
    assert data[8:24] == b"\x11" * 16 and data[32:35] == b"bcd"
    sub = buf.subspan(np.int64(8), np.int64(16))
    assert sub.byte_offset.__class__ is int and sub.byte_length.__class__ is int
    ref = BufferRef(buf, np.int64(4), np.int64(8))
    assert ref.offset.__class__ is int and ref.length.__class__ is int


# -------------------------------------------------------------------- foreign buffers


def test_another_devices_buffer_is_refused_by_every_queue_op(cts, other_device):
    own = cts.buffer(256)
    foreign = other_device.allocator.allocate_buffer(BufferParams(), 256)
    sem = cts.semaphore(0)
    q = cts.device
    bad = StatusCode.INVALID_ARGUMENT
    _refused(bad, q.queue_fill, ANY, [], [(sem, 1)], foreign, 0, 64, b"\1")
    _refused(bad, q.queue_update, ANY, [], [(sem, 1)], bytes(16), 0, foreign, 0, 16)
    _refused(bad, q.queue_copy, ANY, [], [(sem, 1)], own, 0, foreign, 0, 64)
    _refused(bad, q.queue_copy, ANY, [], [(sem, 1)], foreign, 0, own, 0, 64)
    file = cts.import_file(bytearray(64), MemoryAccess.READ | MemoryAccess.WRITE)
    _refused(bad, q.queue_read, ANY, [], [(sem, 1)], file, 0, foreign, 0, 64)
    _refused(bad, q.queue_write, ANY, [], [(sem, 1)], foreign, 0, file, 0, 64)
    pending = other_device.queue_alloca(ANY, [], [], None, 256)
    _refused(bad, q.queue_dealloca, ANY, [], [(sem, 1)], pending)
    other_device.queue_dealloca(ANY, [], [], pending)
    cb = q.create_command_buffer()
    cb.begin()
    _refused(bad, cb.fill_buffer, foreign, b"\1")
    _refused(bad, cb.copy_buffer, own, foreign)
    _refused(bad, cb.update_buffer, bytes(16), 0, BufferRef(foreign, 0, 16))
    cb.end()
    indirect = q.create_command_buffer(binding_capacity=1)
    indirect.begin()
    indirect.fill_buffer(BufferRef.indirect(0, 0, 64), b"\1")
    indirect.end()
    _refused(bad, q.queue_execute, ANY, [], [(sem, 1)], indirect, [foreign])
    assert sem.query() == 0 and sem.failure is None
    q.queue_execute(ANY, [], [(sem, 1)], indirect, [own])
    cts.wait(sem, 1)
    assert cts.read_bytes(own, 0, 64) == b"\1" * 64
    _later_work_runs(cts)


@pytest.mark.hal_requires("dispatch")
def test_another_devices_buffer_is_refused_by_dispatches(cts, other_device, exe_format):
    exe = executable(cts, exe_format)
    own = dbuffer(cts, 16, f32([1, 2, 3, 4]))
    foreign = other_device.allocator.allocate_buffer(BufferParams(usage=DISPATCH_USAGE), 16)
    sem = cts.semaphore(0)
    one = DispatchConfig.static(np.int64(1))
    count = count_constant(4)
    bad = StatusCode.INVALID_ARGUMENT
    q = cts.device
    _refused(bad, q.queue_dispatch, ANY, [], [(sem, 1)], exe, "negate", one, count, [own, foreign])
    _refused(
        bad,
        q.queue_dispatch,
        ANY,
        [],
        [(sem, 1)],
        exe,
        "negate",
        one,
        count,
        [BufferRef(foreign, 0, 16), own],
    )
    cb = q.create_command_buffer()
    cb.begin()
    _refused(bad, cb.dispatch, exe, "negate", one, count, (own, foreign))
    cb.dispatch(exe, "negate", one, np.frombuffer(count, np.uint32).tolist(), (own, own))
    cb.end()
    assert sem.query() == 0 and sem.failure is None
    q.queue_dispatch(ANY, [], [(sem, 1)], exe, "negate", one, count, [own, own])
    q.queue_execute(ANY, [(sem, 1)], [(sem, 2)], cb)
    sem.wait(2, TIMEOUT)
    assert read_f32(cts, own) == [1, 2, 3, 4]  # negated twice


# ------------------------------------------------------------ impossible allocations


@pytest.mark.parametrize("size", [(1 << 40) + 1, 1 << 50])
def test_alloca_no_heap_can_ever_hold_is_resource_exhausted_at_the_call(cts, size):
    gate = cts.semaphore(0)
    sem = cts.semaphore(0)
    for waits in ([], [(gate, 1)]):
        _refused(
            StatusCode.RESOURCE_EXHAUSTED,
            cts.device.queue_alloca,
            ANY,
            waits,
            [(sem, 1)],
            None,
            size,
        )
    _refused(
        StatusCode.RESOURCE_EXHAUSTED, cts.device.allocator.allocate_buffer, BufferParams(), size
    )
    gate.signal(1)
    assert sem.query() == 0 and sem.failure is None
    buffer = cts.device.queue_alloca(ANY, [], [(sem, 1)], None, 4096)
    cts.wait(sem, 1)
    cts.device.queue_dealloca(ANY, [(sem, 1)], [(sem, 2)], buffer)
    cts.wait(sem, 2)


# --------------------------------------------------------- one semaphore, one signal


def test_a_semaphore_twice_in_one_signal_list_is_invalid_for_every_op(cts):
    s = cts.semaphore(0)
    other = cts.semaphore(0)
    buf = cts.buffer(64)
    file = cts.import_file(bytearray(64), MemoryAccess.READ | MemoryAccess.WRITE)
    cb = cts.device.create_command_buffer()
    cb.begin()
    cb.execution_barrier()
    cb.end()
    q = cts.device
    ops = {
        "barrier": lambda sig: q.queue_barrier(ANY, [], sig),
        "fill": lambda sig: q.queue_fill(ANY, [], sig, buf, 0, 64, b"\1"),
        "update": lambda sig: q.queue_update(ANY, [], sig, bytes(8), 0, buf, 0, 8),
        "copy": lambda sig: q.queue_copy(ANY, [], sig, buf, 0, buf, 32, 32),
        "read": lambda sig: q.queue_read(ANY, [], sig, file, 0, buf, 0, 64),
        "write": lambda sig: q.queue_write(ANY, [], sig, buf, 0, file, 0, 64),
        "host_call": lambda sig: q.queue_host_call(ANY, [], sig, lambda a, c: None),
        "alloca": lambda sig: q.queue_alloca(ANY, [], sig, None, 64),
        "execute": lambda sig: q.queue_execute(ANY, [], sig, cb),
        "execute_none": lambda sig: q.queue_execute(ANY, [], sig, None),
    }
    for name, op in ops.items():
        for sig in (
            [(s, 1), (s, 1)],
            [(s, 2), (s, 1)],
            [(s, 1), (other, 1), (s, 2)],
            ((s, 1), (s, 1)),
        ):
            with pytest.raises(hal_core.InvalidArgumentError, match="once per signal list"):
                op(sig)
            assert s.query() == 0 and s.failure is None, name
    assert other.query() == 0
    q.queue_barrier(ANY, [], [(s, 1), (other, 1)])
    cts.wait(s, 1)
    cts.wait(other, 1)
    _later_work_runs(cts)


# ----------------------------------------------------------------- wrong-type values


def test_wrong_types_are_invalid_argument_at_the_call(cts):
    q = cts.device
    buf = cts.buffer(64)
    s = cts.semaphore(0)
    bad = StatusCode.INVALID_ARGUMENT
    for affinity in ("0", 1.0, None, -1, 1 << 64):
        _refused(bad, q.queue_barrier, affinity, [], [(s, 1)])
        _refused(bad, q.queue_fill, affinity, [], [(s, 1)], buf, 0, 64, b"\1")
    for waits in (
        5,
        [(s, -1)],
        [(s, hal_core.MAX_VALUE + 1)],
        [(s, 1.0)],
        [(s, None)],
        [(s,)],
        [s, 1],
        "ab",
    ):
        _refused(bad, q.queue_barrier, ANY, waits, [(s, 1)])
    for flags in ("x", 1.5, -1):
        _refused(bad, q.queue_barrier, ANY, [], [(s, 1)], flags=flags)
        _refused(bad, q.queue_fill, ANY, [], [(s, 1)], buf, 0, 64, b"\1", flags=flags)
        _refused(bad, q.queue_host_call, ANY, [], [(s, 1)], lambda a, c: None, flags=flags)
        _refused(bad, q.queue_alloca, ANY, [], [(s, 1)], None, 64, flags=flags)
    _refused(bad, q.queue_host_call, ANY, [], [(s, 1)], lambda a, c: None, flags=1 << 20)
    for pattern, length in (
        (1.5, None),
        (None, None),
        (b"abc", None),
        (1, "4"),
        (1, 3),
        (True, 1),
        (1 << 40, 4),
    ):
        _refused(bad, q.queue_fill, ANY, [], [(s, 1)], buf, 0, 64, pattern, pattern_length=length)
    for offset in ("0", 0.0, None):
        _refused(bad, q.queue_fill, ANY, [], [(s, 1)], buf, offset, 8, b"\1")
        _refused(bad, q.queue_copy, ANY, [], [(s, 1)], buf, offset, buf, 32, 8)
        _refused(bad, q.queue_update, ANY, [], [(s, 1)], bytes(8), offset, buf, 0, 8)
        _refused(bad, buf.subspan, offset)
    _refused(bad, q.queue_update, ANY, [], [(s, 1)], 12345, 0, buf, 0, 8)
    _refused(bad, q.queue_fill, ANY, [], [(s, 1)], b"not a buffer", 0, 8, b"\1")
    alloc = q.allocator
    for params in ("x", {"usage": "x"}, {"nope": 1}, BufferParams):
        _refused(bad, alloc.allocate_buffer, params, 64)
        _refused(bad, q.queue_alloca, ANY, [], [(s, 1)], params, 64)
    for size in ("64", 64.0, -1, None):
        _refused(bad, alloc.allocate_buffer, BufferParams(), size)
        _refused(bad, alloc.query_buffer_compatibility, BufferParams(), size)
        _refused(bad, q.queue_alloca, ANY, [], [(s, 1)], None, size)
    _refused(bad, q.queue_host_call, ANY, [], [(s, 1)], lambda a, c: None, (1, 2, 3))
    _refused(bad, q.queue_host_call, ANY, [], [(s, 1)], lambda a, c: None, 7)
    cb = q.create_command_buffer()
    cb.begin()
    _refused(bad, cb.fill_buffer, buf, 1.5)
    _refused(bad, cb.update_buffer, bytes(8), "0", BufferRef(buf, 0, 8))
    _refused(bad, cb.fill_buffer, "buffer", b"\1")
    _refused(bad, BufferRef, buf, "0")
    config = hal_core.DispatchConfig()
    _refused(bad, cb.dispatch, "not an executable", "main", config)
    _refused(bad, cb.dispatch, "not an executable", 1.5, config)
    cb.end()
    for args in (("x", 3, ANY, 0), (0, "x", ANY, 0), (0, 3, "x", 0), (0, 3, ANY, "x")):
        _refused(bad, q.create_command_buffer, *args)
    _refused(bad, q.queue_execute, ANY, [], [(s, 1)], cb, 5)
    _refused(bad, q.queue_execute, ANY, [], [(s, 1)], cb, None, "x")
    _refused(bad, q.queue_execute, "x", [], [(s, 1)], cb)
    _refused(bad, q.queue_dispatch, ANY, [], [(s, 1)], "exe", "main", config)
    _refused(bad, q.queue_dispatch, ANY, [], [(s, 1)], "exe", 0, config, b"", 5)
    _refused(bad, q.queue_flush, "x")
    _refused(bad, q.query_i64, "hal.device.id", 5)
    if buf.memory_type.has(hal_core.MemoryType.HOST_VISIBLE):
        _refused(bad, buf.map, "x")
    assert s.query() == 0 and s.failure is None
    _later_work_runs(cts)


# -------------------------------------------------------------- closed files, allocators


def test_closed_file_fails_at_the_call(cts):
    file = cts.device.import_file(bytearray(64), MemoryAccess.READ | MemoryAccess.WRITE)
    file.close()
    buf = cts.buffer(64)
    sem = cts.semaphore(0)
    _refused(
        StatusCode.FAILED_PRECONDITION,
        cts.device.queue_read,
        ANY,
        [],
        [(sem, 1)],
        file,
        0,
        buf,
        0,
        64,
    )
    _refused(
        StatusCode.FAILED_PRECONDITION,
        cts.device.queue_write,
        ANY,
        [],
        [(sem, 1)],
        buf,
        0,
        file,
        0,
        64,
    )
    assert sem.query() == 0 and sem.failure is None
    _later_work_runs(cts)


def test_allocator_refuses_work_once_closed(cts):
    device = hal_core.create_device(cts.device.uri)
    allocator = device.allocator
    kept = allocator.allocate_buffer(BufferParams(), 64)
    device.close()
    assert allocator.closed
    _refused(StatusCode.FAILED_PRECONDITION, allocator.allocate_buffer, BufferParams(), 64)
    _refused(
        StatusCode.FAILED_PRECONDITION, allocator.import_host_buffer, BufferParams(), bytearray(64)
    )
    assert kept.byte_length == 64
    device = hal_core.create_device(cts.device.uri)
    try:
        device.allocator.close()
        device.allocator.close()  # idempotent
        _refused(StatusCode.FAILED_PRECONDITION, device.allocator.allocate_buffer, None, 64)
    finally:
        device.close()


def test_allocator_statistics_count_allocations_and_frees(cts):
    device = hal_core.create_device(cts.device.uri)
    try:
        alloc = device.allocator
        first = alloc.allocate_buffer(None, 4096)
        device_side = alloc.query_statistics().device_bytes_allocated > 0

        def live_and_peak() -> tuple[int, int, int]:
            s = alloc.query_statistics()
            if device_side:
                return (
                    s.device_bytes_allocated - s.device_bytes_freed,
                    s.device_bytes_peak,
                    s.device_bytes_freed,
                )
            return (
                s.host_bytes_allocated - s.host_bytes_freed,
                s.host_bytes_peak,
                s.host_bytes_freed,
            )

        assert live_and_peak() == (4096, 4096, 0)
        second = alloc.allocate_buffer(None, 1024)
        assert live_and_peak() == (5120, 5120, 0)
        sub = first.subspan(0, 16)
        del first
        gc.collect()
        assert live_and_peak() == (5120, 5120, 0)  # a subspan keeps its allocation
        del sub
        gc.collect()
        assert live_and_peak() == (1024, 5120, 4096)
        del second
        gc.collect()
        assert live_and_peak() == (0, 5120, 5120)
        third = alloc.allocate_buffer(None, 2048)
        assert live_and_peak() == (2048, 5120, 5120)
        del third
    finally:
        device.close()
