"""CTS: queue_host_call (IREE's QueueHostCallTest).

A host call runs ``fn(args, context)`` on a host thread once its waits are reached.
Blocking calls signal on return, fail every signal on an error (returned status, HalError
or any exception), or hand the signals over with ``StatusCode.DEFERRED``; NON_BLOCKING
calls signal first and get an empty signal list. Like IREE this suite runs on every
backend (the ``host_calls`` tag only advertises the capability).
"""

from __future__ import annotations

import threading

import pytest

import hal_core
from hal_core import FAILURE_VALUE, HostCallFlags, QueueAffinity, StatusCode

from .context import TIMEOUT

ANY = QueueAffinity.ANY


class Recorder:
    """Collects calls; ``called`` is set on the first one."""

    def __init__(self, result=None):
        self.calls: list[tuple] = []
        self.contexts: list = []
        self.called = threading.Event()
        self.result = result

    def __call__(self, args, context):
        self.calls.append(tuple(args))
        self.contexts.append(context)
        self.called.set()
        return self.result

    def wait_called(self):
        assert self.called.wait(TIMEOUT), "host call never ran"


def _assert_failed(sems, error_type, code):
    for sem in sems:
        with pytest.raises(error_type):
            sem.wait(1, TIMEOUT)
    for sem in sems:  # queried one by one: every semaphore carries the failure
        assert sem.value >= FAILURE_VALUE
        assert sem.failure.code == code
        with pytest.raises(error_type):
            sem.query()


def _later_work_runs(cts):
    sem = cts.semaphore(0)
    rec = Recorder()
    cts.device.queue_host_call(ANY, [], [(sem, 1)], rec, (1, 2, 3, 4))
    cts.wait(sem, 1)
    assert rec.calls == [(1, 2, 3, 4)]


def test_call_after_wait_with_exact_args(cts):
    gate, done = cts.semaphore(0), cts.semaphore(0)
    rec = Recorder()
    args = (0, 1, 0xFFFF_FFFF_FFFF_FFFF, 0x1234_5678_9ABC_DEF0)
    cts.device.queue_host_call(ANY, [(gate, 1)], [(done, 1)], rec, args)
    assert rec.calls == []  # the wait is not reached yet
    assert done.query() == 0
    gate.signal(1)
    cts.wait(done, 1)
    assert rec.calls == [args]


def test_call_without_waits_runs_asap(cts):
    done = cts.semaphore(0)
    rec = Recorder()
    cts.device.queue_host_call(ANY, [], [(done, 1)], rec, (5, 6, 7, 8))
    cts.wait(done, 1)
    assert rec.calls == [(5, 6, 7, 8)]


def test_context_describes_the_call(cts):
    done = cts.semaphore(0)
    rec = Recorder()
    cts.device.queue_host_call(ANY, [], [(done, 1)], rec, (0, 0, 0, 0))
    cts.wait(done, 1)
    (context,) = rec.contexts
    assert context.device is cts.device
    affinity = context.queue_affinity
    assert affinity and affinity & (affinity - 1) == 0  # exactly one queue
    assert affinity < (1 << cts.device.queue_count)
    assert [(s, v) for s, v in context.signals] == [(done, 1)]


def test_call_on_each_queue(cts):
    for affinity in cts.queue_affinities():
        done = cts.semaphore(0)
        rec = Recorder()
        cts.device.queue_host_call(affinity, [], [(done, 1)], rec, (affinity, 0, 0, 0))
        cts.wait(done, 1)
        assert rec.contexts[0].queue_affinity == affinity


def test_non_blocking_signals_with_empty_list(cts):
    gate, done = cts.semaphore(0), cts.semaphore(0)
    rec = Recorder()
    cts.device.queue_host_call(
        ANY, [(gate, 1)], [(done, 1)], rec, (9, 8, 7, 6), flags=HostCallFlags.NON_BLOCKING
    )
    assert done.query() == 0
    gate.signal(1)
    cts.wait(done, 1)
    rec.wait_called()
    assert rec.calls == [(9, 8, 7, 6)]
    assert tuple(rec.contexts[0].signals) == ()


def test_non_blocking_errors_are_ignored(cts, monkeypatch):
    """A NON_BLOCKING callback's error does not touch the (already signalled) semaphores;
    it is only reported, through ``sys.unraisablehook``."""
    reported = []
    report_seen = threading.Event()

    def hook(info):
        reported.append(info.exc_value)
        report_seen.set()

    monkeypatch.setattr("sys.unraisablehook", hook)
    done = cts.semaphore(0)

    def failing(args, context):
        raise RuntimeError("ignored by contract")

    cts.device.queue_host_call(ANY, [], [(done, 1)], failing, flags=HostCallFlags.NON_BLOCKING)
    cts.wait(done, 1)  # signalled regardless of the callback's error
    assert report_seen.wait(TIMEOUT), "the callback's error was not reported"
    assert isinstance(reported[0], RuntimeError)
    assert done.query() == 1
    _later_work_runs(cts)


def test_deferred_signal_from_another_thread(cts):
    gate, done_a, done_b = cts.semaphore(0), cts.semaphore(0), cts.semaphore(10)
    helpers = []

    def deferred(args, context):
        # The callback owns the signals now and completes them later, elsewhere.
        helpers.append(cts.thread(context.signal))
        return StatusCode.DEFERRED

    cts.device.queue_host_call(
        ANY, [(gate, 1)], [(done_a, 1), (done_b, 11)], deferred, (1, 1, 1, 1)
    )
    gate.signal(1)
    hal_core.wait_all([(done_a, 1), (done_b, 11)], TIMEOUT)
    for t in helpers:
        t.join()


