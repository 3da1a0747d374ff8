"""HSA memory-pool discovery per agent (``hsa_amd_memory_pool_*``; "memory pool" is HSA's
term for a region of agent memory, unrelated to the allocation pools of ``hal_core.pool``).

CPU agents need a coarse, a kernarg and a fine pool (a non-kernarg fine pool preferred);
GPU agents need a coarse and a fine (or extended-scope fine) pool. Only GLOBAL-segment
pools that allow runtime allocation are considered (CPU pools must also be accessible by
all agents). Frozen values; blocking HSA queries; thread-safe.
"""

from __future__ import annotations

import attrs

from hal_core import FailedPreconditionError

from .agents import AgentDescription
from .hsa import HsaLibrary
from .hsa_enums import PoolGlobalFlag, PoolInfo, PoolSegment

__all__ = [
    "MemoryPoolDescription",
    "CpuMemoryPools",
    "GpuMemoryPools",
    "find_cpu_memory_pools",
    "find_gpu_memory_pools",
    "list_memory_pools",
]


@attrs.frozen
class MemoryPoolDescription:
    handle: int
    agent: int
    flags: PoolGlobalFlag
    granule: int
    alignment: int
    alloc_max_size: int
    accessible_by_all: bool

    def round_up(self, size: int) -> int:
        g = max(1, self.granule)
        return -(-max(1, size) // g) * g


@attrs.frozen
class CpuMemoryPools:
    coarse: MemoryPoolDescription
    fine: MemoryPoolDescription
    kernarg: MemoryPoolDescription


@attrs.frozen
class GpuMemoryPools:
    coarse: MemoryPoolDescription
    fine: MemoryPoolDescription


def list_memory_pools(hsa: HsaLibrary, agent: AgentDescription) -> list[MemoryPoolDescription]:
    """GLOBAL, runtime-allocatable pools of ``agent`` in HSA order."""
    out = []
    for pool in hsa.iterate(
        "hsa_amd_agent_iterate_memory_pools", "hsa_amd_memory_pool_t", agent.hsa_handle(hsa)
    ):
        if hsa.pool_info(pool, PoolInfo.SEGMENT, "uint32_t") != PoolSegment.GLOBAL:
            continue
        if not hsa.pool_info(pool, PoolInfo.RUNTIME_ALLOC_ALLOWED, "bool"):
            continue
        out.append(
            MemoryPoolDescription(
                handle=int(pool.handle),
                agent=agent.handle,
                flags=PoolGlobalFlag(hsa.pool_info(pool, PoolInfo.GLOBAL_FLAGS, "uint32_t")),
                granule=int(hsa.pool_info(pool, PoolInfo.RUNTIME_ALLOC_GRANULE, "size_t")),
                alignment=int(hsa.pool_info(pool, PoolInfo.RUNTIME_ALLOC_ALIGNMENT, "size_t")),
                alloc_max_size=int(hsa.pool_info(pool, PoolInfo.ALLOC_MAX_SIZE, "size_t")),
                accessible_by_all=bool(hsa.pool_info(pool, PoolInfo.ACCESSIBLE_BY_ALL, "bool")),
            )
        )
    return out


def _missing(agent: AgentDescription, what: str, pools: list[MemoryPoolDescription]) -> Exception:
    found = ", ".join(f"{p.flags!r}" for p in pools) or "none"
    return FailedPreconditionError(
        f"agent {agent.name!r} (node {agent.node}) has no {what} memory pool (found: {found}); "
        "the ROCr installation or kernel driver does not expose the pools the driver needs"
    )


def find_cpu_memory_pools(hsa: HsaLibrary, agent: AgentDescription) -> CpuMemoryPools:
    pools = [p for p in list_memory_pools(hsa, agent) if p.accessible_by_all]
    coarse = next((p for p in pools if p.flags & PoolGlobalFlag.COARSE_GRAINED), None)
    kernarg = next((p for p in pools if p.flags & PoolGlobalFlag.KERNARG_INIT), None)
    fine = next(
        (
            p
            for p in pools
            if p.flags & PoolGlobalFlag.FINE_GRAINED and not p.flags & PoolGlobalFlag.KERNARG_INIT
        ),
        None,
    )
    fine = fine or next((p for p in pools if p.flags & PoolGlobalFlag.FINE_GRAINED), None)
    if coarse is None:
        raise _missing(agent, "coarse-grained", pools)
    if kernarg is None:
        raise _missing(agent, "kernarg", pools)
    if fine is None:
        raise _missing(agent, "fine-grained", pools)
    return CpuMemoryPools(coarse, fine, kernarg)


def find_gpu_memory_pools(hsa: HsaLibrary, agent: AgentDescription) -> GpuMemoryPools:
    pools = list_memory_pools(hsa, agent)
    coarse = next((p for p in pools if p.flags & PoolGlobalFlag.COARSE_GRAINED), None)
    fine = next(
        (
            p
            for p in pools
            if p.flags & (PoolGlobalFlag.FINE_GRAINED | PoolGlobalFlag.EXTENDED_SCOPE_FINE_GRAINED)
        ),
        None,
    )
    if coarse is None:
        raise _missing(agent, "coarse-grained", pools)
    if fine is None:
        raise _missing(agent, "fine-grained", pools)
    return GpuMemoryPools(coarse, fine)
