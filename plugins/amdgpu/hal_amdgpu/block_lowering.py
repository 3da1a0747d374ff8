"""Lowering block-program facts (``block_recording``) into blocks: whole-program numpy
arrays of command records, packet rows and kernarg templates gathered from per-record
tables, block-relative fields from cumulative sums, blocks as slices of them; and
retargeting a lowered program to another GPU whose kernel descriptors differ only in
kernel objects. ``block_program`` describes the whole build.
"""

from __future__ import annotations

import itertools

import attrs
import numpy as np

from hal_core import CommandBufferMode

from .aql_packets import (
    as_dispatch,
    new_staging,
)
from .block_format import (
    BINDING_SOURCE_DTYPE,
    BLOCK_HEADER_DTYPE,
    BLOCK_MAGIC,
    BLOCK_VERSION,
    COMMAND_DTYPE,
    BindingSourceFlags,
    Block,
    BlockProgram,
    BlockReplay,
    CommandFlags,
    KernargStrategy,
    Opcode,
)
from .block_recording import (
    _COMMAND_QWORDS,
    _COMMAND_ROW_OF,
    _HEADER_BARRIER,
    _HEADER_PLAIN,
    _IMAGE_OF,
    _INDIRECT_OF,
    _NO_SOURCES,
    _PACKET_ROW_OF,
    _SCOPE_FLAGS,
    _SELF,
    _SHAPE_OF,
    _SOURCES_OF,
    _STRATEGY_OF,
    ProgramContext,
    _Facts,
    _Rec,
)

__all__: list[str] = []


class _ProtoTables:
    """Per-proto records and columns (numpy), so per-packet arrays are one gather each.
    Command records and packet rows are the shapes' packed bytes joined into one array
    each, the per-proto record columns stored over them in one pass each."""

    def __init__(self, protos: list[_Rec], one_shot: bool) -> None:
        m = len(protos)
        dispatch = Opcode.DISPATCH
        self.images = images = list(map(_IMAGE_OF, protos))
        shapes = list(map(_SHAPE_OF, protos))
        sources = list(map(_SOURCES_OF, protos))
        # The common case: one launch shape, every pointer baked (then the per-proto
        # columns are constants, worked out once).
        uniform = m > 0 and shapes.count(shapes[0]) == m
        plain = sources.count(_NO_SOURCES) == m
        head = shapes[0].head if uniform and shapes[0].opcode == dispatch else None
        # The shape's record with the per-proto columns (strategy, source count, image
        # length) stored over it; per-packet fields (command/packet index, binding source
        # offset, kernarg offset, payload reference, flags) stay zero here. The tables are
        # one lowering's own: it gathers copies (``[pids]``) or, where every packet is its
        # own proto, writes them in place.
        if m:
            shape_rows = (
                bytearray(shapes[0].command_row) * m
                if uniform
                else bytearray().join(map(_COMMAND_ROW_OF, shapes))
            )
            cmd = np.frombuffer(shape_rows, COMMAND_DTYPE)
            if one_shot:
                cmd["kernarg_strategy"] = KernargStrategy.HAL
            else:
                cmd["kernarg_strategy"] = np.fromiter(map(_STRATEGY_OF, protos), np.uint8, m)
            if not plain:
                cmd["patch_source_count"] = np.fromiter(map(len, sources), np.uint16, m)
            if head is not None:
                cmd["kernarg_length"] = head.size
            else:
                cmd["kernarg_length"] = np.fromiter(map(len, images), np.uint32, m)
            # Writable (lowering writes them in place when it gathers none).
            packet_rows = (
                bytearray(shapes[0].packet_row) * m
                if uniform
                else bytearray().join(map(_PACKET_ROW_OF, shapes))
            )
            self.rows = np.frombuffer(packet_rows, np.uint8).reshape(m, 64)
        else:
            cmd = np.zeros(0, COMMAND_DTYPE)
            self.rows = np.zeros((0, 64), np.uint8)
        self.cmd = cmd
        self.cmd_bytes = cmd.view(np.uint8).reshape(m, COMMAND_DTYPE.itemsize)
        self.sizes = cmd["kernarg_length"].astype(np.int64)
        # Recordings of one kernel shape (the common case) gather templates as one table.
        self.image_table = (
            np.frombuffer(bytearray().join(images), np.uint8).reshape(m, -1)
            if m and (head is not None or len(set(map(len, images))) == 1)
            else None
        )
        self.prepublished = cmd["kernarg_strategy"] == KernargStrategy.PREPUBLISHED
        self.indirect = [shapes[0].indirect] * m if uniform else list(map(_INDIRECT_OF, shapes))
        self.any_indirect = self.indirect.count(None) != m
        self.is_dispatch = cmd["opcode"] == dispatch
        # Sources, flattened: proto p owns entries [src_start[p], src_start[p] + src_count[p]).
        flat = [] if plain else list(itertools.chain.from_iterable(sources))
        self.src_count = cmd["patch_source_count"].astype(np.int64)
        self.src_start = _exclusive_cumsum(self.src_count)
        self.src_kind = np.fromiter((s[0] for s in flat), np.int64, len(flat))
        self.src_slot = np.fromiter((s[1] for s in flat), np.int64, len(flat))
        self.src_off = np.fromiter((s[2] for s in flat), np.uint64, len(flat))
        self.src_ord = np.fromiter((s[3] for s in flat), np.int64, len(flat))

    def template(self, pids: np.ndarray, pid_list: list[int], every: bool) -> np.ndarray:
        """The concatenated kernarg images of ``pids`` (a new, writable array; ``every``:
        ``pids`` is every proto in order, then the table itself)."""
        if not pid_list:
            return _EMPTY_U8
        if self.image_table is not None:
            if every and pids.shape[0] == self.image_table.shape[0]:
                return self.image_table.reshape(-1)
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

    __slots__ = (
        "pids",
        "bounds",
        "rows",
        "pre_positions",
        "pre_offsets",
        "pre_view",
        "pre_total",
        "self_qwords",
        "self_values",
    )
    pids: np.ndarray
    bounds: list[tuple[int, int]]
    rows: np.ndarray
    pre_positions: np.ndarray  # these five only when the program prepublishes kernargs
    pre_offsets: np.ndarray
    pre_view: np.ndarray
    self_qwords: list[int]
    self_values: list[int]
    pre_total: int


