"""FrontierTracker: axes, monotonic advance, waiters, failure propagation."""

from __future__ import annotations

import threading

import pytest

import hal_core
from hal_core import (
    AlreadyExistsError,
    CancelledError,
    DataLossError,
    NotFoundError,
    ResourceExhaustedError,
)
from hal_core._construction import INTERNAL
from hal_core.backend import Frontier, FrontierTracker


def _recorder():
    calls = []
    return calls, lambda arg, status: calls.append((arg, status))


def test_register_advance_query():
    t = FrontierTracker()
    t.register_axis(1)
    assert not t.query_epoch(1, 1)
    assert t.advance(1, 3) == 0
    assert t.query_epoch(1, 3) and not t.query_epoch(1, 4)
    t.advance(1, 2)  # lower epochs never move it back
    assert t.current_epoch(1) == 3
    with pytest.raises(AlreadyExistsError):
        t.register_axis(1)
    with pytest.raises(NotFoundError, match="not registered"):
        t.advance(99, 1)
    assert not t.query_epoch(99, 1)


def test_axis_capacity_is_resource_exhausted():
    t = FrontierTracker(axis_capacity=1)
    t.register_axis(1)
    with pytest.raises(ResourceExhaustedError, match="axis_capacity"):
        t.register_axis(2)


def test_waiter_fires_when_every_entry_reached():
    t = FrontierTracker()
    t.register_axis(1)
    t.register_axis(2)
    calls, fn = _recorder()
    w = t.wait(Frontier([(1, 2), (2, 1)]), fn, "w")
    assert w is not None and calls == []
    t.advance(1, 2)
    assert calls == []
    assert t.advance(2, 5) == 1
    assert calls == [("w", None)]
    t.advance(2, 6)
    assert len(calls) == 1  # fires once
    assert t.pending_waiter_count == 0


def test_satisfied_wait_fires_immediately_and_unknown_axis_raises():
    t = FrontierTracker()
    t.register_axis(1)
    t.advance(1, 4)
    calls, fn = _recorder()
    assert t.wait(Frontier([(1, 4)]), fn, 1) is None
    assert calls == [(1, None)]
    with pytest.raises(NotFoundError):
        t.wait(Frontier([(1, 5), (3, 1)]), fn, 2)
    assert t.pending_waiter_count == 0  # nothing half-registered


def test_cancel_wait():
    t = FrontierTracker()
    t.register_axis(1)
    calls, fn = _recorder()
    w = t.wait(Frontier([(1, 1)]), fn, None)
    assert t.cancel_wait(w) is True
    assert t.cancel_wait(w) is False
    t.advance(1, 1)
    assert calls == []


def test_fail_axis_reaches_every_waiter_and_later_waits():
    t = FrontierTracker()
    for a in (1, 2):
        t.register_axis(a)
    calls, fn = _recorder()
    t.wait(Frontier([(1, 1)]), fn, "a")
    t.wait(Frontier([(1, 3), (2, 1)]), fn, "b")
    t.wait(Frontier([(2, 1)]), fn, "c")
    t.fail_axis(1, DataLossError("device lost"))
    assert sorted(c[0] for c in calls) == ["a", "b"]
    assert all(isinstance(c[1], DataLossError) for c in calls)
    assert not t.query_epoch(1, 0 + 1)
    t.wait(Frontier([(1, 1)]), fn, "d")
    assert calls[-1][0] == "d" and isinstance(calls[-1][1], DataLossError)
    t.advance(2, 1)  # the unrelated waiter still works
    assert calls[-1] == ("c", None)
    t.advance(1, 9)  # advancing a failed axis is ignored
    assert not t.query_epoch(1, 9)


def test_retire_axis_cancels_and_close_cancels_pending():
    t = FrontierTracker()
    t.register_axis(1)
    t.register_axis(2)
    calls, fn = _recorder()
    t.wait(Frontier([(1, 1)]), fn, "r")
    t.retire_axis(1)
    assert isinstance(calls[-1][1], CancelledError)
    t.wait(Frontier([(2, 1)]), fn, "x")
    t.close()
    t.close()
    assert calls[-1][0] == "x" and isinstance(calls[-1][1], CancelledError)


def test_bridge_semaphore_follows_axis():
    sem = hal_core.Semaphore(0, _token=INTERNAL)  # a bridge needs no device
    t = FrontierTracker()
    t.register_axis(1, bridge_semaphore=sem)
    t.advance(1, 3)
    assert sem.value == 3
    t.fail_axis(1, DataLossError("gone"))
    assert sem.failure is not None


def test_waiter_callback_can_advance_other_axes_without_recursion():
    n = 2000
    t = FrontierTracker(axis_capacity=n)
    for a in range(n):
        t.register_axis(a)
    # A chain: reaching axis a advances axis a+1 from inside the callback.
    for a in range(n - 1):
        t.wait(Frontier([(a, 1)]), lambda nxt, st: t.advance(nxt, 1), a + 1)
    t.advance(0, 1)
    assert t.query_epoch(n - 1, 1)


def test_concurrent_advances_fire_each_waiter_once():
    t = FrontierTracker()
    axes = list(range(4))
    for a in axes:
        t.register_axis(a)
    fired = []
    lock = threading.Lock()

    def fn(arg, status):
        with lock:
            fired.append(arg)

    for i in range(200):
        t.wait(Frontier([(a, 1 + i % 50) for a in axes]), fn, i)
    threads = [
        threading.Thread(target=lambda a=a: [t.advance(a, e) for e in range(1, 51)]) for a in axes
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert sorted(fired) == list(range(200))


def test_publish_protocol_never_loses_a_waiter():
    """An owner publishing epochs lock-free (as queue timelines do) and waiters registering
    concurrently: every waiter fires, none is stranded by a publish it did not see."""
    t = FrontierTracker()
    t.register_axis(1)
    published = t.published_epochs
    state = t.axis_state(1)
    total = 3000
    fired = []
    done = threading.Event()

    def publisher():
        for epoch in range(1, total + 1):
            published[1] = epoch
            if state.min_pending <= epoch:
                t.advance(1, epoch)
        done.set()

    def on_fire(arg, status):
        fired.append(arg)

    th = threading.Thread(target=publisher)
    th.start()
    for i in range(1, total + 1, 3):
        t.wait(Frontier([(1, i)]), on_fire, i)
    th.join(30)
    assert done.is_set()
    assert sorted(fired) == list(range(1, total + 1, 3))
    assert t.query_epoch(1, total)
