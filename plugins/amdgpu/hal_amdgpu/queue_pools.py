"""``queue_alloca`` / ``queue_dealloca`` of the amdgpu host queues through the
``hal_core.pool`` substrate.

One ``HsaSlabProvider`` per heap (device-local, device-local host-visible, host-local)
feeds the device's default ``PoolSet``: a TLSF pool per heap (priority
``DEFAULT_PRIORITY_TLSF``, 16 MiB slabs) and a passthrough catch-all per heap (priority
``DEFAULT_PRIORITY_OVERSIZED``) for larger requests. Registration order breaks priority
ties, so a request lands in the least capable heap that covers its memory type and usage,
as the allocator's heap selection does. An explicit pool passed to ``queue_alloca`` is used
as given.

Frontiers name each host queue's axis in the queue set's ``FrontierTracker`` (advanced by
the completion thread when epochs retire) or, while the device is in a device group, the
group's axis for that queue (``group`` is set by ``device_group.assign_topology_info``).

The alloca state machine (IREE's rules, as the local CPU devices implement them):

* ``prepare`` (at the call): pick the pool, check size and alignment; with no pending
  waits reserve at once, so a refusal raises RESOURCE_EXHAUSTED with nothing queued.
* ``start`` (waits reached, from the host queue's admission): reserve unless prepared,
  then commit now (OK / OK_FRESH), after a hidden tracker wait on the block's death
  frontier (OK_NEEDS_WAIT with ``ALLOW_POOL_WAIT_FRONTIER``), or park on the pool's
  notification (EXHAUSTED / OVER_BUDGET) and retry on the next release. The requester
  frontier is ``{queue axis: epoch retired}``, so blocks this queue released and retired
  are reused without a wait.
* Completion calls ``queue.alloca_done(sub, error)``, which publishes the NOP carrying
  the op's signals (or fails them). No thread blocks; no lock is held while pools,
  trackers or callbacks run.

``dealloca`` runs as a host action at the dealloca's epoch (everything before it on the
queue has completed): it decommits the buffer and releases the reservation with the death
frontier ``{queue axis: completed epoch}``. ``close`` cancels parked allocas (CANCELLED)
and closes the default pools.
"""

from __future__ import annotations

import weakref
from typing import Any

from hal_core import (
    AllocaFlags,
    CancelledError,
    FailedPreconditionError,
    Frontier,
    HalError,
    InvalidArgumentError,
    Notification,
    OutOfRangeError,
    PlacementFlags,
    ResourceExhaustedError,
)
from hal_core.pool import (
    DEFAULT_PRIORITY_OVERSIZED,
    DEFAULT_PRIORITY_TLSF,
    AcquireResult,
    PassthroughPool,
    Pool,
    PoolSet,
    QueuePoolBackend,
    ReserveFlags,
    TlsfPool,
)

from .slab_provider import HsaSlabProvider, HsaSlabStorage

__all__ = ["AmdgpuQueuePools", "TransientAllocation", "DEFAULT_TLSF_SLAB_SIZE"]

DEFAULT_TLSF_SLAB_SIZE = 16 << 20
"""Slab size (and largest suballocation) of the default TLSF pools; larger allocas go to
the passthrough pools."""
DEFAULT_POOL_ALIGNMENT = 64

_OK = AcquireResult.OK
_OK_FRESH = AcquireResult.OK_FRESH
_NEEDS_WAIT = AcquireResult.OK_NEEDS_WAIT
_ALLOW_POOL_WAIT = AllocaFlags.ALLOW_POOL_WAIT_FRONTIER
_ALLOW = ReserveFlags.ALLOW_WAIT_FRONTIER


class TransientAllocation:
    """``Buffer.pool_state`` of a committed ``queue_alloca`` buffer."""

    __slots__ = ("pool", "reservation", "finalizer")

    def __init__(self, pool: Pool, reservation: Any) -> None:
        self.pool = pool
        self.reservation = reservation
        self.finalizer: Any = None


