"""File reads and writes to memory the host cannot map go through the queue set's staging
pool one chunk at a time (``file_chunk_size``), never through a temporary as large as the
transfer; the chunk is reused across transfers and freed with the device."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import hal_core
from hal_core import BufferParams, MemoryType

TIMEOUT = 30.0
CHUNK = 4096
URI = f"amdgpu://0?hsa=soft&file_chunk_size={CHUNK}"


@pytest.fixture(autouse=True)
def default_hooks(monkeypatch):
    """Python's own hooks, so that anything escaping a completion thread shows."""
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)


def _device_local(device, size):
    buf = device.allocator.allocate_buffer(BufferParams(type=MemoryType.DEVICE_LOCAL), size)
    from hal_core.backend import buffer_storage

    assert buffer_storage(buf).host_array is None  # the staged path, not an in-place read
    return buf


class _CopySpy:
    """Records the size of every ``hsa_memory_copy`` of the soft runtime."""

    def __init__(self, runtime, monkeypatch):
        self.sizes: list[int] = []
        real = runtime.hsa_memory_copy

        def copy(dst, src, size):
            self.sizes.append(int(size))
            return real(dst, src, size)

        monkeypatch.setattr(runtime, "hsa_memory_copy", copy)


def test_a_read_larger_than_the_chunk_is_staged_chunk_by_chunk(monkeypatch):
    length = 10 * CHUNK + 123  # not a multiple of the chunk
    data = np.random.default_rng(1).integers(0, 256, length + 7, dtype=np.uint8)
    with hal_core.create_device(URI) as device:
        assert device.backend.queue_options.file_chunk_size == CHUNK
        buf = _device_local(device, length + 64)
        spy = _CopySpy(device.backend.hsa.lib, monkeypatch)
        source = device.import_file(data, hal_core.MemoryAccess.READ)
        sem = device.create_semaphore(0)
        device.queue_read(1, [], [(sem, 1)], source, 7, buf, 64, length)
        sem.wait(1, TIMEOUT)
        assert spy.sizes == [CHUNK] * 10 + [123]
        # Back through a write (also staged), into a memory file.
        out = np.zeros(length, np.uint8)
        target = device.import_file(out, hal_core.MemoryAccess.WRITE)
        device.queue_write(2, [(sem, 1)], [(sem, 2)], buf, 64, target, 0, length)
        sem.wait(2, TIMEOUT)
        assert spy.sizes[11:] == [CHUNK] * 10 + [123]
        assert bytes(out) == bytes(data[7:])
        staging = device.backend._host_queue_set.file_staging
        # One chunk per completion thread that did file I/O, reused, never one per op.
        assert 1 <= staging.allocated <= 2
        for round_ in range(3, 8):
            device.queue_read(1, [(sem, round_ - 1)], [(sem, round_)], source, 0, buf, 0, CHUNK)
        sem.wait(7, TIMEOUT)
        assert staging.allocated <= 2


def test_closing_the_device_frees_the_staging_chunks():
    device = hal_core.create_device(URI)
    buf = _device_local(device, 3 * CHUNK)
    out = np.zeros(3 * CHUNK, np.uint8)
    sem = device.create_semaphore(0)
    target = device.import_file(out, hal_core.MemoryAccess.WRITE)
    device.queue_write(1, [], [(sem, 1)], buf, 0, target, 0, 3 * CHUNK)
    sem.wait(1, TIMEOUT)
    staging = device.backend._host_queue_set.file_staging
    runtime = device.backend.hsa.lib
    assert staging.allocated == 1
    live = len(runtime.memory._starts)
    device.close()
    assert staging.allocated == 0
    assert len(runtime.memory._starts) < live
    with pytest.raises(hal_core.CancelledError):
        staging.acquire()


def test_a_failing_file_fails_the_op_and_the_queue_keeps_working(monkeypatch, capfd):
    """A file that fails part way (its read raises on the second chunk) fails the op's
    signals; the chunk goes back to the pool, nothing escapes the completion thread and
    later transfers run."""
    with hal_core.create_device(URI) as device:
        buf = _device_local(device, 4 * CHUNK)
        data = np.random.default_rng(2).integers(0, 256, 4 * CHUNK, dtype=np.uint8)
        source = device.import_file(data, hal_core.MemoryAccess.READ)
        real = type(source).read_into
        calls = []

        def read_into(self, offset, out):
            calls.append(offset)
            if len(calls) == 2:
                raise hal_core.DataLossError("disk went away")
            return real(self, offset, out)

        sem = device.create_semaphore(0)
        with monkeypatch.context() as patch:
            patch.setattr(type(source), "read_into", read_into)
            device.queue_read(1, [], [(sem, 1)], source, 0, buf, 0, 4 * CHUNK)
            with pytest.raises(hal_core.DataLossError, match="disk went away"):
                sem.wait(1, TIMEOUT)
        assert calls == [0, CHUNK]
        staging = device.backend._host_queue_set.file_staging
        assert staging.allocated == 1 and len(staging._free) == 1
        ok = device.create_semaphore(0)
        device.queue_read(1, [], [(ok, 1)], source, 0, buf, 0, 4 * CHUNK)
        out = np.zeros(4 * CHUNK, np.uint8)
        device.queue_write(
            1,
            [(ok, 1)],
            [(ok, 2)],
            buf,
            0,
            device.import_file(out, hal_core.MemoryAccess.WRITE),
            0,
            4 * CHUNK,
        )
        ok.wait(2, TIMEOUT)
        assert bytes(out) == bytes(data)
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("value", ["100", "2048", str(2 << 30), "1.5", "lots"])
def test_file_chunk_size_out_of_range_is_invalid_argument(value):
    with pytest.raises(hal_core.InvalidArgumentError, match="file_chunk_size"):
        hal_core.create_device(f"amdgpu://0?hsa=soft&file_chunk_size={value}")
