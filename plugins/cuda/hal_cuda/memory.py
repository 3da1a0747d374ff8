"""CUDA memory: device-local allocations, pinned host memory mapped into the device, and
imported (registered) host memory, as hal_core storage objects, plus the allocator.

Storage follows hal_core's storage contract (``nbytes``, ``host_array``, ``address``,
``release()``): ``address`` is the address CUDA kernels and copies use (a device pointer,
or under unified addressing the device alias of pinned host memory). Memory is freed by
``release()`` or, as a safety net, when the storage object is collected
(``weakref.finalize``); freeing is idempotent. Freeing may run on any thread, so it makes
the GPU's context current first.

Memory types (IREE's bits):

* device-local: ``cuMemAlloc``; ``DEVICE_LOCAL`` (device-visible), not host-visible.
* host-local: ``cuMemHostAlloc(PORTABLE | DEVICEMAP)``; ``HOST_LOCAL | DEVICE_VISIBLE``,
  host-coherent, mappable (numpy views), and device-visible through the mapping.
* imported: ``cuMemHostRegister(PORTABLE | DEVICEMAP)`` over the caller's array; the same
  type as host-local.
"""

from __future__ import annotations

import ctypes
import weakref
from typing import Any

import attrs
import numpy as np

from hal_core import (
    BufferCompatibility,
    BufferParams,
    BufferUsage,
    MemoryHeap,
    MemoryType,
    ResourceExhaustedError,
)

from .cuda_api import CudaContext, check

CU_MEMHOSTALLOC_PORTABLE = 0x01
CU_MEMHOSTALLOC_DEVICEMAP = 0x02
CU_MEMHOSTREGISTER_PORTABLE = 0x01
CU_MEMHOSTREGISTER_DEVICEMAP = 0x02
CU_MEMHOSTREGISTER_READ_ONLY = 0x08

DEVICE_ALIGNMENT = 256
"""cuMemAlloc returns 256-byte aligned pointers; stricter ``min_alignment`` is refused."""

HOST_ALIGNMENT = 4096
"""cuMemHostAlloc returns page-aligned memory."""

DEVICE_TYPE = MemoryType.DEVICE_LOCAL
HOST_TYPE = MemoryType.HOST_LOCAL | MemoryType.DEVICE_VISIBLE

_DEVICE_USAGE = BufferUsage.TRANSFER | BufferUsage.DISPATCH
_MAPPABLE = (
    BufferUsage.MAPPING_SCOPED
    | BufferUsage.MAPPING_PERSISTENT
    | BufferUsage.MAPPING_OPTIONAL
    | BufferUsage.MAPPING_ACCESS_RANDOM
    | BufferUsage.MAPPING_ACCESS_SEQUENTIAL_WRITE
)
_HOST_USAGE = _DEVICE_USAGE | _MAPPABLE
_COMPATIBLE = (
    BufferCompatibility.ALLOCATABLE
    | BufferCompatibility.IMPORTABLE
    | BufferCompatibility.QUEUE_TRANSFER
    | BufferCompatibility.QUEUE_DISPATCH
)


def _host_view(address: int, size: int) -> np.ndarray:
    """A uint8 numpy array over ``size`` bytes of host memory at ``address``."""
    if size == 0:
        return np.zeros(0, np.uint8)
    return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(address))


def _free_device(ctx: CudaContext, address: int) -> None:
    try:
        ctx.make_current()
        ctx.api.cuMemFree(address)
    except Exception:  # at interpreter exit the driver may already be gone
        pass


def _free_host(ctx: CudaContext, address: int) -> None:
    try:
        ctx.make_current()
        ctx.api.cuMemFreeHost(address)
    except Exception:
        pass


def _unregister_host(ctx: CudaContext, address: int, array: Any) -> None:
    del array  # held until now so the registered pages stay mapped while registered
    try:
        ctx.make_current()
        ctx.api.cuMemHostUnregister(address)
    except Exception:
        pass


class CudaStorage:
    """Storage of one CUDA allocation (device, pinned host or registered host memory).

    ``host_array`` is None for device-local memory. Thread-safe: ``release`` is
    idempotent and may race with collection."""

    __slots__ = ("nbytes", "host_array", "address", "host_address", "kind", "_free", "__weakref__")

    def __init__(
        self,
        kind: str,
        nbytes: int,
        address: int,
        host_array: np.ndarray | None,
        host_address: int,
        free: Any,
        *free_args: Any,
    ) -> None:
        self.kind = kind
        self.nbytes = nbytes
        self.address = address
        self.host_array = host_array
        self.host_address = host_address
        self._free = weakref.finalize(self, free, *free_args) if free is not None else None

    def release(self) -> None:
        free = self._free
        if free is not None:
            free()


