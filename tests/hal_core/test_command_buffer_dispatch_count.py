"""``CommandBuffer.dispatch_count``: counted from the recording when asked (recording keeps
no per-dispatch counter), and kept when the recording is dropped (an UNRETAINED ``end()``,
``close()``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hal_local_cpu.kernels import python_module

import hal_core as hal
from hal_core import BufferRef, CommandBufferMode, CommandCategory, DispatchConfig, QueueAffinity

ANY = QueueAffinity.ANY
COUNT_1 = (1).to_bytes(4, "little")


@pytest.fixture(scope="module")
def device() -> Iterator[Any]:
    dev = hal.create_device("local-sync://")
    yield dev
    dev.close()


def _record(device: Any, mode: int, dispatches: int) -> Any:
    exe = device.create_executable_cache("count").prepare(
        "local-cpu-python", python_module("cts_kernels")
    )
    params = hal.BufferParams(usage=hal.BufferUsage.DEFAULT)
    a = device.allocator.allocate_buffer(params, 16)
    b = device.allocator.allocate_buffer(params, 16)
    bindings = (BufferRef(a, 0, 4), BufferRef(b, 0, 4))
    cb = device.create_command_buffer(mode, CommandCategory.ANY, ANY, 0)
    assert cb.dispatch_count == 0
    cb.begin()
    cb.fill_buffer(a, b"\0\0\0\0")
    for i in range(dispatches):
        cb.dispatch(exe, "negate", DispatchConfig.static(1), COUNT_1, bindings)
        cb.execution_barrier()
        assert cb.dispatch_count == i + 1
    cb.end()
    return cb


@pytest.mark.parametrize(
    "mode",
    [
        CommandBufferMode.DEFAULT,
        CommandBufferMode.UNVALIDATED,
        CommandBufferMode.UNRETAINED,
        CommandBufferMode.UNRETAINED | CommandBufferMode.UNVALIDATED,
    ],
)
def test_dispatch_count_survives_end_and_close(device: Any, mode: int) -> None:
    cb = _record(device, mode, 5)
    if mode & CommandBufferMode.UNRETAINED:
        assert cb.commands == []  # the recording is gone; its count is not
    assert cb.dispatch_count == 5
    cb.close()
    assert cb.dispatch_count == 5
    cb.close()
    assert cb.dispatch_count == 5


def test_dispatch_count_of_a_closed_unended_recording(device: Any) -> None:
    cb = device.create_command_buffer(0, CommandCategory.ANY, ANY, 0)
    cb.close()
    assert cb.dispatch_count == 0