def _lower_program(
    facts: _Facts, context: ProgramContext, block_packet_capacity: int, block_kernarg_capacity: int
) -> tuple[BlockProgram, _Lowered]:
    """Lower ``facts`` for one GPU. Every per-packet array is computed once for the whole
    program (a handful of numpy operations); blocks are then slices of it."""
    tables = _ProtoTables(facts.protos, bool(facts.mode & CommandBufferMode.ONE_SHOT))
    n_total = len(facts.pids)
    pids = np.fromiter(facts.pids, np.intp, n_total)
    # Every packet its own proto (then pids is 0, 1, ...: protos are numbered in order of
    # first use): the per-proto tables are the per-packet arrays, no gather needed.
    every = len(facts.protos) == n_total
    retained = list(facts.retained)
    lowered = _Lowered()
    lowered.pids = pids
    lowered.bounds = []
    lowered.pre_total = 0
    if not n_total:
        program = BlockProgram(
            blocks=(_encode_block(0, [], True),),
            mode=facts.mode,
            strategy_counts={},
            dispatch_count=0,
            packet_count=0,
            max_block_packets=0,
            max_block_kernarg_blocks=0,
            slot_extents=facts.slot_extents,
            static_buffers=facts.static_buffers,
            retained=tuple(retained),
            range_error=facts.range_error,
        )
        return program, lowered
    prepub = tables.prepublished[pids]
    qk = ~prepub
    sizes = tables.sizes[pids]
    qk_sizes = np.where(prepub, 0, sizes)
    rows = tables.rows if every else tables.rows[pids]
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
            b"".join([images[p] for p in pids[pre_positions].tolist()]), np.uint8
        )
        self_qwords: list[int] = []
        self_values: list[int] = []
        flat, owner_idx = _gather_sources(tables, pids[pre_positions])
        if flat.shape[0]:
            self_ = tables.src_kind[flat] == _SELF
            at = pre_offsets[owner_idx[self_]]
            self_qwords = (at + 8 * tables.src_ord[flat[self_]]).tolist()
            self_values = (at.astype(np.uint64) + tables.src_off[flat[self_]]).tolist()
            _store_qwords(pre_view, self_qwords, self_values, pre_address)
        as_dispatch(rows)["kernarg_address"][pre_positions] = np.uint64(
            pre_address
        ) + pre_offsets.astype(np.uint64)
        lowered.pre_positions = pre_positions
        lowered.pre_offsets = pre_offsets
        lowered.pre_view = pre_view
        lowered.pre_total = pre_total
        lowered.self_qwords = self_qwords
        lowered.self_values = self_values

    bounds = _split_blocks(tables, pids, qk_sizes, block_packet_capacity, block_kernarg_capacity)
    lowered.bounds = bounds
    starts = np.fromiter((b[0] for b in bounds), np.intp, len(bounds))
    ends = np.fromiter((b[1] for b in bounds), np.intp, len(bounds))
    block_start = np.repeat(starts, ends - starts)  # per packet: its block's first packet

    # Command records, every packet at once; block-relative fields via ``block_start``.
    barrier = np.frombuffer(facts.barriers, np.uint8)
    kernarg_cum = _exclusive_cumsum(qk_sizes)
    kernarg_rel = kernarg_cum - kernarg_cum[block_start]
    emitted_cum = _exclusive_cumsum(np.where(qk, tables.src_count[pids], 0))
    # ``tables`` is this lowering's own: its records are written in place when ungathered.
    record_bytes = tables.cmd_bytes if every else tables.cmd_bytes[pids]
    records = record_bytes.reshape(-1).view(COMMAND_DTYPE)
    records["command_index"] = np.fromiter(facts.indices, np.int64, n_total)
    records["packet_index"] = np.arange(n_total) - block_start
    records["binding_source_offset"] = emitted_cum - emitted_cum[block_start]
    offsets = np.where(prepub, pre_offsets_of, kernarg_rel)
    records["kernarg_offset"] = offsets
    records["payload_reference"] = offsets
    records["flags"] = barrier | np.where(
        qk, _SCOPE_FLAGS | int(CommandFlags.USES_QUEUE_KERNARGS), _SCOPE_FLAGS
    ).astype(np.uint8)
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
        template = (
            tables.template(qk_pid_array[a:b], qk_pids[a:b] or [0], every) if b > a else _EMPTY_U8
        )
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
        data = _encode_binary(
            ordinal,
            record_bytes[start:end],
            block_sources,
            template,
            ordinal == last_ordinal,
            end - start,
            template.shape[0],
            dispatches,
            int(indirect is not None),
        )
        blocks.append(Block(data, replay))

    counts = np.bincount(tables.cmd["kernarg_strategy"][pids], minlength=len(KernargStrategy))
    strategy_counts = {KernargStrategy(v).name: c for v, c in enumerate(counts.tolist()) if c}
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


