"""Timeline semaphores: the one synchronisation object every backend shares.

Invariants (read before changing anything here):

* ``_value`` only grows; ``signal(v)`` with ``v <= _value`` is INVALID_ARGUMENT.
* ``_failure`` is set at most once (first failure wins) and is never cleared.
* Timepoints are ``[min_value, fn, arg]`` entries in ``_timepoints``; ``_min_pending`` is the
  smallest ``min_value`` among them (or ``_NEVER``) so a signal that reaches no waiter costs
  one comparison.
* Callbacks ``fn(arg, error_or_None)`` run **outside** ``_lock``. They run through a
  per-thread trampoline: a callback that signals another semaphore does not recurse; its
  callbacks are appended to the running thread's queue and drained by the outermost
  dispatcher. A chain of any length completes on one thread with constant stack depth
  (zero-hop chaining).
* No thread ever waits while holding ``_lock``: host waits park on a private lock that a
  timepoint callback releases.
"""

from __future__ import annotations

import collections
import itertools
import operator
import sys
import threading
from typing import Any, Callable, Iterable, Sequence

from ._status import (
    DeadlineExceededError,
    HalError,
    InvalidArgumentError,
    StatusCode,
    error_for,
)

__all__ = [
    "Semaphore",
    "SemaphoreList",
    "WaitMode",
    "wait_all",
    "wait_any",
    "MAX_VALUE",
    "FAILURE_VALUE",
]

MAX_VALUE = (1 << 31) - 2
"""Largest payload a semaphore may carry (IREE's Vulkan-compatible bound)."""
FAILURE_VALUE = MAX_VALUE + 1
"""The value a failed semaphore reports; any value >= this means failed."""

_NEVER = 1 << 80

TimepointFn = Callable[[Any, "HalError | None"], None]

SemaphoreList = Sequence[tuple["Semaphore", int]]
"""A list of ``(semaphore, value)`` pairs: what a queue operation waits on or signals."""


class WaitMode:
    ALL = 0
    ANY = 1


# --------------------------------------------------------------------------- trampoline

_tls = threading.local()


def _report_callback_error(exc: BaseException) -> None:
    hook = sys.unraisablehook
    hook(
        type(
            "UnraisableHookArgs",
            (),
            {
                "exc_type": type(exc),
                "exc_value": exc,
                "exc_traceback": exc.__traceback__,
                "err_msg": "Exception in HAL semaphore timepoint callback",
                "object": None,
            },
        )()
    )


def dispatch_callbacks(calls: Iterable[tuple[TimepointFn, Any, "HalError | None"]]) -> None:
    """Run timepoint callbacks iteratively on this thread.

    Re-entrant calls (a callback signalling another semaphore) append to the running
    queue instead of recursing, so dependency chains never grow the stack.
    """
    pending = getattr(_tls, "pending", None)
    if pending is not None:
        pending.extend(calls)
        return
    pending = _tls.pending = collections.deque(calls)
    pop = pending.popleft
    try:
        while pending:
            fn, arg, status = pop()
            try:
                fn(arg, status)
            except BaseException as exc:  # a callback bug must not stall other chains
                _report_callback_error(exc)
    finally:
        _tls.pending = None


def run_on_trampoline(fn: Callable[[Any, Any], None], arg: Any) -> None:
    """Run ``fn(arg, None)`` through this thread's trampoline (deferred when one is active)."""
    dispatch_callbacks(((fn, arg, None),))


# --------------------------------------------------------------------------- semaphore


