"""The native ``complete_op`` agrees with its Python reference.

``hal_core._native_queue.complete_op(op, timeline)`` signals an op's semaphores, drops
``op.retained`` and retires ``op.epoch`` in C when nothing unusual is in the way, and calls
the reference (``signal_all`` per semaphore, ``QueueTimeline.retire``) otherwise. For any
starting state (semaphores failed, at any value, with timepoints parked at any value; the
timeline with epochs retired out of order, bound to a tracker with waiters or not, with an
``on_retire`` hook) both must leave the same values, failures, fired callbacks (in the same
order), retired epochs, published epochs and tracker waiters. The native ``wait_reached``
answers as ``_completion.wait_reached`` does.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core import InvalidArgumentError, StatusCode
from hal_core._completion import complete_op as complete_op_reference
from hal_core._completion import wait_reached as wait_reached_reference
from hal_core._construction import INTERNAL
from hal_core._frontier import Frontier
from hal_core._frontier_tracker import FrontierTracker
from hal_core._queue import QueueOp, QueueOpKind
from hal_core._queue_fast_paths import native
from hal_core._queue_timeline import QueueTimeline
from hal_core._semaphore import Semaphore

pytestmark = pytest.mark.skipif(native is None, reason="hal_core._native_queue is not built")

AXIS = 5

_sem = st.fixed_dictionaries(
    {
        "value": st.integers(0, 6),
        "failed": st.booleans(),
        "timepoints": st.lists(st.integers(0, 9), max_size=3),
    }
)
_scenario = st.fixed_dictionaries(
    {
        "sems": st.lists(_sem, min_size=1, max_size=3),
        "signals": st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9)), max_size=3),
        "retired": st.integers(0, 4),
        "done": st.lists(st.integers(1, 9), max_size=3),
        "epoch": st.integers(1, 7),
        "bound": st.booleans(),
        "second_tracker": st.booleans(),
        "waiter": st.one_of(st.none(), st.integers(1, 9)),
        "on_retire": st.booleans(),
    }
)


def _run(scenario: dict, complete: Any) -> tuple:
    log: list = []
    sems = []
    for i, spec in enumerate(scenario["sems"]):
        sem = Semaphore(spec["value"], _token=INTERNAL)
        for value in spec["timepoints"]:
            sem.add_timepoint(
                value,
                lambda arg, status: log.append(
                    ("tp", arg, None if status is None else status.code)
                ),
                (i, value),
            )
        if spec["failed"]:
            sem.fail(StatusCode.ABORTED, "scenario")
        sems.append(sem)
    timeline = QueueTimeline(0)
    for _ in range(scenario["retired"]):
        timeline.retire(timeline.begin())
    for epoch in scenario["done"]:
        if epoch > timeline.retired + 1:
            timeline._done.add(epoch)
    trackers = []
    if scenario["bound"]:
        for _ in range(2 if scenario["second_tracker"] else 1):
            tracker = FrontierTracker()
            tracker.register_axis(AXIS)
            timeline.bind_axis(tracker, AXIS)
            if scenario["waiter"] is not None:
                tracker.wait(
                    Frontier([(AXIS, scenario["waiter"])]),
                    lambda arg, status: log.append(("frontier", arg, status)),
                    len(trackers),
                )
            trackers.append(tracker)
    if scenario["on_retire"]:
        timeline.on_retire = lambda epoch: log.append(("retired", epoch))
    signals = tuple((sems[i % len(sems)], v) for i, v in scenario["signals"])
    op = QueueOp(QueueOpKind.BARRIER, 0, (), signals)
    op.epoch = scenario["epoch"]
    op.retained = [object()]
    try:
        complete(op, timeline)
        raised = None
    except Exception as exc:  # both must raise the same way (retire of a bad epoch)
        raised = (type(exc), str(exc))
    return (
        raised,
        [(s._value, None if s._failure is None else s._failure.code) for s in sems],
        [s.pending_timepoints() for s in sems],
        log,
        op.retained,
        timeline.retired,
        sorted(timeline._done),
        [dict(t.published_epochs) for t in trackers],
        [t.query_epoch(AXIS, timeline.retired) if timeline.retired else True for t in trackers],
    )


@settings(max_examples=400, deadline=None)
@given(scenario=_scenario)
def test_native_complete_op_agrees_with_the_reference(scenario: dict) -> None:
    assert _run(scenario, native.complete_op) == _run(scenario, complete_op_reference)


def test_a_held_semaphore_lock_takes_the_locked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """While another thread holds a semaphore's lock (it is between reading and writing
    its state), the native path must not store behind its back: it waits for the lock
    through the reference, and the other thread's timepoint is not lost."""
    # Threads run with Python's default hook, so nothing they report is hidden.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    sem = Semaphore(0, _token=INTERNAL)
    timeline = QueueTimeline(0)
    op = QueueOp(QueueOpKind.BARRIER, 0, (), ((sem, 2),))
    op.epoch = timeline.begin()
    fired = threading.Event()
    sem._lock.acquire()
    finished = threading.Event()

    def complete() -> None:
        native.complete_op(op, timeline)
        finished.set()

    thread = threading.Thread(target=complete)
    thread.start()
    assert not finished.wait(0.2)  # blocked on the lock, nothing stored
    assert sem._value == 0
    # What add_timepoint does under the lock, finished before releasing it.
    sem._timepoints.append([1, 0, lambda arg, status: fired.set(), None])
    sem._min_pending = 1
    sem._lock.release()
    thread.join(10)
    assert finished.is_set() and fired.is_set()
    assert sem._value == 2 and timeline.retired == 1


def test_a_non_advancing_signal_fails_the_semaphore_as_the_reference_does() -> None:
    for complete in (native.complete_op, complete_op_reference):
        sem = Semaphore(3, _token=INTERNAL)
        timeline = QueueTimeline(0)
        op = QueueOp(QueueOpKind.BARRIER, 0, (), ((sem, 3),))
        op.epoch = timeline.begin()
        complete(op, timeline)
        assert isinstance(sem.failure, InvalidArgumentError)
        assert timeline.retired == 1


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(0, 5),
    failed=st.booleans(),
    value=st.one_of(
        st.integers(-2, 8), st.sampled_from([np.int64(3), True, 2.5, "1", None, 1 << 70])
    ),
)
def test_native_wait_reached_agrees_with_the_reference(
    start: int, failed: bool, value: Any
) -> None:
    sem = Semaphore(start, _token=INTERNAL)
    if failed:
        sem.fail(StatusCode.ABORTED, "scenario")

    def run(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            return type(exc)

    assert run(native.wait_reached, sem, value) == run(wait_reached_reference, sem, value)
    assert run(native.wait_reached, object(), 1) == run(wait_reached_reference, object(), 1)