def test_deferred_failure_from_another_thread(cts):
    done = cts.semaphore(0)

    def deferred(args, context):
        cts.thread(context.fail, hal_core.DataLossError("async work lost"))
        return StatusCode.DEFERRED

    cts.device.queue_host_call(ANY, [], [(done, 1)], deferred)
    _assert_failed([done], hal_core.DataLossError, StatusCode.DATA_LOSS)
    _later_work_runs(cts)


@pytest.mark.parametrize("with_wait", [False, True])
@pytest.mark.parametrize("how", ["status", "error_object", "raise"])
def test_error_fails_every_signal(cts, with_wait, how):
    def fn(args, context):
        if how == "status":
            return StatusCode.PERMISSION_DENIED
        if how == "error_object":
            return hal_core.PermissionDeniedError("no access")
        raise hal_core.PermissionDeniedError("no access")

    gate = cts.semaphore(0)
    signals = [cts.semaphore(0), cts.semaphore(3), cts.semaphore(0)]
    waits = [(gate, 1)] if with_wait else []
    cts.device.queue_host_call(ANY, waits, [(signals[0], 1), (signals[1], 4), (signals[2], 1)], fn)
    if with_wait:
        gate.signal(1)
    with pytest.raises(hal_core.PermissionDeniedError):
        hal_core.wait_all([(signals[0], 1), (signals[1], 4), (signals[2], 1)], TIMEOUT)
    _assert_failed(signals, hal_core.PermissionDeniedError, StatusCode.PERMISSION_DENIED)
    _later_work_runs(cts)


def test_plain_exception_fails_signals(cts):
    done = cts.semaphore(0)

    def fn(args, context):
        raise ValueError("bad value in callback")

    cts.device.queue_host_call(ANY, [], [(done, 1)], fn)
    with pytest.raises(hal_core.HalError, match="bad value in callback") as info:
        done.wait(1, TIMEOUT)
    assert info.value.code != StatusCode.OK
    assert done.value >= FAILURE_VALUE
    _later_work_runs(cts)


def test_failed_wait_skips_the_call(cts):
    gate, done = cts.semaphore(0), cts.semaphore(0)
    rec = Recorder()
    cts.device.queue_host_call(ANY, [(gate, 1)], [(done, 1)], rec)
    gate.fail(StatusCode.CANCELLED, "upstream")
    _assert_failed([done], hal_core.CancelledError, StatusCode.CANCELLED)
    assert rec.calls == []
    _later_work_runs(cts)


def test_host_call_orders_queue_work(cts):
    """A host call between two transfers sees the first one's result."""
    buf = cts.buffer(8)
    s = cts.semaphore(0)
    seen = []

    mappable = buf.memory_type.has(hal_core.MemoryType.HOST_VISIBLE) and bool(
        buf.allowed_usage & hal_core.BufferUsage.MAPPING_SCOPED
    )

    def observe(args, context):
        seen.append(buf.read(0, 8) if mappable else None)

    cts.device.queue_fill(ANY, [], [(s, 1)], buf, 0, 8, b"\x42")
    cts.device.queue_host_call(ANY, [(s, 1)], [(s, 2)], observe)
    cts.device.queue_fill(ANY, [(s, 2)], [(s, 3)], buf, 0, 8, b"\x43")
    cts.wait(s, 3)
    if seen[0] is not None:
        assert seen == [b"\x42" * 8]
    assert cts.read_bytes(buf) == b"\x43" * 8


# --------------------------------------------------------------------------- bad input


def test_bad_arguments_are_invalid(cts):
    sem = cts.semaphore(0)
    with pytest.raises(hal_core.InvalidArgumentError, match="callable"):
        cts.device.queue_host_call(ANY, [], [(sem, 1)], "not callable")
    with pytest.raises(hal_core.InvalidArgumentError, match="4"):
        cts.device.queue_host_call(ANY, [], [(sem, 1)], Recorder(), (1, 2, 3))
    with pytest.raises(hal_core.InvalidArgumentError, match="4"):
        cts.device.queue_host_call(ANY, [], [(sem, 1)], Recorder(), (1, 2, 3, 4, 5))
    assert sem.query() == 0
    _later_work_runs(cts)


@pytest.mark.parametrize(
    "args", [("x", 0, 0, 0), (-1, 0, 0, 0), (0, 0, 0, 1 << 64), (1.5, 0, 0, 0), None]
)
def test_args_must_be_four_uint64(cts, args):
    sem = cts.semaphore(0)
    rec = Recorder()
    with pytest.raises(hal_core.InvalidArgumentError, match="args"):
        cts.device.queue_host_call(ANY, [], [(sem, 1)], rec, args)
    assert rec.calls == [] and sem.query() == 0
    _later_work_runs(cts)


def test_non_status_result_fails_signals(cts):
    done = cts.semaphore(0)
    cts.device.queue_host_call(ANY, [], [(done, 1)], lambda args, ctx: "oops")
    with pytest.raises(hal_core.InvalidArgumentError, match="oops"):
        done.wait(1, TIMEOUT)
    _later_work_runs(cts)
