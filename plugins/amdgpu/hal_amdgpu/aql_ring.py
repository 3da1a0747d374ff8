"""The AQL ring: slot reservation against the read index, body copy, header commit, doorbell.

An ``AqlRing`` is a host-side view of one HSA queue's packet ring: ``rows`` is the ring
buffer as a ``(capacity, 64)`` uint8 array (over the queue's ``base_address``), and
``indices`` is the queue descriptor (``amd_queue_t``) as a uint64 array so the write index
(byte 56) and the read index (byte 128) are read and written as plain memory, as IREE's hot
path does, without a call into HSA per submission.

Invariants:

* Packet ids are unwrapped 64-bit counters; the slot of id ``i`` is ``i & (capacity-1)``.
* ``try_reserve(n)`` only advances the write index when ``first + n - read <= capacity``,
  so a reserved slot was consumed by the packet processor before it is overwritten. It
  never spins: a full ring returns -1 and the caller parks the submission (host_queue).
* This driver is the only producer on its queues and every reservation happens under the
  owning host queue's submission lock, so load-check-store of the write index is the CAS
  of IREE's ``try_reserve`` with no contender (the queue is still created MULTI, which a
  future device-side producer would need).
* Publication order and why it is safe: ``hal_amdgpu.aql_packets`` module docstring.

Thread-safety: not thread-safe; the owner serialises calls (submission lock). The packet
processor concurrently reads slots and advances the read index.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hal_core import InvalidArgumentError, OutOfRangeError

from .aql_packets import (
    PACKET_SIZE,
    PacketType,
    encode_header,
    header_setup_word,
)

__all__ = ["AqlRing", "WRITE_INDEX_WORD", "READ_INDEX_WORD", "NOP_HEADER_WORD"]

#: uint64 word offsets of ``write_dispatch_id`` (byte 56) and ``read_dispatch_id`` (byte 128)
#: inside ``amd_queue_t``.
WRITE_INDEX_WORD = 56 // 8
READ_INDEX_WORD = 128 // 8

#: Header word of the NOP that fills reserved slots on failure paths.
NOP_HEADER_WORD = header_setup_word(encode_header(PacketType.BARRIER_AND, barrier=True))


class AqlRing:
    """Reservation and publication over one AQL packet ring (see module docstring).

    ``doorbell(last_id)`` performs the release store of the last packet id to the queue's
    doorbell signal (``hsa_signal_store_screlease`` on ROCr and on the software agent).
    """

    __slots__ = ("rows", "words", "indices", "capacity", "mask", "_doorbell")

    def __init__(
        self,
        rows: np.ndarray,
        indices: np.ndarray,
        doorbell: Callable[[int], object],
    ) -> None:
        capacity = rows.shape[0]
        if capacity <= 0 or capacity & (capacity - 1):
            raise InvalidArgumentError(
                f"AQL ring capacity must be a power of two, got {capacity} packets; "
                "create the HSA queue with a power-of-two size"
            )
        if rows.shape[1:] != (PACKET_SIZE,) or rows.dtype != np.uint8:
            raise InvalidArgumentError(
                f"AQL ring rows must be a (capacity, 64) uint8 array, got {rows.shape} {rows.dtype}"
            )
        if indices.dtype != np.uint64 or indices.shape[0] <= READ_INDEX_WORD:
            raise InvalidArgumentError(
                "AQL ring indices must be the amd_queue_t descriptor viewed as uint64 "
                f"(at least {READ_INDEX_WORD + 1} words), got {indices.shape} {indices.dtype}"
            )
        self.rows = rows
        self.words = rows.view("<u4")[:, 0]
        self.indices = indices
        self.capacity = capacity
        self.mask = capacity - 1
        self._doorbell = doorbell

    # -- indices -------------------------------------------------------------------------

    @property
    def write_index(self) -> int:
        return int(self.indices[WRITE_INDEX_WORD])

    @property
    def read_index(self) -> int:
        return int(self.indices[READ_INDEX_WORD])

    def available(self) -> int:
        """Free slots right now (grows as the packet processor consumes)."""
        idx = self.indices
        return self.capacity - (int(idx[WRITE_INDEX_WORD]) - int(idx[READ_INDEX_WORD]))

    def check_fits(self, count: int) -> None:
        """OUT_OF_RANGE when ``count`` packets could never fit, however long one waits."""
        if count > self.capacity:
            raise OutOfRangeError(
                f"a submission needs {count} AQL packets but the queue ring holds "
                f"{self.capacity}; split the work or create the device with a larger "
                "AQL ring (device URI parameter aql_capacity=N, N up to 131072)"
            )

    def try_reserve(self, count: int) -> int:
        """Reserve ``count`` consecutive packet ids; the first id, or -1 when the ring is
        too full right now (never blocks, never changes state on -1)."""
        idx = self.indices
        first = int(idx[WRITE_INDEX_WORD])
        if first + count - int(idx[READ_INDEX_WORD]) > self.capacity:
            return -1
        idx[WRITE_INDEX_WORD] = first + count
        return first

    # -- publication ---------------------------------------------------------------------

    def write_bodies(self, first_id: int, staging: np.ndarray) -> None:
        """Copy staged rows (INVALID first words) into the slots of ``first_id...``;
        at most two memcpys (the span may wrap)."""
        n = staging.shape[0]
        start = first_id & self.mask
        tail = self.capacity - start
        if n <= tail:
            self.rows[start : start + n] = staging
        else:
            self.rows[start:] = staging[:tail]
            self.rows[: n - tail] = staging[tail:]

    def commit_headers(self, first_id: int, header_words: np.ndarray) -> None:
        """Store each packet's 32-bit header+setup word, in packet order (ascending ids,
        the wrapped part last), after its body is in place."""
        n = header_words.shape[0]
        start = first_id & self.mask
        tail = self.capacity - start
        if n <= tail:
            self.words[start : start + n] = header_words
        else:
            self.words[start:] = header_words[:tail]
            self.words[: n - tail] = header_words[tail:]

    def commit_header(self, packet_id: int, word: int) -> None:
        self.words[packet_id & self.mask] = word

    def ring_doorbell(self, last_id: int) -> None:
        """One release store of the last published packet id."""
        self._doorbell(last_id)

    def publish_nops(self, first_id: int, count: int) -> None:
        """Fill reserved slots with NOP barrier packets and ring the doorbell, so that a
        failed submission never leaves the packet processor stalled on INVALID slots."""
        if count <= 0:
            return
        for pid in range(first_id, first_id + count):
            row = self.rows[pid & self.mask]
            row[4:] = 0
        for pid in range(first_id, first_id + count):
            self.words[pid & self.mask] = NOP_HEADER_WORD
        self.ring_doorbell(first_id + count - 1)
