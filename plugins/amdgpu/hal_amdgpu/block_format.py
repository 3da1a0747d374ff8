"""The binary form of an amdgpu block program and its immutable records.

A block is one uint8 record: ``[64-byte BLOCK_HEADER][COMMAND records][rodata]
[BINDING_SOURCE records]`` (the dtypes and enums below give every field); ``Block`` views
one, ``BlockReplay`` holds the replay arrays derived from it, and ``BlockProgram`` is the
chain of blocks ``block_program.build_program(s)`` returns.
"""

from __future__ import annotations

import enum

import attrs
import numpy as np

from .kernarg_ring import KERNARG_BLOCK_SIZE

__all__ = [
    "BLOCK_MAGIC",
    "BLOCK_VERSION",
    "DEFAULT_BLOCK_PACKET_CAPACITY",
    "BLOCK_HEADER_DTYPE",
    "COMMAND_DTYPE",
    "BINDING_SOURCE_DTYPE",
    "Opcode",
    "CommandFlags",
    "BindingSourceFlags",
    "KernargStrategy",
    "BlockReplay",
    "Block",
    "BlockProgram",
]

BLOCK_MAGIC = 0x444D4342  # "BCMD"
BLOCK_VERSION = 0
#: Most AQL packets one block holds; longer recordings chain blocks with BRANCH.
DEFAULT_BLOCK_PACKET_CAPACITY = 1024


class Opcode(enum.IntEnum):
    INVALID = 0
    BARRIER = 1
    DISPATCH = 2
    FILL = 3
    COPY = 4
    UPDATE = 5
    PROFILE_MARKER = 6
    BRANCH = 7
    COND_BRANCH = 8
    RETURN = 9


class CommandFlags(enum.IntFlag):
    USES_QUEUE_KERNARGS = 1
    HAS_BARRIER = 2
    # bits 2-3: acquire scope, bits 4-5: release scope


class BindingSourceFlags(enum.IntFlag):
    NONE = 0  # raw static pointer in offset_or_pointer (baked into the template)
    DYNAMIC = 1  # binding_ptrs[slot] + offset
    INDIRECT_PARAMETERS = 2  # marks the workgroup-count source
    STATIC_BUFFER = 4  # static_ptrs[slot] + offset, resolved at submit (late-bound memory)


class KernargStrategy(enum.IntEnum):
    HAL = 0
    CUSTOM_DIRECT = 1
    INDIRECT = 2
    PREPUBLISHED = 3
    PATCHED_TEMPLATE = 4
    DYNAMIC_BINDINGS = 5


BLOCK_HEADER_DTYPE = np.dtype(
    {
        "names": [
            "magic",
            "version",
            "header_length",
            "block_ordinal",
            "terminator_target_block_ordinal",
            "block_length",
            "command_offset",
            "command_length",
            "binding_source_offset",
            "command_count",
            "binding_source_count",
            "aql_packet_count",
            "kernarg_length",
            "initial_barrier_packet_count",
            "rodata_offset",
            "rodata_length",
            "dispatch_count",
            "indirect_dispatch_count",
            "profile_marker_count",
            "terminator_opcode",
            "flags",
        ],
        "formats": [
            "<u4",
            "<u2",
            "<u2",
            "<u4",
            "<u4",
            "<u4",
            "<u4",
            "<u4",
            "<u4",
            "<u2",
            "<u2",
            "<u4",
            "<u4",
            "<u4",
            "<u4",
            "<u4",
            "<u2",
            "<u2",
            "<u2",
            "u1",
            "u1",
        ],
        "offsets": [0, 4, 6, 8, 12, 16, 20, 24, 28, 32, 34, 36, 40, 44, 48, 52, 56, 58, 60, 62, 63],
        "itemsize": 64,
    }
)

