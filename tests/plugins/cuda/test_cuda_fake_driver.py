"""hal-cuda's host-side logic over a stand-in driver API (``fake_cuda_driver``): device
creation and paths, memory types, every transfer op, file staging, pools, host calls,
close. Runs everywhere (CI has no GPU); the real driver is tested by ``test_cuda_gpu.py``."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hal_cuda import cuda_api
from hal_cuda import driver as cuda_driver

import hal_core
from hal_core import BufferParams, BufferUsage, MemoryAccess, MemoryType, QueueAffinity
from hal_core.backend import device_from_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import FakeDriver, install  # noqa: E402

ANY = QueueAffinity.ANY
TIMEOUT = 10.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER


@pytest.fixture
def fake(monkeypatch: Any) -> Any:
    """The stand-in driver API installed as cuda.bindings.driver (contexts forgotten
    before and after, so no real context is reused and none of the fake's survives)."""
    api = FakeDriver()
    install(monkeypatch, api)
    yield api
    cuda_api.reset_for_tests()


@pytest.fixture
def dev(fake: Any) -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    device = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    yield device
    device.close()


def read(dev: Any, buf: Any, offset: int = 0, length: int | None = None) -> bytes:
    length = buf.byte_length - offset if length is None else length
    out = bytearray(length)
    file = dev.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    s = dev.create_semaphore(0)
    dev.queue_write(ANY, (), [(s, 1)], buf, offset, file, 0, length)
    s.wait(1, TIMEOUT)
    file.close()
    return bytes(out)


def test_driver_lists_the_gpu_and_resolves_paths(fake: Any) -> None:
    driver = cuda_driver.CudaDriverBackend()
    (info,) = driver.query_available_devices()
    assert info.path == "0" and "Fake GPU (sm_90" in info.name
    uuid = "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert uuid in info.name and f"uuid: {uuid}" in driver.dump_device_info(1)
    for path in ("", "0", uuid, "0,0", uuid.lower()):
        backend = driver.create_device_by_path(path, {"queues": "3"})
        assert backend.queue_count == 3
        backend.close(1.0)
    with pytest.raises(hal_core.NotFoundError, match="no GPU '1'"):
        driver.create_device_by_path("1", {})
    with pytest.raises(hal_core.InvalidArgumentError, match="queues"):
        driver.create_device_by_path("0", {"queues": "99"})
    with pytest.raises(hal_core.InvalidArgumentError, match="bogus"):
        driver.create_device_by_path("0", {"bogus": "1"})


def test_memory_types_views_and_imports(dev: Any) -> None:
    d = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 64)
    assert d.memory_type.has(MemoryType.DEVICE_LOCAL)
    assert not d.memory_type.has(MemoryType.HOST_VISIBLE)
    h = dev.allocator.allocate_buffer(
        BufferParams(usage=USAGE | BufferUsage.MAPPING, type=MemoryType.HOST_LOCAL), 64
    )
    assert h.memory_type.has(MemoryType.HOST_LOCAL | MemoryType.DEVICE_VISIBLE)
    h.write(b"\x01\x02\x03\x04", 4)
    s = dev.create_semaphore(0)
    dev.queue_copy(ANY, (), [(s, 1)], h, 0, d, 0, 64)
    s.wait(1, TIMEOUT)
    assert read(dev, d, 0, 8) == b"\x00" * 4 + b"\x01\x02\x03\x04"
    raw = np.zeros(4099, np.uint8)
    array = raw[1:4097]  # odd address: the 2-D byte memset path
    imported = dev.allocator.import_host_buffer(BufferParams(usage=USAGE), array)
    dev.queue_fill(ANY, (), [(s, 2)], imported, 4, 8, b"\xaa\xbb\xcc\xdd")
    dev.queue_fill(ANY, (), [(s, 3)], imported, 12, 4, b"\x01\x02")
    s.wait(3, TIMEOUT)
    assert bytes(array[:18]) == b"\x00" * 4 + b"\xaa\xbb\xcc\xdd" * 2 + b"\x01\x02" * 2 + b"\0\0"


def test_exhaustion_is_resource_exhausted(dev: Any, fake: Any) -> None:
    with pytest.raises(hal_core.ResourceExhaustedError):
        dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 2 << 30)
    held = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), (1 << 30) - 4096)
    with pytest.raises(hal_core.ResourceExhaustedError, match="cuMemAlloc"):
        dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 8192)
    del held
    gc.collect()  # a root buffer references itself: collection frees its memory
    dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 8192)  # freed: room again