class _AllocaState:
    """Per-op progress of an alloca (``op.data`` while it is in flight)."""

    __slots__ = ("pool", "result", "reservation", "info", "handle", "requester", "sub",
                 "queue")

    def __init__(self, pool: Pool | None) -> None:
        self.pool = pool
        self.result: AcquireResult | None = None
        self.reservation: Any = None
        self.info: Any = None
        # (tracker, waiter) of a frontier wait, or a notification park handle.
        self.handle: Any = None
        self.requester: Frontier | None = None
        self.sub: Any = None
        self.queue: Any = None


class AmdgpuQueuePools:
    """Default pool set, frontier queries and alloca state machine of one host queue set.
    Thread-safe. ``close`` is idempotent."""

    def __init__(self, qset: Any, allocator: Any, *,
                 tlsf_slab_size: int = DEFAULT_TLSF_SLAB_SIZE) -> None:
        self.qset = qset
        self.tracker = qset.tracker
        self._own_epochs = self.tracker.published_epochs
        #: The device group's ``_GroupAxes`` while the device is a member (else None).
        self.group: Any = None
        self.providers = tuple(HsaSlabProvider(allocator, heap) for heap in range(3))
        self.notification = qset_notification = Notification()
        epoch_query = self.query_epoch
        self.default_pools = PoolSet()
        for provider in self.providers:
            self.default_pools.register(DEFAULT_PRIORITY_TLSF, TlsfPool(
                provider, range_length=tlsf_slab_size,
                alignment=min(DEFAULT_POOL_ALIGNMENT, provider.slab_alignment),
                notification=qset_notification, epoch_query=epoch_query,
                trace_name=f"amdgpu heap {provider.heap} default TLSF"))
        for provider in self.providers:
            self.default_pools.register(DEFAULT_PRIORITY_OVERSIZED, PassthroughPool(
                provider, notification=qset_notification, epoch_query=epoch_query,
                trace_name=f"amdgpu heap {provider.heap} oversized passthrough"))
        self._pending: dict[Any, _AllocaState] = {}
        self._closed = False

    # -- frontiers -------------------------------------------------------------------------

    def query_epoch(self, axis: int, epoch: int) -> bool:
        """The pools' epoch query (own or group axes). Lock-free."""
        if self._own_epochs.get(axis, 0) >= epoch:
            return True
        group = self.group
        return group is not None and group.tracker.published_epochs.get(axis, 0) >= epoch

    def queue_axis(self, queue_index: int) -> int:
        group = self.group
        if group is not None:
            return group.axes[queue_index]
        return self.qset.queues[queue_index].axis

    def _tracker_for(self, frontier: Frontier) -> Any:
        group = self.group
        if group is not None:
            known = group.tracker.published_epochs
            if all(axis in known for axis, _epoch in frontier):
                return group.tracker
        return self.tracker

    def query_queue_pool_backend(self, queue_index: int) -> QueuePoolBackend:
        """What a user pool serving queue ``queue_index`` needs (hal_core checks the
        device-group precondition before calling this)."""
        provider = self.providers[0]
        return QueuePoolBackend(slab_provider=provider, notification=self.notification,
                                epoch_query=self.query_epoch,
                                axis=self.queue_axis(queue_index), queue_index=queue_index)

    # -- alloca ----------------------------------------------------------------------------

    def _select(self, op: Any) -> Pool:
        pool, params = op.extra
        if pool is None:
            return self.default_pools.select_or_raise(params, op.length)
        return pool

    def prepare(self, op: Any) -> None:
        """At the call: pick the pool (errors raise now) and, when nothing is waited for,
        reserve at once so a refusal raises RESOURCE_EXHAUSTED with nothing queued."""
        if op.length == 0:
            op.data = _AllocaState(None)
            return
        pool = self._select(op)
        caps = pool.query_capabilities()
        if caps.max_allocation_size and op.length > caps.max_allocation_size:
            raise OutOfRangeError(
                f"alloca of {op.length} bytes exceeds the pool's largest reservation "
                f"({caps.max_allocation_size} bytes); pass pool=None to route it through "
                "the device's default pool set")
        alignment = op.extra[1].min_alignment
        if alignment > caps.max_alignment:
            raise InvalidArgumentError(
                f"alloca alignment {alignment} exceeds what the pool guarantees "
                f"({caps.max_alignment} bytes); request at most {caps.max_alignment}")
        state = _AllocaState(pool)
        op.data = state
        for sem, value in op.waits:
            if sem._failure is not None or sem._value < value:
                return
        self._acquire(op, state)
        if state.result == _NEEDS_WAIT and not op.flags & _ALLOW_POOL_WAIT:
            pool.release_reservation(state.reservation, state.info.wait_frontier)
            op.data = None
            raise ResourceExhaustedError(
                f"{pool.trace_name}: the only free memory is still in use by other queue "
                "work (death frontier not reached); pass "
                "AllocaFlags.ALLOW_POOL_WAIT_FRONTIER to let the queue wait for it")

    def abandon(self, op: Any) -> None:
        """Undo ``prepare`` when queueing the op failed after it (nothing was queued)."""
        state = op.data
        if state.__class__ is _AllocaState and state.reservation is not None:
            frontier = state.info.wait_frontier if state.result == _NEEDS_WAIT else None
            state.pool.release_reservation(state.reservation, frontier)
        op.data = None

    def _acquire(self, op: Any, state: _AllocaState) -> None:
        queue = self.qset.queues[op.queue]
        requester = state.requester
        retired = queue.completed_epoch
        if retired:
            own = Frontier.single(self.queue_axis(op.queue), retired)
            if requester is None:
                requester = own
            else:
                requester = requester.copy()
                requester.merge(own)
        params = op.extra[1]
        state.result, state.reservation, state.info = state.pool.acquire_reservation(
            op.length, params.min_alignment, requester, _ALLOW)

    def start(self, sub: Any, queue: Any) -> None:
        """The op's waits are reached: reserve (unless ``prepare`` did), then commit now,
        after a hidden frontier wait, or after parking. Ends in ``queue.alloca_done``."""
        op = sub.op
        state = op.data
        if state.__class__ is not _AllocaState:
            try:
                state = _AllocaState(self._select(op) if op.length else None)
            except HalError as exc:
                queue.alloca_done(sub, exc)
                return
            op.data = state
        state.sub = sub
        state.queue = queue
        if op.length == 0:
            op.target.commit(HsaSlabStorage.empty(0))
            op.data = None
            queue.alloca_done(sub, None)
            return
        if self._closed:
            self._fail(op, state, CancelledError("device closed before the alloca ran"))
            return
        if state.result is None:
            self._observe_and_acquire(op, state, False)
            return
        self._decide(op, state, False)

    def _observe_and_acquire(self, op: Any, state: _AllocaState, retrying: bool) -> None:
        notification = state.pool.notification
        # Observe before trying: a release racing with the attempt either shows in the
        # attempt or moves the epoch past the token (no lost wakeup).
        token = notification.begin_observe()
        try:
            try:
                self._acquire(op, state)
            except HalError as exc:
                state.reservation = None
                self._fail(op, state, exc)
                return
            result = state.result
            if result == AcquireResult.EXHAUSTED or result == AcquireResult.OVER_BUDGET:
                self._pending[op] = state
                handle = notification.park(token, _retry_parked, (self, op))
                if handle is not None:
                    state.handle = handle
                return
        finally:
            notification.end_observe()
        self._decide(op, state, retrying)

    def _decide(self, op: Any, state: _AllocaState, retrying: bool) -> None:
        result = state.result
        if result == _OK or result == _OK_FRESH:
            self._commit(op, state)
            return
        if result == _NEEDS_WAIT:
            frontier = state.info.wait_frontier
            if op.flags & _ALLOW_POOL_WAIT:
                self._wait_frontier(op, state, frontier, _hidden_wait_done)
            elif not retrying:
                self._fail(op, state, ResourceExhaustedError(
                    f"{state.pool.trace_name}: the only free memory is still in use by "
                    "other queue work; pass AllocaFlags.ALLOW_POOL_WAIT_FRONTIER to let "
                    "the queue wait for it"))
            else:
                # Parked work meeting a block still in flight: give it back and retry once
                # the tracker proves its frontier, asking with that frontier.
                state.pool.release_reservation(state.reservation, frontier)
                state.reservation = None
                state.requester = frontier
                self._wait_frontier(op, state, frontier, _retry_after_frontier)
            return
        state.result = None
        self._observe_and_acquire(op, state, False)

    def _wait_frontier(self, op: Any, state: _AllocaState, frontier: Frontier, fn: Any) -> None:
        self._pending[op] = state
        try:
            tracker = self._tracker_for(frontier)
            handle = tracker.wait(frontier, fn, (self, op))
            if handle is not None:
                state.handle = (tracker, handle)
        except HalError as exc:  # an axis this device does not know (a foreign pool)
            if self._pending.pop(op, None) is not None:
                self._fail(op, state, exc)

    def _commit(self, op: Any, state: _AllocaState) -> None:
        pool = state.pool
        reservation = state.reservation
        buffer = op.target
        try:
            storage = pool.wrap_reservation(reservation)
        except Exception as exc:  # e.g. the pool was closed while this alloca waited
            state.reservation = None
            self._fail(op, state, FailedPreconditionError(
                f"{pool.trace_name}: could not commit the reserved memory ({exc}); keep a "
                "pool open while queue_alloca work uses it"))
            return
        buffer.commit(storage)
        transient = TransientAllocation(pool, reservation)
        if buffer.placement_flags & PlacementFlags.INDETERMINATE_LIFETIME:
            # No dealloca will come: the memory goes back when the buffer is dropped.
            transient.finalizer = weakref.finalize(buffer, _release_dropped, pool, reservation)
        buffer.pool_state = transient
        op.data = None
        state.queue.alloca_done(state.sub, None)

    def _fail(self, op: Any, state: _AllocaState, error: HalError) -> None:
        if state.reservation is not None:
            frontier = state.info.wait_frontier if state.result == _NEEDS_WAIT else None
            state.pool.release_reservation(state.reservation, frontier)
            state.reservation = None
        op.data = None
        state.queue.alloca_done(state.sub, error)

    # -- dealloca --------------------------------------------------------------------------

    def dealloca(self, op: Any, queue: Any) -> None:
        """Decommit ``op.target`` and give its memory back; runs at the dealloca's epoch
        (FAILED_PRECONDITION when the buffer is not committed)."""
        buffer = op.target
        if not buffer.is_committed:
            raise FailedPreconditionError(
                "queue_dealloca of a buffer that is not committed (its alloca failed or has "
                "not completed, or it was deallocated already)")
        transient = buffer.pool_state
        storage = buffer.decommit()
        if transient.__class__ is TransientAllocation:
            buffer.pool_state = None
            if transient.finalizer is not None:
                transient.finalizer.detach()
            # Everything the queue ran up to its completed epoch (this dealloca's epoch or
            # later) is done with the memory.
            done = queue.completed_epoch
            transient.pool.release_reservation(
                transient.reservation,
                Frontier.single(self.queue_axis(queue.index), done) if done else None)
        else:
            storage.release()

    # -- lifetime --------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        if self._closed:
            return
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
        self.default_pools.close()


# -- callbacks (module functions: fired through the notification / tracker trampolines) ----


def _retry_parked(arg: Any, _status: Any) -> None:
    pools, op = arg
    state = pools._pending.pop(op, None)
    if state is None:
        return
    state.handle = None
    if pools._closed:
        pools._fail(op, state, CancelledError("device closed"))
        return
    pools._observe_and_acquire(op, state, True)


def _hidden_wait_done(arg: Any, status: HalError | None) -> None:
    pools, op = arg
    state = pools._pending.pop(op, None)
    if state is None:
        return
    if status is not None:
        pools._fail(op, state, status)
    else:
        pools._commit(op, state)


def _retry_after_frontier(arg: Any, status: HalError | None) -> None:
    pools, op = arg
    state = pools._pending.pop(op, None)
    if state is None:
        return
    if status is not None:
        pools._fail(op, state, status)
        return
    state.result = None
    pools._observe_and_acquire(op, state, True)


def _release_dropped(pool: Pool, reservation: Any) -> None:
    if reservation.is_live and not pool._closed:
        pool.release_reservation(reservation, None)
