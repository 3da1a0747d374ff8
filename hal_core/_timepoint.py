"""``Timepoint``: a ``(semaphore, value)`` pair that can also be waited on and awaited.

Streams hand these out (``Stream.record``); anything taking a wait or signal list takes
them as plain pairs.
"""

from __future__ import annotations

from typing import Any, Generator

from ._async_wait import wait_async
from ._semaphore import Semaphore

__all__ = ["Timepoint"]


class Timepoint(tuple):
    """A point on a semaphore's timeline: ``(semaphore, value)``.

    A plain pair in every respect (unpack it, put it in any queue op's wait or signal
    list), plus ``wait(timeout)``, ``reached`` and ``await timepoint``, which waits from
    asyncio without a thread (the semaphore's own failure raises).
    """

    __slots__ = ()

    def __new__(cls, semaphore: Semaphore, value: int) -> "Timepoint":
        return tuple.__new__(cls, (semaphore, value))

    @property
    def semaphore(self) -> Semaphore:
        return self[0]

    @property
    def value(self) -> int:
        return self[1]

    @property
    def reached(self) -> bool:
        """True once the semaphore reached the value (False when it failed)."""
        sem = self[0]
        return sem._failure is None and sem._value >= self[1]

    def wait(self, timeout: float | None = None) -> None:
        """Block until reached; DEADLINE_EXCEEDED or the semaphore's failure raises."""
        self[0].wait(self[1], timeout)

    def wait_async(self, timeout: float | None = None) -> Any:
        """A coroutine waiting without blocking the event loop (see ``await``)."""
        return wait_async(self[0], self[1], timeout)

    def __await__(self) -> Generator[Any, None, None]:
        return wait_async(self[0], self[1]).__await__()

    def __getnewargs__(self) -> tuple[Semaphore, int]:  # copy.copy and friends
        return (self[0], self[1])

    def __repr__(self) -> str:
        return f"Timepoint({self[0]!r}, {self[1]})"
