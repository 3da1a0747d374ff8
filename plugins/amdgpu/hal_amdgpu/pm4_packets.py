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
* ``COPY_DATA`` (0x40), 5 body dwords, in the one form profiling emits: a 64-bit GPU
  clock read into memory (``src_sel`` 9 GPU_CLOCK_COUNT, ``count_sel`` 64 bits, ``dst_sel``
  5 memory on gfx9 or 2 TC_L2 on gfx10+, the cache-policy bits as IREE's timestamp
  strategies set them); source lo/hi (unused, zero); destination lo (8-byte aligned) and hi.
  A profiled queue on gfx11/gfx12 brackets each submission with two of them
  (``encode_clock_copy``), as IREE's PM4 timestamp ranges do.
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
    "COPY_DATA_DWORDS",
    "COPY_SRC_GPU_CLOCK",
    "COPY_DST_MEMORY",
    "COPY_DST_TC_L2",
    "COPY_COUNT_64",
    "clock_copy_control",
    "encode_clock_copy",
]


class Pm4Opcode(enum.IntEnum):
    """The type-3 opcodes this driver emits (and the soft agent executes)."""

    NOP = 0x10
    COPY_DATA = 0x40
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

_COPY_BODY = 5
#: One ``COPY_DATA`` packet, header included.
COPY_DATA_DWORDS = 1 + _COPY_BODY
#: ``COPY_DATA`` control fields: source select (bits 0-3), destination select (8-11),
#: source cache policy / temporal hint (13-14), 64-bit count (16), write confirm (20),
#: destination cache policy / temporal hint (25-26).
COPY_SRC_GPU_CLOCK = 9
COPY_DST_TC_L2 = 2 << 8
COPY_DST_MEMORY = 5 << 8
COPY_COUNT_64 = 1 << 16
_COPY_SRC_STREAM = 1 << 13
_COPY_DST_STREAM = 1 << 25
_COPY_SRC_TEMPORAL_LU = 3 << 13
_COPY_DST_TEMPORAL_LU = 3 << 25


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


def clock_copy_control(gfx_major: int) -> int:
    """The ``COPY_DATA`` control word of a GPU-clock read on a gfx ``gfx_major`` target: the
    memory destination with stream policy on gfx9, TC_L2 on gfx10/gfx11, TC_L2 with the
    last-use temporal hint on gfx12 (the forms aqlprofile uses on each family)."""
    common = COPY_SRC_GPU_CLOCK | COPY_COUNT_64
    if gfx_major <= 9:
        return common | _COPY_SRC_STREAM | COPY_DST_MEMORY | _COPY_DST_STREAM
    if gfx_major < 12:
        return common | COPY_DST_TC_L2
    return common | _COPY_SRC_TEMPORAL_LU | COPY_DST_TC_L2 | _COPY_DST_TEMPORAL_LU


def encode_clock_copy(out: np.ndarray, at: int, address: int, control: int) -> int:
    """Write one ``COPY_DATA`` of the 64-bit GPU clock to ``address`` (8-byte aligned) from
    ``at``; the index after it."""
    out[at] = type3_header(Pm4Opcode.COPY_DATA, _COPY_BODY)
    out[at + 1] = control
    out[at + 2] = 0
    out[at + 3] = 0
    out[at + 4] = address & 0xFFFFFFF8
    out[at + 5] = (address >> 32) & _MASK32
    return at + COPY_DATA_DWORDS
