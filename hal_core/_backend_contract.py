"""The backend contract: what a driver plugin implements, as declared Protocols.

A backend is one mandatory protocol plus any of the optional capabilities:

* ``DriverBackend`` (mandatory for a driver): enumerate devices and create them. Optional:
  ``DriverInfoBackend`` (``dump_device_info``), ``ClosableDriverBackend`` (``close``).
* ``DeviceBackend`` (mandatory for a device): ``queue_count``, ``allocator``
  (``AllocatorBackend``), ``submit`` and ``close``. ``submit`` must run every queue-op
  kind in ``MANDATORY_OP_KINDS``; the others belong to a capability.
* ``ExecutableSupport``: ``executable_formats`` / ``prepare_executable`` (DISPATCH, and
  EXECUTE of recordings with dispatches); ``CommandBufferSupport``:
  ``finalize_command_buffer`` (without it EXECUTE receives the raw recording).
* ``AllocationPoolSupport``: ``query_queue_pool_backend`` (the substrate of allocation
  pools serving ``queue_alloca``); ``AllocaSubmitSupport``: ``submit_alloca``, reserving
  at submit (without it ALLOCA runs through ``submit``); ``AllocaLaneSupport``:
  ``bind_alloca_lane``, the straight path the native alloca front door may take.
* ``DeviceQuerySupport``: ``query_i64`` for keys beyond the ones hal_core answers.
* ``QueueFlushSupport``: ``flush`` for backends that batch submissions.
* ``TopologySupport``: ``query_capabilities``, ``refine_topology_edge`` and
  ``assign_topology_info`` (device groups).
* ``ProfilingSupport``: ``profiling_families``, ``profiling_begin`` and ``profiling_end``;
  ``profiling_clock`` and ``profiling_flush`` are optional members of it.
* ``DeviceAware``: a ``device`` attribute the public ``Device`` sets to itself.

``bind_device`` and ``bind_driver`` resolve these once, when the public ``Device`` or
``Driver`` is built, into a ``DeviceContract`` / ``DriverContract`` of bound methods (or
None for an absent capability). This module is the only place in hal_core that asks a
backend object which methods it has; everything else calls the bound entries.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, final, runtime_checkable

from ._executable import FunctionInfo
from ._memory import BufferCompatibility, BufferParams, MemoryHeap, MemoryType
from ._queue import QueueOp, QueueOpKind
from ._status import InvalidArgumentError

__all__ = [
    "AllocaSubmitSupport",
    "AllocaLaneSupport",
    "AllocationPoolSupport",
    "AllocatorBackend",
    "ClosableDriverBackend",
    "CommandBufferSupport",
    "DeviceAware",
    "DeviceBackend",
    "DeviceContract",
    "DeviceQuerySupport",
    "DriverBackend",
    "DriverContract",
    "DriverInfoBackend",
    "ExecutableBackend",
    "ExecutableSupport",
    "MANDATORY_OP_KINDS",
    "OPTIONAL_OP_KINDS",
    "ProfilingSupport",
    "QueueFlushSupport",
    "TopologySupport",
    "bind_device",
    "bind_driver",
    "signature_mismatches",
]

MANDATORY_OP_KINDS = frozenset(
    {
        QueueOpKind.BARRIER,
        QueueOpKind.FILL,
        QueueOpKind.UPDATE,
        QueueOpKind.COPY,
        QueueOpKind.READ,
        QueueOpKind.WRITE,
        QueueOpKind.HOST_CALL,
        QueueOpKind.ALLOCA,
        QueueOpKind.DEALLOCA,
    }
)
"""Queue-op kinds every ``DeviceBackend.submit`` runs (ALLOCA/DEALLOCA with the default
allocation when the backend has no ``AllocationPoolSupport``)."""

OPTIONAL_OP_KINDS = {
    QueueOpKind.EXECUTE: "CommandBufferSupport (or the raw recording) and ExecutableSupport "
    "for recordings with dispatches",
    QueueOpKind.DISPATCH: "ExecutableSupport",
}
"""Queue-op kinds that belong to a capability, with the capability's name. A backend
without it fails such an op UNIMPLEMENTED (the CTS then skips, naming the reason)."""


# -- mandatory --------------------------------------------------------------------------


@runtime_checkable
class AllocatorBackend(Protocol):
    """A device's memory: heaps, compatibility, allocation and host import."""

    def heaps(self) -> list[MemoryHeap]:
        """Heaps in preference order."""
        ...

    def query_buffer_compatibility(
        self, params: BufferParams, size: int
    ) -> tuple[BufferCompatibility, BufferParams, int]:
        """Compatibility bits plus the params (``type`` set to the exact memory type a
        buffer would get) and the size that would be allocated."""
        ...

    def allocate(self, params: BufferParams, size: int) -> tuple[Any, MemoryType]:
        """Storage (see ``hal_core.backend.HostStorage``) and its memory type."""
        ...

    def import_host(self, params: BufferParams, array: Any) -> tuple[Any, MemoryType]:
        """Wrap a host uint8 array as storage without copying."""
        ...


