"""Kernel-only programs as shared graph instances on a real GPU: the results of a graph
launch (built at ``end()``, reused untouched by a later one-shot recording of the same
shape, or with some kernel nodes set for other buffers and constants) are bit-identical
to the same program replayed as stream launches. Skipped where no GPU is usable
(``plugins/cuda/tools/gpu_check.sh`` runs these on the GPU machine)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import hal_core
from hal_core import (
    BufferParams,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    MemoryAccess,
    MemoryType,
    QueueAffinity,
)

ANY = QueueAffinity.ANY
TIMEOUT = 30.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
ONE_SHOT = CommandBufferMode.ONE_SHOT | CommandBufferMode.UNVALIDATED
CHAIN = 64


def _open() -> Any:
    try:
        return hal_core.create_device("cuda://0")
    except hal_core.UnavailableError as exc:
        pytest.skip(f"no usable NVIDIA GPU here: {exc}", allow_module_level=True)


DEVICE = _open()


def _buffers(dev: Any, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):
        buf = dev.allocator.allocate_buffer(
            BufferParams(usage=USAGE, type=MemoryType.DEVICE_LOCAL), 16
        )
        data = rng.standard_normal(4).astype(np.float32).tobytes()
        s = dev.create_semaphore(0)
        dev.queue_update(ANY, (), [(s, 1)], np.frombuffer(data, np.uint8), 0, buf, 0, 16)
        s.wait(1, TIMEOUT)
        out.append(buf)
    return out


def _read(dev: Any, bufs: list[Any]) -> bytes:
    out = bytearray(16 * len(bufs))
    file = dev.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    s = dev.create_semaphore(0)
    for i, buf in enumerate(bufs):
        dev.queue_write(ANY, (), [(s, i + 1)], buf, 0, file, 16 * i, 16)
        s.wait(i + 1, TIMEOUT)
    file.close()
    return bytes(out)


def _record(dev: Any, exe: Any, bufs: list[Any], mode: int) -> Any:
    """negate bufs[i % 4] -> bufs[(i + 1) % 4] over 1 + i % 4 elements, a barrier after each."""
    cb = dev.create_command_buffer(mode, CommandCategory.ANY, ANY, 0)
    cb.begin()
    for i in range(CHAIN):
        count = (1 + i % 4).to_bytes(4, "little")
        pair = (bufs[i % 4], bufs[(i + 1) % 4])
        cb.dispatch(exe, "negate", DispatchConfig.static(1), count, pair)
        cb.execution_barrier()
    cb.end()
    return cb


def _run(dev: Any, cb: Any) -> None:
    s = dev.create_semaphore(0)
    dev.queue_execute(ANY, (), [(s, 1)], cb)
    s.wait(1, TIMEOUT)


def _stream_result(dev: Any, exe: Any, seed: int) -> bytes:
    bufs = _buffers(dev, seed)
    cb = _record(dev, exe, bufs, 0)
    cb.program.graph = None  # stream launches
    _run(dev, cb)
    return _read(dev, bufs)


def test_shared_instances_match_stream_launches_bit_for_bit() -> None:
    from hal_cuda.kernels import CTS_LIBRARY, load_ptx

    dev = DEVICE
    exe = dev.create_executable_cache("kernel-graphs").prepare("ptx", load_ptx(CTS_LIBRARY))
    kernel = dev.backend.graph_cache.kernel
    expected = _stream_result(dev, exe, 3)
    # A reusable recording: its own instance, built at end().
    bufs = _buffers(dev, 3)
    cb = _record(dev, exe, bufs, 0)
    _run(dev, cb)
    assert _read(dev, bufs) == expected
    # A one-shot recording of the same shape and buffers: the instance, untouched.
    for buf, fresh in zip(bufs, _buffers(dev, 3)):
        s = dev.create_semaphore(0)
        dev.queue_copy(ANY, (), [(s, 1)], fresh, 0, buf, 0, 16)
        s.wait(1, TIMEOUT)
    sets = kernel.node_sets
    one_shot = _record(dev, exe, bufs, ONE_SHOT)
    assert one_shot.program.graph is not None
    _run(dev, one_shot)
    assert kernel.node_sets == sets
    assert _read(dev, bufs) == expected
    # Other buffers: the kernel nodes naming them are set before the launch.
    expected_other = _stream_result(dev, exe, 7)
    other = _buffers(dev, 7)
    one_shot = _record(dev, exe, other, ONE_SHOT)
    _run(dev, one_shot)
    assert kernel.node_sets > sets
    assert _read(dev, other) == expected_other