class Semaphore:
    """A timeline semaphore: a 64-bit payload that only increases, or a sticky failure.

    Created by ``Device.create_semaphore``. Thread-safe. ``wait`` blocks the calling
    thread (never while holding internal locks); everything else is non-blocking.
    """

    __slots__ = (
        "_lock",
        "_value",
        "_failure",
        "_timepoints",
        "_min_pending",
        "_frontier",
        "device",
        "queue_affinity",
        "flags",
        "__weakref__",
    )

    def __init__(
        self,
        initial_value: int = 0,
        *,
        device: Any = None,
        queue_affinity: int = (1 << 64) - 1,
        flags: int = 0,
    ) -> None:
        if not isinstance(initial_value, int) or not 0 <= initial_value <= MAX_VALUE:
            raise InvalidArgumentError(
                f"initial semaphore value must be an int in 0..{MAX_VALUE}, got {initial_value!r}"
            )
        self._lock = threading.Lock()
        self._value = initial_value
        self._failure: HalError | None = None
        self._timepoints: list[list[Any]] = []
        self._min_pending = _NEVER
        self._frontier: Any = None
        self.device = device
        self.queue_affinity = queue_affinity
        self.flags = flags

    # -- queries ---------------------------------------------------------------------

    @property
    def value(self) -> int:
        """Current payload, or ``FAILURE_VALUE`` once failed."""
        return FAILURE_VALUE if self._failure is not None else self._value

    @property
    def failure(self) -> HalError | None:
        """The sticky failure, or None."""
        return self._failure

    def query(self) -> int:
        """Current payload; raises the failure's own error if the semaphore failed."""
        failure = self._failure
        if failure is not None:
            raise failure.clone()
        return self._value

    # -- signal / fail ---------------------------------------------------------------

    def signal(self, value: int) -> None:
        """Advance the payload to ``value`` (strictly greater than the current one).

        INVALID_ARGUMENT when ``value`` does not increase or exceeds MAX_VALUE; the
        semaphore's own failure error when it has failed. Waiters whose value is reached
        are released; their callbacks run on this thread, outside the lock.
        """
        ready = None
        lock = self._lock
        lock.acquire()  # explicit acquire/release: half the cost of ``with`` on this path
        try:
            if self._failure is not None:
                raise self._failure.clone()
            if value.__class__ is not int or not (self._value < value <= MAX_VALUE):
                raise InvalidArgumentError(
                    f"semaphore signal must strictly increase the value: current "
                    f"{self._value}, requested {value!r} (max {MAX_VALUE})"
                )
            self._value = value
            if value >= self._min_pending:
                ready = self._take_ready(value)
        finally:
            lock.release()
        if ready:
            dispatch_callbacks(ready)

    def _signal_from_queue(self, value: int) -> None:
        """Signal from completed queue work: a failed semaphore stays failed, and a
        non-increasing value (two producers racing) fails the semaphore instead of
        raising on a worker thread."""
        ready = None
        lock = self._lock
        lock.acquire()
        try:
            if self._failure is not None:
                return
            if value <= self._value:
                failure = error_for(
                    StatusCode.INVALID_ARGUMENT,
                    f"queue signalled value {value} but the semaphore is already at "
                    f"{self._value}; each value must be signalled once, increasing",
                )
                ready = self._fail_locked(failure)
            else:
                self._value = value
                if value >= self._min_pending:
                    ready = self._take_ready(value)
        finally:
            lock.release()
        if ready:
            dispatch_callbacks(ready)

    # -- causal frontier (backend tier) -----------------------------------------------
    #
    # ``_frontier`` stays None until the first frontier arrives, so frontier-less
    # semaphores pay nothing. Once set it is a ``_CausalState``: the accumulated frontier
    # (component-wise max of every frontier signalled or merged) and ``taint_from``, the
    # first value from which the frontier is only a lower bound (a merge overflowed).

    def _signal_with_frontier(self, value: int, frontier: Any) -> None:
        """``_signal_from_queue`` that also merges ``frontier`` (the producer's causal
        past) into this semaphore's frontier. An overflowing merge taints ``value`` and
        every later value."""
        ready = None
        lock = self._lock
        lock.acquire()
        try:
            if self._failure is not None:
                return
            if value <= self._value:
                ready = self._fail_locked(
                    error_for(
                        StatusCode.INVALID_ARGUMENT,
                        f"queue signalled value {value} but the semaphore is already at "
                        f"{self._value}; each value must be signalled once, increasing",
                    )
                )
            else:
                self._merge_frontier_locked(frontier, value)
                self._value = value
                if value >= self._min_pending:
                    ready = self._take_ready(value)
        finally:
            lock.release()
        if ready:
            dispatch_callbacks(ready)

    def _merge_frontier_locked(self, frontier: Any, taint_value: int) -> bool:
        state = self._frontier
        if state is None:
            from ._frontier import DEFAULT_FRONTIER_CAPACITY, Frontier

            if len(frontier) <= DEFAULT_FRONTIER_CAPACITY:
                self._frontier = _CausalState(frontier.copy(DEFAULT_FRONTIER_CAPACITY), None)
                return True
            self._frontier = _CausalState(Frontier((), DEFAULT_FRONTIER_CAPACITY), taint_value)
            return False
        if state.frontier.merge(frontier):
            return True
        if state.taint_from is None or state.taint_from > taint_value:
            state.taint_from = taint_value
        return False

    def merge_frontier(self, frontier: Any) -> bool:
        """Merge ``frontier`` into this semaphore's causal frontier (record what a pending
        signal will depend on). Returns False on capacity overflow: the frontier stays a
        valid lower bound and every value above the current one is marked tainted."""
        with self._lock:
            return self._merge_frontier_locked(frontier, self._value + 1)

    def query_frontier(self) -> Any:
        """A copy of the accumulated causal frontier (empty when none was signalled)."""
        from ._frontier import Frontier

        with self._lock:
            state = self._frontier
            return Frontier() if state is None else state.frontier.copy()

    def is_value_tainted(self, value: int) -> bool:
        """True when the frontier does not fully describe the causal past of ``value``
        (a frontier merge overflowed at or below it)."""
        state = self._frontier
        return state is not None and state.taint_from is not None and value >= state.taint_from

    def _take_ready(self, value: int) -> list[tuple[TimepointFn, Any, None]]:
        ready = []
        keep = []
        new_min = _NEVER
        for tp in self._timepoints:
            v = tp[0]
            if v <= value:
                ready.append((tp[1], tp[2], None))
            else:
                keep.append(tp)
                if v < new_min:
                    new_min = v
        self._timepoints = keep
        self._min_pending = new_min
        return ready

    def fail(self, error: HalError | StatusCode | int, message: str = "") -> None:
        """Fail the semaphore; the first failure wins and later ones are dropped. All
        current and future waiters observe the failure's code."""
        if not isinstance(error, HalError):
            try:
                code = StatusCode(error)
            except (ValueError, TypeError):
                code = StatusCode.OK
            if code == StatusCode.OK:
                raise InvalidArgumentError(
                    f"fail() needs an error status (a HalError or a non-OK StatusCode), "
                    f"got {error!r}; the semaphore was not changed"
                )
            error = error_for(code, message or "semaphore failed")
        with self._lock:
            if self._failure is not None:
                return
            ready = self._fail_locked(error)
        if ready:
            dispatch_callbacks(ready)

    def _fail_locked(self, error: HalError) -> list[tuple[TimepointFn, Any, HalError]]:
        self._failure = error
        ready = [(tp[1], tp[2], error) for tp in self._timepoints]
        self._timepoints = []
        self._min_pending = _NEVER
        return ready

    # -- timepoints (backend tier) ---------------------------------------------------

    def add_timepoint(self, value: int, fn: TimepointFn, arg: Any) -> list[Any] | None:
        """Call ``fn(arg, error_or_None)`` once the payload reaches ``value`` or the
        semaphore fails. Fires immediately (through the trampoline) if already so and
        returns None; otherwise returns a handle for ``cancel_timepoint``."""
        lock = self._lock
        lock.acquire()
        failure = self._failure
        if failure is None and self._value < value:
            tp = [value, fn, arg]
            self._timepoints.append(tp)
            if value < self._min_pending:
                self._min_pending = value
            lock.release()
            return tp
        lock.release()
        dispatch_callbacks(((fn, arg, failure),))
        return None

    def cancel_timepoint(self, handle: list[Any]) -> bool:
        """Remove a pending timepoint; True iff its callback will not run."""
        with self._lock:
            try:
                self._timepoints.remove(handle)
            except ValueError:
                return False
            if handle[0] == self._min_pending:
                self._min_pending = min((tp[0] for tp in self._timepoints), default=_NEVER)
            return True

    # -- host waits ------------------------------------------------------------------

    def wait(self, value: int, timeout: float | None = None) -> None:
        """Block until the payload reaches ``value``.

        ``timeout`` in seconds (None waits forever, 0 only polls). Raises
        DEADLINE_EXCEEDED on timeout, or the failure's own error if the semaphore fails.
        """
        if value.__class__ is not int:
            value = as_payload(value, "wait")
        failure = self._failure
        if failure is not None:
            raise failure.clone()
        if self._value >= value:
            return
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError(
                f"semaphore at {self._value} did not reach {value} (immediate timeout)"
            )
        waiter = _Waiter(1, WaitMode.ALL)
        handle = self.add_timepoint(value, _Waiter.wake, waiter)
        waiter.block(timeout, ((self, handle),), lambda: f"semaphore at {self._value} "
                     f"did not reach {value}")

    def wait_async(self, value: int, timeout: float | None = None) -> Any:
        """``wait`` for asyncio (``await sem.wait_async(v)``): a coroutine that parks on
        a timepoint, blocking neither the event loop nor a thread."""
        from ._async_wait import wait_async  # loads asyncio only for users of it

        return wait_async(self, value, timeout)

    def __repr__(self) -> str:
        state = f"failed {self._failure.code.name}" if self._failure else f"value={self._value}"
        return f"<hal_core.Semaphore {state}>"


