"""Packed rows of a launch shape: the command record and the kernel-dispatch packet
that every dispatch of the shape starts from (per-dispatch fields are patched in later)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

from .aql_packets import (
    DISPATCH_SETUP_3D,
    INVALID_HEADER_WORD,
    KERNEL_DISPATCH_DTYPE,
)
from .block_format import COMMAND_DTYPE, Opcode
from .kernel_descriptors import (
    _NO_IMPLICIT,
)

if TYPE_CHECKING:
    from .block_recording import _Shape

_COMMAND_QWORDS = COMMAND_DTYPE.itemsize // 8
_COMMAND_ROW = struct.Struct("<BBHIBBBxIIHHIIIHHQ3I3HHIIII12x")
_PACKET_ROW = struct.Struct("<HH3HH3IIIQQQQ")
assert _COMMAND_ROW.size == COMMAND_DTYPE.itemsize
assert _PACKET_ROW.size == KERNEL_DISPATCH_DTYPE.itemsize


def _command_row(shape: _Shape) -> bytes:
    """A command record with the per-packet fields and the per-proto ones (strategy,
    source count, kernarg length) zero."""
    desc = shape.desc
    binding_count = desc.binding_count if shape.opcode == Opcode.DISPATCH else 0
    try:
        return _COMMAND_ROW.pack(
            shape.opcode,
            0,
            _COMMAND_QWORDS,
            0,
            0,
            shape.dispatch_flags,
            1,
            0,
            0,
            binding_count,
            0,
            0,
            0,
            0,
            _NO_IMPLICIT,
            DISPATCH_SETUP_3D,
            desc.kernel_object,
            *shape.grid,
            *shape.wg,
            0,
            shape.private,
            shape.group,
            shape.executable_id,
            0,
        )
    except struct.error:
        # A value outside its field: the structured store says so as it always has.
        record = np.zeros(1, COMMAND_DTYPE)
        record[0] = (
            shape.opcode,
            0,
            _COMMAND_QWORDS,
            0,
            0,
            shape.dispatch_flags,
            1,
            0,
            0,
            binding_count,
            0,
            0,
            0,
            0,
            _NO_IMPLICIT,
            DISPATCH_SETUP_3D,
            desc.kernel_object,
            shape.grid,
            shape.wg,
            0,
            shape.private,
            shape.group,
            shape.executable_id,
            0,
        )
        return record.tobytes()


def _packet_row(shape: _Shape) -> bytes:
    """The packet body template: the header word stays INVALID until replay commits it;
    kernarg address and completion signal are per program / per submission."""
    try:
        return _PACKET_ROW.pack(
            INVALID_HEADER_WORD,
            0,
            *shape.wg,
            0,
            *shape.grid,
            shape.private,
            shape.group,
            shape.desc.kernel_object,
            0,
            0,
            0,
        )
    except struct.error:
        packet = np.zeros(1, KERNEL_DISPATCH_DTYPE)
        packet[0] = (
            INVALID_HEADER_WORD,
            0,
            shape.wg,
            0,
            shape.grid,
            shape.private,
            shape.group,
            shape.desc.kernel_object,
            0,
            0,
            0,
        )
        return packet.tobytes()
