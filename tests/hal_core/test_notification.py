"""Notifications: the observe-token protocol, signal_if_observed, parking, lost wakeups."""

from __future__ import annotations

import threading

import pytest

from hal_core import DeadlineExceededError, FailedPreconditionError
from hal_core.backend import Notification


def test_token_protocol_basics():
    n = Notification()
    token = n.begin_observe()
    assert n.observer_count == 1
    with pytest.raises(DeadlineExceededError):
        n.wait_for_token(token, 0)
    n.signal()
    assert n.wait_for_token(token, 0) == token + 1  # a signal before the wait is not lost
    n.end_observe()
    assert n.observer_count == 0
    with pytest.raises(FailedPreconditionError, match="without begin_observe"):
        n.end_observe()


def test_signal_if_observed_skips_wake_without_observers():
    n = Notification()
    assert n.signal_if_observed() is False
    token = n.begin_observe()
    assert n.signal_if_observed() is True
    assert n.wait_for_token(token, 0) > token
    n.end_observe()


def test_wait_times_out_with_deadline_exceeded():
    n = Notification()
    with pytest.raises(DeadlineExceededError, match="stayed at epoch"):
        n.wait(0.01)
    assert n.observer_count == 0  # scope closed even on timeout


def test_park_fires_once_on_next_signal_and_unpark():
    n = Notification()
    fired = []
    token = n.query_epoch()
    handle = n.park(token, lambda arg, st: fired.append(arg), "a")
    assert handle is not None and n.observer_count == 1
    assert n.signal_if_observed() is True
    assert fired == ["a"] and n.observer_count == 0
    n.signal()
    assert fired == ["a"]
    # An already-moved token fires at once.
    assert n.park(token, lambda arg, st: fired.append(arg), "b") is None
    assert fired == ["a", "b"]
    h = n.park(n.query_epoch(), lambda arg, st: fired.append(arg), "c")
    assert n.unpark(h) is True and n.unpark(h) is False
    n.signal()
    assert fired == ["a", "b"] and n.observer_count == 0


def test_no_lost_wakeups_many_threads():
    """Producers add items and signal_if_observed; consumers use the token protocol.
    Every item is consumed and no consumer sleeps through a signal (each wait has a
    generous timeout that would raise if a wakeup were lost)."""
    n = Notification()
    items: list[int] = []
    lock = threading.Lock()
    total = 2000
    producers, consumers = 4, 4
    taken: list[int] = []
    errors: list[BaseException] = []

    def produce(start: int) -> None:
        for i in range(start, total, producers):
            with lock:
                items.append(i)
            n.signal_if_observed()

    def consume() -> None:
        try:
            while True:
                token = n.begin_observe()
                try:
                    while True:
                        with lock:
                            if len(taken) >= total:
                                return
                            last = False
                            if items:
                                taken.append(items.pop())
                                last = len(taken) == total
                        if last:
                            n.signal()  # wake the consumers still waiting, so they exit
                            return
                        if items:
                            continue
                        token = n.wait_for_token(token, 10.0)
                finally:
                    n.end_observe()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    cs = [threading.Thread(target=consume) for _ in range(consumers)]
    ps = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for t in cs + ps:
        t.start()
    for t in ps + cs:
        t.join(30)
    assert not any(t.is_alive() for t in cs)
    assert not errors
    assert sorted(taken) == list(range(total))
    assert n.observer_count == 0
