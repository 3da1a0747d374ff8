"""Queue axes, the frontier tracker and ``queue_alloca`` / ``queue_dealloca`` for local
CPU devices.

Each queue owns one frontier axis in the device's ``FrontierTracker``; its
``QueueTimeline`` publishes every epoch it retires in order (lock-free, under the
timeline's own lock) and advances the tracker only when a waiter needs that epoch. Pools
use the tracker's ``query_epoch`` as their epoch query.

``queue_alloca`` / ``queue_dealloca`` run the shared state machine
(``hal_core.backend.QueueAllocaMachine``, IREE's local-task rules); this module supplies
its hooks:

* The buffer exists at once (placement ASYNCHRONOUS, one queue bit); memory is reserved
  when the op's waits are reached (``start`` from the device's dispatch). With no pending
  waits the reservation is tried during the call, so a refusal raises RESOURCE_EXHAUSTED
  and no buffer is returned.
* The requester frontier is ``{own axis: epoch retired}`` (the ``QueueTimeline``'s
  ``retired`` watermark): blocks this queue itself released and retired are reused
  without a wait (same-queue elision).
* A committed or failed alloca completes through ``LocalDeviceBackend._finish``.
* ``queue_dealloca`` releases with the queue's completion frontier ``{queue axis: epoch
  retired when it runs}`` (see ``_dealloca_epoch`` for why not the dealloca's own epoch).
* ``close`` cancels parked allocas, then closes the tracker and the default pools.

The machine's invariants hold here: every parked or waiting alloca is in ``_pending`` so
``close`` can cancel it; an op is completed exactly once (whoever removes it from
``_pending``); no lock is held while pools, trackers or callbacks run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal_core import HalError, StatusCode, error_for
from hal_core.backend import (
    AllocaState,
    Frontier,
    FrontierTracker,
    HostStorage,
    Notification,
    QueueAllocaMachine,
    QueueOp,
    TransientAllocation,
    axis_make_queue,
)
from hal_core.pool import (
    DEFAULT_PRIORITY_OVERSIZED,
    DEFAULT_PRIORITY_TLSF,
    CpuSlabProvider,
    PassthroughPool,
    PoolSet,
    QueuePoolBackend,
    TlsfPool,
)

from .allocator import MAX_ALLOCATION_SIZE

__all__ = ["QueuePools", "TransientAllocation", "DEFAULT_TLSF_SLAB_SIZE"]

DEFAULT_TLSF_SLAB_SIZE = 16 << 20
"""Slab size (and largest suballocation) of the default TLSF pool; larger allocas go to
the passthrough catch-all."""
DEFAULT_POOL_ALIGNMENT = 64

_EMPTY = np.zeros(0, dtype=np.uint8)


class QueuePools(QueueAllocaMachine):
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
        # Slabs no larger than the host heap admits: a pool built on this provider
        # refuses what the heap would.
        self.provider = CpuSlabProvider(max_slab_size=MAX_ALLOCATION_SIZE)
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
        self._group: Any = None
        super().__init__()

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
            known = self._group_epochs  # None if the group is being unbound meanwhile
            if known is not None and all(axis in known for axis, _epoch in frontier):
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
        self.invalidate_lanes()  # the queue axes change
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

    # -- QueueAllocaMachine hooks ---------------------------------------------------------

    def _complete(self, op: QueueOp, state: AllocaState, error: HalError | None) -> None:
        self.backend._finish(op, error)

    def _straight_timelines(self) -> Any:
        """The hooks here are the backend's ``QueueTimeline``s' (see the base class)."""
        return self.backend.queues

    def _retired_epoch(self, queue_index: int) -> int:
        return self.backend.queues[queue_index].retired

    def _empty_storage(self) -> HostStorage:
        return HostStorage(_EMPTY)

    def _dealloca_epoch(self, op: QueueOp, queue: Any) -> int:
        """The queue's completion frontier: the epoch retired when the dealloca runs.

        Why not the dealloca's own epoch (as an in-order hardware queue would use): local
        queues complete operations out of order, so the retire watermark can only pass
        the dealloca's epoch after every earlier operation of the queue - including an
        alloca parked waiting for exactly this memory, which would then wait for itself.
        The dealloca runs only once its waits are reached, i.e. once the work ordered
        before it is done, so the watermark at this moment is a sound death frontier.
        """
        return self.backend.queues[op.queue].retired

    def _close_backend(self) -> None:
        self.tracker.close()
        self.default_pools.close()

    def start(self, op: QueueOp) -> None:
        """The op's waits are reached: reserve (unless ``prepare`` did), then commit now,
        after a hidden frontier wait, or after parking on the pool notification."""
        try:
            state = self.started_state(op)
        except HalError as exc:
            self.backend._finish(op, exc)
            return
        self.begin(op, state)
