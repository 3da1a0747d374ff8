"""The Python side of ``hal_cuda._native_lane``, the per-op submit lane in C.

``make_lane(backend)`` gives a device its lane (``Lane.submit`` replaces the Python
``submit`` for the ops the lane takes; every other op goes through the Python path
unchanged) or None: without the extension (no C compiler when the plugin was installed,
a free-threaded Python) or with ``HAL_CUDA_NATIVE=0`` in the environment (read when a
device is created). ``describe`` says which path a device runs and why.

The lane calls the driver through function pointers: ``libcuda.so.1``'s own symbols when
the driver API is cuda-bindings (the handles it gives are the library's), else ctypes
callbacks into the driver object's Python functions (a stand-in driver, for tests where
no GPU exists), kept alive by the lane.

``discard(inflight, entries)`` drops an op's in-flight entries at completion, each only
if it is still the published one; the check and the deletion are one atomic step (in C
under the GIL, or in Python under the hand-over lock, which every publisher holds).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, Callable

from hal_core import QueueOpKind
from hal_core.backend import buffer_storage, op_error, signal_all, wait_reached

from .cuda_api import cuda_error
from .stream_ops import CudaProgram, WeakBufferRef, fill, resolve

NATIVE_ENV = "HAL_CUDA_NATIVE"
"""``0``: devices created from now on run the Python submit path."""

native: Any
unavailable_reason = ""
try:
    from . import _native_lane as native  # type: ignore[attr-defined,no-redef,unused-ignore]
except ImportError as exc:  # not built: no compiler at install, or a free-threaded Python
    native = None
    unavailable_reason = f"hal_cuda._native_lane is not built ({exc})"

if native is not None:
    from hal_core import CancelledError

    native.init(
        buffer_storage,
        wait_reached,
        op_error,
        cuda_error,
        CancelledError,
        WeakBufferRef,
        resolve,
        fill,
        CudaProgram,
        signal_all,
        QueueOpKind.FILL,
        QueueOpKind.UPDATE,
        QueueOpKind.COPY,
        QueueOpKind.DISPATCH,
        QueueOpKind.EXECUTE,
    )

_H = ctypes.c_uint64  # a handle or device pointer, as the callbacks receive it
_U32 = ctypes.c_uint
_SIZE = ctypes.c_size_t
# (Python name, libcuda symbol, the callback's argument types), in the order Lane takes.
_DRIVER: tuple[tuple[str, str, tuple], ...] = (
    ("cuEventRecord", "cuEventRecord", (_H, _H)),
    ("cuStreamWaitEvent", "cuStreamWaitEvent", (_H, _H, _U32)),
    ("cuMemsetD8Async", "cuMemsetD8Async", (_H, ctypes.c_ubyte, _SIZE, _H)),
    ("cuMemsetD16Async", "cuMemsetD16Async", (_H, ctypes.c_ushort, _SIZE, _H)),
    ("cuMemsetD32Async", "cuMemsetD32Async", (_H, _U32, _SIZE, _H)),
    ("cuMemcpyAsync", "cuMemcpyAsync", (_H, _H, _SIZE, _H)),
    # The unversioned symbol is the CUDA 3.1 one with 32-bit device pointers.
    ("cuMemcpyHtoDAsync", "cuMemcpyHtoDAsync_v2", (_H, _H, _SIZE, _H)),
    ("cuLaunchKernel", "cuLaunchKernel", (_H,) + (_U32,) * 7 + (_H, _H, _H)),
)
_CUDA_ERROR_UNKNOWN = 999


def _callback(api: Any, name: str, argtypes: tuple) -> Any:
    """A C function pointer that calls ``api.<name>`` (looked up at each call, as the
    Python path does) and returns its ``CUresult``; an exception becomes
    CUDA_ERROR_UNKNOWN (it must not unwind through C)."""

    def call(*args: Any) -> int:
        try:
            return int(getattr(api, name)(*args)[0])
        except BaseException:
            return _CUDA_ERROR_UNKNOWN

    return ctypes.CFUNCTYPE(ctypes.c_int, *argtypes)(call)


def driver_table(api: Any) -> tuple[tuple[int, ...], Any] | None:
    """(the lane's function addresses, what keeps them valid) for ``api``, or None when
    ``api`` is cuda-bindings but ``libcuda.so.1`` does not load through ctypes."""
    if getattr(api, "__name__", None) == "cuda.bindings.driver":
        try:
            library = ctypes.PyDLL("libcuda.so.1")
        except OSError:
            return None
        addresses = tuple(
            ctypes.cast(getattr(library, symbol), ctypes.c_void_p).value or 0
            for _name, symbol, _types in _DRIVER
        )
        return addresses, library
    callbacks = [_callback(api, name, types) for name, _symbol, types in _DRIVER]
    addresses = tuple(ctypes.cast(cb, ctypes.c_void_p).value or 0 for cb in callbacks)
    return addresses, callbacks


def make_lane(backend: Any, fallback: Callable[[Any], None]) -> tuple[Any, str]:
    """(the device's lane or None, a line saying which submit path it runs)."""
    if native is None:
        return None, f"python ({unavailable_reason})"
    if os.environ.get(NATIVE_ENV, "1") == "0":
        return None, f"python ({NATIVE_ENV}=0)"
    table = driver_table(backend.api)
    if table is None:
        return None, "python (libcuda.so.1 does not load through ctypes)"
    lane = native.Lane(backend, fallback, table[0], table[1])
    return lane, "native (hal_cuda._native_lane)"


def _discard_locked(lock: Any, inflight: dict, entries: Any) -> None:
    with lock:
        for entry in (entries,) if entries.__class__ is tuple else entries:
            sem = entry[3]
            if inflight.get(sem) is entry:
                del inflight[sem]


def discarder(lock: threading.Lock, inflight: dict, in_c: bool) -> Callable[[Any], None]:
    """``discard(entries)`` for one device: its in-flight table and hand-over lock;
    ``in_c``: through the extension (the device runs the native lane)."""
    if in_c and native is not None:
        drop = native.discard
        return lambda entries: drop(inflight, entries)
    return lambda entries: _discard_locked(lock, inflight, entries)
