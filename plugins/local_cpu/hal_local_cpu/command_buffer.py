"""Local CPU command buffers: the compact replay form and its executor.

``finalize`` turns a recording (``hal_core.CommandBuffer.commands``) into a ``LocalProgram``
once, at ``end()``: an int64 array of 16-word records (one per fill/copy/update/dispatch;
barriers and debug groups vanish because commands run in order), three binding arrays,
arenas for constants and update bytes, and a short list of *segments*. Every buffer is
named by an index into a per-submission address table: slots ``0..capacity-1`` are the
binding-table slots, then one entry per distinct direct buffer. Records never change, so
one finalized program can run concurrently for several submissions.

Segments: a run of native records executes in ONE call into the compiled replay loop
(``replay.c``), so a reusable command buffer of N native dispatches costs one Python->C
transition per submission, not N Python objects. A dispatch with many workgroups on
local-task gets its own segment spread over the worker threads; a Python-kernel dispatch gets
its own segment run in Python. Without a C compiler, records are interpreted in Python
through cffi (slower, same results).

Invariants: programs are immutable after ``finalize``; ``execute`` allocates only the
address table (and none when the program has no binding slots and only static direct
buffers); addresses of buffers that may be deallocated (ASYNCHRONOUS placement) are
re-resolved at every execution, so a released buffer fails with FAILED_PRECONDITION instead
of touching freed memory.
"""

from __future__ import annotations

import weakref
from array import array
from typing import Any

import numpy as np

from hal_core import (
    WHOLE_BUFFER,
    Buffer,
    BufferRef,
    CommandBufferMode,
    DispatchFlags,
    InvalidArgumentError,
    OutOfRangeError,
    PlacementFlags,
    UnavailableError,
    UnimplementedError,
)
from hal_core.backend import (
    CMD_BARRIER,
    CMD_COPY,
    CMD_DISPATCH,
    CMD_FILL,
    CMD_UPDATE,
    buffer_root,
    buffer_storage,
)

from .executable_native import ffi, replay_library
from .program_records import (  # re-exported: the record layout
    OP_COPY,
    OP_DISPATCH,
    OP_FILL,
    OP_IREE_DISPATCH,
    OP_PYDISPATCH,
    OP_UPDATE,
    PARALLEL_MIN_WORKGROUPS,
    REC,
    SEG_NATIVE,
    SEG_PARALLEL,
    SEG_PYTHON,
)

__all__ = ["LocalProgram", "finalize"]

_ASYNC = PlacementFlags.ASYNCHRONOUS
_UNSUPPORTED_DISPATCH_FLAGS = int(
    DispatchFlags.CUSTOM_DIRECT_ARGUMENTS
    | DispatchFlags.DYNAMIC_INDIRECT_ARGUMENTS
    | DispatchFlags.STATIC_INDIRECT_ARGUMENTS
)
_UNRETAINED = int(CommandBufferMode.UNRETAINED)
_I64 = np.int64


class LocalProgram:
    """A finalized command buffer (or single queue dispatch). Immutable; thread-safe."""

    __slots__ = (
        "records",
        "bind_base",
        "bind_off",
        "bind_len",
        "capacity",
        "direct",
        "direct_weak",
        "dynamic_direct",
        "static_bases",
        "static_lens",
        "segments",
        "arenas",
        "executables",
        "py_fns",
        "command_ops",
        "slot_count",
        "native",
        "_ptrs",
        "_static_ptrs",
    )
    records: np.ndarray
    bind_base: np.ndarray
    bind_off: np.ndarray
    bind_len: np.ndarray
    capacity: int
    #: Direct buffers, or weak references to them when ``direct_weak``.
    direct: list[Any]
    direct_weak: bool
    dynamic_direct: list[int]
    static_bases: np.ndarray
    static_lens: np.ndarray
    segments: tuple[tuple[int, int, int], ...]
    #: Arrays the records point into (update bytes, constants, bindings), kept alive.
    arenas: list[Any]
    executables: tuple[Any, ...]
    py_fns: list[Any]
    command_ops: list[Any]
    slot_count: int
    native: bool
    _ptrs: tuple[Any, Any, Any, Any]
    _static_ptrs: tuple[Any, Any]

    def base_count(self) -> int:
        return self.capacity + len(self.direct)


