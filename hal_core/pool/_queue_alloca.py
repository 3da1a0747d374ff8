"""The ``queue_alloca`` / ``queue_dealloca`` state machine over ``hal_core.pool``, shared by
the backends (IREE's local-task rules; the amdgpu host queues follow them too).

``QueueAllocaMachine`` is the backend-tier base class: a backend subclasses it, builds its
default ``PoolSet`` as ``default_pools`` and fills in the hooks that truly differ between
backends:

* ``_complete(op, state, error)``: how a committed (``error`` None) or failed alloca
  completes on the backend's queue (publish or fail the op's signals).
* ``_retired_epoch(queue_index)``: the epoch the queue has retired (every operation up to
  it is done); the requester frontier is ``{queue axis: that epoch}``, so blocks this queue
  released and retired are reused without a wait (same-queue elision).
* ``queue_axis(queue_index)`` and ``_tracker_for(frontier)``: the axis frontiers name a
  queue by, and the tracker able to wait on a frontier (own or device group).
* ``_dealloca_epoch(op, queue)``: the epoch of dealloca's death frontier.
* ``_empty_storage()``: what a zero-length alloca commits to.
* ``_close_backend()``: what ``close`` releases after cancelling parked allocas.

The rules:

* ``prepare`` (at the call): pick the pool, check size (RESOURCE_EXHAUSTED past the pool's
  whole budget, which no release could ever make room for) and alignment; with no pending
  waits reserve at once, so a refusal (OK_NEEDS_WAIT without ``ALLOW_POOL_WAIT_FRONTIER``)
  raises RESOURCE_EXHAUSTED with nothing queued.
* ``begin`` (waits reached): reserve unless prepared, then commit now (OK / OK_FRESH),
  after a hidden tracker wait on the block's death frontier (OK_NEEDS_WAIT with
  ``ALLOW_POOL_WAIT_FRONTIER``; without it the block is released again, keeping its
  frontier, and the op fails RESOURCE_EXHAUSTED), or park on the pool's notification
  (EXHAUSTED / OVER_BUDGET; no thread blocks) and retry on the next release. A retry that
  meets a block still in flight elsewhere (and was not allowed a hidden wait) hands the
  block back and retries once the tracker proves its frontier reached, asking with that
  frontier, so it never uses memory early.
* ``dealloca`` decommits the buffer and releases its reservation with the death frontier
  ``{queue axis: _dealloca_epoch}``.

Invariants: every parked or waiting alloca is in ``_pending`` so ``close`` can cancel it;
an op is completed exactly once (whoever removes it from ``_pending``); no lock is held
while pools, trackers or callbacks run; completion chaining goes through the notification
and tracker trampolines (module callbacks below), never recursion.
"""

from __future__ import annotations

import abc
import weakref
from typing import Any, cast

from .._buffer import commit_buffer, decommit_buffer
from .._completion import op_error
from .._frontier import Frontier
from .._memory import PlacementFlags
from .._queue import AllocaFlags
from .._status import (
    CancelledError,
    FailedPreconditionError,
    HalError,
    InvalidArgumentError,
    OutOfRangeError,
    ResourceExhaustedError,
)
from ._fixed_block import FixedBlockPool
from ._passthrough import PassthroughPool
from ._pool import Pool
from ._reservation import AcquireResult, ReserveFlags
from ._tlsf import TlsfPool

__all__ = ["AllocaState", "QueueAllocaMachine", "TransientAllocation"]

_OK = AcquireResult.OK
_OK_FRESH = AcquireResult.OK_FRESH
_NEEDS_WAIT = AcquireResult.OK_NEEDS_WAIT
_EXHAUSTED = AcquireResult.EXHAUSTED
_OVER_BUDGET = AcquireResult.OVER_BUDGET
# Flag tests on ints: ``enum & enum`` builds a new flag member per call.
_ALLOW_POOL_WAIT = int(AllocaFlags.ALLOW_POOL_WAIT_FRONTIER)
_INDETERMINATE = int(PlacementFlags.INDETERMINATE_LIFETIME)
_ALLOW = int(ReserveFlags.ALLOW_WAIT_FRONTIER)
# The pool classes whose acquire_reservation only reads the requester frontier during the
# call (never keeps it): a lane may hand them one frontier updated in place.
_REQUESTER_READERS = (TlsfPool, PassthroughPool, FixedBlockPool)


