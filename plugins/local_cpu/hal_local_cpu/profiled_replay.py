"""Per-dispatch timing of local CPU programs, used only while DISPATCH_EVENTS are captured.

A finalized ``LocalProgram`` runs a run of native records in one C call, which hides the
time of each dispatch. While a profiling session captures dispatch events, the device runs
programs through ``run_program_profiled`` instead: the program executes one record at a
time through the regular executor (``execute_program`` on single-record views of the same
immutable program), and each dispatch record is timed on the host clock (the local
devices' tick clock is host nanoseconds). Views, dispatch facts and the capture-filter
decision are computed once per program per session (``ProgramViews``); executable and
function metadata are recorded the first time a program is seen.

Thread-safety: the cache is a plain dict (GIL-atomic get/set); two threads that build the
same entry at once both get a valid one and the last store wins. With profiling off
nothing here runs.
"""

from __future__ import annotations

import contextlib
from typing import Any

from hal_core.profiling import FunctionMetadata, host_time_ns

from .command_buffer import LocalProgram
from .program_execution import execute_program
from .program_records import (
    OP_DISPATCH,
    OP_IREE_DISPATCH,
    OP_PYDISPATCH,
    SEG_NATIVE,
    command_index,
)

__all__ = ["ProgramViews", "run_program_profiled"]


def _executable_of(program: LocalProgram, rec: Any) -> tuple[Any, int]:
    ordinal = int(rec[14])
    if int(rec[0]) == OP_IREE_DISPATCH:
        # Word 14 is the export's hal_iree_export_t.
        for be in program.executables:
            if be.record_op == OP_IREE_DISPATCH and ordinal in be.export_ptrs:
                return be, be.export_ptrs.index(ordinal)
        return None, 0
    if int(rec[0]) == OP_DISPATCH:
        ptr = int(rec[1])
        for be in program.executables:
            if be.is_native and ordinal < len(be.fn_ptrs) and be.fn_ptrs[ordinal] == ptr:
                return be, ordinal
    else:
        fn = program.py_fns[int(rec[1])][0]
        for be in program.executables:
            if not be.is_native and ordinal < len(be.fns) and be.fns[ordinal] is fn:
                return be, ordinal
    return None, ordinal


def _view(program: LocalProgram, segment: tuple) -> LocalProgram:
    view = object.__new__(LocalProgram)
    for name in LocalProgram.__slots__:
        with contextlib.suppress(AttributeError):  # a slot left unset for this program
            setattr(view, name, getattr(program, name))
    view.segments = (segment,)
    return view


class ProgramViews:
    """Single-record views of one program and, per dispatch record, the facts its
    dispatch event carries (None for records not timed: transfers and dispatches the
    capture filter excludes)."""

    __slots__ = ("program", "steps")

    def __init__(
        self, program: LocalProgram, session: Any, queue: int, command_buffer_id: int
    ) -> None:
        self.program = program  # keeps the id() key valid for the session
        flt = session.capture_filter
        queue_ok = flt.matches_queue(session.device_ordinal, queue)
        steps = []
        for kind, begin, end in program.segments:
            ranges = (
                [(i, i + 1) for i in range(begin, end)] if kind == SEG_NATIVE else [(begin, end)]
            )
            for b, e in ranges:
                facts = None
                rec = program.records[b]
                if (
                    queue_ok
                    and e == b + 1
                    and int(rec[0]) in (OP_DISPATCH, OP_PYDISPATCH, OP_IREE_DISPATCH)
                ):
                    facts = self._facts(program, session, b, rec, command_buffer_id)
                steps.append((_view(program, (kind, b, e)), facts))
        self.steps = tuple(steps)

    @staticmethod
    def _facts(program: LocalProgram, session: Any, index: int, rec: Any, cb_id: int) -> Any:
        be, ordinal = _executable_of(program, rec)
        if be is None:
            return None
        info = be.functions[ordinal]
        command = command_index(program, index)
        flt = session.capture_filter
        if not (flt.matches_function(info.name) and flt.matches_command(cb_id, command)):
            return None
        exe_id = id(be)
        session.record_executable(
            exe_id,
            getattr(be, "path", None) or type(be).__name__,
            [
                FunctionMetadata(
                    i, f.name, f.binding_count, f.constant_count, tuple(f.workgroup_size)
                )
                for i, f in enumerate(be.functions)
            ],
        )
        # Indirect workgroup counts live in a buffer read at run time: recorded as 0.
        counts = (0, 0, 0) if int(rec[5]) >= 0 else (int(rec[2]), int(rec[3]), int(rec[4]))
        return (exe_id, command, ordinal, counts, (int(rec[11]), int(rec[12]), int(rec[13])))


def run_program_profiled(
    session: Any,
    program: LocalProgram,
    table: tuple,
    workers: Any,
    queue: int,
    submission_id: int,
    command_buffer_id: int,
    cache: dict,
) -> None:
    """Execute ``program`` like ``execute_program`` and record one dispatch event per
    dispatch record. Raises what ``execute_program`` raises; records of the dispatches
    that completed before a failure are kept."""
    key = (id(program), queue)  # the capture filter may select by queue
    views = cache.get(key)
    if views is None or views.program is not program:
        views = ProgramViews(program, session, queue, command_buffer_id)
        cache[key] = views
    record = session.record_dispatch
    for view, facts in views.steps:
        if facts is None:
            execute_program(view, table, workers)
            continue
        t0 = host_time_ns()
        execute_program(view, table, workers)
        t1 = host_time_ns()
        exe_id, command, ordinal, counts, size = facts
        record(
            queue,
            submission_id,
            command_buffer_id,
            exe_id,
            command,
            ordinal,
            counts,
            size,
            t0,
            t1,
        )
