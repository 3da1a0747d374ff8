"""The amdgpu allocator backend: HAL heaps over HSA memory pools.

| heap | memory type                                  | pool                    |
| 0    | DEVICE_LOCAL                                 | GPU coarse-grained      |
| 1    | DEVICE_LOCAL | HOST_VISIBLE | HOST_COHERENT  | GPU fine-grained        |
| 2    | HOST_LOCAL | DEVICE_VISIBLE                  | nearest CPU's fine pool |

A request requiring HOST_LOCAL gets heap 2, one requiring HOST_VISIBLE heap 1, anything
else heap 0 (heap 0 accepts mapping usage only with MAPPING_OPTIONAL). Allocations come
from the first selected GPU's pools (or its nearest CPU) and are granted to every GPU of
the logical device that can reach that pool (not ``NEVER_ALLOWED``) plus their nearest
CPUs; device memory (heaps 0 and 1) also to the HSA system's other GPUs that can reach
it (``peer_agents``), so peer devices copy to and from it directly. Storage frees its
pool memory on ``release()`` or, as a safety net, when it is garbage collected.
Thread-safe.
"""

from __future__ import annotations

import weakref
from typing import Any

import attrs
import numpy as np

from hal_core import (
    BufferCompatibility,
    BufferParams,
    BufferUsage,
    InvalidArgumentError,
    MemoryHeap,
    MemoryType,
    ResourceExhaustedError,
)

from .hsa import HsaLibrary
from .hsa_enums import HSA_AMD_MEMORY_POOL_STANDARD_FLAG, AgentPoolInfo, PoolAccess
from .hsa_memory import MemoryPoolDescription

__all__ = ["HsaStorage", "HsaAllocatorBackend", "HEAP_TYPES"]

HEAP_TYPES = (
    MemoryType.DEVICE_LOCAL,
    MemoryType.DEVICE_LOCAL | MemoryType.HOST_VISIBLE | MemoryType.HOST_COHERENT,
    MemoryType.HOST_LOCAL | MemoryType.DEVICE_VISIBLE,
)
_HOST_USAGE = (
    BufferUsage.TRANSFER
    | BufferUsage.DISPATCH
    | BufferUsage.MAPPING
    | BufferUsage.MAPPING_PERSISTENT
    | BufferUsage.MAPPING_OPTIONAL
    | BufferUsage.SHARING_CONCURRENT
)
_DEVICE_USAGE = (
    BufferUsage.TRANSFER
    | BufferUsage.DISPATCH
    | BufferUsage.MAPPING_OPTIONAL
    | BufferUsage.SHARING_CONCURRENT
)
_MAPPING_BITS = (
    BufferUsage.MAPPING_SCOPED
    | BufferUsage.MAPPING_PERSISTENT
    | BufferUsage.MAPPING_ACCESS_RANDOM
    | BufferUsage.MAPPING_ACCESS_SEQUENTIAL_WRITE
)


def _free(hsa: HsaLibrary, address: int, unlock: bool) -> None:
    ptr = hsa.ffi.cast("void*", address)
    if unlock:
        hsa.lib.hsa_amd_memory_unlock(ptr)
    else:
        hsa.lib.hsa_amd_memory_pool_free(ptr)


class HsaStorage:
    """Buffer storage over HSA memory: ``address`` (device pointer), ``nbytes``,
    ``host_array`` (a uint8 view when the heap is host-visible, else None), ``release()``
    (idempotent; frees the pool memory or unlocks imported host memory)."""

    __slots__ = ("address", "nbytes", "host_array", "heap", "_finalizer", "__weakref__")

    def __init__(
        self,
        hsa: HsaLibrary,
        address: int,
        nbytes: int,
        heap: int,
        host_visible: bool,
        *,
        imported: Any = None,
    ) -> None:
        self.address = address
        self.nbytes = nbytes
        self.heap = heap
        self.host_array: np.ndarray | None = None
        if imported is not None:
            self.host_array = imported
        elif host_visible and nbytes:
            buf = hsa.ffi.buffer(hsa.ffi.cast("uint8_t*", address), nbytes)
            # numpy's stubs accept only a fixed list of buffer types before Python 3.12.
            self.host_array = np.frombuffer(buf, dtype=np.uint8)  # type: ignore[call-overload]
        # Imported memory is unlocked by its host address; pool memory freed by its own.
        free_address = int(imported.ctypes.data) if imported is not None else address
        self._finalizer = weakref.finalize(self, _free, hsa, free_address, imported is not None)

    def release(self) -> None:
        self._finalizer()


