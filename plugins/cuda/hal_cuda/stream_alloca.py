"""``alloca=stream``: ``queue_alloca`` / ``queue_dealloca`` of device-local memory through
CUDA's stream-ordered allocator, the measured alternative to hal_core's pools.

The device creates one ``cuMemPool`` on its GPU (``cuMemPoolCreate``) whose release
threshold is the largest value, so memory freed into it stays in the pool instead of
going back to the driver at the next synchronisation. An alloca of the default pool set
(``pool=None``) for device-local memory is stream work on its queue's stream:

* Waits: when every wait is reached or is a value this device's in-flight stream work will
  signal (the device's ``_inflight``), the op is stream work at once, like a fill: it
  waits on the device (nothing when the producer is on its own stream, which orders it
  already; ``cuStreamWaitEvent`` on the producer's event otherwise) and fails at
  completion with the failure of any semaphore it waited on there. Any other wait (the
  host's, another device's) sends the op through host deferral: parked until every wait
  is reached, then queued.
* An alloca puts ``cuMemAllocFromPoolAsync`` on its stream (after its device-side waits),
  the buffer commits at once (its address is known) and the op completes when the event
  recorded after it is reached. Work waiting on the alloca's signal is ordered after it on
  the device. An alloca that fails after committing (a semaphore it waited on the device
  failed; a device fault) decommits the buffer again; its memory goes back when the buffer
  is dropped (work that device-waited on the alloca ran regardless and may use it until
  it completes, and ops keep their buffers until then).
* An alloca with no waits allocates at the call: a pool that cannot grow raises
  RESOURCE_EXHAUSTED with nothing queued. One with waits fails its signals with
  RESOURCE_EXHAUSTED instead. Either way nothing is allocated.
* A dealloca decommits the buffer and puts ``cuMemFreeAsync`` on the dealloca's stream,
  after its waits: HAL semantics make them name every use of the buffer, so stream order
  plus the waited events order the free after those uses. One that fails before it is
  queued (a wait that had already failed, on the host path) leaves the buffer committed;
  one queued behind device-side waits frees regardless (its work ran, as every
  device-waited op's does) and fails with its producer's failure. When the buffer came
  from another queue, the free first waits (``cuStreamWaitEvent``) on an event recorded on
  the alloca's stream, so it is ordered after the allocation there. A buffer of another
  GPU of a logical device is freed on its own GPU's alloca stream.
* A committed buffer dropped without a dealloca (or an INDETERMINATE_LIFETIME one) frees
  its memory when its storage is collected; every op that used it has completed by then
  (ops keep their buffers until they complete).

Everything else keeps hal_core's pools: explicit pools, host-visible memory (CUDA's pools
here are device memory), zero-length allocas and their deallocas.

Routing: ``install`` puts this object's ``submit_alloca``, ``run_pool_op``, ``submit``
(which takes deallocas whose waits are device-side and hands every other op on) and
``complete`` (which undoes a failed alloca's commit) in the device's instance dict, in
front of the device's own (which they call), so a device with the default
``alloca=pools`` runs exactly the code it ran before.
"""

from __future__ import annotations

import weakref
from typing import Any

from hal_core import (
    FailedPreconditionError,
    HalError,
    InvalidArgumentError,
    QueueOpKind,
    UnimplementedError,
)
from hal_core.backend import (
    QueueOp,
    buffer_root,
    buffer_storage,
    commit_buffer,
    decommit_buffer,
    wait_reached,
)
from hal_core.profiling import MemoryEventType

from .cuda_api import CudaContext, check
from .memory import DEVICE_ALIGNMENT, CudaAllocatorBackend

ALLOCA_POOLS = "pools"
ALLOCA_STREAM = "stream"
ALLOCA_MODES = (ALLOCA_POOLS, ALLOCA_STREAM)
"""Values of the ``alloca`` device parameter (``cuda://0?alloca=stream``)."""

_RELEASE_THRESHOLD_KEEP = (1 << 64) - 1
CUDA_ERROR_OUT_OF_MEMORY = 2
_ALLOCA = QueueOpKind.ALLOCA
_DEALLOCA = QueueOpKind.DEALLOCA
_MEMORY_QUEUE_ALLOCA = int(MemoryEventType.QUEUE_ALLOCA)
_MEMORY_QUEUE_DEALLOCA = int(MemoryEventType.QUEUE_DEALLOCA)
_wants_host = CudaAllocatorBackend.wants_host


