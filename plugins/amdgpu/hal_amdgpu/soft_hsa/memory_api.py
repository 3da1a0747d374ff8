"""The soft HSA runtime's memory functions: AMD memory pools (HSA's ``hsa_amd_memory_pool_*``:
discovery, attributes, allocation), access grants, copies and fills, host memory locking,
pointer info and the legacy regions; a base class of ``SoftHsaRuntime``.
"""

from __future__ import annotations

from typing import Any, Callable

from ..hsa_cdef import ffi
from ..hsa_enums import (
    AgentPoolInfo,
    HsaStatus,
    LinkType,
    PoolAccess,
    PoolGlobalFlag,
    PoolInfo,
    PoolSegment,
    RegionInfo,
)
from .config import SoftAgentConfig, SoftMemoryPoolConfig, SoftSystemConfig
from .memory import SoftMemory

__all__ = ["SoftMemoryApi", "SoftMemoryPool"]

_S = HsaStatus
_OK = int(HsaStatus.SUCCESS)


class SoftMemoryPool:
    """One HSA memory pool of a soft agent: its handle, owning agent and configuration."""

    __slots__ = ("handle", "agent", "config")

    def __init__(self, handle: int, agent: int, config: SoftMemoryPoolConfig) -> None:
        self.handle = handle
        self.agent = agent
        self.config = config


