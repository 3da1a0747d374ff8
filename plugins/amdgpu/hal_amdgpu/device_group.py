"""The amdgpu device as a member of a hal_core ``DeviceGroup``: capabilities,
same-driver edge refinement from HSA link info, and group-axis advancement.

* ``query_capabilities``: buffers live in this HSA system's GPU pools (a memory domain
  private to the HSA library instance and GPU set, so two devices over the same GPUs share
  it); semaphores are hal_core host timelines (host_semaphores); host memory of another
  device is reached by copies (the allocator grants pool access to this device's own agents
  only, never to foreign host allocations); NUMA node of the nearest CPU; ``peer_copy``
  when a GPU of the device can reach the pools of another GPU of its HSA system.
* ``refine_topology_edge(other, edge)``: waits. Over one HSA system, the consuming
  device's queues wait on the producer's queue epoch signals on the device
  (``group_waits``) when every GPU of the consumer has a wait tier: ``wait_mode`` NATIVE,
  ``wait_cost`` 0; otherwise, and between different HSA systems, they are deferred to
  the host: COPY, ``wait_cost`` 4.
  Links: for two amdgpu devices over one HSA system, the
  worst physical edge (``topology.query_edge``) from any GPU of the consuming device to the
  pools of any GPU of the producing one gives the NUMA distance and the LINK_* bits (the
  physical link). Devices over the same GPUs share memory: SAME_DIE, NATIVE buffers,
  unified memory. Distinct GPUs that can reach each other's pools get the link's class and
  costs, P2P_COPY and the physical bits, and buffers NATIVE or IMPORT (reached after a
  grant, which the queue set makes on a transfer's first use of a peer allocation), so
  the group copies with one queue_copy over peer memory. Distinct GPUs that never can
  (``NEVER_ALLOWED``) get HOST_STAGED costs, buffers COPY and no P2P_COPY or peer-access
  bits, since every copy between them stages through host memory. Devices over different
  HSA systems (e.g. rocr and the soft agent) keep the capability-derived edge.
* ``assign_topology_info(info)``: each host queue's retired epochs also advance its axis
  ``info.queue_axis(q)`` in the group's tracker (through the queue set's retire listener,
  on the completion thread), and the queue set joins the wait domain of the group's
  amdgpu members over its HSA system (``group_waits``); ``None`` undoes both. Blocking:
  may create the host queues.
"""

from __future__ import annotations

from typing import Any

import attrs

from hal_core.backend import (
    DeviceCapabilities,
    InteropMode,
    LinkClass,
    TopologyCapability,
    TopologyEdge,
)

from .group_waits import join_group_waits
from .hsa_memory import find_gpu_memory_pools
from .topology import LINK_COSTS, AgentMemoryEdge, LinkFlag, query_edge
from .wait_barriers import device_waits_supported

__all__ = ["query_capabilities", "refine_topology_edge", "assign_topology_info", "hal_capabilities"]

_FLAG_TO_CAPABILITY = (
    (LinkFlag.PCIE, TopologyCapability.LINK_PCIE),
    (LinkFlag.XGMI, TopologyCapability.LINK_XGMI),
    (LinkFlag.HYPERTRANSPORT, TopologyCapability.LINK_HYPERTRANSPORT),
    (LinkFlag.QPI, TopologyCapability.LINK_QPI),
    (LinkFlag.INFINIBAND, TopologyCapability.LINK_INFINIBAND),
    (LinkFlag.OTHER, TopologyCapability.LINK_OTHER),
    (LinkFlag.PEER_COHERENT, TopologyCapability.PEER_COHERENT),
    (LinkFlag.ATOMIC_DEVICE, TopologyCapability.ATOMIC_DEVICE),
    (LinkFlag.ATOMIC_SYSTEM, TopologyCapability.ATOMIC_SYSTEM),
    (LinkFlag.P2P_COPY, TopologyCapability.P2P_COPY),
    (LinkFlag.PEER_ACCESS_REQUIRES_GRANT, TopologyCapability.PEER_ACCESS_REQUIRES_GRANT),
)


