"""What each queue operation does on host memory, one handler per ``QueueOpKind``.

A handler runs once the op's waits are reached, on the op's queue worker thread. It
returns on success and raises on failure (any exception: the device turns it into the
error its signals fail with). Buffers are read and written through
``Buffer.host_bytes``, a uint8 numpy view of the buffer's committed storage.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from hal_core import QueueOpKind, UnimplementedError
from hal_core.backend import (
    CMD_COPY,
    CMD_DISPATCH,
    CMD_FILL,
    CMD_UPDATE,
    QueueOp,
    buffer_host_bytes,
    commit_buffer,
    decommit_buffer,
    resolve_binding,
)

from .allocator import allocate_storage

_FILL_DTYPES = {2: np.uint16, 4: np.uint32}


def fill(target: np.ndarray, pattern: bytes) -> None:
    """Repeat a 1-, 2- or 4-byte ``pattern`` over ``target`` (the front door has checked
    that the pattern size divides the range and its offset)."""
    if len(pattern) == 1:
        target.fill(pattern[0])
    elif target.nbytes:
        target.view(_FILL_DTYPES[len(pattern)]).fill(int.from_bytes(pattern, "little"))


def run_fill(op: QueueOp) -> None:
    fill(buffer_host_bytes(op.target, op.target_offset, op.length), op.pattern)


def run_update(op: QueueOp) -> None:
    # ``op.payload`` is hal_core's private copy of the caller's bytes, taken at the call.
    buffer_host_bytes(op.target, op.target_offset, op.length)[:] = op.payload


def run_copy(op: QueueOp) -> None:
    source = buffer_host_bytes(op.source, op.source_offset, op.length)
    buffer_host_bytes(op.target, op.target_offset, op.length)[:] = source


def run_read(op: QueueOp) -> None:
    """File -> buffer."""
    op.source.read_into(op.source_offset, buffer_host_bytes(op.target, op.target_offset, op.length))


def run_write(op: QueueOp) -> None:
    """Buffer -> file."""
    op.target.write_from(
        op.target_offset, buffer_host_bytes(op.source, op.source_offset, op.length)
    )


def run_alloca(op: QueueOp) -> None:
    """Commit fresh memory to the pending buffer ``queue_alloca`` returned. Only the
    default allocation (``pool=None``) reaches here: the device refuses explicit pools at
    submit."""
    params = op.params
    commit_buffer(op.target, allocate_storage(op.length, params.min_alignment))


def run_dealloca(op: QueueOp) -> None:
    """Take the storage away from the buffer (later use is FAILED_PRECONDITION) and
    free it."""
    storage = decommit_buffer(op.target)
    if storage is not None:
        storage.release()


def run_barrier(op: QueueOp) -> None:
    return None


# -- command buffers ------------------------------------------------------------------------
# Without ``finalize_command_buffer`` an EXECUTE op carries the raw recording: ``op.program``
# is the command list and ``op.bindings`` the binding table captured at submit (a tuple of
# ``BufferBinding`` or None). Commands run in order, so barriers have nothing to do.


def _view(ref: Any, table: tuple) -> np.ndarray:
    """The bytes a command's buffer reference names: a whole ``Buffer``, a direct
    ``BufferRef``, or an indirect one composed with its binding-table slot
    (``resolve_binding`` checks every range and slot)."""
    buffer, offset, length = resolve_binding(ref, table)
    return buffer_host_bytes(buffer, offset, length)


def run_execute(op: QueueOp) -> None:
    table = op.bindings or ()
    for cmd in op.program:
        code = cmd[0]
        # Every transfer is (kind, target ref, source): the pattern, host bytes or ref.
        if code == CMD_FILL:
            fill(_view(cmd[1], table), cmd[2])
        elif code == CMD_UPDATE:
            _view(cmd[1], table)[:] = np.frombuffer(cmd[2], np.uint8)
        elif code == CMD_COPY:
            _view(cmd[1], table)[:] = _view(cmd[2], table)
        elif code == CMD_DISPATCH:
            # Unreachable through the public API (this driver prepares no executables),
            # but a recording is data: say so rather than skip the command.
            raise UnimplementedError("the example driver does not execute dispatches")
        # CMD_BARRIER, CMD_DEBUG_BEGIN, CMD_DEBUG_END: nothing to do in order.


HANDLERS: dict[int, Callable[[QueueOp], None]] = {
    QueueOpKind.BARRIER: run_barrier,
    QueueOpKind.FILL: run_fill,
    QueueOpKind.UPDATE: run_update,
    QueueOpKind.COPY: run_copy,
    QueueOpKind.READ: run_read,
    QueueOpKind.WRITE: run_write,
    QueueOpKind.ALLOCA: run_alloca,
    QueueOpKind.DEALLOCA: run_dealloca,
    QueueOpKind.EXECUTE: run_execute,
}
"""Handlers by op kind. HOST_CALL is the device's own (it owns its signals differently);
DISPATCH is absent: this driver prepares no executables."""
