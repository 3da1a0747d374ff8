"""Recorded command tuples follow one layout rule: ``(kind, target, source, ...)``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import hal_core as hal
from hal_core import BufferRef
from hal_core.backend import (
    CMD_BARRIER,
    CMD_COPY,
    CMD_DEBUG_BEGIN,
    CMD_DEBUG_END,
    CMD_DISPATCH,
    CMD_FILL,
    CMD_UPDATE,
    COMMAND_LAYOUTS,
    refs_of,
)


@pytest.fixture
def device() -> Iterator[hal.Device]:
    dev = hal.create_device("local-sync://")
    yield dev
    dev.close()


def test_every_kind_has_a_layout_starting_with_its_kind() -> None:
    kinds = {CMD_BARRIER, CMD_FILL, CMD_UPDATE, CMD_COPY, CMD_DISPATCH}
    kinds |= {CMD_DEBUG_BEGIN, CMD_DEBUG_END}
    assert set(COMMAND_LAYOUTS) == kinds
    for fields in COMMAND_LAYOUTS.values():
        assert fields[0] == "kind"
    # Transfers: the range written is element 1, what is written there element 2.
    for kind in (CMD_FILL, CMD_UPDATE, CMD_COPY):
        assert COMMAND_LAYOUTS[kind][1] == "target"


def test_recorded_transfers_put_the_target_first(device: hal.Device) -> None:
    src = device.allocator.allocate_buffer(16)
    dst = device.allocator.allocate_buffer(16)
    cb = device.create_command_buffer()
    cb.begin()
    cb.fill_buffer(BufferRef(dst, 0, 4), b"\x01")
    cb.update_buffer(b"abcd", 0, BufferRef(dst, 4, 4))
    cb.copy_buffer(BufferRef(src, 0, 8), BufferRef(dst, 8, 8))
    cb.execution_barrier()
    cb.begin_debug_group("label")
    cb.end_debug_group()
    cb.end()
    fill, update, copy, barrier, debug_begin, debug_end = cb.commands
    for cmd in cb.commands:
        assert len(cmd) == len(COMMAND_LAYOUTS[cmd[0]])
    assert fill == (CMD_FILL, BufferRef(dst, 0, 4), b"\x01")
    assert update == (CMD_UPDATE, BufferRef(dst, 4, 4), b"abcd")
    assert copy == (CMD_COPY, BufferRef(dst, 8, 8), BufferRef(src, 0, 8))
    assert (barrier, debug_begin, debug_end) == (
        (CMD_BARRIER,),
        (CMD_DEBUG_BEGIN, "label"),
        (CMD_DEBUG_END,),
    )
    assert refs_of(update) == (BufferRef(dst, 4, 4),)
    assert refs_of(copy) == (BufferRef(dst, 8, 8), BufferRef(src, 0, 8))
