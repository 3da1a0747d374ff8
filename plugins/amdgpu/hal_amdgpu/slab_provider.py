"""The HSA slab provider: pool memory (``hal_core.pool``) from one amdgpu heap.

``HsaSlabProvider(allocator, heap)`` acquires slabs with the device allocator, i.e.
``hsa_amd_memory_pool_allocate`` from the heap's HSA memory pool, granted to the device's
GPUs and their nearest CPUs, zero-filled at acquisition. ``wrap`` hands out
``HsaSlabStorage`` views (device address ``slab + offset``; a host view when the heap is
host-visible) that never free memory themselves: the pool owns reservations, the provider
owns slabs. Thread-safe (one lock around the counters; never held while HSA allocates).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from hal_core import BufferParams, BufferUsage, InvalidArgumentError, MemoryType
from hal_core.pool import Slab, SlabProviderStats

from .allocator import HEAP_TYPES

__all__ = ["HsaSlabProvider", "HsaSlabStorage"]

_EMPTY = np.zeros(0, dtype=np.uint8)


class HsaSlabStorage:
    """Buffer storage over ``[offset, offset + nbytes)`` of an HSA slab: ``address`` is the
    device pointer, ``host_array`` a uint8 view (None for device-only heaps).
    ``release()`` runs the pool's release callback once (idempotent); it frees nothing."""

    __slots__ = ("address", "nbytes", "host_array", "heap", "_release_callback")

    def __init__(
        self,
        address: int,
        nbytes: int,
        host_array: Any,
        heap: int,
        release_callback: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.nbytes = nbytes
        self.host_array = host_array
        self.heap = heap
        self._release_callback = release_callback

    @classmethod
    def empty(cls, heap: int) -> "HsaSlabStorage":
        """Storage of a zero-length buffer (no memory behind it)."""
        return cls(0, 0, _EMPTY, heap)

    def release(self) -> None:
        callback, self._release_callback = self._release_callback, None
        if callback is not None:
            callback()


class HsaSlabProvider:
    """Slabs of heap ``heap`` (0 device-local, 1 device-local host-visible, 2 host-local)
    of an ``HsaAllocatorBackend``. ``acquire_slab`` raises RESOURCE_EXHAUSTED (or the HSA
    error's code) when the HSA pool cannot provide the memory."""

    def __init__(self, allocator: Any, heap: int) -> None:
        if heap not in (0, 1, 2):
            raise InvalidArgumentError(f"amdgpu heaps are 0, 1 and 2; got {heap!r}")
        info = allocator.heaps()[heap]
        self._allocator = allocator
        self.heap = heap
        # HSA pools align every allocation to their RUNTIME_ALLOC_ALIGNMENT (a power of two).
        self.slab_alignment = max(64, int(info.min_alignment))
        self.max_slab_size = int(info.max_allocation_size)
        self._memory_type = MemoryType(HEAP_TYPES[heap])
        self._usage = BufferUsage(info.allowed_usage)
        # Mapping bits would make the allocator refuse heap 0; slabs need none of them.
        self._params = BufferParams(
            type=self._memory_type, usage=BufferUsage.TRANSFER | BufferUsage.DISPATCH
        )
        self._lock = threading.Lock()
        self._acquired = 0
        self._released = 0
        self._bytes_acquired = 0
        self._bytes_released = 0

    def acquire_slab(self, min_length: int) -> Slab:
        if min_length <= 0:
            raise InvalidArgumentError(f"slab length must be > 0, got {min_length}")
        storage, _type = self._allocator.allocate(self._params, min_length)
        with self._lock:
            self._acquired += 1
            self._bytes_acquired += min_length
        return Slab(storage, min_length)

    def release_slab(self, slab: Slab) -> None:
        storage, slab.storage = slab.storage, None
        if storage is None:
            return
        storage.release()
        with self._lock:
            self._released += 1
            self._bytes_released += slab.length

    def wrap(
        self,
        slab: Slab,
        offset: int,
        length: int,
        release_callback: Callable[[], None] | None = None,
    ) -> HsaSlabStorage:
        base = slab.storage
        host = base.host_array
        view = host[offset : offset + length] if host is not None else None
        return HsaSlabStorage(base.address + offset, length, view, self.heap, release_callback)

    def query_properties(self) -> tuple[MemoryType, BufferUsage]:
        return self._memory_type, self._usage

    def query_stats(self) -> SlabProviderStats:
        with self._lock:
            return SlabProviderStats(
                self._acquired, self._released, self._bytes_acquired, self._bytes_released
            )

    def trim(self) -> None:
        return None