def _retarget(
    first: BlockProgram,
    lowered: _Lowered,
    facts: _Facts,
    objects: np.ndarray,
    context: ProgramContext,
) -> BlockProgram:
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
        packets["kernarg_address"][lowered.pre_positions] = np.uint64(
            pre_address
        ) + lowered.pre_offsets.astype(np.uint64)
    blocks = []
    for block, (start, end) in zip(first.blocks, lowered.bounds):
        data = block.data.copy()
        data[64 : 64 + COMMAND_DTYPE.itemsize * (end - start)].view(COMMAND_DTYPE)[
            "kernel_object"
        ] = kernel_objects[start:end]
        blocks.append(Block(data, attrs.evolve(block.replay, packets=rows[start:end])))
    return attrs.evolve(first, blocks=tuple(blocks), retained=tuple(retained))


def _split_blocks(
    tables: _ProtoTables,
    pids: np.ndarray,
    qk_sizes: np.ndarray,
    packet_capacity: int,
    kernarg_capacity: int,
) -> list[tuple[int, int]]:
    """Block bounds: at most ``packet_capacity`` packets and ``kernarg_capacity``
    queue-kernarg bytes each (so every block fits the queue's rings; a single command
    larger than that stays alone and fails admission with OUT_OF_RANGE); an indirect
    dispatch opens its own (gated) block."""
    n = pids.shape[0]
    starts = list(range(0, n, packet_capacity))
    if not tables.any_indirect and int(np.add.reduceat(qk_sizes, starts).max()) <= kernarg_capacity:
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


