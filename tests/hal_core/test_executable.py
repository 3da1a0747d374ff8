"""Unit tests of executables and executable caches against a fake backend."""

from __future__ import annotations

import pytest

import hal_core as hal
from hal_core import FunctionInfo, FunctionParameter, ParameterType
from hal_core._executable import default_parameters
from hal_core.backend import device_from_backend


class FakeBackendExecutable:
    functions = (
        FunctionInfo(
            "a", 1, 2, (4, 1, 1), parameters=default_parameters(1, 2, ("buf",), ("x", "y"))
        ),
        FunctionInfo("b", 0, 0),
    )


class BareDeviceBackend:
    """The mandatory DeviceBackend members only (no executables)."""

    queue_count = 1
    allocator = None

    def submit(self, op):
        raise hal.UnimplementedError("no queue work in these tests")

    def close(self, timeout):
        pass


class FakeDeviceBackend(BareDeviceBackend):
    def __init__(self, formats=("fake-v1",), fail=False):
        self._formats = formats
        self._fail = fail
        self.prepared = []

    def executable_formats(self):
        if self._fail:
            raise RuntimeError("backend is broken")
        return self._formats

    def prepare_executable(self, format, data, params):
        self.prepared.append((format, data, params))
        if data == b"bad":
            raise hal.InvalidArgumentError("not a fake executable")
        return FakeBackendExecutable()


def FakeDevice(backend):
    """A public Device over a fake backend (made outside any driver)."""
    return device_from_backend(backend, driver_name="fake", uri="fake://")


def test_function_info_and_parameters():
    info = FakeBackendExecutable.functions[0]
    assert info.parameter_count == 3
    assert info.parameters[0] == FunctionParameter(ParameterType.CONSTANT, "x", 4, 0)
    assert info.parameters[1].offset == 4
    assert info.parameters[2] == FunctionParameter(ParameterType.BINDING, "buf", 8, 0)
    with pytest.raises(hal.InvalidArgumentError, match="workgroup size"):
        FunctionInfo("z", 0, 0, (0, 1, 1))


def test_executable_lookup():
    exe = FakeDevice(FakeDeviceBackend()).create_executable_cache().prepare("fake-v1", b"x")
    assert exe.function_count == 2
    assert exe.lookup_function("b") == 1
    assert exe.function_info("a").workgroup_size == (4, 1, 1)
    assert exe.function_parameters(0)[0].name == "x"
    assert "a, b" in repr(exe)
    with pytest.raises(hal.NotFoundError, match=r"\['a', 'b'\]"):
        exe.lookup_function("c")
    with pytest.raises(hal.NotFoundError):
        exe.lookup_function(None)
    with pytest.raises(hal.OutOfRangeError, match="0..1"):
        exe.function_info(2)
    with pytest.raises(hal.InvalidArgumentError):
        exe.function_info(1.0)
    with pytest.raises(hal.UnimplementedError):
        exe.lookup_global("g")
    with exe:
        assert not exe.closed
    assert exe.closed
    exe.close()  # idempotent


def test_cache_formats_and_prepare():
    backend = FakeDeviceBackend()
    cache = FakeDevice(backend).create_executable_cache("id")
    assert cache.formats() == ("fake-v1",)
    assert cache.can_prepare("fake-v1") and not cache.can_prepare("other")
    exe = cache.prepare("fake-v1", b"data", caching_mode=hal.CachingMode.ALIAS_PROVIDED_DATA)
    assert exe.format == "fake-v1"
    assert backend.prepared[0][2]["caching_mode"] == hal.CachingMode.ALIAS_PROVIDED_DATA
    with pytest.raises(hal.NotFoundError, match="available: \\['fake-v1'\\]"):
        cache.prepare("other", b"")
    with pytest.raises(hal.InvalidArgumentError, match="string"):
        cache.prepare(3, b"")
    with pytest.raises(hal.InvalidArgumentError, match="not a fake"):
        cache.prepare("fake-v1", b"bad")
    assert cache.prepare("fake-v1", b"ok").function_count == 2  # later work still runs
    with cache:
        pass
    with pytest.raises(hal.FailedPreconditionError):
        cache.prepare("fake-v1", b"")


def test_can_prepare_never_raises():
    assert (
        FakeDevice(FakeDeviceBackend(fail=True)).create_executable_cache().can_prepare("x") is False
    )
    assert FakeDevice(BareDeviceBackend()).create_executable_cache().formats() == ()
    assert FakeDevice(BareDeviceBackend()).create_executable_cache().can_prepare("x") is False
