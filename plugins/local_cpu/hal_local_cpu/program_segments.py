"""Decoding a recorded dispatch into its record template, and splitting a finalized
program's records into segments (runs of the native loop, parallel dispatches, Python
kernels). Used by ``command_buffer``'s finalizer."""

from __future__ import annotations

from typing import Any

import numpy as np

from hal_core import InvalidArgumentError, OutOfRangeError

from .program_records import (
    OP_DISPATCH,
    OP_IREE_DISPATCH,
    OP_PYDISPATCH,
    PARALLEL_MIN_WORKGROUPS,
    SEG_NATIVE,
    SEG_PARALLEL,
    SEG_PYTHON,
)

__all__ = ["dispatch_template", "leaves_native_loop", "segments_of"]


def dispatch_template(
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
    nb = info.binding_count
    return (code, fn, cx, cy, cz, ib, io, 0, nc, 0, 0, ws[0], ws[1], ws[2], word14, nb)


def segments_of(recs: np.ndarray, any_special: bool, native: bool, parallel: bool) -> tuple:
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


def leaves_native_loop(record: tuple, parallel: bool) -> bool:
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
    """``leaves_native_loop`` of every record."""
    ops = recs[:, 0]
    special = ops == OP_PYDISPATCH
    if parallel:
        counts = recs[:, 2] * recs[:, 3] * recs[:, 4]
        dispatch = (ops == OP_DISPATCH) | (ops == OP_IREE_DISPATCH)
        special |= dispatch & ((recs[:, 5] >= 0) | (counts >= PARALLEL_MIN_WORKGROUPS))
    return special
