"""PM4 type-3 packets the host queues put in AQL PM4-IB indirect buffers (gfx11, gfx12).

A cross-queue wait on a target without AMD barrier-value packets is a PM4-IB vendor packet
whose indirect buffer holds ``WAIT_REG_MEM64`` on the producer's epoch signal value (the
command processor polls the 64-bit word until ``(word & mask) <function> reference``)
followed by ``ACQUIRE_MEM`` invalidating the GPU caches (the acquire: the producer's
completion released its writes at system scope, and the waiter must not read stale lines).

Each host queue owns one indirect-buffer slot of ``IB_SLOT_DWORDS`` per AQL packet slot,
indexed by packet id, so a slot is reused only when its AQL slot is (the packet processor
consumed the packet before the ring lets the id be reserved again): no allocator, no
lifetime tracking.

Encodings (the type-3 header is ``3 << 30 | count << 16 | opcode << 8``, ``count`` being
the number of body dwords minus one):

* ``WAIT_REG_MEM64`` (0x93), 8 body dwords: ``function | mem_space << 4 | operation << 6
  | engine << 8``; poll address lo (8-byte aligned) and hi; reference lo/hi; mask lo/hi;
  poll interval (bits 0-15).
* ``ACQUIRE_MEM`` (0x58, the gfx10+ form), 7 body dwords: ``CP_COHER_CNTL``; coherence
  size lo/hi; base lo/hi; poll interval; ``GCR_CNTL``.
* ``NOP`` (0x10): any body, ignored.

``decode_type3`` is shared with the software agent's command processor, which executes
exactly this subset.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = [
    "IB_SLOT_DWORDS",
    "WAIT_IB_DWORDS",
    "Pm4Opcode",
    "WaitFunction",
    "WAIT_MEM_SPACE_MEMORY",
    "WAIT_POLL_INTERVAL",
    "GCR_INVALIDATE_ALL",
    "type3_header",
    "decode_type3",
    "encode_wait_reg_mem64",
    "encode_acquire_mem",
    "encode_epoch_wait",
]


class Pm4Opcode(enum.IntEnum):
    """The type-3 opcodes this driver emits (and the soft agent executes)."""

    NOP = 0x10
    ACQUIRE_MEM = 0x58
    WAIT_REG_MEM64 = 0x93


class WaitFunction(enum.IntEnum):
    """``WAIT_REG_MEM`` compare functions (bits 0-2 of the first body dword)."""

    ALWAYS = 0
    LT = 1
    LE = 2
    EQ = 3
    NE = 4
    GE = 5
    GT = 6


#: ``mem_space`` 1: the poll address is memory (0 would be a register offset).
WAIT_MEM_SPACE_MEMORY = 1
#: Poll interval in the command processor's clock units (what Mesa and ROCr use).
WAIT_POLL_INTERVAL = 4
#: ``GCR_CNTL`` of an acquire: invalidate GLI (all), GLM, GLK, GLV, GL1 and GL2.
GCR_INVALIDATE_ALL = 0x1 | (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 14)

_WAIT_BODY = 8
_ACQUIRE_BODY = 7
#: One wait: WAIT_REG_MEM64 then ACQUIRE_MEM.
WAIT_IB_DWORDS = (1 + _WAIT_BODY) + (1 + _ACQUIRE_BODY)
#: Dwords reserved per AQL slot (a power of two at least ``WAIT_IB_DWORDS``).
IB_SLOT_DWORDS = 32
_MASK32 = 0xFFFFFFFF


def type3_header(opcode: int, body_dwords: int) -> int:
    """A PM4 type-3 header for ``body_dwords`` (>= 1) body dwords."""
    return (3 << 30) | (((body_dwords - 1) & 0x3FFF) << 16) | ((int(opcode) & 0xFF) << 8)


def decode_type3(word: int) -> tuple[int, int] | None:
    """``(opcode, body_dwords)`` of a type-3 header, or None for any other packet type."""
    if (word >> 30) & 3 != 3:
        return None
    return (word >> 8) & 0xFF, ((word >> 16) & 0x3FFF) + 1


def encode_wait_reg_mem64(
    out: np.ndarray,
    at: int,
    address: int,
    reference: int,
    mask: int,
    function: int,
    poll_interval: int = WAIT_POLL_INTERVAL,
) -> int:
    """Write one ``WAIT_REG_MEM64`` into the uint32 array ``out`` from ``at``; the index
    after it. ``address`` must be 8-byte aligned; the compare is unsigned 64-bit."""
    out[at] = type3_header(Pm4Opcode.WAIT_REG_MEM64, _WAIT_BODY)
    out[at + 1] = (int(function) & 7) | (WAIT_MEM_SPACE_MEMORY << 4)
    out[at + 2] = address & 0xFFFFFFF8
    out[at + 3] = (address >> 32) & _MASK32
    out[at + 4] = reference & _MASK32
    out[at + 5] = (reference >> 32) & _MASK32
    out[at + 6] = mask & _MASK32
    out[at + 7] = (mask >> 32) & _MASK32
    out[at + 8] = poll_interval & 0xFFFF
    return at + 1 + _WAIT_BODY


def encode_acquire_mem(out: np.ndarray, at: int, gcr_cntl: int = GCR_INVALIDATE_ALL) -> int:
    """Write one whole-memory ``ACQUIRE_MEM`` (gfx10+ form) from ``at``; the index after."""
    out[at] = type3_header(Pm4Opcode.ACQUIRE_MEM, _ACQUIRE_BODY)
    out[at + 1] = 0  # CP_COHER_CNTL: the GCR_CNTL word says what to invalidate
    out[at + 2] = _MASK32  # CP_COHER_SIZE: all of memory
    out[at + 3] = 0xFFFFFF  # CP_COHER_SIZE_HI
    out[at + 4] = 0  # CP_COHER_BASE
    out[at + 5] = 0  # CP_COHER_BASE_HI
    out[at + 6] = 0xA  # poll interval
    out[at + 7] = gcr_cntl
    return at + 1 + _ACQUIRE_BODY


def encode_epoch_wait(out: np.ndarray, at: int, signal_handle: int, epoch_value: int) -> int:
    """The wait on a producer's epoch signal: its value (byte 8 of the ``amd_signal_t``
    record the handle addresses) counts down, so the epoch is reached once the value is
    at most ``epoch_value``; then the acquire. Returns the index after the two packets."""
    at = encode_wait_reg_mem64(
        out, at, signal_handle + 8, epoch_value, (1 << 63) - 1, WaitFunction.LE
    )
    return encode_acquire_mem(out, at)
