"""Device addresses a submission resolves when it is admitted (its waits are met).

Command-buffer replays name buffers through binding-table slots and static buffers; their
addresses are read at admission, not at record time, because a buffer may be committed by
a ``queue_alloca`` the submission waited for. ``binding_pointers`` also performs the range
checks an UNVALIDATED recording skipped. ``read_indirect_counts`` reads an indirect
dispatch's workgroup counts from device memory. Pure functions (plus one blocking
``hsa_memory_copy``); no locks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal_core import OutOfRangeError
from hal_core.backend import bound_range, buffer_storage

from .block_format import BindingSourceFlags

__all__ = ["binding_pointers", "read_indirect_counts", "static_pointers"]


def binding_pointers(table: tuple, extents: dict) -> np.ndarray:
    """Device address of every binding-table slot (binding offset included), after checking
    that each slot the program uses exists and covers the bytes it reaches (the checks
    an UNVALIDATED recording skipped; failures fail the submission at execution)."""
    n = len(table)
    for slot, extent in extents.items():
        _buffer, _offset, length = bound_range(table, slot)
        if extent > length:
            raise OutOfRangeError(
                f"the command buffer reaches byte {extent} of binding-table slot {slot}, "
                f"which binds {length} bytes"
            )
    ptrs = np.zeros(max(1, n), np.uint64)
    for slot, binding in enumerate(table):
        if binding is None or binding.buffer is None:
            continue
        buf = binding.buffer
        ptrs[slot] = buffer_storage(buf).address + buf.byte_offset + binding.offset
    return ptrs


def static_pointers(buffers: tuple) -> np.ndarray:
    """Device address of every static buffer a program references."""
    ptrs = np.zeros(len(buffers), np.uint64)
    for i, buf in enumerate(buffers):
        ptrs[i] = (
            buffer_storage(buf).address + buf.byte_offset
        )  # FAILED_PRECONDITION if decommitted
    return ptrs


def read_indirect_counts(
    hsa: Any, indirect: tuple, binding_ptrs: np.ndarray | None, static_ptrs: np.ndarray | None
) -> tuple[int, int, int]:
    """Read the three uint32 workgroup counts of an indirect dispatch (any memory kind,
    through ``hsa_memory_copy``) from where ``indirect`` (source kind, slot, offset) says."""
    kind, slot, ptr = indirect[0], indirect[1], indirect[2]
    # A DYNAMIC source implies a binding table, a STATIC_BUFFER one a static table (mypy
    # cannot tie an optional argument to the source kind).
    if kind == BindingSourceFlags.DYNAMIC:
        address = int(binding_ptrs[slot]) + ptr  # type: ignore[index]
    elif kind == BindingSourceFlags.STATIC_BUFFER:
        address = int(static_ptrs[slot]) + ptr  # type: ignore[index]
    else:
        address = ptr
    ffi = hsa.ffi
    out = np.zeros(3, np.uint32)
    hsa.check(
        hsa.lib.hsa_memory_copy(ffi.from_buffer(out), ffi.cast("void*", address), 12),
        "hsa_memory_copy(indirect dispatch parameters)",
    )
    return int(out[0]), int(out[1]), int(out[2])