def hal_capabilities(flags: LinkFlag) -> TopologyCapability:
    """``topology.LinkFlag`` bits as hal_core ``TopologyCapability`` bits."""
    caps = TopologyCapability.NONE
    for flag, cap in _FLAG_TO_CAPABILITY:
        if flags & flag:
            caps |= cap
    return caps


def _memory_domain(backend: Any) -> str:
    return f"amdgpu:{id(backend.hsa):x}:{','.join(str(o) for o in backend.ordinals)}"


def query_capabilities(backend: Any) -> DeviceCapabilities:
    numa = backend.cpus[0].node if backend.cpus else -1
    return DeviceCapabilities(
        memory_domain=_memory_domain(backend),
        host_memory_access=InteropMode.COPY,
        host_semaphores=True,
        numa_node=int(numa),
        peer_copy=_reaches_a_peer(backend),
    )


def _reaches_a_peer(backend: Any) -> bool:
    """Whether a GPU of ``backend`` can reach the pools of a GPU of its HSA system that is
    not part of it (a blit over peer memory can then copy between the two)."""
    mine = set(backend.ordinals)
    system = backend.system
    for ordinal, gpu in enumerate(system.gpus):
        if ordinal in mine:
            continue
        pools = find_gpu_memory_pools(backend.hsa, gpu)
        if any(
            query_edge(backend.hsa, g.handle, pools).flags & LinkFlag.P2P_COPY for g in backend.gpus
        ):
            return True
    return False


def _worst_edge(consumer: Any, producer: Any) -> AgentMemoryEdge:
    worst: AgentMemoryEdge | None = None
    for gpu in consumer.gpus:
        for pools in producer.gpu_pools:
            e = query_edge(consumer.hsa, gpu.handle, pools)
            if worst is None or (e.copy_cost, e.latency_class) > (
                worst.copy_cost,
                worst.latency_class,
            ):
                worst = e
    assert worst is not None  # every amdgpu device has at least one GPU
    return worst


#: Capability bits that describe the physical link itself (kept on every refined edge).
_LINK_CAPABILITIES = (
    TopologyCapability.LINK_PCIE
    | TopologyCapability.LINK_XGMI
    | TopologyCapability.LINK_HYPERTRANSPORT
    | TopologyCapability.LINK_QPI
    | TopologyCapability.LINK_INFINIBAND
    | TopologyCapability.LINK_OTHER
)


#: wait_cost of a wait deferred to the host (hal_core's cost for a COPY semaphore edge).
_HOST_DEFERRED_WAIT_COST = 4


def _with_waits(edge: TopologyEdge, on_device: bool) -> TopologyEdge:
    """``edge`` saying how the consumer waits on the producer's semaphores: on the device
    (NATIVE, free) or deferred to the host (COPY)."""
    if on_device:
        return attrs.evolve(edge, wait_mode=InteropMode.NATIVE, wait_cost=0)
    return attrs.evolve(edge, wait_mode=InteropMode.COPY, wait_cost=_HOST_DEFERRED_WAIT_COST)


