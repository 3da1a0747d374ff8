"""``CudaLogicalDevice``: one HAL device over several GPUs (``cuda://``, ``cuda://0,1``).

Each GPU is a ``CudaDeviceBackend`` (a *member*: its streams, completion thread, workers,
pools). The logical device's queues are the members' queues side by side, as amdgpu
does it: with ``per`` queues per GPU, queue ``q`` is stream ``q % per`` of GPU
``q // per``. Every member is built with the logical device's queue count and runs its
own ``per`` of them (``own_queues``), so ``submit`` hands an op to its GPU's member
unchanged (its queue index stays the logical one: host calls, profiling taps, frontier
axes and group axes all see the logical queue); queue affinity therefore selects the
GPU and the stream.

* Memory is placed as IREE places it: device-local memory on the GPU of the first queue
  the params' queue affinity selects (GPU 0 for ``ANY``); pinned host memory and imported
  host memory are portable (every GPU of the device reaches them). Peer access is enabled
  between the device's GPUs wherever the driver allows it (``cuDeviceCanAccessPeer``),
  so a kernel on one GPU may use another's buffers; without peer access, copies still
  work (the driver stages them) but a kernel touching the other GPU's memory faults.
* Executables are loaded on every GPU; a recording's program is built per GPU, for the
  first GPU at ``end()`` (so launch limits are checked at the call) and for another GPU
  the first time it runs there (a ``queue_dispatch``'s only for the GPU it runs on).
* Waits between GPUs of the device are waits between members: a wait on another GPU's
  in-flight work is a word wait on the waiting stream (``stream_waits.py``).
* Profiling: queue events and host execution events, the members' host-side taps
  (``host_spans.py``, host clock); the GPUs' dispatch timing and memory events are not
  implemented for a device over several GPUs (each GPU has its own clock reference):
  profile one GPU (``cuda://N``) for those.

Thread-safe: members are, and per-GPU programs are built under a lock.
"""

from __future__ import annotations

import threading
from typing import Any

from hal_core import BufferParams, CommandBufferMode, MemoryHeap, MemoryType, QueueOpKind
from hal_core.backend import CMD_DISPATCH, DeviceCapabilities, QueueOp

from .cuda_api import CudaContext
from .device import CudaDeviceBackend
from .host_spans import HOST_TAP_FAMILIES, HostTaps
from .stream_alloca import ALLOCA_POOLS
from .topology import contexts_of, enable_peer_access, refine_edge

_DISPATCH = QueueOpKind.DISPATCH
_EXECUTE = QueueOpKind.EXECUTE

_DISPATCH_MODE = int(CommandBufferMode.ONE_SHOT | CommandBufferMode.UNRETAINED)
"""The mode of the single-command recording a ``queue_dispatch`` finalizes."""


