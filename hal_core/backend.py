"""The API tier for backend (plugin) authors.

A driver plugin provides a ``DriverFactory`` through the ``hal_drivers`` hook. Its
factory's ``create()`` returns an object implementing ``DriverBackend``; that object creates
``DeviceBackend`` objects, each with an ``AllocatorBackend``. The public ``Device`` does all
argument checks and hands each queue operation to ``DeviceBackend.submit`` as one
``QueueOp``. Nothing here is called on a hot path through pluggy.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import attrs

from ._buffer import HostStorage
from ._callback_errors import report_callback_error
from ._command_buffer import (
    CMD_BARRIER,
    CMD_COPY,
    CMD_DEBUG_BEGIN,
    CMD_DEBUG_END,
    CMD_DISPATCH,
    CMD_FILL,
    CMD_UPDATE,
    refs_of,
)
from ._executable import FunctionInfo, FunctionParameter, default_parameters
from ._frontier_tracker import FrontierWaiter
from ._memory import BufferCompatibility, BufferParams, MemoryHeap, MemoryType
from ._queue import (
    HostCallContext,
    QueueOp,
    QueueOpKind,
    host_call_error,
    host_call_outcome,
    run_host_call,
)
from ._semaphore import dispatch_callbacks, run_on_trampoline
from ._wait_resolution import resolve_waits
from .hookspecs import hookimpl
from .pool import QueuePoolBackend, Slab, SlabProvider, SlabProviderStats
from .pool._queue_alloca import AllocaState, QueueAllocaMachine, TransientAllocation

__all__ = [
    "CMD_BARRIER",
    "CMD_COPY",
    "CMD_DEBUG_BEGIN",
    "CMD_DEBUG_END",
    "CMD_DISPATCH",
    "CMD_FILL",
    "CMD_UPDATE",
    "AllocaState",
    "AllocatorBackend",
    "CommandBufferBackend",
    "ExecutableBackend",
    "FunctionInfo",
    "FunctionParameter",
    "default_parameters",
    "refs_of",
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


@runtime_checkable
class AllocatorBackend(Protocol):
    def heaps(self) -> list[MemoryHeap]:
        """Heaps in preference order."""

    def query_buffer_compatibility(
        self, params: BufferParams, size: int
    ) -> tuple[BufferCompatibility, BufferParams, int]:
        """Compatibility bits plus the params (``type`` set to the exact memory type a
        buffer would get) and the size that would be allocated."""

    def allocate(self, params: BufferParams, size: int) -> tuple[Any, MemoryType]:
        """Storage (see ``hal_core.backend.HostStorage``) and its memory type."""

    def import_host(self, params: BufferParams, array: Any) -> tuple[Any, MemoryType]:
        """Wrap a host uint8 array as storage without copying."""


@runtime_checkable
class DeviceBackend(Protocol):
    queue_count: int
    allocator: AllocatorBackend

    def submit(self, op: QueueOp) -> None:
        """Run ``op`` once its waits are reached; signal its signals on success, fail them
        with the error otherwise. Must not block on semaphores."""

    def close(self, timeout: float | None) -> None:
        """Fail waiting work with CANCELLED, finish running work, release resources."""


@runtime_checkable
class ExecutableBackend(Protocol):
    """What ``prepare_executable`` returns: its functions, in ordinal order."""

    functions: tuple[FunctionInfo, ...]


@runtime_checkable
class CommandBufferBackend(Protocol):
    """Optional ``DeviceBackend`` methods for executables and command buffers. A backend
    without them prepares no executables and executes the raw recording (its EXECUTE
    handler receives ``CommandBuffer.commands``).

    ``finalize_command_buffer(commands, mode, binding_capacity)`` runs once at
    ``CommandBuffer.end()`` (and per ``queue_dispatch`` with a one-command list); whatever
    it returns is ``QueueOp.program`` of every EXECUTE / DISPATCH op, with the captured
    binding table (a tuple of ``BufferBinding`` or None) in ``QueueOp.bindings``. Command
    tuples are described in ``hal_core._command_buffer`` (``CMD_*``).
    """

    def executable_formats(self) -> tuple[str, ...]:
        """Format strings ``prepare_executable`` accepts. Must not raise."""

    def prepare_executable(self, format: str, data: Any, params: dict[str, Any]) -> Any:
        """An ``ExecutableBackend``; INVALID_ARGUMENT for data that is not valid."""

    def finalize_command_buffer(self, commands: list, mode: int, binding_capacity: int) -> Any:
        """The backend's replay form of a recording."""


@runtime_checkable
class DriverBackend(Protocol):
    def query_available_devices(self) -> list[Any]:
        """``DeviceInfo`` records."""

    def create_device_by_id(self, device_id: int, params: dict[str, str]) -> DeviceBackend:
        ...

    def create_device_by_path(self, path: str, params: dict[str, str]) -> DeviceBackend:
        """Every driver accepts the empty path; an unknown path is NOT_FOUND."""
