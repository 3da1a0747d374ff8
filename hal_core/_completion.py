"""Completing queue operations: the public API a backend finishes its ops with.

Every op ends in exactly one of two ways: its signals are signalled (success) or failed
with one ``HalError``. A backend calls ``signal_all`` or ``fail_all`` (with any exception:
``op_error`` converts it) from whatever thread finished the op; neither raises, so a
worker thread calling them never dies. ``wait_reached`` is the non-blocking check a
``submit`` makes before parking an op on a wait. ``buffer_root`` is the allocation a
buffer (or subspan) views, whose placement and storage a backend reads.
"""

from __future__ import annotations

from typing import Any, Iterable

from ._buffer import Buffer
from ._callback_errors import report_callback_error
from ._semaphore import Semaphore
from ._status import HalError, StatusCode, error_for

__all__ = ["buffer_root", "complete_op", "fail_all", "op_error", "signal_all", "wait_reached"]

_SIGNALLING = "signalling a semaphore from a queue"
_FAILING = "failing a semaphore from a queue"


def op_error(exc: BaseException) -> HalError:
    """The error an op's signals fail with when executing it raised ``exc``.

    A ``HalError`` with a non-OK code is kept (its traceback dropped: a failed semaphore
    keeps its error as long as it lives, and the frames would keep the op's buffers
    alive). Anything else (a bug, ``MemoryError``, ``KeyboardInterrupt`` too: it must not
    unwind a HAL thread) becomes UNKNOWN naming it, with ``exc`` as ``__cause__``. Never
    raises."""
    if isinstance(exc, HalError) and exc.code is not StatusCode.OK:
        return exc.with_traceback(None)
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not escape the worker
        text = "<unprintable>"
    error = error_for(StatusCode.UNKNOWN, f"{type(exc).__qualname__}: {text}")
    error.__cause__ = exc
    return error


def signal_all(signals: Iterable[tuple[Semaphore, int]], what: str = _SIGNALLING) -> None:
    """Signal each ``(semaphore, value)`` of a completed op. A semaphore that already
    failed stays failed; a value not above the current one (two producers racing) fails
    that semaphore INVALID_ARGUMENT instead of raising here. A waiter's callback that
    raises is reported (``what`` names the context) and the rest are still signalled.
    The caller must hold no lock (waiters' callbacks run on this thread)."""
    for sem, value in signals:
        try:
            sem._signal_from_queue(value)
        except BaseException as exc:
            report_callback_error(exc, what, sem)


def complete_op(op: Any, timeline: Any) -> None:
    """Finish a successful op: signal its signals (``signal_all``), drop what it retained,
    then retire its epoch on ``timeline`` (its queue's ``QueueTimeline``). The Python
    reference of the native ``complete_op`` (``_queue_fast_paths``), which does the same
    in one call when no timepoint is released and no lock is contended. Never raises
    (unless ``timeline.retire`` does). The caller must hold no lock."""
    signal_all(op.signals)
    op.retained = None
    timeline.retire(op.epoch)


def fail_all(
    signals: Iterable[tuple[Semaphore, Any]], error: BaseException, what: str = _FAILING
) -> None:
    """Fail each semaphore of ``signals`` with ``op_error(error)`` (the first failure of
    a semaphore wins). Never raises; a waiter's callback that raises is reported. The
    caller must hold no lock."""
    failure = op_error(error)
    for sem, _value in signals:
        try:
            sem.fail(failure)
        except BaseException as exc:
            report_callback_error(exc, what, sem)


def wait_reached(sem: Semaphore, value: int) -> bool:
    """Whether ``sem`` has reached ``value`` without failing (a failed semaphore is never
    reached: the op fails instead). A snapshot: the caller parks the op with
    ``Semaphore.add_timepoint`` or ``resolve_waits`` when False. Takes no lock."""
    return sem._failure is None and sem._value >= value


def buffer_root(buffer: Buffer) -> Buffer:
    """The allocation ``buffer`` views (itself for a root buffer): the one holding the
    placement flags, the storage and the commit state."""
    return buffer._root
