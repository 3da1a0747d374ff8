"""Command buffers as an immutable block program, built once at ``end()``.

A recording (``hal_core`` command tuples) becomes a chain of *blocks*. Each block is one
binary record (a uint8 array) laid out as:

``[64-byte BLOCK_HEADER][COMMAND records, 96 bytes each][rodata][BINDING_SOURCE records]``

The header states the facts recorded once (packet count, kernarg bytes, dispatch and
indirect counts, the terminator); command records carry the opcode, flags (barrier,
acquire/release scope, queue-kernarg use), the kernarg strategy and the dispatch geometry;
binding-source records say where each binding pointer comes from (a baked static pointer,
a binding-table slot, or a static buffer resolved at submit); rodata holds kernarg
templates and UPDATE payloads. Every block ends in BRANCH (to the next block) or RETURN.

From those records the builder also derives, once, the *replay arrays* the block
processor uses (``BlockReplay``): a packet-body template (rows of 64 bytes with INVALID
first words), the header words, which packets take queue kernargs and where, the kernarg
template, and the patch vectors (qword index, slot, offset) for dynamic pointers. Replay is
then a handful of vectorised numpy operations per block; no Python loop over packets.

Kernarg strategies per dispatch (and per blit command), chosen at record time:

* PREPUBLISHED: reusable command buffer, no dynamic or late-bound pointers. Kernargs are
  written once at ``end()`` into host-coherent, device-visible storage owned by the program;
  the packet's ``kernarg_address`` is baked into the template and replay writes no kernargs.
* PATCHED_TEMPLATE: some pointers come from the binding table: replay copies the template
  into the queue's kernarg ring and patches those qwords.
* DYNAMIC_BINDINGS: every binding comes from the binding table (same mechanism, recorded
  separately because it is the all-dynamic case).
* HAL: one-shot command buffers (not worth prepublishing): template copy into queue
  kernargs, static pointers baked, any dynamic ones patched.

Dynamic references keep their binding-table slot for the program's lifetime (the patch
vectors index ``binding_ptrs[slot]`` directly).

Thread-safety: a ``BlockProgram`` is immutable after ``build``; any number of queues may
replay it concurrently.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol, Sequence

import attrs
import numpy as np

from hal_core import (
    BufferRef,
    InvalidArgumentError,
    OutOfRangeError,
    UnimplementedError,
)
from hal_core._command_buffer import (
    CMD_BARRIER,
    CMD_COPY,
    CMD_DEBUG_BEGIN,
    CMD_DEBUG_END,
    CMD_DISPATCH,
    CMD_FILL,
    CMD_UPDATE,
    CommandBufferMode,
    DispatchFlags,
)

from .aql_packets import (
    DISPATCH_SETUP_3D,
    FenceScope,
    PacketType,
    as_dispatch,
    header_setup_word,
    make_header,
    new_staging,
)
from .kernarg_ring import KERNARG_BLOCK_SIZE

__all__ = [
    "BLOCK_MAGIC",
    "BLOCK_HEADER_DTYPE",
    "COMMAND_DTYPE",
    "BINDING_SOURCE_DTYPE",
    "Opcode",
    "CommandFlags",
    "BindingSourceFlags",
    "KernargStrategy",
    "KernelDescriptor",
    "BuiltinKernels",
    "ProgramContext",
    "BlockReplay",
    "Block",
    "BlockProgram",
    "build_program",
    "hal_kernarg_image",
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


BLOCK_HEADER_DTYPE = np.dtype({
    "names": ["magic", "version", "header_length", "block_ordinal",
              "terminator_target_block_ordinal", "block_length", "command_offset",
              "command_length", "binding_source_offset", "command_count",
              "binding_source_count", "aql_packet_count", "kernarg_length",
              "initial_barrier_packet_count", "rodata_offset", "rodata_length",
              "dispatch_count", "indirect_dispatch_count", "profile_marker_count",
              "terminator_opcode", "flags"],
    "formats": ["<u4", "<u2", "<u2", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u2", "<u2",
                "<u4", "<u4", "<u4", "<u4", "<u4", "<u2", "<u2", "<u2", "u1", "u1"],
    "offsets": [0, 4, 6, 8, 12, 16, 20, 24, 28, 32, 34, 36, 40, 44, 48, 52, 56, 58, 60, 62,
                63],
    "itemsize": 64,
})

COMMAND_DTYPE = np.dtype({
    "names": ["opcode", "flags", "length_qwords", "command_index", "kernarg_strategy",
              "dispatch_flags", "packet_count", "packet_index", "binding_source_offset",
              "binding_count", "patch_source_count", "kernarg_offset", "kernarg_length",
              "payload_reference", "implicit_args_offset_qwords", "setup", "kernel_object",
              "grid_size", "workgroup_size", "export_ordinal", "private_segment_size",
              "group_segment_size", "executable_id", "target_block_ordinal"],
    "formats": ["u1", "u1", "<u2", "<u4", "u1", "u1", "u1", "<u4", "<u4", "<u2", "<u2",
                "<u4", "<u4", "<u4", "<u2", "<u2", "<u8", ("<u4", 3), ("<u2", 3), "<u2",
                "<u4", "<u4", "<u4", "<u4"],
    "offsets": [0, 1, 2, 4, 8, 9, 10, 12, 16, 20, 22, 24, 28, 32, 36, 38, 40, 48, 60, 66,
                68, 72, 76, 80],
    "itemsize": 96,
})

BINDING_SOURCE_DTYPE = np.dtype({
    "names": ["offset_or_pointer", "slot", "target_binding_ordinal", "flags", "reserved"],
    "formats": ["<u8", "<u4", "<u2", "u1", "u1"],
    "offsets": [0, 8, 12, 14, 15],
    "itemsize": 16,
})

_NO_IMPLICIT = 0xFFFF

# Offsets of the code-object-v5 hidden arguments this driver fills, by value kind.
_HIDDEN_FILL = {
    "hidden_block_count_x": ("count", 0),
    "hidden_block_count_y": ("count", 1),
    "hidden_block_count_z": ("count", 2),
    "hidden_group_size_x": ("group", 0),
    "hidden_group_size_y": ("group", 1),
    "hidden_group_size_z": ("group", 2),
    "hidden_grid_dims": ("dims", 0),
    "hidden_dynamic_lds_size": ("lds", 0),
}


@attrs.frozen
class KernelDescriptor:
    """What a packet needs of one kernel on one agent (resolved once per executable).

    ``hidden_args``: ``(value_kind, offset, size)`` of the hidden arguments from the code
    object metadata; the kinds in ``_HIDDEN_FILL`` are filled, the rest stay zero.
    """

    kernel_object: int
    kernarg_size: int
    binding_count: int
    constant_count: int
    workgroup_size: tuple[int, int, int] = (1, 1, 1)
    private_segment_size: int = 0
    group_segment_size: int = 0
    explicit_size: int = 0
    hidden_args: tuple[tuple[str, int, int], ...] = ()
    name: str = ""


@attrs.frozen
class BuiltinKernels:
    """The blit kernels (1-D, grid-stride) used for FILL/COPY/UPDATE, by element width."""

    fill: dict  # {1: KernelDescriptor, 2: ..., 4: ..., 8: ...}
    copy: dict  # {1: KernelDescriptor, 4: ..., 16: ...}
    workgroup_size: int = 64
    max_workgroups: int = 1024


class ProgramContext(Protocol):
    """What the builder asks of the device (kept small on purpose)."""

    builtins: BuiltinKernels

    def kernel_descriptor(self, executable: Any, ordinal: int) -> KernelDescriptor: ...

    def buffer_address(self, buffer: Any) -> int | None:
        """Device address of byte 0 of ``buffer``, or None while its memory is not yet
        committed (queue_alloca): then it is resolved at every submit."""

    def allocate_prepublished(self, byte_length: int) -> tuple[np.ndarray, int, Any]:
        """Host-coherent, device-visible kernarg storage: (bytes view, device address,
        owner kept alive by the program)."""


def hal_kernarg_image(desc: KernelDescriptor, pointers: Sequence[int], constants: bytes,
                      workgroup_count: Sequence[int], workgroup_size: Sequence[int],
                      dynamic_lds: int = 0) -> np.ndarray:
    """The HAL kernarg ABI image for one dispatch: ``u64 bindings[]``, ``u32 constants[]``
    padded to 8, then the hidden arguments at their metadata offsets. Length is a whole
    number of 64-byte blocks."""
    size = max(desc.kernarg_size, 8 * len(pointers) + len(constants))
    image = np.zeros(-(-size // KERNARG_BLOCK_SIZE) * KERNARG_BLOCK_SIZE, np.uint8)
    n = len(pointers)
    if n:
        image[: 8 * n].view("<u8")[:] = pointers
    if constants:
        image[8 * n : 8 * n + len(constants)] = np.frombuffer(constants, np.uint8)
    for kind, offset, size_ in desc.hidden_args:
        fill = _HIDDEN_FILL.get(kind)
        if fill is None:
            continue
        what, axis = fill
        if what == "count":
            value = workgroup_count[axis]
        elif what == "group":
            value = workgroup_size[axis]
        elif what == "dims":
            value = 3
        else:
            value = dynamic_lds
        image[offset : offset + size_] = np.frombuffer(
            int(value).to_bytes(size_, "little"), np.uint8)
    return image


# -- the program ----------------------------------------------------------------------------


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


class _Rec:
    """One command being lowered (builder-internal)."""

    __slots__ = ("opcode", "flags", "index", "strategy", "dispatch_flags", "desc", "grid",
                 "wg", "image", "sources", "private", "group", "executable_id", "indirect")


def _scope_flags(acquire: int, release: int) -> int:
    return (acquire << 2) | (release << 4)


def build_program(
    commands: Sequence[tuple],
    mode: int,
    context: ProgramContext,
    *,
    block_packet_capacity: int = DEFAULT_BLOCK_PACKET_CAPACITY,
    block_kernarg_capacity: int = 1 << 62,
) -> BlockProgram:
    """Lower a recording to a block program. INVALID_ARGUMENT for shapes the AQL path
    cannot express (naming the command); UNIMPLEMENTED for dispatch forms no backend
    implements yet (indirect or custom arguments)."""
    reusable = not (mode & CommandBufferMode.ONE_SHOT)
    recs: list[_Rec] = []
    slot_extents: dict[int, int] = {}
    static_buffers: list[Any] = []
    static_index: dict[int, int] = {}
    retained: list[Any] = []
    pending_barrier = False
    executable_ids: dict[int, int] = {}
    range_errors: list[str] = []
    builtins = context.builtins

    def pointer_source(ref: Any, ordinal: int, length: int) -> tuple[int, int, int, int]:
        """(flags, slot, offset_or_pointer, ordinal) for a reference."""
        if ref.buffer is None:
            # Every referenced slot gets an entry (a whole-buffer reference reaches 0 known
            # bytes but still needs its pointer resolved at submit).
            end = ref.offset + length
            if end >= slot_extents.get(ref.slot, 0):
                slot_extents[ref.slot] = end
            return (int(BindingSourceFlags.DYNAMIC), ref.slot, ref.offset, ordinal)
        buf = ref.buffer
        retained.append(buf)
        if ref.offset + length > buf.byte_length and not range_errors:
            # Only reachable UNVALIDATED: fail the submission at execution, as IREE does.
            range_errors.append(
                f"command {len(recs)}: range [{ref.offset}, {ref.offset + length}) exceeds "
                f"its buffer of {buf.byte_length} bytes (recorded UNVALIDATED)")
        addr = context.buffer_address(buf)
        if addr is None:
            i = static_index.get(id(buf))
            if i is None:
                i = static_index[id(buf)] = len(static_buffers)
                static_buffers.append(buf)
            return (int(BindingSourceFlags.STATIC_BUFFER), i, ref.offset, ordinal)
        return (int(BindingSourceFlags.NONE), 0, addr + ref.offset, ordinal)

    def ref_length(ref: Any) -> int:
        from hal_core._memory import WHOLE_BUFFER

        if ref.length != WHOLE_BUFFER:
            return ref.length
        if ref.buffer is not None:
            return ref.buffer.byte_length - ref.offset
        return 0

    def blit(opcode: Opcode, desc: KernelDescriptor, elements: int,
             sources: list, scalars: list[int], payload: bytes = b"") -> _Rec:
        r = _Rec()
        r.opcode = opcode
        r.desc = desc
        wg = builtins.workgroup_size
        groups = max(1, min(builtins.max_workgroups, -(-elements // wg)))
        r.grid = (groups * wg, 1, 1)
        r.wg = (wg, 1, 1)
        baked = [s[2] if s[0] == BindingSourceFlags.NONE else 0 for s in sources]
        words = np.asarray(scalars, dtype=np.uint64).tobytes()
        image = hal_kernarg_image(desc, baked, words, (groups, 1, 1), r.wg)
        if payload:
            # The payload rides in the command's own kernargs after the kernel's segment;
            # its source pointer (ordinal 0) is the kernarg address + this offset.
            payload_at = image.shape[0]
            sources = [(-1, 0, payload_at, 0)] + sources[1:]
            padded = -(-len(payload) // KERNARG_BLOCK_SIZE) * KERNARG_BLOCK_SIZE
            tail = np.zeros(padded, np.uint8)
            tail[: len(payload)] = np.frombuffer(payload, np.uint8)
            image = np.concatenate([image, tail])
        r.image = image
        r.sources = [s for s in sources if s[0] != BindingSourceFlags.NONE]
        r.private = desc.private_segment_size
        r.group = desc.group_segment_size
        r.executable_id = 0
        r.dispatch_flags = 0
        r.indirect = None
        return r

    for index, cmd in enumerate(commands):
        op = cmd[0]
        if op == CMD_BARRIER:
            pending_barrier = True
            continue
        if op == CMD_DEBUG_BEGIN or op == CMD_DEBUG_END:
            continue
        if op == CMD_FILL:
            ref, pattern = cmd[1], cmd[2]
            length = ref_length(ref)
            plen = len(pattern)
            pattern_value = int.from_bytes(pattern, "little")
            src = pointer_source(ref, 0, length)
            rec = blit(Opcode.FILL, builtins.fill[plen], length // plen, [src],
                       [length // plen, pattern_value])
        elif op == CMD_COPY:
            s_ref, d_ref = cmd[1], cmd[2]
            length = ref_length(s_ref)
            width = 4 if (length % 4 == 0 and s_ref.offset % 4 == 0
                          and d_ref.offset % 4 == 0) else 1
            srcs = [pointer_source(s_ref, 0, length), pointer_source(d_ref, 1, length)]
            rec = blit(Opcode.COPY, builtins.copy[width], length // width, srcs,
                       [length // width])
        elif op == CMD_UPDATE:
            data, ref = cmd[1], cmd[2]
            length = len(data)
            srcs = [(-1, 0, 0, 0), pointer_source(ref, 1, length)]
            rec = blit(Opcode.UPDATE, builtins.copy[1], length, srcs, [length],
                       payload=bytes(data))
        elif op == CMD_DISPATCH:
            executable, ordinal, config, constants, bindings, flags = cmd[1:7]
            if flags & (DispatchFlags.CUSTOM_DIRECT_ARGUMENTS
                        | DispatchFlags.DYNAMIC_INDIRECT_ARGUMENTS
                        | DispatchFlags.STATIC_INDIRECT_ARGUMENTS):
                raise UnimplementedError(
                    f"command {index}: dispatch flags {DispatchFlags(flags)!r} (custom or "
                    "indirect arguments) are not implemented by the amdgpu driver"
                )
            desc = context.kernel_descriptor(executable, ordinal)
            retained.append(executable)
            if len(bindings) != desc.binding_count:
                raise InvalidArgumentError(
                    f"command {index}: dispatch of {desc.name or ordinal!r} got "
                    f"{len(bindings)} bindings, the kernel takes {desc.binding_count}"
                )
            if len(constants) != 4 * desc.constant_count:
                raise InvalidArgumentError(
                    f"command {index}: dispatch of {desc.name or ordinal!r} got "
                    f"{len(constants)} constant bytes, the kernel takes "
                    f"{4 * desc.constant_count}"
                )
            wg = config.workgroup_size if any(config.workgroup_size) else desc.workgroup_size
            count = config.workgroup_count
            # Bindings may be whole Buffers as well as BufferRefs (the recording API takes both).
            bindings = [b if b.__class__ is BufferRef else BufferRef(b) for b in bindings]
            sources = [pointer_source(b, i, ref_length(b)) for i, b in enumerate(bindings)]
            baked = [s[2] if s[0] == BindingSourceFlags.NONE else 0 for s in sources]
            r = _Rec()
            r.opcode = Opcode.DISPATCH
            r.desc = desc
            r.wg = tuple(int(v) for v in wg)
            r.grid = tuple(int(c) * int(w) for c, w in zip(count, r.wg))
            if any(g >= 1 << 32 for g in r.grid):
                raise OutOfRangeError(
                    f"command {index}: grid {r.grid} work-items exceeds the 32-bit AQL grid; "
                    "reduce the workgroup count"
                )
            r.image = hal_kernarg_image(desc, baked, constants, count, r.wg,
                                        config.dynamic_workgroup_local_memory)
            r.sources = [s for s in sources if s[0] != BindingSourceFlags.NONE]
            r.private = desc.private_segment_size
            r.group = desc.group_segment_size + config.dynamic_workgroup_local_memory
            r.executable_id = executable_ids.setdefault(id(executable), len(executable_ids))
            r.dispatch_flags = 0
            r.indirect = None
            ind = config.workgroup_count_ref
            if ind is not None:
                # Counts are read on the host when the dispatch is reached (its block is
                # gated on the completion of everything recorded before it).
                kind, slot, ptr, _ = pointer_source(ind, 0, 12)
                counts_at = [-1, -1, -1]
                for kind_name, offset, _size in desc.hidden_args:
                    fill = _HIDDEN_FILL.get(kind_name)
                    if fill is not None and fill[0] == "count":
                        counts_at[fill[1]] = offset
                r.indirect = (kind, slot, ptr, r.wg, tuple(counts_at))
                r.dispatch_flags = 1  # INDIRECT_PARAMETERS
            rec = r
        else:
            raise InvalidArgumentError(f"command {index}: unknown command opcode {op!r}")
        rec.index = index
        rec.flags = int(CommandFlags.HAS_BARRIER) if pending_barrier else 0
        pending_barrier = False
        dynamic = [s for s in rec.sources if s[0] == BindingSourceFlags.DYNAMIC]
        late = [s for s in rec.sources if s[0] != BindingSourceFlags.DYNAMIC]
        if not reusable:
            rec.strategy = KernargStrategy.HAL
        elif rec.indirect is not None:
            # Hidden block counts are patched per submission: queue kernargs.
            rec.strategy = (KernargStrategy.DYNAMIC_BINDINGS
                            if dynamic and not late and len(dynamic) == rec.desc.binding_count
                            else KernargStrategy.PATCHED_TEMPLATE)
        elif not rec.sources:
            rec.strategy = KernargStrategy.PREPUBLISHED
        elif (rec.opcode == Opcode.DISPATCH and dynamic and not late
              and len(dynamic) == rec.desc.binding_count):
            rec.strategy = KernargStrategy.DYNAMIC_BINDINGS
        elif rec.opcode == Opcode.UPDATE and not dynamic and len(late) == 1:
            # Reusable update to a static buffer: the payload can be prepublished too,
            # with its source pointer baked once the storage address is known.
            rec.strategy = KernargStrategy.PREPUBLISHED
        else:
            rec.strategy = KernargStrategy.PATCHED_TEMPLATE
        recs.append(rec)

    # Prepublished storage: one allocation for every PREPUBLISHED command of the program.
    pre_total = sum(r.image.shape[0] for r in recs if r.strategy == KernargStrategy.PREPUBLISHED)
    pre_view = None
    pre_address = 0
    if pre_total:
        pre_view, pre_address, owner = context.allocate_prepublished(pre_total)
        retained.append(owner)
    pre_cursor = 0
    strategy_counts: dict[str, int] = {}
    for r in recs:
        strategy_counts[r.strategy.name] = strategy_counts.get(r.strategy.name, 0) + 1

    blocks: list[Block] = []
    start = 0
    total_packets = len(recs)
    ordinal = 0
    if not recs:
        blocks.append(_encode_block(0, [], True, 0, None, 0))
    while start < len(recs):
        # A block holds at most block_packet_capacity packets and block_kernarg_capacity
        # queue-kernarg bytes (so that every block fits the queue's rings); a single
        # command larger than that stays alone and fails admission with OUT_OF_RANGE.
        end = start
        kernarg_bytes = 0
        while end < len(recs) and end - start < block_packet_capacity:
            r = recs[end]
            if r.indirect is not None and end > start:
                break  # an indirect dispatch opens its own (gated) block
            size = 0 if r.strategy == KernargStrategy.PREPUBLISHED else r.image.shape[0]
            if end > start and kernarg_bytes + size > block_kernarg_capacity:
                break
            kernarg_bytes += size
            end += 1
        chunk = recs[start:end]
        last = start + len(chunk) >= len(recs)
        blk, pre_cursor = _lower_block(ordinal, chunk, last, pre_view, pre_address, pre_cursor)
        blocks.append(blk)
        start += len(chunk)
        ordinal += 1
    if mode & CommandBufferMode.UNRETAINED:
        # The caller keeps buffers and executables alive; keep only what we own.
        retained = [r for r in retained if not _is_user_resource(r)]
    return BlockProgram(
        blocks=tuple(blocks),
        mode=int(mode),
        strategy_counts=strategy_counts,
        dispatch_count=sum(1 for r in recs if r.opcode == Opcode.DISPATCH),
        packet_count=total_packets,
        max_block_packets=max(b.replay.packet_count for b in blocks),
        max_block_kernarg_blocks=max(b.replay.kernarg_block_count for b in blocks),
        slot_extents=slot_extents,
        static_buffers=tuple(static_buffers),
        retained=tuple(retained),
        range_error=range_errors[0] if range_errors else None,
    )


def _is_user_resource(obj: Any) -> bool:
    # Buffers and executables come from the recording; prepublished storage is ours.
    return hasattr(obj, "byte_length") or hasattr(obj, "functions")


def _lower_block(ordinal: int, recs: list[_Rec], last: bool, pre_view: np.ndarray | None,
                 pre_address: int, pre_cursor: int) -> tuple[Block, int]:
    n = len(recs)
    commands = np.zeros(n + 1, COMMAND_DTYPE)  # + terminator
    rows = new_staging(n)
    headers = np.empty(n, np.uint32)
    qk_packets: list[int] = []
    qk_offsets: list[int] = []
    template_parts: list[np.ndarray] = []
    sources: list[tuple] = []
    patch_q: list[int] = []
    patch_s: list[int] = []
    patch_o: list[int] = []
    stat_q: list[int] = []
    stat_s: list[int] = []
    stat_o: list[int] = []
    self_q: list[int] = []
    self_o: list[int] = []
    kernarg_cursor = 0
    dispatch_count = 0
    pk = as_dispatch(rows)
    for i, r in enumerate(recs):
        c = commands[i]
        acquire = FenceScope.AGENT
        release = FenceScope.AGENT
        barrier = bool(r.flags & CommandFlags.HAS_BARRIER) or i == 0
        flags = r.flags | _scope_flags(acquire, release)
        c["opcode"] = r.opcode
        c["command_index"] = r.index
        c["kernarg_strategy"] = r.strategy
        c["dispatch_flags"] = r.dispatch_flags
        c["packet_count"] = 1
        c["packet_index"] = i
        c["binding_source_offset"] = len(sources)
        c["binding_count"] = r.desc.binding_count if r.opcode == Opcode.DISPATCH else 0
        c["patch_source_count"] = len(r.sources)
        c["kernel_object"] = r.desc.kernel_object
        c["grid_size"] = r.grid
        c["workgroup_size"] = r.wg
        c["private_segment_size"] = r.private
        c["group_segment_size"] = r.group
        c["executable_id"] = r.executable_id
        c["setup"] = DISPATCH_SETUP_3D
        c["implicit_args_offset_qwords"] = _NO_IMPLICIT
        c["kernarg_length"] = r.image.shape[0]
        c["length_qwords"] = COMMAND_DTYPE.itemsize // 8
        if r.opcode == Opcode.DISPATCH:
            dispatch_count += 1
        if r.strategy == KernargStrategy.PREPUBLISHED:
            assert pre_view is not None
            image = r.image
            address = pre_address + pre_cursor
            for s in r.sources:  # only an UPDATE's self pointer or baked statics remain
                if s[0] == -1:
                    image[8 * s[3] : 8 * s[3] + 8].view("<u8")[0] = address + s[2]
            pre_view[pre_cursor : pre_cursor + image.shape[0]] = image
            c["kernarg_offset"] = pre_cursor
            c["payload_reference"] = pre_cursor
            pk[i]["kernarg_address"] = address
            pre_cursor += image.shape[0]
            r_sources: list[tuple] = []
        else:
            flags |= CommandFlags.USES_QUEUE_KERNARGS
            c["kernarg_offset"] = kernarg_cursor
            c["payload_reference"] = kernarg_cursor
            qk_packets.append(i)
            qk_offsets.append(kernarg_cursor)
            template_parts.append(r.image)
            base_q = kernarg_cursor // 8
            for s in r.sources:
                kind, slot, off, ordinal_ = s
                if kind == BindingSourceFlags.DYNAMIC:
                    patch_q.append(base_q + ordinal_)
                    patch_s.append(slot)
                    patch_o.append(off)
                elif kind == BindingSourceFlags.STATIC_BUFFER:
                    stat_q.append(base_q + ordinal_)
                    stat_s.append(slot)
                    stat_o.append(off)
                else:  # -1: pointer into this command's own kernargs
                    self_q.append(base_q + ordinal_)
                    self_o.append(kernarg_cursor + off)
            kernarg_cursor += r.image.shape[0]
            r_sources = r.sources
        c["flags"] = flags
        for s in r_sources:
            sources.append((s[2] if s[0] != -1 else 0, s[1], s[3],
                            (s[0] if s[0] != -1 else 0)))
        pk[i]["workgroup_size"] = r.wg
        pk[i]["grid_size"] = r.grid
        pk[i]["private_segment_size"] = r.private
        pk[i]["group_segment_size"] = r.group
        pk[i]["kernel_object"] = r.desc.kernel_object
        headers[i] = header_setup_word(
            make_header(PacketType.KERNEL_DISPATCH, barrier, acquire, release),
            DISPATCH_SETUP_3D)
    term = commands[n]
    term["opcode"] = Opcode.RETURN if last else Opcode.BRANCH
    term["target_block_ordinal"] = 0 if last else ordinal + 1
    term["length_qwords"] = COMMAND_DTYPE.itemsize // 8
    template = (np.concatenate(template_parts) if template_parts
                else np.zeros(0, np.uint8))
    replay = BlockReplay(
        packets=rows,
        header_words=headers,
        queue_kernarg_packets=np.asarray(qk_packets, np.intp),
        queue_kernarg_offsets=np.asarray(qk_offsets, np.uint64),
        kernarg_template=template,
        patch_qwords=np.asarray(patch_q, np.intp),
        patch_slots=np.asarray(patch_s, np.intp),
        patch_offsets=np.asarray(patch_o, np.uint64),
        static_qwords=np.asarray(stat_q, np.intp),
        static_slots=np.asarray(stat_s, np.intp),
        static_offsets=np.asarray(stat_o, np.uint64),
        self_qwords=np.asarray(self_q, np.intp),
        self_offsets=np.asarray(self_o, np.uint64),
        indirect=recs[0].indirect if recs else None,
    )
    data = _encode_binary(ordinal, commands, sources, template, last, n, kernarg_cursor,
                          dispatch_count, int(recs[0].indirect is not None) if recs else 0)
    return Block(data, replay), pre_cursor


def _encode_block(ordinal: int, recs: list, last: bool, _k: int, _v: Any, _c: int) -> Block:
    """An empty program: one RETURN block with no packets."""
    commands = np.zeros(1, COMMAND_DTYPE)
    commands[0]["opcode"] = Opcode.RETURN
    commands[0]["length_qwords"] = COMMAND_DTYPE.itemsize // 8
    empty_i = np.zeros(0, np.intp)
    empty_u = np.zeros(0, np.uint64)
    replay = BlockReplay(new_staging(0), np.zeros(0, np.uint32), empty_i, empty_u,
                         np.zeros(0, np.uint8), empty_i, empty_i, empty_u, empty_i, empty_i,
                         empty_u, empty_i, empty_u)
    return Block(_encode_binary(ordinal, commands, [], np.zeros(0, np.uint8), True, 0, 0, 0),
                 replay)


def _encode_binary(ordinal: int, commands: np.ndarray, sources: list, rodata: np.ndarray,
                   last: bool, packet_count: int, kernarg_length: int,
                   dispatch_count: int, indirect_count: int = 0) -> np.ndarray:
    cmd_bytes = commands.view(np.uint8)
    src = np.zeros(len(sources), BINDING_SOURCE_DTYPE)
    for i, (ptr, slot, target, flags) in enumerate(sources):
        src[i] = (ptr, slot, target, flags, 0)
    command_offset = 64
    rodata_offset = command_offset + cmd_bytes.shape[0]
    source_offset = (rodata_offset + rodata.shape[0] + 7) & ~7
    total = source_offset + 16 * len(sources)
    data = np.zeros(total, np.uint8)
    h = data[:64].view(BLOCK_HEADER_DTYPE)
    h["magic"] = BLOCK_MAGIC
    h["version"] = BLOCK_VERSION
    h["header_length"] = 64
    h["block_ordinal"] = ordinal
    h["terminator_target_block_ordinal"] = 0 if last else ordinal + 1
    h["block_length"] = total
    h["command_offset"] = command_offset
    h["command_length"] = cmd_bytes.shape[0]
    h["binding_source_offset"] = source_offset
    h["command_count"] = commands.shape[0]
    h["binding_source_count"] = len(sources)
    h["aql_packet_count"] = packet_count
    h["kernarg_length"] = kernarg_length
    h["initial_barrier_packet_count"] = 0
    h["rodata_offset"] = rodata_offset
    h["rodata_length"] = rodata.shape[0]
    h["dispatch_count"] = dispatch_count
    h["indirect_dispatch_count"] = indirect_count
    h["terminator_opcode"] = Opcode.RETURN if last else Opcode.BRANCH
    data[command_offset:rodata_offset] = cmd_bytes
    data[rodata_offset : rodata_offset + rodata.shape[0]] = rodata
    data[source_offset:total] = src.view(np.uint8)
    return data