def refine_topology_edge(backend: Any, other: Any, edge: TopologyEdge) -> TopologyEdge:
    from .device import AmdgpuDeviceBackend

    if not isinstance(other, AmdgpuDeviceBackend) or other.hsa is not backend.hsa:
        # Different HSA systems: no link info relates them, and no queue of one can read
        # the other's epoch signals, so waits between them are deferred to the host.
        return _with_waits(edge, False)
    # One HSA system: the consumer's queues wait on the producer's epoch signals on the
    # device when every GPU of the consumer has a wait tier (group_waits).
    edge = _with_waits(edge, device_waits_supported(backend.gpus, backend.queue_options))
    phys = _worst_edge(backend, other)
    if set(backend.ordinals) == set(other.ordinals):
        caps = edge.capabilities | hal_capabilities(phys.flags) | TopologyCapability.UNIFIED_MEMORY
        return attrs.evolve(
            edge,
            link_class=LinkClass.SAME_DIE,
            buffer_read_mode=InteropMode.NATIVE,
            buffer_write_mode=InteropMode.NATIVE,
            capabilities=caps,
            copy_cost=0,
            latency_class=0,
            numa_distance=phys.numa_distance,
        )
    if phys.flags & LinkFlag.P2P_COPY:
        # Distinct GPUs that can reach each other's pools: a copy between them runs on
        # one GPU's queue over the peer's memory (the queue set grants the peer access on
        # first use, hence IMPORT when ROCr requires a grant), at the link's costs.
        mode = max(phys.coarse_mode, phys.fine_mode)
        caps = (edge.capabilities & ~TopologyCapability.UNIFIED_MEMORY) | hal_capabilities(
            phys.flags
        )
        return attrs.evolve(
            edge,
            link_class=phys.link_class,
            buffer_read_mode=mode,
            buffer_write_mode=mode,
            capabilities=caps,
            copy_cost=phys.copy_cost,
            latency_class=phys.latency_class,
            numa_distance=phys.numa_distance,
        )
    # Distinct GPUs that can never reach each other's memory: every transfer between them
    # stages through host memory (DeviceGroup's STAGED copy). Advertise that path:
    # HOST_STAGED costs and no peer-access bits; the LINK_* bits still name the physical
    # link HSA reports.
    caps = (
        edge.capabilities & ~(TopologyCapability.UNIFIED_MEMORY | TopologyCapability.P2P_COPY)
    ) | (hal_capabilities(phys.flags) & _LINK_CAPABILITIES)
    copy_cost, latency = LINK_COSTS[LinkClass.HOST_STAGED]
    return attrs.evolve(
        edge,
        link_class=LinkClass.HOST_STAGED,
        buffer_read_mode=InteropMode.COPY,
        buffer_write_mode=InteropMode.COPY,
        capabilities=caps,
        copy_cost=copy_cost,
        latency_class=latency,
        numa_distance=phys.numa_distance,
    )


class _GroupAxes:
    """Retire listener: advance queue ``q``'s group axis to its completed epoch, then pass
    the event on to whatever listener was installed before (profiling, ...)."""

    __slots__ = ("tracker", "axes", "previous", "active")

    def __init__(self, info: Any, queue_count: int, previous: Any) -> None:
        self.tracker = info.tracker
        self.axes = [info.queue_axis(q) for q in range(queue_count)]
        self.previous = previous
        self.active = True

    def __call__(self, queue_index: int, completed: int) -> None:
        if self.active:
            self.tracker.advance(self.axes[queue_index], completed)
        previous = self.previous
        if previous is not None:
            previous(queue_index, completed)


def assign_topology_info(backend: Any, info: Any) -> None:
    old = getattr(backend, "_group_axes", None)
    if old is not None:
        old.active = False  # a listener chained behind a later one stays a pass-through
        qset = backend._host_queue_set  # None once the device closed
        if qset is not None and qset.retire_listener is old:
            qset.retire_listener = old.previous
        if qset is not None and qset.pools is not None:
            qset.pools.group = None  # pool frontiers name the queue set's own axes again
        backend._group_axes = None
    if info is None:
        qset = backend._host_queue_set
        if qset is not None:
            join_group_waits(backend, qset, None)
        return
    qset = backend._host_queue_set or backend._create_host_queues()
    join_group_waits(backend, qset, info)
    axes = _GroupAxes(info, len(qset.queues), qset.retire_listener)
    qset.retire_listener = axes
    backend._group_axes = axes
    if qset.pools is not None:
        qset.pools.group = axes  # pool frontiers name the group's queue axes
    # Catch up with what retired before the listener was in place (advance is monotonic).
    for q in qset.queues:
        if q.completed_epoch:
            info.tracker.advance(axes.axes[q.index], q.completed_epoch)