class SoftMemoryApi:
    """Memory functions of ``SoftHsaRuntime`` (HSA's own names)."""

    # Set by SoftHsaRuntime.__init__ (``_agent_handle`` comes from ``SoftSystemApi``).
    config: SoftSystemConfig
    memory: SoftMemory
    _agents: dict[int, SoftAgentConfig]
    _pools: dict[int, SoftMemoryPool]
    _agent_pools: dict[int, list[int]]
    _allocations: dict[int, int]
    _agent_handle: Callable[[Any], int]

    # -- memory pools -------------------------------------------------------------------

    def hsa_amd_agent_iterate_memory_pools(self, agent: Any, callback: Any, data: Any) -> int:
        handle = self._agent_handle(agent)
        if handle not in self._agents:
            return int(_S.ERROR_INVALID_AGENT)
        for pool in self._agent_pools[handle]:
            status = callback(ffi.new("hsa_amd_memory_pool_t*", [pool])[0], data)
            if status == _S.INFO_BREAK:
                break
            if status != _OK:
                return status
        return _OK

    def hsa_amd_memory_pool_get_info(self, pool: Any, attribute: int, value: Any) -> int:
        p = self._pools.get(int(pool.handle))
        if p is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        c = p.config
        table: dict[int, tuple[str, Any]] = {
            PoolInfo.SEGMENT: ("uint32_t*", int(PoolSegment.GLOBAL)),
            PoolInfo.GLOBAL_FLAGS: ("uint32_t*", int(c.flags)),
            PoolInfo.SIZE: ("size_t*", c.size),
            PoolInfo.RUNTIME_ALLOC_ALLOWED: ("bool*", True),
            PoolInfo.RUNTIME_ALLOC_GRANULE: ("size_t*", c.granule),
            PoolInfo.RUNTIME_ALLOC_REC_GRANULE: ("size_t*", c.granule),
            PoolInfo.RUNTIME_ALLOC_ALIGNMENT: ("size_t*", c.alignment),
            PoolInfo.ACCESSIBLE_BY_ALL: ("bool*", c.accessible_by_all),
            PoolInfo.ALLOC_MAX_SIZE: ("size_t*", c.alloc_max_size),
        }
        entry = table.get(attribute)
        if entry is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        ffi.cast(entry[0], value)[0] = entry[1]
        return _OK

    def _access(self, agent: int, pool: SoftMemoryPool) -> PoolAccess:
        if (
            not self.config.gpu_peer_access
            and pool.agent != agent
            and self._agents[agent].is_gpu
            and self._agents[pool.agent].is_gpu
        ):
            # ROCr's answer for GPUs with no P2P path between them: no grant can help.
            return PoolAccess.NEVER_ALLOWED
        if pool.agent == agent or pool.config.accessible_by_all:
            if (
                not self._agents[pool.agent].is_gpu
                and self._agents[agent].is_gpu
                and pool.config.flags & PoolGlobalFlag.COARSE_GRAINED
                and not pool.config.accessible_by_all
            ):
                return PoolAccess.DISALLOWED_BY_DEFAULT
            return PoolAccess.ALLOWED_BY_DEFAULT
        return PoolAccess.DISALLOWED_BY_DEFAULT

    def _links(self, agent: int, pool: SoftMemoryPool) -> list[tuple[int, int, bool]]:
        """(link type, numa distance, coherent) per hop from ``agent`` to ``pool``."""
        if pool.agent == agent:
            return []
        a_gpu = self._agents[agent].is_gpu
        p_gpu = self._agents[pool.agent].is_gpu
        if a_gpu and p_gpu:
            return [(int(self.config.gpu_link), self.config.gpu_numa_distance, True)]
        return [(int(LinkType.PCIE), 20, True)]

    def hsa_amd_agent_memory_pool_get_info(
        self, agent: Any, pool: Any, attribute: int, value: Any
    ) -> int:
        handle = self._agent_handle(agent)
        p = self._pools.get(int(pool.handle))
        if handle not in self._agents or p is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        if attribute == AgentPoolInfo.ACCESS:
            ffi.cast("uint32_t*", value)[0] = int(self._access(handle, p))
        elif attribute == AgentPoolInfo.NUM_LINK_HOPS:
            ffi.cast("uint32_t*", value)[0] = len(self._links(handle, p))
        elif attribute == AgentPoolInfo.LINK_INFO:
            infos = ffi.cast("hsa_amd_memory_pool_link_info_t*", value)
            for i, (link, numa, coherent) in enumerate(self._links(handle, p)):
                info = infos[i]
                info.min_latency, info.max_latency = 1, 10
                info.min_bandwidth, info.max_bandwidth = 1000, 50000
                info.atomic_support_32bit = True
                info.atomic_support_64bit = link == LinkType.XGMI
                info.coherent_support = coherent
                info.link_type = link
                info.numa_distance = numa
        else:
            return int(_S.ERROR_INVALID_ARGUMENT)
        return _OK

    def hsa_amd_memory_pool_allocate(self, pool: Any, size: int, flags: int, ptr: Any) -> int:
        p = self._pools.get(int(pool.handle))
        if p is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        if size == 0 or size > p.config.alloc_max_size:
            return int(_S.ERROR_INVALID_ALLOCATION)
        size = -(-int(size) // p.config.granule) * p.config.granule
        alloc = self.memory.allocate(
            size,
            p.config.alignment,
            owner_agent=p.agent,
            pool=p.handle,
            accessible_by_all=p.config.accessible_by_all,
        )
        for handle in self._agents:
            if self._access(handle, p) == PoolAccess.ALLOWED_BY_DEFAULT:
                alloc.allowed_agents.add(handle)
        ptr[0] = ffi.cast("void*", alloc.address)
        return _OK

    def hsa_amd_memory_pool_free(self, ptr: Any) -> int:
        address = int(ffi.cast("uintptr_t", ptr))
        alloc = self.memory.find(address)
        if alloc is None or alloc.address != address or not alloc.pool:
            return int(_S.ERROR_INVALID_ARGUMENT)
        self.memory.free(address)
        return _OK

    def hsa_amd_agents_allow_access(
        self, num_agents: int, agents: Any, flags: Any, ptr: Any
    ) -> int:
        address = int(ffi.cast("uintptr_t", ptr))
        alloc = self.memory.find(address)
        if alloc is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        handles = [int(agents[i].handle) for i in range(num_agents)]
        if any(h not in self._agents for h in handles):
            return int(_S.ERROR_INVALID_AGENT)
        pool = self._pools.get(alloc.pool)
        if pool is not None and any(
            self._access(h, pool) == PoolAccess.NEVER_ALLOWED for h in handles
        ):
            # As ROCr: an agent that can never reach the pool is refused, nothing granted.
            return int(_S.ERROR_INVALID_AGENT)
        alloc.allowed_agents.update(handles)
        return _OK

    def hsa_memory_copy(self, dst: Any, src: Any, size: int) -> int:
        ffi.memmove(dst, src, size)
        return _OK

    def hsa_amd_memory_fill(self, ptr: Any, value: int, count: int) -> int:
        address = int(ffi.cast("uintptr_t", ptr))
        if address % 4 or self.memory.find(address, 4 * int(count)) is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        self.memory.view(address, 4 * int(count)).view("<u4")[:] = value
        return _OK

    def hsa_amd_memory_lock(
        self, host_ptr: Any, size: int, agents: Any, num_agent: int, agent_ptr: Any
    ) -> int:
        address = int(ffi.cast("uintptr_t", host_ptr))
        handles = (
            {int(agents[i].handle) for i in range(num_agent)} if num_agent else set(self._agents)
        )
        self.memory.register_host(address, int(size), handles)
        agent_ptr[0] = host_ptr
        return _OK

    def hsa_amd_memory_unlock(self, host_ptr: Any) -> int:
        address = int(ffi.cast("uintptr_t", host_ptr))
        alloc = self.memory.find(address)
        if alloc is None or not alloc.locked_host:
            return int(_S.ERROR_INVALID_ARGUMENT)
        self.memory.free(alloc.address)
        return _OK

    def hsa_amd_pointer_info(
        self, ptr: Any, info: Any, alloc_fn: Any, num_accessible: Any, accessible: Any
    ) -> int:
        address = int(ffi.cast("uintptr_t", ptr))
        alloc = self.memory.find(address)
        info.type = 0 if alloc is None else (2 if alloc.locked_host else 1)
        if alloc is not None:
            info.agentBaseAddress = ffi.cast("void*", alloc.address)
            info.hostBaseAddress = ffi.cast("void*", alloc.address)
            info.sizeInBytes = alloc.size
            info.agentOwner.handle = alloc.owner_agent
            pool = self._pools.get(alloc.pool)
            info.global_flags = int(pool.config.flags) if pool else 0
        if num_accessible != ffi.NULL:
            num_accessible[0] = 0
        return _OK

    def hsa_agent_iterate_regions(self, agent: Any, callback: Any, data: Any) -> int:
        handle = self._agent_handle(agent)
        if handle not in self._agents:
            return int(_S.ERROR_INVALID_AGENT)
        # Regions are the legacy view of the same pools (same handles).
        for pool in self._agent_pools[handle]:
            status = callback(ffi.new("hsa_region_t*", [pool])[0], data)
            if status == _S.INFO_BREAK:
                break
            if status != _OK:
                return status
        return _OK

    def hsa_region_get_info(self, region: Any, attribute: int, value: Any) -> int:
        p = self._pools.get(int(region.handle))
        if p is None:
            return int(_S.ERROR_INVALID_REGION)
        if attribute == RegionInfo.SEGMENT:
            ffi.cast("uint32_t*", value)[0] = int(PoolSegment.GLOBAL)
        elif attribute == RegionInfo.GLOBAL_FLAGS:
            ffi.cast("uint32_t*", value)[0] = int(p.config.flags)
        elif attribute == RegionInfo.SIZE:
            ffi.cast("size_t*", value)[0] = p.config.size
        elif attribute == RegionInfo.RUNTIME_ALLOC_ALLOWED:
            ffi.cast("bool*", value)[0] = True
        else:
            return int(_S.ERROR_INVALID_ARGUMENT)
        return _OK
