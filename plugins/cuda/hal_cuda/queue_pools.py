"""Queue axes, retirement watermarks and ``queue_alloca`` / ``queue_dealloca`` of a CUDA
device through the ``hal_core.pool`` substrate.

Slabs: ``CudaSlabProvider`` acquires device memory (``cuMemAlloc``) or pinned host memory
(``cuMemHostAlloc``) per heap and hands out views of it that free nothing (the pool owns
reservations, the provider owns slabs). The default ``PoolSet`` has, per heap, a TLSF pool
(16 MiB slabs, priority ``DEFAULT_PRIORITY_TLSF``) and a passthrough catch-all (priority
``DEFAULT_PRIORITY_OVERSIZED``); device-local pools are registered first, so a request
lands where the allocator would place it (host memory for host-visible types or mapping
usages).

Frontiers: each queue (stream) owns one axis in the device's ``FrontierTracker``. Ops get
an epoch per queue at submit and complete out of order (host deferral, several threads),
so each queue keeps a ``RetireWatermark``: the highest epoch below which every op has
completed, published to the tracker as it moves. The alloca machine
(``hal_core.backend.QueueAllocaMachine``) uses ``{queue axis: watermark}`` as requester
frontier (same-queue reuse without a wait) and as dealloca death frontier (a dealloca runs
once its waits are reached, so the work ordered before it is done; the watermark at that
moment is sound, and never names the dealloca itself, so an alloca parked for that memory
cannot wait on itself).

Invariants (the machine's): every parked alloca is in ``_pending`` so ``close`` cancels
it; an op completes exactly once; no lock is held while pools, trackers or callbacks run.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable

import numpy as np

from hal_core import (
    BufferUsage,
    FailedPreconditionError,
    HalError,
    InvalidArgumentError,
    MemoryType,
)
from hal_core.backend import (
    AllocaState,
    Frontier,
    FrontierTracker,
    Notification,
    QueueAllocaMachine,
    QueueOp,
    axis_make_queue,
)
from hal_core.pool import (
    DEFAULT_PRIORITY_OVERSIZED,
    DEFAULT_PRIORITY_TLSF,
    PassthroughPool,
    PoolSet,
    QueuePoolBackend,
    Slab,
    SlabProviderStats,
    TlsfPool,
)

from .cuda_api import CudaContext
from .memory import (
    DEVICE_ALIGNMENT,
    DEVICE_TYPE,
    HOST_TYPE,
    allocate_device,
    allocate_host,
)

_EMPTY = np.zeros(0, dtype=np.uint8)

DEFAULT_TLSF_SLAB_SIZE = 16 << 20
"""Slab size (and largest suballocation) of the default TLSF pools; larger allocas go to
the passthrough pools."""

_DEVICE_USAGE = BufferUsage.TRANSFER | BufferUsage.DISPATCH
_HOST_USAGE = (
    _DEVICE_USAGE
    | BufferUsage.MAPPING_SCOPED
    | BufferUsage.MAPPING_PERSISTENT
    | BufferUsage.MAPPING_ACCESS_RANDOM
    | BufferUsage.MAPPING_ACCESS_SEQUENTIAL_WRITE
)


class PoolStorage:
    """Buffer storage over part of a slab: ``address`` the device address, ``host_array``
    a uint8 view (None for device memory). ``release()`` runs the pool's release callback
    once (idempotent); it frees nothing, and nothing happens when it is collected (the
    pool and the alloca machine own the reservation)."""

    __slots__ = ("address", "nbytes", "host_array", "host_address", "_release_callback")

    def __init__(
        self,
        address: int,
        nbytes: int,
        host_array: Any,
        host_address: int,
        release_callback: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.nbytes = nbytes
        self.host_array = host_array
        self.host_address = host_address
        self._release_callback = release_callback

    def release(self) -> None:
        callback, self._release_callback = self._release_callback, None
        if callback is not None:
            callback()


class CudaSlabProvider:
    """Slabs of device memory (``host=False``) or pinned host memory (``host=True``) of one
    GPU. ``acquire_slab`` raises RESOURCE_EXHAUSTED when CUDA has not got the memory.
    Thread-safe (one lock around the counters, never held while CUDA allocates)."""

    def __init__(self, ctx: CudaContext, host: bool, max_slab_size: int) -> None:
        self.ctx = ctx
        self.host = host
        self.slab_alignment = DEVICE_ALIGNMENT
        self.max_slab_size = max_slab_size
        self._type = MemoryType(HOST_TYPE if host else DEVICE_TYPE)
        self._usage = BufferUsage(_HOST_USAGE if host else _DEVICE_USAGE)
        self._lock = threading.Lock()
        self._stats = [0, 0, 0, 0]

    def acquire_slab(self, min_length: int) -> Slab:
        if min_length <= 0:
            raise InvalidArgumentError(f"slab length must be > 0, got {min_length}")
        if self.host:
            storage = allocate_host(self.ctx, min_length)
        else:
            storage = allocate_device(self.ctx, min_length, zero=False)
        with self._lock:
            self._stats[0] += 1
            self._stats[2] += min_length
        return Slab(storage, min_length)

    def release_slab(self, slab: Slab) -> None:
        storage, slab.storage = slab.storage, None
        if storage is None:
            return
        storage.release()
        with self._lock:
            self._stats[1] += 1
            self._stats[3] += slab.length

    def wrap(
        self,
        slab: Slab,
        offset: int,
        length: int,
        release_callback: Callable[[], None] | None = None,
    ) -> PoolStorage:
        base = slab.storage
        host = base.host_array
        view = host[offset : offset + length] if host is not None else None
        host_address = base.host_address + offset if host is not None else 0
        return PoolStorage(base.address + offset, length, view, host_address, release_callback)

    def query_properties(self) -> tuple[MemoryType, BufferUsage]:
        return self._type, self._usage

    def query_stats(self) -> SlabProviderStats:
        with self._lock:
            a, r, ba, br = self._stats
        return SlabProviderStats(a, r, ba, br)

    def trim(self) -> None:
        return None


class RetireWatermark:
    """Epochs of one queue: ``next_epoch`` at submit, ``retire`` at completion (any order).
    ``retired`` is the highest epoch with every epoch up to it retired (read lock-free).

    Publishing to the device's tracker costs a lock and a scan per rise, and only frontier
    waits need it, so it starts at the first such wait (``start_publishing``, which also
    catches the tracker up) and continues from then on; a device group's tracker is always
    published to. Racing publishers are harmless (max wins in the tracker), and a rise is
    never lost: ``retire`` sets ``retired`` before it reads the flag, and
    ``start_publishing`` sets the flag before it reads ``retired``. Thread-safe; the lock
    is never held while a tracker runs its waiters."""

    __slots__ = (
        "retired",
        "next_epoch",
        "publish",
        "_done",
        "_lock",
        "_tracker",
        "_axis",
        "_group",
    )

    def __init__(self, tracker: FrontierTracker, axis: int) -> None:
        self.retired = 0
        self.next_epoch = itertools.count(1).__next__  # atomic: one C call
        self.publish = False
        self._done: set[int] = set()
        self._lock = threading.Lock()
        self._tracker = tracker
        self._axis = axis
        self._group: tuple[Any, int] | None = None

    def start_publishing(self) -> None:
        if not self.publish:
            self.publish = True
            self._tracker.advance(self._axis, self.retired)

    def bind_group(self, tracker: Any, axis: int) -> None:
        """Also publish to a device group's tracker on ``axis`` (caught up at once)."""
        with self._lock:
            self._group = (tracker, axis)
            mark = self.retired
        if mark:
            tracker.advance(axis, mark)

    def unbind_group(self) -> None:
        with self._lock:
            self._group = None

    def retire(self, epoch: int) -> None:
        with self._lock:
            if epoch != self.retired + 1:
                self._done.add(epoch)
                return
            mark = epoch
            done = self._done
            while mark + 1 in done:
                mark += 1
                done.discard(mark)
            self.retired = mark
            group = self._group
        if self.publish:
            self._tracker.advance(self._axis, mark)
        if group is not None:
            group[0].advance(group[1], mark)


