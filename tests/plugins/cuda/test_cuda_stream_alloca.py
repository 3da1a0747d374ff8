"""``cuda://0?alloca=stream`` over the stand-in driver: queue_alloca / queue_dealloca
through CUDA's stream-ordered allocator (``hal_cuda.stream_alloca``). The option, the
pool it creates, the driver calls per alloca and dealloca (own queue and across
queues), exhaustion at the call and after waits (nothing leaked), dropped buffers,
close, what keeps hal_core's pools, the bench entry, and the CTS on the option. The GPU
run is ``test_cuda_stream_alloca_gpu.py``."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hal_cuda import cuda_api
from hal_cuda import driver as cuda_driver
from hal_cuda.stream_alloca import StreamStorage

import hal_core
from hal_core import AllocaFlags, BufferParams, BufferUsage, MemoryType
from hal_core.backend import buffer_storage, device_from_backend

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fake_cuda_driver import TOTAL_MEMORY, FakeDriver, install  # noqa: E402

TIMEOUT = 10.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
RELEASE_THRESHOLD = 4  # CU_MEMPOOL_ATTR_RELEASE_THRESHOLD


@pytest.fixture
def fake(monkeypatch: Any) -> Any:
    """The stand-in driver as cuda.bindings.driver; the default unraisablehook, so an
    exception escaping a HAL thread fails the test."""
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    api = FakeDriver()
    install(monkeypatch, api)
    yield api
    cuda_api.reset_for_tests()


def _open(params: dict[str, str], path: str = "0") -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path(path, params)
    return device_from_backend(backend, driver_name="cuda", uri=f"cuda://{path}")


@pytest.fixture
def dev(fake: Any) -> Any:
    device = _open({"alloca": "stream"})
    yield device
    device.close()


def _fill_read(dev: Any, buf: Any, value: int, wait: tuple = ()) -> bytes:
    sem = dev.create_semaphore(0)
    out = dev.allocator.allocate_buffer(BufferParams(type=MemoryType.HOST_LOCAL, usage=USAGE), 64)
    dev.queue_fill(1, wait, [(sem, 1)], buf, 0, 64, bytes([value]))
    dev.queue_copy(1, [(sem, 1)], [(sem, 2)], buf, 0, out, 0, 64)
    sem.wait(2, TIMEOUT)
    return bytes(buffer_storage(out).host_array[:64])


def test_invalid_alloca_option_is_invalid_argument_naming_the_values(fake: Any) -> None:
    for bad in ("bogus", "STREAM", "tlsf"):
        with pytest.raises(hal_core.InvalidArgumentError, match="pools, stream"):
            _open({"alloca": bad})
    with pytest.raises(hal_core.InvalidArgumentError, match="known: queues, alloca"):
        _open({"alocca": "stream"})
    assert not fake.live_pools  # refused before anything was created
    _open({"alloca": "pools"}).close()
    assert not fake.live_pools


def test_default_devices_keep_the_pools_and_create_no_cuda_pool(fake: Any) -> None:
    device = _open({})
    sem = device.create_semaphore(0)
    buf = device.queue_alloca(1, [], [(sem, 1)], BufferParams(), 4096)
    device.queue_dealloca(1, [(sem, 1)], [(sem, 2)], buf)
    sem.wait(2, TIMEOUT)
    device.close()
    assert not fake.calls_on("").get("cuMemPoolCreate")
    assert not fake.calls_on("").get("cuMemAllocFromPoolAsync")


def test_pool_keeps_freed_memory_and_goes_with_the_device(fake: Any) -> None:
    device = _open({"alloca": "stream"})
    ((pool, attributes),) = fake.live_pools.items()
    assert attributes == {"location": 0, RELEASE_THRESHOLD: (1 << 64) - 1}
    sem = device.create_semaphore(0)
    buf = device.queue_alloca(1, [], [(sem, 1)], BufferParams(), 4096)
    sem.wait(1, TIMEOUT)
    assert fake.pool_allocations == {buffer_storage(buf).address: pool}
    device.close()
    assert not fake.live_pools  # destroyed; the live buffer's memory stays valid
    assert len(fake.pool_allocations) == 1
    del buf
    gc.collect()
    assert not fake.pool_allocations  # the dropped buffer freed it


def test_alloca_fill_dealloca_on_one_queue(dev: Any, fake: Any) -> None:
    base = fake.allocated
    fake.reset_calls()
    sem = dev.create_semaphore(0)
    buf = dev.queue_alloca(1, [], [(sem, 1)], BufferParams(usage=USAGE), 4096)
    assert buf.is_committed  # allocated on the stream at the call (no waits)
    assert fake.allocated == base + 4096
    assert _fill_read(dev, buf, 0x5A, ((sem, 1),)) == b"\x5a" * 64
    dev.queue_dealloca(1, [], [(sem, 3)], buf)
    sem.wait(3, TIMEOUT)
    assert buf.is_decommitted and fake.allocated == base and not fake.pool_allocations
    calls = fake.calls_on("")
    assert calls["cuMemAllocFromPoolAsync"] == 1 and calls["cuMemFreeAsync"] == 1
    assert not calls.get("cuMemAlloc") and not calls.get("cuStreamWaitEvent")


def test_alloca_behind_a_wait_allocates_when_it_is_reached(dev: Any, fake: Any) -> None:
    gate = dev.create_semaphore(0)
    sem = dev.create_semaphore(0)
    buf = dev.queue_alloca(1, [(gate, 1)], [(sem, 1)], BufferParams(usage=USAGE), 256)
    assert not buf.is_committed and not fake.pool_allocations
    gate.signal(1)
    sem.wait(1, TIMEOUT)
    assert buf.is_committed and len(fake.pool_allocations) == 1
    assert isinstance(buffer_storage(buf), StreamStorage)
    dev.queue_dealloca(1, [(sem, 1)], [(sem, 2)], buf)
    sem.wait(2, TIMEOUT)
    assert not fake.pool_allocations


def test_dealloca_on_another_queue_is_ordered_after_the_alloca_stream(dev: Any, fake: Any) -> None:
    sem = dev.create_semaphore(0)
    buf = dev.queue_alloca(1, [], [(sem, 1)], BufferParams(usage=USAGE), 4096)
    assert _fill_read(dev, buf, 3, ((sem, 1),)) == b"\x03" * 64
    fake.reset_calls()
    dev.queue_dealloca(2, [(sem, 1)], [(sem, 2)], buf)
    sem.wait(2, TIMEOUT)
    calls = fake.calls_on("")
    # an event on the alloca's stream, waited on by the dealloca's, then the free there
    assert calls["cuStreamWaitEvent"] == 1 and calls["cuMemFreeAsync"] == 1
    assert calls["cuEventRecord"] == 2  # the ordering event and the dealloca's own
    assert not fake.pool_allocations


def test_exhaustion_raises_at_the_call_or_fails_the_signals_leaking_nothing(
    dev: Any, fake: Any
) -> None:
    big = TOTAL_MEMORY * 3 // 4
    base = fake.allocated
    sem = dev.create_semaphore(0)
    first = dev.queue_alloca(1, [], [(sem, 1)], BufferParams(), big)
    # no waits: the allocation is tried at the call
    other = dev.create_semaphore(0)
    fake.reset_calls()
    with pytest.raises(hal_core.ResourceExhaustedError, match="cuMemAllocFromPoolAsync"):
        dev.queue_alloca(1, [], [(other, 1)], BufferParams(), big)
    assert other.value == 0 and fake.allocated == base + big
    # the pool gave back what it was not using, tried again, and gave back again
    calls = fake.calls_on("")
    assert calls["cuMemAllocFromPoolAsync"] == 2 and calls["cuMemPoolTrimTo"] == 2
    # behind a wait: the op fails with RESOURCE_EXHAUSTED when it runs
    failed = dev.create_semaphore(0)
    late = dev.queue_alloca(1, [(sem, 1)], [(failed, 1)], BufferParams(), big)
    with pytest.raises(hal_core.ResourceExhaustedError):
        failed.wait(1, TIMEOUT)
    assert not late.is_committed and fake.allocated == base + big
    # past the GPU's whole memory: refused at the call (the front door), whatever the waits
    with pytest.raises(hal_core.ResourceExhaustedError):
        dev.queue_alloca(1, [(sem, 1)], [(other, 1)], BufferParams(), TOTAL_MEMORY + 1)
    # the device still works: free the first, then the same request succeeds
    dev.queue_dealloca(1, [(sem, 1)], [(sem, 2)], first)
    again = dev.queue_alloca(1, [(sem, 2)], [(sem, 3)], BufferParams(), big)
    sem.wait(3, TIMEOUT)
    assert again.is_committed
    dev.queue_dealloca(1, [(sem, 3)], [(sem, 4)], again)
    sem.wait(4, TIMEOUT)
    assert fake.allocated == base and not fake.pool_allocations


def test_alignment_beyond_the_allocator_is_invalid_at_the_call(dev: Any) -> None:
    sem = dev.create_semaphore(0)
    with pytest.raises(hal_core.InvalidArgumentError, match="alignment"):
        dev.queue_alloca(1, [], [(sem, 1)], BufferParams(min_alignment=4096), 64)
    assert sem.value == 0


def test_dropped_and_indeterminate_buffers_give_their_memory_back(dev: Any, fake: Any) -> None:
    sem = dev.create_semaphore(0)
    buf = dev.queue_alloca(1, [], [(sem, 1)], BufferParams(), 1024)
    kept = dev.queue_alloca(
        1, [], [(sem, 2)], BufferParams(), 512, flags=AllocaFlags.INDETERMINATE_LIFETIME
    )
    sem.wait(2, TIMEOUT)
    dev.queue_dealloca(1, [(sem, 2)], [(sem, 3)], kept)  # a barrier: the memory stays
    sem.wait(3, TIMEOUT)
    assert len(fake.pool_allocations) == 2
    # Two more ops through the completion thread, each waited for: it has let go of the
    # allocas' ops (it drops a batch before it takes the next).
    for value in (4, 5):
        dev.queue_fill(1, [], [(sem, value)], buf, 0, 16, b"\x00")
        sem.wait(value, TIMEOUT)
    del buf, kept
    gc.collect()
    assert not fake.pool_allocations


def test_explicit_pools_host_memory_and_empty_allocas_keep_hal_core_pools(
    dev: Any, fake: Any
) -> None:
    fake.reset_calls()
    sem = dev.create_semaphore(0)
    host = dev.queue_alloca(
        1, [], [(sem, 1)], BufferParams(type=MemoryType.HOST_LOCAL, usage=USAGE), 256
    )
    empty = dev.queue_alloca(1, [], [(sem, 2)], BufferParams(), 0)
    sem.wait(2, TIMEOUT)
    assert buffer_storage(host).host_array is not None and empty.byte_length == 0
    dev.queue_dealloca(1, [], [(sem, 3)], host)
    dev.queue_dealloca(1, [], [(sem, 4)], empty)
    sem.wait(4, TIMEOUT)
    calls = fake.calls_on("")
    assert not calls.get("cuMemAllocFromPoolAsync") and not calls.get("cuMemFreeAsync")


def test_dealloca_whose_wait_failed_keeps_the_buffer(dev: Any, fake: Any) -> None:
    sem = dev.create_semaphore(0)
    buf = dev.queue_alloca(1, [], [(sem, 1)], BufferParams(usage=USAGE), 128)
    sem.wait(1, TIMEOUT)
    failed = dev.create_semaphore(0)
    failed.fail(hal_core.StatusCode.CANCELLED, "producer cancelled")
    done = dev.create_semaphore(0)
    try:
        dev.queue_dealloca(1, [(failed, 1)], [(done, 1)], buf)
    except hal_core.CancelledError:
        pass
    else:
        with pytest.raises(hal_core.CancelledError):
            done.wait(1, TIMEOUT)
    assert buf.is_committed and len(fake.pool_allocations) == 1
    assert _fill_read(dev, buf, 9) == b"\x09" * 64
    freed = dev.create_semaphore(0)
    dev.queue_dealloca(1, [], [(freed, 1)], buf)
    freed.wait(1, TIMEOUT)
    assert not fake.pool_allocations


def test_gpu_without_memory_pools_is_unimplemented_naming_the_default(fake: Any) -> None:
    fake.pool_refused = True
    with pytest.raises(hal_core.UnimplementedError, match="alloca=pools"):
        _open({"alloca": "stream"})
    _open({}).close()


def test_logical_device_members_take_the_option(monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    from fake_cuda_peers import FakePeerDriver

    api = FakePeerDriver(gpus=2)
    install(monkeypatch, api)
    try:
        device = _open({"alloca": "stream", "queues": "1"}, "")
        assert len(api.live_pools) == 2
        sem = device.create_semaphore(0)
        # allocated on GPU 1's queue, deallocated on GPU 0's: freed on GPU 1's stream
        buf = device.queue_alloca(0b10, [], [(sem, 1)], BufferParams(), 256)
        device.queue_dealloca(0b01, [(sem, 1)], [(sem, 2)], buf)
        sem.wait(2, TIMEOUT)
        assert not api.pool_allocations
        device.close()
        assert not api.live_pools
    finally:
        cuda_api.reset_for_tests()


CTS_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    from fake_cuda_driver import FakeDriver
    api = FakeDriver()
    package = type(sys)("cuda.bindings")
    package.driver = api
    sys.modules["cuda.bindings"] = package
    sys.modules["cuda.bindings.driver"] = api
    import pytest
    sys.exit(pytest.main([
        "-q", "-p", "no:cacheprovider", "--pyargs", "hal_core.cts",
        "--hal-device", "cuda://0?alloca=stream",
        "-k", "not dispatch and not command_buffer and not executable",
        "-o", "faulthandler_timeout=120",
    ]))
    """
)


