"""The Python interpreter of finalized local CPU programs: runs Python-kernel dispatches,
and every record when no C compiler built the replay loop (through cffi: slower, same
results as ``replay.c``)."""

from __future__ import annotations

import traceback
from typing import Any

import numpy as np

from hal_core import HalError, OutOfRangeError, StatusCode, error_for

from . import iree_elf
from .abi_cdefs import ffi
from .program_records import (
    OP_COPY,
    OP_FILL,
    OP_IREE_DISPATCH,
    OP_NAMES,
    OP_PYDISPATCH,
    OP_UPDATE,
    command_index,
)

__all__ = ["interpret"]


def _view(bases: np.ndarray, lens: np.ndarray, b: int, off: int, n: int) -> np.ndarray:
    blen = int(lens[b])
    if n < 0:
        n = blen - off
    if off < 0 or n < 0 or off > blen or n > blen - off:
        raise OutOfRangeError(f"range [{off}, {off + n}) exceeds the {blen} bytes bound to it")
    if n == 0:
        return np.zeros(0, np.uint8)
    # numpy's stubs accept only a fixed list of buffer types before Python 3.12.
    return np.frombuffer(ffi.buffer(ffi.cast("char*", int(bases[b]) + off), n), np.uint8)  # type: ignore[call-overload]