class LogicalAllocator:
    """``AllocatorBackend`` over the members' allocators: device-local memory on the GPU
    of the params' first queue, host memory (portable) from GPU 0. Thread-safe."""

    def __init__(self, members: list[CudaDeviceBackend], per: int) -> None:
        self.members = members
        self.per = per
        self.mask = (1 << (per * len(members))) - 1
        self.max_allocation_size = min(m.allocator.max_allocation_size for m in members)

    def heaps(self) -> list[MemoryHeap]:
        return self.members[0].allocator.heaps()

    def query_buffer_compatibility(self, params: BufferParams, size: int) -> Any:
        return self.members[0].allocator.query_buffer_compatibility(params, size)

    def member_for(self, params: BufferParams) -> CudaDeviceBackend:
        """The member whose GPU holds device-local memory for ``params``."""
        selected = int(params.queue_affinity) & self.mask
        if not selected:
            return self.members[0]
        first = (selected & -selected).bit_length() - 1
        return self.members[first // self.per]

    def allocate(self, params: BufferParams, size: int) -> tuple[Any, MemoryType]:
        return self.member_for(params).allocator.allocate(params, size)

    def import_host(self, params: BufferParams, array: Any) -> tuple[Any, MemoryType]:
        return self.members[0].allocator.import_host(params, array)


class _MemberExecutable:
    """What a member's program sees as a dispatch's executable: ``backend`` is the
    executable as loaded on that member's GPU."""

    __slots__ = ("backend", "__weakref__")

    def __init__(self, backend: Any) -> None:
        self.backend = backend


class LogicalExecutable:
    """``ExecutableBackend``: one executable loaded on every GPU of the device.
    ``functions`` (reflection) are the first GPU's; ``members[i]`` is GPU ``i``'s."""

    def __init__(self, loaded: list[Any]) -> None:
        self.loaded = loaded
        self.members = [_MemberExecutable(e) for e in loaded]
        self.functions = loaded[0].functions

    def close(self) -> None:
        for executable in self.loaded:
            executable.close()


class GpuPrograms:
    """A recording's programs, one per GPU, built on first use. A command buffer's
    program is built for the first GPU at ``end()``, so launch limits are checked at the
    call; a ``queue_dispatch``'s (one-shot and unretained) only for the GPU it is
    submitted to, whose submit is part of the same call. ``for_member(i)`` is
    thread-safe."""

    def __init__(self, owner: CudaLogicalDevice, commands: list, mode: int, capacity: int) -> None:
        self._owner = owner
        self._commands = commands
        self._mode = mode
        self._capacity = capacity
        self._lock = threading.Lock()
        self._programs: list[Any] = [None] * len(owner.members)
        if mode & _DISPATCH_MODE != _DISPATCH_MODE:
            self.for_member(0)

    def for_member(self, index: int) -> Any:
        program = self._programs[index]
        if program is not None:
            return program
        with self._lock:
            program = self._programs[index]
            if program is None:
                commands = [_for_member(cmd, index) for cmd in self._commands]
                member = self._owner.members[index]
                program = member.finalize_command_buffer(commands, self._mode, self._capacity)
                self._programs[index] = program
        return program


def _for_member(command: tuple, index: int) -> tuple:
    """``command`` with a dispatch's executable replaced by member ``index``'s view."""
    if command[0] != CMD_DISPATCH:
        return command
    executable = command[1]
    backend = executable.backend
    if not isinstance(backend, LogicalExecutable):
        return command
    return (command[0], backend.members[index], *command[2:])


class CudaLogicalDevice:
    """``DeviceBackend`` over ``members`` (one ``CudaDeviceBackend`` per GPU, member ``i``
    built with ``queue_count = per * len(members)`` and ``own_queues = range(i * per,
    (i + 1) * per)``: ``members_for`` builds them); see the module docstring."""

    def __init__(self, members: list[CudaDeviceBackend], per: int, name: str) -> None:
        self.members = members
        self.per = per
        self.name = name
        self.queue_count = per * len(members)
        self._by_queue = [members[q // per] for q in range(self.queue_count)]
        self.allocator = LogicalAllocator(members, per)
        self.peer_access = enable_peer_access([m.ctx for m in members])
        self._device: Any = None
        self._host_taps: list[HostTaps] = []

    @property
    def device(self) -> Any:
        """The public Device (hal_core sets it; every member hands it to host calls)."""
        return self._device

    @device.setter
    def device(self, device: Any) -> None:
        self._device = device
        for member in self.members:
            member.device = device

    # -- queues -------------------------------------------------------------------------

    def _route(self, op: QueueOp) -> CudaDeviceBackend:
        """The member that runs ``op`` (a dispatch or execute given that GPU's program)."""
        member = self._by_queue[op.queue]
        kind = op.kind
        if kind == _DISPATCH or kind == _EXECUTE:
            program = op.program
            if isinstance(program, GpuPrograms):
                op.program = program.for_member(op.queue // self.per)
        return member

    def submit(self, op: QueueOp) -> None:
        self._route(op).submit(op)

    def submit_alloca(self, op: QueueOp) -> None:
        self._route(op).submit_alloca(op)

    def flush(self, queue_mask: int) -> None:
        """Nothing is batched (see ``CudaDeviceBackend.flush``)."""

    def query_queue_pool_backend(self, queue_index: int) -> Any:
        return self._by_queue[queue_index].query_queue_pool_backend(queue_index)

    # -- executables and command buffers ------------------------------------------------

    def executable_formats(self) -> tuple[str, ...]:
        return tuple(self.members[0].executable_formats())

    def prepare_executable(self, format: str, data: Any, params: dict[str, Any]) -> Any:
        loaded: list[Any] = []
        try:
            for member in self.members:
                loaded.append(member.prepare_executable(format, data, params))
        except BaseException:
            for executable in loaded:
                executable.close()
            raise
        return LogicalExecutable(loaded)

    def finalize_command_buffer(self, commands: list, mode: int, binding_capacity: int) -> Any:
        return GpuPrograms(self, commands, mode, binding_capacity)

    # -- device groups ------------------------------------------------------------------

    def query_capabilities(self) -> DeviceCapabilities:
        """Buffers live in the GPUs' memory (one domain for the device: its GPUs use
        each other's buffers); host timeline semaphores are waited on the host."""
        first = self.members[0].query_capabilities()
        ordinals = ",".join(str(m.ctx.ordinal) for m in self.members)
        return DeviceCapabilities(
            memory_domain=f"cuda:{ordinals}",
            host_memory_access=first.host_memory_access,
            host_semaphores=first.host_semaphores,
            numa_node=first.numa_node,
            peer_copy=True,
        )

    def refine_topology_edge(self, other: Any, edge: Any) -> Any:
        """The edge with another CUDA device from the driver (``topology.refine_edge``)."""
        theirs = contexts_of(other)
        if theirs is None:
            return edge
        return refine_edge(theirs, [m.ctx for m in self.members], edge)

    def assign_topology_info(self, info: Any) -> None:
        """Join (or leave, ``None``) a device group: each member's queues publish on the
        group axes of their (logical) queue indices."""
        for member in self.members:
            member.assign_topology_info(info)

    # -- profiling ----------------------------------------------------------------------

    @property
    def profiling_families(self) -> int:
        return HOST_TAP_FAMILIES

    def profiling_begin(self, session: Any) -> None:
        """The host-side taps on every member for the session."""
        taps = [HostTaps(member, session) for member in self.members]
        for tap in taps:
            tap.install()
        self._host_taps = taps

    def profiling_end(self, session: Any) -> None:
        """Every member's own methods back."""
        taps, self._host_taps = self._host_taps, []
        for tap in taps:
            tap.remove()

    # -- lifetime -----------------------------------------------------------------------

    def close(self, timeout: float | None) -> None:
        for member in self.members:
            member.close(timeout)


def members_for(
    contexts: list[CudaContext],
    per: int,
    memory: list[int],
    names: list[str],
    alloca: str = ALLOCA_POOLS,
) -> list[CudaDeviceBackend]:
    """One member per GPU context, each running its ``per`` of the logical queues with
    the ``alloca`` mode (the members built so far are closed if one fails)."""
    total = per * len(contexts)
    members: list[CudaDeviceBackend] = []
    try:
        for i, ctx in enumerate(contexts):
            own = range(i * per, (i + 1) * per)
            members.append(CudaDeviceBackend(ctx, total, memory[i], names[i], own, alloca))
    except BaseException:
        for member in members:
            member.close(None)
        raise
    return members
