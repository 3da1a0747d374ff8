"""IREE's CPU executables (``embedded-elf-x86_64``, ``system-elf-x86_64``) on local-task and
local-sync: the committed llvm-cpu output of ``iree_executables/*.mlir`` run as IREE ran
it (bit-identical results, in the native replay loop and in the no-compiler interpreter),
reflection, alignment and dimension checks, corrupt libraries, and a hand-written library
of the same ABI for what the compiler's output does not exercise (executable constants,
local memory, imports, parameters, processor data, failures)."""

from __future__ import annotations

import hashlib
import json
import platform
import struct
from pathlib import Path

import cffi
import numpy as np
import pytest
from hal_local_cpu import command_buffer as lcb
from hal_local_cpu import iree_elf, native_build
from hal_local_cpu.elf_validation import validate_elf
from hal_local_cpu.executable_native import replay_available
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hal_core as hal
from hal_core import BufferRef, CommandCategory, DispatchConfig

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 executables"
)

HERE = Path(__file__).resolve().parent / "iree_executables"
MANIFEST = json.loads((HERE / "manifest.json").read_text())
FORMATS = {"embedded-elf-x86_64": "embedded", "system-elf-x86_64": "system"}
ANY = hal.QueueAffinity.ANY
TIMEOUT = 30.0
needs_cc = pytest.mark.skipif(not replay_available(), reason="no C compiler (cc)")


@pytest.fixture(scope="module", params=["local-task://", "local-sync://"])
def device(request):
    dev = hal.create_device(request.param)
    yield dev
    dev.close()


def _inputs(name: str) -> list[np.ndarray]:
    spec = MANIFEST[name]["inputs"]
    rs = np.random.RandomState(spec["seed"])
    return [rs.standard_normal(s).astype(np.float32) for s in spec["shapes"]]


def _reference(name: str, a: list[np.ndarray]) -> np.ndarray:
    if name == "mlp2":
        return np.maximum(a[0] @ a[1] + a[2], 0) @ a[3] + a[4]
    if name == "dynamic_add":
        return (a[0] + a[1]) * a[0]
    return a[0] * a[1] + a[2]


def _buffer(device, size: int) -> hal.Buffer:
    return device.allocator.allocate_buffer(
        hal.BufferParams(usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.MAPPING), size
    )


def _prepare(device, name: str, fmt: str, **kw) -> hal.Executable:
    data = (HERE / MANIFEST[name][FORMATS[fmt]]).read_bytes()
    return device.create_executable_cache("iree").prepare(fmt, data, **kw)


def _buffers(device, name: str) -> dict[str, hal.Buffer]:
    spec = MANIFEST[name]
    bufs = {role: _buffer(device, size) for role, size in sorted(spec["buffers"].items())}
    for k, a in enumerate(_inputs(name)):
        bufs[f"in{k}"].write(a.tobytes())
    return bufs


def _record(device, exe, name: str, bufs: dict | None):
    """A reusable command buffer of the program's dispatches: with ``bufs`` None, every
    binding is a binding-table slot (one per named buffer, in sorted order)."""
    spec = MANIFEST[name]
    roles = sorted(spec["buffers"])
    cb = device.create_command_buffer(0, CommandCategory.ANY, ANY, len(roles))
    cb.begin()
    for d in spec["dispatches"]:
        refs = []
        for role, offset, length in d["bindings"]:
            if bufs is None:
                refs.append(BufferRef.indirect(roles.index(role), offset, length))
            else:
                refs.append(BufferRef(bufs[role], offset, length))
        consts = np.array(d["constants"], np.uint32).tobytes()
        cb.dispatch(exe, d["ordinal"], DispatchConfig.static(*d["workgroup_count"]), consts, refs)
        cb.execution_barrier()
    cb.end()
    return cb


def _execute(device, cb, table=None) -> None:
    sem = device.create_semaphore()
    device.queue_execute(ANY, (), [(sem, 1)], cb, table)
    sem.wait(1, TIMEOUT)