def _encode_block(ordinal: int, recs: list, last: bool) -> Block:
    """An empty program: one RETURN block with no packets."""
    empty_i = np.zeros(0, np.intp)
    empty_u = np.zeros(0, np.uint64)
    replay = BlockReplay(
        new_staging(0),
        np.zeros(0, np.uint32),
        empty_i,
        empty_u,
        np.zeros(0, np.uint8),
        empty_i,
        empty_i,
        empty_u,
        empty_i,
        empty_i,
        empty_u,
        empty_i,
        empty_u,
    )
    return Block(
        _encode_binary(
            ordinal,
            np.zeros((0, COMMAND_DTYPE.itemsize), np.uint8),
            np.zeros(0, BINDING_SOURCE_DTYPE),
            np.zeros(0, np.uint8),
            True,
            0,
            0,
            0,
        ),
        replay,
    )


def _terminator(opcode: Opcode) -> np.ndarray:
    record = np.zeros(1, COMMAND_DTYPE)
    record["opcode"] = opcode
    record["length_qwords"] = _COMMAND_QWORDS
    return record.view(np.uint8)


_TERMINATORS = {True: _terminator(Opcode.RETURN), False: _terminator(Opcode.BRANCH)}
# numpy types dtype.fields as optional; a structured dtype's is always set.
_TARGET_AT = COMMAND_DTYPE.fields["target_block_ordinal"][1]  # type: ignore[index]


def _encode_binary(
    ordinal: int,
    body: np.ndarray,
    sources: np.ndarray,
    rodata: np.ndarray,
    last: bool,
    packet_count: int,
    kernarg_length: int,
    dispatch_count: int,
    indirect_count: int = 0,
) -> np.ndarray:
    """The binary block: header, ``body`` (``(n, 96)`` command record bytes) plus the
    terminator, rodata, binding sources."""
    record = COMMAND_DTYPE.itemsize
    count = sources.shape[0]
    command_offset = 64
    command_length = record * (body.shape[0] + 1)
    rodata_offset = command_offset + command_length
    source_offset = (rodata_offset + rodata.shape[0] + 7) & ~7
    total = source_offset + 16 * count
    # Every byte is stored below; only the header (padding) and the rodata's alignment
    # pad are zeroed explicitly.
    data = np.empty(total, np.uint8)
    data[:64] = 0
    target = 0 if last else ordinal + 1
    terminator_opcode = Opcode.RETURN if last else Opcode.BRANCH
    # One structured store, fields in BLOCK_HEADER_DTYPE order.
    data[:64].view(BLOCK_HEADER_DTYPE)[0] = (
        BLOCK_MAGIC,
        BLOCK_VERSION,
        64,
        ordinal,
        target,
        total,
        command_offset,
        command_length,
        source_offset,
        body.shape[0] + 1,
        count,
        packet_count,
        kernarg_length,
        0,
        rodata_offset,
        rodata.shape[0],
        dispatch_count,
        indirect_count,
        0,
        terminator_opcode,
        0,
    )
    term_at = rodata_offset - record
    data[command_offset:term_at] = body.reshape(-1)
    data[term_at:rodata_offset] = _TERMINATORS[last]
    if target:
        data[term_at + _TARGET_AT : term_at + _TARGET_AT + 4].view("<u4")[0] = target
    data[rodata_offset : rodata_offset + rodata.shape[0]] = rodata
    data[rodata_offset + rodata.shape[0] : source_offset] = 0
    data[source_offset:total] = sources.view(np.uint8)
    return data
