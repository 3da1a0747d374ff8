"""Host calls: what a return value means, what a raised exception becomes, chains of host
calls that submit the next one, and how errors of callbacks with nobody to raise to are
reported (through ``sys.unraisablehook``, the default hook included)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import hal_core as hal
from hal_core import HostCallFlags, StatusCode
from hal_core._construction import INTERNAL
from hal_core.backend import (
    dispatch_callbacks,
    host_call_error,
    host_call_outcome,
    report_callback_error,
    run_host_call,
)


def Semaphore(initial_value: int = 0) -> hal.Semaphore:
    """A semaphore of no device (the constructor is internal; tests of the semaphore
    itself need no device)."""
    return hal.Semaphore(initial_value, _token=INTERNAL)


ANY = hal.QueueAffinity.ANY
TIMEOUT = 30
BACKENDS = ["local-task://", "local-sync://", "amdgpu://0?hsa=soft"]


class _EqRaises:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("== is broken")

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        raise RuntimeError("repr is broken too")


@pytest.fixture(params=BACKENDS)
def device(request):
    try:
        dev = hal.create_device(request.param)
    except hal.UnavailableError as exc:
        pytest.skip(f"{request.param}: {exc}")
    with dev:
        yield dev


@pytest.fixture
def default_hook(monkeypatch):
    """Python's own unraisable hook (pytest installs one that accepts anything)."""
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)


def _later_work_runs(device: hal.Device) -> None:
    for q in range(device.queue_count):
        s = device.create_semaphore()
        device.queue_barrier(1 << q, [], [(s, 1)])
        s.wait(1, TIMEOUT)


# --------------------------------------------------------------------------- outcomes


@pytest.mark.parametrize("ok", [None, StatusCode.OK])
def test_success_returns(ok):
    assert host_call_outcome(ok) is None


def test_deferred_return():
    assert host_call_outcome(StatusCode.DEFERRED) is StatusCode.DEFERRED


def test_error_status_and_halerror_returns_fail_with_them():
    error = hal.DataLossError("gone")
    assert host_call_outcome(error) is error
    out = host_call_outcome(StatusCode.PERMISSION_DENIED)
    assert isinstance(out, hal.PermissionDeniedError) and "PERMISSION_DENIED" in out.message


@pytest.mark.parametrize(
    "result, named",
    [
        (True, "bool"),
        (False, "bool"),
        (0, "int"),
        (3, "int"),
        ("oops", "str"),
        (np.array([0, 0]), "ndarray"),
        (np.array(0), "ndarray"),
        (np.int64(0), "int64"),
        (_EqRaises(), "_EqRaises"),
        (hal.HalError(StatusCode.OK, "fine"), "code OK"),
    ],
)
def test_anything_else_is_invalid_argument_naming_it(result, named):
    out = host_call_outcome(result)
    assert isinstance(out, hal.InvalidArgumentError)
    assert named in out.message


def test_a_raised_exception_becomes_the_cause():
    exc = ValueError("bad value")
    error = host_call_error(exc)
    assert error.code == StatusCode.UNKNOWN and error.__cause__ is exc
    assert "ValueError: bad value" in error.message
    kept = hal.AbortedError("stop")
    assert host_call_error(kept) is kept
    for base in (KeyboardInterrupt(), SystemExit(3)):
        assert host_call_error(base).__cause__ is base


def test_run_host_call_never_raises():
    ctx = hal.backend.HostCallContext(None, 1, ())

    def raises(args, context):
        raise SystemExit(1)

    assert isinstance(run_host_call(raises, (0, 0, 0, 0), ctx), hal.UnknownError)
    assert run_host_call(lambda a, c: None, (0, 0, 0, 0), ctx) is None


# --------------------------------------------------------------------------- on devices


@pytest.mark.parametrize(
    "result",
    [np.array([1, 2, 3]), np.array(0), _EqRaises(), True, 0, "text"],
    ids=["array", "array0d", "eq_raises", "true", "zero", "str"],
)
def test_any_return_value_ends_as_success_or_failure(device, default_hook, result):
    for q in range(device.queue_count):
        done = device.create_semaphore()
        device.queue_host_call(1 << q, [], [(done, 1)], lambda args, ctx: result)
        with pytest.raises(hal.InvalidArgumentError, match=type(result).__name__):
            done.wait(1, TIMEOUT)
    _later_work_runs(device)


def test_raised_exception_fails_signals_with_its_cause(device, default_hook):
    cause = LookupError("missing key")
    done, other = device.create_semaphore(), device.create_semaphore(5)

    def fn(args, ctx):
        raise cause

    device.queue_host_call(ANY, [], [(done, 1), (other, 6)], fn)
    with pytest.raises(hal.UnknownError, match="LookupError: missing key"):
        hal.wait_all([(done, 1), (other, 6)], TIMEOUT)
    assert other.failure is not None
    if not str(device.uri).startswith("amdgpu"):
        # amdgpu's host actions fail each semaphore with a clone (no cause) for now.
        assert done.failure.__cause__ is cause
    _later_work_runs(device)