@runtime_checkable
class DeviceBackend(Protocol):
    """The mandatory device contract."""

    queue_count: int

    # Read-only to the HAL: as a property, a backend's own allocator class satisfies it
    # (a plain protocol attribute would have to be declared exactly AllocatorBackend).
    @property
    def allocator(self) -> AllocatorBackend:
        """The device's memory (see ``AllocatorBackend``)."""
        ...

    def submit(self, op: QueueOp) -> None:
        """Run ``op`` once its waits are reached; signal its signals on success, fail them
        with the error otherwise. Must not block on semaphores. Runs every kind in
        ``MANDATORY_OP_KINDS``."""
        ...

    def close(self, timeout: float | None) -> None:
        """Fail waiting work with CANCELLED, finish running work, release resources."""
        ...


@runtime_checkable
class ExecutableBackend(Protocol):
    """What ``prepare_executable`` returns: its functions, in ordinal order."""

    functions: tuple[FunctionInfo, ...]


@runtime_checkable
class DriverBackend(Protocol):
    """The mandatory driver contract (what a ``DriverFactory.create()`` returns)."""

    def query_available_devices(self) -> list[Any]:
        """``DeviceInfo`` records."""
        ...

    def create_device_by_id(self, device_id: int, params: dict[str, str]) -> DeviceBackend:
        """A device by the opaque id of a ``DeviceInfo`` (0: the driver's default)."""
        ...

    def create_device_by_path(self, path: str, params: dict[str, str]) -> DeviceBackend:
        """Every driver accepts the empty path; an unknown path is NOT_FOUND."""
        ...


# -- optional capabilities ----------------------------------------------------------------


@runtime_checkable
class DriverInfoBackend(Protocol):
    def dump_device_info(self, device_id: int) -> str:
        """Human-readable details of one device (``hal info``); "" when none."""
        ...


@runtime_checkable
class ClosableDriverBackend(Protocol):
    def close(self) -> None:
        """Release what the driver holds (called once, when its registry closes)."""
        ...


@runtime_checkable
class ExecutableSupport(Protocol):
    """Executables: DISPATCH, and EXECUTE of recordings that dispatch."""

    def executable_formats(self) -> tuple[str, ...]:
        """Format strings ``prepare_executable`` accepts. Must not raise."""
        ...

    def prepare_executable(self, format: str, data: Any, params: dict[str, Any]) -> Any:
        """An ``ExecutableBackend``; INVALID_ARGUMENT for data that is not valid."""
        ...


@runtime_checkable
class CommandBufferSupport(Protocol):
    """A replay form of recordings. Without it EXECUTE receives ``CommandBuffer.commands``.

    ``finalize_command_buffer(commands, mode, binding_capacity)`` runs once at
    ``CommandBuffer.end()`` (and per ``queue_dispatch`` with a one-command list); what it
    returns is the program of every EXECUTE / DISPATCH op. Command tuples are the
    ``CMD_*`` records exported by ``hal_core.backend``."""

    def finalize_command_buffer(self, commands: list, mode: int, binding_capacity: int) -> Any:
        """The backend's replay form of a recording."""
        ...


@runtime_checkable
class AllocationPoolSupport(Protocol):
    """A substrate for allocation pools serving ``queue_alloca`` (``Pool`` objects built
    over the device's slabs)."""

    def query_queue_pool_backend(self, queue_index: int) -> Any:
        """The ``QueuePoolBackend`` for building a pool on queue ``queue_index``."""
        ...


