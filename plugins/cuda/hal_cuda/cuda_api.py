"""The one boundary between hal-cuda and the CUDA driver API.

The driver API is reached through NVIDIA's maintained bindings, ``cuda.bindings.driver``
(distribution ``cuda-bindings``, the ``hal-cuda[bindings]`` extra), imported on first use
and never at plugin import, so ``hal info`` and CI work on machines without CUDA. Every
driver call in this plugin goes through the module ``driver_api()`` returns, and every
``CUresult`` becomes a ``HalError`` in ``cuda_error`` (one mapping for the whole plugin).

Why cuda-bindings rather than hand-written ctypes/cffi declarations: its calls are Cython
wrappers over ``libcuda``, measured on the H200 against a ctypes call of the same function
(``tools/driver_call_cost.py``; the figures are in ``docs/cuda.md``), and it tracks new
driver entry points (graphs, ``cuFuncGetParamInfo``) without declarations of our own.

Contexts: each GPU is used through its primary context. A CUDA call needs a current
context on the calling thread; ``CudaContext.make_current`` sets it once per thread (a
thread-local check, no driver call when it is already current).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

from hal_core import HalError, StatusCode, UnavailableError

__all__ = [
    "CudaContext",
    "check",
    "cuda_error",
    "driver_api",
    "error_name",
    "hot_calls",
    "thread_context",
]

_FIX_BINDINGS = (
    "install NVIDIA's driver-API bindings with `pip install 'hal-cuda[bindings]'` "
    "(the cuda-bindings distribution, 12.4 or newer)"
)
_FIX_DRIVER = (
    "install the NVIDIA driver (libcuda.so.1 must be loadable: check `nvidia-smi` and "
    "`ldconfig -p | grep libcuda`) on a machine with an NVIDIA GPU"
)

LAUNCH_ENV = "HAL_CUDA_LAUNCH"
"""``bindings``: kernel launches go through cuda-bindings instead of ``HotCalls.launch``."""

_lock = threading.Lock()
_api: Any = None
_load_error: HalError | None = None


def driver_api() -> Any:
    """The initialised ``cuda.bindings.driver`` module (``cuInit`` has succeeded).

    UNAVAILABLE, naming what was looked for and how to fix it, when the module does not
    import, ``libcuda.so.1`` cannot be loaded, or ``cuInit`` fails (no GPU). The outcome
    is remembered: later calls answer at once. Thread-safe."""
    api = _api
    if api is not None:
        return api
    if _load_error is not None:
        raise _load_error.clone()
    with _lock:
        return _load_locked()


def _load_locked() -> Any:
    """Import and initialise the bindings. The caller holds ``_lock``."""
    global _api, _load_error
    if _api is not None:
        return _api
    if _load_error is not None:
        raise _load_error.clone()
    try:
        from cuda.bindings import driver as cu  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:
        _load_error = UnavailableError(
            f"the cuda driver needs the Python module cuda.bindings, which did not import "
            f"({type(exc).__name__}: {exc}); {_FIX_BINDINGS}"
        )
        raise _load_error.clone() from None
    try:
        result = cu.cuInit(0)
    except Exception as exc:  # the bindings raise when libcuda.so.1 is not found
        _load_error = UnavailableError(
            f"the cuda driver could not load the CUDA driver library libcuda.so.1 "
            f"({type(exc).__name__}: {exc}); {_FIX_DRIVER}"
        )
        raise _load_error.clone() from None
    err = result[0]
    if err:
        _load_error = UnavailableError(
            f"cuInit(0) failed with {error_name(err, cu)} ({int(err)}): no usable NVIDIA GPU "
            f"was found; {_FIX_DRIVER}, and check that CUDA_VISIBLE_DEVICES does not hide it"
        )
        raise _load_error.clone()
    _api = cu
    return cu


def reset_for_tests(api: Any = None, error: HalError | None = None) -> None:
    """Forget (or set) the loaded module or load error: tests only."""
    global _api, _load_error
    with _lock:
        _api = api
        _load_error = error


def error_name(err: Any, api: Any = None) -> str:
    """``CUDA_ERROR_...`` for a ``CUresult`` (its number when the driver does not know it)."""
    name = getattr(err, "name", None)  # cold path: only when building an error message
    if isinstance(name, str):
        return name
    return f"CUresult {int(err)}"


# CUresult values (cuda.h) and the status codes they mean to a HAL user.
_CODES: dict[int, StatusCode] = {
    1: StatusCode.INVALID_ARGUMENT,  # CUDA_ERROR_INVALID_VALUE
    2: StatusCode.RESOURCE_EXHAUSTED,  # CUDA_ERROR_OUT_OF_MEMORY
    3: StatusCode.UNAVAILABLE,  # CUDA_ERROR_NOT_INITIALIZED
    4: StatusCode.UNAVAILABLE,  # CUDA_ERROR_DEINITIALIZED
    100: StatusCode.UNAVAILABLE,  # CUDA_ERROR_NO_DEVICE
    101: StatusCode.NOT_FOUND,  # CUDA_ERROR_INVALID_DEVICE
    200: StatusCode.INVALID_ARGUMENT,  # CUDA_ERROR_INVALID_IMAGE
    201: StatusCode.FAILED_PRECONDITION,  # CUDA_ERROR_INVALID_CONTEXT
    209: StatusCode.INCOMPATIBLE,  # CUDA_ERROR_NO_BINARY_FOR_GPU
    218: StatusCode.INVALID_ARGUMENT,  # CUDA_ERROR_INVALID_PTX
    221: StatusCode.UNAVAILABLE,  # CUDA_ERROR_JIT_COMPILER_NOT_FOUND
    222: StatusCode.INCOMPATIBLE,  # CUDA_ERROR_UNSUPPORTED_PTX_VERSION
    400: StatusCode.INVALID_ARGUMENT,  # CUDA_ERROR_INVALID_HANDLE
    500: StatusCode.NOT_FOUND,  # CUDA_ERROR_NOT_FOUND
    701: StatusCode.RESOURCE_EXHAUSTED,  # CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
    702: StatusCode.DEADLINE_EXCEEDED,  # CUDA_ERROR_LAUNCH_TIMEOUT
    712: StatusCode.ALREADY_EXISTS,  # CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED
    800: StatusCode.PERMISSION_DENIED,  # CUDA_ERROR_NOT_PERMITTED
    801: StatusCode.UNIMPLEMENTED,  # CUDA_ERROR_NOT_SUPPORTED
}

# Faults raised by a kernel: CUDA makes them sticky, so the context is unusable until the
# process ends and every later call on it reports the same error.
_STICKY = frozenset({700, 710, 714, 715, 716, 717, 718, 719})


def is_sticky(err: Any) -> bool:
    """Whether ``err`` is a kernel fault that leaves the context unusable."""
    return int(err) in _STICKY


def cuda_error(err: Any, what: str) -> HalError:
    """The ``HalError`` for a failed driver call: its code by ``_CODES`` (INTERNAL for a
    kernel fault or anything unlisted), its message naming the call and the CUDA error."""
    number = int(err)
    code = _CODES.get(number, StatusCode.INTERNAL)
    message = f"{what} failed: {error_name(err)} ({number})"
    if number in _STICKY:
        message += (
            "; a kernel faulted, which CUDA makes sticky: this GPU context reports the fault "
            "on every later call until the process ends (create the device in a new process)"
        )
    return HalError(code, message)


def check(result: Any, what: str) -> Any:
    """The value of a ``cuda.bindings`` call result ``(err, value)`` (or ``(err,)`` ->
    None, ``(err, a, b)`` -> ``(a, b)``); raises ``cuda_error`` when ``err`` is not
    CUDA_SUCCESS."""
    err = result[0]
    if err:
        raise cuda_error(err, what)
    n = len(result)
    if n == 1:
        return None
    if n == 2:
        return result[1]
    return result[1:]


class _ThreadContext(threading.local):
    current: Any = None


_thread_context = _ThreadContext()
thread_context = _thread_context
"""``thread_context.current``: the ``CudaContext`` current on the calling thread (or None).
A hot path tests it inline and calls ``make_current`` only when it is another."""


class CudaContext:
    """One GPU's primary context, retained while this object is open.

    ``make_current()`` is the per-thread step every thread that calls the driver for this
    GPU runs first; it costs one thread-local read when the context is already current.
    Thread-safe."""

    __slots__ = ("api", "device", "handle", "ordinal", "_closed")

    def __init__(self, api: Any, ordinal: int) -> None:
        self.api = api
        self.ordinal = ordinal
        self.device = check(api.cuDeviceGet(ordinal), f"cuDeviceGet({ordinal})")
        self.handle = check(
            api.cuDevicePrimaryCtxRetain(self.device), f"cuDevicePrimaryCtxRetain({ordinal})"
        )
        self._closed = False
        self.make_current()

    def make_current(self) -> None:
        """Make this context current on the calling thread. No lock needed."""
        if _thread_context.current is not self:
            check(self.api.cuCtxSetCurrent(self.handle), "cuCtxSetCurrent")
            _thread_context.current = self

    def close(self) -> None:
        """Release the primary context (idempotent). Work on it must have finished."""
        if self._closed:
            return
        self._closed = True
        if _thread_context.current is self:
            _thread_context.current = None
        self.api.cuDevicePrimaryCtxRelease(self.device)


# -- calls that keep the GIL ------------------------------------------------------------------
#
# cuda-bindings releases the GIL around every driver call. For the short, non-blocking
# calls that queue stream work, that release is the expensive part when another Python
# thread wants the GIL (the completion thread, woken as work completes): each release
# hands the GIL over and each return waits to get it back, two thread switches per call.
# These calls go through ``ctypes.PyDLL`` instead, which keeps the GIL, so a submitting
# thread runs its batch without switches and the completion thread takes the GIL in
# larger slices. One such call costs a little more than through the bindings when no
# other thread wants the GIL (H200: cuEventRecord 1.02 us against 0.78, cuMemsetD32Async
# 2.17 against 1.77), and a chain of fills or dispatches gains a third (edge.fill4's chain
# 21 us per edge against 32, ``tools/profile_paths.py``). Blocking calls
# (synchronisations, pageable copies) stay on the bindings: they must let other threads
# run.
#
# Kernel launches: through ctypes with ``argtypes`` (eleven conversions in Python per
# call) a launch cost 7.2 us against the bindings' 4.4 on the H200. ``HotCalls.launch``
# is ``cuLaunchKernel`` WITHOUT ``argtypes``: the caller passes the function and the
# parameter array as ``ctypes.c_void_p`` made once per launch descriptor, the stream as a
# ``c_void_p`` and the grid, block and shared-memory sizes as Python ints, which ctypes
# converts in C (a C ``int`` has the ``unsigned int`` parameters' size and, below 2**31,
# their value; CUDA's grid limits are below it). Measured on a loaded 2-core CI-class
# machine over a C function of the same arguments: 5.6 us per call against 12.9 with the
# ``argtypes`` above. ``HAL_CUDA_LAUNCH=bindings`` in the environment (read
# when a device is created) keeps launches on the bindings, for comparison
# (``tools/profile_paths.py`` measures both).


class _Handle(ctypes.c_void_p):
    """A driver handle argument: an int, or a cuda-bindings handle object (``int()``)."""

    @classmethod
    def from_param(cls, obj: Any) -> Any:
        if obj.__class__ is int:
            return ctypes.c_void_p(obj)
        return ctypes.c_void_p(int(obj))


def _as_result(err: int) -> tuple:
    """A C ``CUresult`` as cuda-bindings returns it, ``(err,)``."""
    return _OK if err == 0 else (err,)


_OK = (0,)
_U32 = ctypes.c_uint
_SIZE = ctypes.c_size_t
_PTR = ctypes.c_uint64
_HOT_CALLS: dict[str, tuple] = {
    "cuEventRecord": (_Handle, _Handle),
    "cuEventQuery": (_Handle,),
    "cuStreamWaitEvent": (_Handle, _Handle, _U32),
    "cuMemsetD8Async": (_PTR, ctypes.c_ubyte, _SIZE, _Handle),
    "cuMemsetD16Async": (_PTR, ctypes.c_ushort, _SIZE, _Handle),
    "cuMemsetD32Async": (_PTR, _U32, _SIZE, _Handle),
    "cuMemcpyAsync": (_PTR, _PTR, _SIZE, _Handle),
}


class HotCalls:
    """The driver API for the submitting and completion paths: ``_HOT_CALLS`` through
    ``ctypes.PyDLL`` (same arguments and ``(CUresult,)`` results as cuda-bindings),
    everything else the bindings' own function."""

    def __init__(self, api: Any, library: Any, raw_launch: bool = True) -> None:
        """``raw_launch``: set ``launch`` (``cuLaunchKernel`` without ``argtypes``);
        otherwise it is None and launches go through the bindings."""
        self._api = api
        for name, argtypes in _HOT_CALLS.items():
            fn = getattr(library, name)
            fn.argtypes = argtypes
            fn.restype = _as_result
            setattr(self, name, fn)
        self.launch: Any = None
        if raw_launch:
            # A separate function object: the attribute lookup on ``library`` hands out
            # one shared object per name, whose ``argtypes`` others may set.
            address = ctypes.cast(library.cuLaunchKernel, ctypes.c_void_p).value or 0
            launch: Any = ctypes.PYFUNCTYPE(ctypes.c_int)(address)
            launch.argtypes = None
            self.launch = launch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)


def hot_calls(api: Any) -> Any:
    """``HotCalls`` over ``api`` when ``api`` is cuda-bindings' driver module and
    ``libcuda.so.1`` loads (the bindings handles are the library's), else ``api``
    itself (a stand-in driver, or no library to call)."""
    if getattr(api, "__name__", None) != "cuda.bindings.driver":
        return api
    try:
        library = ctypes.PyDLL("libcuda.so.1")
    except OSError:
        return api
    return HotCalls(api, library, os.environ.get(LAUNCH_ENV, "ctypes") != "bindings")
