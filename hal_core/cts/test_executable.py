"""CTS: executable caches and executables (formats, lookup, reflection, bad data)."""

from __future__ import annotations

import pytest

import hal_core as hal
from hal_core import ParameterType

from .dispatch_support import executable, pytest_generate_tests  # noqa: F401


def test_cache_create_and_unknown_format(cts):
    cache = cts.device.create_executable_cache("cts")
    assert cache.identifier == "cts"
    assert cache.can_prepare("FOO?") is False
    assert cache.can_prepare(None) is False  # never raises
    with pytest.raises(hal.NotFoundError, match="FOO"):
        cache.prepare("FOO?", b"")


def test_can_prepare_cts_formats(cts, exe_format):
    if exe_format not in cts.config.executable_formats:
        pytest.skip(f"{cts.driver} does not provide {exe_format}")
    assert cts.device.create_executable_cache("cts").can_prepare(exe_format)


def test_functions_and_reflection(cts, exe_format):
    exe = executable(cts, exe_format)
    names = [f.name for f in exe.functions]
    for name in ("scale_and_offset", "negate", "double", "write_workgroup_ids"):
        assert name in names
    assert exe.function_count == len(names)
    ordinal = exe.lookup_function("scale_and_offset")
    info = exe.function_info(ordinal)
    assert info is exe.function_info("scale_and_offset")
    assert (info.binding_count, info.constant_count) == (2, 3)  # scale, offset, count
    assert len(info.workgroup_size) == 3 and all(v >= 1 for v in info.workgroup_size)
    params = exe.function_parameters(ordinal)
    assert info.parameter_count == len(params) == 5
    consts = [p for p in params if p.type == ParameterType.CONSTANT]
    binds = [p for p in params if p.type == ParameterType.BINDING]
    assert [p.offset for p in consts] == [0, 4, 8]
    assert [p.offset for p in binds] == [0, 1]
    assert all(p.size == 4 for p in consts)


def test_lookup_errors(cts, exe_format):
    exe = executable(cts, exe_format)
    with pytest.raises(hal.NotFoundError, match="no_such_function"):
        exe.lookup_function("no_such_function")
    with pytest.raises(hal.OutOfRangeError):
        exe.function_info(exe.function_count)
    with pytest.raises(hal.OutOfRangeError):
        exe.function_info(-1)
    with pytest.raises((hal.NotFoundError, hal.UnimplementedError)):
        exe.lookup_global("some_global")


def test_invalid_executable_data(cts, exe_format):
    cache = cts.device.create_executable_cache("cts")
    if not cache.can_prepare(exe_format):
        pytest.skip(f"{cts.driver} cannot prepare {exe_format}")
    with pytest.raises(hal.InvalidArgumentError):
        cache.prepare(exe_format, b"this is not an executable of any format")
    # Later preparations still work.
    assert executable(cts, exe_format).function_count
