"""Native executables against bad and hostile input: truncated and corrupted libraries
(validated before the loader sees them), files changed after preparation (private
copies), libraries released when their executables go (no leaked mappings),
executable-level constants, unsupported dispatch flags, and objects that are not Python
executables."""

from __future__ import annotations

import gc
import glob
import platform
import struct
from pathlib import Path

import numpy as np
import pytest
from hal_local_cpu.elf_validation import validate_elf
from hal_local_cpu.executable_native import load_native_executable, replay_available
from hal_local_cpu.kernels import native_library, python_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hal_core as hal
from hal_core import CommandBufferMode, CommandCategory, DispatchConfig, DispatchFlags

ANY = hal.QueueAffinity.ANY
ONE = DispatchConfig.static(1)
COUNT_4 = np.array([4], np.uint32).tobytes()
needs_cc = pytest.mark.skipif(not replay_available(), reason="no C compiler (cc)")
ALLOWED = (hal.InvalidArgumentError, hal.IncompatibleError)


@pytest.fixture(scope="module")
def library_bytes() -> bytes:
    if not replay_available():
        pytest.skip("no C compiler (cc)")
    return Path(native_library("cts_kernels")).read_bytes()


def _data_ranges(blob: bytes) -> list[tuple[int, int]]:
    """File ranges that are not machine code: what the loader reads and acts on (headers,
    dynamic tables, relocations, data). Code bytes are out of scope: no loader can judge
    whether an instruction stream is correct."""
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


def _load_checked(blob: bytes) -> None:
    """Validate first, then load in this process: only bytes that pass validation reach
    the system loader (and only they could crash it)."""
    try:
        validate_elf(blob, "fuzzed library")
    except ALLOWED:
        with pytest.raises(ALLOWED):
            load_native_executable(blob)
        return
    try:
        load_native_executable(blob)
    except ALLOWED:
        pass


