"""Awaiting semaphore timepoints from asyncio without a thread per wait.

A wait registers one semaphore timepoint whose callback hands the outcome to the event
loop with ``loop.call_soon_threadsafe``; the coroutine parks on an ``asyncio.Future``.
No thread blocks, so any number of waits cost one timepoint each.

Invariants:

* The timepoint callback runs on whatever thread completes the semaphore (a queue
  worker, a completion thread, or the awaiting thread itself when the value was already
  reached). It only schedules; it never touches the future directly, because futures are
  not thread-safe.
* A loop that is closed before the semaphore completes has nobody left to tell; the
  callback drops the outcome instead of raising on a HAL thread.
* A cancelled or timed-out wait takes its timepoint back, so abandoned waits do not pile
  up on a semaphore that never advances.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._semaphore import as_payload
from ._status import DeadlineExceededError, HalError
from ._timeouts import as_timeout

if TYPE_CHECKING:
    import asyncio

__all__ = ["wait_async"]


def _settle(future: asyncio.Future[None], error: HalError | None) -> None:
    """Runs on the loop's thread: complete ``future`` unless its waiter gave up."""
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error.clone())


def _on_timepoint(arg: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]], error: Any) -> None:
    """The semaphore's timepoint callback (any thread, no locks held)."""
    loop, future = arg
    try:
        loop.call_soon_threadsafe(_settle, future, error)
    except RuntimeError:
        # The loop was closed while the semaphore was pending: the awaiting coroutine is
        # gone with it, and a HAL completion thread must not die for that.
        pass


async def wait_async(semaphore: Any, value: int, timeout: float | None = None) -> None:
    """Wait until ``semaphore`` reaches ``value`` without blocking the event loop.

    Must be awaited inside a running loop. Raises the semaphore's own failure (a
    ``HalError``), or DEADLINE_EXCEEDED after ``timeout`` seconds (None: no limit).
    Cancelling the awaiting task removes the timepoint.
    """
    if value.__class__ is not int:
        value = as_payload(value, "wait")
    timeout = as_timeout(timeout)
    failure = semaphore._failure
    if failure is not None:
        raise failure.clone()
    if semaphore._value >= value:
        return
    if timeout is not None and timeout <= 0:
        raise DeadlineExceededError(
            f"semaphore at {semaphore._value} did not reach {value} (immediate timeout)"
        )
    import asyncio  # not at module level: importing hal_core must not load asyncio

    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    handle = semaphore.add_timepoint(value, _on_timepoint, (loop, future))
    try:
        if timeout is None:
            await future
        else:
            try:
                await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                raise DeadlineExceededError(
                    f"semaphore at {semaphore._value} did not reach {value} within {timeout} s"
                ) from None
    finally:
        if handle is not None and (future.cancelled() or not future.done()):
            semaphore.cancel_timepoint(handle)