def test_cts_passes_with_the_stream_ordered_allocator() -> None:
    """The CTS on the option, but for the suites that check what kernels compute (the
    stand-in runs no kernel; the GPU run covers them)."""
    code = CTS_SCRIPT.format(here=str(HERE))
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=HERE
    )
    tail = (run.stdout + run.stderr)[-3000:]
    assert run.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail


def test_bench_entry_runs_on_cuda_and_skips_elsewhere(fake: Any, monkeypatch: Any) -> None:
    from hal_cuda.bench_alloca import stream_ordered_uri

    opened: list[str] = []

    def create_device(uri: str) -> Any:
        # Not through the registry, which would keep the stand-in's driver for later tests.
        opened.append(uri)
        return _open({"alloca": "stream"})

    monkeypatch.setattr(hal_core, "create_device", create_device)

    from hal_core.bench import MODULES, BenchContext, BenchmarkSkipped, all_benchmarks

    assert "hal_cuda.bench_alloca" in MODULES
    entry = all_benchmarks()["alloca.e2e.stream_ordered"]
    assert entry.needs_device and entry.unit == "us/pair"
    assert stream_ordered_uri("cuda://0") == "cuda://0?alloca=stream"
    assert stream_ordered_uri("cuda://0?queues=3&alloca=pools") == (
        "cuda://0?queues=3&alloca=stream"
    )
    with pytest.raises(BenchmarkSkipped, match="cuda://"):
        entry.fn(BenchContext(None, "local-task://", repeats=1))
    assert not opened
    device = _open({})
    try:
        fake.reset_calls()
        assert entry.fn(BenchContext(device, "cuda://0", repeats=1)) > 0
        assert opened == ["cuda://0?alloca=stream"]
        # warm-up and one sample of 256 pairs, each through the CUDA pool
        assert fake.calls_on("")["cuMemAllocFromPoolAsync"] == 2 * 256
        assert not fake.pool_allocations and not fake.live_pools
    finally:
        device.close()
