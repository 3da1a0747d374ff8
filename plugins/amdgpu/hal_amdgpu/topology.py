"""Topology edges between physical agents from HSA link info.

``query_edge(hsa, src, dst_pools)`` asks from the source agent about the destination's
coarse and fine HSA memory pools: access, hop count and per-hop link info, and folds them
into a frozen ``AgentMemoryEdge`` keeping the worst hop: link class and costs, NUMA
distance scaled to 0..15, coherence and atomics only if every hop has them, interop modes
from the access level (NATIVE by default, IMPORT after a grant, COPY never), P2P_COPY
when both pools are reachable. Blocking HSA queries; thread-safe.
"""

from __future__ import annotations

import enum

import attrs

# One definition of link classes and interop modes: hal_core's (IREE's values).
from hal_core.backend import InteropMode, LinkClass

from .hsa import HsaLibrary
from .hsa_enums import AgentPoolInfo, LinkType, PoolAccess
from .hsa_memory import GpuMemoryPools

__all__ = ["LinkClass", "LinkFlag", "InteropMode", "AgentMemoryEdge", "LINK_COSTS", "query_edge"]


class LinkFlag(enum.IntFlag):
    NONE = 0
    PCIE = 1 << 0
    XGMI = 1 << 1
    HYPERTRANSPORT = 1 << 2
    QPI = 1 << 3
    INFINIBAND = 1 << 4
    OTHER = 1 << 5
    PEER_COHERENT = 1 << 8
    ATOMIC_DEVICE = 1 << 9
    ATOMIC_SYSTEM = 1 << 10
    P2P_COPY = 1 << 11
    PEER_ACCESS_REQUIRES_GRANT = 1 << 12


# link class -> (copy cost, latency class)
LINK_COSTS: dict[LinkClass, tuple[int, int]] = {
    LinkClass.SAME_DIE: (0, 0),
    LinkClass.NVLINK_IF: (3, 3),
    LinkClass.PCIE_SAME_ROOT: (7, 7),
    LinkClass.PCIE_CROSS_ROOT: (9, 9),
    LinkClass.FABRIC: (15, 14),
    LinkClass.OTHER: (11, 10),
    LinkClass.HOST_STAGED: (13, 11),
    LinkClass.ISOLATED: (15, 15),
}
_BY_TYPE = {
    LinkType.XGMI: (LinkClass.NVLINK_IF, LinkFlag.XGMI),
    LinkType.PCIE: (LinkClass.PCIE_SAME_ROOT, LinkFlag.PCIE),
    LinkType.QPI: (LinkClass.PCIE_CROSS_ROOT, LinkFlag.QPI),
    LinkType.HYPERTRANSPORT: (LinkClass.PCIE_CROSS_ROOT, LinkFlag.HYPERTRANSPORT),
    LinkType.INFINBAND: (LinkClass.FABRIC, LinkFlag.INFINIBAND),
}


@attrs.frozen
class AgentMemoryEdge:
    link_class: LinkClass
    copy_cost: int
    latency_class: int
    numa_distance: int
    flags: LinkFlag
    coarse_mode: InteropMode
    fine_mode: InteropMode
    hops: int


def _scale_numa(distance: int) -> int:
    return 0 if distance == 0 else max(0, min(15, (distance - 10) // 2))


def _mode(access: int) -> InteropMode:
    """NATIVE when the agent reaches the pool by default, IMPORT when it must be granted
    access first (``hsa_amd_agents_allow_access``), COPY when it never can."""
    if access == PoolAccess.ALLOWED_BY_DEFAULT:
        return InteropMode.NATIVE
    if access == PoolAccess.DISALLOWED_BY_DEFAULT:
        return InteropMode.IMPORT
    return InteropMode.COPY


def query_edge(hsa: HsaLibrary, src_agent: int, dst: GpuMemoryPools) -> AgentMemoryEdge:
    ffi = hsa.ffi
    agent = ffi.new("hsa_agent_t*", [src_agent])[0]
    coarse = ffi.new("hsa_amd_memory_pool_t*", [dst.coarse.handle])[0]
    fine = ffi.new("hsa_amd_memory_pool_t*", [dst.fine.handle])[0]
    coarse_access = hsa.agent_pool_info(agent, coarse, AgentPoolInfo.ACCESS, "uint32_t")
    fine_access = hsa.agent_pool_info(agent, fine, AgentPoolInfo.ACCESS, "uint32_t")
    if src_agent == dst.coarse.agent:
        cost, latency = LINK_COSTS[LinkClass.SAME_DIE]
        return AgentMemoryEdge(
            LinkClass.SAME_DIE,
            cost,
            latency,
            0,
            LinkFlag.PEER_COHERENT
            | LinkFlag.ATOMIC_DEVICE
            | LinkFlag.ATOMIC_SYSTEM
            | LinkFlag.P2P_COPY,
            InteropMode.NATIVE,
            InteropMode.NATIVE,
            0,
        )
    hops = hsa.agent_pool_info(agent, coarse, AgentPoolInfo.NUM_LINK_HOPS, "uint32_t")
    infos = ffi.new("hsa_amd_memory_pool_link_info_t[]", max(1, hops))
    if hops:
        hsa.check(
            hsa.lib.hsa_amd_agent_memory_pool_get_info(
                agent, coarse, AgentPoolInfo.LINK_INFO, infos
            ),
            "hsa_amd_agent_memory_pool_get_info(LINK_INFO)",
        )
    worst = LinkClass.SAME_DIE
    flags = LinkFlag.NONE
    numa = 0
    coherent = atomic32 = atomic64 = bool(hops)
    for i in range(hops):
        info = infos[i]
        link_class, flag = _BY_TYPE.get(info.link_type, (LinkClass.OTHER, LinkFlag.OTHER))
        if LINK_COSTS[link_class][0] > LINK_COSTS[worst][0]:
            worst = link_class
        flags |= flag
        numa = max(numa, _scale_numa(int(info.numa_distance)))
        coherent &= bool(info.coherent_support)
        atomic32 &= bool(info.atomic_support_32bit)
        atomic64 &= bool(info.atomic_support_64bit)
    if coherent:
        flags |= LinkFlag.PEER_COHERENT
    if atomic32:
        flags |= LinkFlag.ATOMIC_DEVICE
    if atomic64:
        flags |= LinkFlag.ATOMIC_SYSTEM
    # A peer copy needs both pools: device buffers live in either.
    if PoolAccess.NEVER_ALLOWED not in (coarse_access, fine_access):
        flags |= LinkFlag.P2P_COPY
    else:
        worst = LinkClass.HOST_STAGED
    if PoolAccess.DISALLOWED_BY_DEFAULT in (coarse_access, fine_access):
        flags |= LinkFlag.PEER_ACCESS_REQUIRES_GRANT
    cost, latency = LINK_COSTS[worst]
    return AgentMemoryEdge(
        worst, cost, latency, numa, flags, _mode(coarse_access), _mode(fine_access), int(hops)
    )
