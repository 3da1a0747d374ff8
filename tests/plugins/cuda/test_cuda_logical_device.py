"""``cuda://`` over several GPUs as one logical device (``hal_cuda.logical_device``) on the
stand-in driver with two GPUs: queues spread over the GPUs, memory on the queue's GPU,
executables and programs per GPU, host calls, queue allocations, waits between GPUs and
peer access."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hal_cuda import cuda_api
from hal_cuda import driver as cuda_driver
from hal_cuda.kernels import CTS_LIBRARY, load_ptx
from hal_cuda.logical_device import CudaLogicalDevice

import hal_core
from hal_core import BufferParams, BufferUsage, DispatchConfig, MemoryAccess, StatusCode
from hal_core.backend import device_from_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import install  # noqa: E402
from fake_cuda_peers import FakePeerDriver  # noqa: E402

TIMEOUT = 10.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
COUNT_4 = (4).to_bytes(4, "little")


@pytest.fixture
def fake(monkeypatch: Any) -> Any:
    api = FakePeerDriver(gpus=2)
    install(monkeypatch, api)
    yield api
    api.release()
    cuda_api.reset_for_tests()


@pytest.fixture
def dev(fake: Any) -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("", {})
    device = device_from_backend(backend, driver_name="cuda", uri="cuda://")
    yield device
    device.close()


def read(dev: Any, buf: Any) -> bytes:
    out = bytearray(buf.byte_length)
    file = dev.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    s = dev.create_semaphore(0)
    dev.queue_write(1, (), [(s, 1)], buf, 0, file, 0, buf.byte_length)
    s.wait(1, TIMEOUT)
    file.close()
    return bytes(out)


def test_queues_are_the_gpus_streams_side_by_side(dev: Any, fake: Any) -> None:
    backend = dev._backend
    assert isinstance(backend, CudaLogicalDevice) and dev.queue_count == 4
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 64)
    for q in range(4):
        s = dev.create_semaphore(0)
        dev.queue_fill(1 << q, [], [(s, 1)], buf, 16 * q, 16, bytes([q + 1]))
        s.wait(1, TIMEOUT)
    assert read(dev, buf) == b"".join(bytes([q + 1]) * 16 for q in range(4))
    # Logical queue q ran on GPU q // 2, keeping its index (the read ran on queue 0 too):
    # each member retires only its own queues.
    retired = [[w.retired for w in m.pools.watermarks] for m in backend.members]
    assert retired == [[2, 1, 0, 0], [0, 0, 1, 1]]


def test_device_memory_is_placed_on_the_gpu_of_the_first_queue(dev: Any) -> None:
    allocator = dev._backend.allocator
    first, second = dev._backend.members
    assert allocator.member_for(BufferParams(usage=USAGE)) is first  # ANY: GPU 0
    assert allocator.member_for(BufferParams(usage=USAGE, queue_affinity=0b1100)) is second
    assert allocator.member_for(BufferParams(usage=USAGE, queue_affinity=0b1010)) is first
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE, queue_affinity=0b100), 32)
    s = dev.create_semaphore(0)
    dev.queue_fill(0b1, [], [(s, 1)], buf, 0, 32, b"\x5a")  # GPU 0 fills GPU 1's memory
    s.wait(1, TIMEOUT)
    assert read(dev, buf) == b"\x5a" * 32


def test_peer_access_is_enabled_between_the_gpus(dev: Any, fake: Any) -> None:
    assert dev._backend.peer_access == {(0, 1): True, (1, 0): True}
    assert fake.peers_enabled == {(0, 1), (1, 0)}


def test_dispatch_runs_the_executable_loaded_on_the_queues_gpu(dev: Any, fake: Any) -> None:
    exe = dev.create_executable_cache("logical").prepare("ptx", load_ptx(CTS_LIBRARY))
    fn = exe.lookup_function("negate")
    handles = [loaded.kernels[fn].handle for loaded in exe.backend.loaded]
    assert handles[0] != handles[1]
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    for q, gpu in ((0, 0), (3, 1), (1, 0), (2, 1)):
        fake.launched_functions.clear()
        s = dev.create_semaphore(0)
        dev.queue_dispatch(
            1 << q, (), [(s, 1)], exe, fn, DispatchConfig.static(1), COUNT_4, (buf, buf)
        )
        s.wait(1, TIMEOUT)
        assert fake.launched_functions == [handles[gpu]]
    # A command buffer's program is built for the GPU of the queue it runs on (one-shot
    # command buffers of a shape not recorded before replay as launches, so the launch
    # shows the function handle: each recording here has a workgroup count of its own).
    for count, (q, gpu) in enumerate(((2, 1), (0, 0), (3, 1)), 1):
        cb = dev.create_command_buffer(
            hal_core.CommandBufferMode.ONE_SHOT,
            hal_core.CommandCategory.ANY,
            hal_core.QueueAffinity.ANY,
            0,
        )
        cb.begin()
        cb.dispatch(exe, fn, DispatchConfig.static(count), COUNT_4, (buf, buf))
        cb.end()
        fake.launched_functions.clear()
        s = dev.create_semaphore(0)
        dev.queue_execute(1 << q, (), [(s, 1)], cb)
        s.wait(1, TIMEOUT)
        assert fake.launched_functions == [handles[gpu]]


def test_host_calls_see_the_logical_queue_and_device(dev: Any) -> None:
    seen: list[tuple[Any, int]] = []

    def callback(args: tuple, context: Any) -> None:
        seen.append((context.device, context.queue_affinity))

    for q in (3, 0, 2):
        s = dev.create_semaphore(0)
        dev.queue_host_call(1 << q, [], [(s, 1)], callback, (q, 0, 0, 0))
        s.wait(1, TIMEOUT)
    assert seen == [(dev, 1 << 3), (dev, 1 << 0), (dev, 1 << 2)]


def test_queue_alloca_draws_from_the_queues_gpu(dev: Any) -> None:
    first, second = dev._backend.members
    s = dev.create_semaphore(0)
    buf = dev.queue_alloca(0b1000, [], [(s, 1)], BufferParams(usage=USAGE), 4096)
    s.wait(1, TIMEOUT)
    assert second.pools.providers[0].query_stats().slabs_acquired == 1
    assert first.pools.providers[0].query_stats().slabs_acquired == 0
    dev.queue_dealloca(0b1000, [(s, 1)], [(s, 2)], buf)
    s.wait(2, TIMEOUT)


def test_a_wait_on_another_gpus_work_waits_on_the_stream(dev: Any, fake: Any) -> None:
    first, second = dev._backend.members
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 64)
    fake.hold()
    produced, busy, done = (dev.create_semaphore(0) for _ in range(3))
    dev.queue_fill(0b0001, [], [(produced, 1)], buf, 0, 32, b"\x01")  # GPU 0
    dev.queue_fill(0b1000, [], [(busy, 1)], buf, 32, 16, b"\x02")  # GPU 1, in flight
    dev.queue_fill(0b0100, [(produced, 1)], [(done, 1)], buf, 48, 16, b"\x03")  # GPU 1
    assert second.stream_waits.counts() == {"event": 0, "word": 1, "host": 0}
    ((stream, _address, value, _flags),) = fake.value_waits
    assert stream is second.streams[2] and value == 1
    fake.release()
    done.wait(1, TIMEOUT)
    # A failure crosses GPUs too.
    fake.hold()
    failed, later = dev.create_semaphore(0), dev.create_semaphore(0)
    dev.queue_fill(0b0001, [], [(failed, 1)], buf, 0, 16, b"\x01")
    dev.queue_fill(0b1000, [], [(busy, 2)], buf, 32, 16, b"\x02")
    dev.queue_fill(0b0100, [(failed, 1)], [(later, 1)], buf, 48, 16, b"\x03")
    failed.fail(StatusCode.DATA_LOSS, "producer lost its data")
    fake.release()
    with pytest.raises(hal_core.HalError) as info:
        later.wait(1, TIMEOUT)
    assert info.value.code == StatusCode.DATA_LOSS
    assert np.frombuffer(read(dev, buf)[:16], np.uint8).tolist() == [1] * 16


def test_unreachable_peers_still_copy_and_report_no_access(monkeypatch: Any) -> None:
    api = FakePeerDriver(gpus=2, peer_access=False)
    install(monkeypatch, api)
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0,1", {"queues": "1"})
    assert isinstance(backend, CudaLogicalDevice)
    dev = device_from_backend(backend, driver_name="cuda", uri="cuda://0,1")
    try:
        assert dev.queue_count == 2 and backend.peer_access == {(0, 1): False, (1, 0): False}
        a = dev.allocator.allocate_buffer(BufferParams(usage=USAGE, queue_affinity=1), 16)
        b = dev.allocator.allocate_buffer(BufferParams(usage=USAGE, queue_affinity=2), 16)
        s = dev.create_semaphore(0)
        dev.queue_fill(1, [], [(s, 1)], a, 0, 16, b"\x11")
        dev.queue_copy(2, [(s, 1)], [(s, 2)], a, 0, b, 0, 16)
        s.wait(2, TIMEOUT)
        assert read(dev, b) == b"\x11" * 16
    finally:
        dev.close()
        cuda_api.reset_for_tests()


def test_launch_limits_are_checked_at_the_call_on_any_gpu(dev: Any, fake: Any) -> None:
    """A grid CUDA cannot launch is OUT_OF_RANGE at ``queue_dispatch`` (whichever GPU
    the queue is on) and at ``end()``; nothing is queued and later work runs."""
    exe = dev.create_executable_cache("limits").prepare("ptx", load_ptx(CTS_LIBRARY))
    fn = exe.lookup_function("negate")
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    huge = DispatchConfig.static(1, 1 << 20)  # y beyond CUDA's 65535
    s = dev.create_semaphore(0)
    for q in (0, 3):
        with pytest.raises(hal_core.OutOfRangeError, match="grid limit"):
            dev.queue_dispatch(1 << q, (), [(s, 1)], exe, fn, huge, COUNT_4, (buf, buf))
    cb = dev.create_command_buffer(0, hal_core.CommandCategory.ANY, hal_core.QueueAffinity.ANY, 0)
    cb.begin()
    cb.dispatch(exe, fn, huge, COUNT_4, (buf, buf))
    with pytest.raises(hal_core.OutOfRangeError, match="grid limit"):
        cb.end()
    assert fake.launched_functions == [] and s.query() == 0
    dev.queue_dispatch(0b1000, (), [(s, 1)], exe, fn, DispatchConfig.static(1), COUNT_4, (buf, buf))
    s.wait(1, TIMEOUT)
    assert fake.launched_functions == [exe.backend.loaded[1].kernels[fn].handle]


def test_uuid_lists_order_the_gpus_as_named(fake: Any) -> None:
    driver = cuda_driver.CudaDriverBackend()
    uuids = {g.ordinal: g.uuid for g in driver.gpus}
    backend = driver.create_device_by_path(f"{uuids[1].lower()}, 0", {"queues": "3"})
    try:
        assert isinstance(backend, CudaLogicalDevice) and backend.queue_count == 6
        assert [m.ctx.ordinal for m in backend.members] == [1, 0]
        assert [backend._by_queue[q].ctx.ordinal for q in range(6)] == [1, 1, 1, 0, 0, 0]
    finally:
        backend.close(1.0)
    with pytest.raises(hal_core.NotFoundError, match="no GPU 'GPU-ff"):
        driver.create_device_by_path("0,GPU-ffffffff-0000-0000-0000-000000000000", {})


@pytest.mark.parametrize("path", ["0,,1", "0,one", "0;1", " , "])
def test_malformed_paths_are_invalid_and_open_nothing(fake: Any, path: str) -> None:
    driver = cuda_driver.CudaDriverBackend()
    with pytest.raises(hal_core.InvalidArgumentError, match="neither a GPU ordinal"):
        driver.create_device_by_path(path, {})
    assert "cuStreamCreate" not in fake.calls_on("MainThread")  # no member was built
