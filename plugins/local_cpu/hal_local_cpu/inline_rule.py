"""The inline rule of local-task: which programs a submission may run on the thread that
readied it instead of handing them to a worker."""

from __future__ import annotations

from typing import Any

from hal_core import CommandBufferMode

from .program_records import (
    INLINE_TRANSFER_BYTES,
    INLINE_WORKGROUPS,
    OP_DISPATCH,
    OP_IREE_DISPATCH,
    SEG_NATIVE,
)

_ALLOW_INLINE = int(CommandBufferMode.ALLOW_INLINE_EXECUTION)


def inline_allowed(p: Any, transfer_bytes: int, any_dispatch: bool, mode: int) -> bool:
    """The inline rule: a submission of program ``p`` (a ``LocalProgram``, with its
    builder's ``transfer_bytes`` and ``any_dispatch``) may run on the thread that readied
    it (the submitter, or the thread that signalled its last wait) instead of a worker when
    it is one compiled-loop call - no dispatch spread over the workers, no Python kernel -
    and one of:
    * the recording allows it (``ALLOW_INLINE_EXECUTION``, as IREE's readback buffers do);
    * its transfers move at most ``INLINE_TRANSFER_BYTES`` in all (the queue transfers'
      rule: handing them to a worker costs more than the copy);
    * it holds at most ``INLINE_WORKGROUPS`` records, and its dispatches (static counts)
      run at most ``INLINE_WORKGROUPS`` workgroups in all:
      each already runs on one thread (fewer than ``PARALLEL_MIN_WORKGROUPS``), and a
      worker's handoff (two thread wakes) costs more than that many small workgroups.
    The device adds the ordering condition (no earlier op of the queue pending)."""
    segments = p.segments
    if not p.native or len(segments) != 1 or segments[0][0] != SEG_NATIVE:
        return False
    if mode & _ALLOW_INLINE:
        return True
    if not 0 <= transfer_bytes <= INLINE_TRANSFER_BYTES:
        return False
    if not any_dispatch:
        return True
    recs = p.records
    if len(recs) > INLINE_WORKGROUPS:
        return False  # decided without scanning: long programs are not small ones
    ops = recs[:, 0]
    d = recs[(ops == OP_DISPATCH) | (ops == OP_IREE_DISPATCH)]
    if (d[:, 5] >= 0).any():  # indirect counts: unknown until the submission runs
        return False
    return int((d[:, 2] * d[:, 3] * d[:, 4]).sum()) <= INLINE_WORKGROUPS
