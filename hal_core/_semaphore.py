"""Timeline semaphores: the one synchronisation object every backend shares.

Invariants (read before changing anything here):

* ``_value`` only grows; ``signal(v)`` with ``v <= _value`` is INVALID_ARGUMENT.
* ``_failure`` is set at most once (first failure wins) and is never cleared.
* Timepoints are ``[min_value, seq, fn, arg]`` entries in ``_timepoints``, a binary heap
  keyed by ``(min_value, seq)``; ``seq`` is the registration order. A signal pops only the
  entries it releases: O(log N + released) however many are parked. A cancelled entry
  stays in the heap with ``fn`` None until it reaches the top (``_cancelled`` counts them;
  the heap is rebuilt without them once they are the majority), and a fired entry gets
  ``fn`` None as it leaves, so ``cancel_timepoint`` knows both. ``_min_pending`` is the top
  entry's value (or ``_NEVER``), so a signal that reaches no waiter costs one comparison.
* Timepoints released together (one signal, or the failure) run in registration order.
* Callbacks ``fn(arg, error_or_None)`` run **outside** ``_lock``. They run through a
  per-thread trampoline: a callback that signals another semaphore does not recurse; its
  callbacks are appended to the running thread's queue and drained by the outermost
  dispatcher. A chain of any length completes on one thread with constant stack depth
  (zero-hop chaining). A callback that raises is reported (``report_callback_error``) and
  the callbacks queued behind it still run.
* No thread ever waits while holding ``_lock``: host waits park on a private lock that a
  timepoint callback releases.
"""

from __future__ import annotations

import collections
import itertools
import operator
import threading
from heapq import heapify, heappop, heappush
from typing import Any, Callable, Iterable, Sequence, final

from ._callback_errors import report_callback_error
from ._construction import require_internal, sealed
from ._status import (
    DeadlineExceededError,
    HalError,
    InvalidArgumentError,
    StatusCode,
    error_for,
)
from ._timeouts import as_timeout

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

# Registration order of timepoints (process-wide; ``next`` is atomic under the GIL).
_next_seq = itertools.count().__next__
_by_seq = operator.itemgetter(1)

TimepointFn = Callable[[Any, "HalError | None"], None]

SemaphoreList = Sequence[tuple["Semaphore", int]]
"""A list of ``(semaphore, value)`` pairs: what a queue operation waits on or signals."""


class WaitMode:
    ALL = 0
    ANY = 1


# --------------------------------------------------------------------------- trampoline


class _Trampoline(threading.local):
    # The running thread's queue of callbacks, or None when no dispatcher runs on it.
    pending: "collections.deque[tuple[TimepointFn, Any, HalError | None]] | None" = None


_tls = _Trampoline()

_CALLBACK = "a HAL semaphore timepoint callback"


def dispatch_callbacks(calls: Iterable[tuple[TimepointFn, Any, "HalError | None"]]) -> None:
    """Run timepoint callbacks iteratively on this thread.

    Re-entrant calls (a callback signalling another semaphore) append to the running
    queue instead of recursing, so dependency chains never grow the stack. A callback that
    raises is reported through ``sys.unraisablehook`` and the rest still run. The caller
    must hold no lock (callbacks are user code).
    """
    tls = _tls
    pending = tls.pending
    if pending is not None:
        pending.extend(calls)
        return
    pending = tls.pending = collections.deque(calls)
    pop = pending.popleft
    try:
        while pending:
            fn, arg, status = pop()
            try:
                fn(arg, status)
            except BaseException as exc:  # a callback bug must not stall other chains
                report_callback_error(exc, _CALLBACK, fn)
    finally:
        tls.pending = None


def run_on_trampoline(fn: Callable[[Any, Any], None], arg: Any) -> None:
    """Run ``fn(arg, None)`` through this thread's trampoline: now when no dispatcher runs
    on this thread, else after the callback that is running returns (so work that submits
    more work never nests on the stack)."""
    dispatch_callbacks(((fn, arg, None),))


# --------------------------------------------------------------------------- semaphore


