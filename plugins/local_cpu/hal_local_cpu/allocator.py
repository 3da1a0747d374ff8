"""Host-memory allocator backend shared by local-task and local-sync."""

from __future__ import annotations

import os
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
from hal_core.backend import HostStorage, check_host_size, host_heaps


def _physical_memory() -> int:
    """Bytes of physical memory (0 where the OS cannot say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 0


MAX_ALLOCATION_SIZE = min(1 << 40, _physical_memory() or 1 << 40)
"""The largest allocation the host heap admits: 1 TiB, or the machine's physical memory
when that is less. A ``queue_alloca`` larger than this could never be satisfied (it would
park on the pool forever), so it is refused at the call with RESOURCE_EXHAUSTED."""

_HEAP = host_heaps(MAX_ALLOCATION_SIZE)[0]
_COMPATIBLE = (
    BufferCompatibility.ALLOCATABLE
    | BufferCompatibility.IMPORTABLE
    | BufferCompatibility.EXPORTABLE
    | BufferCompatibility.QUEUE_TRANSFER
    | BufferCompatibility.QUEUE_DISPATCH
)
_MAPPABLE = BufferUsage.MAPPING_SCOPED | BufferUsage.MAPPING_PERSISTENT


class HostAllocatorBackend:
    """All memory is host memory: every buffer is host-visible, mappable and usable by
    every queue, whatever type was asked for (an allocator may return more bits)."""

    def __init__(self) -> None:
        # params -> the params this allocator uses for them: every queue_alloca asks, with
        # a handful of distinct params in practice (bounded in case a program varies them).
        self._adjusted: dict[BufferParams, BufferParams] = {}

    def heaps(self) -> list[MemoryHeap]:
        return [_HEAP]

    def query_buffer_compatibility(
        self, params: BufferParams, size: int
    ) -> tuple[BufferCompatibility, BufferParams, int]:
        compat = _COMPATIBLE if size <= MAX_ALLOCATION_SIZE else BufferCompatibility.NONE
        adjusted = self._adjusted.get(params)
        if adjusted is None:
            adjusted = attrs.evolve(
                params,
                type=MemoryType(_HEAP.type | (params.type & ~MemoryType.OPTIMAL)),
                usage=BufferUsage(params.usage | _MAPPABLE),
            )
            if len(self._adjusted) >= 256:
                self._adjusted.clear()
            self._adjusted[params] = adjusted
        return compat, adjusted, size

    def allocate(self, params: BufferParams, size: int) -> tuple[Any, MemoryType]:
        check_host_size(size, MAX_ALLOCATION_SIZE)
        try:
            storage = HostStorage.allocate(size, max(64, params.min_alignment))
        except MemoryError:
            raise ResourceExhaustedError(f"host allocation of {size} bytes failed") from None
        return storage, params.type

    def import_host(self, params: BufferParams, array: Any) -> tuple[Any, MemoryType]:
        return HostStorage(array), params.type