def _check_result(name: str, out: hal.Buffer) -> None:
    spec = MANIFEST[name]["result"]
    got = np.frombuffer(out.read(), np.float32).reshape(spec["shape"])
    np.testing.assert_allclose(got, _reference(name, _inputs(name)), rtol=1e-5, atol=1e-5)
    assert hashlib.sha256(got.tobytes()).hexdigest() == spec["sha256"]  # IREE's own bits


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_programs_match_iree_bit_for_bit(device, name, fmt):
    exe = _prepare(device, name, fmt)
    bufs = _buffers(device, name)
    roles = sorted(bufs)
    cb = _record(device, exe, name, None)
    _execute(device, cb, [hal.BufferBinding(bufs[r]) for r in roles])
    _check_result(name, bufs["out"])
    # The same with direct bindings, twice (a reusable command buffer replays).
    bufs["out"].write(bytes(bufs["out"].byte_length))
    cb = _record(device, exe, name, bufs)
    for _ in range(2):
        _execute(device, cb)
        _check_result(name, bufs["out"])


def test_reflection(device):
    exe = _prepare(device, "mlp2", "embedded-elf-x86_64")
    assert exe.function_count == 2
    for ordinal, d in enumerate(MANIFEST["mlp2"]["dispatches"]):
        info = exe.function_info(ordinal)
        assert info.binding_count == len(d["bindings"])
        assert info.constant_count == 0 and info.local_memory_size == 0
        assert info.workgroup_size == (1, 1, 1)
        assert info.name.startswith("mlp2_")
        assert [p.type for p in info.parameters] == [hal.ParameterType.BINDING] * 4
    dyn = _prepare(device, "dynamic_add", "system-elf-x86_64").function_info(0)
    assert dyn.constant_count == len(MANIFEST["dynamic_add"]["dispatches"][0]["constants"])


@needs_cc
def test_dispatches_run_in_the_native_loop(device):
    """Several IREE dispatches replay in one native segment; a dispatch of many
    workgroups on local-task gets a parallel segment over the worker threads."""
    exe = _prepare(device, "mlp2", "embedded-elf-x86_64")
    program = _record(device, exe, "mlp2", None).program
    assert program.segments == ((lcb.SEG_NATIVE, 0, 2),)
    assert program.records[:, 0].tolist() == [lcb.OP_IREE_DISPATCH] * 2
    big = _prepare(device, "big_fma", "embedded-elf-x86_64")
    kinds = [k for k, _b, _e in _record(device, big, "big_fma", None).program.segments]
    parallel = device.backend.workers is not None
    assert kinds == [lcb.SEG_PARALLEL if parallel else lcb.SEG_NATIVE]


def _no_compiler():
    raise hal.UnavailableError("pretend no compiler")


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_interpreter_runs_iree_dispatches(device, name, monkeypatch):
    exe = _prepare(device, name, "embedded-elf-x86_64")
    monkeypatch.setattr(lcb, "replay_library", _no_compiler)
    bufs = _buffers(device, name)
    cb = _record(device, exe, name, bufs)
    assert {k for k, _b, _e in cb.program.segments} == {lcb.SEG_PYTHON}
    _execute(device, cb)
    _check_result(name, bufs["out"])


def test_queue_dispatch_with_constants(device):
    exe = _prepare(device, "dynamic_add", "embedded-elf-x86_64")
    bufs = _buffers(device, "dynamic_add")
    d = MANIFEST["dynamic_add"]["dispatches"][0]
    sem = device.create_semaphore()
    device.queue_dispatch(
        ANY,
        (),
        [(sem, 1)],
        exe,
        0,
        DispatchConfig.static(*d["workgroup_count"]),
        np.array(d["constants"], np.uint32).tobytes(),
        [bufs[r] for r, _o, _n in d["bindings"]],
    )
    sem.wait(1, TIMEOUT)
    _check_result("dynamic_add", bufs["out"])


