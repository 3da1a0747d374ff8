"""Native executables: loading (bytes, paths, bad data), the export table, the build
helper (cache, missing compiler, compile errors), and direct calls."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hal_local_cpu import native_build
from hal_local_cpu.executable_native import (
    load_native_executable,
    replay_available,
)
from hal_local_cpu.kernels import native_library

import hal_core as hal

needs_cc = pytest.mark.skipif(native_build.find_compiler() is None, reason="no C compiler (cc)")


def _build(tmp_path: Path, name: str, source: str) -> str:
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    return str(native_build.build_shared_library(name, src))


@needs_cc
def test_load_from_path_and_bytes():
    path = native_library("cts_kernels")
    by_path = load_native_executable(path)
    by_bytes = load_native_executable(Path(path).read_bytes())
    for exe in (by_path, by_bytes):
        names = [f.name for f in exe.functions]
        assert names[:3] == ["scale_and_offset", "negate", "double"]
        assert exe.functions[0].constant_count == 3  # scale, offset, count
        assert len(exe.fn_ptrs) == len(names) and all(exe.fn_ptrs)


@needs_cc
def test_workgroup_caller_returns_status():
    exe = load_native_executable(native_library("cts_kernels"))
    names = [f.name for f in exe.functions]
    fn, state = exe.workgroup_caller(names.index("noop"))
    assert fn(state, 0, 0, 0) == 0


def test_not_a_library(tmp_path):
    with pytest.raises(hal.InvalidArgumentError, match="not a loadable ELF"):
        load_native_executable(b"hello world")
    text = tmp_path / "x.so"
    text.write_text("not elf")
    with pytest.raises(hal.InvalidArgumentError, match="not a loadable ELF"):
        load_native_executable(str(text))
    with pytest.raises(hal.InvalidArgumentError, match="cannot read"):
        load_native_executable(str(tmp_path / "missing.so"))
    with pytest.raises(hal.InvalidArgumentError, match="bytes or a path"):
        load_native_executable(12)
    with pytest.raises(hal.InvalidArgumentError, match="ELF64"):
        load_native_executable(b"\x7fELF" + bytes(60))  # an ELF header that is garbage


@needs_cc
def test_library_contract_violations(tmp_path, monkeypatch):
    monkeypatch.setenv("HAL_LOCAL_CPU_CACHE_DIR", str(tmp_path / "cache"))
    no_query = _build(tmp_path, "noquery", "int f(void) { return 1; }\n")
    with pytest.raises(hal.InvalidArgumentError, match="hal_cpu_library_query"):
        load_native_executable(no_query)
    null = _build(
        tmp_path,
        "null",
        '#include "hal_cpu_abi.h"\n'
        "const hal_cpu_library_t* hal_cpu_library_query(uint32_t v) { return 0; }\n",
    )
    with pytest.raises(hal.IncompatibleError, match="NULL"):
        load_native_executable(null)
    wrong = _build(
        tmp_path,
        "wrong",
        '#include "hal_cpu_abi.h"\n'
        "static const hal_cpu_library_t k = {7, 0, 0};\n"
        "const hal_cpu_library_t* hal_cpu_library_query(uint32_t v) { return &k; }\n",
    )
    with pytest.raises(hal.IncompatibleError, match="version 7"):
        load_native_executable(wrong)
    dup = _build(
        tmp_path,
        "dup",
        '#include "hal_cpu_abi.h"\n'
        "static int f(const hal_cpu_dispatch_state_t* s, uint32_t x, uint32_t y, uint32_t z)"
        " { return 0; }\n"
        'static const hal_cpu_export_t e[] = {{"f", f, 0, 0, {1, 1, 1}, 0},'
        ' {"f", f, 0, 0, {1, 1, 1}, 0}};\n'
        "static const hal_cpu_library_t k = {1, 2, e};\n"
        "const hal_cpu_library_t* hal_cpu_library_query(uint32_t v) { return &k; }\n",
    )
    with pytest.raises(hal.InvalidArgumentError, match="duplicate"):
        load_native_executable(dup)


def test_build_without_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "definitely-not-a-compiler-xyz")
    monkeypatch.setenv("HAL_LOCAL_CPU_CACHE_DIR", str(tmp_path))
    src = tmp_path / "k.c"
    src.write_text("int x;\n")
    with pytest.raises(hal.UnavailableError, match="needs a C compiler"):
        native_build.build_shared_library("k", src)


@needs_cc
def test_build_error_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HAL_LOCAL_CPU_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "bad.c"
    bad.write_text("this is not C\n")
    with pytest.raises(hal.UnavailableError, match="compiling"):
        native_build.build_shared_library("bad", bad)
    good = tmp_path / "good.c"
    good.write_text("int answer(void) { return 42; }\n")
    first = native_build.build_shared_library("good", good)
    mtime = os.stat(first).st_mtime_ns
    again = native_build.build_shared_library("good", good)
    assert again == first and os.stat(again).st_mtime_ns == mtime  # cached
    good.write_text("int answer(void) { return 43; }\n")
    assert native_build.build_shared_library("good", good) != first  # source hash changed
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("tmp")]


@needs_cc
def test_replay_library_available():
    assert replay_available()


@needs_cc
def test_distinct_blobs_load_as_distinct_libraries(tmp_path, monkeypatch):
    """Regression: loading from bytes twice must not hand back the first library."""
    monkeypatch.setenv("HAL_LOCAL_CPU_CACHE_DIR", str(tmp_path / "cache"))
    src = (
        '#include "hal_cpu_abi.h"\n'
        "static int f(const hal_cpu_dispatch_state_t* s, uint32_t x, uint32_t y, uint32_t z)"
        " { return 0; }\n"
        'static const hal_cpu_export_t e[] = {{"NAME", f, 0, 0, {1, 1, 1}, 0}};\n'
        "static const hal_cpu_library_t k = {1, 1, e};\n"
        "const hal_cpu_library_t* hal_cpu_library_query(uint32_t v) { return &k; }\n"
    )
    blobs = [Path(_build(tmp_path, n, src.replace("NAME", n))).read_bytes() for n in ("one", "two")]
    loaded = [load_native_executable(b) for b in blobs]
    assert [exe.functions[0].name for exe in loaded] == ["one", "two"]
