"""CTS: timeline semaphores on the host (IREE's SemaphoreTest and SemaphoreThreadTest).

Covers values and signalling, sticky failures, empty wait lists, waits on past/current/
future values with immediate timeouts, wait_all/wait_any, and threaded scenarios (waits
beyond the signalled value, ping-pong, repeated and simultaneous waits, failures while
waiting). Helper threads are joined with timeouts; nothing sleeps.
"""

from __future__ import annotations

import threading

import pytest

import hal_core
from hal_core import (
    FAILURE_VALUE,
    MAX_VALUE,
    StatusCode,
    WaitMode,
    wait_all,
    wait_any,
)

from .context import TIMEOUT

# --------------------------------------------------------------------------- values


def test_create_initial_value(cts):
    sem = cts.semaphore(123)
    assert sem.query() == 123
    assert sem.value == 123
    assert sem.failure is None


def test_create_rejects_bad_initial_value(cts):
    for bad in (-1, MAX_VALUE + 1):
        with pytest.raises(hal_core.InvalidArgumentError, match="initial semaphore value"):
            cts.semaphore(bad)
    assert cts.semaphore(MAX_VALUE).query() == MAX_VALUE


def test_signal_sequence(cts):
    sem = cts.semaphore(0)
    sem.signal(3)
    assert sem.query() == 3
    sem.signal(40)
    assert sem.query() == 40


def test_signal_backwards_is_invalid_and_keeps_state(cts):
    sem = cts.semaphore(10)
    for bad in (10, 9, 0):
        with pytest.raises(hal_core.InvalidArgumentError) as info:
            sem.signal(bad)
        assert info.value.code == StatusCode.INVALID_ARGUMENT
        assert "10" in info.value.message and str(bad) in info.value.message
    assert sem.query() == 10
    sem.signal(11)  # the semaphore is still usable
    assert sem.query() == 11


def test_signal_beyond_max_value_is_invalid(cts):
    sem = cts.semaphore(0)
    with pytest.raises(hal_core.InvalidArgumentError):
        sem.signal(MAX_VALUE + 1)
    sem.signal(MAX_VALUE)
    assert sem.query() == MAX_VALUE


@pytest.mark.parametrize("bad", ["2", 2.0, None, b"\x02"])
def test_non_integer_values_are_invalid(cts, bad):
    sem = cts.semaphore(1)
    with pytest.raises(hal_core.InvalidArgumentError):
        sem.signal(bad)
    with pytest.raises(hal_core.InvalidArgumentError):
        sem.wait(bad, 0)
    with pytest.raises(hal_core.InvalidArgumentError):
        wait_all([(sem, bad)], 0)
    with pytest.raises(hal_core.InvalidArgumentError):
        wait_any([(sem, bad)], 0)
    assert sem.query() == 1
    sem.signal(2)
    sem.wait(2, 0)


# --------------------------------------------------------------------------- failure


def test_fail_unknown(cts):
    sem = cts.semaphore(0)
    sem.fail(StatusCode.UNKNOWN)
    with pytest.raises(hal_core.UnknownError):
        sem.query()
    assert sem.value >= FAILURE_VALUE


def test_fail_with_message(cts):
    sem = cts.semaphore(5)
    sem.fail(hal_core.DataLossError("disk gone"))
    with pytest.raises(hal_core.DataLossError, match="disk gone") as info:
        sem.query()
    assert info.value.code == StatusCode.DATA_LOSS
    assert sem.value >= FAILURE_VALUE
    assert sem.failure.code == StatusCode.DATA_LOSS


def test_double_failure_preserves_first(cts):
    sem = cts.semaphore(0)
    sem.fail(StatusCode.CANCELLED, "first")
    sem.fail(StatusCode.DATA_LOSS, "second")
    with pytest.raises(hal_core.CancelledError, match="first"):
        sem.query()


@pytest.mark.parametrize("code", [StatusCode.OK, 0, 999, "DATA_LOSS"])
def test_fail_with_a_non_error_code_is_invalid(cts, code):
    sem = cts.semaphore(4)
    with pytest.raises(hal_core.InvalidArgumentError):
        sem.fail(code)
    assert sem.failure is None and sem.query() == 4  # not failed by the bad call
    sem.fail(StatusCode.ABORTED)
    with pytest.raises(hal_core.AbortedError):
        sem.query()


def test_signal_after_fail_raises_the_failure(cts):
    sem = cts.semaphore(0)
    sem.fail(StatusCode.ABORTED, "stop")
    with pytest.raises(hal_core.AbortedError):
        sem.signal(1)
    assert sem.value >= FAILURE_VALUE