def finalize(
    commands: list,
    mode: int,
    binding_capacity: int,
    parallel: bool,
) -> LocalProgram:
    """Build the replay form of ``commands`` (see the module docstring).

    INVALID_ARGUMENT for malformed commands an UNVALIDATED recording let through;
    OUT_OF_RANGE for a slot past ``binding_capacity``.
    """
    try:
        return _finalize(commands, mode, binding_capacity, parallel)
    except (AttributeError, TypeError, IndexError, KeyError) as exc:
        raise InvalidArgumentError(
            f"the command buffer holds a malformed command ({type(exc).__name__}: {exc}); "
            "record without UNVALIDATED to find which call passed it"
        ) from None


def _finalize(commands: list, mode: int, cap: int, parallel: bool) -> LocalProgram:
    try:
        lib = replay_library()
    except UnavailableError:
        lib = None
    index_of: dict[int, int] = {}
    direct: list[Any] = []
    # Records are assembled by numpy from what varies how often, so that the per-command
    # Python work is the least possible:
    # * a *template* per decoded command (dispatch facts: executable, function, config,
    #   constant count; or a whole transfer record);
    # * *runs* of records sharing a template and a constants object: (first record,
    #   template, constant-arena offset or -1), appended only when either changes;
    # * one binding-span index per record (the only per-dispatch column).
    templates: list[tuple] = []
    run_starts: list[int] = []
    run_templates: list[int] = []
    run_coffs: list[int] = []
    col_span: list[int] = []
    spans: list[tuple[int, int]] = [(0, 0)]  # span 0: no bindings (transfers)
    bind_base = array("q")
    bind_off = array("q")
    bind_len = array("q")
    const_chunks: list[bytes] = []
    const_offsets: dict[int, int] = {}
    const_total = 0
    update_chunks: list[bytes] = []
    update_templates: list[int] = []  # templates whose word 1 is an update-arena offset
    update_total = 0
    executables: dict[int, Any] = {}
    py_fns: list[Any] = []
    slot_hi = [0]
    # Facts recorded once per distinct (immutable) object: ids stay valid because
    # ``commands`` keeps every object alive while this runs.
    config_facts: dict[int, tuple] = {}
    binding_spans: dict[int, int] = {}

    def base_of(ref: Any) -> int:
        if ref.__class__ is BufferRef:
            b = ref.buffer
            if b is None:
                s = ref.slot
                if s >= cap:
                    raise OutOfRangeError(
                        f"binding-table slot {s} is past the command buffer's "
                        f"binding_capacity {cap}"
                    )
                if s >= slot_hi[0]:
                    slot_hi[0] = s + 1
                return s
        elif isinstance(ref, Buffer):
            b = ref
        else:
            raise InvalidArgumentError(
                f"a command references a {type(ref).__name__}; expected a Buffer or BufferRef"
            )
        i = index_of.get(id(b))
        if i is None:
            i = index_of[id(b)] = cap + len(direct)
            direct.append(b)
        return i

    def transfer(record: tuple) -> None:
        run_starts.append(len(col_span))
        run_templates.append(len(templates))
        run_coffs.append(-1)
        templates.append(record)
        col_span.append(0)

    add_span = col_span.append
    # ``last_*``: the facts of the open run (``last_exe`` is _RESTART when a transfer or a
    # change of constants closed it); ``dec_*``: the facts ``tidx`` was decoded from.
    last_exe: Any = None
    last_ord = -1
    last_cfg: Any = None
    last_nc = -1
    last_consts: Any = _RESTART
    dec_exe: Any = None
    dec_ord = dec_nc = -1
    dec_cfg: Any = None
    tidx = -1
    nc = 0
    coff = -1
    any_special = False
    for cmd in commands:
        op = cmd[0]
        if op == CMD_BARRIER:
            continue
        if op == CMD_DISPATCH:
            _, exe, ordinal, cfg, consts, bindings, flags = cmd
            if flags and flags & _UNSUPPORTED_DISPATCH_FLAGS:
                # Validation rejects these at record time; an UNVALIDATED recording
                # reaches here, and must not run them as ordinary dispatches.
                raise UnimplementedError(
                    f"dispatch flags {DispatchFlags(flags & _UNSUPPORTED_DISPATCH_FLAGS)!r} "
                    "are not implemented by the local CPU backend"
                )
            if consts is not last_consts:
                last_consts = consts
                last_exe = _RESTART
                nc = len(consts) >> 2
                coff = -1
                if nc:
                    known = const_offsets.get(id(consts))
                    if known is None:
                        coff = const_offsets[id(consts)] = const_total
                        const_chunks.append(consts)
                        const_total += len(consts)
                    else:
                        coff = known
            # (executable, function, config, constant count) repeat in chains: decode
            # them into a record template once, and open a new run only on a change.
            if exe is not last_exe or ordinal != last_ord or cfg is not last_cfg or nc != last_nc:
                last_exe, last_ord, last_cfg, last_nc = exe, ordinal, cfg, nc
                if exe is not dec_exe or ordinal != dec_ord or cfg is not dec_cfg or nc != dec_nc:
                    dec_exe, dec_ord, dec_cfg, dec_nc = exe, ordinal, cfg, nc
                    tidx = len(templates)
                    t = _dispatch_template(
                        exe, ordinal, cfg, nc, base_of, config_facts, executables, py_fns
                    )
                    templates.append(t)
                    # Decided once per template: does any record leave the native loop?
                    if not any_special and _leaves_native_loop(t, parallel):
                        any_special = True
                run_starts.append(len(col_span))
                run_templates.append(tidx)
                run_coffs.append(coff)
            span = binding_spans.get(id(bindings))
            if span is None:
                bstart = len(bind_base)
                for ref in bindings:
                    bind_base.append(base_of(ref))
                    if ref.__class__ is BufferRef:
                        bind_off.append(ref.offset)
                        n = ref.length
                        bind_len.append(-1 if n == WHOLE_BUFFER else n)
                    else:
                        bind_off.append(0)
                        bind_len.append(-1)
                span = binding_spans[id(bindings)] = len(spans)
                spans.append((bstart, len(bindings)))
            add_span(span)
            continue
        # A transfer is a run of its own: the next dispatch reopens its template's run.
        last_exe = _RESTART
        if op == CMD_FILL:
            ref, data = cmd[1], cmd[2]
            pattern = int.from_bytes(data, "little")
            transfer(
                (
                    OP_FILL,
                    base_of(ref),
                    ref.offset,
                    _ref_len(ref),
                    pattern,
                    len(data),
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ),
            )
        elif op == CMD_COPY:
            src, dst = cmd[1], cmd[2]
            transfer(
                (
                    OP_COPY,
                    base_of(src),
                    src.offset,
                    base_of(dst),
                    dst.offset,
                    _ref_len(src),
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ),
            )
        elif op == CMD_UPDATE:
            data, ref = cmd[1], cmd[2]
            update_templates.append(len(templates))
            update_chunks.append(data)
            transfer(
                (
                    OP_UPDATE,
                    update_total,
                    base_of(ref),
                    ref.offset,
                    len(data),
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ),
            )
            update_total += len(data)
        # barriers and debug groups need no record: commands already run in order.

    p = LocalProgram()
    arenas: list[Any] = []
    n = len(col_span)
    if n:
        table = np.array(templates, dtype=_I64)
        if update_chunks:
            update_arena = np.frombuffer(b"".join(update_chunks), dtype=np.uint8).copy()
            table[update_templates, 1] += update_arena.ctypes.data
            arenas.append(update_arena)
        nr = len(run_templates)
        run_table = table.take(
            run_templates if nr <= _FEW else np.fromiter(run_templates, np.intp, nr), axis=0
        )
        if const_chunks:
            const_arena = np.frombuffer(b"".join(const_chunks), dtype=np.uint8).copy()
            base = const_arena.ctypes.data
            if nr <= _FEW:
                for i, c in enumerate(run_coffs):
                    if c >= 0:
                        run_table[i, 7] = c + base
            else:
                coffs = np.fromiter(run_coffs, _I64, nr)
                has = coffs >= 0
                run_table[has, 7] = coffs[has] + base
            arenas.append(const_arena)
        recs = np.repeat(run_table, _run_lengths(run_starts, n), axis=0)
        if len(spans) > 1:
            col = np.fromiter(col_span, np.intp, n)
            recs[:, 9:11] = np.array(spans, dtype=_I64).take(col, axis=0)
    else:
        run_table = recs = np.zeros((0, REC), _I64)
    p.records = recs
    p.bind_base = _as_i64(bind_base)
    p.bind_off = _as_i64(bind_off)
    p.bind_len = _as_i64(bind_len)
    arenas.extend((bind_base, bind_off, bind_len))
    p.capacity = cap
    p.arenas = arenas
    p.executables = tuple(executables.values())
    p.py_fns = py_fns
    # Error messages name the failing *command*; records skip barriers and debug groups,
    # so keep what maps one to the other (op codes only when the caller's objects must
    # not be retained).
    unretained = bool(int(mode) & _UNRETAINED)
    if unretained:
        p.command_ops = [c[0] for c in commands]
    else:
        p.command_ops = commands
    p.slot_count = slot_hi[0]
    p.native = lib is not None

    # Direct buffers: strong references retain them (the command buffer's retention),
    # weak ones honour UNRETAINED (the caller keeps them alive).
    dynamic = []
    nd = len(direct)
    static_bases = np.zeros(cap + nd, dtype=_I64)
    static_lens = np.zeros(cap + nd, dtype=_I64)
    for k, b in enumerate(direct):
        root = buffer_root(b)
        if unretained or root.placement_flags & _ASYNC or not b.is_committed:
            dynamic.append(k)
        else:
            static_bases[cap + k] = buffer_storage(b).address + b.byte_offset
            static_lens[cap + k] = b.byte_length
    p.direct_weak = unretained
    p.direct = [weakref.ref(b) for b in direct] if unretained else direct
    p.dynamic_direct = dynamic
    p.static_bases = static_bases
    p.static_lens = static_lens
    p._ptrs = (
        _p64(recs),
        _p64(p.bind_base),
        _p64(p.bind_off),
        _p64(p.bind_len),
    )
    p._static_ptrs = (_p64(static_bases), _p64(static_lens))
    p.segments = _segments(recs, any_special, lib is not None, parallel)
    return p