@needs_cc
def test_truncated_library_is_invalid_argument(library_bytes):
    for cut in (len(library_bytes) - 1, len(library_bytes) // 2, 4096, 200, 64, 10):
        with pytest.raises(hal.InvalidArgumentError):
            load_native_executable(library_bytes[:cut])


@needs_cc
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_truncation(library_bytes, data):
    cut = data.draw(st.integers(0, len(library_bytes) - 1))
    _load_checked(library_bytes[:cut])


@needs_cc
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_byte_flips(library_bytes, data):
    ranges = _data_ranges(library_bytes)
    blob = bytearray(library_bytes)
    for _ in range(data.draw(st.integers(1, 4))):
        b, e = ranges[data.draw(st.integers(0, len(ranges) - 1))]
        pos = data.draw(st.integers(b, e - 1))
        blob[pos] ^= data.draw(st.integers(1, 255))
    _load_checked(bytes(blob))


@needs_cc
@pytest.mark.parametrize(
    "offset,value",
    [
        (32, 1 << 40),  # program headers far past the end
        (40, 1 << 40),  # section headers far past the end
        (56, 0),  # no program headers
        (18, 40),  # another machine
        (16, 2),  # an executable, not a shared object
    ],
)
def test_corrupt_header_fields(library_bytes, offset, value):
    blob = bytearray(library_bytes)
    size = 8 if offset in (32, 40) else 2
    blob[offset : offset + size] = value.to_bytes(size, "little")
    with pytest.raises(ALLOWED):
        load_native_executable(bytes(blob))


@needs_cc
def test_library_file_changed_after_prepare(tmp_path, library_bytes):
    """The loader maps a private copy: truncating the caller's file after preparation
    must not change (or fault) the loaded code."""
    path = tmp_path / "k.so"
    path.write_bytes(library_bytes)
    device = hal.create_device("local-sync://")
    try:
        exe = device.create_executable_cache("t").prepare("local-cpu-native", str(path))
        path.write_bytes(b"")  # truncated in place, same inode
        buf = device.allocator.allocate_buffer(
            hal.BufferParams(usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.MAPPING), 32
        )
        buf.write(np.arange(8, dtype=np.float32).tobytes())
        out = device.allocator.allocate_buffer(
            hal.BufferParams(usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.MAPPING), 32
        )
        sem = device.create_semaphore()
        device.queue_dispatch(ANY, (), [(sem, 1)], exe, "negate", ONE, COUNT_4, [buf, out])
        sem.wait(1, 20.0)
        assert np.frombuffer(out.read(), np.float32)[:4].tolist() == [0.0, -1.0, -2.0, -3.0]
    finally:
        device.close()


def _maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


@needs_cc
def test_dropped_executables_release_their_mappings(library_bytes):
    device = hal.create_device("local-sync://")
    cache = device.create_executable_cache("t")
    try:
        for _ in range(20):  # warm caches and allocator arenas
            cache.prepare("local-cpu-native", library_bytes)
        gc.collect()
        before = _maps()
        for _ in range(200):
            exe = cache.prepare("local-cpu-native", library_bytes)
            assert exe.function_count
            del exe
        gc.collect()
        # Each leaked library would add about five mappings (1,000 over 200 cycles).
        assert _maps() - before < 40
        exe = cache.prepare("local-cpu-native", library_bytes)
        library = exe.backend.library
        exe.close()  # closing forbids new work; the code stays while referenced
        assert not library.released
        del exe
        gc.collect()
        assert library.released
    finally:
        device.close()


@needs_cc
def test_programs_keep_the_library_loaded(library_bytes):
    device = hal.create_device("local-task://")
    try:
        exe = device.create_executable_cache("t").prepare("local-cpu-native", library_bytes)
        library = exe.backend.library
        cb = device.create_command_buffer(0, CommandCategory.ANY, ANY, 0)
        cb.begin()
        cb.dispatch(exe, "noop", ONE)
        cb.end()
        del exe
        gc.collect()
        assert not library.released
        sem = device.create_semaphore()
        device.queue_execute(ANY, (), [(sem, 1)], cb, None)
        sem.wait(1, 20.0)
        cb.close()
        del cb
        gc.collect()
        assert library.released
    finally:
        device.close()


@needs_cc
def test_executable_constants_are_unimplemented_for_native_and_python():
    device = hal.create_device("local-sync://")
    try:
        cache = device.create_executable_cache("t")
        with pytest.raises(hal.UnimplementedError, match="executable-level constants"):
            cache.prepare("local-cpu-native", native_library("cts_kernels"), constants=[1, 2])
        with pytest.raises(hal.UnimplementedError, match="executable-level constants"):
            cache.prepare("local-cpu-python", python_module("cts_kernels"), constants=[7])
        assert cache.prepare("local-cpu-native", native_library("cts_kernels"), constants=[])
    finally:
        device.close()


@needs_cc
@pytest.mark.parametrize("uri", ["local-task://", "local-sync://"])
@pytest.mark.parametrize(
    "flag",
    [
        DispatchFlags.CUSTOM_DIRECT_ARGUMENTS,
        DispatchFlags.DYNAMIC_INDIRECT_ARGUMENTS,
        DispatchFlags.STATIC_INDIRECT_ARGUMENTS,
    ],
)
def test_unvalidated_custom_argument_dispatch_is_rejected(uri, flag):
    device = hal.create_device(uri)
    try:
        exe = device.create_executable_cache("t").prepare(
            "local-cpu-native", native_library("cts_kernels")
        )
        cb = device.create_command_buffer(
            CommandBufferMode.UNVALIDATED, CommandCategory.ANY, ANY, 0
        )
        cb.begin()
        cb.dispatch(exe, "noop", ONE, b"", (), flag)
        with pytest.raises(hal.UnimplementedError, match="not implemented"):
            cb.end()
        # Plain dispatches in UNVALIDATED recordings still run.
        cb = device.create_command_buffer(
            CommandBufferMode.UNVALIDATED, CommandCategory.ANY, ANY, 0
        )
        cb.begin()
        cb.dispatch(exe, "noop", ONE, b"", (), DispatchFlags.ALLOW_INLINE_EXECUTION)
        cb.end()
        sem = device.create_semaphore()
        device.queue_execute(ANY, (), [(sem, 1)], cb, None)
        sem.wait(1, 20.0)
    finally:
        device.close()


@pytest.mark.parametrize("value", [np.zeros(4), np.zeros((2, 2)), 3.5, object()])
def test_non_executable_objects_are_invalid_argument(value):
    device = hal.create_device("local-sync://")
    try:
        with pytest.raises(hal.InvalidArgumentError, match="no kernels"):
            device.create_executable_cache("t").prepare("local-cpu-python", value)
        with pytest.raises(hal.InvalidArgumentError):
            device.create_executable_cache("t").prepare("local-cpu-native", value)
    finally:
        device.close()


def test_validator_accepts_the_systems_libraries():
    """No false rejections: the host's own shared libraries (packed relative relocations,
    TLS descriptors, interpreters in libc, version tables) pass validation."""
    if platform.machine() != "x86_64":
        pytest.skip("checks x86-64 system libraries")
    paths = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/lib*.so.*"))[:300]
    if not paths:
        pytest.skip("no system libraries at /usr/lib/x86_64-linux-gnu")
    checked = 0
    for path in paths:
        blob = Path(path).read_bytes()
        if blob[:4] != b"\x7fELF":
            continue  # a linker script
        validate_elf(blob, path)
        checked += 1
    assert checked
