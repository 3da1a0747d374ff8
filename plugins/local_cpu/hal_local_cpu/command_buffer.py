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
    MAX_RANGE_END,
    buffer_root,
    buffer_storage,
)

from .executable_native import replay_library
from .inline_rule import inline_allowed
from .program_arrays import (
    _FEW,
    _I64,
    _NO_BINDINGS,
    _NO_BINDINGS_PTRS,
    _as_i64,
    _p64,
    _place_constants,
    _run_lengths,
)
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
from .program_segments import dispatch_template, leaves_native_loop, segments_of

__all__ = [
    "LocalProgram",
    "finalize",
    # the record layout, re-exported from program_records
    "OP_COPY",
    "OP_DISPATCH",
    "OP_FILL",
    "OP_IREE_DISPATCH",
    "OP_PYDISPATCH",
    "OP_UPDATE",
    "PARALLEL_MIN_WORKGROUPS",
    "REC",
    "SEG_NATIVE",
    "SEG_PARALLEL",
    "SEG_PYTHON",
]

_ASYNC = int(PlacementFlags.ASYNCHRONOUS)
_UNSUPPORTED_DISPATCH_FLAGS = int(
    DispatchFlags.CUSTOM_DIRECT_ARGUMENTS
    | DispatchFlags.DYNAMIC_INDIRECT_ARGUMENTS
    | DispatchFlags.STATIC_INDIRECT_ARGUMENTS
)
_UNRETAINED = int(CommandBufferMode.UNRETAINED)


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
        "static_table",
        "segments",
        "arenas",
        "executables",
        "py_fns",
        "command_ops",
        "slot_count",
        "native",
        "inline",
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
    #: ``static_bases``, ``static_lens`` and an error slot in one array: what a submission
    #: that resolves slots or movable buffers copies and fills (``program_execution``).
    static_table: np.ndarray
    segments: tuple[tuple[int, int, int], ...]
    #: Arrays the records point into (update bytes, constants, bindings), kept alive.
    arenas: list[Any]
    executables: tuple[Any, ...]
    py_fns: list[Any]
    command_ops: list[Any]
    slot_count: int
    native: bool
    #: Whether a submission may run on the thread that readied it (see ``inline_rule``).
    inline: bool
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
    OUT_OF_RANGE for a slot past ``binding_capacity`` or an offset or length that no
    record can hold (past ``MAX_RANGE_END``: no buffer is that large).
    """
    try:
        return _finalize(commands, mode, binding_capacity, parallel)
    except OverflowError:
        # Records are int64: an UNVALIDATED recording may carry a range validation refuses.
        raise OutOfRangeError(
            f"a command's offset or length reaches past byte {MAX_RANGE_END}, beyond any "
            "buffer; record without UNVALIDATED to find which call passed it"
        ) from None
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
    if len(commands) <= _FEW_TRANSFERS:
        small = _transfer_program(commands, mode, cap, lib is not None)
        if small is not None:
            return small
    b = _ProgramBuilder(cap, parallel)
    b.record(commands)
    p = LocalProgram()
    b.fill_records(p)
    b.fill_direct(p, commands, mode)
    p.capacity = cap
    p.native = lib is not None
    p.segments = segments_of(p.records, b.any_special, lib is not None, parallel)
    p.inline = inline_allowed(p, b.transfer_bytes, b.any_dispatch, int(mode))
    return p


_FEW_TRANSFERS = 8
"""Recordings of at most this many commands, all fills, copies, barriers or debug groups
(a readback, a staging upload), take ``_transfer_program``: the records are the commands
in order, so the builder's templates, runs and binding spans would be pure overhead."""


