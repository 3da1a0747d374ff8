"""Semaphore front door: argument types and ranges, fail() statuses, and the timepoint
heap (release order, cancellation, failure) that keeps a signal O(log N + released)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import hal_core as hal
import hal_core.backend as hal_backend
from hal_core import MAX_VALUE, StatusCode
from hal_core._construction import INTERNAL


def Semaphore(initial_value: int = 0) -> hal.Semaphore:
    """A semaphore of no device (the constructor is internal; tests of the semaphore
    itself need no device)."""
    return hal.Semaphore(initial_value, _token=INTERNAL)


BAD_PAYLOADS = [1.0, "1", None, b"1", [1], True, object(), np.float64(2.0)]


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")


# --------------------------------------------------------------------------- fail()


def test_fail_with_an_ok_coded_halerror_is_invalid_and_changes_nothing():
    s = Semaphore()
    fired = []
    s.add_timepoint(1, lambda arg, status: fired.append(status), None)
    with pytest.raises(hal.InvalidArgumentError, match="code OK"):
        s.fail(hal.HalError(StatusCode.OK, "not an error"))
    assert s.failure is None and s.query() == 0 and fired == []
    s.signal(1)  # still a working semaphore
    assert fired == [None]


@pytest.mark.parametrize("status", [StatusCode.OK, 0, True, "DATA_LOSS", None, 999, 2.5])
def test_fail_with_a_non_error_status_is_invalid(status):
    s = Semaphore()
    with pytest.raises(hal.InvalidArgumentError, match="not changed"):
        s.fail(status)
    assert s.failure is None and s.query() == 0


def test_fail_message_must_be_a_string():
    s = Semaphore()
    with pytest.raises(hal.InvalidArgumentError, match="message"):
        s.fail(StatusCode.ABORTED, 42)
    assert s.failure is None


def test_fail_accepts_codes_as_numpy_integers_and_keeps_a_halerror_cause():
    s = Semaphore()
    s.fail(np.int64(int(StatusCode.DATA_LOSS)), "disk gone")
    with pytest.raises(hal.DataLossError, match="disk gone"):
        s.wait(1)
    cause = RuntimeError("root")
    error = hal.AbortedError("stopped")
    error.__cause__ = cause
    t = Semaphore()
    t.fail(error)
    assert t.failure is error and t.failure.__cause__ is cause


# --------------------------------------------------------------------------- signal / wait


@pytest.mark.parametrize("value", BAD_PAYLOADS)
def test_signal_wrong_type_is_invalid_argument(value):
    s = Semaphore()
    with pytest.raises(hal.InvalidArgumentError, match="integer"):
        s.signal(value)
    assert s.query() == 0


@pytest.mark.parametrize("value", [-1, MAX_VALUE + 1, 1 << 64, 1 << 200])
def test_signal_out_of_range_is_invalid_argument(value):
    s = Semaphore()
    with pytest.raises(hal.InvalidArgumentError):
        s.signal(value)
    assert s.query() == 0


def test_numpy_integers_are_accepted_everywhere():
    s = Semaphore(np.uint8(1))
    assert s.query() == 1
    s.signal(np.int64(2))
    s.signal(np.uint32(MAX_VALUE))
    assert s.query() == MAX_VALUE and type(s.query()) is int
    s.wait(np.int32(5), timeout=np.float32(0.5))
    hal.wait_all([(s, np.int64(3))], np.int64(1))
    assert hal.wait_any([(s, np.uint64(4))], 0.5) == 0
    fired = []
    t = Semaphore()
    t.add_timepoint(np.int16(1), lambda arg, status: fired.append(arg), "x")
    t.signal(np.int8(1))
    assert fired == ["x"]


@pytest.mark.parametrize("value", BAD_PAYLOADS + [_ReprRaises()])
def test_wait_value_wrong_type_is_invalid_argument(value):
    s = Semaphore(5)
    with pytest.raises(hal.InvalidArgumentError):
        s.wait(value, timeout=0)
    with pytest.raises(hal.InvalidArgumentError):
        hal.wait_all([(s, value)], 0)
    with pytest.raises(hal.InvalidArgumentError):
        hal.wait_any([(s, value)], 0)


@pytest.mark.parametrize("value", [-1, MAX_VALUE + 1, 1 << 64])
def test_wait_value_out_of_range_is_invalid_argument(value):
    s = Semaphore(5)
    for wait in (
        lambda: s.wait(value, 0),
        lambda: hal.wait_all([(s, value)], 0),
        lambda: hal.wait_any([(s, value)], 0),
    ):
        with pytest.raises(hal.InvalidArgumentError, match="0..2147483646"):
            wait()


@pytest.mark.parametrize("timeout", ["1", b"1", [1], True, float("nan"), object(), 1j])
def test_wait_timeout_wrong_type_is_invalid_argument(timeout):
    s = Semaphore(5)
    with pytest.raises(hal.InvalidArgumentError, match="timeout"):
        s.wait(1, timeout)
    with pytest.raises(hal.InvalidArgumentError, match="timeout"):
        hal.wait_all([(s, 1)], timeout)
    with pytest.raises(hal.InvalidArgumentError, match="timeout"):
        hal.wait_any([(s, 1)], timeout)


@pytest.mark.parametrize("timeout", [float("inf"), 1e300, 10**400])
def test_huge_timeouts_wait_forever_instead_of_overflowing(timeout):
    s = Semaphore()
    threading.Timer(0.05, s.signal, (1,)).start()
    s.wait(1, timeout)  # OverflowError from Lock.acquire before
    t = Semaphore()
    threading.Timer(0.05, t.signal, (1,)).start()
    hal.wait_all([(t, 1)], timeout)


def test_negative_timeout_polls():
    with pytest.raises(hal.DeadlineExceededError):
        Semaphore().wait(1, -1)


@pytest.mark.parametrize(
    "items", [None, 5, Semaphore(), [Semaphore()], [(Semaphore(),)], [("x", 1)], [(1, 1)]]
)
def test_wait_lists_of_the_wrong_shape_are_invalid_argument(items):
    with pytest.raises(hal.InvalidArgumentError):
        hal.wait_all(items, 0)
    with pytest.raises(hal.InvalidArgumentError):
        hal.wait_any(items, 0)


@pytest.mark.parametrize("value", [1.5, "0", None, True, -1, MAX_VALUE + 1, 1 << 64])
def test_initial_value_is_checked(value):
    with pytest.raises(hal.InvalidArgumentError, match="initial"):
        Semaphore(value)


@pytest.mark.parametrize("uri", ["local-task://", "local-sync://"])
def test_create_semaphore_front_door(uri):
    with hal.create_device(uri) as device:
        for bad in (1.5, "1", True, -1, MAX_VALUE + 1, 1 << 64, None):
            with pytest.raises(hal.InvalidArgumentError):
                device.create_semaphore(bad)
        with pytest.raises(hal.InvalidArgumentError, match="flags"):
            device.create_semaphore(0, flags="fast")
        assert device.create_semaphore(np.int64(7)).query() == 7


def test_add_timepoint_checks_its_arguments():
    s = Semaphore()
    with pytest.raises(hal.InvalidArgumentError, match="callable"):
        s.add_timepoint(1, "not callable", None)
    with pytest.raises(hal.InvalidArgumentError):
        s.add_timepoint(1.5, lambda arg, status: None, None)
    assert s.pending_timepoints() == 0


# --------------------------------------------------------------------------- timepoint heap


def test_one_signal_releases_in_registration_order_and_keeps_the_rest():
    s = Semaphore()
    order = []
    values = [5, 3, 9, 1, 3, 7, 2, 9, 4]
    for i, v in enumerate(values):
        s.add_timepoint(v, lambda arg, status: order.append(arg), (i, v))
    s.signal(4)
    assert order == [(i, v) for i, v in enumerate(values) if v <= 4]
    assert s.pending_timepoints() == 4
    order.clear()
    s.signal(9)
    assert order == [(i, v) for i, v in enumerate(values) if v > 4]
    assert s.pending_timepoints() == 0


def test_distinct_values_release_one_per_signal():
    n = 2000
    s = Semaphore()
    seen = []
    for v in range(n, 0, -1):  # registered in reverse: the heap orders them
        s.add_timepoint(v, lambda arg, status: seen.append(arg), v)
    for v in range(1, n + 1):
        s.signal(v)
        assert seen[-1] == v
    assert seen == list(range(1, n + 1)) and s.pending_timepoints() == 0


def test_cancelled_timepoints_never_fire_and_do_not_pile_up():
    s = Semaphore()
    fired = []
    handles = [s.add_timepoint(v, lambda arg, status: fired.append(arg), v) for v in range(1, 1001)]
    for h in handles[::2]:
        assert s.cancel_timepoint(h)
        assert not s.cancel_timepoint(h)  # twice: already gone
    assert s.pending_timepoints() == 500
    assert len(s._timepoints) <= 2 * 500 + 32  # dead entries are compacted away
    s.signal(1000)
    assert fired == list(range(2, 1001, 2))
    assert not any(s.cancel_timepoint(h) for h in handles)  # fired ones cannot be cancelled


def test_cancelling_the_front_timepoint_moves_the_next_release():
    s = Semaphore()
    fired = []
    first = s.add_timepoint(1, lambda arg, status: fired.append(arg), "first")
    s.add_timepoint(2, lambda arg, status: fired.append(arg), "second")
    assert s.cancel_timepoint(first)
    s.signal(1)
    assert fired == []
    s.signal(2)
    assert fired == ["second"]


def test_failure_reaches_every_parked_timepoint_in_registration_order():
    s = Semaphore()
    got = []
    handles = []
    for v in (7, 2, 9, 2, 5):
        handles.append(s.add_timepoint(v, lambda arg, status: got.append((arg, status)), v))
    s.cancel_timepoint(handles[2])
    error = hal.DataLossError("gone")
    s.fail(error)
    assert [arg for arg, _ in got] == [7, 2, 2, 5]
    assert all(status is error for _, status in got)
    assert s.pending_timepoints() == 0
    assert not s.cancel_timepoint(handles[0])


def test_timed_out_waits_leave_nothing_parked():
    s = Semaphore()
    for _ in range(200):
        with pytest.raises(hal.DeadlineExceededError):
            s.wait(1, 0.0001)
    assert s.pending_timepoints() == 0
    assert len(s._timepoints) <= 33


@pytest.mark.parametrize("timeout", [float("inf"), 1e300, 10**400])
def test_notification_waits_take_huge_timeouts(timeout):
    n = hal_backend.Notification()
    threading.Timer(0.05, n.signal).start()
    n.wait(timeout)  # OverflowError from the condition variable before


@pytest.mark.parametrize("timeout", ["1", True, float("nan"), object()])
def test_notification_timeout_wrong_type_is_invalid_argument(timeout):
    with pytest.raises(hal.InvalidArgumentError, match="timeout"):
        hal_backend.Notification().wait(timeout)
