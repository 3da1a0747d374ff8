"""Device groups: devices of any backends under one topology and one frontier tracker.

A ``DeviceGroup`` owns up to ``MAX_GROUP_DEVICES`` (32) devices, an immutable
``Topology`` (an N x N matrix of ``TopologyEdge`` values; ``_topology`` holds the records,
how edges are derived, and their presentation) and one ``FrontierTracker`` that every queue
of every member advances. A device is *topology complete* only while it is a member: it
then holds a ``TopologyInfo`` in ``Device.topology_info``. Copies between members are
routed by ``CopyRouting`` (``_group_copy``), a base class of the group.

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
import threading
from typing import Any, Iterable, Sequence, final

from ._construction import require_internal, sealed
from ._device import Device
from ._frontier import Frontier
from ._frontier_tracker import FrontierTracker
from ._group_copy import COPY_HISTORY, CopyRouting
from ._semaphore import Semaphore
from ._status import (
    FailedPreconditionError,
    HalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from ._topology import (
    DeviceCapabilities,
    Topology,
    TopologyInfo,
    build_edges,
    make_infos,
    query_device_capabilities,
)

__all__ = ["MAX_GROUP_DEVICES", "DeviceGroup", "create_device_group"]

MAX_GROUP_DEVICES = 32
"""IREE's ``IREE_HAL_TOPOLOGY_MAX_DEVICE_COUNT``: bitmaps are 32 bits wide."""

# Serialises "is this device in a group?" checks with the assignments, so two groups built
# at once from one device cannot both take it. Held only around non-blocking backend hooks.
_MEMBERSHIP_LOCK = threading.Lock()


@final
@sealed
class DeviceGroup(CopyRouting):
    """Devices of any backends under one topology and one frontier tracker.

    Build with ``create_device_group(uris)`` or ``DeviceGroup.from_devices(devices)``.
    The group holds strong references to its devices (they stay alive while it does) and,
    when it owns them, closes them in ``close()``. Thread-safe after construction.
    Context manager; ``close()`` is idempotent.
    """

    # Set once by ``_build`` (the group is made with ``object.__new__``); the copy-routing
    # state of the base class lives in these slots too.
    __slots__ = (
        "_devices",
        "_owns",
        "_tracker",
        "_lock",
        "_closed",
        "_copy_history",
        "_index",
        "_submitting",
        "_capabilities",
        "_topology",
        "_infos",
        "__weakref__",
    )
    _owns: bool
    _tracker: FrontierTracker
    _lock: threading.Lock
    _closed: bool
    _capabilities: tuple[DeviceCapabilities, ...]
    _infos: tuple[TopologyInfo, ...]

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        """Never succeeds: groups are built by ``from_devices``, which bypasses it."""
        require_internal(
            None,
            "DeviceGroup",
            "hal_core.create_device_group(uris) or DeviceGroup.from_devices(devices)",
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
        group._copy_history = collections.deque(maxlen=COPY_HISTORY)
        group._index = {id(d): i for i, d in enumerate(members)}
        # Set while ``copy`` submits its own ops, so ``route_queue_copy`` (reached again
        # through ``Device.queue_copy``) neither re-routes nor records them twice.
        group._submitting = threading.local()
        try:
            caps = [query_device_capabilities(d) for d in members]
            group._capabilities = tuple(caps)
            group._topology = Topology(build_edges(members, caps))
            group._infos = tuple(make_infos(group, tracker, session_epoch, machine_index))
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
        from . import _reprs as R  # (not a hot path)

        try:
            state = " closed" if self.closed else ""
            uris = R.names((d.uri for d in self._devices), limit=72)
            return f"<hal_core.DeviceGroup [{uris}]{state}>"
        except Exception:
            return "<hal_core.DeviceGroup>"


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


def _assign(device: Device, info: TopologyInfo | None) -> None:
    hook = device._contract.assign_topology_info
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
