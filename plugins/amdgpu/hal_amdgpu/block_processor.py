"""The block processor: one block of a ``BlockProgram`` -> packet bodies and kernargs in a
reserved span of an AQL ring and a kernarg-ring allocation.

``process_block`` is vectorised: the block's packet template is copied into the ring with
at most two memcpys; per-submission fields (queue kernarg addresses, the final packet's
completion signal) are written with one fancy-indexed store each; queue kernargs are the
block's template copied once plus one vectorised patch per pointer kind (binding table,
late-bound static buffers, self-relative UPDATE payloads). No Python loop runs over
packets, so a PREPUBLISHED block costs the same few numpy calls whatever its length.

It does not publish: it returns the header words (with the submission overlay applied:
barrier + acquire on the first packet when the submission waits, the signal release scope
and BARRIER on the final packet) for the host queue to commit after any wait-barrier
prefix, followed by one doorbell store.

Thread-safety: call under the owning host queue's submission lock (it writes the ring).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .aql_packets import HEADER_BARRIER_BIT, PacketType, as_dispatch
from .aql_ring import AqlRing
from .block_format import Block
from .kernarg_ring import KernargRing

__all__ = ["BlockProcessor"]

_RELEASE_MASK = 3 << 11
_ACQUIRE_MASK = 3 << 9


class BlockProcessor:
    """Writes blocks into one queue's rings (see module docstring)."""

    __slots__ = ("ring", "kernargs", "_ring_packets", "_kernarg_words")

    def __init__(self, ring: AqlRing, kernargs: KernargRing) -> None:
        self.ring = ring
        self.kernargs = kernargs
        self._ring_packets = as_dispatch(ring.rows)
        self._kernarg_words = kernargs.memory.view("<u8")

    def process_block(
        self,
        block: Block,
        first_id: int,
        kernarg_start: int,
        binding_ptrs: np.ndarray | None,
        static_ptrs: np.ndarray | None,
        completion_signal: int,
        release_scope: int,
        acquire_scope: int = 0,
        first_has_wait: bool = False,
        indirect_counts: tuple[int, int, int] | None = None,
    ) -> np.ndarray:
        """Write ``block``'s bodies into packet ids ``first_id...`` and its kernargs at
        kernarg position ``kernarg_start``; returns the header words to commit.

        ``binding_ptrs[slot]`` is the device address of binding-table slot ``slot`` (its
        binding offset included); ``static_ptrs[i]`` that of the program's i-th late-bound
        static buffer. The caller reserved ``block.replay.packet_count`` packets and
        ``kernarg_block_count`` kernarg blocks. ``indirect_counts`` are the workgroup
        counts read for a block opened by an indirect dispatch (packet 0); all-zero counts
        turn that packet into a NOP.
        """
        rp = block.replay
        ring = self.ring
        ring.write_bodies(first_id, rp.packets)
        n = rp.packets.shape[0]
        if n == 0:
            return rp.header_words
        mask = ring.mask
        qk = rp.queue_kernarg_packets
        if qk.shape[0]:
            ka = self.kernargs
            base = ka.device_address + (kernarg_start & ka.mask) * 64
            first_q = (kernarg_start & ka.mask) * 8
            nbytes = rp.kernarg_template.shape[0]
            off = (kernarg_start & ka.mask) * 64
            ka.memory[off : off + nbytes] = rp.kernarg_template
            words = self._kernarg_words
            # Patch slots imply a binding table, static slots a static table (the tables
            # are optional arguments; mypy cannot tie them to the slots).
            if rp.patch_qwords.shape[0]:
                words[first_q + rp.patch_qwords] = (
                    binding_ptrs[rp.patch_slots] + rp.patch_offsets  # type: ignore[index]
                )
            if rp.static_qwords.shape[0]:
                words[first_q + rp.static_qwords] = (
                    static_ptrs[rp.static_slots] + rp.static_offsets  # type: ignore[index]
                )
            if rp.self_qwords.shape[0]:
                words[first_q + rp.self_qwords] = rp.self_offsets + np.uint64(base)
            self._ring_packets["kernarg_address"][(qk + first_id) & mask] = (
                rp.queue_kernarg_offsets + np.uint64(base)
            )
        last = (first_id + n - 1) & mask
        self._ring_packets[last]["completion_signal"] = completion_signal
        headers = rp.header_words.copy()
        if rp.indirect is not None and indirect_counts is not None:
            self._patch_indirect(rp, first_id & mask, kernarg_start, indirect_counts, headers)
        headers[-1] = (
            (int(headers[-1]) & ~_RELEASE_MASK) | HEADER_BARRIER_BIT | (release_scope << 11)
        )
        if first_has_wait or acquire_scope:
            h0 = int(headers[0]) | HEADER_BARRIER_BIT
            if acquire_scope > (h0 >> 9) & 3:
                h0 = (h0 & ~_ACQUIRE_MASK) | (acquire_scope << 9)
            headers[0] = h0
        return headers

    def _patch_indirect(
        self,
        rp: Any,
        slot: int,
        kernarg_start: int,
        counts: tuple[int, int, int],
        headers: np.ndarray,
    ) -> None:
        _kind, _slot, _ptr, wg, counts_at = rp.indirect
        packet = self._ring_packets[slot]
        if 0 in counts:
            # Nothing to run: publish a NOP barrier in its place (body zeroed so no field
            # is read as a dependency signal), keeping its completion signal.
            row = self.ring.rows[slot]
            signal = int(packet["completion_signal"])
            row[4:] = 0
            packet["completion_signal"] = signal
            headers[0] = (int(headers[0]) & ~0xFF & 0xFFFF) | PacketType.BARRIER_AND
            return
        packet["grid_size"] = (counts[0] * wg[0], counts[1] * wg[1], counts[2] * wg[2])
        ka = self.kernargs
        base = (kernarg_start & ka.mask) * 64 + int(rp.queue_kernarg_offsets[0])
        memory = ka.memory
        for axis, offset in enumerate(counts_at):
            if offset >= 0:
                memory[base + offset : base + offset + 4] = np.frombuffer(
                    int(counts[axis]).to_bytes(4, "little"), np.uint8
                )