@pytest.mark.parametrize("interpreted", [False, True])
def test_misaligned_binding_fails_the_signal(device, interpreted, monkeypatch):
    exe = _prepare(device, "dynamic_add", "embedded-elf-x86_64")
    if interpreted:
        monkeypatch.setattr(lcb, "replay_library", _no_compiler)
    elif not replay_available():
        pytest.skip("no C compiler")
    big = _buffer(device, 1024)
    d = MANIFEST["dynamic_add"]["dispatches"][0]
    refs = [BufferRef(big, 16, 148), BufferRef(big, 256, 148), BufferRef(big, 512, 148)]
    sem = device.create_semaphore()
    device.queue_dispatch(
        ANY,
        (),
        [(sem, 1)],
        exe,
        0,
        DispatchConfig.static(1),
        np.array(d["constants"], np.uint32).tobytes(),
        refs,
    )
    with pytest.raises(hal.InvalidArgumentError, match="align"):
        sem.wait(1, TIMEOUT)
    # Later work still runs.
    refs[0] = BufferRef(big, 0, 148)
    sem2 = device.create_semaphore()
    device.queue_dispatch(
        ANY,
        (),
        [(sem2, 1)],
        exe,
        0,
        DispatchConfig.static(1),
        np.array(d["constants"], np.uint32).tobytes(),
        refs,
    )
    sem2.wait(1, TIMEOUT)