class _CausalState:
    """A semaphore's accumulated frontier and taint watermark (see ``Semaphore``)."""

    __slots__ = ("frontier", "taint_from")

    def __init__(self, frontier: Any, taint_from: int | None) -> None:
        self.frontier = frontier
        self.taint_from = taint_from


class _Waiter:
    """A host thread parked on one or more semaphores; ``lock`` is released to wake it."""

    __slots__ = ("lock", "count", "needed", "failure", "index", "done")

    def __init__(self, needed: int, mode: int) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.count = itertools.count()
        self.needed = needed if mode == WaitMode.ALL else 1
        self.failure: HalError | None = None
        self.index = -1
        self.done = False

    @staticmethod
    def wake(arg: Any, status: HalError | None) -> None:
        waiter, index = (arg, -1) if isinstance(arg, _Waiter) else arg
        if status is not None:
            if waiter.failure is None:
                waiter.failure = status
            waiter._release()
            return
        if next(waiter.count) + 1 == waiter.needed:
            if waiter.index < 0:
                waiter.index = index
            waiter._release()

    def _release(self) -> None:
        if not self.done:
            self.done = True
            try:
                self.lock.release()
            except RuntimeError:  # already released by a racing wake
                pass

    def block(
        self,
        timeout: float | None,
        handles: Sequence[tuple[Semaphore, list[Any] | None]],
        describe: Callable[[], str],
    ) -> None:
        acquired = self.lock.acquire(True, -1 if timeout is None else timeout)
        if not acquired:
            for sem, handle in handles:
                if handle is not None:
                    sem.cancel_timepoint(handle)
            if not self.done:
                raise DeadlineExceededError(f"{describe()} within {timeout} s")
        if self.failure is not None:
            # A failure woke us early: take back the timepoints still parked elsewhere.
            for sem, handle in handles:
                if handle is not None:
                    sem.cancel_timepoint(handle)
            raise self.failure.clone()


