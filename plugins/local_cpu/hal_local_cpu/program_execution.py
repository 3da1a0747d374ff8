"""Running a finalized local CPU program (``command_buffer.LocalProgram``) for one
submission: the per-submission address table (binding-table slots, then direct buffers,
re-resolved when their memory may move), then each segment - one call into the compiled
replay loop for a run of native records, a dispatch spread over the worker threads, or
the Python interpreter. Programs are immutable; any number of submissions may run one
concurrently.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal_core import (
    WHOLE_BUFFER,
    HalError,
    OutOfRangeError,
    StatusCode,
    error_for,
)
from hal_core.backend import bound_range, buffer_storage

from .command_buffer import LocalProgram
from .executable_native import ffi, replay_library
from .interpreter import interpret
from .program_arrays import _p64
from .program_records import (  # re-exported: the record layout
    OP_DISPATCH,
    OP_IREE_DISPATCH,
    OP_NAMES,
    PARALLEL_MIN_WORKGROUPS,
    REC,
    SEG_NATIVE,
    SEG_PARALLEL,
    command_index,
)

__all__ = ["execute_program"]


def execute_program(program: LocalProgram, table: tuple, workers: Any) -> None:
    """Run ``program`` against binding ``table`` (a tuple of ``BufferBinding`` or None).
    Raises the HalError that fails the submission."""
    segments = program.segments
    if not segments:
        return
    cap = program.capacity
    if cap == 0 and not program.dynamic_direct:
        bases = program.static_bases
        lens = program.static_lens
        bptr, lptr = program._static_ptrs
        err = None
    else:
        # One copy of the address table per submission, [bases | lens | error index], and
        # one pointer into it: the lengths and the error slot are offsets from it.
        n = len(program.static_bases)
        work = program.static_table.copy()
        _fill_slots(program, table, work, n)
        _fill_dynamic(program, work, n)
        bptr = _p64(work)
        lptr = bptr + n
        err = bptr + 2 * n
        bases = work[:n]
        lens = work[n : 2 * n]
    rptr, bbp, bop, blp = program._ptrs
    # Native segments exist only in a native program, so ``lib`` is set wherever it is used.
    lib: Any = replay_library() if program.native else None
    for kind, begin, end in segments:
        if kind == SEG_NATIVE:
            if err is None:
                err = ffi.new("int64_t[1]")  # static tables are shared: a slot of our own
            rc = lib.hal_replay_run(rptr, begin, end, bptr, lptr, bbp, bop, blp, err)
            if rc:
                raise _record_error(program, int(err[0]), rc)
        elif kind == SEG_PARALLEL:
            _run_parallel(program, lib, begin, bptr, lptr, workers)
        else:
            interpret(program, begin, bases, lens)


def _fill_slots(program: LocalProgram, table: tuple, work: np.ndarray, n: int) -> None:
    """Write the bound slots' addresses into ``work[s]`` and lengths into ``work[n + s]``."""
    need = program.slot_count
    if len(table) < need:
        raise OutOfRangeError(
            f"binding table has {len(table)} entries; the command buffer uses {need}"
        )
    # Only the slots the recording uses: unused entries may hold anything. The range
    # check is ``bound_range``'s, inline; it raises its error when a range does not fit.
    for s in range(need):
        binding = table[s]
        if binding is None:
            continue
        buffer = binding.buffer
        if buffer is None:
            continue
        offset = binding.offset
        blen = binding.length
        size = buffer.byte_length
        if blen == WHOLE_BUFFER:
            blen = size - offset
        if blen < 0 or offset + blen > size:
            bound_range(table, s)  # raises OUT_OF_RANGE naming the slot
        work[s] = buffer_storage(buffer).address + buffer.byte_offset + offset
        work[n + s] = blen


def _fill_dynamic(program: LocalProgram, work: np.ndarray, n: int) -> None:
    """Resolve the direct buffers whose memory may move (``work`` as in ``_fill_slots``)."""
    cap = program.capacity
    weak = program.direct_weak
    for k in program.dynamic_direct:
        b = program.direct[k]
        if weak:
            b = b()
            if b is None:
                raise error_for(
                    StatusCode.FAILED_PRECONDITION,
                    "a buffer recorded in an UNRETAINED command buffer was released before "
                    "the command buffer ran; keep it alive until the submission completes",
                )
        work[cap + k] = buffer_storage(b).address + b.byte_offset
        work[n + cap + k] = b.byte_length


def _run_parallel(
    program: LocalProgram, lib: Any, i: int, bptr: Any, lptr: Any, workers: Any
) -> None:
    rec = ffi.cast("int64_t*", program.records.ctypes.data) + i * REC
    counts = ffi.new("uint32_t[3]")
    rc = lib.hal_replay_counts(rec, bptr, lptr, counts)
    if rc:
        raise _record_error(program, i, rc)
    total = counts[0] * counts[1] * counts[2]
    if total == 0:
        return
    _rptr, bbp, bop, blp = program._ptrs
    n_workers = workers.count + 1 if workers is not None else 1
    chunks = min(total, n_workers * 4) if total >= PARALLEL_MIN_WORKGROUPS else 1
    step = -(-total // chunks)
    run = lib.hal_replay_dispatch_range

    def body(k: int) -> None:
        b = k * step
        e = min(total, b + step)
        if b < e:
            rc = run(rec, bptr, lptr, bbp, bop, blp, counts, b, e)
            if rc:
                raise _record_error(program, i, rc)

    if workers is None or chunks == 1:
        for k in range(chunks):
            body(k)
    else:
        workers.parallel_for(chunks, body)


def _record_error(program: LocalProgram, i: int, rc: int) -> HalError:
    rec = program.records[i]
    op = int(rec[0])
    what = OP_NAMES.get(op, "command")
    why = "a kernel returned it, or a range exceeded its buffer"
    if op == OP_DISPATCH or op == OP_IREE_DISPATCH:
        name = _function_name(program, int(rec[1]), int(rec[14]))
        what = f"dispatch of {name!r}"
        if op == OP_IREE_DISPATCH:
            why = (
                "INTERNAL: the IREE function returned non-zero; INVALID_ARGUMENT: a binding "
                "is not 64-byte aligned, a z dimension exceeds 65535, or bindings are "
                "missing; OUT_OF_RANGE: a range exceeded its buffer"
            )
    code = rc if 1 <= rc <= 18 else StatusCode.UNKNOWN
    return error_for(
        code,
        f"command {command_index(program, i)} ({what}) failed with status {StatusCode(code).name} "
        f"({rc}): {why}",
    )


def _function_name(program: LocalProgram, fn_ptr: int, word14: int) -> str:
    """The name of a native or IREE record's function (``word14``: its record word 14)."""
    for be in program.executables:
        if be.record_op == OP_IREE_DISPATCH:
            name = be.function_name(word14)
            if name is not None:
                return name
        elif be.is_native and word14 < len(be.fn_ptrs) and be.fn_ptrs[word14] == fn_ptr:
            return be.functions[word14].name
    return f"function {word14}"