def test_unknown_constants_and_bad_data(device):
    cache = device.create_executable_cache("iree")
    data = (HERE / MANIFEST["mlp2"]["embedded"]).read_bytes()
    with pytest.raises(hal.InvalidArgumentError, match="0 executable-level constants; 2 given"):
        cache.prepare("embedded-elf-x86_64", data, constants=[1, 2])
    with pytest.raises(hal.InvalidArgumentError, match="not a loadable ELF"):
        cache.prepare("system-elf-x86_64", b"\x7fELF" + bytes(100))
    with pytest.raises(hal.InvalidArgumentError, match="does not export"):
        cache.prepare(
            "embedded-elf-x86_64",
            native_build.build_shared_library("replay", native_build.package_dir() / "replay.c")
            if replay_available()
            else data[:100],
        )
    with pytest.raises(hal.InvalidArgumentError):
        cache.prepare("embedded-elf-x86_64", data[: len(data) // 2])
    with pytest.raises(hal.InvalidArgumentError):
        cache.prepare("embedded-elf-x86_64", 42)


def _non_code_ranges(blob: bytes) -> list[tuple[int, int]]:
    phoff, phnum = struct.unpack_from("<Q", blob, 32)[0], struct.unpack_from("<H", blob, 56)[0]
    code = []
    for i in range(phnum):
        p_type, flags, off, _v, _p, filesz = struct.unpack_from("<IIQQQQ", blob, phoff + 56 * i)
        if p_type == 1 and flags & 1:
            code.append((off, off + filesz))
    out, pos = [], 0
    for b, e in sorted(code):
        if pos < b:
            out.append((pos, b))
        pos = max(pos, e)
    if pos < len(blob):
        out.append((pos, len(blob)))
    return out


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_iree_libraries(data):
    """Truncations and byte flips outside machine code: INVALID_ARGUMENT (or
    INCOMPATIBLE, NOT_FOUND for a corrupted import name) or a working load; never a crash.
    Bytes are validated before they reach the system loader in this process."""
    name = data.draw(st.sampled_from(sorted(MANIFEST)))
    kind = data.draw(st.sampled_from(["embedded", "system"]))
    blob = bytearray((HERE / MANIFEST[name][kind]).read_bytes())
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        ranges = _non_code_ranges(bytes(blob))
        for _ in range(data.draw(st.integers(1, 4))):
            b, e = ranges[data.draw(st.integers(0, len(ranges) - 1))]
            blob[data.draw(st.integers(b, e - 1))] ^= data.draw(st.integers(1, 255))
    allowed = (hal.InvalidArgumentError, hal.IncompatibleError, hal.NotFoundError)
    try:
        validate_elf(bytes(blob), "fuzzed")
    except allowed:
        with pytest.raises(allowed):
            iree_elf.load_embedded_elf(bytes(blob))
        return
    try:
        iree_elf.load_embedded_elf(bytes(blob))
    except allowed:
        pass


# -- a hand-written library of the same ABI ---------------------------------------------

_HAND_WRITTEN = r"""
#include <string.h>
#include "hal_iree_abi.h"

/* out[i] = in[i] * env.constants[0] + dispatch constant 0, staged through local memory;
   also records what the environment and workgroup state hold. */
static int scale(const hal_iree_environment_t* env, const hal_iree_dispatch_state_t* d,
                 const hal_iree_workgroup_state_t* w) {
  if (!w->local_memory || w->local_memory_size < 2 * 4096 ||
      ((uintptr_t)w->local_memory & 63) || d->binding_count != 3 || d->constant_count != 1)
    return 1;
  const float* in = (const float*)d->binding_ptrs[0];
  float* out = (float*)d->binding_ptrs[1];
  uint32_t* info = (uint32_t*)d->binding_ptrs[2];
  float* tmp = (float*)w->local_memory;
  uint32_t n = (uint32_t)(d->binding_lengths[0] / 4), per = n / d->workgroup_count_x;
  uint32_t first = w->workgroup_id_x * per;
  for (uint32_t i = 0; i < per; ++i) tmp[i] = in[first + i] * (float)env->constants[0];
  for (uint32_t i = 0; i < per; ++i) out[first + i] = tmp[i] + (float)d->constants[0];
  if (w->workgroup_id_x == 0) {
    info[0] = (uint32_t)env->processor.data[0];
    info[1] = (uint32_t)(env->processor.data[0] >> 32);
    info[2] = d->workgroup_count_x;
    info[3] = d->max_concurrency;
  }
  return 0;
}

typedef struct { int a, b, sum; } add_params_t;

/* Calls the optional import when present: out[0] = 1 + 2 through it, or 0xFFFFFFFF. */
static int call_import(const hal_iree_environment_t* env, const hal_iree_dispatch_state_t* d,
                       const hal_iree_workgroup_state_t* w) {
  uint32_t* out = (uint32_t*)d->binding_ptrs[0];
  if (!env->import_funcs || !env->import_funcs[0]) { out[0] = 0xFFFFFFFFu; return 0; }
  add_params_t p = {1, 2, 0};
  int rc = env->import_thunk(env->import_funcs[0], &p, (void*)env->import_contexts[0], 0);
  out[0] = (uint32_t)p.sum;
  return rc;
}

static int fail(const hal_iree_environment_t* env, const hal_iree_dispatch_state_t* d,
                const hal_iree_workgroup_state_t* w) {
  return w->workgroup_id_x == 2 ? -7 : 0;
}

static const hal_iree_dispatch_fn_t kPtrs[] = {scale, call_import, fail};
static const hal_iree_dispatch_attrs_t kAttrs[] = {
    {0, 2, 1, 3, 4, 1, 1, 4, {0}},
    {1, 0, 0, 1, 1, 1, 1, 0, {0}},
    {0, 0, 0, 0, 1, 1, 1, 0, {0}},
};
static const hal_iree_dispatch_parameter_t kScaleParams[] = {
    {0, 4, 0, 0, 0}, {1, 8, 0, 1, 0}, {1, 8, 0, 2, 1}, {1, 8, 0, 0xFFFF, 2}};
static const hal_iree_dispatch_parameter_t* const kParams[] = {kScaleParams, 0, 0};
static const char* const kNames[] = {"scale", "call_import", "fail"};
static const char* const kParamNames[] = {"bias", "src", "dst"};
static const char* const kImports[] = {IMPORT_NAME};
static const hal_iree_library_header_t kHeader = {6, "hand_written", 0, 0};
static const hal_iree_library_t kLibrary = {
    &kHeader,
    {1, kImports},
    {3, kPtrs, kAttrs, kParams, 0, kNames, 0, kParamNames, 0, 0},
    1,
};

const hal_iree_library_header_t** iree_hal_executable_library_query(
    uint32_t max_version, const hal_iree_environment_t* environment) {
  return max_version >= 6 ? (const hal_iree_library_header_t**)&kLibrary : 0;
}
"""

_PROVIDER = r"""
typedef struct { int a, b, sum; } add_params_t;
int hal_test_add(void* params, void* context, void* reserved) {
  add_params_t* p = (add_params_t*)params;
  p->sum = p->a + p->b;
  return 0;
}
"""


def _hand_written(tmp_path, import_name: str) -> bytes:
    src = tmp_path / "hand.c"
    src.write_text(_HAND_WRITTEN.replace("IMPORT_NAME", f'"{import_name}"'))
    return Path(native_build.build_shared_library("iree_hand", src)).read_bytes()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HAL_LOCAL_CPU_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@needs_cc
@pytest.mark.parametrize("interpreted", [False, True])
def test_hand_written_library(device, cache_dir, interpreted, monkeypatch):
    data = _hand_written(cache_dir, "?hal_test_missing")
    cache = device.create_executable_cache("iree")
    with pytest.raises(hal.InvalidArgumentError, match="1 executable-level constants; 0"):
        cache.prepare("system-elf-x86_64", data)
    with pytest.raises(hal.InvalidArgumentError, match="uint32"):
        cache.prepare("system-elf-x86_64", data, constants=[-1])
    exe = cache.prepare("system-elf-x86_64", data, constants=[3])
    info = exe.function_info("scale")
    assert info.local_memory_size == 2 * 4096
    assert info.workgroup_size == (4, 1, 1)
    assert [(p.type, p.name, p.offset) for p in info.parameters] == [
        (hal.ParameterType.CONSTANT, "bias", 0),
        (hal.ParameterType.BINDING, "src", 0),
        (hal.ParameterType.BINDING, "dst", 1),
        (hal.ParameterType.BINDING, "p3", 2),
    ]
    assert exe.function_info("call_import").flags == hal.FunctionFlags.SEQUENTIAL
    if interpreted:
        monkeypatch.setattr(lcb, "replay_library", _no_compiler)

    src, dst, meta = _buffer(device, 64 * 4), _buffer(device, 64 * 4), _buffer(device, 64)
    src.write(np.arange(64, dtype=np.float32).tobytes())
    sem = device.create_semaphore()
    bias = np.array([5], np.uint32).tobytes()
    device.queue_dispatch(
        ANY, (), [(sem, 1)], exe, "scale", DispatchConfig.static(8), bias, [src, dst, meta]
    )
    sem.wait(1, TIMEOUT)
    assert np.frombuffer(dst.read(), np.float32).tolist() == [i * 3.0 + 5 for i in range(64)]
    words = np.frombuffer(meta.read(), np.uint32)
    assert int(words[0]) | int(words[1]) << 32 == iree_elf.processor_data()[0]
    assert words[2] == 8 and 1 <= words[3] <= 255

    out = _buffer(device, 64)
    sem = device.create_semaphore()
    device.queue_dispatch(
        ANY, (), [(sem, 1)], exe, "call_import", DispatchConfig.static(1), b"", [out]
    )
    sem.wait(1, TIMEOUT)
    assert np.frombuffer(out.read(), np.uint32)[0] == 0xFFFFFFFF  # optional import: NULL

    sem = device.create_semaphore()
    device.queue_dispatch(ANY, (), [(sem, 1)], exe, "fail", DispatchConfig.static(4), b"", [])
    with pytest.raises(hal.HalError) as failed:
        sem.wait(1, TIMEOUT)
    assert failed.value.code == hal.StatusCode.INTERNAL


@needs_cc
def test_imports_are_resolved(device, cache_dir, monkeypatch):
    cache = device.create_executable_cache("iree")
    with pytest.raises(hal.NotFoundError, match="hal_test_add"):
        cache.prepare(
            "embedded-elf-x86_64", _hand_written(cache_dir, "hal_test_add"), constants=[1]
        )
    src = cache_dir / "provider.c"
    src.write_text(_PROVIDER)
    pffi = cffi.FFI()
    pffi.cdef("int hal_test_add(void*, void*, void*);")
    provider = pffi.dlopen(str(native_build.build_shared_library("provider", src)))
    ptr = int(pffi.cast("intptr_t", provider.hal_test_add))
    monkeypatch.setitem(iree_elf.IMPORTS, "hal_test_add", ptr)
    exe = cache.prepare(
        "embedded-elf-x86_64", _hand_written(cache_dir, "hal_test_add"), constants=[1]
    )
    out = _buffer(device, 64)
    sem = device.create_semaphore()
    device.queue_dispatch(
        ANY, (), [(sem, 1)], exe, "call_import", DispatchConfig.static(1), b"", [out]
    )
    sem.wait(1, TIMEOUT)
    assert np.frombuffer(out.read(), np.uint32)[0] == 3
    del exe
