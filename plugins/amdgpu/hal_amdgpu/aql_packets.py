"""AQL packet layouts, header encoding and vectorised packet emitters.

Every AQL packet is one 64-byte ring slot. The layouts here are numpy structured dtypes
whose offsets and sizes equal the C structs in ``hsa.h`` / ``hsa_ext_amd.h`` (a test
compiles a probe against the system headers to prove it). The dispatch dtype groups the
x/y/z members into 3-element fields (``workgroup_size``, ``grid_size``) at the offsets of
``*_x``. Emitters fill many packets at once into a *staging* array (a contiguous block of
slots), which the AQL ring then copies into reserved slots and publishes.

Publication protocol (what the packet processor relies on):

1. Bodies first. A staged slot's first 32-bit word (header + setup) holds an INVALID
   header, so copying whole 64-byte rows into reserved ring slots never exposes a packet:
   a reserved slot was already consumed by the packet processor (which leaves INVALID
   behind), and writing INVALID over it changes nothing it would act on.
2. Then the 32-bit header+setup words, one per packet, in packet order (ascending ids,
   ``AqlRing.commit_headers``). The processor consumes slots in order and starts on a slot
   only once its header is valid, so in-order publication never lets it run into a slot
   whose body is incomplete.
3. Then one doorbell store of the last packet id (``AqlRing.ring_doorbell``).

Why the store order is safe: on x86-64 (TSO) stores become visible to other agents in
program order, so the body stores (one memcpy call) are visible before the header stores
(a later, separate C call the compiler cannot reorder across the interpreter boundary),
and the header stores before the doorbell store. No fence instruction is needed on
x86-64 for write-back memory; write-combined device-local kernarg memory would need
``sfence`` + an HDP flush, which this driver never uses (kernargs live in host pools).
Elsewhere (arm64 and other weakly ordered hosts) Python cannot issue the ``dmb oshst``
release barrier real hardware would need between steps 1 and 2, so ``HOST_IS_TSO`` is
False there and the host queue refuses to drive a ROCr queue on such a host
(UNIMPLEMENTED). The in-process software HSA agent stays correct there: its packet
processor is a Python thread and every GIL hand-off is a full memory barrier.

Thread-safety: the functions are pure over the arrays they are given; callers serialise
writes to one ring (the host queue's submission lock).

The host queue owns these layouts. ``KERNEL_DISPATCH_DTYPE``, ``BARRIER_DTYPE``,
``BARRIER_VALUE_DTYPE``, ``make_header`` and ``header_type`` are the names the software
agent's packet processor imports; keep them.
"""

from __future__ import annotations

import enum
import platform

import numpy as np

__all__ = [
    "HOST_IS_TSO",
    "PACKET_SIZE",
    "PacketType",
    "FenceScope",
    "AmdFormat",
    "SignalCondition",
    "HEADER_TYPE_MASK",
    "HEADER_BARRIER_BIT",
    "KERNEL_DISPATCH_DTYPE",
    "BARRIER_DTYPE",
    "BARRIER_AND_DTYPE",
    "BARRIER_OR_DTYPE",
    "BARRIER_VALUE_DTYPE",
    "PM4_IB_DTYPE",
    "DISPATCH_SETUP_3D",
    "INVALID_HEADER_WORD",
    "PM4_INDIRECT_BUFFER",
    "PM4_IB_DW_CNT_REMAIN",
    "make_header",
    "encode_header",
    "header_type",
    "header_setup_word",
    "vendor_header_word",
    "decode_header",
    "new_staging",
    "as_dispatch",
    "as_barrier",
    "as_barrier_value",
    "as_pm4_ib",
    "header_words",
    "emit_dispatches",
    "emit_barrier_and",
    "emit_barrier_or",
    "emit_barrier_value",
    "emit_pm4_ib",
    "emit_nops",
    "pm4_indirect_buffer_jump",
]

#: True when the host's memory model orders plain stores (see module docstring).
HOST_IS_TSO: bool = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")