def parse_alloca_mode(raw: str) -> str:
    """The ``alloca`` device parameter's value (default ``pools``); INVALID_ARGUMENT naming
    the allowed values for any other."""
    if raw == "":
        return ALLOCA_POOLS
    if raw not in ALLOCA_MODES:
        raise InvalidArgumentError(
            f"device parameter alloca={raw!r} is not one of {', '.join(ALLOCA_MODES)} "
            "(pools: hal_core's pools over device slabs, the default; stream: CUDA's "
            "stream-ordered allocator)"
        )
    return raw


def _free_dropped(ctx: CudaContext, address: int) -> None:
    """Free a dropped buffer's memory (no op uses it any more: ops keep their buffers
    until they complete), on the null stream."""
    try:
        ctx.make_current()
        ctx.api.cuMemFreeAsync(address, 0)
    except Exception:  # at interpreter exit the driver may already be gone
        pass


class StreamStorage:
    """Storage of one stream-ordered allocation: ``address`` on ``ctx``'s GPU, allocated on
    ``stream`` (queue ``queue``). Collected while still owning its memory (the buffer was
    dropped without a dealloca), it frees it. ``take`` hands the memory to a dealloca."""

    __slots__ = (
        "address",
        "nbytes",
        "host_array",
        "host_address",
        "ctx",
        "stream",
        "queue",
        "_free",
        "__weakref__",
    )

    def __init__(self, ctx: CudaContext, address: int, nbytes: int, stream: Any, queue: int):
        self.address = address
        self.nbytes = nbytes
        self.host_array = None
        self.host_address = 0
        self.ctx = ctx
        self.stream = stream
        self.queue = queue
        self._free = weakref.finalize(self, _free_dropped, ctx, address)

    def release(self) -> None:
        """Free the memory now (idempotent); only for memory no queued work uses."""
        self._free()

    def take(self) -> bool:
        """Whether the memory was still owned; it no longer frees itself when collected."""
        return self._free.detach() is not None


def create_pool(ctx: CudaContext) -> Any:
    """A memory pool of device memory on ``ctx``'s GPU that keeps what is freed into it.
    UNIMPLEMENTED (naming the fix) when the GPU or driver has no memory pools."""
    api = ctx.api
    ctx.make_current()
    props = api.CUmemPoolProps()
    props.allocType = api.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
    props.location.type = api.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    props.location.id = ctx.ordinal
    try:
        pool = check(api.cuMemPoolCreate(props), "cuMemPoolCreate")
    except HalError as exc:
        raise UnimplementedError(
            f"alloca=stream needs CUDA memory pools on GPU {ctx.ordinal} ({exc}); open the "
            "device with alloca=pools (the default)"
        ) from None
    try:
        check(
            api.cuMemPoolSetAttribute(
                pool,
                api.CUmemPool_attribute.CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                api.cuuint64_t(_RELEASE_THRESHOLD_KEEP),
            ),
            "cuMemPoolSetAttribute(RELEASE_THRESHOLD)",
        )
    except BaseException:
        api.cuMemPoolDestroy(pool)
        raise
    return pool


