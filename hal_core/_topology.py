"""Topology: how the devices of a group reach each other's semaphores and buffers.

A group's ``Topology`` is an immutable N x N matrix of ``TopologyEdge`` values, derived
from what each device says about itself (``DeviceCapabilities``) and refined by drivers for
same-driver pairs; each member holds a ``TopologyInfo`` (its index, its self edge, bitmaps
of the peers it can wait on, signal, import from and copy with, and the shared tracker with
its base axis). ``DeviceGroup`` (``_device_group``) builds them; ``format_topology`` and
``topology_as_dict`` present them (``hal info --topology``).

Edge direction. ``topology.edge(src, dst)`` describes device ``dst`` *consuming* what
device ``src`` produces: ``wait_mode`` is how ``dst`` waits on semaphores ``src`` signals,
``signal_mode`` how ``src`` signals semaphores ``dst`` waits on, ``buffer_read_mode`` /
``buffer_write_mode`` how ``dst`` reads / writes buffers allocated by ``src``.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Sequence

import attrs

from ._device import Device
from ._frontier import axis_make_queue
from ._frontier_tracker import FrontierTracker
from ._reprs import names, safe_repr
from ._status import InvalidArgumentError, NotFoundError

if TYPE_CHECKING:
    from ._device_group import DeviceGroup

__all__ = [
    "HOST_MEMORY_DOMAIN",
    "LINK_COSTS",
    "DeviceCapabilities",
    "InteropMode",
    "LinkClass",
    "Topology",
    "TopologyCapability",
    "TopologyEdge",
    "TopologyInfo",
    "build_edges",
    "edge_from_capabilities",
    "format_topology",
    "make_infos",
    "query_device_capabilities",
    "topology_as_dict",
]

HOST_MEMORY_DOMAIN = "host"
"""The memory domain of devices whose buffers are ordinary host memory of this process."""


class LinkClass(enum.IntEnum):
    """The physical path between two devices (IREE's link classes, best first)."""

    SAME_DIE = 0
    NVLINK_IF = 1  # NVLink / AMD xGMI Infinity Fabric
    PCIE_SAME_ROOT = 2
    PCIE_CROSS_ROOT = 3
    HOST_STAGED = 4  # no direct path: transfers bounce through host memory
    FABRIC = 5  # network fabric (InfiniBand, ...)
    OTHER = 6
    ISOLATED = 7  # nothing can be shared


class InteropMode(enum.IntEnum):
    """How one device uses another's semaphores or buffers (IREE's values)."""

    NATIVE = 0  # directly, no work
    IMPORT = 1  # after importing a handle once
    COPY = 2  # through a copy / host deferral
    NONE = 3  # not at all


class TopologyCapability(enum.IntFlag):
    """Capability flags of an edge."""

    NONE = 0
    P2P_COPY = 1 << 0  # a copy engine of one side reaches the other's memory
    PEER_COHERENT = 1 << 1  # peer accesses are cache coherent
    ATOMIC_DEVICE = 1 << 2  # device-scope atomics work across the link
    ATOMIC_SYSTEM = 1 << 3  # system-scope atomics work across the link
    PEER_ACCESS_REQUIRES_GRANT = 1 << 4  # native access after an explicit grant
    UNIFIED_MEMORY = 1 << 5  # one address space (the same allocations on both sides)
    SHARED_SEMAPHORES = 1 << 6  # both sides signal/wait the same host timeline natively
    LINK_PCIE = 1 << 8
    LINK_XGMI = 1 << 9
    LINK_HYPERTRANSPORT = 1 << 10
    LINK_QPI = 1 << 11
    LINK_INFINIBAND = 1 << 12
    LINK_OTHER = 1 << 13


# Default (copy cost, latency class) per link class (IREE's amdgpu table).
LINK_COSTS: dict[LinkClass, tuple[int, int]] = {
    LinkClass.SAME_DIE: (0, 0),
    LinkClass.NVLINK_IF: (3, 3),
    LinkClass.PCIE_SAME_ROOT: (7, 7),
    LinkClass.PCIE_CROSS_ROOT: (9, 9),
    LinkClass.HOST_STAGED: (13, 11),
    LinkClass.FABRIC: (15, 14),
    LinkClass.OTHER: (11, 10),
    LinkClass.ISOLATED: (15, 15),
}


def _nibble(_instance: Any, attribute: Any, value: int) -> None:
    if value.__class__ is not int or not 0 <= value <= 15:
        raise InvalidArgumentError(
            f"TopologyEdge.{attribute.name} is a 4-bit cost in 0..15, got {value!r}"
        )


@attrs.frozen
class TopologyEdge:
    """How device ``dst`` uses device ``src``'s semaphores and buffers (see the module
    docstring for the direction). Immutable; build variants with ``attrs.evolve``.

    Costs (``wait_cost``, ``signal_cost``, ``copy_cost``, ``latency_class``) and
    ``numa_distance`` are 4-bit values, 0 best, as in IREE's packed scheduling word
    (``scheduling_word``); INVALID_ARGUMENT outside 0..15.
    """

    link_class: LinkClass = attrs.field(converter=LinkClass)
    wait_mode: InteropMode = attrs.field(converter=InteropMode)
    signal_mode: InteropMode = attrs.field(converter=InteropMode)
    buffer_read_mode: InteropMode = attrs.field(converter=InteropMode)
    buffer_write_mode: InteropMode = attrs.field(converter=InteropMode)
    capabilities: TopologyCapability = attrs.field(
        default=TopologyCapability.NONE, converter=TopologyCapability
    )
    wait_cost: int = attrs.field(default=0, validator=_nibble)
    signal_cost: int = attrs.field(default=0, validator=_nibble)
    copy_cost: int = attrs.field(default=0, validator=_nibble)
    latency_class: int = attrs.field(default=0, validator=_nibble)
    numa_distance: int = attrs.field(default=0, validator=_nibble)

    @classmethod
    def self_edge(cls) -> "TopologyEdge":
        """A device to itself: everything native and free."""
        return cls(
            LinkClass.SAME_DIE,
            InteropMode.NATIVE,
            InteropMode.NATIVE,
            InteropMode.NATIVE,
            InteropMode.NATIVE,
            TopologyCapability.P2P_COPY
            | TopologyCapability.PEER_COHERENT
            | TopologyCapability.ATOMIC_DEVICE
            | TopologyCapability.UNIFIED_MEMORY
            | TopologyCapability.SHARED_SEMAPHORES,
        )

    @property
    def can_read_natively(self) -> bool:
        return self.buffer_read_mode <= InteropMode.IMPORT

    @property
    def can_write_natively(self) -> bool:
        return self.buffer_write_mode <= InteropMode.IMPORT

    @property
    def scheduling_word(self) -> int:
        """The edge packed into 64 bits (2 bits per mode, 16 capability bits, 4 bits per
        cost, 3 bits of link class): one int compare tells two edges apart."""
        word = int(self.wait_mode) | int(self.signal_mode) << 2
        word |= int(self.buffer_read_mode) << 4 | int(self.buffer_write_mode) << 6
        word |= (int(self.capabilities) & 0xFFFF) << 8
        word |= self.wait_cost << 24 | self.signal_cost << 28 | self.copy_cost << 32
        word |= self.latency_class << 36 | self.numa_distance << 40
        word |= int(self.link_class) << 44
        return word


@attrs.frozen
class DeviceCapabilities:
    """What a device says about itself, from which default edges are derived.

    * ``memory_domain``: names the address space of the device's buffers. Two devices in
      the same domain use each other's buffers natively. ``"host"`` means ordinary host
      memory of this process.
    * ``host_memory_access``: how the device reads/writes host memory (a ``"host"``
      domain buffer of another device).
    * ``host_semaphores``: the device waits and signals hal_core host timeline semaphores
      natively (timepoint callbacks); otherwise waits across devices are host-deferred.
    * ``numa_node``: the host NUMA node nearest the device (-1 unknown).
    * ``peer_copy``: the device has a copy engine that can reach same-driver peers (only
      used when the driver refines the edge).
    """

    memory_domain: str
    host_memory_access: InteropMode = attrs.field(default=InteropMode.COPY, converter=InteropMode)
    host_semaphores: bool = True
    numa_node: int = -1
    peer_copy: bool = False


def query_device_capabilities(device: Device) -> DeviceCapabilities:
    """The device's capabilities: its backend's ``query_capabilities()`` if it has one,
    otherwise a conservative default (a private memory domain reached by copies through
    host memory; host semaphores). INVALID_ARGUMENT when a backend returns another type."""
    query = device._contract.query_capabilities
    if query is None:
        return DeviceCapabilities(memory_domain=f"private:{id(device):x}")
    caps = query()
    if not isinstance(caps, DeviceCapabilities):
        raise InvalidArgumentError(
            f"backend of {device.uri!r} returned {type(caps).__name__} from "
            "query_capabilities(); it must return hal_core.backend.DeviceCapabilities"
        )
    return caps


def _numa_distance(a: DeviceCapabilities, b: DeviceCapabilities) -> int:
    if a.numa_node < 0 or b.numa_node < 0 or a.numa_node == b.numa_node:
        return 0
    # Without a SLIT table, another node is ACPI distance 20 -> IREE's min(15, (d-10)/2).
    return 5


def edge_from_capabilities(src: DeviceCapabilities, dst: DeviceCapabilities) -> TopologyEdge:
    """The default edge for ``dst`` consuming ``src``'s resources, from capabilities alone
    (drivers may refine same-driver pairs afterwards):

    * one memory domain: SAME_DIE, buffers NATIVE (unified memory);
    * ``src`` buffers are host memory and ``dst`` reaches host memory natively: buffers
      NATIVE over a HOST_STAGED link (the memory is the host's);
    * otherwise: HOST_STAGED, buffers COPY (staged through host memory);
    * semaphores: NATIVE when both sides use host timelines, COPY (host deferral) else.
    """
    caps = TopologyCapability.NONE
    semaphore_mode = InteropMode.COPY
    if src.host_semaphores and dst.host_semaphores:
        semaphore_mode = InteropMode.NATIVE
        caps |= TopologyCapability.SHARED_SEMAPHORES
    numa = _numa_distance(src, dst)
    if src.memory_domain == dst.memory_domain:
        # One address space: any copy engine of either side reaches both memories.
        caps |= (
            TopologyCapability.UNIFIED_MEMORY
            | TopologyCapability.PEER_COHERENT
            | TopologyCapability.P2P_COPY
        )
        link = LinkClass.SAME_DIE
        buffer_mode = InteropMode.NATIVE
    elif src.memory_domain == HOST_MEMORY_DOMAIN and dst.host_memory_access <= InteropMode.IMPORT:
        link = LinkClass.HOST_STAGED
        buffer_mode = dst.host_memory_access
    else:
        link = LinkClass.HOST_STAGED
        buffer_mode = InteropMode.COPY
    copy_cost, latency = LINK_COSTS[link]
    sync_cost = 0 if semaphore_mode == InteropMode.NATIVE else 4
    return TopologyEdge(
        link,
        semaphore_mode,
        semaphore_mode,
        buffer_mode,
        buffer_mode,
        caps,
        wait_cost=sync_cost,
        signal_cost=sync_cost,
        copy_cost=copy_cost,
        latency_class=latency,
        numa_distance=numa,
    )


class Topology:
    """The immutable N x N edge matrix of a group. ``edge(src, dst)``; NOT_FOUND for an
    index outside the group."""

    __slots__ = ("_edges", "device_count")

    def __init__(self, edges: Sequence[Sequence[TopologyEdge]]) -> None:
        self._edges = tuple(tuple(row) for row in edges)
        self.device_count = len(self._edges)

    def edge(self, src: int, dst: int) -> TopologyEdge:
        n = self.device_count
        if not (0 <= src < n and 0 <= dst < n):
            raise NotFoundError(
                f"topology edge ({src}, {dst}) is outside this {n}-device group; indices "
                f"run 0..{n - 1}"
            )
        return self._edges[src][dst]

    def rows(self) -> tuple[tuple[TopologyEdge, ...], ...]:
        return self._edges

    @safe_repr
    def __repr__(self) -> str:
        # The off-diagonal link classes say at a glance how the members reach each other.
        n = self.device_count
        links = sorted(
            {self._edges[s][d].link_class.name for s in range(n) for d in range(n) if s != d}
        )
        return f"<hal_core.Topology {n} devices links={names(links) or 'none'}>"


@attrs.frozen
class TopologyInfo:
    """What a member device knows of its group: its ``index``, ``self_edge``, the shared
    ``topology`` and ``tracker``, its ``base_axis`` (queue 0 of device ``index``) and 32-bit
    bitmaps over device indices (own bit included):

    * ``can_wait_from``: devices whose semaphores this device waits on (wait mode not NONE);
    * ``can_signal_to``: devices that can wait on this device's signals;
    * ``can_import_from``: devices whose buffers this device reads natively or by import;
    * ``can_p2p_with``: devices with a peer-copy path to or from this device (a
      ``P2P_COPY`` edge over memory one side reaches natively: a copy between them is one
      peer or native ``queue_copy``, never staged).
    """

    index: int
    self_edge: TopologyEdge
    topology: Topology = attrs.field(eq=False, repr=False)
    can_wait_from: int
    can_signal_to: int
    can_import_from: int
    can_p2p_with: int
    tracker: FrontierTracker = attrs.field(eq=False, repr=False)
    base_axis: int
    group: "DeviceGroup" = attrs.field(eq=False, repr=False)

    def queue_axis(self, queue_index: int) -> int:
        """The tracker axis of queue ``queue_index`` of this device."""
        return self.base_axis | (queue_index << 24)


def _bit(i: int) -> int:
    return 1 << i


# -- building ------------------------------------------------------------------------------


def build_edges(members: list[Device], caps: list[DeviceCapabilities]) -> list[list[TopologyEdge]]:
    n = len(members)
    # Every cell is filled below before the table is returned (None only meanwhile).
    edges: list[list[TopologyEdge]] = [[None] * n for _ in range(n)]  # type: ignore[list-item]
    for s in range(n):
        for d in range(n):
            if s == d:
                edges[s][d] = TopologyEdge.self_edge()
                continue
            edge = edge_from_capabilities(caps[s], caps[d])
            if members[s].driver_name == members[d].driver_name:
                refine = members[d]._contract.refine_topology_edge
                if refine is not None:
                    refined = refine(members[s].backend, edge)
                    if not isinstance(refined, TopologyEdge):
                        raise InvalidArgumentError(
                            f"driver {members[d].driver_name!r} returned "
                            f"{type(refined).__name__} from refine_topology_edge; it must "
                            "return a TopologyEdge"
                        )
                    edge = refined
            edges[s][d] = edge
    return edges


def make_infos(
    group: "DeviceGroup", tracker: FrontierTracker, session: int, machine: int
) -> list[TopologyInfo]:
    topology = group._topology
    edges = topology._edges
    n = topology.device_count
    infos = []
    for d in range(n):
        wait_from = signal_to = import_from = p2p = 0
        for o in range(n):
            if edges[o][d].wait_mode != InteropMode.NONE:
                wait_from |= _bit(o)
            if edges[d][o].signal_mode != InteropMode.NONE:
                signal_to |= _bit(o)
            if edges[o][d].buffer_read_mode <= InteropMode.IMPORT:
                import_from |= _bit(o)
            if _has_peer_path(edges, o, d):
                p2p |= _bit(o)
        base_axis = axis_make_queue(session, machine, d, 0)
        for q in range(group._devices[d].queue_count):
            # The group registers every queue axis, with no bridge: members advance them.
            tracker.register_axis(base_axis | (q << 24))
        infos.append(
            TopologyInfo(
                index=d,
                self_edge=edges[d][d],
                topology=topology,
                can_wait_from=wait_from,
                can_signal_to=signal_to,
                can_import_from=import_from,
                can_p2p_with=p2p,
                tracker=tracker,
                base_axis=base_axis,
                group=group,
            )
        )
    return infos


def _has_peer_path(edges: Sequence[Sequence[TopologyEdge]], a: int, b: int) -> bool:
    """Whether ``DeviceGroup.copy`` can copy between ``a`` and ``b`` (either way) with
    one peer or native copy: an edge says P2P_COPY and one side reaches the other's
    memory natively (as ``DeviceGroup._peer_runner`` requires). A P2P_COPY bit over
    buffers that are only reached by copies would advertise a path no copy takes."""
    if not (edges[a][b].capabilities | edges[b][a].capabilities) & TopologyCapability.P2P_COPY:
        return False
    return (
        edges[a][b].can_read_natively
        or edges[a][b].can_write_natively
        or edges[b][a].can_read_natively
        or edges[b][a].can_write_natively
    )


# -- presentation ------------------------------------------------------------------------------

_MODE_LETTER = {
    InteropMode.NATIVE: "N",
    InteropMode.IMPORT: "I",
    InteropMode.COPY: "C",
    InteropMode.NONE: "-",
}


def format_topology(group: "DeviceGroup") -> str:
    """The group's topology as text: the members, then one line per ordered pair with the
    link class, modes (wait/signal/read/write as N=native I=import C=copy -=none), costs,
    NUMA distance and capability flags, then each member's bitmaps."""
    lines = ["Devices:"]
    for i, device in enumerate(group.devices):
        caps = group.capabilities[i]
        lines.append(
            f"  [{i}] {device.uri:<28} queues={device.queue_count} "
            f"memory={caps.memory_domain} numa={caps.numa_node}"
        )
    n = group.device_count
    lines.append("Link classes (row src, column dst):")
    lines.append("       " + "".join(f"{d:>17}" for d in range(n)))
    for s in range(n):
        row = "".join(f"{group.topology.edge(s, d).link_class.name:>17}" for d in range(n))
        lines.append(f"  {s:>3}  {row}")
    lines.append("Edges (src -> dst: dst using src's semaphores/buffers):")
    lines.append("  src dst  link             w/s/r/w  copy lat numa  capabilities")
    for s in range(n):
        for d in range(n):
            edge = group.topology.edge(s, d)
            modes = "/".join(
                _MODE_LETTER[m]
                for m in (
                    edge.wait_mode,
                    edge.signal_mode,
                    edge.buffer_read_mode,
                    edge.buffer_write_mode,
                )
            )
            flags = (
                "|".join(
                    f.name for f in TopologyCapability if f and f.name and f in edge.capabilities
                )
                or "-"
            )
            lines.append(
                f"  {s:>3} {d:>3}  {edge.link_class.name:<16} {modes:<8} {edge.copy_cost:>4} "
                f"{edge.latency_class:>3} {edge.numa_distance:>4}  {flags}"
            )
    lines.append("Bitmaps:")
    for i in range(n):
        info = group.topology_info(i)
        lines.append(
            f"  [{i}] wait_from={info.can_wait_from:#x} signal_to={info.can_signal_to:#x} "
            f"import_from={info.can_import_from:#x} p2p_with={info.can_p2p_with:#x} "
            f"base_axis={info.base_axis:#018x}"
        )
    return "\n".join(lines)


def topology_as_dict(group: "DeviceGroup") -> dict[str, Any]:
    """The group's topology as plain data (``hal info --topology --json``): devices with
    their capabilities and bitmaps, and every edge with enum names."""
    devices = []
    for i, device in enumerate(group.devices):
        info = group.topology_info(i)
        devices.append(
            {
                "index": i,
                "uri": device.uri,
                "driver": device.driver_name,
                "queue_count": device.queue_count,
                "capabilities": {
                    "memory_domain": group.capabilities[i].memory_domain,
                    "host_memory_access": group.capabilities[i].host_memory_access.name,
                    "host_semaphores": group.capabilities[i].host_semaphores,
                    "numa_node": group.capabilities[i].numa_node,
                },
                "can_wait_from": info.can_wait_from,
                "can_signal_to": info.can_signal_to,
                "can_import_from": info.can_import_from,
                "can_p2p_with": info.can_p2p_with,
                "base_axis": info.base_axis,
            }
        )
    edges = []
    for s in range(group.device_count):
        for d in range(group.device_count):
            edge = group.topology.edge(s, d)
            edges.append(
                {
                    "src": s,
                    "dst": d,
                    "link_class": edge.link_class.name,
                    "wait_mode": edge.wait_mode.name,
                    "signal_mode": edge.signal_mode.name,
                    "buffer_read_mode": edge.buffer_read_mode.name,
                    "buffer_write_mode": edge.buffer_write_mode.name,
                    "capabilities": [
                        f.name for f in TopologyCapability if f and f in edge.capabilities
                    ],
                    "wait_cost": edge.wait_cost,
                    "signal_cost": edge.signal_cost,
                    "copy_cost": edge.copy_cost,
                    "latency_class": edge.latency_class,
                    "numa_distance": edge.numa_distance,
                    "scheduling_word": edge.scheduling_word,
                }
            )
    return {"devices": devices, "edges": edges}
