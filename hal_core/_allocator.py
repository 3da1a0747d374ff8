"""The device allocator: heaps, compatibility queries, synchronous allocate and import.

``Allocator`` does the checks every backend shares and delegates memory to an
``AllocatorBackend`` (see ``hal_core.backend``).
"""

from __future__ import annotations

import threading
from typing import Any

import attrs
import numpy as np

from ._buffer import Buffer
from ._memory import (
    BufferCompatibility,
    BufferParams,
    BufferUsage,
    MemoryAccess,
    MemoryHeap,
    MemoryType,
)
from ._status import InvalidArgumentError, ResourceExhaustedError

__all__ = ["Allocator", "AllocatorStatistics", "host_heaps", "check_host_size"]


@attrs.define
class AllocatorStatistics:
    host_bytes_allocated: int = 0
    host_bytes_freed: int = 0
    host_bytes_peak: int = 0
    device_bytes_allocated: int = 0
    device_bytes_freed: int = 0
    device_bytes_peak: int = 0


class Allocator:
    """Allocates buffers for one device. Thread-safe."""

    def __init__(self, backend: Any, device: Any = None) -> None:
        self._backend = backend
        self._device = device
        self._lock = threading.Lock()
        self._stats = AllocatorStatistics()

    @property
    def backend(self) -> Any:
        return self._backend

    def query_memory_heaps(self) -> list[MemoryHeap]:
        """Heaps in preference order."""
        return list(self._backend.heaps())

    def query_statistics(self) -> AllocatorStatistics:
        with self._lock:
            return attrs.evolve(self._stats)

    def query_buffer_compatibility(
        self, params: BufferParams, allocation_size: int
    ) -> tuple[BufferCompatibility, BufferParams, int]:
        """What the allocator can do with these params: ALLOCATABLE, IMPORTABLE,
        QUEUE_TRANSFER, QUEUE_DISPATCH..., with the params and size it would use."""
        params = _as_params(params)
        return self._backend.query_buffer_compatibility(params, int(allocation_size))

    def allocate_buffer(self, params: BufferParams | None, allocation_size: int) -> Buffer:
        """Allocate zero-filled memory now. Size 0 succeeds. INVALID_ARGUMENT when no heap
        can satisfy the params; RESOURCE_EXHAUSTED when the memory is not there."""
        params = _as_params(params)
        size = _check_size(allocation_size)
        compat, params, size = self._backend.query_buffer_compatibility(params, size)
        if not compat & BufferCompatibility.ALLOCATABLE:
            raise InvalidArgumentError(
                f"no heap of this device can allocate {size} bytes with {params}"
            )
        storage, memory_type = self._backend.allocate(params, size)
        buffer = Buffer(
            storage,
            memory_type=memory_type,
            allowed_usage=params.usage,
            allowed_access=params.access,
            allocation_size=size,
            device=self._device,
            queue_affinity=params.queue_affinity,
        )
        self._account(memory_type, size)
        return buffer

    def import_host_buffer(self, params: BufferParams | None, data: Any) -> Buffer:
        """Wrap host memory (any writable buffer-protocol object) without copying. The
        caller keeps ``data`` alive and unchanged in size while the buffer is in use."""
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
        )

    def _account(self, memory_type: MemoryType, size: int) -> None:
        with self._lock:
            s = self._stats
            if memory_type.has(MemoryType.DEVICE_LOCAL) and not memory_type.has(
                MemoryType.HOST_LOCAL
            ):
                s.device_bytes_allocated += size
                s.device_bytes_peak = max(
                    s.device_bytes_peak, s.device_bytes_allocated - s.device_bytes_freed
                )
            else:
                s.host_bytes_allocated += size
                s.host_bytes_peak = max(
                    s.host_bytes_peak, s.host_bytes_allocated - s.host_bytes_freed
                )


def _as_params(params: Any) -> BufferParams:
    if params is None:
        return BufferParams()
    if isinstance(params, BufferParams):
        return params
    if isinstance(params, dict):
        return BufferParams(**params)
    raise InvalidArgumentError(f"expected BufferParams, got {type(params).__name__}")


def _check_size(size: Any) -> int:
    if not isinstance(size, (int, np.integer)) or size < 0:
        raise InvalidArgumentError(f"allocation size must be an int >= 0, got {size!r}")
    return int(size)


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
    if size > max_size:
        raise ResourceExhaustedError(
            f"allocation of {size} bytes exceeds the heap's maximum of {max_size} bytes"
        )