class HsaAllocatorBackend:
    def __init__(
        self,
        hsa: HsaLibrary,
        gpu_pools: list[Any],
        cpu_fine: MemoryPoolDescription,
        access_agents: list[int],
        peer_agents: list[int] | None = None,
    ) -> None:
        self._hsa = hsa
        first = gpu_pools[0]
        self._pools = (first.coarse, first.fine, cpu_fine)
        self._access = hsa.ffi.new("hsa_agent_t[]", [[h] for h in access_agents])
        self._access_count = len(access_agents)
        # Per heap, the agents that can reach its pool: a GPU with no peer path to the
        # first GPU's memory (ACCESS NEVER_ALLOWED) cannot be granted it, so the grant
        # leaves it out rather than failing every allocation.
        # Device memory is granted to peer GPUs too (the host heap is already theirs):
        # their queues then copy to and from it directly.
        device_agents = access_agents + list(peer_agents or ())
        self._grants = [
            self._reachable(pool, device_agents if i < 2 else access_agents)
            for i, pool in enumerate(self._pools)
        ]
        self._heaps = [
            MemoryHeap(
                type=HEAP_TYPES[i],
                allowed_usage=_DEVICE_USAGE if i == 0 else _HOST_USAGE,
                max_allocation_size=pool.alloc_max_size,
                min_alignment=max(64, pool.alignment),
            )
            for i, pool in enumerate(self._pools)
        ]

    def _reachable(self, pool: MemoryPoolDescription, agents: list[int]) -> tuple[Any, int]:
        hsa = self._hsa
        ffi = hsa.ffi
        handle = ffi.new("hsa_amd_memory_pool_t*", [pool.handle])[0]
        reach = [
            a
            for a in agents
            if hsa.agent_pool_info(
                ffi.new("hsa_agent_t*", [a])[0], handle, AgentPoolInfo.ACCESS, "uint32_t"
            )
            != PoolAccess.NEVER_ALLOWED
        ]
        return ffi.new("hsa_agent_t[]", [[a] for a in reach]), len(reach)

    def heaps(self) -> list[MemoryHeap]:
        return list(self._heaps)

    @staticmethod
    def select_heap(memory_type: MemoryType) -> int:
        t = MemoryType(memory_type)
        if t.has(MemoryType.HOST_LOCAL):
            return 2
        if t.has(MemoryType.HOST_VISIBLE):
            return 1
        return 0

    def query_buffer_compatibility(
        self, params: BufferParams, size: int
    ) -> tuple[BufferCompatibility, BufferParams, int]:
        heap = self.select_heap(params.type)
        compat = (
            BufferCompatibility.ALLOCATABLE
            | BufferCompatibility.IMPORTABLE
            | BufferCompatibility.QUEUE_TRANSFER
            | BufferCompatibility.QUEUE_DISPATCH
        )
        usage = params.usage
        if heap == 0 and usage & _MAPPING_BITS and not usage & BufferUsage.MAPPING_OPTIONAL:
            compat = BufferCompatibility.IMPORTABLE  # device-local memory cannot be mapped
        if heap == 0 and usage & BufferUsage.MAPPING_OPTIONAL:
            usage = BufferUsage(usage & ~(_MAPPING_BITS | BufferUsage.MAPPING_OPTIONAL))
        pool = self._pools[heap]
        if size > pool.alloc_max_size:
            compat = BufferCompatibility.NONE
        adjusted = attrs.evolve(params, type=HEAP_TYPES[heap], usage=usage)
        return compat, adjusted, size

    def allocate(self, params: BufferParams, size: int) -> tuple[Any, MemoryType]:
        heap = self.select_heap(params.type)
        if heap == 0 and params.usage & _MAPPING_BITS:
            raise InvalidArgumentError(
                f"device-local memory (heap 0) is not host-visible but usage {params.usage!r} "
                "asks for mapping; request HOST_VISIBLE memory or add MAPPING_OPTIONAL"
            )
        pool = self._pools[heap]
        if size > pool.alloc_max_size:
            raise ResourceExhaustedError(
                f"allocation of {size} bytes exceeds the pool maximum {pool.alloc_max_size}"
            )
        hsa = self._hsa
        ffi = hsa.ffi
        out = ffi.new("void**")
        handle = ffi.new("hsa_amd_memory_pool_t*", [pool.handle])[0]
        status = hsa.lib.hsa_amd_memory_pool_allocate(
            handle, pool.round_up(size), HSA_AMD_MEMORY_POOL_STANDARD_FLAG, out
        )
        hsa.check(status, f"hsa_amd_memory_pool_allocate({size} bytes, heap {heap})")
        address = int(ffi.cast("uintptr_t", out[0]))
        grant, grant_count = self._grants[heap]
        status = hsa.lib.hsa_amd_agents_allow_access(grant_count, grant, ffi.NULL, out[0])
        if status != 0:
            hsa.lib.hsa_amd_memory_pool_free(out[0])
            hsa.check(status, "hsa_amd_agents_allow_access")
        storage = HsaStorage(hsa, address, size, heap, host_visible=heap != 0)
        # HAL allocations are zero-filled; device-local memory is not host-writable, so
        # HSA fills it (granule-rounded sizes are multiples of 4).
        if storage.host_array is not None:
            storage.host_array[:] = 0
        elif size:
            words = pool.round_up(size) // 4
            status = hsa.lib.hsa_amd_memory_fill(out[0], 0, words)
            if status != 0:
                storage.release()
                hsa.check(status, f"hsa_amd_memory_fill({size} bytes)")
        return storage, HEAP_TYPES[heap]

    def import_host(self, params: BufferParams, array: Any) -> tuple[Any, MemoryType]:
        hsa = self._hsa
        ffi = hsa.ffi
        address = int(array.ctypes.data)
        out = ffi.new("void**")
        status = hsa.lib.hsa_amd_memory_lock(
            ffi.cast("void*", address), array.nbytes, self._access, self._access_count, out
        )
        hsa.check(status, f"hsa_amd_memory_lock({array.nbytes} bytes)")
        storage = HsaStorage(
            hsa, int(ffi.cast("uintptr_t", out[0])), int(array.nbytes), 2, True, imported=array
        )
        return storage, HEAP_TYPES[2]
