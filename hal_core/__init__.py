"""hal_core: a hardware abstraction layer for accelerators, in the shape of IREE's HAL.

This module only re-exports; implementations live in private modules. Backend authors use
``hal_core.backend`` and ``hal_core.hookspecs``.
"""

from ._allocator import Allocator, AllocatorStatistics
from ._buffer import Buffer, BufferMapping, BufferView, ElementType
from ._device import Device
from ._driver import DEVICE_ID_DEFAULT, DeviceInfo, Driver
from ._file import File
from ._memory import (
    WHOLE_BUFFER,
    BufferCompatibility,
    BufferParams,
    BufferUsage,
    MemoryAccess,
    MemoryHeap,
    MemoryType,
    PlacementFlags,
    QueueAffinity,
)
from ._queue import (
    AllocaFlags,
    DeallocaFlags,
    HostCallContext,
    HostCallFlags,
    QueueOpKind,
)
from ._registry import PluginRecord, Registry, create_device, registry
from ._semaphore import (
    FAILURE_VALUE,
    MAX_VALUE,
    Semaphore,
    WaitMode,
    wait_all,
    wait_any,
)
from ._status import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DataLossError,
    DeadlineExceededError,
    DeferredError,
    FailedPreconditionError,
    HalError,
    IncompatibleError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StatusCode,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
    error_for,
)
from ._uri import DeviceUri
from .hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "AbortedError",
    "AllocaFlags",
    "Allocator",
    "AllocatorStatistics",
    "AlreadyExistsError",
    "Buffer",
    "BufferCompatibility",
    "BufferMapping",
    "BufferParams",
    "BufferUsage",
    "BufferView",
    "CancelledError",
    "DEVICE_ID_DEFAULT",
    "DataLossError",
    "DeadlineExceededError",
    "DeallocaFlags",
    "DeferredError",
    "Device",
    "DeviceInfo",
    "DeviceUri",
    "Driver",
    "ElementType",
    "FAILURE_VALUE",
    "FailedPreconditionError",
    "File",
    "HalError",
    "HostCallContext",
    "HostCallFlags",
    "IncompatibleError",
    "InternalError",
    "InvalidArgumentError",
    "MAX_VALUE",
    "MemoryAccess",
    "MemoryHeap",
    "MemoryType",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "PlacementFlags",
    "PluginRecord",
    "QueueAffinity",
    "QueueOpKind",
    "Registry",
    "ResourceExhaustedError",
    "Semaphore",
    "StatusCode",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "WHOLE_BUFFER",
    "WaitMode",
    "__version__",
    "create_device",
    "error_for",
    "hookimpl",
    "registry",
    "wait_all",
    "wait_any",
]
