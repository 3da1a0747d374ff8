"""local-task runs small command buffers on the thread that readied them.

The inline rule (``inline_rule.inline_allowed``): a program that is one compiled-loop call runs
on the submitting thread when it was recorded with ALLOW_INLINE_EXECUTION, moves at most
``INLINE_TRANSFER_BYTES`` with transfers only, or runs at most ``INLINE_WORKGROUPS``
single-thread workgroups - and only while no earlier op of its queue is pending, so it never
overtakes one on the submitting thread. Inline failures fail the signals and never raise
into the caller. Which thread ran an op is observed by counting what reached the workers.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

import numpy as np
import pytest
from hal_local_cpu.executable_native import replay_available
from hal_local_cpu.kernels import native_library
from hal_local_cpu.program_records import INLINE_TRANSFER_BYTES, INLINE_WORKGROUPS

import hal_core as hal
from hal_core import BufferRef, CommandBufferMode, CommandCategory, DispatchConfig, StatusCode
from hal_core.backend import QueueOpKind

T = 20.0
ONE_SHOT_INLINE = CommandBufferMode.ONE_SHOT | CommandBufferMode.ALLOW_INLINE_EXECUTION

needs_replay = pytest.mark.skipif(
    not replay_available(), reason="no C compiler for the replay loop"
)


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> Any:
    # Worker threads run here: Python's default hook, so a failure escaping one is seen.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    dev = hal.create_device("local-task://?queues=2")
    yield dev
    dev.close()


class _Counting:
    """Wraps the device's worker pool and counts the EXECUTE ops handed to it."""

    def __init__(self, workers: Any) -> None:
        self.inner = workers
        self.count = workers.count
        self.executes = 0

    def submit(self, fn: Any, op: Any) -> None:
        if op.kind == QueueOpKind.EXECUTE:
            self.executes += 1
        self.inner.submit(fn, op)

    def parallel_for(self, count: int, body: Any) -> None:
        self.inner.parallel_for(count, body)

    def shutdown(self, timeout: float | None) -> None:
        self.inner.shutdown(timeout)


def _counting(device: Any) -> _Counting:
    backend = device.backend
    counting = _Counting(backend.workers)
    backend.workers = counting
    return counting


def _buf(device: Any, size: int, fill: int = 0) -> Any:
    b = device.allocator.allocate_buffer(
        hal.BufferParams(usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.MAPPING), size
    )
    b.write(bytes([fill]) * size)
    return b


def _copy_cb(device: Any, src: Any, dst: Any, length: int, mode: int = ONE_SHOT_INLINE) -> Any:
    cb = device.create_command_buffer(mode, CommandCategory.TRANSFER)
    cb.begin()
    cb.copy_buffer(BufferRef(src, 0, length), BufferRef(dst, 0, length))
    cb.end()
    return cb


def test_allow_inline_readback_runs_on_the_submitter(device: Any) -> None:
    workers = _counting(device)
    src, dst = _buf(device, 128, 7), _buf(device, 128)
    sem = device.create_semaphore()
    device.queue_execute(1, [], [(sem, 1)], _copy_cb(device, src, dst, 128))
    assert sem.query() == 1  # done before queue_execute returned
    assert workers.executes == 0
    assert dst.read() == bytes([7]) * 128


def test_transfer_rule_has_a_byte_limit(device: Any) -> None:
    workers = _counting(device)
    n = INLINE_TRANSFER_BYTES + 4
    src, dst = _buf(device, n, 3), _buf(device, n)
    for length, expected_workers in ((INLINE_TRANSFER_BYTES, 0), (n, 1)):
        sem = device.create_semaphore()
        cb = _copy_cb(device, src, dst, length, mode=CommandBufferMode.ONE_SHOT)
        assert cb.program.inline is (expected_workers == 0)
        device.queue_execute(1, [], [(sem, 1)], cb)
        sem.wait(1, T)
        assert workers.executes == expected_workers
    assert dst.read() == bytes([3]) * n


