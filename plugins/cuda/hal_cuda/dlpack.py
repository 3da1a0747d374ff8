"""DLPack interchange of CUDA device memory: a CuPy or PyTorch tensor as a HAL buffer, and
a HAL buffer as a tensor, without a copy.

* ``import_dlpack(device, tensor)``: a buffer over the tensor's memory (any object with
  ``__dlpack__``, e.g. ``torch.Tensor`` or ``cupy.ndarray``, on the device's GPU, C
  contiguous). The buffer keeps the producer's tensor alive; its DLPack deleter runs when
  the buffer's storage is released or collected.
* ``export_dlpack(buffer)``: an object with ``__dlpack__`` / ``__dlpack_device__`` viewing
  the buffer's bytes as a 1-D ``uint8`` tensor (``torch.from_dlpack(export_dlpack(b))``).
  The tensor keeps the buffer alive until its consumer calls the DLPack deleter (a
  capsule never consumed keeps it alive for the life of the process).

Synchronisation is the caller's: DLPack's ``stream`` argument is accepted and ignored, and
HAL work on the buffer is ordered by semaphores, so wait on the semaphore of the last HAL
write before handing the memory to another framework (and synchronise that framework
before HAL work reads what it wrote). Layouts follow the DLPack 0.8 C ABI
(``dlpack.h``: ``DLManagedTensor``).
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from typing import Any

from hal_core import (
    BufferUsage,
    InvalidArgumentError,
    MemoryAccess,
    MemoryType,
    PermissionDeniedError,
)
from hal_core.backend import buffer_storage, new_buffer

K_DL_CUDA = 2
K_DL_CUDA_HOST = 3
K_DL_UINT = 1


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [
    ("dl_tensor", DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", _DELETER),
]

_pythonapi = ctypes.pythonapi
_pythonapi.PyCapsule_IsValid.restype = ctypes.c_int
_pythonapi.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
_pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_pythonapi.PyCapsule_SetName.restype = ctypes.c_int
_pythonapi.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
_pythonapi.PyCapsule_New.restype = ctypes.py_object
_pythonapi.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

_USAGE = BufferUsage.TRANSFER | BufferUsage.DISPATCH | BufferUsage.SHARING_EXPORT


class DlpackStorage:
    """Storage over a producer's DLPack tensor: calls its deleter once when released or
    collected. ``owner`` (the producer's object) stays referenced until then."""

    __slots__ = ("nbytes", "host_array", "address", "_finalizer", "__weakref__")

    def __init__(self, address: int, nbytes: int, managed: int, owner: Any) -> None:
        self.address = address
        self.nbytes = nbytes
        self.host_array = None
        self._finalizer = weakref.finalize(self, _delete_managed, managed, owner)

    def release(self) -> None:
        self._finalizer()


def _delete_managed(managed: int, owner: Any) -> None:
    del owner
    tensor = DLManagedTensor.from_address(managed)
    if tensor.deleter:
        tensor.deleter(ctypes.cast(managed, ctypes.POINTER(DLManagedTensor)))


def import_dlpack(device: Any, tensor: Any) -> Any:
    """A buffer of ``device`` (a ``cuda://`` device) over ``tensor``'s GPU memory, no copy.
    INVALID_ARGUMENT for a tensor that is not on this device's GPU or not contiguous."""
    backend = device.backend
    ctx = getattr(backend, "ctx", None)  # cold path: tells a cuda device from any other
    if ctx is None:
        raise InvalidArgumentError(f"import_dlpack needs a cuda:// device, got {device.uri}")
    capsule = tensor.__dlpack__(stream=None) if hasattr(tensor, "__dlpack__") else tensor
    if not _pythonapi.PyCapsule_IsValid(capsule, b"dltensor"):
        raise InvalidArgumentError("import_dlpack needs a DLPack tensor (an unused 'dltensor')")
    managed = _pythonapi.PyCapsule_GetPointer(capsule, b"dltensor")
    dl = DLManagedTensor.from_address(managed).dl_tensor
    if dl.device.device_type != K_DL_CUDA or dl.device.device_id != ctx.ordinal:
        raise InvalidArgumentError(
            f"the tensor lives on DLPack device ({dl.device.device_type}, "
            f"{dl.device.device_id}); this device is CUDA GPU {ctx.ordinal} (type {K_DL_CUDA})"
        )
    count = 1
    for i in range(dl.ndim):
        count *= dl.shape[i]
    itemsize = (dl.dtype.bits * dl.dtype.lanes + 7) // 8
    if dl.strides:
        expected = 1
        for i in reversed(range(dl.ndim)):
            if dl.shape[i] != 1 and dl.strides[i] != expected:
                raise InvalidArgumentError("import_dlpack needs a C-contiguous tensor")
            expected *= dl.shape[i]
    # Consumed: the producer must not free it when the capsule goes; the deleter is ours.
    _pythonapi.PyCapsule_SetName(capsule, b"used_dltensor")
    nbytes = count * itemsize
    storage = DlpackStorage(int(dl.data or 0) + int(dl.byte_offset), nbytes, managed, tensor)
    return new_buffer(
        storage,
        memory_type=MemoryType.DEVICE_LOCAL,
        allowed_usage=_USAGE,
        allowed_access=MemoryAccess.ALL,
        allocation_size=nbytes,
        device=device,
    )


# Exported tensors alive in a consumer: manager_ctx -> (managed struct, shape, buffer).
_exports: dict[int, tuple[Any, Any, Any]] = {}
_exports_lock = threading.Lock()
_serial = iter(range(1, 1 << 62))


@_DELETER
def _export_deleter(managed: Any) -> None:
    key = int(managed.contents.manager_ctx or 0)
    with _exports_lock:
        _exports.pop(key, None)


class DlpackExport:
    """What ``export_dlpack`` returns: a one-use DLPack producer for one buffer."""

    def __init__(self, buffer: Any, ordinal: int) -> None:
        self._buffer = buffer
        self._ordinal = ordinal

    def __dlpack_device__(self) -> tuple[int, int]:
        return (K_DL_CUDA, self._ordinal)

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        buffer = self._buffer
        address = buffer_storage(buffer).address + buffer.byte_offset
        shape = (ctypes.c_int64 * 1)(buffer.byte_length)
        managed = DLManagedTensor()
        managed.dl_tensor.data = address
        managed.dl_tensor.device = DLDevice(K_DL_CUDA, self._ordinal)
        managed.dl_tensor.ndim = 1
        managed.dl_tensor.dtype = DLDataType(K_DL_UINT, 8, 1)
        managed.dl_tensor.shape = shape
        managed.dl_tensor.strides = None
        managed.dl_tensor.byte_offset = 0
        key = next(_serial)
        managed.manager_ctx = key
        managed.deleter = _export_deleter
        with _exports_lock:
            _exports[key] = (managed, shape, buffer)
        return _pythonapi.PyCapsule_New(ctypes.addressof(managed), b"dltensor", None)


def export_dlpack(buffer: Any) -> DlpackExport:
    """A DLPack producer viewing ``buffer``'s device memory as uint8 (no copy).
    PERMISSION_DENIED for a buffer of another driver or without device memory."""
    ctx = getattr(buffer.device.backend, "ctx", None) if buffer.device is not None else None
    if ctx is None:
        raise PermissionDeniedError("export_dlpack needs a buffer of a cuda:// device")
    return DlpackExport(buffer, ctx.ordinal)