def _transfer_program(commands: list, mode: int, cap: int, native: bool) -> LocalProgram | None:
    """The program of a short transfer-only recording, or None when ``commands`` holds
    anything else (a dispatch or an update: the builder's path). Same records, segments
    and inline decision as the builder would produce."""
    index_of: dict[int, int] = {}
    direct: list[Any] = []
    records: list[tuple] = []
    slot_hi = 0
    transfer_bytes = 0

    def base_of(ref: Any) -> int:
        nonlocal slot_hi
        if ref.__class__ is BufferRef:
            b = ref.buffer
            if b is None:
                s = ref.slot
                if s >= cap:
                    raise OutOfRangeError(
                        f"binding-table slot {s} is past the command buffer's "
                        f"binding_capacity {cap}"
                    )
                if s >= slot_hi:
                    slot_hi = s + 1
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

    for cmd in commands:
        op = cmd[0]
        if op == CMD_COPY:
            dst, src = cmd[1], cmd[2]
            sbase = base_of(src)
            dbase = base_of(dst)
            n = _ref_len(src)
            records.append((OP_COPY, sbase, src.offset, dbase, dst.offset, n) + _ZEROS10)
        elif op == CMD_FILL:
            ref, data = cmd[1], cmd[2]
            pattern = int.from_bytes(data, "little")
            base = base_of(ref)
            n = _ref_len(ref)
            records.append((OP_FILL, base, ref.offset, n, pattern, len(data)) + _ZEROS10)
        elif op == CMD_DISPATCH or op == CMD_UPDATE:
            return None
        else:
            continue  # barriers and debug groups: commands already run in order
        if n < 0 or transfer_bytes < 0:
            transfer_bytes = -1
        else:
            transfer_bytes += n
    p = LocalProgram()
    recs = np.array(records, dtype=_I64) if records else np.zeros((0, REC), _I64)
    p.records = recs
    p.bind_base = p.bind_off = p.bind_len = _NO_BINDINGS
    p.arenas = []
    p.executables = ()
    p.py_fns = []
    p.slot_count = slot_hi
    p._ptrs = (_p64(recs),) + _NO_BINDINGS_PTRS
    _fill_direct(p, direct, cap, commands, mode)
    p.capacity = cap
    p.native = native
    p.segments = segments_of(recs, False, native, False)
    p.inline = inline_allowed(p, transfer_bytes, False, int(mode))
    return p