def test_inline_execute_behind_a_pending_op_of_its_queue_waits_its_turn(device: Any) -> None:
    """An earlier op of the same queue is parked on a gate: the inline-eligible command
    buffer must not run on the submitting thread ahead of it; it goes to a worker. Once
    the queue is idle again the same kind of submission runs inline. A pending op of
    another queue does not hold it back."""
    workers = _counting(device)
    gate = device.create_semaphore()
    target = _buf(device, 64)
    parked = device.create_semaphore()
    device.queue_fill(1, [(gate, 1)], [(parked, 1)], target, 0, 64, b"\x05")
    src, dst = _buf(device, 64, 9), _buf(device, 64)

    # Another queue's pending op does not matter.
    other = device.create_semaphore()
    device.queue_execute(2, [], [(other, 1)], _copy_cb(device, src, dst, 64))
    assert other.query() == 1 and workers.executes == 0

    behind = device.create_semaphore()
    device.queue_execute(1, [], [(behind, 1)], _copy_cb(device, src, dst, 64))
    assert workers.executes == 1  # not run inline while the fill is pending
    behind.wait(1, T)
    assert parked.query() == 0  # the gate still holds the earlier op

    gate.signal(1)
    parked.wait(1, T)
    assert target.read() == b"\x05" * 64
    after = device.create_semaphore()
    device.queue_execute(1, [], [(after, 1)], _copy_cb(device, src, dst, 64))
    assert after.query() == 1 and workers.executes == 1


def test_a_failing_inline_execute_fails_its_signals_and_later_work_runs(device: Any) -> None:
    """An UNRETAINED recording whose buffer is gone fails when it runs: inline, that is
    inside queue_execute, which must still return normally with the signal failed."""
    workers = _counting(device)
    src, dst = _buf(device, 64, 1), _buf(device, 64)
    cb = _copy_cb(device, src, dst, 64, mode=ONE_SHOT_INLINE | CommandBufferMode.UNRETAINED)
    del src
    gc.collect()
    sem = device.create_semaphore()
    device.queue_execute(1, [], [(sem, 1)], cb)  # never raises into the caller
    assert workers.executes == 0
    with pytest.raises(hal.HalError) as info:
        sem.wait(1, T)
    assert info.value.code == StatusCode.FAILED_PRECONDITION

    src2 = _buf(device, 64, 2)
    ok = device.create_semaphore()
    device.queue_execute(1, [], [(ok, 1)], _copy_cb(device, src2, dst, 64))
    ok.wait(1, T)
    assert dst.read() == b"\x02" * 64


@needs_replay
def test_dispatch_rule_counts_workgroups(device: Any) -> None:
    native = device.create_executable_cache("inline").prepare(
        "local-cpu-native", native_library("cts_kernels")
    )
    noop = native.lookup_function("noop")
    one = DispatchConfig.static(1)

    def record(n: int) -> Any:
        cb = device.create_command_buffer(0, CommandCategory.ANY)
        cb.begin()
        for _ in range(n):
            cb.dispatch(native, noop, one)
        cb.end()
        return cb

    workers = _counting(device)
    small, large = record(INLINE_WORKGROUPS), record(INLINE_WORKGROUPS + 1)
    assert small.program.inline and not large.program.inline
    for cb, expected_workers in ((small, 0), (large, 1)):
        sem = device.create_semaphore()
        device.queue_execute(1, [], [(sem, 1)], cb)
        sem.wait(1, T)
        assert workers.executes == expected_workers


@needs_replay
def test_a_failing_inline_dispatch_fails_its_signals(device: Any) -> None:
    native = device.create_executable_cache("inline").prepare(
        "local-cpu-native", native_library("cts_kernels")
    )
    out = _buf(device, 16)
    cb = device.create_command_buffer(0, CommandCategory.ANY)
    cb.begin()
    # Four workgroup ids fill the 16-byte binding; a fifth writes past it.
    cb.dispatch(
        native, native.lookup_function("write_workgroup_ids"), DispatchConfig.static(4), b"", [out]
    )
    cb.end()
    workers = _counting(device)
    sem = device.create_semaphore()
    device.queue_execute(1, [], [(sem, 1)], cb)
    assert workers.executes == 0
    sem.wait(1, T)
    assert np.frombuffer(out.read(), np.uint32).tolist() == [0, 1, 2, 3]

    bad = device.create_command_buffer(0, CommandCategory.ANY)
    bad.begin()
    bad.dispatch(
        native, native.lookup_function("write_workgroup_ids"), DispatchConfig.static(5), b"", [out]
    )
    bad.end()
    failed = device.create_semaphore()
    device.queue_execute(1, [], [(failed, 1)], bad)  # never raises into the caller
    assert workers.executes == 0
    with pytest.raises(hal.HalError) as info:
        failed.wait(1, T)
    assert info.value.code == StatusCode.OUT_OF_RANGE
