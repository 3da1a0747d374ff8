"""Cross-device copy routing: how ``DeviceGroup.copy`` moves bytes between members.

From the group's topology, a copy is NATIVE (the executing device reads and writes both
buffers in place), PEER (the source or target device reaches the other's memory with one
``queue_copy``) or STAGED (the source device writes a host staging file, the target device
reads it; two ops chained by a private semaphore). ``Device.queue_copy`` of a member routes
copies with another member's buffer here too (``route_queue_copy``), and fill, update, read
and write ask ``runner_for`` which member runs them. Every decision is recorded
(``last_copy``, ``copy_history``).
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from typing import Any, Callable

import attrs
import numpy as np

from ._buffer import Buffer, resolve_range
from ._device import Device
from ._memory import WHOLE_BUFFER, BufferUsage, MemoryAccess, QueueAffinity
from ._semaphore import SemaphoreList
from ._status import HalError, IncompatibleError, InvalidArgumentError, NotFoundError
from ._topology import LinkClass, Topology, TopologyCapability

__all__ = ["COPY_HISTORY", "CopyRecord", "CopyRouting", "CopyStrategy"]

COPY_HISTORY = 64
"""Copy records a group keeps for introspection (a bounded ring, newest last)."""


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


class CopyRouting:
    """The copy methods of ``DeviceGroup`` (a base class of it): strategy selection,
    submission of each strategy, and the decision history. Thread-safe: reads only the
    group's immutable topology and membership; the history ring is a ``deque``."""

    # The slots are DeviceGroup's (the state it builds), so neither class has a __dict__.
    __slots__ = ()

    # Set by DeviceGroup when it is built.
    _devices: tuple[Device, ...]
    _index: dict[int, int]
    _topology: Topology
    _copy_history: deque[CopyRecord]
    _submitting: threading.local
    _check_open: Callable[[], None]
    device_at: Callable[[int], Device]
    index_of: Callable[[Device], int]

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
        resolve_range(source, source_offset, length)
        resolve_range(target, target_offset, length)
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
            assert runner is not None  # _select chooses PEER only when a runner exists
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


def _host_staging_file(device: Device, length: int) -> Any:
    """A read/write host-memory file of ``length`` bytes imported by ``device``."""
    return device.import_file(
        np.empty(max(length, 1), np.uint8), MemoryAccess.READ | MemoryAccess.WRITE
    )