def as_payload(value: Any, what: str) -> int:
    """Slow path for a payload that is not a plain int: integer-likes (numpy ints)
    convert, anything else is INVALID_ARGUMENT."""
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidArgumentError(
            f"semaphore {what} value must be an integer, got {value!r} ({type(value).__name__})"
        ) from None


def _normalise(semaphores: SemaphoreList) -> list[tuple[Semaphore, int]]:
    out = []
    for item in semaphores:
        try:
            sem, value = item
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"semaphore lists hold (Semaphore, value) pairs, got {item!r}"
            ) from None
        if not isinstance(sem, Semaphore):
            raise InvalidArgumentError(f"expected a Semaphore, got {type(sem).__name__}")
        if value.__class__ is not int:
            value = as_payload(value, "wait")
        out.append((sem, value))
    return out


def wait_all(semaphores: SemaphoreList, timeout: float | None = None) -> None:
    """Block until every ``(semaphore, value)`` is reached. An empty list returns at once.
    Raises DEADLINE_EXCEEDED or the first observed failure's own error."""
    items = _normalise(semaphores)
    pending = []
    for sem, value in items:
        if sem._failure is not None:
            raise sem._failure.clone()
        if sem._value < value:
            pending.append((sem, value))
    if not pending:
        return
    if timeout is not None and timeout <= 0:
        raise DeadlineExceededError("wait_all: not every semaphore reached its value")
    waiter = _Waiter(len(pending), WaitMode.ALL)
    handles = [(sem, sem.add_timepoint(value, _Waiter.wake, waiter)) for sem, value in pending]
    waiter.block(timeout, handles, lambda: "wait_all: not every semaphore reached its value")


def wait_any(semaphores: SemaphoreList, timeout: float | None = None) -> int:
    """Block until any ``(semaphore, value)`` is reached; returns its index in the list.
    An empty list returns -1 at once. A failure of any semaphore raises its own error."""
    items = _normalise(semaphores)
    if not items:
        return -1
    for sem, _value in items:
        if sem._failure is not None:
            raise sem._failure.clone()
    for i, (sem, value) in enumerate(items):
        if sem._value >= value:
            return i
    if timeout is not None and timeout <= 0:
        raise DeadlineExceededError("wait_any: no semaphore reached its value")
    waiter = _Waiter(len(items), WaitMode.ANY)
    handles = [
        (sem, sem.add_timepoint(value, _Waiter.wake, (waiter, i)))
        for i, (sem, value) in enumerate(items)
    ]
    waiter.block(timeout, handles, lambda: "wait_any: no semaphore reached its value")
    for sem, handle in handles:
        if handle is not None:
            sem.cancel_timepoint(handle)
    return waiter.index

