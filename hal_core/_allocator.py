"""The device allocator: heaps, compatibility queries, synchronous allocate and import.

``Allocator`` does the checks every backend shares and delegates memory to an
``AllocatorBackend`` (see ``hal_core.backend``).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, final

import attrs
import numpy as np

from ._buffer import Buffer
from ._construction import INTERNAL, require_internal, sealed
from ._memory import (
    BufferCompatibility,
    BufferParams,
    BufferUsage,
    MemoryAccess,
    MemoryHeap,
    MemoryType,
)
from ._ranges import as_index
from ._status import (
    FailedPreconditionError,
    HalError,
    InvalidArgumentError,
    ResourceExhaustedError,
)

__all__ = ["Allocator", "AllocatorStatistics", "host_heaps", "check_host_size", "check_size"]

_ALLOCATABLE = int(BufferCompatibility.ALLOCATABLE)
_UNSET: Any = object()  # an argument not given (None is a value: the default params)
# Device memory for the statistics: DEVICE_LOCAL without HOST_LOCAL (plain ints: the
# MemoryType flag operators cost a Python call each).
_DEVICE_OR_HOST = int(MemoryType.DEVICE_LOCAL | MemoryType.HOST_LOCAL)
_DEVICE_ONLY = int(MemoryType.DEVICE_LOCAL)


@attrs.define
class AllocatorStatistics:
    host_bytes_allocated: int = 0
    host_bytes_freed: int = 0
    host_bytes_peak: int = 0
    device_bytes_allocated: int = 0
    device_bytes_freed: int = 0
    device_bytes_peak: int = 0


@final
@sealed
class Allocator:
    """Allocates buffers for one device (``Device.allocator``; no public constructor).
    Final. Thread-safe.

    ``close()`` (idempotent; the device's ``close`` calls it) makes every later
    allocation or import FAILED_PRECONDITION. Statistics count an allocation when it is
    made and its free when the buffer (with every subspan of it) is dropped, as IREE
    counts frees when a buffer is destroyed; imported memory is not counted.
    """

    def __init__(self, backend: Any, device: Any = None, *, _token: object = None) -> None:
        """Internal: its ``Device`` passes ``_token=INTERNAL``."""
        require_internal(_token, "Allocator", "Device.allocator")
        self._backend = backend
        self._device = device
        # Re-entrant: a buffer dropped (freed) by a garbage collection that runs while
        # this thread holds the lock accounts on the same thread.
        self._lock = threading.RLock()
        self._stats = AllocatorStatistics()
        self._closed = False
        # Weak references to live allocated buffers -> (device_bytes, size) to account
        # when each dies: a ref with a callback costs far less than ``weakref.finalize``
        # per allocation, and like ``finalize(..., atexit=False)`` nothing runs at exit.
        self._live: dict[weakref.ref, tuple[bool, int]] = {}
        self._on_free = self._freed

    @property
    def backend(self) -> Any:
        return self._backend

    def __repr__(self) -> str:
        from . import _reprs as R  # (not a hot path)

        try:
            state = " closed" if self._closed else ""
            return f"<hal_core.Allocator of {R.device_name(self._device)}{state}>"
        except Exception:
            return "<hal_core.Allocator>"

    def close(self) -> None:
        """Refuse further allocations and imports. Idempotent; buffers already made stay
        valid (their memory is freed when they are dropped)."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed or (self._device is not None and self._device._closed)

    def _check_open(self) -> None:
        if self._closed or (self._device is not None and self._device._closed):
            owner = "its device" if not self._closed else "the allocator"
            raise FailedPreconditionError(
                f"allocator is closed ({owner} was closed); allocate from an open device"
            )

    def query_memory_heaps(self) -> list[MemoryHeap]:
        """Heaps in preference order."""
        return list(self._backend.heaps())

    def query_statistics(self) -> AllocatorStatistics:
        """Bytes allocated, freed and the peak live bytes, per host and device memory."""
        with self._lock:
            return attrs.evolve(self._stats)

    def query_buffer_compatibility(
        self, params: BufferParams | None, allocation_size: int
    ) -> tuple[BufferCompatibility, BufferParams, int]:
        """What the allocator can do with these params: ALLOCATABLE, IMPORTABLE,
        QUEUE_TRANSFER, QUEUE_DISPATCH..., with the params and size it would use."""
        params = _as_params(params)
        return self._backend.query_buffer_compatibility(params, check_size(allocation_size))

    def allocatable(self, params: BufferParams, size: int) -> tuple[BufferParams, int]:
        """The params and size an allocation of ``size`` bytes would use (``params`` and
        ``size`` already normalised). RESOURCE_EXHAUSTED when no heap can ever hold that
        many bytes; INVALID_ARGUMENT when no heap serves the params at all."""
        compat, adjusted, size = self._backend.query_buffer_compatibility(params, size)
        if not int(compat) & _ALLOCATABLE:
            raise self._refusal(params, size)
        return adjusted, size

    def _refusal(self, params: BufferParams, size: int) -> HalError:
        # Asking again for an empty allocation tells whether the size alone is the reason.
        if size and int(self._backend.query_buffer_compatibility(params, 0)[0]) & _ALLOCATABLE:
            largest = max((h.max_allocation_size for h in self._backend.heaps()), default=0)
            return ResourceExhaustedError(
                f"no heap of this device can ever hold {size} bytes (the largest allocation "
                f"any heap allows is {largest} bytes)"
            )
        return InvalidArgumentError(
            f"no heap of this device can allocate {size} bytes with {params}"
        )

    def allocate_buffer(
        self, *args: Any, params: Any = _UNSET, allocation_size: Any = _UNSET
    ) -> Buffer:
        """Allocate zero-filled memory now: ``allocate_buffer(size, params=None)``, or in
        IREE's order ``allocate_buffer(params, size)`` (``None`` params: the defaults).
        Size 0 succeeds. INVALID_ARGUMENT for a missing size or params given twice, and
        when no heap can satisfy the params; RESOURCE_EXHAUSTED when the memory is not
        there (or no heap could ever hold that many bytes); FAILED_PRECONDITION after
        ``close()`` or the device's close."""
        self._check_open()
        params, allocation_size = _allocation_args(args, params, allocation_size)
        params = _as_params(params)
        params, size = self.allocatable(params, check_size(allocation_size))
        storage, memory_type = self._backend.allocate(params, size)
        buffer = Buffer(
            storage,
            memory_type=memory_type,
            allowed_usage=params.usage,
            allowed_access=params.access,
            allocation_size=size,
            device=self._device,
            queue_affinity=params.queue_affinity,
            _token=INTERNAL,
        )
        device_bytes = int(memory_type) & _DEVICE_OR_HOST == _DEVICE_ONLY
        self._account(device_bytes, size)
        if size:
            self._live[weakref.ref(buffer, self._on_free)] = (device_bytes, size)
        return buffer

    def import_host_buffer(self, params: BufferParams | None, data: Any) -> Buffer:
        """Wrap host memory (any writable buffer-protocol object) without copying. The
        caller keeps ``data`` alive and unchanged in size while the buffer is in use."""
        self._check_open()
        params = _as_params(params)
        try:
            view = memoryview(data)
        except TypeError:
            raise InvalidArgumentError(
                f"import needs a buffer-protocol object, got {type(data).__name__}"
            ) from None
        if view.readonly and params.access & (MemoryAccess.WRITE | MemoryAccess.DISCARD):
            raise InvalidArgumentError(
                "imported host memory is read-only; request access READ or pass writable memory"
            )
        if not view.c_contiguous:
            raise InvalidArgumentError("imported host memory must be C-contiguous")
        array = np.frombuffer(view.cast("B"), dtype=np.uint8)
        compat, params, size = self._backend.query_buffer_compatibility(params, array.nbytes)
        storage, memory_type = self._backend.import_host(params, array)
        return Buffer(
            storage,
            memory_type=memory_type,
            allowed_usage=params.usage,
            allowed_access=params.access,
            allocation_size=array.nbytes,
            device=self._device,
            queue_affinity=params.queue_affinity,
            _token=INTERNAL,
        )

    def _account(self, device_bytes: bool, size: int) -> None:
        with self._lock:
            s = self._stats
            if device_bytes:
                s.device_bytes_allocated += size
                s.device_bytes_peak = max(
                    s.device_bytes_peak, s.device_bytes_allocated - s.device_bytes_freed
                )
            else:
                s.host_bytes_allocated += size
                s.host_bytes_peak = max(
                    s.host_bytes_peak, s.host_bytes_allocated - s.host_bytes_freed
                )

    def _freed(self, ref: weakref.ref) -> None:
        """Weak-reference callback of an allocated buffer: runs on whichever thread drops
        it. The entry is popped (one atomic dict operation), so it is counted once."""
        entry = self._live.pop(ref, None)
        if entry is not None:
            self._account_free(entry[0], entry[1])

    def _account_free(self, device_bytes: bool, size: int) -> None:
        """Finalizer of an allocated buffer: runs on whichever thread drops it."""
        with self._lock:
            if device_bytes:
                self._stats.device_bytes_freed += size
            else:
                self._stats.host_bytes_freed += size


def _allocation_args(args: tuple, params: Any, size: Any) -> tuple[Any, Any]:
    """``(params, size)`` from ``allocate_buffer``'s arguments: ``(size)`` or
    ``(params, size)`` positionally, either also as the keywords ``params=`` and
    ``allocation_size=``. INVALID_ARGUMENT when the size is missing or a value is given
    twice."""
    if len(args) > 2:
        raise InvalidArgumentError(
            f"allocate_buffer takes (size, params=None) or (params, size), got {len(args)} "
            "positional arguments"
        )
    if len(args) == 2:
        if params is not _UNSET or size is not _UNSET:
            raise InvalidArgumentError(
                "allocate_buffer got params and size positionally and again as keywords"
            )
        return args
    if args:
        first = args[0]
        if size is _UNSET:  # (size) or (size, params=...)
            if first is None or isinstance(first, (BufferParams, dict)):
                raise InvalidArgumentError("allocate_buffer needs an allocation size")
            return (None if params is _UNSET else params), first
        if params is not _UNSET:
            raise InvalidArgumentError(
                "allocate_buffer got params positionally and as params= (give the size first)"
            )
        return first, size  # (params, allocation_size=...)
    if size is _UNSET:
        raise InvalidArgumentError("allocate_buffer needs an allocation size")
    return (None if params is _UNSET else params), size


def _as_params(params: Any) -> BufferParams:
    if params is None:
        return BufferParams()
    if isinstance(params, BufferParams):
        return params
    if isinstance(params, dict):
        try:
            return BufferParams(**params)
        except TypeError as exc:  # unknown or missing keys
            raise InvalidArgumentError(f"bad BufferParams fields {sorted(params)}: {exc}") from None
    raise InvalidArgumentError(f"expected BufferParams, got {type(params).__name__}")


def check_size(size: Any) -> int:
    """An allocation size as a plain int >= 0 (numpy integers normalised);
    INVALID_ARGUMENT otherwise."""
    if size.__class__ is not int:
        size = as_index(size, "allocation size")
    if size < 0:
        raise InvalidArgumentError(f"allocation size must be >= 0, got {size}")
    return size


def host_heaps(max_size: int) -> list[MemoryHeap]:
    """The single host heap of CPU backends."""
    return [
        MemoryHeap(
            type=MemoryType.HOST_LOCAL | MemoryType.DEVICE_LOCAL | MemoryType.HOST_CACHED,
            allowed_usage=BufferUsage.TRANSFER
            | BufferUsage.DISPATCH
            | BufferUsage.MAPPING
            | BufferUsage.MAPPING_PERSISTENT
            | BufferUsage.SHARING_EXPORT
            | BufferUsage.SHARING_CONCURRENT,
            max_allocation_size=max_size,
            min_alignment=64,
        )
    ]


def check_host_size(size: int, max_size: int) -> None:
    """RESOURCE_EXHAUSTED when an allocation of ``size`` bytes exceeds a host heap's
    ``max_size`` (for backends whose storage is host memory)."""
    if size > max_size:
        raise ResourceExhaustedError(
            f"allocation of {size} bytes exceeds the heap's maximum of {max_size} bytes"
        )