def test_fail_then_wait_returns_failure_code(cts):
    sem = cts.semaphore(0)
    sem.fail(StatusCode.CANCELLED)
    with pytest.raises(hal_core.CancelledError):
        sem.wait(1, TIMEOUT)
    with pytest.raises(hal_core.CancelledError):
        sem.wait(0, 0)  # even an already reached value reports the failure
    assert sem.value >= FAILURE_VALUE


# --------------------------------------------------------------------------- waits


@pytest.mark.parametrize("timeout", [0, 0.0, None, TIMEOUT])
def test_empty_wait_lists_return_at_once(cts, timeout):
    wait_all([], timeout)
    assert wait_any([], timeout) == -1
    assert cts.device.wait_semaphores(WaitMode.ALL, [], timeout) == -1
    assert cts.device.wait_semaphores(WaitMode.ANY, [], timeout) == -1


def test_wait_on_past_and_current_values(cts):
    sem = cts.semaphore(5)
    sem.wait(0, 0)
    sem.wait(4, 0)
    sem.wait(5, 0)
    sem.wait(5, TIMEOUT)


def test_wait_beyond_current_with_immediate_timeout(cts):
    sem = cts.semaphore(5)
    with pytest.raises(hal_core.DeadlineExceededError) as info:
        sem.wait(6, 0)
    assert info.value.code == StatusCode.DEADLINE_EXCEEDED
    assert isinstance(info.value, TimeoutError)
    assert sem.query() == 5  # a timed-out wait leaves the semaphore alone
    sem.signal(6)
    sem.wait(6, 0)


def test_wait_beyond_current_with_short_relative_timeout(cts):
    sem = cts.semaphore(0)
    with pytest.raises(hal_core.DeadlineExceededError):
        sem.wait(1, 0.01)
    sem.signal(1)  # the cancelled timepoint must not disturb later signals
    sem.wait(1, 0)


def test_wait_all_one_unsatisfied_times_out(cts):
    a, b = cts.semaphore(1), cts.semaphore(0)
    with pytest.raises(hal_core.DeadlineExceededError):
        wait_all([(a, 1), (b, 1)], 0)
    with pytest.raises(hal_core.DeadlineExceededError):
        cts.device.wait_semaphores(WaitMode.ALL, [(a, 1), (b, 1)], 0)


def test_wait_all_satisfied(cts):
    a, b = cts.semaphore(1), cts.semaphore(2)
    wait_all([(a, 1), (b, 2)], 0)
    assert cts.device.wait_semaphores(WaitMode.ALL, [(a, 0), (b, 1)], 0) == -1


def test_wait_any_one_satisfied(cts):
    a, b = cts.semaphore(0), cts.semaphore(1)
    assert wait_any([(a, 1), (b, 1)], 0) == 1
    assert cts.device.wait_semaphores(WaitMode.ANY, [(a, 1), (b, 1)], 0) == 1


def test_wait_any_none_satisfied_times_out(cts):
    a, b = cts.semaphore(0), cts.semaphore(0)
    with pytest.raises(hal_core.DeadlineExceededError):
        wait_any([(a, 1), (b, 1)], 0)
    with pytest.raises(hal_core.DeadlineExceededError):
        wait_any([(a, 1), (b, 1)], 0.01)
    b.signal(1)
    assert wait_any([(a, 1), (b, 1)], 0) == 1


def test_wait_lists_with_a_failed_semaphore(cts):
    ok, bad = cts.semaphore(1), cts.semaphore(0)
    bad.fail(StatusCode.PERMISSION_DENIED, "nope")
    with pytest.raises(hal_core.PermissionDeniedError):
        wait_all([(ok, 1), (bad, 1)], TIMEOUT)
    # Any failure in the list is reported even in ANY mode.
    with pytest.raises(hal_core.PermissionDeniedError):
        wait_any([(ok, 1), (bad, 1)], TIMEOUT)
    assert ok.query() == 1


def test_wait_list_rejects_non_semaphores(cts):
    sem = cts.semaphore(0)
    with pytest.raises(hal_core.InvalidArgumentError, match="Semaphore"):
        wait_all([(object(), 1)], 0)  # type: ignore[list-item]  # the wrong type on purpose
    with pytest.raises(hal_core.InvalidArgumentError):
        wait_any([sem], 0)
    sem.signal(1)
    wait_all([(sem, 1)], 0)


# --------------------------------------------------------------------------- threads