@final
@sealed
class Semaphore:
    """A timeline semaphore: a payload in ``0..MAX_VALUE`` (2**31 - 2, IREE's
    Vulkan-compatible bound) that only increases, or a sticky failure.

    Created by ``Device.create_semaphore`` (the constructor is internal: it takes
    ``_token=INTERNAL``, see ``_construction``); final, with fixed state. Thread-safe.
    ``wait`` blocks the calling thread (never while holding internal locks); everything
    else is non-blocking.
    Payloads are Python ints or integer-likes (numpy integers, anything with
    ``__index__``; not bool); anything else, or a value out of range, is INVALID_ARGUMENT.
    """

    __slots__ = (
        "_lock",
        "_value",
        "_failure",
        "_timepoints",
        "_min_pending",
        "_cancelled",
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
        _token: object = None,
    ) -> None:
        """Internal: ``Device.create_semaphore`` passes ``_token=INTERNAL``."""
        require_internal(_token, "Semaphore", "Device.create_semaphore(initial_value)")
        if initial_value.__class__ is not int:
            initial_value = as_payload(initial_value, "initial")
        if not 0 <= initial_value <= MAX_VALUE:
            raise InvalidArgumentError(
                f"initial semaphore value must be in 0..{MAX_VALUE}, got {initial_value}"
            )
        if flags.__class__ is not int:
            flags = _as_mask(flags, "semaphore flags")
        if queue_affinity.__class__ is not int:
            queue_affinity = _as_mask(queue_affinity, "semaphore queue affinity")
        self._lock = threading.Lock()
        self._value = initial_value
        self._failure: HalError | None = None
        self._timepoints: list[list[Any]] = []
        self._min_pending = _NEVER
        self._cancelled = 0
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

        INVALID_ARGUMENT when ``value`` is not an integer, does not increase or exceeds
        MAX_VALUE; the semaphore's own failure error when it has failed. Waiters whose
        value is reached are released; their callbacks run on this thread, outside the
        lock (the caller must hold none of its own).
        """
        if value.__class__ is not int:
            value = as_payload(value, "signal")
        ready = None
        lock = self._lock
        lock.acquire()  # explicit acquire/release: half the cost of ``with`` on this path
        try:
            if self._failure is not None:
                raise self._failure.clone()
            if not (self._value < value <= MAX_VALUE):
                raise InvalidArgumentError(
                    f"semaphore signal must strictly increase the value: current "
                    f"{self._value}, requested {value} (max {MAX_VALUE})"
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

    def _take_ready(self, value: int) -> Any:
        """Pop the timepoints ``value`` releases (at least the top one: the caller checked
        ``value >= _min_pending``) as ``(fn, arg, None)`` calls in registration order.
        Caller holds ``_lock``."""
        heap = self._timepoints
        tp = heappop(heap)
        if not heap or heap[0][0] > value:  # the common case: one entry released
            self._min_pending = heap[0][0] if heap else _NEVER
            fn = tp[2]
            if fn is None:  # cancelled
                self._cancelled -= 1
                return None
            arg = tp[3]
            tp[2] = tp[3] = None
            return ((fn, arg, None),)
        live = []
        while True:
            if tp[2] is None:
                self._cancelled -= 1
            else:
                live.append(tp)
            if not heap or heap[0][0] > value:
                break
            tp = heappop(heap)
        self._min_pending = heap[0][0] if heap else _NEVER
        if len(live) > 1:
            live.sort(key=_by_seq)
        ready = []
        for tp in live:
            ready.append((tp[2], tp[3], None))
            tp[2] = tp[3] = None
        return ready

    def fail(self, error: HalError | StatusCode | int, message: str = "") -> None:
        """Fail the semaphore; the first failure wins and later ones are dropped. All
        current and future waiters observe the failure's code.

        ``error`` is a ``HalError`` (kept as the failure, ``__cause__`` included) or a
        non-OK ``StatusCode`` (``message`` then says why). An OK status, an OK-coded
        HalError, a non-string message or anything else is INVALID_ARGUMENT and leaves
        the semaphore unchanged. The caller must hold no lock (waiters' callbacks run on
        this thread)."""
        if message.__class__ is not str:
            raise InvalidArgumentError(
                f"fail() message must be a str, got {type(message).__name__}; "
                "the semaphore was not changed"
            )
        if isinstance(error, HalError):
            if error.code == StatusCode.OK:
                raise InvalidArgumentError(
                    f"fail() needs an error, got a HalError with code OK ({error.message!r}); "
                    "the semaphore was not changed"
                )
        else:
            code = _as_status_code(error)
            if code is None or code == StatusCode.OK:
                raise InvalidArgumentError(
                    "fail() needs an error status (a HalError or a non-OK StatusCode), got "
                    f"{_brief(error)}; the semaphore was not changed"
                )
            error = error_for(code, message or "semaphore failed")
        with self._lock:
            if self._failure is not None:
                return
            ready = self._fail_locked(error)
        if ready:
            dispatch_callbacks(ready)

    def _fail_locked(self, error: HalError) -> list[tuple[TimepointFn, Any, HalError]]:
        """Record the failure and take every live timepoint (registration order) to be
        called with it. Caller holds ``_lock``."""
        self._failure = error
        live = [tp for tp in self._timepoints if tp[2] is not None]
        self._timepoints = []
        self._min_pending = _NEVER
        self._cancelled = 0
        live.sort(key=_by_seq)
        ready = []
        for tp in live:
            ready.append((tp[2], tp[3], error))
            tp[2] = tp[3] = None
        return ready

    # -- timepoints (backend tier) ---------------------------------------------------

    def add_timepoint(self, value: int, fn: TimepointFn, arg: Any) -> list[Any] | None:
        """Call ``fn(arg, error_or_None)`` once the payload reaches ``value`` or the
        semaphore fails. Fires immediately (through the trampoline) if already so and
        returns None; otherwise returns a handle for ``cancel_timepoint``. O(log N) in the
        number of parked timepoints. INVALID_ARGUMENT for a value that is no integer or a
        ``fn`` that is not callable. The caller must hold no lock (``fn`` may run now)."""
        if value.__class__ is not int:
            value = as_payload(value, "timepoint")
        if not callable(fn):
            raise InvalidArgumentError(
                f"timepoint callback must be callable, got {type(fn).__name__}"
            )
        lock = self._lock
        lock.acquire()
        failure = self._failure
        if failure is None and self._value < value:
            tp = [value, _next_seq(), fn, arg]
            heappush(self._timepoints, tp)
            if value < self._min_pending:
                self._min_pending = value
            lock.release()
            return tp
        lock.release()
        dispatch_callbacks(((fn, arg, failure),))
        return None

    # The Python reference of ``add_timepoint``: the native one (``bind_native_timepoints``)
    # falls back to it for anything but the common case.
    _add_timepoint = add_timepoint

    def cancel_timepoint(self, handle: list[Any]) -> bool:
        """Remove a pending timepoint; True iff its callback will not run (False when it
        already ran, is running, or was cancelled before). Amortised O(log N)."""
        with self._lock:
            if handle[2] is None:
                return False
            handle[2] = handle[3] = None
            heap = self._timepoints
            if heap[0] is handle:
                heappop(heap)
                while heap and heap[0][2] is None:
                    heappop(heap)
                    self._cancelled -= 1
                self._min_pending = heap[0][0] if heap else _NEVER
            else:
                self._cancelled = cancelled = self._cancelled + 1
                if cancelled > 32 and cancelled * 2 > len(heap):
                    # Mostly dead: rebuild so abandoned waits cannot pile up.
                    heap[:] = [tp for tp in heap if tp[2] is not None]
                    heapify(heap)
                    self._cancelled = 0
                    self._min_pending = heap[0][0] if heap else _NEVER
            return True

    def pending_timepoints(self) -> int:
        """How many timepoints are parked (not yet fired, failed or cancelled)."""
        with self._lock:
            return len(self._timepoints) - self._cancelled

    # -- host waits ------------------------------------------------------------------

    def wait(self, value: int, timeout: float | None = None) -> None:
        """Block until the payload reaches ``value``.

        ``timeout`` in seconds (None or ``inf`` waits forever, 0 or less only polls).
        Raises DEADLINE_EXCEEDED on timeout, or the failure's own error if the semaphore
        fails. INVALID_ARGUMENT for a value that is no integer in ``0..MAX_VALUE`` or a
        timeout that is no real number. The caller must hold no lock.
        """
        if value.__class__ is not int or not 0 <= value <= MAX_VALUE:
            value = as_wait_value(value, "wait")
        if timeout is not None:
            timeout = as_timeout(timeout)
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
        waiter.block(
            timeout, ((self, handle),), lambda: f"semaphore at {self._value} did not reach {value}"
        )

    def wait_async(self, value: int, timeout: float | None = None) -> Any:
        """``wait`` for asyncio (``await sem.wait_async(v)``): a coroutine that parks on
        a timepoint, blocking neither the event loop nor a thread."""
        from ._async_wait import wait_async  # loads asyncio only for users of it

        return wait_async(self, value, timeout)

    def __repr__(self) -> str:
        state = f"failed {self._failure.code.name}" if self._failure else f"value={self._value}"
        return f"<hal_core.Semaphore {state}>"


def bind_native_timepoints(native: Any) -> None:
    """Make ``Semaphore.add_timepoint`` the native one of ``hal_core._native_queue``: it
    parks the common case (an int value above the payload, no failure, lock free) in C and
    calls the method above, kept as ``_add_timepoint``, for everything else. Called once
    by ``_queue_fast_paths`` when the extension loads; one class, one behaviour."""
    native.init_timepoints(Semaphore._add_timepoint, heappush, _next_seq)
    # A native function bound like the method it replaces (mypy sees a method assign).
    Semaphore.add_timepoint = native.instance_method(native.add_timepoint)  # type: ignore[method-assign]


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


def _brief(value: Any) -> str:
    """``repr(value)`` cut to a readable length, and safe for objects whose repr raises."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def as_payload(value: Any, what: str) -> int:
    """Slow path for a payload that is not a plain int: integer-likes (numpy integers,
    anything with ``__index__``) convert, anything else (bool included) is
    INVALID_ARGUMENT."""
    if value.__class__ is not bool:
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise InvalidArgumentError(
        f"semaphore {what} value must be an integer in 0..{MAX_VALUE}, got {_brief(value)}"
    )


