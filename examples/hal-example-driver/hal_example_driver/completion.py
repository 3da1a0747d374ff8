"""Finishing a queue operation with the public semaphore API only.

Every op ends in exactly one of two ways: its signals are signalled (success) or failed
with one ``HalError`` (an error found while waiting or executing). These helpers never
raise, so a worker thread that calls them never dies.
"""

from __future__ import annotations

from hal_core import HalError, Semaphore, StatusCode, error_for


def signal_all(signals: tuple[tuple[Semaphore, int], ...]) -> None:
    """Signal each ``(semaphore, value)``. A semaphore that already failed stays failed;
    one already at or past ``value`` (another producer got there first: a program bug)
    fails with the INVALID_ARGUMENT ``signal`` raised, so its waiters see it instead of
    this thread. The caller must hold no lock (waiters' callbacks run here)."""
    for sem, value in signals:
        try:
            sem.signal(value)
        except HalError as exc:
            if sem.failure is None:
                sem.fail(exc)


def fail_all(signals: tuple[tuple[Semaphore, int], ...], error: HalError) -> None:
    """Fail each semaphore with ``error`` (the first failure of a semaphore wins).
    The caller must hold no lock."""
    for sem, _value in signals:
        sem.fail(error)


def error_from(exc: BaseException) -> HalError:
    """The error an op's signals fail with when executing it raised ``exc``.

    A ``HalError`` keeps its code (its traceback is dropped: a failed semaphore keeps
    its error for as long as it lives, and the frames would keep the op's buffers
    alive). Anything else (a bug, ``MemoryError``, even ``KeyboardInterrupt``) becomes
    UNKNOWN naming it, with ``exc`` as ``__cause__``. Never raises."""
    if isinstance(exc, HalError) and exc.code is not StatusCode.OK:
        return exc.with_traceback(None)
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not escape the worker
        text = "<unprintable>"
    error = error_for(StatusCode.UNKNOWN, f"{type(exc).__qualname__}: {text}")
    error.__cause__ = exc
    return error
