"""Stocks of the extra AQL packets a profiled queue publishes: aqlprofile counter packet
sets (``CounterPacketSets``), aqlprofile thread-trace packet sets (``TracePacketSets``) and
PM4 timestamp records (``TickRecords``).

Every stock hands out one entry per in-flight user (a dispatch, or a submission for
ranges and timestamps) from a free list: ``grow`` runs under the queue's submission lock
before any ring slot is reserved (a failing library or allocation raises there, changing
nothing), entries are popped by ``QueueProfiler.before_headers`` and pushed back by the
retire listener once their results were read. ``close`` releases everything; call it only
once no published packet uses the entries. Memory is the GPU's host-coherent fine pool
(``HostQueueSet.allocate_host_coherent``), which the GPU and the host both reach.
"""

from __future__ import annotations

import abc
import collections
from typing import Any

import numpy as np

from .aql_packets import emit_pm4_ib, new_staging
from .pm4_packets import COPY_DATA_DWORDS, encode_clock_copy

__all__ = ["CounterPacketSets", "TracePacketSets", "TickRecords", "ATT_TRACE_FORMAT"]

#: ``executable-traces`` format of AMD ATT/SQTT bytes as aqlprofile returns them.
ATT_TRACE_FORMAT = 1


class _LibraryStock(abc.ABC):
    """Packet sets created by an aqlprofile library, with the memory it allocated."""

    def __init__(self, allocate: Any) -> None:
        self._allocate = allocate  # (size) -> (host view, device address, storage)
        #: (packets, (k, 64) uint8 rows with zeroed completion signals)
        self.free: collections.deque = collections.deque()
        self._created: list[Any] = []
        self._memory: list[Any] = []

    def _alloc(self, size: int, _flags: int) -> tuple[int, Any]:
        # Every aqlprofile buffer goes to the host-coherent fine memory pool, which the GPU and
        # the host both reach, whatever the library's flags ask for.
        _host, address, storage = self._allocate(size)
        self._memory.append(storage)
        return address, storage

    @abc.abstractmethod
    def _create(self) -> tuple[Any, list[bytes]]:
        """One packet set from the library: its handle and its 64-byte AQL packets."""

    def grow(self, count: int) -> None:
        free = self.free
        while len(free) < count:
            packets, parts = self._create()
            self._created.append(packets)
            rows = np.frombuffer(b"".join(parts), np.uint8).reshape(len(parts), 64).copy()
            rows[:, 56:] = 0  # the queue owns completion signals
            free.append((packets, rows))

    @abc.abstractmethod
    def _delete(self, packets: Any) -> None:
        """Give one packet set back to the library."""

    def close(self) -> None:
        for packets in self._created:
            self._delete(packets)
        self._created = []
        self.free.clear()
        for storage in self._memory:
            storage.release()
        self._memory = []


class CounterPacketSets(_LibraryStock):
    """One queue's aqlprofile PMC packet sets, each with its own result memory; rows are
    ordered start, read, stop."""

    def __init__(self, lib: Any, agent: Any, specs: list, allocate: Any) -> None:
        super().__init__(allocate)
        self.lib = lib
        self.agent = agent
        self.specs = specs

    def _create(self) -> tuple[Any, list[bytes]]:
        packets = self.lib.create_pmc_packets(self.agent, self.specs, self._alloc)
        return packets, [packets.start, packets.read, packets.stop]

    def _delete(self, packets: Any) -> None:
        self.lib.delete_pmc_packets(packets)


class TracePacketSets(_LibraryStock):
    """One queue's aqlprofile ATT packet sets (thread trace of one dispatch each, with its
    own trace buffer); rows are ordered start, stop."""

    def __init__(self, lib: Any, hsa_agent: int, parameters: list, allocate: Any) -> None:
        super().__init__(allocate)
        self.lib = lib
        self.hsa_agent = hsa_agent
        self.parameters = parameters

    def _create(self) -> tuple[Any, list[bytes]]:
        packets = self.lib.create_att_packets(self.hsa_agent, self.parameters, self._alloc)
        return packets, [packets.start, packets.stop]

    def _delete(self, packets: Any) -> None:
        self.lib.delete_att_packets(packets)


#: A timestamp record: the start COPY_DATA (dwords 0-5), the end COPY_DATA (6-11), then
#: the start and end ticks (bytes 48 and 56) the two write.
_RECORD_BYTES = 64
_START_TICK = 48
_END_TICK = 56
_RECORDS_PER_CHUNK = 64


class TickRecords:
    """One queue's PM4 timestamp records (gfx11/gfx12): a submission's lead packet is a
    PM4-IB jumping to its record's start ``COPY_DATA`` of the GPU clock, and its trailer a
    PM4-IB jumping to the end ``COPY_DATA`` that also carries the queue's epoch signal.

    The programs and both AQL packet bodies are built once per record (addresses never
    change); an entry is ``(ticks, lead row, trailer row)`` where ``ticks`` is the record's
    ``(start, end)`` u64 view."""

    def __init__(self, allocate: Any, control: int, epoch_handle: int) -> None:
        self._allocate = allocate
        self._control = control
        self._epoch = epoch_handle
        self.free: collections.deque = collections.deque()
        self._memory: list[Any] = []

    def grow(self, count: int) -> None:
        while len(self.free) < count:
            self._add_chunk()

    def _add_chunk(self) -> None:
        n = _RECORDS_PER_CHUNK
        host, address, storage = self._allocate(n * _RECORD_BYTES)
        self._memory.append(storage)
        words = host[: n * _RECORD_BYTES].view(np.uint32)
        ticks = host[: n * _RECORD_BYTES].view(np.uint64).reshape(n, _RECORD_BYTES // 8)
        control = self._control
        rows = new_staging(2 * n)
        for i in range(n):
            base = address + i * _RECORD_BYTES
            at = i * (_RECORD_BYTES // 4)
            at = encode_clock_copy(words, at, base + _START_TICK, control)
            encode_clock_copy(words, at, base + _END_TICK, control)
            emit_pm4_ib(rows[2 * i : 2 * i + 1], ib_address=base, dword_count=COPY_DATA_DWORDS)
            emit_pm4_ib(
                rows[2 * i + 1 : 2 * i + 2],
                ib_address=base + 4 * COPY_DATA_DWORDS,
                dword_count=COPY_DATA_DWORDS,
                completion_signal=self._epoch,
            )
        ticks[:, _START_TICK // 8 :] = 0
        for i in range(n):
            self.free.append((ticks[i, _START_TICK // 8 :], rows[2 * i], rows[2 * i + 1]))

    def close(self) -> None:
        self.free.clear()
        for storage in self._memory:
            storage.release()
        self._memory = []