class _ProgramBuilder:
    """Assembles one ``LocalProgram`` from a recording; used once, by ``_finalize``.

    Records are assembled by numpy from what varies how often, so that the per-command
    Python work is the least possible:
    * a *template* per decoded command (dispatch facts: executable, function, config,
      constant count; or a whole transfer record);
    * *runs* of records sharing a template and a constants object: (first record,
      template, constant-arena offset or -1), appended only when either changes;
    * one binding-span index per record (the only per-dispatch column).
    """

    # Slots: the record loop reads the open run's facts for every command, and an instance
    # dict of this many attributes is past what CPython shares between instances, which
    # makes every such read a dict lookup instead of a fixed offset.
    # fmt: off
    __slots__ = (
        "cap", "parallel", "index_of", "direct", "templates", "run_starts", "run_templates",
        "run_coffs", "col_span", "spans", "bind_base", "bind_off", "bind_len",
        "const_chunks", "const_offsets", "const_total", "update_chunks", "update_templates",
        "update_total", "executables", "py_fns", "slot_hi", "config_facts", "binding_spans",
        "last_exe", "last_ord", "last_cfg", "last_nc", "last_consts", "dec_exe", "dec_ord",
        "dec_nc", "dec_cfg", "tidx", "nc", "coff", "any_special", "any_dispatch",
        "transfer_bytes",
    )
    # fmt: on

    def __init__(self, cap: int, parallel: bool) -> None:
        self.cap = cap
        self.parallel = parallel
        self.index_of: dict[int, int] = {}
        self.direct: list[Any] = []
        self.templates: list[tuple] = []
        self.run_starts: list[int] = []
        self.run_templates: list[int] = []
        self.run_coffs: list[int] = []
        self.col_span: list[int] = []
        self.spans: list[tuple[int, int]] = [(0, 0)]  # span 0: no bindings (transfers)
        self.bind_base = array("q")
        self.bind_off = array("q")
        self.bind_len = array("q")
        self.const_chunks: list[bytes] = []
        self.const_offsets: dict[int, int] = {}
        self.const_total = 0
        self.update_chunks: list[bytes] = []
        self.update_templates: list[int] = []  # templates whose word 1 is an update offset
        self.update_total = 0
        self.executables: dict[int, Any] = {}
        self.py_fns: list[Any] = []
        self.slot_hi = 0
        # Facts recorded once per distinct (immutable) object: ids stay valid because
        # ``commands`` keeps every object alive while this runs.
        self.config_facts: dict[int, tuple] = {}
        self.binding_spans: dict[int, int] = {}
        # ``last_*``: the facts of the open run (``last_exe`` is _RESTART when a transfer or
        # a change of constants closed it); ``dec_*``: the facts ``tidx`` was decoded from.
        self.last_exe: Any = None
        self.last_ord = -1
        self.last_cfg: Any = None
        self.last_nc = -1
        self.last_consts: Any = _RESTART
        self.dec_exe: Any = None
        self.dec_ord = -1
        self.dec_nc = -1
        self.dec_cfg: Any = None
        self.tidx = -1
        self.nc = 0
        self.coff = -1
        self.any_special = False
        # For the inline rule: whether any dispatch was recorded, and the transfers' bytes
        # (-1 once a length is only known at submit: a whole binding-table slot).
        self.any_dispatch = False
        self.transfer_bytes = 0

    def base_of(self, ref: Any) -> int:
        if ref.__class__ is BufferRef:
            b = ref.buffer
            if b is None:
                return self._slot(ref.slot)
        elif isinstance(ref, Buffer):
            b = ref
        else:
            raise InvalidArgumentError(
                f"a command references a {type(ref).__name__}; expected a Buffer or BufferRef"
            )
        i = self.index_of.get(id(b))
        if i is None:
            i = self.index_of[id(b)] = self.cap + len(self.direct)
            self.direct.append(b)
        return i

    def _slot(self, s: int) -> int:
        if s >= self.cap:
            raise OutOfRangeError(
                f"binding-table slot {s} is past the command buffer's binding_capacity {self.cap}"
            )
        if s >= self.slot_hi:
            self.slot_hi = s + 1
        return s

    def record(self, commands: list) -> None:
        dispatch = self.dispatch
        spans = self.binding_spans
        add_span = self.col_span.append
        # The open run's facts, as locals while the loop runs (``dispatch`` and transfers
        # change them: reread after each).
        last_exe, last_ord, last_cfg, last_consts = self._run_facts()
        for cmd in commands:
            op = cmd[0]
            if op == CMD_BARRIER:
                continue
            if op == CMD_DISPATCH:
                # A chain's next link (the run's executable, function, config and constants,
                # no flags, bindings seen before) only adds its span: what ``dispatch`` would
                # do, without its frame. Anything else goes through ``dispatch``.
                _, exe, ordinal, cfg, consts, bindings, flags = cmd
                if (
                    exe is last_exe
                    and consts is last_consts
                    and cfg is last_cfg
                    and ordinal == last_ord
                    and not flags
                ):
                    span = spans.get(id(bindings))
                    if span is not None:
                        add_span(span)
                        continue
                self.any_dispatch = True
                dispatch(cmd)
                last_exe, last_ord, last_cfg, last_consts = self._run_facts()
                continue
            # A transfer is a run of its own: the next dispatch reopens its template's run.
            self.last_exe = last_exe = _RESTART
            if op == CMD_FILL:
                self.fill(cmd)
            elif op == CMD_COPY:
                self.copy(cmd)
            elif op == CMD_UPDATE:
                self.update(cmd)
            # barriers and debug groups need no record: commands already run in order.

    def _run_facts(self) -> tuple[Any, int, Any, Any]:
        """The open run's executable, function, config and constants."""
        return self.last_exe, self.last_ord, self.last_cfg, self.last_consts

    def dispatch(self, cmd: tuple) -> None:
        _, exe, ordinal, cfg, consts, bindings, flags = cmd
        if flags and flags & _UNSUPPORTED_DISPATCH_FLAGS:
            # Validation rejects these at record time; an UNVALIDATED recording
            # reaches here, and must not run them as ordinary dispatches.
            raise UnimplementedError(
                f"dispatch flags {DispatchFlags(flags & _UNSUPPORTED_DISPATCH_FLAGS)!r} "
                "are not implemented by the local CPU backend"
            )
        if consts is not self.last_consts:
            self._constants(consts)
        # (executable, function, config, constant count) repeat in chains: decode
        # them into a record template once, and open a new run only on a change.
        nc = self.nc
        if (
            exe is not self.last_exe
            or ordinal != self.last_ord
            or cfg is not self.last_cfg
            or nc != self.last_nc
        ):
            self._open_run(exe, ordinal, cfg, nc)
        span = self.binding_spans.get(id(bindings))
        if span is None:
            span = self._add_span(bindings)
        self.col_span.append(span)

    def _constants(self, consts: Any) -> None:
        self.last_consts = consts
        self.last_exe = _RESTART
        nc = self.nc = len(consts) >> 2
        self.coff = -1
        if nc:
            known = self.const_offsets.get(id(consts))
            if known is None:
                self.coff = self.const_offsets[id(consts)] = self.const_total
                self.const_chunks.append(consts)
                self.const_total += len(consts)
            else:
                self.coff = known

    def _open_run(self, exe: Any, ordinal: int, cfg: Any, nc: int) -> None:
        self.last_exe, self.last_ord, self.last_cfg, self.last_nc = exe, ordinal, cfg, nc
        if (
            exe is not self.dec_exe
            or ordinal != self.dec_ord
            or cfg is not self.dec_cfg
            or nc != self.dec_nc
        ):
            self.dec_exe, self.dec_ord, self.dec_cfg, self.dec_nc = exe, ordinal, cfg, nc
            self.tidx = len(self.templates)
            t = dispatch_template(
                exe,
                ordinal,
                cfg,
                nc,
                self.base_of,
                self.config_facts,
                self.executables,
                self.py_fns,
            )
            self.templates.append(t)
            # Decided once per template: does any record leave the native loop?
            if not self.any_special and leaves_native_loop(t, self.parallel):
                self.any_special = True
        self.run_starts.append(len(self.col_span))
        self.run_templates.append(self.tidx)
        self.run_coffs.append(self.coff)

    def _add_span(self, bindings: Any) -> int:
        bstart = len(self.bind_base)
        for ref in bindings:
            self.bind_base.append(self.base_of(ref))
            if ref.__class__ is BufferRef:
                self.bind_off.append(ref.offset)
                n = ref.length
                self.bind_len.append(-1 if n == WHOLE_BUFFER else n)
            else:
                self.bind_off.append(0)
                self.bind_len.append(-1)
        span = self.binding_spans[id(bindings)] = len(self.spans)
        self.spans.append((bstart, len(bindings)))
        return span

    def _transfer(self, record: tuple, length: int) -> None:
        if length < 0 or self.transfer_bytes < 0:
            self.transfer_bytes = -1
        else:
            self.transfer_bytes += length
        self.run_starts.append(len(self.col_span))
        self.run_templates.append(len(self.templates))
        self.run_coffs.append(-1)
        self.templates.append(record)
        self.col_span.append(0)

    def fill(self, cmd: tuple) -> None:
        ref, data = cmd[1], cmd[2]
        pattern = int.from_bytes(data, "little")
        base = self.base_of(ref)
        n = _ref_len(ref)
        self._transfer((OP_FILL, base, ref.offset, n, pattern, len(data)) + _ZEROS10, n)

    def copy(self, cmd: tuple) -> None:
        dst, src = cmd[1], cmd[2]
        sbase = self.base_of(src)
        soff = src.offset
        dbase = self.base_of(dst)
        n = _ref_len(src)
        self._transfer((OP_COPY, sbase, soff, dbase, dst.offset, n) + _ZEROS10, n)

    def update(self, cmd: tuple) -> None:
        ref, data = cmd[1], cmd[2]
        self.update_templates.append(len(self.templates))
        self.update_chunks.append(data)
        base = self.base_of(ref)
        n = len(data)
        self._transfer((OP_UPDATE, self.update_total, base, ref.offset, n) + _ZEROS11, n)
        self.update_total += len(data)

    def fill_records(self, p: LocalProgram) -> None:
        arenas: list[Any] = []
        n = len(self.col_span)
        if n:
            recs = self._records(n, arenas)
        else:
            recs = np.zeros((0, REC), _I64)
        p.records = recs
        if self.bind_base:
            p.bind_base = _as_i64(self.bind_base)
            p.bind_off = _as_i64(self.bind_off)
            p.bind_len = _as_i64(self.bind_len)
            arenas.extend((self.bind_base, self.bind_off, self.bind_len))
            bptrs = (_p64(p.bind_base), _p64(p.bind_off), _p64(p.bind_len))
        else:
            # No bindings (transfers only): every such program shares one read-only
            # placeholder and its pointer instead of three fresh arrays.
            p.bind_base = p.bind_off = p.bind_len = _NO_BINDINGS
            bptrs = _NO_BINDINGS_PTRS
        p.arenas = arenas
        p.executables = tuple(self.executables.values())
        p.py_fns = self.py_fns
        p.slot_count = self.slot_hi
        p._ptrs = (_p64(recs),) + bptrs

    def _records(self, n: int, arenas: list[Any]) -> np.ndarray:
        table = np.array(self.templates, dtype=_I64)
        if self.update_chunks:
            update_arena = np.frombuffer(b"".join(self.update_chunks), dtype=np.uint8).copy()
            table[self.update_templates, 1] += update_arena.ctypes.data
            arenas.append(update_arena)
        if not self.any_dispatch:
            # Transfers only: each is a run of one record in order, so the template
            # table is already the records.
            return table
        run_templates = self.run_templates
        nr = len(run_templates)
        run_table = table.take(
            run_templates if nr <= _FEW else np.fromiter(run_templates, np.intp, nr), axis=0
        )
        if self.const_chunks:
            const_arena = np.frombuffer(b"".join(self.const_chunks), dtype=np.uint8).copy()
            _place_constants(run_table, self.run_coffs, const_arena.ctypes.data)
            arenas.append(const_arena)
        recs = np.repeat(run_table, _run_lengths(self.run_starts, n), axis=0)
        if len(self.spans) > 1:
            col = np.fromiter(self.col_span, np.intp, n)
            recs[:, 9:11] = np.array(self.spans, dtype=_I64).take(col, axis=0)
        return recs

    def fill_direct(self, p: LocalProgram, commands: list, mode: int) -> None:
        _fill_direct(p, self.direct, self.cap, commands, mode)


