"""Array helpers of local_cpu's programs: the int64 tables a program hands the native
replay loop, their cffi pointers, and the small-count shortcuts where plain Python beats
numpy's per-call cost. Pure functions; no state beyond the shared empty binding table."""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

from .executable_native import ffi

_I64 = np.int64

_FEW = 32
"""Up to this many runs, plain Python beats numpy's per-call cost."""


def _place_constants(run_table: np.ndarray, run_coffs: list[int], base: int) -> None:
    if len(run_coffs) <= _FEW:
        for i, c in enumerate(run_coffs):
            if c >= 0:
                run_table[i, 7] = c + base
    else:
        coffs = np.fromiter(run_coffs, _I64, len(run_coffs))
        has = coffs >= 0
        run_table[has, 7] = coffs[has] + base


def _run_lengths(starts: list[int], n: int) -> Any:
    if len(starts) <= _FEW:
        ends = starts[1:]
        ends.append(n)
        return [e - b for b, e in zip(starts, ends)]
    return np.diff(np.fromiter(starts, np.intp, len(starts)), append=n)


def _no_bindings() -> tuple[np.ndarray, tuple[Any, Any, Any]]:
    a = np.zeros(1, _I64)  # never an empty array's pointer: keep one element
    a.flags.writeable = False
    ptr = ffi.cast("int64_t*", a.ctypes.data)
    return a, (ptr, ptr, ptr)


_NO_BINDINGS, _NO_BINDINGS_PTRS = _no_bindings()


def _as_i64(a: array) -> np.ndarray:
    # Never hand out a zero-length array's pointer: keep one element.
    return np.frombuffer(a, dtype=_I64) if len(a) else np.zeros(1, _I64)


def _p64(arr: np.ndarray) -> Any:
    # from_buffer keeps ``arr`` alive and is far cheaper than ``arr.ctypes``.
    # numpy's stubs give ndarray the buffer protocol (``__buffer__``) only from Python 3.12.
    return ffi.from_buffer(_I64_ARRAY, arr)  # type: ignore[call-overload]


_I64_ARRAY = ffi.typeof("int64_t[]")  # parsed once, not per pointer