class TransientAllocation:
    """``Buffer.pool_state`` of a committed ``queue_alloca`` buffer: the pool and
    reservation its memory came from (and, for INDETERMINATE_LIFETIME buffers, the
    finalizer that gives the memory back when the buffer is dropped).

    A buffer dropped while committed (no ``queue_dealloca`` came) drops this too, and its
    reservation goes back to the pool then, as IREE releases a dropped buffer's memory: a
    program that never deallocas must not grow the pool's block table run after run. A
    dealloca releases the reservation first, so dropping this afterwards does nothing."""

    __slots__ = ("pool", "reservation", "finalizer")

    def __init__(self, pool: Pool, reservation: Any) -> None:
        self.pool = pool
        self.reservation = reservation
        self.finalizer: Any = None

    def __del__(self) -> None:
        reservation = self.reservation
        if reservation is not None and reservation.is_live:
            try:
                _release_dropped(self.pool, reservation)
            except HalError:
                pass  # the pool closed meanwhile: its memory went with it


class AllocaState:
    """Per-op progress of an alloca (``op.alloca_state`` while it is in flight). A backend that
    needs more per-op context subclasses it (adding slots) and names the subclass in
    ``QueueAllocaMachine._state_type``."""

    __slots__ = ("pool", "result", "reservation", "info", "handle", "requester")

    def __init__(self, pool: Pool | None) -> None:
        # None only for a zero-length alloca, which commits without touching a pool; every
        # path that reaches the pool has one, so the attribute is typed as always set.
        self.pool: Pool = cast(Pool, pool)
        self.result: AcquireResult | None = None
        self.reservation: Any = None
        self.info: Any = None
        # (tracker, waiter) of a frontier wait, or a notification park handle.
        self.handle: Any = None
        self.requester: Frontier | None = None


