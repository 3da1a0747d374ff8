"""Device groups: devices of any backends under one topology and one frontier tracker.

A ``DeviceGroup`` owns up to ``MAX_GROUP_DEVICES`` (32) devices, an immutable
``Topology`` (an N x N matrix of ``TopologyEdge`` values) and one ``FrontierTracker`` that
every queue of every member advances. A device is *topology complete* only while it is a
member: it then holds a ``TopologyInfo`` in ``Device.topology_info`` (its index, its self
edge, bitmaps of the peers it can wait on, signal, import from and copy with, and the shared
tracker with its base axis).

Edge direction. ``topology.edge(src, dst)`` describes device ``dst`` *consuming* what
device ``src`` produces: ``wait_mode`` is how ``dst`` waits on semaphores ``src`` signals,
``signal_mode`` how ``src`` signals semaphores ``dst`` waits on, ``buffer_read_mode`` /
``buffer_write_mode`` how ``dst`` reads / writes buffers allocated by ``src``.

Building a group (``DeviceGroup.from_devices`` / ``create_device_group``):

1. check the member list (empty: INVALID_ARGUMENT; more than 32: RESOURCE_EXHAUSTED;
   duplicates, closed devices, devices already in a group: INVALID_ARGUMENT /
   FAILED_PRECONDITION);
2. ask each device for its ``DeviceCapabilities`` (backend ``query_capabilities()``,
   optional; a conservative default otherwise);
3. derive every edge from the two capability records (``edge_from_capabilities``), then let
   the driver refine same-driver pairs (backend ``refine_topology_edge(other, edge)``,
   optional);
4. register one tracker axis per queue of every device (base axis from the device index)
   and assign each device its ``TopologyInfo`` (backend ``assign_topology_info(info)``,
   optional, re-points the device's queues at the group tracker). If any step fails, every
   device assigned so far is un-assigned (``assign_topology_info(None)``) in reverse order,
   so a failed build leaves each device as it was.

Thread-safety: a group's topology and membership never change after it is built, so
reading them needs no lock. ``copy`` may be called from any thread. ``close`` is
idempotent and serialised by a lock.
"""

from __future__ import annotations

import collections
import enum
import threading
from typing import Any, Iterable, Sequence

import attrs
import numpy as np

from ._buffer import Buffer
from ._device import Device
from ._frontier import Frontier, axis_make_queue
from ._frontier_tracker import FrontierTracker
from ._memory import WHOLE_BUFFER, BufferUsage, MemoryAccess, QueueAffinity
from ._semaphore import Semaphore, SemaphoreList
from ._status import (
    FailedPreconditionError,
    HalError,
    IncompatibleError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)

__all__ = [
    "MAX_GROUP_DEVICES",
    "CopyRecord",
    "CopyStrategy",
    "DeviceCapabilities",
    "DeviceGroup",
    "InteropMode",
    "LinkClass",
    "Topology",
    "TopologyCapability",
    "TopologyEdge",
    "TopologyInfo",
    "create_device_group",
    "edge_from_capabilities",
    "format_topology",
    "query_device_capabilities",
    "topology_as_dict",
]

MAX_GROUP_DEVICES = 32
"""IREE's ``IREE_HAL_TOPOLOGY_MAX_DEVICE_COUNT``: bitmaps are 32 bits wide."""

HOST_MEMORY_DOMAIN = "host"
"""The memory domain of devices whose buffers are ordinary host memory of this process."""

_COPY_HISTORY = 64  # copy records kept for introspection (a bounded ring, newest last)

