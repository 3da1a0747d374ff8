"""The amdgpu logical device backend: one HAL device over one or more compatible GPUs.

Owns, per GPU, the agent description, its memory pools and its nearest CPU's pools; an
allocator over those pools; and the executable loader. Queue execution and command
buffers go to ``hal_amdgpu.queue_set`` (AQL host queues, created on first use, with the
``HostQueueOptions`` read from the device URI at creation). Creation fails
(INCOMPATIBLE) for a GPU whose target has no device library. ``close()`` is idempotent,
closes the queues (freeing everything they loaded) and balances ``hsa_init``; it is safe
from any thread, a host call of this device included.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from hal_core import FailedPreconditionError, NotFoundError, UnimplementedError
from hal_core.backend import QueueOp

from .agents import AgentDescription, SystemAgents
from .allocator import HsaAllocatorBackend
from .device_library import check_device_library
from .executable import AmdgpuExecutable, load_executable
from .hsa import HsaLibrary
from .hsa_memory import CpuMemoryPools, GpuMemoryPools, find_cpu_memory_pools, find_gpu_memory_pools
from .iree_container import FORMAT_ROCM_HSACO_FB
from .queue_options import HostQueueOptions, fit_to_queue_limit
from .target_id import GENERIC_FAMILY, HSA_ISA_PREFIX
from .topology import AgentMemoryEdge, query_edge

if TYPE_CHECKING:
    from .profiling_session import AmdgpuProfiling

__all__ = ["AmdgpuDeviceBackend", "QUEUES_PER_GPU", "EXECUTABLE_FORMAT_HSACO"]

QUEUES_PER_GPU = 2
EXECUTABLE_FORMAT_HSACO = "hsaco"
"""Format name accepting any HSACO (the target is read from its ELF e_flags). Every
format this device lists also accepts IREE's ``rocm-hsaco-fb`` containers, and
``rocm-hsaco-fb`` (IREE's name) accepts raw HSACO, as IREE's drivers do."""


class AmdgpuDeviceBackend:
    """``DeviceBackend`` for ``amdgpu``. Thread-safe for allocation and loading."""

    def __init__(
        self,
        hsa: HsaLibrary,
        system: SystemAgents,
        ordinals: list[int],
        options: HostQueueOptions | None = None,
    ) -> None:
        self.hsa = hsa
        self.system = system
        self.ordinals = tuple(ordinals)
        self.gpus: tuple[AgentDescription, ...] = tuple(system.gpus[o] for o in ordinals)
        check_device_library(self.gpus)  # INCOMPATIBLE now rather than at every queue op
        limits = [g.queue_max_size for g in self.gpus if g.queue_max_size]
        self.queue_options = fit_to_queue_limit(
            options or HostQueueOptions(), min(limits) if limits else 0
        )
        self.cpus: tuple[AgentDescription, ...] = tuple(system.nearest_cpu(g) for g in self.gpus)
        self.gpu_pools: tuple[GpuMemoryPools, ...] = tuple(
            find_gpu_memory_pools(hsa, g) for g in self.gpus
        )
        self.cpu_pools: tuple[CpuMemoryPools, ...] = tuple(
            find_cpu_memory_pools(hsa, c) for c in self.cpus
        )
        self.queue_count = QUEUES_PER_GPU * len(self.gpus)
        # Grant to the selected GPUs and their nearest CPUs, never to every agent.
        access = list(dict.fromkeys([g.handle for g in self.gpus] + [c.handle for c in self.cpus]))
        # Allocations are also granted to the system's other GPUs that can reach them, so
        # a peer device's queues copy to and from them directly (peer_copies).
        peers = [g.handle for g in system.gpus if g.handle not in access]
        self.allocator = HsaAllocatorBackend(
            hsa, list(self.gpu_pools), self.cpu_pools[0].fine, access, peers
        )
        self.device: Any = None
        self._closed = False
        self._lock = threading.Lock()
        self._host_queue_set: Any = None
        self._profiling: AmdgpuProfiling | None = None  # while a profiling session runs

    @property
    def hsa_implementation(self) -> str:
        """``"rocr"`` or ``"soft"`` (the software HSA agent)."""
        return self.hsa.implementation

    def describe(self) -> str:
        gpus = ", ".join(f"{g.name} {g.uuid} (node {g.node}, {g.bdf})" for g in self.gpus)
        return f"amdgpu on {self.hsa.implementation} HSA [{self.hsa.path}]: {gpus}"

    def query_i64(self, category: str, key: str) -> int:
        if category == "hal.device" and key == "gpu_count":
            return len(self.gpus)
        if category == "amdgpu" and key == "soft_hsa":
            return int(self.hsa.implementation == "soft")
        raise NotFoundError(f"unknown device query {category} :: {key}")

    # -- queues: part 2 -----------------------------------------------------------------

    def submit(self, op: QueueOp) -> None:
        # Part 2 (hal_amdgpu.host_queue): AQL host queues, created on first use.
        queues = self._host_queue_set or self._create_host_queues()
        queues.submit(op)

    def finalize_command_buffer(self, commands: list, mode: int, binding_capacity: int) -> Any:
        queues = self._host_queue_set or self._create_host_queues()
        return queues.finalize_command_buffer(commands, mode, binding_capacity)

    def _create_host_queues(self) -> Any:
        from .device_library import load_device_library
        from .queue_set import HostQueueSet

        with self._lock:
            if self._closed:
                raise FailedPreconditionError("the amdgpu device is closed")
            if self._host_queue_set is None:
                access = list(
                    dict.fromkeys([g.handle for g in self.gpus] + [c.handle for c in self.cpus])
                )
                # The queue set owns the library from here on and frees it at close.
                qset = HostQueueSet(
                    self.hsa,
                    self.gpus,
                    self.gpu_pools,
                    self.cpu_pools,
                    access,
                    load_device_library(self.hsa, self.gpus),
                    self.queue_options,
                    QUEUES_PER_GPU,
                    self.allocator,
                )
                qset.device = self.device
                self._host_queue_set = qset
            return self._host_queue_set

    # -- executables --------------------------------------------------------------------

    def executable_formats(self) -> list[str]:
        """Every format name this device prepares, each once, in a stable order."""
        formats = {EXECUTABLE_FORMAT_HSACO: None, FORMAT_ROCM_HSACO_FB: None}
        for gpu in self.gpus:
            for isa in gpu.isa_names:
                formats[isa] = None
                formats[isa.removeprefix(HSA_ISA_PREFIX)] = None
                if isa == gpu.isa_names[0]:
                    formats[gpu.target.processor] = None
                    family = GENERIC_FAMILY.get(gpu.target.processor)
                    if family:
                        formats[family] = None
                        formats[HSA_ISA_PREFIX + family] = None
        return list(formats)

    def prepare_executable(self, format: str, data: Any, params: dict) -> AmdgpuExecutable:
        return load_executable(self.hsa, self.gpus, data, params.get("constants", ()))

    def load_executable(self, data: Any) -> AmdgpuExecutable:
        """Load a code object on every GPU of this device (the plugin's own API)."""
        return load_executable(self.hsa, self.gpus, data)

    # -- topology -----------------------------------------------------------------------

    def topology_edge(self, src_gpu: int, dst_gpu: int) -> AgentMemoryEdge:
        """Edge from GPU ``src_gpu`` of this device to the memory of GPU ``dst_gpu``."""
        return query_edge(self.hsa, self.gpus[src_gpu].handle, self.gpu_pools[dst_gpu])

    # -- device groups (hal_core DeviceGroup; hal_amdgpu.device_group) -------------------

    def query_capabilities(self) -> Any:
        from .device_group import query_capabilities

        return query_capabilities(self)

    def refine_topology_edge(self, other: Any, edge: Any) -> Any:
        from .device_group import refine_topology_edge

        return refine_topology_edge(self, other, edge)

    def query_queue_pool_backend(self, queue_index: int) -> Any:
        """Slab provider (device-local heap), notification and epoch query of the host
        queues' pools for a user pool serving ``queue_index`` (hal_core checks the
        device-group precondition first)."""
        queues = self._host_queue_set or self._create_host_queues()
        if queues.pools is None:
            raise UnimplementedError("this amdgpu device has no allocator, so no pools")
        return queues.pools.query_queue_pool_backend(queue_index)

    def assign_topology_info(self, info: Any) -> None:
        from .device_group import assign_topology_info

        assign_topology_info(self, info)

    # -- profiling (hal_amdgpu.profiling: taps installed at begin, removed at end) -------

    @property
    def profiling_families(self) -> int:
        from .profiling import AMDGPU_PROFILING_FAMILIES

        return AMDGPU_PROFILING_FAMILIES

    @property
    def profiling_clock(self) -> tuple:
        from .profiling import profiling_clock

        return profiling_clock(self.hsa)

    def profiling_begin(self, session: Any) -> None:
        from .profiling_session import AmdgpuProfiling

        profiling = AmdgpuProfiling(self, session)
        profiling.begin()
        self._profiling = profiling

    def profiling_end(self, session: Any) -> None:
        profiling, self._profiling = self._profiling, None
        if profiling is not None:
            profiling.end()

    def close(self, timeout: float | None = None) -> None:
        """Close the queues (freeing the device library, signals and rings), then balance
        ``hsa_init``. From a completion thread of this device (a host call closing it),
        ``hsa_shut_down`` waits until that thread ended and freed what it still reads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            queues, self._host_queue_set = self._host_queue_set, None
        if queues is None:
            self.hsa.shut_down()
            return
        try:
            queues.close(timeout)
        finally:
            queues.at_thread_exit(self.hsa.shut_down)
