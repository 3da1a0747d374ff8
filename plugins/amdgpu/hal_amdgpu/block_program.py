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

How ``end()`` stays cheap (``build_programs``): the recording is read once into *facts*:
the distinct lowered commands plus, per packet, which one it is, its command index and its
barrier bit. Dispatches naming the same executable, function, config object and flags
share a *launch shape*, worked out once: the kernel descriptor and its checks, geometry,
segment sizes, the kernarg image with the hidden arguments filled, and the packed packet
and command-record bytes. A distinct dispatch then costs its own pointers and constants
(one struct pack before the shape's image tail) and a reference check per binding; one
recorded again with the same constants and bindings tuple objects (a recording keeps
them alive, so identity is stable) reuses the first one's record, a dict lookup. Lowering
then works on whole-program numpy arrays (records, packet rows and
kernarg templates gathered from per-record tables, block-relative fields from cumulative
sums) and blocks are slices of them. For a multi-GPU device the facts and the lowering are
shared: another GPU whose kernel descriptors differ only in kernel objects gets copies with
the kernel objects patched and its own prepublished storage; one that differs further is
lowered from its own facts. The output is byte-for-byte what a per-command, per-GPU
lowering produces.

Thread-safety: a ``BlockProgram`` is immutable after ``build_program(s)``; any number of
queues may replay it concurrently (blocks of one program may view one shared array).
"""

from __future__ import annotations

import enum
import itertools
import operator
import struct
from typing import Any, Protocol, Sequence

import attrs
import numpy as np

from hal_core import (
    WHOLE_BUFFER,
    BufferRef,
    CommandBufferMode,
    DispatchFlags,
    InvalidArgumentError,
    OutOfRangeError,
    UnimplementedError,
)
from hal_core.backend import (
    CMD_BARRIER,
    CMD_COPY,
    CMD_DEBUG_BEGIN,
    CMD_DEBUG_END,
    CMD_DISPATCH,
    CMD_FILL,
    CMD_UPDATE,
)

from .aql_packets import (
    DISPATCH_SETUP_3D,
    INVALID_HEADER_WORD,
    KERNEL_DISPATCH_DTYPE,
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
    "build_programs",
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
    return np.frombuffer(_kernarg_image(desc, pointers, constants, workgroup_count,
                                        workgroup_size, dynamic_lds), np.uint8)


def _kernarg_image(desc: KernelDescriptor, pointers: Sequence[int], constants: bytes,
                   workgroup_count: Sequence[int], workgroup_size: Sequence[int],
                   dynamic_lds: int = 0) -> bytearray:
    # Built in a bytearray: a handful of slice stores, no numpy call per record.
    n = len(pointers)
    size = max(desc.kernarg_size, 8 * n + len(constants))
    image = bytearray(-(-size // KERNARG_BLOCK_SIZE) * KERNARG_BLOCK_SIZE)
    if n:
        _PACK_U64[n].pack_into(image, 0, *pointers)
    if constants:
        image[8 * n : 8 * n + len(constants)] = constants
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
        image[offset : offset + size_] = int(value).to_bytes(size_, "little")
    return image


class _PackCache(dict):
    def __missing__(self, n: int) -> struct.Struct:
        packer = self[n] = struct.Struct(f"<{n}Q")
        return packer


_PACK_U64 = _PackCache()


class _ImagePackCache(dict):
    """``(binding count, constant bytes, tail bytes)`` -> a packer of a whole HAL kernarg
    image: the pointers, the constants, then the shape's tail (hidden arguments)."""

    def __missing__(self, key: tuple[int, int, int]) -> struct.Struct:
        packer = self[key] = struct.Struct(f"<{key[0]}Q{key[1]}s{key[2]}s")
        return packer


_PACK_IMAGE = _ImagePackCache()


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


class _Shape:
    """What the records of one launch shape share (builder-internal). For dispatches: one
    executable function under one config object with one set of flags, built once per
    ``end()`` and shared by every dispatch naming them, however their bindings and
    constants differ; for a blit, its own command. ``head`` packs a record's binding
    pointers and constants and ``tail`` is the rest of its kernarg image (hidden arguments
    filled); ``head`` is None when the image must be built in full per record (a hidden
    argument overlapping the pointers or constants, an indirect dispatch, a value that does
    not fit its field). ``resolve`` says how to find the kernel on another GPU;
    ``command_row`` and ``packet_row`` are its packed command record (per-proto and
    per-packet fields zero) and packet body template."""

    __slots__ = ("opcode", "dispatch_flags", "desc", "grid", "wg", "count", "lds", "private",
                 "group", "executable_id", "indirect", "resolve", "head", "tail",
                 "grid_error", "binding_count", "constant_bytes", "memo", "command_row",
                 "packet_row")
    opcode: int
    dispatch_flags: int
    desc: KernelDescriptor
    grid: tuple[int, ...]
    wg: tuple[int, ...]
    count: tuple[int, int, int]  # dispatches only
    lds: int  # dispatches only
    private: int
    group: int
    executable_id: int
    indirect: tuple | None
    #: (True, blit kind, width) for a blit, (False, executable, ordinal) for a dispatch
    resolve: tuple[Any, Any, Any]
    head: Any  # a struct.Struct, or None (dispatches only)
    tail: bytes | None  # dispatches only
    grid_error: bool  # dispatches only
    binding_count: int  # dispatches only
    constant_bytes: int  # dispatches only
    memo: dict  # dispatches only
    command_row: bytes | None
    packet_row: bytes | None


class _Rec:
    """One distinct lowered command (builder-internal): its shape plus what is its own.
    Identical dispatches recorded again (same executable, function, config, constants,
    bindings tuple and flags) share one ``_Rec``."""

    __slots__ = ("shape", "strategy", "image", "sources")
    shape: _Shape
    strategy: KernargStrategy
    image: bytes
    sources: list[tuple]


class _Facts:
    """What a recording says, independent of where it is lowered: the distinct commands
    (``protos``) and, per AQL packet, which proto it is, its command index and whether a
    barrier precedes it. Built once per ``end()`` and shared by every GPU whose kernel
    descriptors agree (kernel objects aside)."""

    __slots__ = ("protos", "pids", "indices", "barriers", "mode", "slot_extents",
                 "static_buffers", "retained", "range_error")
    protos: list[_Rec]
    pids: list[int]
    indices: list[int]
    barriers: list[int]
    mode: int
    slot_extents: dict
    static_buffers: tuple
    retained: list[Any]
    range_error: str | None


_SCOPE_FLAGS = (int(FenceScope.AGENT) << 2) | (int(FenceScope.AGENT) << 4)
_HEADER_PLAIN = header_setup_word(
    make_header(PacketType.KERNEL_DISPATCH, False, FenceScope.AGENT, FenceScope.AGENT),
    DISPATCH_SETUP_3D)
_HEADER_BARRIER = header_setup_word(
    make_header(PacketType.KERNEL_DISPATCH, True, FenceScope.AGENT, FenceScope.AGENT),
    DISPATCH_SETUP_3D)
_COMMAND_QWORDS = COMMAND_DTYPE.itemsize // 8
_HAL = KernargStrategy.HAL
_NO_OBJECT = object()  # names no recorded object
_SELF = -1  # source kind: a pointer into the command's own kernargs (UPDATE payload)
_BAKED = int(BindingSourceFlags.NONE)
_DYNAMIC = int(BindingSourceFlags.DYNAMIC)
_STATIC_BUFFER = int(BindingSourceFlags.STATIC_BUFFER)
_UNSUPPORTED_DISPATCH_FLAGS = int(DispatchFlags.CUSTOM_DIRECT_ARGUMENTS
                                  | DispatchFlags.DYNAMIC_INDIRECT_ARGUMENTS
                                  | DispatchFlags.STATIC_INDIRECT_ARGUMENTS)


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
    return build_programs(commands, mode, (context,),
                          block_packet_capacity=block_packet_capacity,
                          block_kernarg_capacity=block_kernarg_capacity)[0]


def build_programs(
    commands: Sequence[tuple],
    mode: int,
    contexts: Sequence[ProgramContext],
    *,
    block_packet_capacity: int = DEFAULT_BLOCK_PACKET_CAPACITY,
    block_kernarg_capacity: int = 1 << 62,
) -> tuple[BlockProgram, ...]:
    """One block program per context (one per GPU of a device), identical to calling
    ``build_program`` for each, but the recording is read once: the GPU-independent facts
    are shared and only kernel objects (and the prepublished storage) differ per GPU.
    ``buffer_address`` must not depend on the context (HSA has one address space); a
    context whose kernel descriptors differ beyond the kernel object is lowered from its
    own facts. Errors as ``build_program``, raised before any storage is allocated."""
    facts = _record_facts(commands, mode, contexts[0])
    # Every error is raised here, before any prepublished storage is allocated.
    plans: list[tuple[Any, Any]] = []
    for context in contexts[1:]:
        objects = _kernel_objects_if_compatible(facts, contexts[0], context)
        plans.append((context, objects if objects is not None
                      else _record_facts(commands, mode, context)))
    first, lowered = _lower_program(facts, contexts[0], block_packet_capacity,
                                    block_kernarg_capacity)
    programs = [first]
    for context, plan in plans:
        if plan.__class__ is _Facts:
            programs.append(_lower_program(plan, context, block_packet_capacity,
                                           block_kernarg_capacity)[0])
        else:
            programs.append(_retarget(first, lowered, facts, np.asarray(plan, np.uint64),
                                      context))
    return tuple(programs)


def _record_facts(commands: Sequence[tuple], mode: int, context: ProgramContext) -> _Facts:
    reusable = not (mode & CommandBufferMode.ONE_SHOT)
    protos: list[_Rec] = []
    pids: list[int] = []
    indices: list[int] = []
    barriers: list[int] = []
    slot_extents: dict[int, int] = {}
    static_buffers: list[Any] = []
    static_index: dict[int, int] = {}
    retained: list[Any] = []
    pending_barrier = 0
    executable_ids: dict[int, int] = {}
    range_errors: list[str] = []
    builtins = context.builtins
    # A recording keeps every key object alive, so ids are stable for the whole build.
    # Launch shapes by (executable, function, config, flags): what distinct dispatches of
    # one kernel share is worked out once; each shape's memo maps (constants, bindings
    # tuple) to the record of a dispatch recorded again.
    shapes: dict[tuple, _Shape] = {}
    # Device address of each buffer seen (HSA has one address space; asked once a build).
    addresses: dict[int, int | None] = {}
    has_barrier = int(CommandFlags.HAS_BARRIER)

    def pointer_source(ref: Any, ordinal: int, length: int) -> tuple[int, int, int, int]:
        """(flags, slot, offset_or_pointer, ordinal) for a reference."""
        buf = ref.buffer
        if buf is None:
            # Every referenced slot gets an entry (a whole-buffer reference reaches 0 known
            # bytes but still needs its pointer resolved at submit).
            end = ref.offset + length
            if end >= slot_extents.get(ref.slot, 0):
                slot_extents[ref.slot] = end
            return (_DYNAMIC, ref.slot, ref.offset, ordinal)
        if ref.offset + length > buf.byte_length and not range_errors:
            # Only reachable UNVALIDATED: fail the submission at execution, as IREE does.
            range_errors.append(
                f"command {len(pids)}: range [{ref.offset}, {ref.offset + length}) exceeds "
                f"its buffer of {buf.byte_length} bytes (recorded UNVALIDATED)")
        key = id(buf)
        if key in addresses:
            addr = addresses[key]
        else:
            retained.append(buf)
            addr = addresses[key] = context.buffer_address(buf)
        if addr is None:
            i = static_index.get(key)
            if i is None:
                i = static_index[key] = len(static_buffers)
                static_buffers.append(buf)
            return (_STATIC_BUFFER, i, ref.offset, ordinal)
        return (_BAKED, 0, addr + ref.offset, ordinal)

    def ref_length(ref: Any) -> int:
        if ref.length != WHOLE_BUFFER:
            return ref.length
        if ref.buffer is not None:
            return ref.buffer.byte_length - ref.offset
        return 0

    def blit(opcode: Opcode, kind: str, width: int, elements: int,
             sources: list, scalars: list[int], payload: bytes = b"") -> _Rec:
        desc = getattr(builtins, kind)[width]
        s = _Shape()
        s.opcode = opcode
        s.desc = desc
        s.resolve = (True, kind, width)
        wg = builtins.workgroup_size
        groups = max(1, min(builtins.max_workgroups, -(-elements // wg)))
        s.grid = (groups * wg, 1, 1)
        s.wg = (wg, 1, 1)
        s.private = desc.private_segment_size
        s.group = desc.group_segment_size
        s.executable_id = 0
        s.dispatch_flags = 0
        s.indirect = None
        s.command_row = _command_row(s)
        s.packet_row = _packet_row(s)
        baked = [src[2] if src[0] == _BAKED else 0 for src in sources]
        words = np.asarray(scalars, dtype=np.uint64).tobytes()
        image = _kernarg_image(desc, baked, words, (groups, 1, 1), s.wg)
        if payload:
            # The payload rides in the command's own kernargs after the kernel's segment;
            # its source pointer (ordinal 0) is the kernarg address + this offset.
            payload_at = len(image)
            sources = [(_SELF, 0, payload_at, 0)] + sources[1:]
            padded = -(-len(payload) // KERNARG_BLOCK_SIZE) * KERNARG_BLOCK_SIZE
            image += payload
            image += bytes(padded - len(payload))
        r = _Rec()
        r.shape = s
        r.image = bytes(image)
        r.sources = [src for src in sources if src[0] != _BAKED]
        return r

    def dispatch_shape(index: int, cmd: tuple) -> _Shape:
        """The shape of dispatch ``cmd``; what is checked here holds for every dispatch
        of the shape (the unsupported flags, the kernel lookup)."""
        executable, ordinal, config, constants, bindings, flags = cmd[1:7]
        if flags & _UNSUPPORTED_DISPATCH_FLAGS:
            raise UnimplementedError(
                f"command {index}: dispatch flags {DispatchFlags(flags)!r} (custom or "
                "indirect arguments) are not implemented by the amdgpu driver"
            )
        desc = context.kernel_descriptor(executable, ordinal)
        retained.append(executable)
        wg = config.workgroup_size if any(config.workgroup_size) else desc.workgroup_size
        s = _Shape()
        s.opcode = Opcode.DISPATCH
        s.desc = desc
        s.resolve = (False, executable, ordinal)
        s.count = count = config.workgroup_count
        s.lds = lds = config.dynamic_workgroup_local_memory
        s.wg = tuple(int(v) for v in wg)
        s.grid = tuple(int(c) * int(w) for c, w in zip(count, s.wg))
        s.grid_error = any(g >= 1 << 32 for g in s.grid)
        s.private = desc.private_segment_size
        s.group = desc.group_segment_size + lds
        s.executable_id = executable_ids.setdefault(id(executable), len(executable_ids))
        s.dispatch_flags = 0
        s.indirect = None
        # A grid past 32 bits fails each dispatch (OUT_OF_RANGE) before rows are needed.
        s.command_row = None if s.grid_error else _command_row(s)
        s.packet_row = None if s.grid_error else _packet_row(s)
        s.memo = {}
        s.head = s.tail = None
        n = s.binding_count = desc.binding_count
        constant_bytes = s.constant_bytes = 4 * desc.constant_count
        end = 8 * n + constant_bytes
        if config.workgroup_count_ref is None and all(
                _HIDDEN_FILL.get(kind) is None or offset >= end
                for kind, offset, _size in desc.hidden_args):
            try:
                image = _kernarg_image(desc, [0] * n, bytes(constant_bytes), count, s.wg, lds)
            except (OverflowError, ValueError):
                pass  # each record builds (and fails) as a lone dispatch would
            else:
                s.tail = tail = bytes(image[end:])
                s.head = _PACK_IMAGE[n, constant_bytes, len(tail)]
        shapes[(id(executable), ordinal, id(config), flags)] = s
        return s

    def dispatch_record(index: int, cmd: tuple, s: _Shape) -> _Rec:
        config, constants, bindings = cmd[3], cmd[4], cmd[5]
        if len(bindings) != s.binding_count:
            raise InvalidArgumentError(
                f"command {index}: dispatch of {s.desc.name or cmd[2]!r} got "
                f"{len(bindings)} bindings, the kernel takes {s.binding_count}"
            )
        if len(constants) != s.constant_bytes:
            raise InvalidArgumentError(
                f"command {index}: dispatch of {s.desc.name or cmd[2]!r} got "
                f"{len(constants)} constant bytes, the kernel takes {s.constant_bytes}"
            )
        baked: list[int] = []
        sources: list[tuple[int, int, int, int]] = []
        for i, b in enumerate(bindings):
            if b.__class__ is BufferRef:
                buf = b.buffer
                # The common case inline: an in-range reference to a buffer already seen
                # (retained, address known) bakes its pointer.
                if buf is not None and b.length != WHOLE_BUFFER:
                    addr = addresses_get(id(buf))
                    if addr is not None and b.offset + b.length <= buf.byte_length:
                        baked.append(addr + b.offset)
                        continue
            else:
                # Bindings may be whole Buffers as well as BufferRefs (the recording API
                # takes both).
                b = BufferRef(b)
            src = pointer_source(b, i, ref_length(b))
            if src[0] == _BAKED:
                baked.append(src[2])
            else:
                baked.append(0)
                sources.append(src)
        if s.grid_error:
            raise OutOfRangeError(
                f"command {index}: grid {s.grid} work-items exceeds the 32-bit AQL grid; "
                "reduce the workgroup count"
            )
        ind = config.workgroup_count_ref
        if ind is not None and s.indirect is None:
            # Counts are read on the host when the dispatch is reached (its block is
            # gated on the completion of everything recorded before it). Worked out after
            # the first dispatch's bindings, so static buffers number in command order.
            kind, slot, ptr, _ = pointer_source(ind, 0, 12)
            counts_at = [-1, -1, -1]
            for kind_name, offset, _size in s.desc.hidden_args:
                fill = _HIDDEN_FILL.get(kind_name)
                if fill is not None and fill[0] == "count":
                    counts_at[fill[1]] = offset
            s.indirect = (kind, slot, ptr, s.wg, tuple(counts_at))
            s.dispatch_flags = 1  # INDIRECT_PARAMETERS
            s.command_row = _command_row(s)
        r = _Rec()
        r.shape = s
        head = s.head
        if head is not None:
            r.image = head.pack(*baked, constants, s.tail)
        else:
            r.image = bytes(_kernarg_image(s.desc, baked, constants, s.count, s.wg, s.lds))
        r.sources = sources
        if reusable:
            choose_strategy(r)
        else:
            r.strategy = _HAL
        return r

    def choose_strategy(rec: _Rec) -> None:
        shape = rec.shape
        dynamic = [s for s in rec.sources if s[0] == _DYNAMIC]
        late = [s for s in rec.sources if s[0] != _DYNAMIC]
        if not reusable:
            rec.strategy = KernargStrategy.HAL
        elif shape.indirect is not None:
            # Hidden block counts are patched per submission: queue kernargs.
            rec.strategy = (KernargStrategy.DYNAMIC_BINDINGS
                            if dynamic and not late
                            and len(dynamic) == shape.desc.binding_count
                            else KernargStrategy.PATCHED_TEMPLATE)
        elif not rec.sources:
            rec.strategy = KernargStrategy.PREPUBLISHED
        elif (shape.opcode == Opcode.DISPATCH and dynamic and not late
              and len(dynamic) == shape.desc.binding_count):
            rec.strategy = KernargStrategy.DYNAMIC_BINDINGS
        elif shape.opcode == Opcode.UPDATE and not dynamic and len(late) == 1:
            # Reusable update to a static buffer: the payload can be prepublished too,
            # with its source pointer baked once the storage address is known.
            rec.strategy = KernargStrategy.PREPUBLISHED
        else:
            rec.strategy = KernargStrategy.PATCHED_TEMPLATE

    shapes_get = shapes.get
    addresses_get = addresses.get
    protos_append, pids_append = protos.append, pids.append
    last_executable = last_config = _NO_OBJECT
    last_ordinal = last_flags = -1
    shape: _Shape  # set by the first dispatch (nothing matches _NO_OBJECT)
    indices_append, barriers_append = indices.append, barriers.append
    for index, cmd in enumerate(commands):
        op = cmd[0]
        if op == CMD_DISPATCH:
            # Runs of dispatches naming the last shape's objects skip the lookup.
            if (cmd[3] is not last_config or cmd[1] is not last_executable
                    or cmd[2] != last_ordinal or cmd[6] != last_flags):
                known = shapes_get((id(cmd[1]), cmd[2], id(cmd[3]), cmd[6]))
                shape = dispatch_shape(index, cmd) if known is None else known
                last_executable, last_ordinal = cmd[1], cmd[2]
                last_config, last_flags = cmd[3], cmd[6]
            # The same dispatch recorded again lowers to the same record.
            memo = shape.memo
            key = (cmd[4], id(cmd[5]))
            pid = memo.get(key)
            if pid is None:
                pid = memo[key] = len(protos)
                protos_append(dispatch_record(index, cmd, shape))
            pids_append(pid)
            indices_append(index)
            barriers_append(pending_barrier)
            pending_barrier = 0
            continue
        if op == CMD_BARRIER:
            pending_barrier = has_barrier
            continue
        if op == CMD_DEBUG_BEGIN or op == CMD_DEBUG_END:
            continue
        if op == CMD_FILL:
            ref, pattern = cmd[1], cmd[2]
            length = ref_length(ref)
            plen = len(pattern)
            pattern_value = int.from_bytes(pattern, "little")
            src = pointer_source(ref, 0, length)
            rec = blit(Opcode.FILL, "fill", plen, length // plen, [src],
                       [length // plen, pattern_value])
        elif op == CMD_COPY:
            s_ref, d_ref = cmd[1], cmd[2]
            length = ref_length(s_ref)
            width = 4 if (length % 4 == 0 and s_ref.offset % 4 == 0
                          and d_ref.offset % 4 == 0) else 1
            srcs = [pointer_source(s_ref, 0, length), pointer_source(d_ref, 1, length)]
            rec = blit(Opcode.COPY, "copy", width, length // width, srcs, [length // width])
        elif op == CMD_UPDATE:
            data, ref = cmd[1], cmd[2]
            length = len(data)
            srcs = [(_SELF, 0, 0, 0), pointer_source(ref, 1, length)]
            rec = blit(Opcode.UPDATE, "copy", 1, length, srcs, [length],
                       payload=bytes(data))
        else:
            raise InvalidArgumentError(f"command {index}: unknown command opcode {op!r}")
        choose_strategy(rec)
        pids.append(len(protos))
        protos.append(rec)
        indices.append(index)
        barriers.append(pending_barrier)
        pending_barrier = 0

    facts = _Facts()
    facts.protos = protos
    facts.pids = pids
    facts.indices = indices
    facts.barriers = barriers
    facts.mode = int(mode)
    facts.slot_extents = slot_extents
    facts.static_buffers = tuple(static_buffers)
    if mode & CommandBufferMode.UNRETAINED:
        # The caller keeps buffers and executables alive; keep only what we own.
        retained = [r for r in retained if not _is_user_resource(r)]
    facts.retained = retained
    facts.range_error = range_errors[0] if range_errors else None
    return facts


def _kernel_objects_if_compatible(facts: _Facts, first: ProgramContext,
                                  other: ProgramContext) -> list[int] | None:
    """Per proto, ``other``'s kernel object, or None when any descriptor (or the blit
    geometry) differs in more than its kernel object (then ``other`` needs its own
    facts)."""
    a, b = first.builtins, other.builtins
    if (a.workgroup_size, a.max_workgroups) != (b.workgroup_size, b.max_workgroups):
        return None
    cache: dict[tuple, int | None] = {}
    shapes = list(map(_SHAPE_OF, facts.protos))
    by_shape: dict[int, int] = {}
    for shape in dict(zip(map(id, shapes), shapes)).values():
        builtin, x, y = shape.resolve
        key = (builtin, id(x), y)
        obj = cache.get(key, -1)
        if obj == -1:
            desc = getattr(b, x)[y] if builtin else other.kernel_descriptor(x, y)
            same = attrs.evolve(desc, kernel_object=shape.desc.kernel_object) == shape.desc
            obj = cache[key] = desc.kernel_object if same else None
        if obj is None:
            return None
        by_shape[id(shape)] = obj
    return list(map(by_shape.__getitem__, map(id, shapes)))


def _is_user_resource(obj: Any) -> bool:
    # Buffers and executables come from the recording; prepublished storage is ours.
    return hasattr(obj, "byte_length") or hasattr(obj, "functions")


# COMMAND_DTYPE and KERNEL_DISPATCH_DTYPE as struct layouts (padding packs as zeros).
_COMMAND_ROW = struct.Struct("<BBHIBBBxIIHHIIIHHQ3I3HHIIII12x")
_PACKET_ROW = struct.Struct("<HH3HH3IIIQQQQ")
assert _COMMAND_ROW.size == COMMAND_DTYPE.itemsize
assert _PACKET_ROW.size == KERNEL_DISPATCH_DTYPE.itemsize
_SHAPE_OF = operator.attrgetter("shape")
_IMAGE_OF = operator.attrgetter("image")
_INDIRECT_OF = operator.attrgetter("indirect")
_STRATEGY_OF = operator.attrgetter("strategy")
_SOURCES_OF = operator.attrgetter("sources")
_COMMAND_ROW_OF = operator.attrgetter("command_row")
_PACKET_ROW_OF = operator.attrgetter("packet_row")


def _command_row(shape: _Shape) -> bytes:
    """A command record with the per-packet fields and the per-proto ones (strategy,
    source count, kernarg length) zero."""
    desc = shape.desc
    binding_count = desc.binding_count if shape.opcode == Opcode.DISPATCH else 0
    try:
        return _COMMAND_ROW.pack(
            shape.opcode, 0, _COMMAND_QWORDS, 0, 0, shape.dispatch_flags, 1, 0, 0,
            binding_count, 0, 0, 0, 0, _NO_IMPLICIT, DISPATCH_SETUP_3D, desc.kernel_object,
            *shape.grid, *shape.wg, 0, shape.private, shape.group, shape.executable_id, 0)
    except struct.error:
        # A value outside its field: the structured store says so as it always has.
        record = np.zeros(1, COMMAND_DTYPE)
        record[0] = (shape.opcode, 0, _COMMAND_QWORDS, 0, 0, shape.dispatch_flags, 1, 0, 0,
                     binding_count, 0, 0, 0, 0, _NO_IMPLICIT, DISPATCH_SETUP_3D,
                     desc.kernel_object, shape.grid, shape.wg, 0, shape.private,
                     shape.group, shape.executable_id, 0)
        return record.tobytes()


def _packet_row(shape: _Shape) -> bytes:
    """The packet body template: the header word stays INVALID until replay commits it;
    kernarg address and completion signal are per program / per submission."""
    try:
        return _PACKET_ROW.pack(INVALID_HEADER_WORD, 0, *shape.wg, 0, *shape.grid,
                                shape.private, shape.group, shape.desc.kernel_object, 0, 0, 0)
    except struct.error:
        packet = np.zeros(1, KERNEL_DISPATCH_DTYPE)
        packet[0] = (INVALID_HEADER_WORD, 0, shape.wg, 0, shape.grid, shape.private,
                     shape.group, shape.desc.kernel_object, 0, 0, 0)
        return packet.tobytes()


class _ProtoTables:
    """Per-proto records and columns (numpy), so per-packet arrays are one gather each.
    Command records and packet rows are the shapes' packed bytes joined into one array
    each, the per-proto record columns stored over them in one pass each."""

    def __init__(self, protos: list[_Rec]) -> None:
        m = len(protos)
        dispatch = Opcode.DISPATCH
        self.images = images = list(map(_IMAGE_OF, protos))
        shapes = list(map(_SHAPE_OF, protos))
        # The shape's record with the per-proto columns (strategy, source count, image
        # length) stored over it; per-packet fields (command/packet index, binding source
        # offset, kernarg offset, payload reference, flags) stay zero here. The packet rows
        # are read-only: lowering gathers copies of them (``[pids]``).
        if m:
            cmd = np.frombuffer(bytearray(b"".join(map(_COMMAND_ROW_OF, shapes))),
                                COMMAND_DTYPE)
            cmd["kernarg_strategy"] = np.fromiter(map(_STRATEGY_OF, protos), np.uint8, m)
            cmd["patch_source_count"] = np.fromiter(map(len, map(_SOURCES_OF, protos)),
                                                    np.uint16, m)
            cmd["kernarg_length"] = np.fromiter(map(len, images), np.uint32, m)
            self.rows = np.frombuffer(b"".join(map(_PACKET_ROW_OF, shapes)),
                                      np.uint8).reshape(m, 64)
        else:
            cmd = np.zeros(0, COMMAND_DTYPE)
            self.rows = np.zeros((0, 64), np.uint8)
        self.cmd = cmd
        self.cmd_bytes = cmd.view(np.uint8).reshape(m, COMMAND_DTYPE.itemsize)
        self.sizes = cmd["kernarg_length"].astype(np.int64)
        # Recordings of one kernel shape (the common case) gather templates as one table.
        self.image_table = (np.frombuffer(b"".join(images), np.uint8).reshape(m, -1)
                            if m and len(set(map(len, images))) == 1 else None)
        self.prepublished = cmd["kernarg_strategy"] == KernargStrategy.PREPUBLISHED
        self.indirect = list(map(_INDIRECT_OF, shapes))
        self.any_indirect = self.indirect.count(None) != m
        self.is_dispatch = cmd["opcode"] == dispatch
        # Sources, flattened: proto p owns entries [src_start[p], src_start[p] + src_count[p]).
        flat = list(itertools.chain.from_iterable(map(_SOURCES_OF, protos)))
        self.src_count = cmd["patch_source_count"].astype(np.int64)
        self.src_start = _exclusive_cumsum(self.src_count)
        self.src_kind = np.fromiter((s[0] for s in flat), np.int64, len(flat))
        self.src_slot = np.fromiter((s[1] for s in flat), np.int64, len(flat))
        self.src_off = np.fromiter((s[2] for s in flat), np.uint64, len(flat))
        self.src_ord = np.fromiter((s[3] for s in flat), np.int64, len(flat))

    def template(self, pids: np.ndarray, pid_list: list[int]) -> np.ndarray:
        """The concatenated kernarg images of ``pids`` (a new, writable array)."""
        if not pid_list:
            return _EMPTY_U8
        if self.image_table is not None:
            return self.image_table[pids].reshape(-1)
        images = self.images
        return np.frombuffer(bytearray(b"".join([images[p] for p in pid_list])), np.uint8)


def _exclusive_cumsum(values: np.ndarray) -> np.ndarray:
    out = np.zeros(values.shape[0], np.int64)
    if values.shape[0] > 1:
        np.cumsum(values[:-1], out=out[1:])
    return out


def _gather_sources(tables: _ProtoTables, pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat source indices of packets ``pids`` in order, and the packet of each."""
    counts = tables.src_count[pids]
    total = int(counts.sum())
    if not total:
        empty = np.zeros(0, np.int64)
        return empty, empty
    owner = np.repeat(np.arange(pids.shape[0]), counts)
    first = _exclusive_cumsum(counts)
    flat = tables.src_start[pids][owner] + (np.arange(total) - first[owner])
    return flat, owner


class _Lowered:
    """How a program was lowered, kept by ``build_programs`` to retarget it to another
    GPU: the packet -> proto map, block bounds, the program-wide packet rows, and the
    prepublished image (with the UPDATE payload pointers that depend on its address)."""

    __slots__ = ("pids", "bounds", "rows", "pre_positions", "pre_offsets", "pre_view",
                 "pre_total", "self_qwords", "self_values")
    pids: np.ndarray
    bounds: list[tuple[int, int]]
    rows: np.ndarray
    pre_positions: np.ndarray  # these five only when the program prepublishes kernargs
    pre_offsets: np.ndarray
    pre_view: np.ndarray
    self_qwords: list[int]
    self_values: list[int]
    pre_total: int


def _lower_program(facts: _Facts, context: ProgramContext, block_packet_capacity: int,
                   block_kernarg_capacity: int) -> tuple[BlockProgram, _Lowered]:
    """Lower ``facts`` for one GPU. Every per-packet array is computed once for the whole
    program (a handful of numpy operations); blocks are then slices of it."""
    tables = _ProtoTables(facts.protos)
    pids = np.asarray(facts.pids, np.intp)
    n_total = pids.shape[0]
    retained = list(facts.retained)
    lowered = _Lowered()
    lowered.pids = pids
    lowered.bounds = []
    lowered.pre_total = 0
    if not n_total:
        program = BlockProgram(
            blocks=(_encode_block(0, [], True, 0, None, 0),), mode=facts.mode,
            strategy_counts={}, dispatch_count=0, packet_count=0, max_block_packets=0,
            max_block_kernarg_blocks=0, slot_extents=facts.slot_extents,
            static_buffers=facts.static_buffers, retained=tuple(retained),
            range_error=facts.range_error)
        return program, lowered
    prepub = tables.prepublished[pids]
    qk = ~prepub
    sizes = tables.sizes[pids]
    qk_sizes = np.where(prepub, 0, sizes)
    rows = tables.rows[pids]
    lowered.rows = rows

    # Prepublished storage: one allocation for every PREPUBLISHED command of the program,
    # filled in one pass (then the UPDATE payload pointers, relative to their command).
    pre_positions = np.flatnonzero(prepub)
    pre_offsets_of = np.zeros(n_total, np.int64)
    if pre_positions.shape[0]:
        pre_sizes = sizes[pre_positions]
        pre_total = int(pre_sizes.sum())
        pre_view, pre_address, owner = context.allocate_prepublished(pre_total)
        retained.append(owner)
        pre_offsets = _exclusive_cumsum(pre_sizes)
        pre_offsets_of[pre_positions] = pre_offsets
        images = tables.images
        pre_view[:pre_total] = np.frombuffer(
            b"".join([images[p] for p in pids[pre_positions].tolist()]), np.uint8)
        self_qwords: list[int] = []
        self_values: list[int] = []
        flat, owner_idx = _gather_sources(tables, pids[pre_positions])
        if flat.shape[0]:
            self_ = tables.src_kind[flat] == _SELF
            at = pre_offsets[owner_idx[self_]]
            self_qwords = (at + 8 * tables.src_ord[flat[self_]]).tolist()
            self_values = (at.astype(np.uint64) + tables.src_off[flat[self_]]).tolist()
            _store_qwords(pre_view, self_qwords, self_values, pre_address)
        as_dispatch(rows)["kernarg_address"][pre_positions] = (
            np.uint64(pre_address) + pre_offsets.astype(np.uint64))
        lowered.pre_positions = pre_positions
        lowered.pre_offsets = pre_offsets
        lowered.pre_view = pre_view
        lowered.pre_total = pre_total
        lowered.self_qwords = self_qwords
        lowered.self_values = self_values

    bounds = _split_blocks(tables, pids, qk_sizes, block_packet_capacity,
                           block_kernarg_capacity)
    lowered.bounds = bounds
    starts = np.fromiter((b[0] for b in bounds), np.intp, len(bounds))
    ends = np.fromiter((b[1] for b in bounds), np.intp, len(bounds))
    block_start = np.repeat(starts, ends - starts)  # per packet: its block's first packet

    # Command records, every packet at once; block-relative fields via ``block_start``.
    barrier = np.asarray(facts.barriers, np.uint8)
    kernarg_cum = _exclusive_cumsum(qk_sizes)
    kernarg_rel = kernarg_cum - kernarg_cum[block_start]
    emitted_cum = _exclusive_cumsum(np.where(qk, tables.src_count[pids], 0))
    record_bytes = tables.cmd_bytes[pids]
    records = record_bytes.reshape(-1).view(COMMAND_DTYPE)
    records["command_index"] = facts.indices
    records["packet_index"] = np.arange(n_total) - block_start
    records["binding_source_offset"] = emitted_cum - emitted_cum[block_start]
    offsets = np.where(prepub, pre_offsets_of, kernarg_rel)
    records["kernarg_offset"] = offsets
    records["payload_reference"] = offsets
    records["flags"] = barrier | np.where(
        qk, _SCOPE_FLAGS | int(CommandFlags.USES_QUEUE_KERNARGS), _SCOPE_FLAGS).astype(np.uint8)
    headers = np.where(barrier != 0, np.uint32(_HEADER_BARRIER), np.uint32(_HEADER_PLAIN))
    headers[starts] = _HEADER_BARRIER  # every block opens with a barrier packet

    # Queue-kernarg sources, in packet order (prepublished commands emit none).
    qk_positions = np.flatnonzero(qk)
    qk_offsets = kernarg_rel[qk_positions].astype(np.uint64)
    qk_lo = np.searchsorted(qk_positions, starts).tolist()
    qk_hi = np.searchsorted(qk_positions, ends).tolist()
    qk_pid_array = pids[qk_positions]
    qk_pids = qk_pid_array.tolist() if tables.image_table is None else []
    flat, owner = _gather_sources(tables, pids[qk_positions])
    src_total = flat.shape[0]
    if src_total:
        owner_packet = qk_positions[owner]
        kind = tables.src_kind[flat]
        slot = tables.src_slot[flat]
        off = tables.src_off[flat]
        ords = tables.src_ord[flat]
        qword = kernarg_rel[owner_packet] // 8 + ords
        self_all = kind == _SELF
        self_off = kernarg_rel[owner_packet].astype(np.uint64) + off
        sources = np.zeros(src_total, BINDING_SOURCE_DTYPE)
        sources["offset_or_pointer"] = np.where(self_all, np.uint64(0), off)
        sources["slot"] = slot
        sources["target_binding_ordinal"] = ords
        sources["flags"] = np.where(self_all, 0, kind)
        src_lo = np.searchsorted(owner_packet, starts).tolist()
        src_hi = np.searchsorted(owner_packet, ends).tolist()
    else:
        sources = np.zeros(0, BINDING_SOURCE_DTYPE)
    dispatch_cum = np.cumsum(tables.is_dispatch[pids])

    blocks: list[Block] = []
    last_ordinal = len(bounds) - 1
    for ordinal, (start, end) in enumerate(bounds):
        a, b = qk_lo[ordinal], qk_hi[ordinal]
        template = (tables.template(qk_pid_array[a:b], qk_pids[a:b] or [0])
                    if b > a else _EMPTY_U8)
        if src_total and src_hi[ordinal] > src_lo[ordinal]:
            lo, hi = src_lo[ordinal], src_hi[ordinal]
            k = kind[lo:hi]
            dyn = k == int(BindingSourceFlags.DYNAMIC)
            stat = k == int(BindingSourceFlags.STATIC_BUFFER)
            self_ = self_all[lo:hi]
            q, sl, of = qword[lo:hi], slot[lo:hi], off[lo:hi]
            patch = (q[dyn], sl[dyn], of[dyn])
            static = (q[stat], sl[stat], of[stat])
            selfs = (q[self_], self_off[lo:hi][self_])
            block_sources = sources[lo:hi]
        else:
            patch = static = (_EMPTY_INTP, _EMPTY_INTP, _EMPTY_U64)
            selfs = (_EMPTY_INTP, _EMPTY_U64)
            block_sources = sources[:0]
        indirect = tables.indirect[pids[start]]
        replay = BlockReplay(
            packets=rows[start:end],
            header_words=headers[start:end],
            queue_kernarg_packets=qk_positions[a:b] - start,
            queue_kernarg_offsets=qk_offsets[a:b],
            kernarg_template=template,
            patch_qwords=patch[0].astype(np.intp, copy=False),
            patch_slots=patch[1].astype(np.intp, copy=False),
            patch_offsets=patch[2],
            static_qwords=static[0].astype(np.intp, copy=False),
            static_slots=static[1].astype(np.intp, copy=False),
            static_offsets=static[2],
            self_qwords=selfs[0].astype(np.intp, copy=False),
            self_offsets=selfs[1],
            indirect=indirect,
        )
        dispatches = int(dispatch_cum[end - 1]) - (int(dispatch_cum[start - 1]) if start else 0)
        data = _encode_binary(ordinal, record_bytes[start:end], block_sources, template,
                              ordinal == last_ordinal, end - start, template.shape[0],
                              dispatches, int(indirect is not None))
        blocks.append(Block(data, replay))

    counts = np.bincount(tables.cmd["kernarg_strategy"][pids], minlength=len(KernargStrategy))
    strategy_counts = {KernargStrategy(v).name: c
                       for v, c in enumerate(counts.tolist()) if c}
    return BlockProgram(
        blocks=tuple(blocks),
        mode=facts.mode,
        strategy_counts=strategy_counts,
        dispatch_count=int(dispatch_cum[-1]),
        packet_count=n_total,
        max_block_packets=max(b.replay.packet_count for b in blocks),
        max_block_kernarg_blocks=max(b.replay.kernarg_block_count for b in blocks),
        slot_extents=facts.slot_extents,
        static_buffers=facts.static_buffers,
        retained=tuple(retained),
        range_error=facts.range_error,
    ), lowered


_EMPTY_U8 = np.zeros(0, np.uint8)
_EMPTY_U64 = np.zeros(0, np.uint64)
_EMPTY_INTP = np.zeros(0, np.intp)
for _empty in (_EMPTY_U8, _EMPTY_U64, _EMPTY_INTP):
    _empty.flags.writeable = False


def _store_qwords(view: np.ndarray, qwords: list[int], values: list[int], base: int) -> None:
    # Few (one per prepublished UPDATE): scalar stores are cheaper than a gather here.
    for q, v in zip(qwords, values):
        view[q : q + 8] = np.frombuffer((base + v).to_bytes(8, "little"), np.uint8)


def _retarget(first: BlockProgram, lowered: _Lowered, facts: _Facts, objects: np.ndarray,
              context: ProgramContext) -> BlockProgram:
    """``first`` for another GPU whose descriptors differ only in kernel objects
    (``objects[proto]``): copies of the packet rows and binary blocks with the kernel
    objects patched, and its own prepublished storage (same image, rebased UPDATE payload
    pointers and kernarg addresses). Replay arrays that name no kernel and no address are
    shared (they are never written)."""
    if not lowered.bounds:
        return first  # the empty program names no kernel and owns no storage
    retained = list(facts.retained)
    rows = lowered.rows.copy()
    packets = as_dispatch(rows)
    kernel_objects = objects[lowered.pids]
    packets["kernel_object"] = kernel_objects
    if lowered.pre_total:
        view, pre_address, owner = context.allocate_prepublished(lowered.pre_total)
        retained.append(owner)
        view[: lowered.pre_total] = lowered.pre_view[: lowered.pre_total]
        _store_qwords(view, lowered.self_qwords, lowered.self_values, pre_address)
        packets["kernarg_address"][lowered.pre_positions] = (
            np.uint64(pre_address) + lowered.pre_offsets.astype(np.uint64))
    blocks = []
    for block, (start, end) in zip(first.blocks, lowered.bounds):
        data = block.data.copy()
        data[64 : 64 + COMMAND_DTYPE.itemsize * (end - start)].view(COMMAND_DTYPE)[
            "kernel_object"] = kernel_objects[start:end]
        blocks.append(Block(data, attrs.evolve(block.replay, packets=rows[start:end])))
    return attrs.evolve(first, blocks=tuple(blocks), retained=tuple(retained))


def _split_blocks(tables: _ProtoTables, pids: np.ndarray, qk_sizes: np.ndarray,
                  packet_capacity: int, kernarg_capacity: int) -> list[tuple[int, int]]:
    """Block bounds: at most ``packet_capacity`` packets and ``kernarg_capacity``
    queue-kernarg bytes each (so every block fits the queue's rings; a single command
    larger than that stays alone and fails admission with OUT_OF_RANGE); an indirect
    dispatch opens its own (gated) block."""
    n = pids.shape[0]
    starts = list(range(0, n, packet_capacity))
    if not tables.any_indirect and int(
            np.add.reduceat(qk_sizes, starts).max()) <= kernarg_capacity:
        return [(s, min(s + packet_capacity, n)) for s in starts]
    indirect = [tables.indirect[p] is not None for p in pids.tolist()]
    sizes = qk_sizes.tolist()
    bounds = []
    start = 0
    while start < n:
        end = start
        kernarg_bytes = 0
        while end < n and end - start < packet_capacity:
            if indirect[end] and end > start:
                break
            size = sizes[end]
            if end > start and kernarg_bytes + size > kernarg_capacity:
                break
            kernarg_bytes += size
            end += 1
        bounds.append((start, end))
        start = end
    return bounds


def _encode_block(ordinal: int, recs: list, last: bool, _k: int, _v: Any, _c: int) -> Block:
    """An empty program: one RETURN block with no packets."""
    empty_i = np.zeros(0, np.intp)
    empty_u = np.zeros(0, np.uint64)
    replay = BlockReplay(new_staging(0), np.zeros(0, np.uint32), empty_i, empty_u,
                         np.zeros(0, np.uint8), empty_i, empty_i, empty_u, empty_i, empty_i,
                         empty_u, empty_i, empty_u)
    return Block(_encode_binary(ordinal, np.zeros((0, COMMAND_DTYPE.itemsize), np.uint8),
                                np.zeros(0, BINDING_SOURCE_DTYPE), np.zeros(0, np.uint8),
                                True, 0, 0, 0), replay)


def _terminator(opcode: Opcode) -> np.ndarray:
    record = np.zeros(1, COMMAND_DTYPE)
    record["opcode"] = opcode
    record["length_qwords"] = _COMMAND_QWORDS
    return record.view(np.uint8)


_TERMINATORS = {True: _terminator(Opcode.RETURN), False: _terminator(Opcode.BRANCH)}
# numpy types dtype.fields as optional; a structured dtype's is always set.
_TARGET_AT = COMMAND_DTYPE.fields["target_block_ordinal"][1]  # type: ignore[index]


def _encode_binary(ordinal: int, body: np.ndarray, sources: np.ndarray, rodata: np.ndarray,
                   last: bool, packet_count: int, kernarg_length: int,
                   dispatch_count: int, indirect_count: int = 0) -> np.ndarray:
    """The binary block: header, ``body`` (``(n, 96)`` command record bytes) plus the
    terminator, rodata, binding sources."""
    record = COMMAND_DTYPE.itemsize
    count = sources.shape[0]
    command_offset = 64
    command_length = record * (body.shape[0] + 1)
    rodata_offset = command_offset + command_length
    source_offset = (rodata_offset + rodata.shape[0] + 7) & ~7
    total = source_offset + 16 * count
    data = np.zeros(total, np.uint8)
    target = 0 if last else ordinal + 1
    terminator_opcode = Opcode.RETURN if last else Opcode.BRANCH
    # One structured store, fields in BLOCK_HEADER_DTYPE order.
    data[:64].view(BLOCK_HEADER_DTYPE)[0] = (
        BLOCK_MAGIC, BLOCK_VERSION, 64, ordinal, target, total, command_offset,
        command_length, source_offset, body.shape[0] + 1, count, packet_count,
        kernarg_length, 0, rodata_offset, rodata.shape[0], dispatch_count, indirect_count,
        0, terminator_opcode, 0)
    term_at = rodata_offset - record
    data[command_offset:term_at] = body.reshape(-1)
    data[term_at:rodata_offset] = _TERMINATORS[last]
    if target:
        data[term_at + _TARGET_AT : term_at + _TARGET_AT + 4].view("<u4")[0] = target
    data[rodata_offset : rodata_offset + rodata.shape[0]] = rodata
    data[source_offset:total] = sources.view(np.uint8)
    return data
