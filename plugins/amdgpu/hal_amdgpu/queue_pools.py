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

The alloca state machine is ``hal_core.backend.QueueAllocaMachine`` (IREE's rules, shared
with the local CPU devices); this module supplies its hooks:

* ``start`` (waits reached, from the host queue's admission) attaches the submission and
  queue to the op's state, then runs the machine. The requester frontier is ``{queue
  axis: completed epoch}``, so blocks this queue released and retired are reused without
  a wait.
* Completion calls ``queue.alloca_done(sub, error)``, which publishes the NOP carrying
  the op's signals (or fails them). No thread blocks; no lock is held while pools,
  trackers or callbacks run.

``dealloca`` runs as a host action at the dealloca's epoch (everything before it on the
queue has completed): it decommits the buffer and releases the reservation with the death
frontier ``{queue axis: completed epoch}``. ``close`` cancels parked allocas (CANCELLED)
and closes the default pools.
"""

from __future__ import annotations

from typing import Any, cast

from hal_core import HalError
from hal_core.backend import (
    AllocaState,
    Frontier,
    Notification,
    QueueAllocaMachine,
    TransientAllocation,
)
from hal_core.pool import (
    DEFAULT_PRIORITY_OVERSIZED,
    DEFAULT_PRIORITY_TLSF,
    PassthroughPool,
    PoolSet,
    QueuePoolBackend,
    TlsfPool,
)

from .slab_provider import HsaSlabProvider, HsaSlabStorage

__all__ = ["AmdgpuQueuePools", "TransientAllocation", "DEFAULT_TLSF_SLAB_SIZE"]

DEFAULT_TLSF_SLAB_SIZE = 16 << 20
"""Slab size (and largest suballocation) of the default TLSF pools; larger allocas go to
the passthrough pools."""
DEFAULT_POOL_ALIGNMENT = 64


class _AmdgpuAllocaState(AllocaState):
    """``AllocaState`` plus the host queue submission and queue it completes on."""

    __slots__ = ("sub", "queue")

    def __init__(self, pool: Any) -> None:
        AllocaState.__init__(self, pool)
        self.sub: Any = None
        self.queue: Any = None


class AmdgpuQueuePools(QueueAllocaMachine):
    """Default pool set, frontier queries and alloca state machine of one host queue set.
    Thread-safe. ``close`` is idempotent."""

    def __init__(
        self, qset: Any, allocator: Any, *, tlsf_slab_size: int = DEFAULT_TLSF_SLAB_SIZE
    ) -> None:
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
            self.default_pools.register(
                DEFAULT_PRIORITY_TLSF,
                TlsfPool(
                    provider,
                    range_length=tlsf_slab_size,
                    alignment=min(DEFAULT_POOL_ALIGNMENT, provider.slab_alignment),
                    notification=qset_notification,
                    epoch_query=epoch_query,
                    trace_name=f"amdgpu heap {provider.heap} default TLSF",
                ),
            )
        for provider in self.providers:
            self.default_pools.register(
                DEFAULT_PRIORITY_OVERSIZED,
                PassthroughPool(
                    provider,
                    notification=qset_notification,
                    epoch_query=epoch_query,
                    trace_name=f"amdgpu heap {provider.heap} oversized passthrough",
                ),
            )
        super().__init__()

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
        return QueuePoolBackend(
            slab_provider=provider,
            notification=self.notification,
            epoch_query=self.query_epoch,
            axis=self.queue_axis(queue_index),
            queue_index=queue_index,
        )

    # -- QueueAllocaMachine hooks ---------------------------------------------------------

    _state_type = _AmdgpuAllocaState

    def _complete(self, op: Any, state: Any, error: HalError | None) -> None:
        state.queue.alloca_done(state.sub, error)

    def _retired_epoch(self, queue_index: int) -> int:
        return self.qset.queues[queue_index].completed_epoch

    def _empty_storage(self) -> HsaSlabStorage:
        return HsaSlabStorage.empty(0)

    def _dealloca_epoch(self, op: Any, queue: Any) -> int:
        # ``queue`` is the host queue running the dealloca as a host action at its epoch:
        # everything it ran up to its completed epoch (this dealloca's epoch or later) is
        # done with the memory.
        return queue.completed_epoch

    def _close_backend(self) -> None:
        self.default_pools.close()

    def start(self, sub: Any, queue: Any) -> None:
        """The op's waits are reached (from the host queue's admission): reserve (unless
        ``prepare`` did), then commit now, after a hidden frontier wait, or after parking.
        Ends in ``queue.alloca_done``."""
        op = sub.op
        try:
            # started_state builds this machine's _state_type.
            state = cast(_AmdgpuAllocaState, self.started_state(op))
        except HalError as exc:
            queue.alloca_done(sub, exc)
            return
        state.sub = sub
        state.queue = queue
        self.begin(op, state)