@pytest.mark.parametrize("pattern", [b"\x7f", b"\x01\x02", b"\x01\x02\x03\x04"])
def test_fill_update_copy_and_files(dev: Any, pattern: bytes) -> None:
    n = (8 << 20) + 100  # past one staging chunk
    data = np.random.default_rng(3).integers(0, 256, n, dtype=np.uint8)
    src = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), n)
    dst = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), n)
    s = dev.create_semaphore(0)
    dev.queue_read(ANY, (), [(s, 1)], dev.import_file(bytearray(data.tobytes())), 0, src, 0, n)
    dev.queue_copy(2, [(s, 1)], [(s, 2)], src, 0, dst, 0, n)
    dev.queue_fill(1, [(s, 2)], [(s, 3)], dst, 8, 16, pattern)
    dev.queue_update(2, [(s, 3)], [(s, 4)], np.full(4, 5, np.uint8), 0, dst, 40, 4)
    s.wait(4, TIMEOUT)
    expected = data.copy()
    expected[8:24] = np.frombuffer(pattern * (16 // len(pattern)), np.uint8)
    expected[40:44] = 5
    assert read(dev, dst) == expected.tobytes()


def test_queue_alloca_reuses_pool_memory_on_one_queue(dev: Any) -> None:
    s = dev.create_semaphore(0)
    value = 0
    for _ in range(4):
        buf = dev.queue_alloca(1, [(s, value)], [(s, value + 1)], BufferParams(usage=USAGE), 4096)
        dev.queue_fill(1, [(s, value + 1)], [(s, value + 2)], buf, 0, 4096, b"\x42")
        s.wait(value + 2, TIMEOUT)
        assert read(dev, buf, 4000, 4) == b"\x42" * 4
        dev.queue_dealloca(1, [(s, value + 2)], [(s, value + 3)], buf)
        value += 3
    s.wait(value, TIMEOUT)
    stats = dev.backend.pools.providers[0].query_stats()
    assert stats.slabs_acquired == 1  # one TLSF slab served every alloca


def test_host_calls_and_failures_never_kill_threads(dev: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    seen: list[int] = []

    def boom(args: Any, context: Any) -> None:
        seen.append(args[0])
        raise ValueError("user callback failed")

    a, b = dev.create_semaphore(0), dev.create_semaphore(0)
    dev.queue_host_call(1, (), [(a, 1)], boom, (1, 0, 0, 0))
    with pytest.raises(hal_core.UnknownError, match="ValueError"):
        a.wait(1, TIMEOUT)
    flags = hal_core.HostCallFlags.NON_BLOCKING
    dev.queue_host_call(1, (), [(b, 1)], boom, (2, 0, 0, 0), flags=flags)
    dev.queue_host_call(1, [(b, 1)], [(b, 2)], lambda args, ctx: seen.append(3))
    b.wait(2, TIMEOUT)
    assert seen == [1, 2, 3]


def test_close_cancels_parked_work_and_refuses_more(fake: Any) -> None:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    dev = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    gate, s = dev.create_semaphore(0), dev.create_semaphore(0)
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    dev.queue_fill(ANY, [(gate, 1)], [(s, 1)], buf, 0, 16, b"\x01")
    dev.close()
    with pytest.raises(hal_core.CancelledError):
        s.wait(1, TIMEOUT)
    with pytest.raises(hal_core.FailedPreconditionError):
        backend.submit(None)  # type: ignore[arg-type]


def test_executables_are_refused_without_module_support(dev: Any) -> None:
    cache = dev.create_executable_cache("x")
    with pytest.raises(hal_core.InvalidArgumentError):
        cache.prepare("ptx", b"not ptx")
    with pytest.raises(hal_core.UnimplementedError, match="cuModuleLoadData"):
        cache.prepare("cubin", b"\x7fELF not a real cubin")


def test_unretained_command_buffer_holds_its_buffers_weakly(dev: Any) -> None:
    import weakref

    mode = hal_core.CommandBufferMode.UNRETAINED
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    cb = dev.create_command_buffer(mode, hal_core.CommandCategory.ANY)
    cb.begin()
    cb.fill_buffer(buf, b"\x05")
    cb.end()
    s = dev.create_semaphore(0)
    dev.queue_execute(ANY, (), [(s, 1)], cb)
    s.wait(1, TIMEOUT)
    assert read(dev, buf) == b"\x05" * 16
    alive = weakref.ref(buf)
    del buf
    gc.collect()
    assert alive() is None  # the program did not keep it
    dev.queue_execute(ANY, (), [(s, 2)], cb)
    with pytest.raises(hal_core.FailedPreconditionError, match="UNRETAINED"):
        s.wait(2, TIMEOUT)


def test_retire_watermark_out_of_order_and_lazy_publishing() -> None:
    from hal_cuda.queue_pools import RetireWatermark

    from hal_core.backend import FrontierTracker, axis_make_queue

    tracker = FrontierTracker(axis_capacity=4)
    axis = axis_make_queue(1, 0, 0, 0)
    tracker.register_axis(axis)
    mark = RetireWatermark(tracker, axis)
    epochs = [mark.next_epoch() for _ in range(4)]
    assert epochs == [1, 2, 3, 4]
    mark.retire(2)
    assert mark.retired == 0
    mark.retire(1)
    assert mark.retired == 2
    assert tracker.published_epochs.get(axis, 0) == 0  # nobody waits on frontiers yet
    mark.start_publishing()
    assert tracker.published_epochs[axis] == 2
    mark.retire(4)
    mark.retire(3)
    assert mark.retired == 4 and tracker.published_epochs[axis] == 4