_RESTART = object()
"""Never a command's object: forces the next dispatch to open a new run."""


_FEW = 32
"""Up to this many runs, plain Python beats numpy's per-call cost."""


def _run_lengths(starts: list[int], n: int) -> Any:
    if len(starts) <= _FEW:
        ends = starts[1:]
        ends.append(n)
        return [e - b for b, e in zip(starts, ends)]
    return np.diff(np.fromiter(starts, np.intp, len(starts)), append=n)


def _dispatch_template(
    exe: Any,
    ordinal: int,
    cfg: Any,
    nc: int,
    base_of: Any,
    config_facts: dict,
    executables: dict,
    py_fns: list,
) -> tuple:
    be = exe.backend
    if id(be) not in executables:
        executables[id(be)] = be
    facts = config_facts.get(id(cfg))
    if facts is None:
        ind = cfg.workgroup_count_ref
        if ind is None:
            cx, cy, cz = cfg.workgroup_count
            facts = (cx, cy, cz, -1, 0)
        else:
            facts = (0, 0, 0, base_of(ind), ind.offset)
        config_facts[id(cfg)] = facts
    if not 0 <= ordinal < len(be.functions):
        raise OutOfRangeError(f"function ordinal {ordinal} is outside 0..{len(be.functions) - 1}")
    info = be.functions[ordinal]
    if nc < info.constant_count:
        # UNVALIDATED recordings reach here: never let a kernel read past its constants.
        raise InvalidArgumentError(
            f"function {info.name!r} takes {info.constant_count} constants; a dispatch passed {nc}"
        )
    ws = cfg.workgroup_size
    if ws == (0, 0, 0):
        ws = info.workgroup_size
    code = be.record_op
    word14 = ordinal
    if code == OP_PYDISPATCH:
        # One entry per (function) decode; several records may share it.
        fn = len(py_fns)
        py_fns.append((be.fns[ordinal], be.functions[ordinal].name))
    else:
        fn = be.fn_ptrs[ordinal]
        if code == OP_IREE_DISPATCH:
            word14 = be.export_ptrs[ordinal]
    cx, cy, cz, ib, io = facts
    # Word 14: the ordinal (IREE dispatches: the export's hal_iree_export_t).
    # Word 15: the bindings the function needs, checked per record by the replay loop.
    return (
        code,
        fn,
        cx,
        cy,
        cz,
        ib,
        io,
        0,
        nc,
        0,
        0,
        ws[0],
        ws[1],
        ws[2],
        word14,
        info.binding_count,
    )


