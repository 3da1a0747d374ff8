"""hal_core: a hardware abstraction layer for accelerators, in the shape of IREE's HAL.

This module only re-exports the user tier (devices, semaphores, buffers, command buffers,
executables, files, device groups, pools, streams, profiling hooks, errors and flags);
implementations live in private modules. What only backend authors and tools need (the
backend contract, frontier axes and trackers, slab providers, topology records, registry
internals) is the backend tier, ``hal_core.backend``; replay is ``hal_core.replay``.
"""

from ._allocator import Allocator, AllocatorStatistics
from ._buffer import Buffer, BufferMapping, BufferView, ElementType
from ._command_buffer import (
    MAX_UPDATE_SIZE,
    BindingTable,
    BufferBinding,
    BufferRef,
    CommandBuffer,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    DispatchFlags,
    ExecuteFlags,
)
from ._device import Device
from ._device_group import MAX_GROUP_DEVICES, DeviceGroup, create_device_group
from ._driver import DEVICE_ID_DEFAULT, DeviceInfo, Driver
from ._executable import (
    CachingMode,
    Executable,
    ExecutableCache,
    FunctionFlags,
    FunctionInfo,
    FunctionParameter,
    ParameterType,
)
from ._file import File
from ._group_copy import CopyRecord, CopyStrategy
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
from ._registry import create_device, registry
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
from ._stream import Stream
from ._timepoint import Timepoint
from ._topology import (
    Topology,
    format_topology,
)
from ._uri import DeviceUri
from .hookspecs import hookimpl
from .pool import (
    AcquireResult,
    FixedBlockPool,
    PassthroughPool,
    Pool,
    PoolSet,
    PoolStats,
    Reservation,
    ReserveFlags,
    TlsfPool,
)

__version__ = "0.1.0"

__all__ = [
    "AcquireResult",
    "FixedBlockPool",
    "PassthroughPool",
    "Pool",
    "PoolSet",
    "PoolStats",
    "Reservation",
    "ReserveFlags",
    "TlsfPool",
    "AbortedError",
    "AllocaFlags",
    "Allocator",
    "AllocatorStatistics",
    "AlreadyExistsError",
    "BindingTable",
    "Buffer",
    "BufferBinding",
    "BufferCompatibility",
    "BufferMapping",
    "BufferParams",
    "BufferRef",
    "BufferUsage",
    "BufferView",
    "CachingMode",
    "CancelledError",
    "CommandBuffer",
    "CommandBufferMode",
    "CommandCategory",
    "DEVICE_ID_DEFAULT",
    "DataLossError",
    "DeadlineExceededError",
    "DeallocaFlags",
    "DeferredError",
    "Device",
    "CopyRecord",
    "CopyStrategy",
    "DeviceGroup",
    "MAX_GROUP_DEVICES",
    "Timepoint",
    "Topology",
    "create_device_group",
    "format_topology",
    "DeviceInfo",
    "DeviceUri",
    "DispatchConfig",
    "DispatchFlags",
    "Driver",
    "ElementType",
    "Executable",
    "ExecutableCache",
    "ExecuteFlags",
    "FAILURE_VALUE",
    "FailedPreconditionError",
    "File",
    "FunctionFlags",
    "FunctionInfo",
    "FunctionParameter",
    "HalError",
    "HostCallContext",
    "HostCallFlags",
    "IncompatibleError",
    "InternalError",
    "InvalidArgumentError",
    "MAX_UPDATE_SIZE",
    "MAX_VALUE",
    "MemoryAccess",
    "MemoryHeap",
    "MemoryType",
    "NotFoundError",
    "OutOfRangeError",
    "ParameterType",
    "PermissionDeniedError",
    "PlacementFlags",
    "QueueAffinity",
    "QueueOpKind",
    "ResourceExhaustedError",
    "Semaphore",
    "StatusCode",
    "Stream",
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