# Serialises "is this device in a group?" checks with the assignments, so two groups built
# at once from one device cannot both take it. Held only around non-blocking backend hooks.
_MEMBERSHIP_LOCK = threading.Lock()


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
    query = getattr(device.backend, "query_capabilities", None)
    if query is None:
        return DeviceCapabilities(memory_domain=f"private:{id(device):x}")
    caps = query()
    if not isinstance(caps, DeviceCapabilities):
        raise InvalidArgumentError(
            f"backend of {device.uri!r} returned {type(caps).__name__} from "
            "query_capabilities(); it must return hal_core.DeviceCapabilities"
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


class CopyStrategy(enum.IntEnum):
    """How ``DeviceGroup.copy`` moved bytes between devices."""

    NATIVE = 0  # one queue_copy on the chosen device, reading and writing in place
    PEER = 1  # one queue_copy on the source or target device, reaching the peer's memory
    STAGED = 2  # source device writes host memory, target device reads it (two ops)


@attrs.frozen
class CopyRecord:
    """One ``DeviceGroup.copy`` decision (for profiling and tests): the strategy, device
    indices of the source buffer, target buffer and executing device(s), and the length."""

    strategy: CopyStrategy
    source_device: int
    target_device: int
    executing_devices: tuple[int, ...]
    length: int


def _bit(i: int) -> int:
    return 1 << i


class DeviceGroup:
    """Devices of any backends under one topology and one frontier tracker.

    Build with ``create_device_group(uris)`` or ``DeviceGroup.from_devices(devices)``.
    The group holds strong references to its devices (they stay alive while it does) and,
    when it owns them, closes them in ``close()``. Thread-safe after construction.
    Context manager; ``close()`` is idempotent.
    """

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        raise TypeError(
            "DeviceGroup is built by hal_core.create_device_group(uris) or "
            "DeviceGroup.from_devices(devices)"
        )

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_devices(
        cls,
        devices: Iterable[Device],
        *,
        owns_devices: bool = True,
        session_epoch: int = 1,
        machine_index: int = 0,
    ) -> "DeviceGroup":
        """Group already-open devices; insertion order is the topology index.

        INVALID_ARGUMENT for an empty list, a non-Device, or a device listed twice;
        RESOURCE_EXHAUSTED for more than 32 devices; FAILED_PRECONDITION for a closed
        device or one already in a group. On any failure no device is changed.
        ``owns_devices``: ``close()`` also closes the devices.
        """
        members = list(devices)
        with _MEMBERSHIP_LOCK:
            _check_members(members)
            return cls._build(members, owns_devices, session_epoch, machine_index)

    @classmethod
    def _build(
        cls, members: list[Device], owns_devices: bool, session_epoch: int, machine_index: int
    ) -> "DeviceGroup":
        tracker = FrontierTracker(session_epoch=session_epoch, machine_index=machine_index)
        group = object.__new__(cls)
        group._devices = tuple(members)
        group._owns = owns_devices
        group._tracker = tracker
        group._lock = threading.Lock()
        group._closed = False
        group._copy_history = collections.deque(maxlen=_COPY_HISTORY)
        group._index = {id(d): i for i, d in enumerate(members)}
        # Set while ``copy`` submits its own ops, so ``route_queue_copy`` (reached again
        # through ``Device.queue_copy``) neither re-routes nor records them twice.
        group._submitting = threading.local()
        try:
            caps = [query_device_capabilities(d) for d in members]
            group._capabilities = tuple(caps)
            group._topology = Topology(_build_edges(members, caps))
            group._infos = tuple(_make_infos(group, tracker, session_epoch, machine_index))
            _assign_all(members, group._infos)
        except BaseException:
            tracker.close()
            raise
        return group

    # -- accessors ---------------------------------------------------------------------------

    @property
    def devices(self) -> tuple[Device, ...]:
        return self._devices

    @property
    def device_count(self) -> int:
        return len(self._devices)

    def device_at(self, index: int) -> Device:
        """The device at topology index ``index``; NOT_FOUND outside the group."""
        if index.__class__ is not int or not 0 <= index < len(self._devices):
            raise NotFoundError(
                f"device index {index!r} is outside this {len(self._devices)}-device group"
            )
        return self._devices[index]

    def index_of(self, device: Device) -> int:
        """The topology index of ``device``; NOT_FOUND when it is not a member."""
        index = self._index.get(id(device))
        if index is None or self._devices[index] is not device:
            raise NotFoundError(f"device {getattr(device, 'uri', device)!r} is not in this group")
        return index

    @property
    def topology(self) -> Topology:
        return self._topology

    @property
    def capabilities(self) -> tuple[DeviceCapabilities, ...]:
        return self._capabilities

    @property
    def tracker(self) -> FrontierTracker:
        return self._tracker

    def topology_info(self, index: int) -> TopologyInfo:
        self.device_at(index)
        return self._infos[index]

    def queue_axis(self, device_index: int, queue_index: int) -> int:
        """The tracker axis of one queue of one member."""
        device = self.device_at(device_index)
        if queue_index.__class__ is not int or not 0 <= queue_index < device.queue_count:
            raise NotFoundError(
                f"queue {queue_index!r} is outside device {device_index} "
                f"({device.queue_count} queues)"
            )
        return self._infos[device_index].queue_axis(queue_index)

    # -- cross-device synchronisation ----------------------------------------------------

    def is_frontier_reached(self, frontier: Frontier) -> bool:
        """True when the shared tracker proves every entry of ``frontier`` done (any
        member's queues): a wait on it can be elided. Lock-free."""
        return self._tracker.is_satisfied(frontier)

    def semaphore_for_frontier(
        self, frontier: Frontier, *, device: Device | None = None
    ) -> Semaphore:
        """A fresh semaphore that reaches 1 once ``frontier`` is reached in the group's
        tracker, or fails with the axis failure when one of its axes fails
        (``tracker.fail_axis``) - so a queue op on any member may wait on another member's
        progress. Already reached: returned signalled (the wait is elided).
        NOT_FOUND when an axis is not one of this group's queues."""
        self._check_open()
        owner = device if device is not None else self._devices[0]
        sem = owner.create_semaphore(0)
        self._tracker.wait(frontier, _settle_frontier_semaphore, sem)
        return sem

    # -- cross-device transfers ----------------------------------------------------------

    def select_copy_strategy(
        self, executing: Device, source: Buffer, target: Buffer
    ) -> CopyStrategy:
        """The cheapest strategy the topology allows for ``executing`` copying
        ``source`` (on its device) into ``target`` (on its device). INCOMPATIBLE when the
        edges allow none (an ISOLATED pair)."""
        e = self.index_of(executing)
        s = self._buffer_device_index(source, e, "source")
        t = self._buffer_device_index(target, e, "target")
        return self._select(e, s, t, None)

    def copy(
        self,
        executing: Device | int,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        source: Buffer,
        source_offset: int,
        target: Buffer,
        target_offset: int,
        length: int,
        *,
        strategy: CopyStrategy | None = None,
    ) -> CopyStrategy:
        """Copy ``length`` bytes between buffers of any members, choosing from the
        topology: NATIVE (``executing`` reads and writes both in place), PEER (the source
        or target device reaches the other's memory) or STAGED (the source device writes
        a host staging area, the target device reads it; two ops chained by a private
        semaphore). ``strategy`` forces one (INCOMPATIBLE when the edges do not allow it).

        Returns the strategy used, also recorded in ``last_copy`` / ``copy_history``.
        Non-blocking; errors while executing fail ``signal`` as for any queue op. Argument
        errors raise at once with nothing submitted (ranges OUT_OF_RANGE, usage
        PERMISSION_DENIED, a buffer of no member NOT_FOUND).
        """
        self._check_open()
        exec_dev = self.device_at(executing) if isinstance(executing, int) else executing
        e = self.index_of(exec_dev)
        s = self._buffer_device_index(source, e, "source")
        t = self._buffer_device_index(target, e, "target")
        if length == WHOLE_BUFFER:
            length = min(source.byte_length - source_offset, target.byte_length - target_offset)
        # Usage and range checks before anything is submitted (a staged copy is two ops):
        # a bad call changes nothing.
        source.require_usage(BufferUsage.TRANSFER_SOURCE, "group copy source")
        source.require_access(MemoryAccess.READ, "group copy source")
        target.require_usage(BufferUsage.TRANSFER_TARGET, "group copy target")
        target.require_access(MemoryAccess.WRITE, "group copy target")
        source.resolve_range(source_offset, length)
        target.resolve_range(target_offset, length)
        chosen = self._select(e, s, t, strategy)
        submitting = self._submitting
        submitting.active = True
        try:
            executed = self._submit_copy(
                chosen,
                e,
                s,
                t,
                affinity,
                wait,
                signal,
                source,
                source_offset,
                target,
                target_offset,
                length,
            )
        finally:
            submitting.active = False
        self._copy_history.append(CopyRecord(chosen, s, t, executed, length))
        return chosen

    def _submit_copy(
        self,
        chosen: CopyStrategy,
        e: int,
        s: int,
        t: int,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        source: Buffer,
        source_offset: int,
        target: Buffer,
        target_offset: int,
        length: int,
    ) -> tuple[int, ...]:
        exec_dev = self._devices[e]
        if chosen == CopyStrategy.NATIVE:
            exec_dev.queue_copy(
                affinity, wait, signal, source, source_offset, target, target_offset, length
            )
            executed: tuple[int, ...] = (e,)
        elif chosen == CopyStrategy.PEER:
            runner = self._peer_runner(s, t)
            # The caller's affinity names queues of ``executing``; the peer picks its own.
            aff = affinity if runner == e else QueueAffinity.ANY
            self._devices[runner].queue_copy(
                aff, wait, signal, source, source_offset, target, target_offset, length
            )
            executed = (runner,)
        else:
            self._staged_copy(
                e,
                s,
                t,
                affinity,
                wait,
                signal,
                source,
                source_offset,
                target,
                target_offset,
                length,
            )
            executed = (s, t)
        return executed

    def route_queue_copy(
        self,
        device: Device,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        source: Buffer,
        source_offset: int,
        target: Buffer,
        target_offset: int,
        length: int,
    ) -> bool:
        """Called by ``Device.queue_copy`` of a member when a buffer belongs to another
        device: choose as ``copy`` does. Returns False when ``device`` should run the copy
        itself (NATIVE, recorded here), True when the group ran it (PEER or STAGED).
        Buffers of devices outside the group are left to the device (False)."""
        if getattr(self._submitting, "active", False):
            return False
        e = self.index_of(device)
        index = self._index
        s = e if source.device is None else index.get(id(source.device))
        t = e if target.device is None else index.get(id(target.device))
        if s is None or t is None:
            return False
        chosen = self._select(e, s, t, None)
        if chosen == CopyStrategy.NATIVE:
            self._copy_history.append(CopyRecord(chosen, s, t, (e,), length))
            return False
        self.copy(
            device,
            affinity,
            wait,
            signal,
            source,
            source_offset,
            target,
            target_offset,
            length,
            strategy=chosen,
        )
        return True

    def runner_for(self, device: Device, buffer: Buffer, *, write: bool) -> Device:
        """The member that runs a queue op of ``device`` reading (or, ``write``, writing)
        ``buffer``: ``device`` itself when the topology lets it reach the buffer natively
        or by import, else the buffer's own device. Used by ``Device`` for fill, update,
        read and write; buffers of non-members stay with ``device``."""
        e = self.index_of(device)
        owner = buffer.device
        o = None if owner is None else self._index.get(id(owner))
        if o is None or o == e or self._devices[o] is not owner:
            return device
        edge = self._topology._edges[o][e]
        if edge.can_write_natively if write else edge.can_read_natively:
            return device
        return owner

    @property
    def last_copy(self) -> CopyRecord | None:
        """The newest copy decision, or None before the first copy."""
        history = self._copy_history
        return history[-1] if history else None

    @property
    def last_copy_strategy(self) -> CopyStrategy | None:
        record = self.last_copy
        return None if record is None else record.strategy

    @property
    def copy_history(self) -> tuple[CopyRecord, ...]:
        """The newest copy decisions (at most 64), oldest first."""
        return tuple(self._copy_history)

    def _buffer_device_index(self, buffer: Buffer, default: int, what: str) -> int:
        if not isinstance(buffer, Buffer):
            raise InvalidArgumentError(f"copy {what} must be a Buffer, got {type(buffer).__name__}")
        owner = buffer.device
        if owner is None:
            return default  # imported host memory: reachable by whoever runs the copy
        index = self._index.get(id(owner))
        if index is None or self._devices[index] is not owner:
            raise NotFoundError(
                f"copy {what} buffer belongs to {getattr(owner, 'uri', owner)!r}, which is "
                "not in this group; add its device to the group or copy through the host"
            )
        return index

    def _peer_runner(self, s: int, t: int) -> int | None:
        edges = self._topology._edges
        # The source device pushes when it can write the target's memory; else the target
        # device pulls when it can read the source's.
        if edges[t][s].can_write_natively:
            return s
        if edges[s][t].can_read_natively:
            return t
        return None

    def _select(self, e: int, s: int, t: int, forced: CopyStrategy | None) -> CopyStrategy:
        edges = self._topology._edges
        native = edges[s][e].can_read_natively and edges[t][e].can_write_natively
        p2p = (
            bool(
                (edges[s][t].capabilities | edges[t][s].capabilities) & TopologyCapability.P2P_COPY
            )
            and self._peer_runner(s, t) is not None
        )
        isolated = edges[s][t].link_class == LinkClass.ISOLATED
        if forced is None:
            if native:
                return CopyStrategy.NATIVE
            if p2p:
                return CopyStrategy.PEER
            if not isolated:
                return CopyStrategy.STAGED
        else:
            forced = CopyStrategy(forced)
            if (
                (forced == CopyStrategy.NATIVE and native)
                or (forced == CopyStrategy.PEER and p2p)
                or (forced == CopyStrategy.STAGED and not isolated)
            ):
                return forced
            raise IncompatibleError(
                f"copy strategy {forced.name} is not possible from device {s} to device {t} "
                f"run by device {e}: edge {s}->{e} reads {edges[s][e].buffer_read_mode.name}, "
                f"edge {t}->{e} writes {edges[t][e].buffer_write_mode.name}, link "
                f"{edges[s][t].link_class.name}; pass strategy=None to let the group choose"
            )
        raise IncompatibleError(
            f"devices {s} and {t} are ISOLATED in this group's topology: no strategy can "
            "copy between them"
        )

    def _staged_copy(
        self,
        e: int,
        s: int,
        t: int,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        source: Buffer,
        source_offset: int,
        target: Buffer,
        target_offset: int,
        length: int,
    ) -> None:
        # Stage through a host-memory file: every backend implements queue_write/queue_read
        # into files, so this works whatever the two devices' memories are.
        src_dev = self._devices[s]
        dst_dev = self._devices[t]
        staging = _host_staging_file(src_dev, length)
        hop = src_dev.create_semaphore(0)
        src_aff = affinity if s == e else QueueAffinity.ANY
        dst_aff = affinity if t == e else QueueAffinity.ANY
        hop_list = ((hop, 1),)
        src_dev.queue_write(src_aff, wait, hop_list, source, source_offset, staging, 0, length)
        try:
            dst_dev.queue_read(dst_aff, hop_list, signal, staging, 0, target, target_offset, length)
        except HalError:
            # The first hop is already queued; fail the hop so it does nothing harmful
            # downstream, then report the argument error.
            hop.fail(InvalidArgumentError("staged copy's second hop was rejected"))
            raise

    # -- lifetime ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPreconditionError("device group is closed; create a new one")

    def close(self) -> None:
        """Un-assign every member's topology (its queues go back to their own tracking),
        close the tracker (pending frontier waiters get CANCELLED) and, when the group owns
        its devices, close them. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with _MEMBERSHIP_LOCK:
            for device in reversed(self._devices):
                if device.topology_info is not None and device.topology_info.group is self:
                    _assign(device, None)
        self._tracker.close()
        if self._owns:
            for device in self._devices:
                device.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "DeviceGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        uris = ", ".join(d.uri for d in self._devices)
        return f"<hal_core.DeviceGroup [{uris}]>"


def _host_staging_file(device: Device, length: int) -> Any:
    """A read/write host-memory file of ``length`` bytes imported by ``device``."""
    return device.import_file(
        np.empty(max(length, 1), np.uint8), MemoryAccess.READ | MemoryAccess.WRITE
    )


def _settle_frontier_semaphore(sem: Semaphore, error: HalError | None) -> None:
    if error is None:
        sem._signal_from_queue(1)
    else:
        sem.fail(error)


# -- building --------------------------------------------------------------------------------


def _check_members(members: list[Any]) -> None:
    if not members:
        raise InvalidArgumentError(
            "a device group needs at least one device; pass a non-empty list of devices or URIs"
        )
    if len(members) > MAX_GROUP_DEVICES:
        raise ResourceExhaustedError(
            f"a device group holds at most {MAX_GROUP_DEVICES} devices, got {len(members)}; "
            "split the devices over several groups"
        )
    seen: set[int] = set()
    for i, device in enumerate(members):
        if not isinstance(device, Device):
            raise InvalidArgumentError(
                f"device group member {i} is a {type(device).__name__}, expected a "
                "hal_core.Device (use create_device_group for URIs)"
            )
        if id(device) in seen:
            raise InvalidArgumentError(
                f"device {device.uri!r} is listed twice (member {i}); list each device once"
            )
        seen.add(id(device))
        if device.closed:
            raise FailedPreconditionError(f"device {device.uri!r} (member {i}) is closed")
        if device.topology_info is not None:
            raise FailedPreconditionError(
                f"device {device.uri!r} (member {i}) is already in a device group; close "
                "that group first"
            )


def _build_edges(members: list[Device], caps: list[DeviceCapabilities]) -> list[list[TopologyEdge]]:
    n = len(members)
    edges: list[list[TopologyEdge]] = [[None] * n for _ in range(n)]  # type: ignore[list-item]
    for s in range(n):
        for d in range(n):
            if s == d:
                edges[s][d] = TopologyEdge.self_edge()
                continue
            edge = edge_from_capabilities(caps[s], caps[d])
            if members[s].driver_name == members[d].driver_name:
                refine = getattr(members[d].backend, "refine_topology_edge", None)
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


def _make_infos(
    group: DeviceGroup, tracker: FrontierTracker, session: int, machine: int
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


def _assign(device: Device, info: TopologyInfo | None) -> None:
    hook = getattr(device.backend, "assign_topology_info", None)
    if hook is not None:
        hook(info)
    device.topology_info = info


def _assign_all(members: list[Device], infos: Sequence[TopologyInfo]) -> None:
    done: list[Device] = []
    try:
        for device, info in zip(members, infos):
            _assign(device, info)
            done.append(device)
    except BaseException:
        # Unwind in reverse: every device goes back to exactly where it was.
        for device in reversed(done):
            try:
                _assign(device, None)
            except HalError:
                device.topology_info = None
        raise


def create_device_group(
    uris: Sequence[str], *, session_epoch: int = 1, machine_index: int = 0
) -> DeviceGroup:
    """Open a device per URI (in order: the topology index) and group them. The group
    owns the devices. Errors as ``DeviceGroup.from_devices`` plus those of opening a URI;
    on any failure the devices opened so far are closed again."""
    if isinstance(uris, str):
        raise InvalidArgumentError(
            f"create_device_group takes a list of URIs, got the string {uris!r}; wrap it in a list"
        )
    uris = list(uris)
    if not uris:
        raise InvalidArgumentError(
            "a device group needs at least one device; pass a non-empty list of URIs"
        )
    if len(uris) > MAX_GROUP_DEVICES:
        raise ResourceExhaustedError(
            f"a device group holds at most {MAX_GROUP_DEVICES} devices, got {len(uris)} URIs"
        )
    from ._registry import create_device

    opened: list[Device] = []
    try:
        for uri in uris:
            opened.append(create_device(uri))
        return DeviceGroup.from_devices(
            opened, owns_devices=True, session_epoch=session_epoch, machine_index=machine_index
        )
    except BaseException:
        for device in reversed(opened):
            device.close()
        raise


# -- presentation ------------------------------------------------------------------------------

_MODE_LETTER = {
    InteropMode.NATIVE: "N",
    InteropMode.IMPORT: "I",
    InteropMode.COPY: "C",
    InteropMode.NONE: "-",
}


def format_topology(group: DeviceGroup) -> str:
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


def topology_as_dict(group: DeviceGroup) -> dict[str, Any]:
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
