"""The record layout of a finalized local CPU program (shared by the finalizer, the
executor, the Python interpreter and ``replay.c``).

Each command becomes one 16-word int64 record; word 0 is its op code. Dispatch records:
[1]=function pointer (Python kernels: an index into the program's Python functions)
[2..4]=workgroup counts [5]=indirect counts base (-1: static) [6]=indirect offset
[7]=constants pointer [8]=constant count [9]=first binding [10]=binding count
[11..13]=workgroup size [14]=function ordinal (IREE dispatches: the export's
``hal_iree_export_t``) [15]=bindings the function needs. Transfer records are described
in ``replay.c``.
"""

from __future__ import annotations

from typing import Any

from hal_core.backend import CMD_COPY, CMD_DISPATCH, CMD_FILL, CMD_UPDATE

__all__ = [
    "OP_COPY",
    "OP_DISPATCH",
    "OP_FILL",
    "OP_IREE_DISPATCH",
    "OP_NAMES",
    "OP_PYDISPATCH",
    "OP_UPDATE",
    "INLINE_TRANSFER_BYTES",
    "INLINE_WORKGROUPS",
    "PARALLEL_MIN_WORKGROUPS",
    "REC",
    "SEG_NATIVE",
    "SEG_PARALLEL",
    "SEG_PYTHON",
    "command_index",
]

REC = 16
OP_DISPATCH = 1
OP_FILL = 2
OP_COPY = 3
OP_UPDATE = 4
OP_PYDISPATCH = 5
OP_IREE_DISPATCH = 6

SEG_NATIVE = 0
SEG_PARALLEL = 1
SEG_PYTHON = 2

PARALLEL_MIN_WORKGROUPS = 8
"""Static dispatches with fewer workgroups run inline: handing work to other threads
costs more than a few small workgroups."""

INLINE_TRANSFER_BYTES = 64 * 1024
"""Transfers up to this many bytes (a queue transfer, or all the transfers of a command
buffer holding nothing else) run on the thread that readied them: handing them to a worker
costs more than the copy."""

INLINE_WORKGROUPS = 256
"""A command buffer whose dispatches each run on one thread and together run at most this
many workgroups executes on the thread that readied it (see ``inline_rule.inline_allowed``):
handing it to a worker and waking the waiter again costs more than that much small work."""

OP_NAMES = {
    OP_DISPATCH: "dispatch",
    OP_FILL: "fill",
    OP_COPY: "copy",
    OP_UPDATE: "update",
    OP_PYDISPATCH: "dispatch",
    OP_IREE_DISPATCH: "dispatch",
}

_RECORDED = frozenset((CMD_FILL, CMD_UPDATE, CMD_COPY, CMD_DISPATCH))


def command_index(program: Any, record: int) -> int:
    """The index of the command of ``program`` that produced ``record`` (error paths
    only: records skip barriers and debug groups)."""
    seen = -1
    for index, cmd in enumerate(program.command_ops):
        op = cmd if cmd.__class__ is int else cmd[0]
        if op in _RECORDED:
            seen += 1
            if seen == record:
                return index
    return record