class QueueAllocaMachine(abc.ABC):
    """The alloca state machine of one device (or queue set); see the module docstring.

    Thread-safe: each op is driven by one thread at a time (its submitter, then whichever
    callback removed it from ``_pending``). Subclasses set ``default_pools`` and implement
    the hooks (abstract: a subclass missing one cannot be instantiated); ``close``
    (idempotent) cancels parked allocas with CANCELLED, then calls
    ``_close_backend``.
    """

    #: The per-op state class (a subclass of ``AllocaState``).
    _state_type: type = AllocaState
    default_pools: Any

    def __init__(self) -> None:
        self._pending: dict[Any, AllocaState] = {}
        self._closed = False
        # The last default-pool selection: (params, length, the pool set's entries, pool).
        self._selected: tuple[Any, int, Any, Pool] | None = None
        # Alloca lanes bound since the last invalidation (see ``bind_lane``), held weakly:
        # a device drops the lanes of shapes it no longer uses, and they leave this set.
        self._lanes: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- hooks -------------------------------------------------------------------------------

    @abc.abstractmethod
    def _complete(self, op: Any, state: AllocaState, error: HalError | None) -> None:
        """Complete ``op`` on the backend's queue: signal it (``error`` None) or fail it.
        Called exactly once per op, with no lock held."""

    @abc.abstractmethod
    def _retired_epoch(self, queue_index: int) -> int:
        """The epoch queue ``queue_index`` has retired (0: none yet). Lock-free."""

    @abc.abstractmethod
    def queue_axis(self, queue_index: int) -> int:
        """The frontier axis naming queue ``queue_index``."""

    @abc.abstractmethod
    def _tracker_for(self, frontier: Frontier) -> Any:
        """The ``FrontierTracker`` that can wait on ``frontier``."""

    @abc.abstractmethod
    def _dealloca_epoch(self, op: Any, queue: Any) -> int:
        """The epoch of the death frontier a dealloca of ``op`` releases memory with."""

    @abc.abstractmethod
    def _empty_storage(self) -> Any:
        """Storage a zero-length alloca commits to."""

    @abc.abstractmethod
    def _close_backend(self) -> None:
        """Release the backend's resources (default pools, tracker) in ``close``."""

    # -- alloca ------------------------------------------------------------------------------

    def _select(self, op: Any) -> Pool:
        pool = op.pool
        if pool is not None:
            return pool
        # A chain of allocas asks again and again with the same params object and size:
        # remember the last answer (valid while the pool set's entries are the same tuple).
        params = op.params
        length = op.length
        entries = self.default_pools._entries
        selected = self._selected
        if (
            selected is not None
            and selected[0] is params
            and selected[1] == length
            and selected[2] is entries
        ):
            return selected[3]
        pool = self.default_pools.select_or_raise(params, length)
        self._selected = (params, length, entries, pool)
        return pool

    def prepare(self, op: Any) -> bool:
        """At the call, before the op is queued: pick the pool (errors raise now) and,
        when the op has nothing to wait for, reserve at once so a refusal raises
        RESOURCE_EXHAUSTED to the caller with nothing queued.

        True when the reservation succeeded (OK or OK_FRESH) and nothing is waited on: the
        backend may then take the op's epoch and call ``commit_prepared`` at once instead
        of queueing it (what ``begin`` would do when it ran)."""
        if op.length == 0:
            # Nothing to reserve: the buffer commits to empty storage when ready.
            op.alloca_state = self._state_type(None)
            return False
        pool = self._select(op)
        caps = pool.query_capabilities()
        if caps.max_allocation_size and op.length > caps.max_allocation_size:
            raise OutOfRangeError(
                f"alloca of {op.length} bytes exceeds the pool's largest reservation "
                f"({caps.max_allocation_size} bytes); pass pool=None to route it through "
                "the device's default pool set"
            )
        limit = pool.budget_limit
        if limit and op.length > limit:
            # No release can ever bring it under the budget: parking would be forever.
            raise ResourceExhaustedError(
                f"alloca of {op.length} bytes exceeds the whole budget of {pool.trace_name} "
                f"({limit} bytes)"
            )
        alignment = op.params.min_alignment
        if alignment > caps.max_alignment:
            raise InvalidArgumentError(
                f"alloca alignment {alignment} exceeds what the pool guarantees "
                f"({caps.max_alignment} bytes); request at most {caps.max_alignment}"
            )
        state = self._state_type(pool)
        op.alloca_state = state
        for sem, value in op.waits:
            if sem._failure is not None or sem._value < value:
                return False
        self._acquire(op, state)
        return self.acquired(op, state)

    def acquired(self, op: Any, state: AllocaState) -> bool:
        """The rest of ``prepare`` once the reservation was tried (``state`` holds its
        result): True when it succeeded and the machine is open, False when the op must be
        queued, RESOURCE_EXHAUSTED (nothing queued) for a block still in flight when the
        op may not wait for it. The native straight path calls it (through the lane's
        ``resume``) for every result other than OK / OK_FRESH."""
        pool = state.pool
        result = state.result
        if result == _OK or result == _OK_FRESH:
            return not self._closed
        if result == _NEEDS_WAIT and not int(op.flags) & _ALLOW_POOL_WAIT:
            # Hand the block back with its death frontier, then refuse the call.
            pool.release_reservation(state.reservation, state.info.wait_frontier)
            op.alloca_state = None
            raise ResourceExhaustedError(
                f"{pool.trace_name}: the only free memory is still in use by other queue "
                "work (death frontier not reached); pass "
                "AllocaFlags.ALLOW_POOL_WAIT_FRONTIER to let the queue wait for it"
            )
        return False

    def bind_lane(self, lane: Any, gate: dict[str, Any], resume: Any) -> None:
        """Fill in the straight-path fields of ``lane`` (``hal_core._queue_alloca_paths``)
        when this machine has one for its call shape: the default pool selected for it and
        the prepare checks passed, and the backend's hooks are those of its queues'
        ``QueueTimeline``s (``_straight_timelines``). ``gate`` is the backend's instance
        dict, ``resume(op)`` what the backend does with a prepared op (``acquired`` then
        commit or queue). Leaves the lane without one otherwise (the native path then only
        replaces the front door)."""
        timelines = self._straight_timelines()
        if timelines is None or self._closed or lane.size == 0:
            return
        try:
            pool = self.default_pools.select_or_raise(lane.params, lane.size)
        except HalError:
            return
        caps = pool.query_capabilities()
        alignment = lane.params.min_alignment
        if (
            (caps.max_allocation_size and lane.size > caps.max_allocation_size)
            or alignment > caps.max_alignment
            or alignment.__class__ is not int
        ):
            return  # the reference raises for these
        lane.machine = self
        lane.pool = pool
        lane.acquire = pool.acquire_reservation
        lane.release = pool.release_reservation
        lane.wrap = pool.wrap_reservation
        lane.alignment = alignment
        lane.pool_set = self.default_pools
        lane.entries = self.default_pools._entries
        lane.axes = tuple(self.queue_axis(i) for i in range(len(timelines)))
        lane.gate = gate
        lane.resume = resume
        lane.on_error = self.fail_started
        lane.state_type = self._state_type
        slabs = getattr(pool, "_slabs", None)  # binding time, not the hot path
        if getattr(pool.provider, "reusable_wraps", False) and slabs.__class__ is list:
            # Wraps of the same slab range may be handed out again (see ``AllocaLane``).
            lane.slabs = slabs
            lane.storage_cache = {}
        lane.timelines = tuple(timelines)
        if pool.__class__ in _REQUESTER_READERS:
            lane.requesters = [None] * len(timelines)
        self._lanes.add(lane)
        if self._closed:  # closed meanwhile: its invalidation may have missed this lane
            lane.valid = False

    def invalidate_lanes(self) -> None:
        """Stop the native straight path of every lane bound so far (queue axes or pools
        changed, or closing): the next call of each shape goes through the reference,
        which binds a new lane."""
        lanes, self._lanes = self._lanes, weakref.WeakSet()
        for lane in list(lanes):
            lane.valid = False

    def _straight_timelines(self) -> Any:
        """The backend's ``QueueTimeline`` per queue index when its hooks are exactly
        theirs: ``_retired_epoch(q)`` and ``_dealloca_epoch`` read ``timelines[q].retired``,
        the op's epoch is ``timelines[q].begin()``, and ``_complete`` of a committed op is
        ``complete_op(op, timelines[q])``; None (the default) when there is no such
        straight path."""
        return None

    def fail_started(self, op: Any, exc: BaseException) -> None:
        """An op that took its epoch raised on the native straight path: fail its signals
        as the backend's inline execution does (then re-raise an interrupt)."""
        # ``state`` is not read by ``_complete`` of a failure (a dealloca has none).
        self._complete(op, cast(AllocaState, None), op_error(exc))
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc

    def commit_prepared(self, op: Any) -> None:
        """Commit an op ``prepare`` returned True for and complete it (``_complete``), as
        ``begin`` would once the op is queued; the backend has given it its epoch."""
        self._commit(op, op.alloca_state)

    def abandon(self, op: Any) -> None:
        """Undo ``prepare`` when queueing the op failed after it (nothing was queued)."""
        state = op.alloca_state
        if isinstance(state, AllocaState) and state.reservation is not None:
            frontier = state.info.wait_frontier if state.result == _NEEDS_WAIT else None
            state.pool.release_reservation(state.reservation, frontier)
        op.alloca_state = None

    def _acquire(self, op: Any, state: AllocaState) -> None:
        requester = state.requester
        retired = self._retired_epoch(op.queue)
        if retired:
            own = Frontier.single(self.queue_axis(op.queue), retired)
            if requester is None:
                requester = own
            else:
                requester = requester.copy()
                requester.merge(own)
        # The pool may always answer OK_NEEDS_WAIT; the alloca flag decides what the
        # queue does with it (_decide), as IREE's local-task does.
        state.result, state.reservation, state.info = state.pool.acquire_reservation(
            op.length, op.params.min_alignment, requester, _ALLOW
        )

    def started_state(self, op: Any) -> AllocaState:
        """``op.alloca_state`` as prepared, or a fresh state for an op queued without
        ``prepare`` (a front end that does not call ``submit_alloca``); raises the pool
        selection's HalError."""
        state = op.alloca_state  # None unless prepare() ran
        if state.__class__ is not self._state_type:
            state = self._state_type(self._select(op) if op.length else None)
            op.alloca_state = state
        return state

    def begin(self, op: Any, state: AllocaState) -> None:
        """The op's waits are reached (``state`` from ``started_state``, with any backend
        context attached): reserve (unless ``prepare`` did), then commit now, after a
        hidden frontier wait, or after parking on the pool notification."""
        if op.length == 0:
            commit_buffer(op.target, self._empty_storage())
            op.alloca_state = None
            self._complete(op, state, None)
            return
        if self._closed:
            self._fail(op, state, CancelledError("device closed before the alloca ran"))
            return
        if state.result is None:
            self._observe_and_acquire(op, state, False)
            return
        self._decide(op, state, False)

    def _observe_and_acquire(self, op: Any, state: AllocaState, retrying: bool) -> None:
        notification = state.pool.notification
        # Token protocol: observe before trying, so a release racing with the attempt
        # either shows in the attempt or moves the epoch past the token (no lost wakeup).
        token = notification.begin_observe()
        try:
            try:
                self._acquire(op, state)
            except HalError as exc:  # a pool refusing the request (or a provider error)
                state.reservation = None
                self._fail(op, state, exc)
                return
            result = state.result
            if result == _EXHAUSTED or result == _OVER_BUDGET:
                self._pending[op] = state
                # park() may fire (and retry) at once when a release already moved the
                # epoch; only a handle it returns belongs to this attempt.
                handle = notification.park(token, _retry_parked, (self, op))
                if handle is not None:
                    state.handle = handle
                return
        finally:
            notification.end_observe()
        self._decide(op, state, retrying)

    def _decide(self, op: Any, state: AllocaState, retrying: bool) -> None:
        result = state.result
        if result == _OK or result == _OK_FRESH:
            self._commit(op, state)
            return
        if result == _NEEDS_WAIT:
            frontier = state.info.wait_frontier
            if int(op.flags) & _ALLOW_POOL_WAIT:
                self._wait_frontier(op, state, frontier, _hidden_wait_done)
            elif not retrying:
                self._fail(
                    op,
                    state,
                    ResourceExhaustedError(
                        f"{state.pool.trace_name}: the only free memory is still in use by "
                        "other queue work; pass AllocaFlags.ALLOW_POOL_WAIT_FRONTIER to let "
                        "the queue wait for it"
                    ),
                )
            else:
                # Parked work (it already accepted waiting for memory) meeting a block
                # still in flight: give the block back and retry once the tracker proves
                # its frontier, asking with that frontier.
                state.pool.release_reservation(state.reservation, frontier)
                state.reservation = None
                state.requester = frontier
                self._wait_frontier(op, state, frontier, _retry_after_frontier)
            return
        # EXHAUSTED / OVER_BUDGET on the prepared attempt: observe, retry, park.
        state.result = None
        self._observe_and_acquire(op, state, False)

    def _wait_frontier(self, op: Any, state: AllocaState, frontier: Frontier, fn: Any) -> None:
        self._pending[op] = state
        try:
            tracker = self._tracker_for(frontier)
            handle = tracker.wait(frontier, fn, (self, op))
            if handle is not None:
                state.handle = (tracker, handle)
        except HalError as exc:  # an axis this device does not know (a foreign pool)
            if self._pending.pop(op, None) is not None:
                self._fail(op, state, exc)

    def _commit(self, op: Any, state: AllocaState) -> None:
        pool = state.pool
        reservation = state.reservation
        buffer = op.target
        try:
            storage = pool.wrap_reservation(reservation)
        except Exception as exc:  # e.g. the pool was closed while this alloca waited
            state.reservation = None
            self._fail(
                op,
                state,
                FailedPreconditionError(
                    f"{pool.trace_name}: could not commit the reserved memory ({exc}); keep "
                    "a pool open while queue_alloca work uses it"
                ),
            )
            return
        commit_buffer(buffer, storage)
        transient = TransientAllocation(pool, reservation)
        if int(buffer.placement_flags) & _INDETERMINATE:
            # No dealloca will come: the memory goes back when the buffer is dropped.
            transient.finalizer = weakref.finalize(buffer, _release_dropped, pool, reservation)
        buffer.pool_state = transient
        op.alloca_state = None
        self._complete(op, state, None)

    def _fail(self, op: Any, state: AllocaState, error: HalError) -> None:
        if state.reservation is not None:
            frontier = state.info.wait_frontier if state.result == _NEEDS_WAIT else None
            state.pool.release_reservation(state.reservation, frontier)
            state.reservation = None
        op.alloca_state = None
        self._complete(op, state, error)

    # -- dealloca ----------------------------------------------------------------------------

    def dealloca(self, op: Any, queue: Any = None) -> None:
        """Decommit ``op.target`` and release its reservation with the death frontier
        ``{queue axis: _dealloca_epoch(op, queue)}`` (``queue``: the backend's queue
        object running the dealloca, when its hook needs it). Raises FAILED_PRECONDITION
        when the buffer is not committed. A buffer not from ``queue_alloca`` just has its
        storage released."""
        buffer = op.target
        if not buffer.is_committed:
            raise FailedPreconditionError(
                "queue_dealloca of a buffer that is not committed (its alloca failed or "
                "has not completed, or it was deallocated already)"
            )
        transient = buffer.pool_state
        storage = decommit_buffer(buffer)
        if transient.__class__ is TransientAllocation:
            buffer.pool_state = None
            if transient.finalizer is not None:
                transient.finalizer.detach()
            done = self._dealloca_epoch(op, queue)
            transient.pool.release_reservation(
                transient.reservation,
                Frontier.single(self.queue_axis(op.queue), done) if done else None,
            )
        else:
            storage.release()

    # -- lifetime ----------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        """Allocas parked on a notification or waiting on a frontier."""
        return len(self._pending)

    def close(self) -> None:
        """Cancel parked/waiting allocas (their ops fail CANCELLED), then release the
        backend's resources. Idempotent."""
        if self._closed:
            return
        # Lanes first: the native path takes a valid lane to mean an open machine.
        self.invalidate_lanes()
        self._closed = True
        error = CancelledError("device closed while a queue_alloca was waiting for memory")
        for op in list(self._pending):
            state = self._pending.pop(op, None)
            if state is None:
                continue
            handle = state.handle
            if handle is not None:
                if isinstance(handle, tuple):
                    handle[0].cancel_wait(handle[1])
                else:
                    state.pool.notification.unpark(handle)
            self._fail(op, state, error)
        self._close_backend()