def as_wait_value(value: Any, what: str) -> int:
    """A value to wait for: an integer in ``0..MAX_VALUE`` (a larger one could never be
    reached), else INVALID_ARGUMENT."""
    if value.__class__ is not int:
        value = as_payload(value, what)
    if not 0 <= value <= MAX_VALUE:
        raise InvalidArgumentError(f"semaphore {what} value must be in 0..{MAX_VALUE}, got {value}")
    return value


def _as_mask(value: Any, what: str) -> int:
    """A non-negative integer bit mask (flags, affinities), else INVALID_ARGUMENT."""
    if value.__class__ is not bool:
        try:
            value = operator.index(value)
        except TypeError:
            pass
        else:
            if 0 <= value < 1 << 64:
                return value
    raise InvalidArgumentError(f"{what} must be an integer in 0..2**64-1, got {_brief(value)}")


def _as_status_code(value: Any) -> StatusCode | None:
    """``value`` as a StatusCode (StatusCode members, ints, integer-likes), or None."""
    if value.__class__ is bool:
        return None
    try:
        return StatusCode(operator.index(value))
    except (TypeError, ValueError):
        return None


def _normalise(semaphores: SemaphoreList, what: str) -> list[tuple[Semaphore, int]]:
    """Validate a ``(Semaphore, value)`` list for a host wait: INVALID_ARGUMENT for
    anything that is not an iterable of such pairs with values in ``0..MAX_VALUE``."""
    try:
        items = list(semaphores)
    except TypeError:
        raise InvalidArgumentError(
            f"{what} needs a list of (Semaphore, value) pairs, got {_brief(semaphores)}"
        ) from None
    out = []
    for item in items:
        try:
            sem, value = item
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"{what}: semaphore lists hold (Semaphore, value) pairs, got {_brief(item)}"
            ) from None
        if not isinstance(sem, Semaphore):
            raise InvalidArgumentError(f"{what}: expected a Semaphore, got {_brief(sem)}")
        if value.__class__ is not int or not 0 <= value <= MAX_VALUE:
            value = as_wait_value(value, what)
        out.append((sem, value))
    return out


def wait_all(semaphores: SemaphoreList, timeout: float | None = None) -> None:
    """Block until every ``(semaphore, value)`` is reached. An empty list returns at once.
    Raises DEADLINE_EXCEEDED or the first observed failure's own error; INVALID_ARGUMENT
    for a list or timeout of the wrong shape (see ``Semaphore.wait``)."""
    items = _normalise(semaphores, "wait_all")
    if timeout is not None:
        timeout = as_timeout(timeout)
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
    An empty list returns -1 at once. A failure of any semaphore raises its own error;
    INVALID_ARGUMENT for a list or timeout of the wrong shape (see ``Semaphore.wait``)."""
    items = _normalise(semaphores, "wait_any")
    if timeout is not None:
        timeout = as_timeout(timeout)
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