def test_thread_wait_for_value_beyond_signal(cts):
    sem = cts.semaphore(0)
    waiter = cts.thread(sem.wait, 1, TIMEOUT)
    sem.signal(2)  # jumps past the waited value
    waiter.join()
    assert sem.query() == 2


def test_thread_signals_while_host_waits(cts):
    sem = cts.semaphore(0)
    signaller = cts.thread(sem.signal, 1)
    sem.wait(1, TIMEOUT)
    signaller.join()


def test_thread_wait_any_with_later_signal(cts):
    a, b = cts.semaphore(0), cts.semaphore(0)
    waiter = cts.thread(wait_any, [(a, 1), (b, 1)], TIMEOUT)
    b.signal(1)
    assert waiter.join() == 1
    assert a.query() == 0


def test_thread_ping_pong(cts):
    rounds = 200
    ping, pong = cts.semaphore(0), cts.semaphore(0)

    def responder():
        for i in range(1, rounds + 1):
            ping.wait(i, TIMEOUT)
            pong.signal(i)

    t = cts.thread(responder)
    for i in range(1, rounds + 1):
        ping.signal(i)
        pong.wait(i, TIMEOUT)
    t.join()
    assert ping.query() == pong.query() == rounds


def test_thread_repeated_waits_on_one_value(cts):
    sem = cts.semaphore(0)
    threads = [cts.thread(sem.wait, 1, TIMEOUT) for _ in range(4)]
    sem.signal(1)
    for t in threads:
        t.join()
    for _ in range(100):  # waiting again on a reached value is always immediate
        sem.wait(1, 0)


@pytest.mark.parametrize("timeout_kind", ["immediate", "relative"])
def test_thread_timeouts_loop_until_success(cts, timeout_kind):
    sem = cts.semaphore(0)
    go = threading.Event()

    def signaller():
        go.wait(TIMEOUT)
        sem.signal(1)

    t = cts.thread(signaller)
    timeout = 0 if timeout_kind == "immediate" else 0.001
    timeouts = 0
    go.set()
    while True:
        try:
            sem.wait(1, timeout)
            break
        except hal_core.DeadlineExceededError:
            timeouts += 1
            if timeouts > 10_000_000:  # a bound, not a delay: the signaller is stuck
                pytest.fail("semaphore never reached 1")
    t.join()


def test_thread_simultaneous_multi_waits(cts):
    a, b = cts.semaphore(0), cts.semaphore(0)
    all_waiters = [cts.thread(wait_all, [(a, 1), (b, 1)], TIMEOUT) for _ in range(3)]
    any_waiters = [cts.thread(wait_any, [(a, 2), (b, 1)], TIMEOUT) for _ in range(3)]
    a.signal(1)
    b.signal(1)
    for t in all_waiters:
        t.join()
    assert [t.join() for t in any_waiters] == [1, 1, 1]


def test_thread_wait_then_fail(cts):
    sem = cts.semaphore(0)
    waiter = cts.thread(sem.wait, 1, TIMEOUT)
    sem.fail(StatusCode.CANCELLED, "shutting down")
    error = waiter.joined_error()
    assert isinstance(error, hal_core.CancelledError)
    assert sem.value >= FAILURE_VALUE


@pytest.mark.parametrize("how", ["wait_all", "device_all", "wait_any", "device_any"])
def test_thread_multi_wait_where_one_fails(cts, how):
    a, b = cts.semaphore(0), cts.semaphore(0)
    pairs = [(a, 1), (b, 1)]
    waiters = {
        "wait_all": lambda: wait_all(pairs, TIMEOUT),
        "device_all": lambda: cts.device.wait_semaphores(WaitMode.ALL, pairs, TIMEOUT),
        "wait_any": lambda: wait_any(pairs, TIMEOUT),
        "device_any": lambda: cts.device.wait_semaphores(WaitMode.ANY, pairs, TIMEOUT),
    }
    waiter = cts.thread(waiters[how])
    b.fail(StatusCode.CANCELLED, "producer gone")
    error = waiter.joined_error()
    assert isinstance(error, hal_core.CancelledError), error
    assert a.query() == 0  # the other semaphore is untouched
    assert b.value >= FAILURE_VALUE
    a.signal(1)
    a.wait(1, 0)


def test_thread_many_signallers_one_waiter(cts):
    sems = [cts.semaphore(0) for _ in range(8)]
    waiter = cts.thread(wait_all, [(s, 3) for s in sems], TIMEOUT)
    signallers = [cts.thread(s.signal, 3) for s in sems]
    for t in signallers:
        t.join()
    waiter.join()
