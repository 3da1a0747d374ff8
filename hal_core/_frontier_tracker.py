"""The frontier tracker: axis -> epoch reached, and waiters on frontiers.

Invariants:

* Every axis is registered once and never reused (a retired axis stays known as failed),
  so a stale frontier can never be satisfied by a new participant (no ABA).
* ``_epochs`` maps each live, non-failed axis to the epoch it reached. It is only replaced
  key by key under ``_lock``; readers (``query_epoch``, called by pools on their hot path)
  read it without the lock, which is safe under the GIL because a dict item read is atomic
  and epochs only grow. A failed axis is removed from it: failure is never success.
* A waiter is registered on every entry of its frontier that was not reached when it was
  created and fires once: when its last entry is reached, or when one of its axes fails
  (with that failure) or the tracker closes (CANCELLED).
* An axis owner that already serialises its own progress (a queue timeline under its lock)
  may *publish* epochs lock-free: store ``epochs[axis] = epoch`` into ``published_epochs``
  (never lower, never from two threads at once), then read ``axis_state(axis).min_pending``
  and call ``advance`` only when it is <= the epoch. ``wait`` registers its entries first
  and re-reads ``_epochs`` afterwards, so either the publisher sees the new waiter or the
  waiter sees the published epoch: no lost wakeup. ``advance`` never lowers ``_epochs``.
* Callbacks run outside ``_lock``, through the semaphore trampoline
  (``hal_core.backend.dispatch_callbacks``), so a completion that advances another axis
  never recurses.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ._frontier import Frontier
from ._semaphore import dispatch_callbacks
from ._status import (
    AlreadyExistsError,
    CancelledError,
    FailedPreconditionError,
    HalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)

__all__ = ["FrontierTracker", "FrontierWaiter"]

WaiterFn = Callable[[Any, "HalError | None"], None]

_NEVER = 1 << 80


class FrontierWaiter:
    """Handle of a pending ``FrontierTracker.wait`` (pass it to ``cancel_wait``)."""

    __slots__ = ("fn", "arg", "remaining", "axes", "done")

    def __init__(self, fn: WaiterFn, arg: Any, remaining: int, axes: list[int]) -> None:
        self.fn = fn
        self.arg = arg
        self.remaining = remaining
        self.axes = axes
        self.done = False


class _AxisState:
    __slots__ = ("epoch", "failure", "bridge", "entries", "min_pending")

    def __init__(self, bridge: Any) -> None:
        self.epoch = 0
        self.failure: HalError | None = None
        self.bridge = bridge
        self.entries: list[tuple[int, FrontierWaiter]] = []
        self.min_pending = _NEVER


class FrontierTracker:
    """Maps axes to the epochs they reached and fires waiters when frontiers are reached.

    Thread-safe; nothing here blocks. One tracker serves a causal domain (a device, or a
    device group shared by its devices). ``close()`` (idempotent) cancels pending waiters.
    """

    def __init__(
        self, *, session_epoch: int = 1, machine_index: int = 0, axis_capacity: int = 256
    ) -> None:
        for name, value, hi in (
            ("session_epoch", session_epoch, 0xFF),
            ("machine_index", machine_index, 0xFF),
            ("axis_capacity", axis_capacity, 1 << 32),
        ):
            if value.__class__ is not int or not 0 <= value <= hi:
                raise InvalidArgumentError(f"{name} must be an int in 0..{hi}, got {value!r}")
        self.session_epoch = session_epoch
        self.machine_index = machine_index
        self.axis_capacity = axis_capacity
        self._lock = threading.Lock()
        self._axes: dict[int, _AxisState] = {}
        self._epochs: dict[int, int] = {}
        self._closed = False

    # -- axes ----------------------------------------------------------------------------

    def register_axis(self, axis: int, bridge_semaphore: Any = None) -> None:
        """Start tracking ``axis`` at epoch 0. ``bridge_semaphore`` (borrowed, optional) is
        signalled to each epoch the axis reaches. ALREADY_EXISTS for an axis registered
        before (axes are never reused); RESOURCE_EXHAUSTED past ``axis_capacity``."""
        if axis.__class__ is not int or not 0 <= axis < (1 << 64):
            raise InvalidArgumentError(f"axis must be a 64-bit int, got {axis!r}")
        with self._lock:
            if self._closed:
                raise FailedPreconditionError("frontier tracker is closed; create a new one")
            if axis in self._axes:
                raise AlreadyExistsError(
                    f"axis {axis:#x} is already registered (axes are never reused; build a "
                    "new one with a fresh queue index or session epoch)"
                )
            if len(self._axes) >= self.axis_capacity:
                raise ResourceExhaustedError(
                    f"frontier tracker holds {self.axis_capacity} axes already; create it "
                    "with a larger axis_capacity"
                )
            self._axes[axis] = _AxisState(bridge_semaphore)
            self._epochs[axis] = 0

    def retire_axis(self, axis: int, error: HalError | None = None) -> None:
        """Retire ``axis`` for good: waiters on it fail with ``error`` (CANCELLED when
        None). NOT_FOUND for an unknown axis."""
        self.fail_axis(axis, error or CancelledError(f"axis {axis:#x} was retired"))

    def fail_axis(self, axis: int, error: HalError) -> None:
        """Fail ``axis``: every waiter referencing it (now or later) fails with ``error``;
        ``query_epoch`` answers False for it from now on. The first failure wins."""
        with self._lock:
            state = self._get(axis)
            if state.failure is not None:
                return
            state.failure = error
            self._epochs.pop(axis, None)
            ready = self._fail_entries_locked(state, error)
        if state.bridge is not None:
            state.bridge.fail(error)
        if ready:
            dispatch_callbacks(ready)

    def _get(self, axis: int) -> _AxisState:
        state = self._axes.get(axis)
        if state is None:
            raise NotFoundError(
                f"axis {axis:#x} is not registered with this frontier tracker; register "
                "it (each queue registers its own) before advancing or waiting on it"
            )
        return state

    def _fail_entries_locked(self, state: _AxisState, error: HalError) -> list[Any]:
        ready = []
        for _epoch, waiter in state.entries:
            if not waiter.done:
                waiter.done = True
                ready.append((waiter.fn, waiter.arg, error))
                self._unlink_locked(waiter)
        state.entries = []
        state.min_pending = _NEVER
        return ready

    def _unlink_locked(self, waiter: FrontierWaiter) -> None:
        axes = self._axes
        for axis in waiter.axes:
            st = axes[axis]
            if st.entries:
                st.entries = [e for e in st.entries if e[1] is not waiter]
                st.min_pending = min((e[0] for e in st.entries), default=_NEVER)

    # -- progress ----------------------------------------------------------------------

    def advance(self, axis: int, epoch: int) -> int:
        """Raise ``axis`` to ``epoch`` (max wins: a lower epoch is a no-op). Waiters now
        satisfied fire on this thread after the lock is dropped. Returns how many fired.
        NOT_FOUND for an unknown axis; a failed axis ignores advances."""
        ready = None
        with self._lock:
            state = self._axes.get(axis)
            if state is None:
                state = self._get(axis)  # raises NOT_FOUND
            if state.failure is not None or epoch <= state.epoch:
                return 0
            state.epoch = epoch
            if self._epochs.get(axis, 0) < epoch:
                self._epochs[axis] = epoch
            if epoch >= state.min_pending:
                ready = []
                keep = []
                new_min = _NEVER
                for entry in state.entries:
                    e, waiter = entry
                    if e <= epoch:
                        waiter.remaining -= 1
                        if waiter.remaining == 0 and not waiter.done:
                            waiter.done = True
                            ready.append((waiter.fn, waiter.arg, None))
                    else:
                        keep.append(entry)
                        if e < new_min:
                            new_min = e
                state.entries = keep
                state.min_pending = new_min
            bridge = state.bridge
        if bridge is not None and bridge._value < epoch:
            bridge._signal_from_queue(epoch)
        if ready:
            dispatch_callbacks(ready)
            return len(ready)
        return 0

    @property
    def published_epochs(self) -> dict[int, int]:
        """The axis -> epoch map ``query_epoch`` reads (backend tier: for owners that
        publish their own epochs lock-free, see the module invariants)."""
        return self._epochs

    def axis_state(self, axis: int) -> _AxisState:
        """The state record of ``axis`` (backend tier: publishers read ``min_pending``,
        the smallest epoch a waiter needs). NOT_FOUND for an unknown axis."""
        with self._lock:
            return self._get(axis)

    def query_epoch(self, axis: int, epoch: int) -> bool:
        """Has ``axis`` reached ``epoch``? Lock-free; False for unknown or failed axes.
        This is the pools' epoch query."""
        return self._epochs.get(axis, 0) >= epoch

    def current_epoch(self, axis: int) -> int:
        """Epoch ``axis`` reached (0 if unknown). NOT_FOUND is not raised: this is a probe."""
        return self._epochs.get(axis, 0)

    def is_satisfied(self, frontier: Frontier) -> bool:
        epochs = self._epochs
        for axis, epoch in frontier:
            if epochs.get(axis, 0) < epoch:
                return False
        return True

    # -- waiters -----------------------------------------------------------------------

    def wait(self, frontier: Frontier, fn: WaiterFn, arg: Any) -> FrontierWaiter | None:
        """Call ``fn(arg, None)`` once every entry of ``frontier`` is reached, or
        ``fn(arg, error)`` if one of its axes fails (CANCELLED if the tracker closes).

        Fires at once (through the trampoline) and returns None when already decided;
        otherwise returns the waiter for ``cancel_wait``. NOT_FOUND (raised, nothing
        registered) when an axis of ``frontier`` is not registered.
        """
        failure: HalError | None = None
        pending: list[tuple[_AxisState, int, int]] = []
        epochs = self._epochs
        with self._lock:
            if self._closed:
                failure = CancelledError("frontier tracker is closed")
            else:
                for axis, epoch in frontier:
                    state = self._get(axis)
                    if state.failure is not None:
                        failure = state.failure
                        break
                    if state.epoch < epoch and epochs.get(axis, 0) < epoch:
                        pending.append((state, epoch, axis))
                if failure is None and pending:
                    waiter = FrontierWaiter(fn, arg, len(pending), [p[2] for p in pending])
                    for state, epoch, _axis in pending:
                        state.entries.append((epoch, waiter))
                        if epoch < state.min_pending:
                            state.min_pending = epoch
        if failure is None and pending:
            # Publish protocol: an epoch published lock-free before our entries were
            # visible would never advance us; catch up here (see the module invariants).
            for state, epoch, axis in pending:
                published = epochs.get(axis, 0)
                if published >= epoch and published > state.epoch:
                    self.advance(axis, published)
            return waiter
        dispatch_callbacks(((fn, arg, failure),))
        return None

    def cancel_wait(self, waiter: FrontierWaiter) -> bool:
        """Withdraw a pending waiter; True iff its callback will not run."""
        with self._lock:
            if waiter.done:
                return False
            waiter.done = True
            self._unlink_locked(waiter)
            return True

    @property
    def pending_waiter_count(self) -> int:
        with self._lock:
            seen = {id(w) for st in self._axes.values() for _e, w in st.entries}
            return len(seen)

    def axes(self) -> list[int]:
        with self._lock:
            return sorted(self._axes)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Cancel every pending waiter with CANCELLED. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            error = CancelledError("frontier tracker closed while waiters were pending")
            ready = []
            for state in self._axes.values():
                for _epoch, waiter in state.entries:
                    if not waiter.done:
                        waiter.done = True
                        ready.append((waiter.fn, waiter.arg, error))
                state.entries = []
                state.min_pending = _NEVER
        if ready:
            dispatch_callbacks(ready)

    def __enter__(self) -> "FrontierTracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