# -- callbacks (module functions: fired through the notification / tracker trampolines) ----


def _retry_parked(arg: Any, _status: Any) -> None:
    machine, op = arg
    state = machine._pending.pop(op, None)
    if state is None:
        return
    state.handle = None
    if machine._closed:
        machine._fail(op, state, CancelledError("device closed"))
        return
    machine._observe_and_acquire(op, state, True)


def _hidden_wait_done(arg: Any, status: HalError | None) -> None:
    machine, op = arg
    state = machine._pending.pop(op, None)
    if state is None:
        return
    if status is not None:
        machine._fail(op, state, status)
    else:
        machine._commit(op, state)


def _retry_after_frontier(arg: Any, status: HalError | None) -> None:
    machine, op = arg
    state = machine._pending.pop(op, None)
    if state is None:
        return
    if status is not None:
        machine._fail(op, state, status)
        return
    state.result = None
    machine._observe_and_acquire(op, state, True)


def _release_dropped(pool: Pool, reservation: Any) -> None:
    """A dropped transient's reservation back to its pool (a finalizer or ``__del__``: it
    may run inside a garbage collection on a thread holding the pool's lock, so the pool
    defers the release when it must; see ``Pool.release_dropped``)."""
    if reservation.is_live and not pool._closed:
        pool.release_dropped(reservation)
