"""The API tier for backend (plugin) authors.

A driver plugin provides a ``DriverFactory`` through the ``hal_drivers`` hook. Its
factory's ``create()`` returns an object implementing ``DriverBackend``; that object creates
``DeviceBackend`` objects, each with an ``AllocatorBackend``. The public ``Device`` does all
argument checks and hands each queue operation to ``DeviceBackend.submit`` as one
``QueueOp``. Nothing here is called on a hot path through pluggy.
"""

from __future__ import annotations

from typing import Callable

import attrs

from ._allocator import check_host_size, host_heaps
from ._backend_contract import (
    MANDATORY_OP_KINDS,
    OPTIONAL_OP_KINDS,
    AllocaLaneSupport,
    AllocaSubmitSupport,
    AllocationPoolSupport,
    AllocatorBackend,
    ClosableDriverBackend,
    CommandBufferSupport,
    DeviceAware,
    DeviceBackend,
    DeviceQuerySupport,
    DriverBackend,
    DriverInfoBackend,
    ExecutableBackend,
    ExecutableSupport,
    ProfilingSupport,
    QueueFlushSupport,
    TopologySupport,
    signature_mismatches,
)
from ._buffer import (
    HostStorage,
    buffer_host_bytes,
    buffer_storage,
    commit_buffer,
    decommit_buffer,
    new_buffer,
    resolve_range,
)
from ._buffer_ref import MAX_RANGE_END, bound_range, resolve_binding
from ._callback_errors import report_callback_error
from ._command_buffer import (
    CMD_BARRIER,
    CMD_COPY,
    CMD_DEBUG_BEGIN,
    CMD_DEBUG_END,
    CMD_DISPATCH,
    CMD_FILL,
    CMD_UPDATE,
    COMMAND_LAYOUTS,
    refs_of,
)
from ._completion import buffer_root, fail_all, op_error, signal_all
from ._device import device_from_backend
from ._executable import FunctionInfo, FunctionParameter, default_parameters
from ._frontier import (
    DEFAULT_FRONTIER_CAPACITY,
    AxisDomain,
    Frontier,
    FrontierComparison,
    axis_device_index,
    axis_domain,
    axis_machine,
    axis_make,
    axis_make_queue,
    axis_ordinal,
    axis_queue_index,
    axis_session,
)
from ._frontier_tracker import FrontierTracker, FrontierWaiter
from ._notification import Notification
from ._queue import (
    HostCallContext,
    QueueOp,
    QueueOpKind,
    host_call_error,
    host_call_outcome,
    run_host_call,
)
from ._queue_fast_paths import complete_op, fill_host, wait_reached
from ._queue_timeline import QueueTimeline
from ._registry import PluginRecord, Registry
from ._semaphore import dispatch_callbacks, run_on_trampoline
from ._topology import (
    DeviceCapabilities,
    InteropMode,
    LinkClass,
    Topology,
    TopologyCapability,
    TopologyEdge,
    TopologyInfo,
    edge_from_capabilities,
)
from ._wait_resolution import resolve_waits
from .hookspecs import hookimpl
from .pool import (
    CpuSlabProvider,
    QueuePoolBackend,
    Slab,
    SlabCache,
    SlabProvider,
    SlabProviderStats,
)
from .pool._queue_alloca import AllocaState, QueueAllocaMachine, TransientAllocation

__all__ = [
    "buffer_host_bytes",
    "buffer_storage",
    "commit_buffer",
    "decommit_buffer",
    "new_buffer",
    "resolve_range",
    "device_from_backend",
    "DEFAULT_FRONTIER_CAPACITY",
    "AxisDomain",
    "Frontier",
    "FrontierComparison",
    "axis_device_index",
    "axis_domain",
    "axis_machine",
    "axis_make",
    "axis_make_queue",
    "axis_ordinal",
    "axis_queue_index",
    "axis_session",
    "FrontierTracker",
    "Notification",
    "PluginRecord",
    "Registry",
    "CpuSlabProvider",
    "SlabCache",
    "DeviceCapabilities",
    "InteropMode",
    "LinkClass",
    "Topology",
    "TopologyCapability",
    "TopologyEdge",
    "TopologyInfo",
    "edge_from_capabilities",
    "buffer_root",
    "check_host_size",
    "fail_all",
    "host_heaps",
    "op_error",
    "signal_all",
    "wait_reached",
    "complete_op",
    "fill_host",
    "QueueTimeline",
    "CMD_BARRIER",
    "CMD_COPY",
    "CMD_DEBUG_BEGIN",
    "CMD_DEBUG_END",
    "CMD_DISPATCH",
    "CMD_FILL",
    "CMD_UPDATE",
    "COMMAND_LAYOUTS",
    "AllocaState",
    "AllocatorBackend",
    "CommandBufferSupport",
    "AllocaSubmitSupport",
    "AllocaLaneSupport",
    "AllocationPoolSupport",
    "ClosableDriverBackend",
    "DeviceAware",
    "DeviceQuerySupport",
    "DriverInfoBackend",
    "ExecutableSupport",
    "MANDATORY_OP_KINDS",
    "OPTIONAL_OP_KINDS",
    "ProfilingSupport",
    "QueueFlushSupport",
    "TopologySupport",
    "signature_mismatches",
    "ExecutableBackend",
    "FunctionInfo",
    "FunctionParameter",
    "default_parameters",
    "refs_of",
    "MAX_RANGE_END",
    "bound_range",
    "resolve_binding",
    "DeviceBackend",
    "DriverBackend",
    "DriverFactory",
    "FrontierWaiter",
    "HostCallContext",
    "HostStorage",
    "QueueAllocaMachine",
    "QueuePoolBackend",
    "Slab",
    "SlabProvider",
    "SlabProviderStats",
    "TransientAllocation",
    "QueueOp",
    "QueueOpKind",
    "dispatch_callbacks",
    "host_call_outcome",
    "hookimpl",
    "resolve_waits",
    "run_on_trampoline",
    "host_call_error",
    "report_callback_error",
    "run_host_call",
]


@attrs.frozen
class DriverFactory:
    """What a plugin's ``hal_drivers`` hook returns: a driver name (the URI scheme), a
    human name, and a zero-argument callable creating the ``DriverBackend``. ``create``
    may raise UnavailableError naming what is missing and how to fix it."""

    name: str
    full_name: str
    create: Callable[[], "DriverBackend"]
