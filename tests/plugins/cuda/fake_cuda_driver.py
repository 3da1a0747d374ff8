"""A stand-in for ``cuda.bindings.driver`` over host memory, for logic tests of hal-cuda
where no GPU exists (CI). It implements the calls the driver makes for transfers, memory,
events and streams with cuda-bindings' calling convention (a tuple ``(CUresult, ...)``):
"device" memory is host memory whose address is the device pointer, stream work runs at
once on the calling thread (so every event is reached when recorded), and kernels, modules
and graph capture are refused (CUDA_ERROR_NOT_SUPPORTED). It is no model of CUDA's
concurrency: the GPU tests (``test_cuda_gpu.py``) run the real driver."""

from __future__ import annotations

import ctypes
import itertools
import threading
from typing import Any

import numpy as np

NOT_SUPPORTED = 801
INVALID_VALUE = 1
OUT_OF_MEMORY = 2

TOTAL_MEMORY = 1 << 30


class _Uuid:
    bytes = bytes(range(16))


class FakeDriver:
    """One fake GPU ("Fake GPU", sm_90, 1 GiB)."""

    def __init__(self) -> None:
        self._memory: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._handles = itertools.count(1)
        self.allocated = 0
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("cu"):
            return lambda *args: (NOT_SUPPORTED,)
        raise AttributeError(name)

    # enum constructors the driver calls
    @staticmethod
    def CUdevice_attribute(value: int) -> int:
        return value

    @staticmethod
    def CUstreamCaptureMode(value: int) -> int:
        return value

    def cuInit(self, flags: int) -> tuple:
        return (0,)

    def cuDeviceGetCount(self) -> tuple:
        return (0, 1)

    def cuDeviceGet(self, ordinal: int) -> tuple:
        return (0, ordinal) if ordinal == 0 else (101, None)

    def cuDeviceGetName(self, length: int, dev: int) -> tuple:
        return (0, b"Fake GPU\0")

    def cuDeviceGetUuid(self, dev: int) -> tuple:
        return (0, _Uuid())

    def cuDeviceGetAttribute(self, attr: int, dev: int) -> tuple:
        return (0, {75: 9, 76: 0, 16: 4}.get(int(attr), 0))

    def cuDeviceTotalMem(self, dev: int) -> tuple:
        return (0, TOTAL_MEMORY)

    def cuDevicePrimaryCtxRetain(self, dev: int) -> tuple:
        return (0, "ctx")

    def cuDevicePrimaryCtxRelease(self, dev: int) -> tuple:
        return (0,)

    def cuCtxSetCurrent(self, ctx: Any) -> tuple:
        return (0,)

    def _handle(self) -> tuple:
        return (0, next(self._handles))

    cuStreamCreate = cuEventCreate = lambda self, flags: self._handle()  # noqa: E731

    def _ok(self, *args: Any) -> tuple:
        return (0,)

    cuStreamDestroy = cuEventDestroy = cuEventRecord = _ok
    cuEventQuery = cuEventSynchronize = cuStreamWaitEvent = cuStreamSynchronize = _ok

    def cuMemGetInfo(self) -> tuple:
        return (0, TOTAL_MEMORY - self.allocated, TOTAL_MEMORY)

    def _allocate(self, size: int) -> tuple:
        with self._lock:
            if self.allocated + size > TOTAL_MEMORY:
                return (OUT_OF_MEMORY, 0)
            array = np.zeros(size, np.uint8)
            address = int(array.ctypes.data)
            self._memory[address] = array
            self.allocated += size
        return (0, address)

    def _free(self, address: int) -> tuple:
        with self._lock:
            array = self._memory.pop(int(address), None)
            if array is None:
                return (INVALID_VALUE,)
            self.allocated -= array.nbytes
        return (0,)

    def cuMemAlloc(self, size: int) -> tuple:
        return self._allocate(size)

    def cuMemHostAlloc(self, size: int, flags: int) -> tuple:
        return self._allocate(size)

    cuMemFree = cuMemFreeHost = _free

    def cuMemHostGetDevicePointer(self, host: int, flags: int) -> tuple:
        return (0, int(host))

    cuMemHostRegister = cuMemHostUnregister = _ok

    @staticmethod
    def _set(address: int, value: int, count: int, size: int) -> tuple:
        dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32}[size]
        ctype = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_uint32}[size]
        if count:
            view = np.ctypeslib.as_array((ctype * count).from_address(int(address)))
            view[:] = dtype(value)
        return (0,)

    def cuMemsetD8(self, address: int, value: int, count: int) -> tuple:
        return self._set(address, value, count, 1)

    def cuMemsetD8Async(self, address: int, value: int, count: int, stream: Any) -> tuple:
        return self._set(address, value, count, 1)

    def cuMemsetD16Async(self, address: int, value: int, count: int, stream: Any) -> tuple:
        if address % 2:
            return (INVALID_VALUE,)
        return self._set(address, value, count, 2)

    def cuMemsetD32Async(self, address: int, value: int, count: int, stream: Any) -> tuple:
        if address % 4:
            return (INVALID_VALUE,)
        return self._set(address, value, count, 4)

    def cuMemsetD2D8Async(
        self, address: int, pitch: int, value: int, width: int, height: int, stream: Any
    ) -> tuple:
        for row in range(height):
            self._set(address + row * pitch, value, width, 1)
        return (0,)

    @staticmethod
    def _copy(target: int, source: int, length: int) -> tuple:
        ctypes.memmove(int(target), int(source), int(length))
        return (0,)

    def cuMemcpyAsync(self, target: int, source: int, length: int, stream: Any) -> tuple:
        return self._copy(target, source, length)

    def cuMemcpyHtoDAsync(self, target: int, source: int, length: int, stream: Any) -> tuple:
        return self._copy(target, source, length)

    def cuMemcpyHtoD(self, target: int, source: int, length: int) -> tuple:
        return self._copy(target, source, length)

    def cuMemcpyDtoH(self, target: int, source: int, length: int) -> tuple:
        return self._copy(target, source, length)