def allocate_device(ctx: CudaContext, size: int, zero: bool = True) -> CudaStorage:
    """``size`` bytes of device memory (zero-filled unless ``zero`` is False);
    RESOURCE_EXHAUSTED when the GPU has not got it."""
    if size == 0:
        return CudaStorage("device", 0, 0, None, 0, None)
    api = ctx.api
    ctx.make_current()
    address = int(check(api.cuMemAlloc(size), f"cuMemAlloc({size} bytes)"))
    storage = CudaStorage("device", size, address, None, 0, _free_device, ctx, address)
    if zero:
        check(api.cuMemsetD8(address, 0, size), "cuMemsetD8")
    return storage


def allocate_host(ctx: CudaContext, size: int) -> CudaStorage:
    """``size`` bytes of zero-filled pinned host memory mapped into the device."""
    if size == 0:
        return CudaStorage("host", 0, 0, np.zeros(0, np.uint8), 0, None)
    api = ctx.api
    ctx.make_current()
    flags = CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP
    host = int(check(api.cuMemHostAlloc(size, flags), f"cuMemHostAlloc({size} bytes)"))
    try:
        device = int(check(api.cuMemHostGetDevicePointer(host, 0), "cuMemHostGetDevicePointer"))
    except BaseException:
        api.cuMemFreeHost(host)
        raise
    array = _host_view(host, size)
    array.fill(0)
    return CudaStorage("host", size, device, array, host, _free_host, ctx, host)


def register_host(ctx: CudaContext, array: np.ndarray) -> CudaStorage:
    """Storage over the caller's host ``array`` (uint8, contiguous), page-locked and
    mapped into the device with ``cuMemHostRegister``, without copying."""
    size = int(array.nbytes)
    if size == 0:
        return CudaStorage("imported", 0, 0, array, 0, None)
    api = ctx.api
    ctx.make_current()
    host = int(array.ctypes.data)
    flags = CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP
    if not array.flags.writeable:
        flags |= CU_MEMHOSTREGISTER_READ_ONLY
    check(api.cuMemHostRegister(host, size, flags), f"cuMemHostRegister({size} bytes)")
    try:
        device = int(check(api.cuMemHostGetDevicePointer(host, 0), "cuMemHostGetDevicePointer"))
    except BaseException:
        api.cuMemHostUnregister(host)
        raise
    return CudaStorage("imported", size, device, array, host, _unregister_host, ctx, host, array)


class CudaAllocatorBackend:
    """``AllocatorBackend`` of one GPU: a device-local heap and a pinned host heap.

    Requests for host-visible memory, or with a mapping usage, go to the host heap; all
    others to device memory. Thread-safe (no mutable state)."""

    def __init__(self, ctx: CudaContext, device_memory: int) -> None:
        self.ctx = ctx
        self.max_allocation_size = device_memory
        self._heaps = [
            MemoryHeap(
                type=DEVICE_TYPE,
                allowed_usage=_DEVICE_USAGE,
                max_allocation_size=device_memory,
                min_alignment=DEVICE_ALIGNMENT,
            ),
            MemoryHeap(
                type=HOST_TYPE,
                allowed_usage=_HOST_USAGE,
                max_allocation_size=device_memory,
                min_alignment=HOST_ALIGNMENT,
            ),
        ]

    def heaps(self) -> list[MemoryHeap]:
        return list(self._heaps)

    @staticmethod
    def wants_host(params: BufferParams) -> bool:
        """Whether ``params`` asks for host-visible (pinned host) memory."""
        return bool(params.type & MemoryType.HOST_VISIBLE) or bool(
            params.usage & (BufferUsage.MAPPING_SCOPED | BufferUsage.MAPPING_PERSISTENT)
        )

    def query_buffer_compatibility(
        self, params: BufferParams, size: int
    ) -> tuple[BufferCompatibility, BufferParams, int]:
        """ALLOCATABLE up to the GPU's memory size and a page of alignment; the params say
        the heap's exact type (host memory adds the mapping usages)."""
        host = self.wants_host(params)
        compat = _COMPATIBLE
        limit = HOST_ALIGNMENT if host else DEVICE_ALIGNMENT
        if size > self.max_allocation_size or params.min_alignment > limit:
            compat = BufferCompatibility.NONE
        if host:
            memory_type = HOST_TYPE | (params.type & MemoryType.HOST_CACHED)
            usage = BufferUsage(params.usage | BufferUsage.MAPPING_SCOPED)
            usage |= BufferUsage.MAPPING_PERSISTENT
        else:
            memory_type = DEVICE_TYPE
            usage = BufferUsage(params.usage & ~_MAPPABLE)
        adjusted = attrs.evolve(params, type=MemoryType(memory_type), usage=usage)
        return compat, adjusted, size

    def allocate(self, params: BufferParams, size: int) -> tuple[Any, MemoryType]:
        if size > self.max_allocation_size:
            raise ResourceExhaustedError(
                f"allocation of {size} bytes exceeds the GPU's {self.max_allocation_size} bytes"
            )
        if self.wants_host(params):
            return allocate_host(self.ctx, size), params.type
        return allocate_device(self.ctx, size), params.type

    def import_host(self, params: BufferParams, array: Any) -> tuple[Any, MemoryType]:
        return register_host(self.ctx, array), MemoryType(HOST_TYPE)
