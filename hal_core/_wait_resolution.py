"""Turning an op's wait list into one callback: ready, or failed with the first failure.

Used by every backend that defers work in software until semaphores are reached. The
callback may run synchronously (all waits already reached) or later on whichever thread
signals the last semaphore, through that thread's trampoline (zero-hop chaining).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from ._status import HalError

__all__ = ["resolve_waits"]

ReadyFn = Callable[[Any], None]
FailFn = Callable[[Any, HalError], None]


def _one(arg: Any, status: HalError | None) -> None:
    op, ready, fail = arg
    if status is None:
        ready(op)
    else:
        fail(op, status)


class _Join:
    """Counts resolved waits; the last success or the first failure decides, once."""

    __slots__ = ("op", "ready", "fail", "needed", "resolved", "decided")

    def __init__(self, op: Any, ready: ReadyFn, fail: FailFn, needed: int) -> None:
        self.op = op
        self.ready = ready
        self.fail = fail
        self.needed = needed
        # itertools.count.__next__ is one atomic step under the GIL: no lock needed.
        self.resolved = itertools.count(1)
        self.decided = itertools.count()

    @staticmethod
    def on_timepoint(join: "_Join", status: HalError | None) -> None:
        if status is not None:
            if next(join.decided) == 0:
                join.fail(join.op, status)
        elif next(join.resolved) == join.needed and next(join.decided) == 0:
            join.ready(join.op)


def resolve_waits(op: Any, waits: tuple, ready: ReadyFn, fail: FailFn) -> bool:
    """Arrange ``ready(op)`` once every ``(semaphore, value)`` in ``waits`` is reached, or
    ``fail(op, error)`` once any fails. Returns True when the op had to wait (callbacks
    registered), False when it was decided immediately (and the callback already ran)."""
    pending = []
    for sem, value in waits:
        failure = sem._failure
        if failure is not None:
            fail(op, failure)
            return False
        if sem._value < value:
            pending.append((sem, value))
    if not pending:
        ready(op)
        return False
    if len(pending) == 1:
        sem, value = pending[0]
        sem.add_timepoint(value, _one, (op, ready, fail))
        return True
    join = _Join(op, ready, fail, len(pending))
    for sem, value in pending:
        sem.add_timepoint(value, _Join.on_timepoint, join)
    return True
