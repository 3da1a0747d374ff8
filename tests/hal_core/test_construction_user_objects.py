"""Buffers, command buffers, files and device groups are made by their parents only:
no public constructor, final, and fixed state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import hal_core
from hal_core import (
    Buffer,
    BufferUsage,
    CommandBuffer,
    DeviceGroup,
    File,
    InvalidArgumentError,
    MemoryAccess,
    MemoryType,
)
from hal_core.backend import new_buffer


@pytest.fixture
def device() -> Iterator[hal_core.Device]:
    dev = hal_core.create_device("local-sync://")
    yield dev
    dev.close()


def test_constructors_are_internal_and_name_the_factory(device: hal_core.Device) -> None:
    calls: dict[str, tuple[Callable[[], Any], str]] = {
        "Buffer": (
            lambda: Buffer(
                None,
                memory_type=MemoryType.HOST_LOCAL,
                allowed_usage=BufferUsage.DEFAULT,
                allowed_access=MemoryAccess.ALL,
                allocation_size=16,
            ),
            "allocate_buffer",
        ),
        "CommandBuffer": (
            lambda: CommandBuffer(device, 0, 3, 1, 0, None),  # type: ignore[arg-type]
            "Device.create_command_buffer",
        ),
        "File": (lambda: File(MemoryAccess.READ, None, -1), "File.from_memory"),
        "DeviceGroup": (lambda: DeviceGroup(), "create_device_group"),
    }
    for name, (call, factory) in calls.items():
        with pytest.raises(InvalidArgumentError, match=f"hal_core.{name} has no public") as info:
            call()
        assert factory in str(info.value), name


def test_the_factories_still_make_them(device: hal_core.Device, tmp_path: Any) -> None:
    buffer = device.allocator.allocate_buffer(16)
    assert isinstance(buffer, Buffer) and isinstance(buffer.subspan(4, 8), Buffer)
    assert isinstance(device.create_command_buffer(), CommandBuffer)
    with File.from_memory(bytearray(8)) as f, device.import_file(b"abc") as g:
        assert f.length == 8 and g.length == 3
    path = tmp_path / "data"
    path.write_bytes(b"xyz")
    fd = os.open(path, os.O_RDONLY)
    try:
        with File.from_fd(fd) as h:
            assert h.length == 3
    finally:
        os.close(fd)
    backend_made = new_buffer(
        None,
        memory_type=MemoryType.HOST_LOCAL | MemoryType.DEVICE_VISIBLE,
        allowed_usage=BufferUsage.DEFAULT,
        allowed_access=MemoryAccess.ALL,
        allocation_size=32,
    )
    assert backend_made.byte_length == 32 and not backend_made.is_committed
    other = hal_core.create_device("local-sync://")
    with DeviceGroup.from_devices([device, other], owns_devices=False) as group:
        assert group.device_count == 2
    other.close()


@pytest.mark.parametrize("cls", [Buffer, CommandBuffer, File, DeviceGroup])
def test_user_objects_are_final(cls: type) -> None:
    with pytest.raises(TypeError, match=f"hal_core.{cls.__name__} is final"):
        type("Sub", (cls,), {})
    assert getattr(cls, "__final__", False)  # typing.final, for type checkers


def test_state_is_fixed(device: hal_core.Device) -> None:
    other = hal_core.create_device("local-sync://")
    group = DeviceGroup.from_devices([device, other], owns_devices=False)
    objects = [
        device.allocator.allocate_buffer(16),
        device.allocator.allocate_buffer(16).subspan(0, 8),
        device.create_command_buffer(),
        File.from_memory(b"abc"),
        group,
    ]
    try:
        for obj in objects:
            with pytest.raises(AttributeError):
                obj.extra = 1
            assert not hasattr(obj, "__dict__"), type(obj).__name__
    finally:
        group.close()
        other.close()