def interpret(program: Any, i: int, bases: np.ndarray, lens: np.ndarray) -> None:
    rec = program.records[i].tolist()
    op = rec[0]
    try:
        if op == OP_FILL:
            dst = _view(bases, lens, rec[1], rec[2], rec[3])
            plen = rec[5]
            if plen == 1:
                dst.fill(rec[4] & 0xFF)
            else:
                reps = -(-len(dst) // plen)
                pat = np.frombuffer(rec[4].to_bytes(plen, "little") * reps, np.uint8)
                dst[:] = pat[: len(dst)]
        elif op == OP_COPY:
            src = _view(bases, lens, rec[1], rec[2], rec[5])
            dst = _view(bases, lens, rec[3], rec[4], len(src))
            dst[:] = src
        elif op == OP_UPDATE:
            dst = _view(bases, lens, rec[2], rec[3], rec[4])
            data = ffi.buffer(ffi.cast("char*", rec[1]), rec[4])
            dst[:] = np.frombuffer(data, np.uint8)  # type: ignore[call-overload]  # (as in _view)
        else:
            _interpret_dispatch(program, rec, bases, lens)
    except HalError as exc:
        where = command_index(program, i)
        failure = error_for(exc.code, f"command {where} ({OP_NAMES.get(op)}) failed: {exc.message}")
        failure.__cause__ = exc.__cause__  # a Python kernel's own exception stays chained
    else:
        return
    # Raised outside the handler so that ``exc``, whose traceback holds this program's
    # frames (its binding table, its buffers), does not become the failure's __context__:
    # a failed semaphore keeps its failure as long as it lives.
    raise failure


def _detached(exc: BaseException) -> BaseException:
    """``exc`` made fit to live as long as the failed semaphore that keeps it: its
    traceback (the kernel's frames, not this interpreter's) becomes a note, printed
    under it, and the frames themselves are dropped. Frames would keep every caller's
    locals alive (the op's binding table, its buffers and, where the queue runs on the
    submitting thread, the submitter's own locals) for as long as the failure lives."""
    tb = exc.__traceback__
    frames = traceback.extract_tb(tb.tb_next if tb is not None else None)
    if frames:
        note = "Python kernel traceback (most recent call last):\n" + "".join(
            traceback.format_list(frames)
        ).rstrip("\n")
        add_note = getattr(exc, "add_note", None)  # Python 3.11+ prints notes
        if add_note is not None:
            add_note(note)
        else:
            # Python 3.10 (the checked version) declares no __notes__ on exceptions.
            exc.__notes__ = [*getattr(exc, "__notes__", ()), note]  # type: ignore[attr-defined]
    return exc.with_traceback(None)


def _interpret_dispatch(program: Any, rec: list, bases: np.ndarray, lens: np.ndarray) -> None:
    if rec[5] >= 0:
        cx, cy, cz = (int(v) for v in _view(bases, lens, rec[5], rec[6], 12).view(np.uint32))
        counts: tuple[int, int, int] = (cx, cy, cz)
    else:
        counts = (rec[2], rec[3], rec[4])
    total = counts[0] * counts[1] * counts[2]
    if total == 0:
        return
    first, n = rec[9], rec[10]
    if n < rec[15]:
        raise error_for(
            StatusCode.INVALID_ARGUMENT,
            f"dispatch passes {n} bindings; the function needs {rec[15]}",
        )
    views = [
        _view(
            bases,
            lens,
            int(program.bind_base[k]),
            int(program.bind_off[k]),
            int(program.bind_len[k]),
        )
        for k in range(first, first + n)
    ]
    nc = rec[8]
    if nc:
        words = ffi.buffer(ffi.cast("char*", rec[7]), 4 * nc)
        consts = np.frombuffer(words, np.uint32).copy()  # type: ignore[call-overload]  # (as in _view)
    else:
        consts = np.zeros(0, np.uint32)
    consts.flags.writeable = False
    if rec[0] == OP_PYDISPATCH:
        _run_python_kernel(program.py_fns[rec[1]], views, consts, counts)
        return
    if rec[0] == OP_IREE_DISPATCH:
        iree_elf.call_workgroups(
            rec[1],
            rec[14],
            counts,
            (rec[11], rec[12], rec[13]),
            ffi.cast("const uint32_t*", rec[7]),
            nc,
            [int(v.ctypes.data) if len(v) else 0 for v in views],
            [len(v) for v in views],
        )
        return
    # A native dispatch without the compiled replay loop: call each workgroup via cffi.
    _run_native_workgroups(rec, views, consts, counts)


def _run_python_kernel(
    kernel: tuple[Any, str], views: list, consts: np.ndarray, counts: tuple[int, int, int]
) -> None:
    """Call a Python kernel once per workgroup; whatever it raises or returns as a status
    becomes a ``HalError`` naming the kernel and the workgroup."""
    fn, name = kernel
    for z in range(counts[2]):
        for y in range(counts[1]):
            for x in range(counts[0]):
                try:
                    rc = fn(views, consts, (x, y, z), counts)
                except BaseException as exc:
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    err = exc if isinstance(exc, HalError) else None
                    if err is None:
                        err = error_for(StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
                    # Chained so the kernel's exception and where it was raised survive in
                    # the semaphore's failure.
                    raise error_for(
                        err.code,
                        f"Python kernel {name!r} raised at workgroup {(x, y, z)}: {err.message}",
                    ) from _detached(exc)
                if rc:
                    raise error_for(
                        rc if 1 <= rc <= 18 else StatusCode.UNKNOWN,
                        f"Python kernel {name!r} returned status {rc} at workgroup {(x, y, z)}",
                    )


def _run_native_workgroups(
    rec: list, views: list, consts: np.ndarray, counts: tuple[int, int, int]
) -> None:
    """Call a native workgroup function (``rec[1]``) once per workgroup through cffi."""
    state: Any = ffi.new("hal_cpu_dispatch_state_t*")  # cffi's stubs give cdata no fields
    ptrs = ffi.new("void*[]", max(1, len(views)))
    blens = ffi.new("uint64_t[]", max(1, len(views)))
    for k, v in enumerate(views):
        ptrs[k] = ffi.cast("void*", v.ctypes.data) if len(v) else ffi.NULL
        blens[k] = len(v)
    # (numpy's stubs give ndarray the buffer protocol only from Python 3.12)
    cbuf = ffi.from_buffer("uint32_t[]", consts) if len(consts) else ffi.NULL  # type: ignore[call-overload]
    state.workgroup_count = list(counts)
    state.workgroup_size = [rec[11], rec[12], rec[13]]
    state.constant_count = len(consts)
    state.binding_count = len(views)
    state.constants = cbuf
    state.binding_ptrs = ptrs
    state.binding_lengths = blens
    fn = ffi.cast("hal_cpu_workgroup_fn_t", rec[1])
    for z in range(counts[2]):
        for y in range(counts[1]):
            for x in range(counts[0]):
                rc = fn(state, x, y, z)
                if rc:
                    raise error_for(
                        rc if 1 <= rc <= 18 else StatusCode.UNKNOWN,
                        f"native kernel returned status {rc} at workgroup {(x, y, z)}",
                    )
