"""Zero-hop chaining is iterative: long dependency chains never grow the stack."""

import sys
import threading
import time

import pytest

import hal_core as hal
from hal_core._construction import INTERNAL


def Semaphore(initial_value: int = 0) -> hal.Semaphore:
    """A semaphore of no device (the constructor is internal; tests of the semaphore
    itself need no device)."""
    return hal.Semaphore(initial_value, _token=INTERNAL)


def test_100k_timepoint_chain_on_one_thread_keeps_the_stack_flat():
    n = 100_000
    sems = [Semaphore() for _ in range(n)]
    depths = []

    def relay(i, status):
        assert status is None
        depths.append(len(_stack()))
        if i + 1 < n:
            sems[i + 1].signal(1)

    for i in range(n):
        sems[i].add_timepoint(1, relay, i)
    sems[0].signal(1)
    assert sems[-1].query() == 1
    assert max(depths) - min(depths) == 0


def _stack():
    out = []
    f = sys._getframe()
    while f is not None:
        out.append(f)
        f = f.f_back
    return out


@pytest.mark.parametrize("uri", ["local-task://", "local-sync://"])
def test_100k_queue_chain_completes(uri):
    n = 100_000
    with hal.create_device(uri) as device:
        head = device.create_semaphore()
        prev = (head, 1)
        for i in range(n):
            s = device.create_semaphore()
            device.queue_barrier(1 << (i % 2), (prev,), ((s, 1),))
            prev = (s, 1)
        head.signal(1)
        prev[0].wait(1, timeout=120)


@pytest.mark.parametrize("uri", ["local-task://", "local-sync://"])
def test_100k_ops_parked_on_one_timeline_semaphore(uri):
    """Op i waits for value i+1 of one semaphore and signals i+2: 100,000 timepoints parked
    at distinct values, each signal releasing one (a per-signal scan of every parked
    timepoint made this quadratic: minutes instead of seconds). The same chain on the soft
    HSA agent is tests/plugins/amdgpu/test_reliability.py's."""
    n = 100_000
    try:
        device = hal.create_device(uri)
    except hal.UnavailableError as exc:
        pytest.skip(f"{uri}: {exc}")
    with device:
        s = device.create_semaphore()
        queues = min(2, device.queue_count)
        barrier = device.queue_barrier
        for i in range(n):
            barrier(1 << (i % queues), ((s, i + 1),), ((s, i + 2),))
        s.signal(1)
        s.wait(n + 1, timeout=300)
        assert s.query() == n + 1


def test_failure_travels_down_a_long_chain():
    with hal.create_device("local-sync://") as device:
        head = device.create_semaphore()
        prev = (head, 1)
        for _ in range(10_000):
            s = device.create_semaphore()
            device.queue_barrier(1, (prev,), ((s, 1),))
            prev = (s, 1)
        head.fail(hal.DataLossError("disk gone"))
        with pytest.raises(hal.DataLossError, match="disk gone"):
            prev[0].wait(1, timeout=30)


def test_callbacks_run_outside_the_lock():
    s = Semaphore()
    seen = []

    def cb(_arg, status):
        # Re-entering the same semaphore from its own callback must not deadlock.
        seen.append(s.query())
        s.signal(s.query() + 1)

    s.add_timepoint(1, cb, None)
    s.signal(1)
    assert seen == [1] and s.query() == 2


def test_waiters_on_many_threads_all_wake():
    s = Semaphore()
    woke = []
    threads = [threading.Thread(target=lambda: (s.wait(5, 10), woke.append(1))) for _ in range(16)]
    for t in threads:
        t.start()
    s.signal(5)
    for t in threads:
        t.join(10)
    assert len(woke) == 16


def test_failed_multi_wait_leaves_no_timepoints_behind():
    a, b = Semaphore(), Semaphore()
    errors = []

    def wait():
        try:
            hal.wait_all([(a, 1), (b, 1)], 10)
        except hal.AbortedError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    deadline = time.monotonic() + 10
    while not (a._timepoints and b._timepoints):  # wait for the waiter to park on both
        assert time.monotonic() < deadline and waiter.is_alive()
    a.fail(hal.AbortedError("stop"))
    waiter.join(10)
    assert len(errors) == 1
    # Failing one semaphore unregistered the waiter everywhere.
    assert b.pending_timepoints() == 0 and b._timepoints == []
