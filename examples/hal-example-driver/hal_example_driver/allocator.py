"""Host memory for the example driver: one heap, every buffer host-visible and mappable."""

from __future__ import annotations

from typing import Any

import attrs

from hal_core import (
    BufferCompatibility,
    BufferParams,
    BufferUsage,
    MemoryHeap,
    MemoryType,
    ResourceExhaustedError,
)
from hal_core.backend import HostStorage

MAX_ALLOCATION_SIZE = 1 << 32
"""The largest buffer the heap admits (4 GiB); larger requests are RESOURCE_EXHAUSTED."""

MAX_ALIGNMENT = 4096
"""The strictest ``BufferParams.min_alignment`` served (a page): stricter is
INVALID_ARGUMENT at the call, as no heap of this driver can place such a buffer."""

HEAP = MemoryHeap(
    type=MemoryType.HOST_LOCAL | MemoryType.DEVICE_LOCAL | MemoryType.HOST_CACHED,
    allowed_usage=BufferUsage.TRANSFER
    | BufferUsage.DISPATCH
    | BufferUsage.MAPPING
    | BufferUsage.MAPPING_PERSISTENT,
    max_allocation_size=MAX_ALLOCATION_SIZE,
    min_alignment=64,
)

_COMPATIBLE = (
    BufferCompatibility.ALLOCATABLE
    | BufferCompatibility.IMPORTABLE
    | BufferCompatibility.QUEUE_TRANSFER
)
# Host memory can always be mapped, so every buffer may be (the CTS then reads results
# back by mapping instead of through a file).
_MAPPABLE = BufferUsage.MAPPING_SCOPED | BufferUsage.MAPPING_PERSISTENT


class ExampleAllocatorBackend:
    """``AllocatorBackend`` over numpy host memory. Thread-safe (no mutable state)."""

    def heaps(self) -> list[MemoryHeap]:
        return [HEAP]

    def query_buffer_compatibility(
        self, params: BufferParams, size: int
    ) -> tuple[BufferCompatibility, BufferParams, int]:
        """Everything fits the one heap up to its maximum size and alignment (hal_core's
        ``Allocator`` turns NONE into RESOURCE_EXHAUSTED when only the size is too large,
        else INVALID_ARGUMENT). The params returned say what a buffer really gets: the
        heap's memory type, and mapping usage added."""
        compat = _COMPATIBLE
        if size > MAX_ALLOCATION_SIZE or params.min_alignment > MAX_ALIGNMENT:
            compat = BufferCompatibility.NONE
        adjusted = attrs.evolve(
            params,
            type=MemoryType(HEAP.type | (params.type & ~MemoryType.OPTIMAL)),
            usage=BufferUsage(params.usage | _MAPPABLE),
        )
        return compat, adjusted, size

    def allocate(self, params: BufferParams, size: int) -> tuple[Any, MemoryType]:
        """Zero-filled host storage, 64-byte aligned (or ``params.min_alignment``)."""
        return allocate_storage(size, params.min_alignment), params.type

    def import_host(self, params: BufferParams, array: Any) -> tuple[Any, MemoryType]:
        return HostStorage(array), params.type


def allocate_storage(size: int, min_alignment: int = 0) -> HostStorage:
    """Host storage for ``size`` bytes; RESOURCE_EXHAUSTED when it is too large or the
    host has not got the memory (never a bare MemoryError)."""
    if size > MAX_ALLOCATION_SIZE:
        raise ResourceExhaustedError(
            f"allocation of {size} bytes exceeds the example heap's maximum of "
            f"{MAX_ALLOCATION_SIZE} bytes"
        )
    try:
        return HostStorage.allocate(size, max(64, min_alignment))
    except MemoryError:
        raise ResourceExhaustedError(f"host allocation of {size} bytes failed") from None
