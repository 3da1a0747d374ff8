"""Queue axes, the frontier tracker and ``queue_alloca`` / ``queue_dealloca`` for local
CPU devices.

Each queue owns one frontier axis in the device's ``FrontierTracker``; its
``QueueTimeline`` publishes every epoch it retires in order (lock-free, under the
timeline's own lock) and advances the tracker only when a waiter needs that epoch. Pools
use the tracker's ``query_epoch`` as their epoch query.

``queue_alloca`` (IREE's local-task rules):

* The buffer exists at once (placement ASYNCHRONOUS, one queue bit); memory is reserved
  when the op's waits are reached. With no pending waits the reservation is tried during
  the call, so a refusal (OK_NEEDS_WAIT without ``ALLOW_POOL_WAIT_FRONTIER``) raises
  RESOURCE_EXHAUSTED and no buffer is returned.
* The requester frontier is ``{own axis: epoch retired}``: blocks this queue itself
  released and retired are reused without a wait (same-queue elision).
* OK / OK_FRESH: commit and signal. OK_NEEDS_WAIT: with ``ALLOW_POOL_WAIT_FRONTIER`` a
  hidden tracker wait on the block's death frontier, then commit; without it the block is
  released again (keeping its frontier) and the op fails RESOURCE_EXHAUSTED.
* EXHAUSTED / OVER_BUDGET: the op parks on the pool's notification (no thread blocks) and
  retries on the next release. A retry that meets a block still in flight elsewhere (and
  was not allowed a hidden wait) hands the block back and retries once the tracker proves
  its frontier reached, asking with that frontier, so it never uses memory early.

``queue_dealloca`` decommits the buffer and releases its reservation with the queue's
completion frontier ``{queue axis: epoch retired when it runs}`` (see ``dealloca``).

Invariants: every parked or waiting alloca is in ``_pending`` so ``close`` can cancel it;
an op is completed exactly once (whoever removes it from ``_pending``); no lock is held
while pools, trackers or callbacks run.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from hal_core import (
    AllocaFlags,
    CancelledError,
    Frontier,
    FrontierTracker,
    HalError,
    Notification,
    PlacementFlags,
    StatusCode,
    axis_make_queue,
)
from hal_core._status import error_for
from hal_core.backend import HostStorage, QueueOp
from hal_core.pool import (
    DEFAULT_PRIORITY_OVERSIZED,
    DEFAULT_PRIORITY_TLSF,
    AcquireResult,
    CpuSlabProvider,
    PassthroughPool,
    Pool,
    PoolSet,
    QueuePoolBackend,
    ReserveFlags,
    TlsfPool,
)

__all__ = ["QueuePools", "TransientAllocation", "DEFAULT_TLSF_SLAB_SIZE"]

DEFAULT_TLSF_SLAB_SIZE = 16 << 20
"""Slab size (and largest suballocation) of the default TLSF pool; larger allocas go to
the passthrough catch-all."""
DEFAULT_POOL_ALIGNMENT = 64

_OK = AcquireResult.OK
_OK_FRESH = AcquireResult.OK_FRESH
_NEEDS_WAIT = AcquireResult.OK_NEEDS_WAIT
_ALLOW_POOL_WAIT = AllocaFlags.ALLOW_POOL_WAIT_FRONTIER
_ALLOW = ReserveFlags.ALLOW_WAIT_FRONTIER
_EMPTY = np.zeros(0, dtype=np.uint8)


class TransientAllocation:
    """``Buffer.pool_state`` of a committed ``queue_alloca`` buffer: the pool and
    reservation its memory came from."""

    __slots__ = ("pool", "reservation", "finalizer")

    def __init__(self, pool: Pool, reservation: Any) -> None:
        self.pool = pool
        self.reservation = reservation
        self.finalizer: Any = None


class _AllocaState:
    """Per-op progress of an alloca (``op.data`` while it is in flight)."""

    __slots__ = ("pool", "result", "reservation", "info", "handle", "requester")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.result: AcquireResult | None = None
        self.reservation: Any = None
        self.info: Any = None
        # (tracker, waiter) of a frontier wait, or a notification park handle.
        self.handle: Any = None
        self.requester: Frontier | None = None


class QueuePools:
    """The tracker, queue axes, default pool set and alloca state machine of one device.

    Thread-safe. Owned by ``LocalDeviceBackend``; ``close`` (idempotent) cancels parked
    allocas with CANCELLED, closes the tracker and the default pools.
    """

    def __init__(self, backend: Any, *, tlsf_slab_size: int = DEFAULT_TLSF_SLAB_SIZE) -> None:
        self.backend = backend
        queues = backend.queues
        self.tracker = FrontierTracker(axis_capacity=max(256, len(queues)))
        self.axes = [axis_make_queue(1, 0, 0, q.index) for q in queues]
        for timeline, axis in zip(queues, self.axes):
            self.tracker.register_axis(axis)
            timeline.bind_axis(self.tracker, axis)
        self._own_epochs = self.tracker.published_epochs
        self._group_epochs: dict[int, int] | None = None
        self.provider = CpuSlabProvider()
        self.notification = Notification()
        epoch_query = self.query_epoch
        self.default_pools = PoolSet()
        self.default_pools.register(
            DEFAULT_PRIORITY_TLSF,
            TlsfPool(
                self.provider,
                range_length=tlsf_slab_size,
                alignment=DEFAULT_POOL_ALIGNMENT,
                notification=self.notification,
                epoch_query=epoch_query,
                trace_name=f"{backend.name} default TLSF",
            ),
        )
        self.default_pools.register(
            DEFAULT_PRIORITY_OVERSIZED,
            PassthroughPool(
                self.provider,
                notification=self.notification,
                epoch_query=epoch_query,
                trace_name=f"{backend.name} oversized passthrough",
            ),
        )
        self._pending: dict[QueueOp, _AllocaState] = {}
        self._group: Any = None
        self._closed = False

    # -- backend-tier queries ------------------------------------------------------------

    def query_epoch(self, axis: int, epoch: int) -> bool:
        """The pools' epoch query: has ``axis`` (one of this device's queue axes, in its
        own tracker or in its device group's) reached ``epoch``? Lock-free."""
        if self._own_epochs.get(axis, 0) >= epoch:
            return True
        group = self._group_epochs
        return group is not None and group.get(axis, 0) >= epoch

    def queue_axis(self, queue_index: int) -> int:
        """The axis frontiers name this queue by: its device-group axis while the device
        is a group member (so peers can wait on it), else its own-tracker axis."""
        group = self._group
        return self.axes[queue_index] if group is None else group.queue_axis(queue_index)

    def _tracker_for(self, frontier: Frontier) -> FrontierTracker:
        group = self._group
        if group is not None:
            known = self._group_epochs
            if all(axis in known for axis, _epoch in frontier):
                return group.tracker
        return self.tracker

    def query_queue_pool_backend(self, queue_index: int) -> QueuePoolBackend:
        """As IREE: only for devices in a device group (FAILED_PRECONDITION otherwise)."""
        if self._group is None:
            raise error_for(
                StatusCode.FAILED_PRECONDITION,
                f"{self.backend.name}: query_queue_pool_backend needs the device to be in a "
                "device group (it hands out the group's frontier axes); create one with "
                "DeviceGroup.from_devices([device], owns_devices=False)",
            )
        return QueuePoolBackend(
            slab_provider=self.provider,
            notification=self.notification,
            epoch_query=self.query_epoch,
            axis=self.queue_axis(queue_index),
            queue_index=queue_index,
        )

    def assign_topology_info(self, info: Any) -> None:
        """Also publish each queue's epochs on a device group's tracker (None: stop).
        While a member, frontiers name the group axes."""
        old = self._group
        if old is not None:
            for timeline in self.backend.queues:
                timeline.unbind_axis(old.tracker)
        if info is None:
            self._group = None
            self._group_epochs = None
            return
        for timeline in self.backend.queues:
            axis = info.queue_axis(timeline.index)
            timeline.bind_axis(info.tracker, axis)
            if timeline.retired:
                info.tracker.advance(axis, timeline.retired)
        self._group_epochs = info.tracker.published_epochs
        self._group = info

    # -- alloca ----------------------------------------------------------------------------

    def _select(self, op: QueueOp) -> Pool:
        pool, params = op.extra
        if pool is None:
            return self.default_pools.select_or_raise(params, op.length)
        return pool

    def prepare(self, op: QueueOp) -> None:
        """Called from ``submit_alloca`` before the op is queued. Picks the pool (errors
        raise now) and, when the op has nothing to wait for, reserves at once so a refusal
        raises RESOURCE_EXHAUSTED to the caller with nothing queued."""
        if op.length == 0:
            # Nothing to reserve: the buffer commits to empty storage when ready.
            op.data = _AllocaState(op.extra[0])
            return
        pool = self._select(op)
        caps = pool.query_capabilities()
        if caps.max_allocation_size and op.length > caps.max_allocation_size:
            raise error_for(
                StatusCode.OUT_OF_RANGE,
                f"alloca of {op.length} bytes exceeds the pool's largest reservation "
                f"({caps.max_allocation_size} bytes); pass pool=None to route it through "
                "the device's default pool set",
            )
        alignment = op.extra[1].min_alignment
        if alignment > caps.max_alignment:
            raise error_for(
                StatusCode.INVALID_ARGUMENT,
                f"alloca alignment {alignment} exceeds what the pool guarantees "
                f"({caps.max_alignment} bytes)",
            )
        state = _AllocaState(pool)
        op.data = state
        for sem, value in op.waits:
            if sem._failure is not None or sem._value < value:
                return
        self._acquire(op, state)
        if state.result == _NEEDS_WAIT and not op.flags & _ALLOW_POOL_WAIT:
            # Hand the block back with its death frontier, then refuse the call.
            pool.release_reservation(state.reservation, state.info.wait_frontier)
            op.data = None
            raise error_for(
                StatusCode.RESOURCE_EXHAUSTED,
                f"{pool.trace_name}: the only free memory is still in use by other queue "
                "work (death frontier not reached); pass "
                "AllocaFlags.ALLOW_POOL_WAIT_FRONTIER to let the queue wait for it",
            )

    def abandon(self, op: QueueOp) -> None:
        """Undo ``prepare`` when queueing the op failed after it (nothing was queued)."""
        state = op.data
        if state is not None and state.reservation is not None and state.result != _NEEDS_WAIT:
            state.pool.release_reservation(state.reservation, None)
        elif state is not None and state.reservation is not None:
            state.pool.release_reservation(state.reservation, state.info.wait_frontier)
        op.data = None

    def _acquire(self, op: QueueOp, state: _AllocaState) -> None:
        timeline = self.backend.queues[op.queue]
        requester = state.requester
        retired = timeline.retired
        if retired:
            own = Frontier.single(self.queue_axis(op.queue), retired)
            if requester is None:
                requester = own
            else:
                requester = requester.copy()
                requester.merge(own)
        # The pool may always answer OK_NEEDS_WAIT; the alloca flag decides what the
        # queue does with it (_decide), as IREE's local-task does.
        params = op.extra[1]
        state.result, state.reservation, state.info = state.pool.acquire_reservation(
            op.length, params.min_alignment, requester, _ALLOW
        )

    def start(self, op: QueueOp) -> None:
        """The op's waits are reached: reserve (unless ``prepare`` did), then commit now,
        after a hidden frontier wait, or after parking on the pool notification."""
        state = getattr(op, "data", None)  # a slot: unset unless prepare() ran
        if state.__class__ is not _AllocaState:
            # Queued without prepare() (a front end that does not call submit_alloca).
            try:
                state = _AllocaState(self._select(op) if op.length else op.extra[0])
            except HalError as exc:
                self.backend._finish(op, exc)
                return
            op.data = state
        if op.length == 0:
            op.target.commit(HostStorage(_EMPTY))
            self.backend._finish(op, None)
            return
        if state.result is None:
            self._observe_and_acquire(op, state, False)
            return
        self._decide(op, state, False)

    def _observe_and_acquire(self, op: QueueOp, state: _AllocaState, retrying: bool) -> None:
        notification = state.pool.notification
        # Token protocol: observe before trying, so a release racing with the attempt
        # either shows in the attempt or moves the epoch past the token.
        token = notification.begin_observe()
        try:
            try:
                self._acquire(op, state)
            except HalError as exc:  # a pool refusing the request (or a provider error)
                state.reservation = None
                self._fail(op, state, exc)
                return
            result = state.result
            if result == AcquireResult.EXHAUSTED or result == AcquireResult.OVER_BUDGET:
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

    def _decide(self, op: QueueOp, state: _AllocaState, retrying: bool) -> None:
        result = state.result
        if result == _OK or result == _OK_FRESH:
            self._commit(op, state)
            return
        if result == _NEEDS_WAIT:
            frontier = state.info.wait_frontier
            if op.flags & _ALLOW_POOL_WAIT:
                self._wait_frontier(op, state, frontier, _hidden_wait_done)
            elif not retrying:
                self._fail(
                    op,
                    state,
                    error_for(
                        StatusCode.RESOURCE_EXHAUSTED,
                        f"{state.pool.trace_name}: the only free memory is still in use by "
                        "other queue work; pass AllocaFlags.ALLOW_POOL_WAIT_FRONTIER to let "
                        "the queue wait for it",
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

    def _wait_frontier(self, op: QueueOp, state: _AllocaState, frontier: Frontier, fn: Any) -> None:
        self._pending[op] = state
        try:
            tracker = self._tracker_for(frontier)
            handle = tracker.wait(frontier, fn, (self, op))
            if handle is not None:
                state.handle = (tracker, handle)
        except HalError as exc:  # an axis this device does not know (a foreign pool)
            if self._pending.pop(op, None) is not None:
                self._fail(op, state, exc)

    def _commit(self, op: QueueOp, state: _AllocaState) -> None:
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
                error_for(
                    StatusCode.FAILED_PRECONDITION,
                    f"{pool.trace_name}: could not commit the reserved memory ({exc}); keep "
                    "a pool open while queue_alloca work uses it",
                ),
            )
            return
        buffer.commit(storage)
        transient = TransientAllocation(pool, reservation)
        if buffer.placement_flags & PlacementFlags.INDETERMINATE_LIFETIME:
            # No dealloca will come: the memory goes back when the buffer is dropped.
            transient.finalizer = weakref.finalize(buffer, _release_dropped, pool, reservation)
        buffer.pool_state = transient
        op.data = None
        self.backend._finish(op, None)

    def _fail(self, op: QueueOp, state: _AllocaState, error: HalError) -> None:
        if state.reservation is not None:
            frontier = state.info.wait_frontier if state.result == _NEEDS_WAIT else None
            state.pool.release_reservation(state.reservation, frontier)
            state.reservation = None
        op.data = None
        self.backend._finish(op, error)

    # -- dealloca --------------------------------------------------------------------------

    def dealloca(self, op: QueueOp) -> None:
        """Decommit ``op.target`` and release its reservation with the queue's completion
        frontier ``{queue axis: epoch retired now}`` (raises FAILED_PRECONDITION when not
        committed).

        Why not the dealloca's own epoch (as an in-order hardware queue would use): local
        queues complete operations out of order, so the retire watermark can only pass
        the dealloca's epoch after every earlier operation of the queue - including an
        alloca parked waiting for exactly this memory, which would then wait for itself.
        The dealloca runs only once its waits are reached, i.e. once the work ordered
        before it is done, so the watermark at this moment is a sound death frontier.
        """
        buffer = op.target
        if not buffer.is_committed:
            raise error_for(
                StatusCode.FAILED_PRECONDITION,
                "queue_dealloca of a buffer that is not committed (its alloca failed or "
                "has not completed, or it was deallocated already)",
            )
        transient = buffer.pool_state
        storage = buffer.decommit()
        if transient.__class__ is TransientAllocation:
            buffer.pool_state = None
            if transient.finalizer is not None:
                transient.finalizer.detach()
            retired = self.backend.queues[op.queue].retired
            transient.pool.release_reservation(
                transient.reservation,
                Frontier.single(self.queue_axis(op.queue), retired) if retired else None,
            )
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
        self.tracker.close()
        self.default_pools.close()


# -- callbacks (module functions: fired through the semaphore trampoline) -------------------


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