@pytest.mark.parametrize("uri", ["local-task://", "local-sync://"])
def test_system_exit_in_a_host_call_fails_its_signals(uri, default_hook):
    with hal.create_device(uri) as device:
        done = device.create_semaphore()

        def fn(args, ctx):
            raise SystemExit(2)

        for _ in range(device.query_i64("hal.dispatch", "concurrency") + 1):
            done = device.create_semaphore()
            device.queue_host_call(ANY, [], [(done, 1)], fn)
            with pytest.raises(hal.UnknownError, match="SystemExit"):
                done.wait(1, TIMEOUT)
        _later_work_runs(device)


@pytest.mark.parametrize("uri", ["local-sync://", "local-task://"])
def test_host_calls_that_submit_the_next_never_nest(uri):
    n = 20_000
    depths: list[int] = []
    with hal.create_device(uri) as device:
        done = device.create_semaphore()

        def step(args, ctx):
            depths.append(_depth())
            i = args[0]
            if i + 1 < n:
                device.queue_host_call(ANY, [], [], step, (i + 1, 0, 0, 0))
            else:
                done.signal(1)

        device.queue_host_call(ANY, [], [], step, (0, 0, 0, 0))
        done.wait(1, 120)
    assert len(depths) == n
    assert max(depths) - min(depths) <= 2  # flat, not one frame set per call


def _depth() -> int:
    f, n = sys._getframe(), 0
    while f is not None:
        f, n = f.f_back, n + 1
    return n


def test_non_blocking_errors_are_reported_and_kill_no_thread(device, monkeypatch, capsys):
    calls = 3 * max(device.queue_count, 4)  # more than local-task's workers
    reported = threading.Semaphore(0)

    def hook(args):
        # Python's own hook (which accepts only a genuine UnraisableHookArgs), then count.
        sys.__unraisablehook__(args)
        reported.release()

    monkeypatch.setattr(sys, "unraisablehook", hook)

    def fn(args, ctx):
        raise RuntimeError(f"non-blocking failure {args[0]}")

    for i in range(calls):
        done = device.create_semaphore()
        device.queue_host_call(
            1 << (i % device.queue_count),
            [],
            [(done, 1)],
            fn,
            (i, 0, 0, 0),
            flags=HostCallFlags.NON_BLOCKING,
        )
        done.wait(1, TIMEOUT)
    for _ in range(calls):
        assert reported.acquire(timeout=TIMEOUT), "a NON_BLOCKING error was not reported"
    _later_work_runs(device)
    err = capsys.readouterr().err
    assert err.count("Exception ignored in: ") == calls
    assert all(f"non-blocking failure {i}\n" in err for i in range(calls))
    assert "TypeError" not in err


# --------------------------------------------------------------------------- reporting


def test_report_with_the_default_hook_prints_and_returns(default_hook, capsys):
    try:
        raise KeyError("lost")
    except KeyError as exc:
        report_callback_error(exc, "a test callback", print)
    err = capsys.readouterr().err
    assert "Exception ignored in: a test callback" in err and "KeyError: 'lost'" in err


def test_report_gives_custom_hooks_the_real_structure(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    exc = ValueError("x")
    report_callback_error(exc, "a test callback", print)
    (args,) = seen
    assert args.exc_type is ValueError and args.exc_value is exc
    assert repr(args.object) == "a test callback" and args.object.callback is print
    assert type(args).__name__ == "UnraisableHookArgs"


def test_a_raising_hook_does_not_escape(monkeypatch, capsys):
    def hook(args):
        raise RuntimeError("the hook itself is broken")

    monkeypatch.setattr(sys, "unraisablehook", hook)
    report_callback_error(ValueError("x"), "a test callback")  # must not raise
    assert "the hook itself is broken" in capsys.readouterr().err


@pytest.mark.parametrize("broken_hook", [False, True])
def test_callbacks_behind_a_raising_one_still_run(monkeypatch, capsys, broken_hook):
    if broken_hook:
        monkeypatch.setattr(sys, "unraisablehook", lambda args: 1 / 0)
    else:
        monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    ran = []

    def bad(arg, status):
        raise RuntimeError("callback bug")

    def good(arg, status):
        ran.append(arg)

    dispatch_callbacks(
        [(good, 1, None), (bad, 2, None), (good, 3, None), (bad, 4, None), (good, 5, None)]
    )
    assert ran == [1, 3, 5]
    s = Semaphore()
    s.add_timepoint(1, bad, None)
    s.add_timepoint(1, good, "after")
    s.signal(1)  # does not raise into the signaller
    assert ran[-1] == "after"
    capsys.readouterr()