class StreamOrderedAllocas:
    """The ``alloca=stream`` paths of one ``CudaDeviceBackend`` (see the module docstring).
    Thread-safe: the driver calls are, and per-op state lives on the op."""

    def __init__(self, backend: Any, pool: Any) -> None:
        self.backend = backend
        self.ctx: CudaContext = backend.ctx
        self.api = backend.ctx.api
        self.streams = backend.streams
        self.pool = pool  # from ``create_pool``; destroyed by ``close``
        # The device's own paths, bound before ``install`` shadows them.
        self._pools_submit_alloca = backend.submit_alloca
        self._pools_run = backend._run_pool_op
        self._device_submit = backend.submit
        self._device_complete = backend._complete
        self._inflight: dict[Any, tuple[int, Any, int, Any]] = backend._inflight

    def install(self) -> None:
        """Route the device's alloca and dealloca ops through this object."""
        routes = vars(self.backend)
        routes["submit_alloca"] = self.submit_alloca
        routes["_run_pool_op"] = self.run_pool_op
        routes["submit"] = self.submit
        routes["_complete"] = self.complete

    def close(self) -> None:
        """Destroy the pool (memory still held by live buffers stays valid until they free
        it, as ``cuMemPoolDestroy`` defers)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            try:
                self.ctx.make_current()
                self.api.cuMemPoolDestroy(pool)
            except HalError:
                pass

    @staticmethod
    def _stream_ordered(op: QueueOp) -> bool:
        return op.pool is None and op.length != 0 and not _wants_host(op.params)

    def submit_alloca(self, op: QueueOp) -> None:
        """``submit`` for ALLOCA: the alignment check at the call (hal_core's front door
        refused sizes past the GPU's memory), and with nothing to wait for the allocation
        itself, so exhaustion raises RESOURCE_EXHAUSTED with nothing queued."""
        if not self._stream_ordered(op):
            self._pools_submit_alloca(op)
            return
        alignment = op.params.min_alignment
        if alignment > DEVICE_ALIGNMENT:
            raise InvalidArgumentError(
                f"alloca alignment {alignment} exceeds what CUDA's stream-ordered allocator "
                f"guarantees ({DEVICE_ALIGNMENT} bytes); request at most {DEVICE_ALIGNMENT}"
            )
        op.alloca_state = None
        if not op.waits:
            op.alloca_state = self._allocate(op)
            try:
                self.backend.submit(op)
            except BaseException:
                storage, op.alloca_state = op.alloca_state, None
                if storage is not None:
                    storage.release()
                raise
            return
        # Through the device's ``submit`` attribute: profiling taps may shadow it.
        self.backend.submit(op)

    def submit(self, op: QueueOp) -> None:
        """The device's ``submit`` with one more case: a stream-ordered alloca, or a
        dealloca of a stream-ordered buffer, whose waits are all device-side is queued
        on its stream at once."""
        kind = op.kind
        if (kind is _ALLOCA or kind is _DEALLOCA) and op.waits and self._inflight:
            if kind is _ALLOCA:
                if self._stream_ordered(op) and self._queue_device_waited(op, self._alloca_work):
                    return
            else:
                try:
                    storage = buffer_storage(op.target)
                except HalError:
                    storage = None  # not committed (yet): the host path decides
                # Only this GPU's memory: another GPU's is freed on its own stream,
                # which these device-side waits would not order.
                if storage.__class__ is StreamStorage and storage.ctx is self.ctx:
                    op.alloca_state = storage
                    if self._queue_device_waited(op, self._dealloca_work):
                        return
                    op.alloca_state = None
        self._device_submit(op)

    def _queue_device_waited(self, op: QueueOp, work: Any) -> bool:
        """Queue ``op``'s ``work`` on its stream now, behind device-side waits, when every
        wait is reached or is a value this device's in-flight stream work will signal
        (waited on that work's event, or on nothing when it is on the op's own stream);
        False, with nothing done, when any wait is the host's to resolve."""
        inflight = self._inflight
        lane = op.queue
        waited: list[tuple[Any, int]] = []
        events: list[Any] | None = None
        for sem, value in op.waits:
            if wait_reached(sem, value):
                continue
            entry = inflight.get(sem)
            if entry is None or entry[0] < value:
                return False
            waited.append((sem, value))
            if entry[2] != lane:
                if events is None:
                    events = []
                events.append(entry[1])
        backend = self.backend
        if backend._closing:
            raise FailedPreconditionError("the cuda device is closed")
        backend.stream_waits.event += len(waited)
        op.epoch = backend._watermarks[lane].next_epoch()
        backend._enqueue(op, work, waited or None, events)
        return True

    def complete(self, op: QueueOp, error: HalError | None) -> None:
        """The device's ``_complete``; an alloca that fails after committing its buffer
        (``_alloca_work`` left the storage on the op) decommits it first. The caller holds
        no lock."""
        if op.kind is _ALLOCA:
            storage = op.alloca_state
            if storage.__class__ is StreamStorage:
                op.alloca_state = None
                if error is not None:
                    self._uncommit(op, storage)
        self._device_complete(op, error)

    @staticmethod
    def _uncommit(op: QueueOp, storage: StreamStorage) -> None:
        """Undo a failed alloca's commit. Work that device-waited on the alloca ran
        regardless and may still use the memory: the buffer keeps the storage (not
        committed) until it is dropped, after every op holding it completed, and the
        storage frees the memory then."""
        root = buffer_root(op.target)
        if root.is_committed and buffer_storage(root) is storage:
            decommit_buffer(root)
            root.pool_state = storage

    def _allocate(self, op: QueueOp) -> StreamStorage:
        """``cuMemAllocFromPoolAsync`` on the op's stream (RESOURCE_EXHAUSTED when the pool
        cannot grow)."""
        stream = self.streams[op.queue]
        self.ctx.make_current()
        api = self.api
        result = api.cuMemAllocFromPoolAsync(op.length, self.pool, stream)
        if int(result[0]) == CUDA_ERROR_OUT_OF_MEMORY:
            # The pool keeps what is freed into it, and a failed request can leave it
            # holding what it reserved trying: give back all it is not using (to the
            # GPU, for other pools and processes) and try once more.
            api.cuMemPoolTrimTo(self.pool, 0)
            result = api.cuMemAllocFromPoolAsync(op.length, self.pool, stream)
            if int(result[0]) == CUDA_ERROR_OUT_OF_MEMORY:
                api.cuMemPoolTrimTo(self.pool, 0)
        address = check(result, "cuMemAllocFromPoolAsync")
        return StreamStorage(self.ctx, int(address), op.length, stream, op.queue)

    def run_pool_op(self, op: QueueOp) -> None:
        """A ready ALLOCA or DEALLOCA: stream work when it is stream-ordered, else the
        device's pool path."""
        if op.kind == _ALLOCA:
            if op.alloca_state.__class__ is StreamStorage or (
                op.alloca_state is None and self._stream_ordered(op)
            ):
                self.backend._enqueue(op, self._alloca_work)
                return
            self._pools_run(op)
            return
        try:
            storage = buffer_storage(op.target)
        except HalError:
            storage = None  # the pool path reports the uncommitted buffer
        if storage.__class__ is not StreamStorage:
            self._pools_run(op)
            return
        op.alloca_state = storage
        self.backend._enqueue(op, self._dealloca_work)

    def _alloca_work(self, api: Any, op: QueueOp, stream: Any) -> None:
        """Stream work of an alloca: allocate on the stream (unless the call did), commit.
        The storage stays on the op until it completes (``complete`` undoes the commit
        if it fails)."""
        storage = op.alloca_state
        op.alloca_state = None
        if storage is None:
            storage = self._allocate(op)
        commit_buffer(op.target, storage)
        op.alloca_state = storage
        profiling = self.backend._profiling
        if profiling is not None:
            profiling.memory_event(_MEMORY_QUEUE_ALLOCA, op, op.length)

    def _dealloca_work(self, api: Any, op: QueueOp, stream: Any) -> None:
        """Stream work of a dealloca: decommit the buffer, then ``cuMemFreeAsync``
        ordered after the allocation. (A dealloca failing before this ran, in its waits
        or the stream's, leaves the buffer committed and usable.)"""
        storage: StreamStorage = op.alloca_state
        op.alloca_state = None
        decommit_buffer(op.target)
        if not storage.take():
            return  # freed already (cannot happen for a committed buffer; harmless)
        cu = self.api
        if storage.ctx is not self.ctx:
            # Another GPU's memory (a logical device): free it on its own alloca stream.
            storage.ctx.make_current()
            try:
                check(cu.cuMemFreeAsync(storage.address, storage.stream), "cuMemFreeAsync")
            finally:
                self.ctx.make_current()
        else:
            if storage.stream is not stream:
                events = self.backend.events
                event = events.get()
                try:
                    check(cu.cuEventRecord(event, storage.stream), "cuEventRecord")
                    check(cu.cuStreamWaitEvent(stream, event, 0), "cuStreamWaitEvent")
                finally:
                    # The wait took the event's state at the call: it may be reused now.
                    events.put(event)
            check(cu.cuMemFreeAsync(storage.address, stream), "cuMemFreeAsync")
        profiling = self.backend._profiling
        if profiling is not None:
            profiling.memory_event(_MEMORY_QUEUE_DEALLOCA, op, storage.nbytes)