PACKET_SIZE = 64


class PacketType(enum.IntEnum):
    """``hsa_packet_type_t``: header bits 0-7."""

    VENDOR_SPECIFIC = 0
    INVALID = 1
    KERNEL_DISPATCH = 2
    BARRIER_AND = 3
    AGENT_DISPATCH = 4
    BARRIER_OR = 5


class FenceScope(enum.IntEnum):
    """``hsa_fence_scope_t``: header bits 9-10 (acquire) and 11-12 (release)."""

    NONE = 0
    AGENT = 1
    SYSTEM = 2


class AmdFormat(enum.IntEnum):
    """Byte 2 of an AMD vendor-specific packet."""

    PM4_IB = 1
    BARRIER_VALUE = 2


class SignalCondition(enum.IntEnum):
    """``hsa_signal_condition_t`` as used by the barrier-value packet's ``cond``."""

    EQ = 0
    NE = 1
    LT = 2
    GTE = 3


HEADER_TYPE_MASK = 0xFF
HEADER_BARRIER_BIT = 1 << 8
_ACQUIRE_SHIFT = 9
_RELEASE_SHIFT = 11

#: ``setup`` of every dispatch this driver emits: 3 grid dimensions.
DISPATCH_SETUP_3D = 3
#: The first word of a staged, not yet published slot.
INVALID_HEADER_WORD = int(PacketType.INVALID)

PM4_INDIRECT_BUFFER = 0x3F
PM4_IB_DW_CNT_REMAIN = 0xA

#: ``hsa_kernel_dispatch_packet_t``; ``workgroup_size``/``grid_size`` are the x/y/z members.
KERNEL_DISPATCH_DTYPE = np.dtype(
    {
        "names": [
            "header",
            "setup",
            "workgroup_size",
            "reserved0",
            "grid_size",
            "private_segment_size",
            "group_segment_size",
            "kernel_object",
            "kernarg_address",
            "reserved2",
            "completion_signal",
        ],
        "formats": [
            "<u2",
            "<u2",
            ("<u2", 3),
            "<u2",
            ("<u4", 3),
            "<u4",
            "<u4",
            "<u8",
            "<u8",
            "<u8",
            "<u8",
        ],
        "offsets": [0, 2, 4, 10, 12, 24, 28, 32, 40, 48, 56],
        "itemsize": PACKET_SIZE,
    }
)

#: ``hsa_barrier_and_packet_t`` and ``hsa_barrier_or_packet_t`` (one layout; the header type
#: differs). A barrier-AND with no dependencies is the canonical NOP.
BARRIER_DTYPE = np.dtype(
    {
        "names": [
            "header",
            "reserved0",
            "reserved1",
            "dep_signal",
            "reserved2",
            "completion_signal",
        ],
        "formats": ["<u2", "<u2", "<u4", ("<u8", 5), "<u8", "<u8"],
        "offsets": [0, 2, 4, 8, 48, 56],
        "itemsize": PACKET_SIZE,
    }
)
BARRIER_AND_DTYPE = BARRIER_DTYPE
BARRIER_OR_DTYPE = BARRIER_DTYPE

#: ``hsa_amd_barrier_value_packet_t``: waits until ``(load(signal) & mask) cond value``.
BARRIER_VALUE_DTYPE = np.dtype(
    {
        "names": [
            "header",
            "amd_format",
            "reserved",
            "reserved0",
            "signal",
            "value",
            "mask",
            "cond",
            "reserved1",
            "reserved2",
            "reserved3",
            "completion_signal",
        ],
        "formats": [
            "<u2",
            "u1",
            "u1",
            "<u4",
            "<u8",
            "<i8",
            "<i8",
            "<u4",
            "<u4",
            "<u8",
            "<u8",
            "<u8",
        ],
        "offsets": [0, 2, 3, 4, 8, 16, 24, 32, 36, 40, 48, 56],
        "itemsize": PACKET_SIZE,
    }
)