@runtime_checkable
class AllocaSubmitSupport(Protocol):
    """An ALLOCA path of its own: reserve at submit, before the op queues."""

    def submit_alloca(self, op: QueueOp) -> None:
        """``submit`` for ALLOCA: pick the pool and reserve (RESOURCE_EXHAUSTED raises with
        nothing queued)."""
        ...


@runtime_checkable
class AllocaLaneSupport(Protocol):
    """A straight ``queue_alloca`` / ``queue_dealloca`` path for hal_core's native front
    door (``hal_core._queue_alloca_paths.AllocaLane``)."""

    def bind_alloca_lane(self, lane: Any) -> None:
        """Fill in the lane's straight-path fields (``QueueAllocaMachine.bind_lane``), or
        leave them empty."""
        ...


@runtime_checkable
class DeviceQuerySupport(Protocol):
    def query_i64(self, category: str, key: str) -> int:
        """The value of a device query; NOT_FOUND for unknown keys."""
        ...


@runtime_checkable
class QueueFlushSupport(Protocol):
    def flush(self, queue_mask: int) -> None:
        """Push out locally batched work of the queues in ``queue_mask``."""
        ...


@runtime_checkable
class TopologySupport(Protocol):
    """Device groups: what the device reaches, and the topology it is told."""

    def query_capabilities(self) -> Any:
        """A ``DeviceCapabilities``."""
        ...

    def refine_topology_edge(self, source_backend: Any, edge: Any) -> Any:
        """The ``TopologyEdge`` from ``source_backend`` (same driver) to this device."""
        ...

    def assign_topology_info(self, info: Any) -> None:
        """Join (a ``TopologyInfo``) or leave (None) a device group."""
        ...


@runtime_checkable
class ProfilingSupport(Protocol):
    """Profiling data families the backend produces itself. Optional members:
    ``profiling_clock`` (a ``(ClockDomain, ticks per second)`` pair; host nanoseconds when
    absent) and ``profiling_flush(session)``."""

    profiling_families: int

    def profiling_begin(self, session: Any) -> None:
        """Attach to ``session`` (install taps); UNAVAILABLE etc. propagate."""
        ...

    def profiling_end(self, session: Any) -> None:
        """Detach from ``session`` (remove taps)."""
        ...


@runtime_checkable
class DeviceAware(Protocol):
    """A backend with a ``device`` attribute receives the public ``Device`` in it."""

    device: Any


# -- binding ------------------------------------------------------------------------------


def _declares(backend: Any, name: str) -> bool:
    """Whether ``backend`` has ``name``, without evaluating properties (a profiling
    clock may need the hardware)."""
    try:
        inspect.getattr_static(backend, name)
    except AttributeError:
        return False
    return True


def _method(backend: Any, name: str) -> Callable[..., Any] | None:
    if not _declares(backend, name):
        return None
    fn = getattr(backend, name)
    return fn if callable(fn) else None


def _missing(backend: Any, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not _declares(backend, n)]


