"""Public objects are created by their parents only and are final."""

from __future__ import annotations

import pytest

import hal_core
from hal_core import Allocator, Device, Driver, Executable, ExecutableCache, InvalidArgumentError
from hal_core.backend import device_from_backend


@pytest.fixture
def device() -> Device:
    dev = hal_core.create_device("local-sync://")
    yield dev
    dev.close()


def test_constructors_are_internal(device: Device) -> None:
    backend = device.backend
    calls = {
        "Device": lambda: Device(backend, driver_name="x", uri="x://"),
        "Driver": lambda: Driver("x", "x", hal_core.registry().driver("local-sync").backend),
        "Allocator": lambda: Allocator(backend.allocator, device),
        "ExecutableCache": lambda: ExecutableCache(device, "id"),
        "Executable": lambda: Executable("fmt", object()),
    }
    for name, call in calls.items():
        with pytest.raises(
            InvalidArgumentError, match=f"hal_core.{name} has no public constructor"
        ):
            call()
    # The parents still make them.
    assert isinstance(device.allocator, Allocator)
    assert isinstance(device.create_executable_cache(), ExecutableCache)
    assert isinstance(hal_core.registry().driver("local-sync"), Driver)


@pytest.mark.parametrize("cls", [Device, Driver, Allocator, ExecutableCache, Executable])
def test_public_objects_are_final(cls: type) -> None:
    with pytest.raises(TypeError, match=f"hal_core.{cls.__name__} is final"):
        type("Sub", (cls,), {})
    assert getattr(cls, "__final__", False)  # typing.final, for type checkers


def test_driver_has_fixed_state() -> None:
    driver = hal_core.registry().driver("local-sync")
    with pytest.raises(AttributeError):
        driver.extra = 1  # type: ignore[attr-defined]


def test_device_from_backend_wraps_a_bare_backend(device: Device) -> None:
    class Bare:
        queue_count = 1
        allocator = None

        def submit(self, op: object) -> None:
            raise hal_core.UnimplementedError("none")

        def close(self, timeout: float | None) -> None:
            pass

    bare = device_from_backend(Bare(), driver_name="bare", uri="bare://")
    assert bare.uri == "bare://" and bare.queue_count == 1
    bare.close()


def test_backend_tier_buffer_methods_left_the_user_class() -> None:
    for name in ("commit", "decommit", "host_bytes", "storage", "resolve_range"):
        assert not hasattr(hal_core.Buffer, name), name