def _as_i64(a: array) -> np.ndarray:
    # Never hand out a zero-length array's pointer: keep one element.
    return np.frombuffer(a, dtype=_I64) if len(a) else np.zeros(1, _I64)


def _ref_len(ref: Any) -> int:
    if ref.__class__ is not BufferRef:
        return ref.byte_length
    n = ref.length
    if n == WHOLE_BUFFER:
        if ref.buffer is None:
            return -1
        return ref.buffer.byte_length - ref.offset
    return n


def _p64(arr: np.ndarray) -> Any:
    # from_buffer keeps ``arr`` alive and is far cheaper than ``arr.ctypes``.
    # numpy's stubs give ndarray the buffer protocol (``__buffer__``) only from Python 3.12.
    return ffi.from_buffer("int64_t[]", arr)  # type: ignore[call-overload]


def _segments(recs: np.ndarray, any_special: bool, native: bool, parallel: bool) -> tuple:
    """Segments of ``recs``. ``any_special``: whether some record needs a segment of its
    own (decided per template while decoding), so the common case scans no records."""
    n = len(recs)
    if not n:
        return ()
    if not native:
        return tuple((SEG_PYTHON, i, i + 1) for i in range(n))
    if not any_special:
        return ((SEG_NATIVE, 0, n),)
    ops = recs[:, 0]
    special = _special(recs, parallel)
    out = []
    start = 0
    for i in np.flatnonzero(special).tolist():
        if start < i:
            out.append((SEG_NATIVE, start, i))
        out.append((SEG_PYTHON if ops[i] == OP_PYDISPATCH else SEG_PARALLEL, i, i + 1))
        start = i + 1
    if start < n:
        out.append((SEG_NATIVE, start, n))
    return tuple(out)


def _leaves_native_loop(record: tuple, parallel: bool) -> bool:
    """Whether ``record`` runs outside the native loop: a Python kernel, or on a parallel
    device an indirect or many-workgroup dispatch (``_special`` is the vector form)."""
    op = record[0]
    if op == OP_PYDISPATCH:
        return True
    return (
        parallel
        and (op == OP_DISPATCH or op == OP_IREE_DISPATCH)
        and (record[5] >= 0 or record[2] * record[3] * record[4] >= PARALLEL_MIN_WORKGROUPS)
    )


def _special(recs: np.ndarray, parallel: bool) -> np.ndarray:
    """``_leaves_native_loop`` of every record."""
    ops = recs[:, 0]
    special = ops == OP_PYDISPATCH
    if parallel:
        counts = recs[:, 2] * recs[:, 3] * recs[:, 4]
        dispatch = (ops == OP_DISPATCH) | (ops == OP_IREE_DISPATCH)
        special |= dispatch & ((recs[:, 5] >= 0) | (counts >= PARALLEL_MIN_WORKGROUPS))
    return special