@final
class DeviceContract:
    """A device backend's contract, resolved once: the mandatory entries and, per
    optional capability, bound methods or None. ``backend`` is the object itself (the
    profiling taps shadow its ``submit``, so ``Device`` re-reads that one after them)."""

    __slots__ = (
        "backend",
        "submit",
        "close",
        "allocator",
        "queue_count",
        "executable_formats",
        "prepare_executable",
        "finalize_command_buffer",
        "submit_alloca",
        "bind_alloca_lane",
        "query_queue_pool_backend",
        "query_i64",
        "flush",
        "query_capabilities",
        "refine_topology_edge",
        "assign_topology_info",
        "profiling",
        "has_profiling_clock",
        "profiling_begin",
        "profiling_flush",
        "profiling_end",
        "device_aware",
        "instance_dict",
    )

    def __init__(self, backend: Any, what: str) -> None:
        missing = _missing(backend, ("queue_count", "allocator", "submit", "close"))
        if missing:
            raise InvalidArgumentError(
                f"{what} returned {type(backend).__qualname__}, which lacks "
                f"{', '.join(missing)}; a hal_core.backend.DeviceBackend needs queue_count, "
                "allocator, submit and close"
            )
        self.backend = backend
        self.submit: Callable[[QueueOp], None] = backend.submit
        self.close: Callable[[float | None], None] = backend.close
        self.allocator: Any = backend.allocator
        self.queue_count: int = backend.queue_count
        m = _method
        self.executable_formats = m(backend, "executable_formats")
        self.prepare_executable = m(backend, "prepare_executable")
        self.finalize_command_buffer = m(backend, "finalize_command_buffer")
        self.submit_alloca = m(backend, "submit_alloca")
        self.bind_alloca_lane = m(backend, "bind_alloca_lane")
        self.query_queue_pool_backend = m(backend, "query_queue_pool_backend")
        self.query_i64 = m(backend, "query_i64")
        self.flush = m(backend, "flush")
        self.query_capabilities = m(backend, "query_capabilities")
        self.refine_topology_edge = m(backend, "refine_topology_edge")
        self.assign_topology_info = m(backend, "assign_topology_info")
        profiling = _declares(backend, "profiling_families")
        # ``profiling`` is the backend when it produces profiling data itself; its
        # families and clock are read when a session begins (they may need the device).
        self.profiling: Any = backend if profiling else None
        self.has_profiling_clock = profiling and _declares(backend, "profiling_clock")
        self.profiling_begin = m(backend, "profiling_begin") if profiling else None
        self.profiling_flush = m(backend, "profiling_flush") if profiling else None
        self.profiling_end = m(backend, "profiling_end") if profiling else None
        self.device_aware = _declares(backend, "device")
        # hal_core's generic profiling tap shadows ``submit`` with an instance attribute.
        self.instance_dict = _declares(backend, "__dict__")

    def attach(self, device: Any) -> None:
        """Give a ``DeviceAware`` backend its public ``Device``."""
        if self.device_aware:
            self.backend.device = device


@final
class DriverContract:
    """A driver backend's contract, resolved once (optional entries: bound or None)."""

    __slots__ = (
        "query_available_devices",
        "create_device_by_id",
        "create_device_by_path",
        "dump_device_info",
        "close",
    )

    def __init__(self, backend: Any, name: str) -> None:
        needed = ("query_available_devices", "create_device_by_id", "create_device_by_path")
        missing = [n for n in needed if _method(backend, n) is None]
        if missing:
            raise InvalidArgumentError(
                f"driver {name!r}: {type(backend).__qualname__} lacks {', '.join(missing)}; "
                "a hal_core.backend.DriverBackend needs " + ", ".join(needed)
            )
        self.query_available_devices = backend.query_available_devices
        self.create_device_by_id = backend.create_device_by_id
        self.create_device_by_path = backend.create_device_by_path
        self.dump_device_info = _method(backend, "dump_device_info")
        self.close = _method(backend, "close")


def bind_device(backend: Any, what: str = "a driver") -> DeviceContract:
    """Resolve ``backend``'s contract once; INVALID_ARGUMENT naming what is missing when
    it is not a ``DeviceBackend``. ``what`` names where the backend came from."""
    return DeviceContract(backend, what)


def bind_driver(backend: Any, name: str) -> DriverContract:
    """Resolve a driver backend's contract once; INVALID_ARGUMENT when it is not a
    ``DriverBackend``."""
    return DriverContract(backend, name)


def signature_mismatches(obj: Any, protocol: type) -> list[str]:
    """For each method ``protocol`` declares that ``obj`` has: a message when it cannot be
    called the way hal_core calls it (the protocol's positional parameters), e.g. a
    missing or extra required parameter. Members ``obj`` lacks are not reported here
    (``isinstance`` with the runtime-checkable protocol says that)."""
    problems: list[str] = []
    for name, proto_fn in vars(protocol).items():
        if name.startswith("_") or not inspect.isfunction(proto_fn) or not _declares(obj, name):
            continue
        impl = getattr(obj, name)
        try:
            sig = inspect.signature(impl)
        except (TypeError, ValueError):
            continue  # builtins without signatures: nothing to check
        wanted = list(inspect.signature(proto_fn).parameters.values())[1:]
        try:
            sig.bind(*[p.name for p in wanted])
        except TypeError as exc:
            problems.append(
                f"{type(obj).__qualname__}.{name}{sig} cannot be called as "
                f"{protocol.__name__}.{name}({', '.join(p.name for p in wanted)}): {exc}"
            )
    return problems
