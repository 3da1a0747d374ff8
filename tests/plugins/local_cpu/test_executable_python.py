"""Python executables: kernel marking, the data forms accepted, and bad data."""

from __future__ import annotations

import types

import pytest
from hal_local_cpu.executable_python import kernel, load_python_executable

import hal_core as hal


@kernel(bindings=1, constants=2, workgroup_size=(8, 1, 1), constant_names=("a", "b"))
def k1(bindings, constants, workgroup_id, workgroup_count):
    return None


@kernel
def k2(bindings, constants, workgroup_id, workgroup_count):
    return None


def test_from_module_name_and_object():
    exe = load_python_executable("hal_local_cpu.kernels.cts_kernels")
    names = [f.name for f in exe.functions]
    assert names[:3] == ["scale_and_offset", "negate", "double"]  # definition order
    assert "raise_error" in names
    mod = types.ModuleType("m")
    mod.k1, mod.k2, mod.other = k1, k2, 3
    exe = load_python_executable(mod)
    assert [f.name for f in exe.functions] == ["k1", "k2"]
    info = exe.functions[0]
    assert (info.binding_count, info.constant_count, info.workgroup_size) == (1, 2, (8, 1, 1))
    assert [p.name for p in info.parameters] == ["a", "b", "b0"]

    class Holder:
        first = staticmethod(k2)
        second = staticmethod(k1)

    assert [f.name for f in load_python_executable(Holder).functions] == ["k2", "k1"]
    assert [f.name for f in load_python_executable({"x": k2}).functions] == ["k2"]


def test_bad_python_executables():
    with pytest.raises(hal.InvalidArgumentError, match="holds no kernels"):
        load_python_executable(types.ModuleType("empty"))
    with pytest.raises(hal.InvalidArgumentError, match="cannot import"):
        load_python_executable("no.such.module.anywhere")
    with pytest.raises(hal.InvalidArgumentError, match="twice"):
        load_python_executable({"a": k1, "b": kernel(name="k1")(lambda *a: None)})
    with pytest.raises(hal.InvalidArgumentError, match="holds no kernels"):
        load_python_executable(b"bytes are not a Python executable")
