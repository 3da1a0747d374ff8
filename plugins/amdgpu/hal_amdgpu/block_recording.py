"""Reading a recording into block-program *facts* (``_record_facts``): the distinct lowered
commands (``_Rec``, sharing a launch ``_Shape`` per executable function, config and flags)
and, per AQL packet, which one it is, its command index and its barrier bit. The facts are
independent of the GPU they are lowered for (kernel objects aside); ``block_lowering``
turns them into blocks. ``block_program`` describes the whole build.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Protocol, Sequence

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
    FenceScope,
    PacketType,
    header_setup_word,
    make_header,
)
from .block_format import COMMAND_DTYPE, BindingSourceFlags, CommandFlags, KernargStrategy, Opcode
from .kernarg_ring import KERNARG_BLOCK_SIZE
from .kernel_descriptors import (
    _HIDDEN_FILL,
    _PACK_IMAGE,
    BuiltinKernels,
    KernelDescriptor,
    _kernarg_image,
)
from .launch_rows import _command_row, _packet_row

__all__ = [
    "ProgramContext",
]


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

    __slots__ = (
        "opcode",
        "dispatch_flags",
        "desc",
        "grid",
        "wg",
        "count",
        "lds",
        "private",
        "group",
        "executable_id",
        "indirect",
        "resolve",
        "head",
        "tail",
        "grid_error",
        "binding_count",
        "constant_bytes",
        "memo",
        "command_row",
        "packet_row",
    )
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
    sources: Sequence[tuple]


class _Facts:
    """What a recording says, independent of where it is lowered: the distinct commands
    (``protos``) and, per AQL packet, which proto it is, its command index and whether a
    barrier precedes it. Built once per ``end()`` and shared by every GPU whose kernel
    descriptors agree (kernel objects aside)."""

    __slots__ = (
        "protos",
        "pids",
        "indices",
        "barriers",
        "mode",
        "slot_extents",
        "static_buffers",
        "retained",
        "range_error",
    )
    protos: list[_Rec]
    pids: list[int]
    indices: list[int]
    barriers: bytearray
    mode: int
    slot_extents: dict
    static_buffers: tuple
    retained: list[Any]
    range_error: str | None


_SCOPE_FLAGS = (int(FenceScope.AGENT) << 2) | (int(FenceScope.AGENT) << 4)
_HEADER_PLAIN = header_setup_word(
    make_header(PacketType.KERNEL_DISPATCH, False, FenceScope.AGENT, FenceScope.AGENT),
    DISPATCH_SETUP_3D,
)
_HEADER_BARRIER = header_setup_word(
    make_header(PacketType.KERNEL_DISPATCH, True, FenceScope.AGENT, FenceScope.AGENT),
    DISPATCH_SETUP_3D,
)
_COMMAND_QWORDS = COMMAND_DTYPE.itemsize // 8
_HAL = KernargStrategy.HAL
_NO_OBJECT = object()  # names no recorded object
_NO_SOURCES: tuple = ()  # the sources of a record with every pointer baked (shared)
_SELF = -1  # source kind: a pointer into the command's own kernargs (UPDATE payload)
_BAKED = int(BindingSourceFlags.NONE)
_DYNAMIC = int(BindingSourceFlags.DYNAMIC)
_STATIC_BUFFER = int(BindingSourceFlags.STATIC_BUFFER)
_UNSUPPORTED_DISPATCH_FLAGS = int(
    DispatchFlags.CUSTOM_DIRECT_ARGUMENTS
    | DispatchFlags.DYNAMIC_INDIRECT_ARGUMENTS
    | DispatchFlags.STATIC_INDIRECT_ARGUMENTS
)


def _record_facts(commands: Sequence[tuple], mode: int, context: ProgramContext) -> _Facts:
    return _FactsBuilder(mode, context).run(commands)


class _FactsBuilder:
    """The state of one ``_record_facts`` call, its work split per command kind: the
    dispatch path stays inline in ``run`` (the hot loop), blits go through ``_BLITS``."""

    __slots__ = (
        "mode",
        "reusable",
        "context",
        "builtins",
        "protos",
        "pids",
        "indices",
        "barriers",
        "slot_extents",
        "static_buffers",
        "static_index",
        "retained",
        "executable_ids",
        "range_errors",
        "shapes",
        "addresses",
    )

    def __init__(self, mode: int, context: ProgramContext) -> None:
        self.mode = mode
        self.reusable = not (mode & CommandBufferMode.ONE_SHOT)
        self.context = context
        self.builtins = context.builtins
        self.protos: list[_Rec] = []
        self.pids: list[int] = []
        self.indices: list[int] = []
        self.barriers = bytearray()
        self.slot_extents: dict[int, int] = {}
        self.static_buffers: list[Any] = []
        self.static_index: dict[int, int] = {}
        self.retained: list[Any] = []
        self.executable_ids: dict[int, int] = {}
        self.range_errors: list[str] = []
        # A recording keeps every key object alive, so ids are stable for the whole build.
        # Launch shapes by (executable, function, config, flags): what distinct dispatches
        # of one kernel share is worked out once; each shape's memo maps (constants,
        # bindings tuple) to the record of a dispatch recorded again.
        self.shapes: dict[tuple, _Shape] = {}
        # Device address of each buffer seen (HSA has one address space; asked once a
        # build).
        self.addresses: dict[int, int | None] = {}

    def run(self, commands: Sequence[tuple]) -> _Facts:
        protos, pids = self.protos, self.pids
        shapes_get = self.shapes.get
        protos_append, pids_append = protos.append, pids.append
        indices_append, barriers_append = self.indices.append, self.barriers.append
        dispatch_shape, dispatch_record = self._dispatch_shape, self._dispatch_record
        blits = _BLITS
        addresses_get = self.addresses.get
        whole = WHOLE_BUFFER
        # A record without late sources: prepublished when reusable (no indirect shape
        # has a packed head), HAL kernargs when one-shot.
        plain_strategy = KernargStrategy.PREPUBLISHED if self.reusable else _HAL
        has_barrier = int(CommandFlags.HAS_BARRIER)
        pending_barrier = 0
        last_executable = last_config = _NO_OBJECT
        last_ordinal = last_flags = -1
        dispatch_op, barrier_op = CMD_DISPATCH, CMD_BARRIER
        # Set by the first dispatch (nothing matches _NO_OBJECT): the shape and, for the
        # inline path, its memo, packed head (None where the shape cannot take it) and
        # counts.
        shape: _Shape
        memo: dict
        head: Any
        buf: Any  # a binding's buffer (None for an indirect one: it has no address)
        tail = b""
        n_constants = n_bindings = 0
        for index, cmd in enumerate(commands):
            op = cmd[0]
            if op == dispatch_op:
                # Runs of dispatches naming the last shape's objects skip the lookup.
                if (
                    cmd[3] is not last_config
                    or cmd[1] is not last_executable
                    or cmd[2] != last_ordinal
                    or cmd[6] != last_flags
                ):
                    known = shapes_get((id(cmd[1]), cmd[2], id(cmd[3]), cmd[6]))
                    shape = dispatch_shape(index, cmd) if known is None else known
                    last_executable, last_ordinal = cmd[1], cmd[2]
                    last_config, last_flags = cmd[3], cmd[6]
                    memo = shape.memo
                    head = None if shape.grid_error else shape.head
                    tail = shape.tail or b""
                    n_constants, n_bindings = shape.constant_bytes, shape.binding_count
                # The same dispatch recorded again lowers to the same record.
                constants, bindings = cmd[4], cmd[5]
                key = (constants, id(bindings))
                pid = memo.get(key)
                if pid is None:
                    pid = memo[key] = len(protos)
                    # The common case inline (as ``_dispatch_record`` lowers it): a shape
                    # with a packed head, the right counts, every binding an in-range
                    # reference to a buffer already seen.
                    if (
                        head is not None
                        and len(constants) == n_constants
                        and len(bindings) == n_bindings
                    ):
                        baked = []
                        for b in bindings:
                            if b.__class__ is not BufferRef or b.length == whole:
                                break
                            # An indirect reference (buffer None) has no address.
                            buf = b.buffer
                            addr = addresses_get(id(buf))
                            offset = b.offset
                            if addr is None or offset + b.length > buf.byte_length:
                                break
                            baked.append(addr + offset)
                        else:
                            rec = _Rec()
                            rec.shape = shape
                            rec.image = head.pack(*baked, constants, tail)
                            rec.sources = _NO_SOURCES
                            rec.strategy = plain_strategy
                            protos_append(rec)
                            pids_append(pid)
                            indices_append(index)
                            barriers_append(pending_barrier)
                            pending_barrier = 0
                            continue
                    protos_append(dispatch_record(index, cmd, shape))
                pids_append(pid)
                indices_append(index)
                barriers_append(pending_barrier)
                pending_barrier = 0
                continue
            if op == barrier_op:
                pending_barrier = has_barrier
                continue
            if op == CMD_DEBUG_BEGIN or op == CMD_DEBUG_END:
                continue
            lower = blits.get(op)
            if lower is None:
                raise InvalidArgumentError(f"command {index}: unknown command opcode {op!r}")
            rec = lower(self, cmd)
            self._choose_strategy(rec)
            pids_append(len(protos))
            protos_append(rec)
            indices_append(index)
            barriers_append(pending_barrier)
            pending_barrier = 0
        return self._facts()

    def _facts(self) -> _Facts:
        mode = self.mode
        facts = _Facts()
        facts.protos = self.protos
        facts.pids = self.pids
        facts.indices = self.indices
        facts.barriers = self.barriers
        facts.mode = int(mode)
        facts.slot_extents = self.slot_extents
        facts.static_buffers = tuple(self.static_buffers)
        retained = self.retained
        if mode & CommandBufferMode.UNRETAINED:
            # The caller keeps buffers and executables alive; keep only what we own.
            retained = [r for r in retained if not _is_user_resource(r)]
        facts.retained = retained
        facts.range_error = self.range_errors[0] if self.range_errors else None
        return facts

    def _pointer_source(self, ref: Any, ordinal: int, length: int) -> tuple[int, int, int, int]:
        """(flags, slot, offset_or_pointer, ordinal) for a reference."""
        buf = ref.buffer
        if buf is None:
            # Every referenced slot gets an entry (a whole-buffer reference reaches 0 known
            # bytes but still needs its pointer resolved at submit).
            slot_extents = self.slot_extents
            end = ref.offset + length
            if end >= slot_extents.get(ref.slot, 0):
                slot_extents[ref.slot] = end
            return (_DYNAMIC, ref.slot, ref.offset, ordinal)
        if ref.offset + length > buf.byte_length and not self.range_errors:
            # Only reachable UNVALIDATED: fail the submission at execution, as IREE does.
            self.range_errors.append(
                f"command {len(self.pids)}: range [{ref.offset}, {ref.offset + length}) "
                f"exceeds its buffer of {buf.byte_length} bytes (recorded UNVALIDATED)"
            )
        key = id(buf)
        addresses = self.addresses
        if key in addresses:
            addr = addresses[key]
        else:
            self.retained.append(buf)
            addr = addresses[key] = self.context.buffer_address(buf)
        if addr is None:
            i = self.static_index.get(key)
            if i is None:
                i = self.static_index[key] = len(self.static_buffers)
                self.static_buffers.append(buf)
            return (_STATIC_BUFFER, i, ref.offset, ordinal)
        return (_BAKED, 0, addr + ref.offset, ordinal)

    def _fill(self, cmd: tuple) -> _Rec:
        ref, pattern = cmd[1], cmd[2]
        length = _ref_length(ref)
        plen = len(pattern)
        pattern_value = int.from_bytes(pattern, "little")
        src = self._pointer_source(ref, 0, length)
        return self._blit(
            Opcode.FILL, "fill", plen, length // plen, [src], [length // plen, pattern_value]
        )

    def _copy(self, cmd: tuple) -> _Rec:
        d_ref, s_ref = cmd[1], cmd[2]
        length = _ref_length(s_ref)
        width = 4 if (length % 4 == 0 and s_ref.offset % 4 == 0 and d_ref.offset % 4 == 0) else 1
        srcs = [self._pointer_source(s_ref, 0, length), self._pointer_source(d_ref, 1, length)]
        return self._blit(Opcode.COPY, "copy", width, length // width, srcs, [length // width])

    def _update(self, cmd: tuple) -> _Rec:
        ref, data = cmd[1], cmd[2]
        length = len(data)
        srcs = [(_SELF, 0, 0, 0), self._pointer_source(ref, 1, length)]
        return self._blit(Opcode.UPDATE, "copy", 1, length, srcs, [length], payload=bytes(data))

    def _blit(
        self,
        opcode: Opcode,
        kind: str,
        width: int,
        elements: int,
        sources: list,
        scalars: list[int],
        payload: bytes = b"",
    ) -> _Rec:
        builtins = self.builtins
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

    def _dispatch_shape(self, index: int, cmd: tuple) -> _Shape:
        """The shape of dispatch ``cmd``; what is checked here holds for every dispatch
        of the shape (the unsupported flags, the kernel lookup)."""
        executable, ordinal, config, constants, bindings, flags = cmd[1:7]
        if flags & _UNSUPPORTED_DISPATCH_FLAGS:
            raise UnimplementedError(
                f"command {index}: dispatch flags {DispatchFlags(flags)!r} (custom or "
                "indirect arguments) are not implemented by the amdgpu driver"
            )
        desc = self.context.kernel_descriptor(executable, ordinal)
        self.retained.append(executable)
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
        executable_ids = self.executable_ids
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
            for kind, offset, _size in desc.hidden_args
        ):
            try:
                image = _kernarg_image(desc, [0] * n, bytes(constant_bytes), count, s.wg, lds)
            except (OverflowError, ValueError):
                pass  # each record builds (and fails) as a lone dispatch would
            else:
                s.tail = tail = bytes(image[end:])
                s.head = _PACK_IMAGE[n, constant_bytes, len(tail)]
        self.shapes[(id(executable), ordinal, id(config), flags)] = s
        return s

    def _dispatch_record(self, index: int, cmd: tuple, s: _Shape) -> _Rec:
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
        baked, sources = self._binding_pointers(bindings)
        if s.grid_error:
            raise OutOfRangeError(
                f"command {index}: grid {s.grid} work-items exceeds the 32-bit AQL grid; "
                "reduce the workgroup count"
            )
        if config.workgroup_count_ref is not None and s.indirect is None:
            self._set_indirect(s, config.workgroup_count_ref)
        r = _Rec()
        r.shape = s
        head = s.head
        if head is not None:
            r.image = head.pack(*baked, constants, s.tail)
        else:
            r.image = bytes(_kernarg_image(s.desc, baked, constants, s.count, s.wg, s.lds))
        r.sources = sources or _NO_SOURCES
        if self.reusable:
            self._choose_strategy(r)
        else:
            r.strategy = _HAL
        return r

    def _binding_pointers(
        self, bindings: Sequence[Any]
    ) -> tuple[list[int], list[tuple[int, int, int, int]]]:
        """Per binding its baked pointer (0 where resolved later), and the sources of
        those resolved later."""
        addresses_get = self.addresses.get
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
            src = self._pointer_source(b, i, _ref_length(b))
            if src[0] == _BAKED:
                baked.append(src[2])
            else:
                baked.append(0)
                sources.append(src)
        return baked, sources

    def _set_indirect(self, s: _Shape, ind: Any) -> None:
        # Counts are read on the host when the dispatch is reached (its block is gated on
        # the completion of everything recorded before it). Worked out after the first
        # dispatch's bindings, so static buffers number in command order.
        kind, slot, ptr, _ = self._pointer_source(ind, 0, 12)
        counts_at = [-1, -1, -1]
        for kind_name, offset, _size in s.desc.hidden_args:
            fill = _HIDDEN_FILL.get(kind_name)
            if fill is not None and fill[0] == "count":
                counts_at[fill[1]] = offset
        s.indirect = (kind, slot, ptr, s.wg, tuple(counts_at))
        s.dispatch_flags = 1  # INDIRECT_PARAMETERS
        s.command_row = _command_row(s)

    def _choose_strategy(self, rec: _Rec) -> None:
        shape = rec.shape
        dynamic = [s for s in rec.sources if s[0] == _DYNAMIC]
        late = [s for s in rec.sources if s[0] != _DYNAMIC]
        if not self.reusable:
            rec.strategy = KernargStrategy.HAL
        elif shape.indirect is not None:
            # Hidden block counts are patched per submission: queue kernargs.
            rec.strategy = (
                KernargStrategy.DYNAMIC_BINDINGS
                if dynamic and not late and len(dynamic) == shape.desc.binding_count
                else KernargStrategy.PATCHED_TEMPLATE
            )
        elif not rec.sources:
            rec.strategy = KernargStrategy.PREPUBLISHED
        elif (
            shape.opcode == Opcode.DISPATCH
            and dynamic
            and not late
            and len(dynamic) == shape.desc.binding_count
        ):
            rec.strategy = KernargStrategy.DYNAMIC_BINDINGS
        elif shape.opcode == Opcode.UPDATE and not dynamic and len(late) == 1:
            # Reusable update to a static buffer: the payload can be prepublished too,
            # with its source pointer baked once the storage address is known.
            rec.strategy = KernargStrategy.PREPUBLISHED
        else:
            rec.strategy = KernargStrategy.PATCHED_TEMPLATE


# How each blit command kind lowers to its record (dispatches are inline in ``run``).
_BLITS: dict[Any, Callable[[_FactsBuilder, tuple], _Rec]] = {
    CMD_FILL: _FactsBuilder._fill,
    CMD_COPY: _FactsBuilder._copy,
    CMD_UPDATE: _FactsBuilder._update,
}


def _ref_length(ref: Any) -> int:
    if ref.length != WHOLE_BUFFER:
        return ref.length
    if ref.buffer is not None:
        return ref.buffer.byte_length - ref.offset
    return 0


def _kernel_objects_if_compatible(
    facts: _Facts, first: ProgramContext, other: ProgramContext
) -> list[int] | None:
    """Per proto, ``other``'s kernel object, or None when any descriptor (or the blit
    geometry) differs in more than its kernel object (then ``other`` needs its own
    facts)."""
    a, b = first.builtins, other.builtins
    if (a.workgroup_size, a.max_workgroups) != (b.workgroup_size, b.max_workgroups):
        return None
    cache: dict[tuple, int | None] = {}
    shapes = list(map(_SHAPE_OF, facts.protos))
    by_shape: dict[int, int] = {}
    # One launch shape (the common case): one lookup, one object for every proto.
    uniform = bool(shapes) and shapes.count(shapes[0]) == len(shapes)
    for shape in shapes[:1] if uniform else dict(zip(map(id, shapes), shapes)).values():
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
    if uniform:
        return [by_shape[id(shapes[0])]] * len(shapes)
    return list(map(by_shape.__getitem__, map(id, shapes)))


def _is_user_resource(obj: Any) -> bool:
    # Buffers and executables come from the recording; prepublished storage is ours.
    return hasattr(obj, "byte_length") or hasattr(obj, "functions")


# COMMAND_DTYPE and KERNEL_DISPATCH_DTYPE as struct layouts (padding packs as zeros).
_SHAPE_OF = operator.attrgetter("shape")
_IMAGE_OF = operator.attrgetter("image")
_INDIRECT_OF = operator.attrgetter("indirect")
_STRATEGY_OF = operator.attrgetter("strategy")
_SOURCES_OF = operator.attrgetter("sources")
_COMMAND_ROW_OF = operator.attrgetter("command_row")
_PACKET_ROW_OF = operator.attrgetter("packet_row")