class CudaQueuePools(QueueAllocaMachine):
    """The tracker, queue watermarks, default pool set and alloca state machine of one
    CUDA device. Thread-safe; ``close`` (idempotent) cancels parked allocas CANCELLED,
    then closes the tracker and the default pools."""

    def __init__(
        self,
        ctx: CudaContext,
        queue_count: int,
        max_allocation_size: int,
        name: str,
        complete: Callable[[QueueOp, HalError | None], None],
        *,
        tlsf_slab_size: int = DEFAULT_TLSF_SLAB_SIZE,
    ) -> None:
        self._finish = complete
        self.tracker = FrontierTracker(axis_capacity=max(256, queue_count))
        self.axes = [axis_make_queue(1, 0, 0, q) for q in range(queue_count)]
        self.watermarks = []
        for axis in self.axes:
            self.tracker.register_axis(axis)
            self.watermarks.append(RetireWatermark(self.tracker, axis))
        self._by_axis = dict(zip(self.axes, self.watermarks))
        self.notification = Notification()
        self.providers = [
            CudaSlabProvider(ctx, False, max_allocation_size),
            CudaSlabProvider(ctx, True, max_allocation_size),
        ]
        self.default_pools = PoolSet()
        for provider in self.providers:
            kind = "host" if provider.host else "device"
            self.default_pools.register(
                DEFAULT_PRIORITY_TLSF,
                TlsfPool(
                    provider,
                    range_length=tlsf_slab_size,
                    alignment=DEVICE_ALIGNMENT,
                    notification=self.notification,
                    epoch_query=self.query_epoch,
                    trace_name=f"{name} default {kind} TLSF",
                ),
            )
        for provider in self.providers:
            kind = "host" if provider.host else "device"
            self.default_pools.register(
                DEFAULT_PRIORITY_OVERSIZED,
                PassthroughPool(
                    provider,
                    notification=self.notification,
                    epoch_query=self.query_epoch,
                    trace_name=f"{name} oversized {kind} passthrough",
                ),
            )
        self._name = name
        self._group: Any = None
        # Called once by ``close`` after the default pools (other allocators of the device).
        self.on_close: list[Callable[[], None]] = []
        self._group_epochs: dict[int, int] | None = None
        super().__init__()

    def query_epoch(self, axis: int, epoch: int) -> bool:
        """The pools' epoch query: has ``axis`` (a queue axis of this device, in its own
        tracker or its device group's) reached ``epoch``? Lock-free."""
        own = self._by_axis.get(axis)
        if own is not None and own.retired >= epoch:
            return True
        group = self._group_epochs
        return group is not None and group.get(axis, 0) >= epoch

    def queue_axis(self, queue_index: int) -> int:
        """The axis frontiers name a queue by: its device-group axis while the device is a
        group member (so peers can wait on it), else its own-tracker axis."""
        group = self._group
        return self.axes[queue_index] if group is None else group.queue_axis(queue_index)

    def _tracker_for(self, frontier: Frontier) -> FrontierTracker:
        for watermark in self.watermarks:  # a frontier wait: the tracker must see rises
            watermark.start_publishing()
        group = self._group
        if group is not None:
            known = self._group_epochs
            if known is not None and all(axis in known for axis, _epoch in frontier):
                return group.tracker
        return self.tracker

    def query_queue_pool_backend(self, queue_index: int) -> QueuePoolBackend:
        """As IREE: only for devices in a device group (FAILED_PRECONDITION otherwise).
        User pools get device-local slabs."""
        if self._group is None:
            raise FailedPreconditionError(
                f"{self._name}: query_queue_pool_backend needs the device to be in a device "
                "group (it hands out the group's frontier axes); create one with "
                "DeviceGroup.from_devices([device], owns_devices=False)"
            )
        return QueuePoolBackend(
            slab_provider=self.providers[0],
            notification=self.notification,
            epoch_query=self.query_epoch,
            axis=self.queue_axis(queue_index),
            queue_index=queue_index,
        )

    def assign_topology_info(self, info: Any) -> None:
        """Join (publish each queue's watermark on the group's tracker too; frontiers then
        name the group axes) or leave (None) a device group."""
        for watermark in self.watermarks:
            watermark.unbind_group()
        if info is None:
            self._group = None
            self._group_epochs = None
            return
        for index, watermark in enumerate(self.watermarks):
            watermark.bind_group(info.tracker, info.queue_axis(index))
        self._group_epochs = info.tracker.published_epochs
        self._group = info

    # -- QueueAllocaMachine hooks -----------------------------------------------------------

    def _complete(self, op: Any, state: AllocaState, error: HalError | None) -> None:
        self._finish(op, error)

    def _retired_epoch(self, queue_index: int) -> int:
        return self.watermarks[queue_index].retired

    def _dealloca_epoch(self, op: Any, queue: Any) -> int:
        return self.watermarks[op.queue].retired

    def _empty_storage(self) -> PoolStorage:
        return PoolStorage(0, 0, _EMPTY, 0)

    def _close_backend(self) -> None:
        self.tracker.close()
        self.default_pools.close()
        for close in self.on_close:
            close()

    def start(self, op: QueueOp) -> None:
        """The op's waits are reached: reserve (unless ``prepare`` did), then commit now,
        after a hidden frontier wait, or after parking on the pool notification."""
        try:
            state = self.started_state(op)
        except HalError as exc:
            self._finish(op, exc)
            return
        self.begin(op, state)