COMMAND_DTYPE = np.dtype(
    {
        "names": [
            "opcode",
            "flags",
            "length_qwords",
            "command_index",
            "kernarg_strategy",
            "dispatch_flags",
            "packet_count",
            "packet_index",
            "binding_source_offset",
            "binding_count",
            "patch_source_count",
            "kernarg_offset",
            "kernarg_length",
            "payload_reference",
            "implicit_args_offset_qwords",
            "setup",
            "kernel_object",
            "grid_size",
            "workgroup_size",
            "export_ordinal",
            "private_segment_size",
            "group_segment_size",
            "executable_id",
            "target_block_ordinal",
        ],
        "formats": [
            "u1",
            "u1",
            "<u2",
            "<u4",
            "u1",
            "u1",
            "u1",
            "<u4",
            "<u4",
            "<u2",
            "<u2",
            "<u4",
            "<u4",
            "<u4",
            "<u2",
            "<u2",
            "<u8",
            ("<u4", 3),
            ("<u2", 3),
            "<u2",
            "<u4",
            "<u4",
            "<u4",
            "<u4",
        ],
        "offsets": [
            0,
            1,
            2,
            4,
            8,
            9,
            10,
            12,
            16,
            20,
            22,
            24,
            28,
            32,
            36,
            38,
            40,
            48,
            60,
            66,
            68,
            72,
            76,
            80,
        ],
        "itemsize": 96,
    }
)

BINDING_SOURCE_DTYPE = np.dtype(
    {
        "names": ["offset_or_pointer", "slot", "target_binding_ordinal", "flags", "reserved"],
        "formats": ["<u8", "<u4", "<u2", "u1", "u1"],
        "offsets": [0, 8, 12, 14, 15],
        "itemsize": 16,
    }
)


@attrs.frozen(eq=False)
class BlockReplay:
    """Replay arrays of one block, derived once from its records (see module docstring)."""

    packets: np.ndarray  # (P, 64) uint8 template, INVALID first words
    header_words: np.ndarray  # (P,) uint32, final-packet overlay applied at replay
    queue_kernarg_packets: np.ndarray  # intp: packets whose kernarg_address is per submit
    queue_kernarg_offsets: np.ndarray  # uint64: byte offset in this block's kernarg region
    kernarg_template: np.ndarray  # uint8, whole 64-byte blocks
    patch_qwords: np.ndarray  # intp: qword index in the kernarg region
    patch_slots: np.ndarray  # intp: binding-table slot
    patch_offsets: np.ndarray  # uint64
    static_qwords: np.ndarray  # intp: late-bound static buffers (STATIC_BUFFER)
    static_slots: np.ndarray  # intp: index into the program's static buffer table
    static_offsets: np.ndarray  # uint64
    self_qwords: np.ndarray  # intp: pointers into the block's own kernargs (UPDATE data)
    self_offsets: np.ndarray  # uint64
    #: For a block opened by an indirect dispatch (its packet 0): ``(source kind, slot,
    #: offset or pointer, workgroup size, hidden block-count byte offsets)``; the host reads
    #: the three counts when the block is reached and patches the packet and kernargs.
    indirect: tuple | None = None

    @property
    def packet_count(self) -> int:
        return self.packets.shape[0]

    @property
    def kernarg_block_count(self) -> int:
        return self.kernarg_template.shape[0] // KERNARG_BLOCK_SIZE


@attrs.frozen(eq=False)
class Block:
    data: np.ndarray  # the binary block
    replay: BlockReplay

    @property
    def header(self) -> np.void:
        return self.data[:64].view(BLOCK_HEADER_DTYPE)[0]

    @property
    def commands(self) -> np.ndarray:
        h = self.header
        off, length = int(h["command_offset"]), int(h["command_length"])
        return self.data[off : off + length].view(COMMAND_DTYPE)

    @property
    def binding_sources(self) -> np.ndarray:
        h = self.header
        off = int(h["binding_source_offset"])
        n = int(h["binding_source_count"])
        return self.data[off : off + 16 * n].view(BINDING_SOURCE_DTYPE)

    @property
    def rodata(self) -> np.ndarray:
        h = self.header
        off = int(h["rodata_offset"])
        return self.data[off : off + int(h["rodata_length"])]


@attrs.frozen(eq=False)
class BlockProgram:
    """An immutable block program (see module docstring).

    ``slot_extents[slot]`` is the highest byte any reference reaches in that slot, checked
    against the binding table at submit; ``static_buffers`` are buffers whose memory was
    not committed at ``end()`` (resolved per submit); ``retained`` keeps executables,
    buffers and the prepublished storage alive.
    """

    blocks: tuple[Block, ...]
    mode: int
    strategy_counts: dict
    dispatch_count: int
    packet_count: int
    max_block_packets: int
    max_block_kernarg_blocks: int
    slot_extents: dict
    static_buffers: tuple
    retained: tuple
    #: A direct reference outside its buffer (only possible UNVALIDATED): submissions
    #: fail with OUT_OF_RANGE at execution.
    range_error: str | None = None
