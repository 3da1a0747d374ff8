"""What the CUDA driver says about how two GPUs reach each other, for logical devices
over several GPUs and for device-group edges between CUDA devices.

* ``enable_peer_access(contexts)``: for every ordered pair of distinct GPUs where
  ``cuDeviceCanAccessPeer`` says the reader reaches the owner's memory,
  ``cuCtxEnablePeerAccess`` (an already enabled pair is fine: primary contexts are
  shared by every device of the process). Returns which pairs have access.
* ``refine_edge(src_contexts, dst_contexts, edge)``: the edge of two CUDA devices. Over
  the same GPUs: one memory (``SAME_DIE``, buffers ``NATIVE``). Between distinct GPUs
  with peer access both ways: buffers ``NATIVE`` (kernels and copies reach the other's
  memory once access is enabled, which this does), ``P2P_COPY``, the link ``NVLINK_IF``
  when the pair has native atomics (``cuDeviceGetP2PAttribute``; NVLink has them, PCIe
  peer access does not) else ``PCIE_SAME_ROOT``. Otherwise the default edge stays (copies
  staged through host memory).

Cold paths only (device and group creation). Thread-safe (no state).
"""

from __future__ import annotations

from typing import Any

import attrs

from hal_core.backend import InteropMode, LinkClass, TopologyCapability, TopologyEdge

from .cuda_api import CudaContext, check

CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED = 704
CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED = 3

# (copy cost, latency class) of the link classes these edges use: IREE's table, as
# hal_core's default edges use it.
LINK_COSTS: dict[LinkClass, tuple[int, int]] = {
    LinkClass.SAME_DIE: (0, 0),
    LinkClass.NVLINK_IF: (3, 3),
    LinkClass.PCIE_SAME_ROOT: (7, 7),
}


def can_access_peer(reader: CudaContext, owner: CudaContext) -> bool:
    """Whether ``reader``'s GPU can reach ``owner``'s GPU memory (False for one GPU, or
    when ``cuDeviceCanAccessPeer`` fails)."""
    if reader.ordinal == owner.ordinal:
        return False
    result = reader.api.cuDeviceCanAccessPeer(reader.device, owner.device)
    # A driver that cannot answer offers no peer access: the pair keeps staged copies.
    return not result[0] and bool(result[1])


def enable_peer_access(contexts: list[CudaContext]) -> dict[tuple[int, int], bool]:
    """Enable peer access between every pair of the GPUs of ``contexts`` that allows it;
    ``(reader ordinal, owner ordinal) -> enabled`` for every pair of distinct GPUs."""
    out: dict[tuple[int, int], bool] = {}
    for reader in contexts:
        for owner in contexts:
            if reader.ordinal == owner.ordinal:
                continue
            key = (reader.ordinal, owner.ordinal)
            if key in out:
                continue
            enabled = False
            if can_access_peer(reader, owner):
                reader.make_current()
                err = reader.api.cuCtxEnablePeerAccess(owner.handle, 0)[0]
                if not err or int(err) == CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED:
                    enabled = True
                else:
                    check((err,), "cuCtxEnablePeerAccess")
            out[key] = enabled
    return out


def _native_atomics(a: CudaContext, b: CudaContext) -> bool:
    api = a.api
    try:
        attribute = api.CUdevice_P2PAttribute(CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED)
        value = api.cuDeviceGetP2PAttribute(attribute, a.device, b.device)
    except (AttributeError, TypeError, ValueError):
        return False
    return not value[0] and bool(value[1])


def refine_edge(src: list[CudaContext], dst: list[CudaContext], edge: TopologyEdge) -> TopologyEdge:
    """The edge of CUDA device ``dst`` using CUDA device ``src``'s semaphores and buffers
    (each device given by its GPUs' contexts); see the module docstring."""
    src_gpus = {c.ordinal for c in src}
    dst_gpus = {c.ordinal for c in dst}
    if src_gpus == dst_gpus:
        return attrs.evolve(
            edge,
            link_class=LinkClass.SAME_DIE,
            buffer_read_mode=InteropMode.NATIVE,
            buffer_write_mode=InteropMode.NATIVE,
            capabilities=edge.capabilities
            | TopologyCapability.P2P_COPY
            | TopologyCapability.PEER_COHERENT
            | TopologyCapability.UNIFIED_MEMORY,
            copy_cost=LINK_COSTS[LinkClass.SAME_DIE][0],
            latency_class=LINK_COSTS[LinkClass.SAME_DIE][1],
        )
    pairs = [(r, o) for r in dst for o in src if r.ordinal != o.ordinal]
    if not all(can_access_peer(r, o) and can_access_peer(o, r) for r, o in pairs):
        return edge
    access = enable_peer_access(list({c.ordinal: c for c in [*src, *dst]}.values()))
    if not all(access.get((r.ordinal, o.ordinal)) for r, o in pairs):
        return edge
    nvlink = all(_native_atomics(r, o) for r, o in pairs)
    link = LinkClass.NVLINK_IF if nvlink else LinkClass.PCIE_SAME_ROOT
    caps = edge.capabilities | TopologyCapability.P2P_COPY
    caps |= TopologyCapability.ATOMIC_DEVICE if nvlink else TopologyCapability.LINK_PCIE
    copy_cost, latency = LINK_COSTS[link]
    return attrs.evolve(
        edge,
        link_class=link,
        buffer_read_mode=InteropMode.NATIVE,
        buffer_write_mode=InteropMode.NATIVE,
        capabilities=caps,
        copy_cost=copy_cost,
        latency_class=latency,
    )


def contexts_of(backend: Any) -> list[CudaContext] | None:
    """The GPU contexts of a CUDA device backend (one GPU or a logical device), or None
    for another driver's backend."""
    members = getattr(backend, "members", None)
    if members is not None:
        return [m.ctx for m in members]
    ctx = getattr(backend, "ctx", None)
    return [ctx] if isinstance(ctx, CudaContext) else None
