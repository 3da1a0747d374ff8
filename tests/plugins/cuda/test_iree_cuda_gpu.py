"""IREE-compiled CUDA executables (the committed cuda-nvptx-fb fixtures) prepared and run
by hal-cuda on a real GPU, launched as IREE launches them: bindings as device pointers,
the export's block dims and dynamic shared memory, the workgroup count IREE's host code
uses. Skipped where no GPU is usable; ``plugins/cuda/tools/gpu_check.sh`` runs it there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hal_cuda.iree_cuda_container import parse_container

import hal_core
from hal_core import BufferParams, BufferUsage, DispatchConfig, MemoryAccess, MemoryType

ANY = hal_core.QueueAffinity.ANY
TIMEOUT = 30.0
HERE = Path(__file__).resolve().parent / "iree_executables"
MANIFEST = json.loads((HERE / "manifest.json").read_text())["programs"]


def _open() -> Any:
    try:
        return hal_core.create_device("cuda://0")
    except hal_core.UnavailableError as exc:
        pytest.skip(f"no usable NVIDIA GPU here: {exc}", allow_module_level=True)


DEVICE = _open()


def _buffer(data: np.ndarray) -> Any:
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    buf = DEVICE.allocator.allocate_buffer(
        BufferParams(
            usage=BufferUsage.DEFAULT | BufferUsage.TRANSFER, type=MemoryType.DEVICE_LOCAL
        ),
        raw.nbytes,
    )
    sem = DEVICE.create_semaphore(0)
    DEVICE.queue_update(ANY, (), [(sem, 1)], raw, 0, buf, 0, raw.nbytes)
    sem.wait(1, TIMEOUT)
    return buf


def _read_f32(buf: Any) -> np.ndarray:
    out = bytearray(buf.byte_length)
    file = DEVICE.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    sem = DEVICE.create_semaphore(0)
    DEVICE.queue_write(ANY, (), [(sem, 1)], buf, 0, file, 0, len(out))
    sem.wait(1, TIMEOUT)
    file.close()
    return np.frombuffer(bytes(out), np.float32)


def _prepare(program: str) -> Any:
    data = (HERE / f"{program}.cda1").read_bytes()
    return DEVICE.create_executable_cache("iree").prepare("cuda-nvptx-fb", data)


def _dispatch(exe: Any, program: str, index: int, bindings: list[Any]) -> None:
    export = MANIFEST[program]["exports"][index]
    sem = DEVICE.create_semaphore(0)
    config = DispatchConfig.static(*export["workgroup_count"])
    DEVICE.queue_dispatch(ANY, (), [(sem, 1)], exe, export["name"], config, b"", bindings)
    sem.wait(1, TIMEOUT)


@pytest.mark.parametrize("program", sorted(MANIFEST))
def test_reflection_matches_the_container(program):
    exe = _prepare(program)
    for export in parse_container((HERE / f"{program}.cda1").read_bytes()).exports:
        info = exe.function_info(export.name)
        assert info.binding_count == export.binding_count
        assert info.constant_count == export.constant_count
        assert tuple(info.workgroup_size) == export.workgroup_size


def test_add_runs():
    a = np.arange(64, dtype=np.float32)
    b = 2 * a + 1
    out = _buffer(np.zeros(64, np.float32))
    _dispatch(_prepare("add"), "add", 0, [_buffer(a), _buffer(b), out])
    assert np.array_equal(_read_f32(out), a + b)


def test_two_exports_run_including_dynamic_shared_memory():
    """The reduction uses 16 bytes of dynamic shared memory: it only sums right when the
    launch passes the export's block_shared_memory_size. IREE packs both results in one
    buffer, as its host code binds them: the product at bytes [0, 1024) (the multiply's
    binding 2) and the sum at byte 1024 (the reduction stores at ``[binding1 + 1024]``),
    the whole padded to IREE's 16-byte alignment."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal(256).astype(np.float32)
    b = rng.standard_normal(256).astype(np.float32)
    exe = _prepare("two_exports")
    a_buf, b_buf = _buffer(a), _buffer(b)
    results = _buffer(np.full(256 + 4, np.nan, np.float32))
    _dispatch(exe, "two_exports", 0, [a_buf, b_buf, results])
    _dispatch(exe, "two_exports", 1, [a_buf, results])
    out = _read_f32(results)
    assert np.array_equal(out[:256], a * b)
    assert np.isclose(out[256], a.sum(dtype=np.float64), rtol=1e-5, atol=1e-5)
    assert np.isnan(out[257:]).all()  # the padding is untouched


def test_malformed_container_is_invalid_argument_at_prepare():
    data = bytearray((HERE / "add.cda1").read_bytes())
    data[64 + 4 : 64 + 8] = b"HIP1"
    cache = DEVICE.create_executable_cache("iree")
    with pytest.raises(hal_core.InvalidArgumentError):
        cache.prepare("cuda-nvptx-fb", bytes(data))
    _dispatch(_prepare("add"), "add", 0, [_buffer(np.zeros(64, np.float32))] * 3)  # still usable