def _fill_direct(p: LocalProgram, direct: list[Any], cap: int, commands: list, mode: int) -> None:
    """Set ``p``'s direct buffers, command ops and static address table."""
    # Error messages name the failing *command*; records skip barriers and debug groups,
    # so keep what maps one to the other (op codes only when the caller's objects must
    # not be retained).
    unretained = bool(int(mode) & _UNRETAINED)
    if unretained:
        p.command_ops = [c[0] for c in commands]
    else:
        p.command_ops = commands
    # Direct buffers: strong references retain them (the command buffer's retention),
    # weak ones honour UNRETAINED (the caller keeps them alive).
    dynamic = []
    m = cap + len(direct)
    # The address table [bases | lens | error slot] as one list, then one array whose
    # halves are the static bases and lengths (one numpy call, not three).
    table = [0] * (2 * m + 1)
    for k, b in enumerate(direct):
        root = buffer_root(b)
        if unretained or int(root.placement_flags) & _ASYNC or not b.is_committed:
            dynamic.append(k)
        else:
            table[cap + k] = buffer_storage(b).address + b.byte_offset
            table[m + cap + k] = b.byte_length
    p.direct_weak = unretained
    p.direct = [weakref.ref(b) for b in direct] if unretained else direct
    p.dynamic_direct = dynamic
    static_table = np.array(table, dtype=_I64)
    p.static_table = static_table
    p.static_bases = static_table[:m]
    p.static_lens = static_table[m : 2 * m]
    # Submissions only read the shared table (they copy it to fill slots).
    bptr = _p64(static_table)
    p._static_ptrs = (bptr, bptr + m)


_ZEROS10 = (0,) * 10
_ZEROS11 = (0,) * 11


_RESTART = object()
"""Never a command's object: forces the next dispatch to open a new run."""


def _ref_len(ref: Any) -> int:
    if ref.__class__ is not BufferRef:
        return ref.byte_length
    n = ref.length
    if n == WHOLE_BUFFER:
        if ref.buffer is None:
            return -1
        return ref.buffer.byte_length - ref.offset
    return n