#: AMD PM4 indirect-buffer packet (the aqlprofile header's ``hsa_ext_amd_aql_pm4_packet_t``
#: names the same 64 bytes ``header`` + ``pm4_command[27]`` + ``completion_signal``).
PM4_IB_DTYPE = np.dtype(
    {
        "names": [
            "header",
            "amd_format",
            "reserved",
            "ib_jump_cmd",
            "dw_cnt_remain",
            "reserved_tail",
            "completion_signal",
        ],
        "formats": ["<u2", "u1", "u1", ("<u4", 4), "<u4", ("<u4", 8), "<u8"],
        "offsets": [0, 2, 3, 4, 20, 24, 56],
        "itemsize": PACKET_SIZE,
    }
)


def make_header(packet_type: int, barrier: bool, acquire: int, release: int) -> int:
    """The 16-bit header: ``type | barrier << 8 | acquire << 9 | release << 11``."""
    return (
        int(packet_type)
        | (HEADER_BARRIER_BIT if barrier else 0)
        | (int(acquire) << _ACQUIRE_SHIFT)
        | (int(release) << _RELEASE_SHIFT)
    )


def encode_header(
    packet_type: int,
    *,
    barrier: bool = True,
    acquire: int = FenceScope.NONE,
    release: int = FenceScope.NONE,
) -> int:
    """Keyword form of ``make_header`` (barrier defaults on: host queues are in order)."""
    return make_header(packet_type, barrier, acquire, release)


def header_type(header: int) -> int:
    return header & HEADER_TYPE_MASK


def header_setup_word(header: int, setup: int = 0) -> int:
    """The first 32-bit word of a packet, published with one store: ``header | setup<<16``."""
    return (header & 0xFFFF) | ((setup & 0xFFFF) << 16)


def vendor_header_word(header: int, amd_format: int) -> int:
    """First word of an AMD vendor packet: header, the ``AmdFormat`` byte, a reserved byte."""
    return (header & 0xFFFF) | ((int(amd_format) & 0xFF) << 16)


def decode_header(word: int) -> tuple[PacketType, bool, FenceScope, FenceScope]:
    """``(type, barrier, acquire, release)`` of a header or header+setup word."""
    return (
        PacketType(word & HEADER_TYPE_MASK),
        bool(word & HEADER_BARRIER_BIT),
        FenceScope((word >> _ACQUIRE_SHIFT) & 3),
        FenceScope((word >> _RELEASE_SHIFT) & 3),
    )


# -- staging -------------------------------------------------------------------------------


def new_staging(count: int) -> np.ndarray:
    """A zeroed ``(count, 64)`` uint8 block of slots whose first words are INVALID."""
    rows = np.zeros((count, PACKET_SIZE), dtype=np.uint8)
    rows.view("<u4")[:, 0] = INVALID_HEADER_WORD
    return rows


def as_dispatch(rows: np.ndarray) -> np.ndarray:
    """``rows`` (``(n, 64)`` uint8, C-contiguous) viewed as kernel dispatch packets."""
    return rows.view(KERNEL_DISPATCH_DTYPE)[:, 0]


def as_barrier(rows: np.ndarray) -> np.ndarray:
    return rows.view(BARRIER_DTYPE)[:, 0]


def as_barrier_value(rows: np.ndarray) -> np.ndarray:
    return rows.view(BARRIER_VALUE_DTYPE)[:, 0]


def as_pm4_ib(rows: np.ndarray) -> np.ndarray:
    return rows.view(PM4_IB_DTYPE)[:, 0]


def header_words(rows: np.ndarray) -> np.ndarray:
    """The first 32-bit word of every slot of ``rows`` (a strided view)."""
    return rows.view("<u4")[:, 0]


# -- emitters: bodies only (first word left INVALID); the ring publishes headers later -----


def emit_dispatches(
    rows: np.ndarray,
    *,
    kernel_object: np.ndarray | int,
    workgroup_size: np.ndarray | tuple[int, int, int],
    grid_size: np.ndarray | tuple[int, int, int],
    kernarg_address: np.ndarray | int,
    private_segment_size: np.ndarray | int = 0,
    group_segment_size: np.ndarray | int = 0,
    completion_signal: np.ndarray | int = 0,
) -> None:
    """Fill dispatch bodies for every slot of ``rows`` (reserved fields zeroed).

    ``workgroup_size`` and ``grid_size`` (work-items) are ``(n, 3)`` or ``(3,)``; the rest
    are scalars or length-``n`` arrays.
    """
    rows[:, 4:] = 0
    pk = as_dispatch(rows)
    pk["workgroup_size"] = workgroup_size
    pk["grid_size"] = grid_size
    pk["private_segment_size"] = private_segment_size
    pk["group_segment_size"] = group_segment_size
    pk["kernel_object"] = kernel_object
    pk["kernarg_address"] = kernarg_address
    pk["completion_signal"] = completion_signal


def emit_barrier_and(
    rows: np.ndarray,
    dep_signals: np.ndarray | None = None,
    completion_signal: np.ndarray | int = 0,
) -> None:
    """Barrier bodies; ``dep_signals`` is ``(n, k)`` or ``(k,)`` with k <= 5 handles (0
    handles are ignored by the packet processor)."""
    rows[:, 4:] = 0
    pk = as_barrier(rows)
    if dep_signals is not None:
        deps = np.asarray(dep_signals, dtype=np.uint64)
        if deps.shape[-1] > 5:
            raise ValueError(
                f"a barrier packet holds at most 5 dependency signals, got {deps.shape[-1]}; "
                "split the dependencies over several barrier packets"
            )
        pk["dep_signal"][:, : deps.shape[-1]] = deps
    pk["completion_signal"] = completion_signal


#: Barrier-OR shares the body layout; only the header type differs.
emit_barrier_or = emit_barrier_and


def emit_nops(rows: np.ndarray) -> None:
    """NOP bodies (barrier-AND with no dependencies and no completion signal)."""
    rows[:, 4:] = 0


def emit_barrier_value(
    rows: np.ndarray,
    *,
    signal: np.ndarray | int,
    value: np.ndarray | int,
    condition: int = SignalCondition.LT,
    mask: int = (1 << 63) - 1,
    completion_signal: np.ndarray | int = 0,
) -> None:
    """AMD barrier-value bodies. The ``AmdFormat`` byte lives in the first word and is
    published with the header (``vendor_header_word``)."""
    rows[:, 4:] = 0
    pk = as_barrier_value(rows)
    pk["signal"] = signal
    pk["value"] = value
    pk["mask"] = mask
    pk["cond"] = condition
    pk["completion_signal"] = completion_signal


def pm4_indirect_buffer_jump(ib_address: int, dword_count: int) -> tuple[int, int, int, int]:
    """The four ``ib_jump_cmd`` words: a PM4 type-3 INDIRECT_BUFFER header (4 dwords), the
    IB address lo/hi, and ``dword_count | valid bit 23``."""
    ndw = 4
    header = (3 << 30) | (PM4_INDIRECT_BUFFER << 8) | ((ndw - 2) << 16)
    return (
        header,
        ib_address & 0xFFFFFFFF,
        (ib_address >> 32) & 0xFFFFFFFF,
        (dword_count & 0xFFFFF) | (1 << 23),
    )


def emit_pm4_ib(
    rows: np.ndarray,
    *,
    ib_address: int,
    dword_count: int,
    completion_signal: np.ndarray | int = 0,
) -> None:
    """PM4-IB bodies jumping to one indirect buffer."""
    rows[:, 4:] = 0
    pk = as_pm4_ib(rows)
    pk["ib_jump_cmd"] = pm4_indirect_buffer_jump(ib_address, dword_count)
    pk["dw_cnt_remain"] = PM4_IB_DW_CNT_REMAIN
    pk["completion_signal"] = completion_signal
