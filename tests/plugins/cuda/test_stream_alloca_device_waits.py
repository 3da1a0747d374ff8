"""``cuda://0?alloca=stream`` allocas and deallocas whose waits are this device's in-flight
stream work: queued on the stream at once behind device-side waits (no host round trip),
over the stand-in driver with the GPU held (events unreached) so every op is provably
queued before its producer completes. Driver calls, cross-queue events, failure
propagation (the failed alloca decommitted, nothing leaked), exhaustion, mixed waits
(host deferral kept), chains across two queues, close mid-way; Python's default
unraisablehook throughout."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import pytest
from hal_cuda import cuda_api
from hal_cuda import driver as cuda_driver
from hal_cuda.stream_alloca import StreamStorage

import hal_core
from hal_core import BufferParams, BufferUsage, MemoryType, StatusCode
from hal_core.backend import buffer_storage, device_from_backend

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fake_cuda_driver import TOTAL_MEMORY, FakeDriver, install  # noqa: E402

TIMEOUT = 10.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
Q0, Q1 = 0b01, 0b10


@pytest.fixture
def fake(monkeypatch: Any) -> Any:
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    api = FakeDriver()
    install(monkeypatch, api)
    yield api
    api.release()
    cuda_api.reset_for_tests()


@pytest.fixture
def dev(fake: Any) -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {"alloca": "stream"})
    device = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    yield device
    fake.release()
    device.close()


def _backend(dev: Any) -> Any:
    return dev.backend


def _producer(dev: Any, fake: Any, affinity: int = Q0) -> tuple[Any, Any]:
    """A fill in flight (the GPU held): (its semaphore, signalled to 1 when it completes;
    the scratch buffer it fills)."""
    scratch = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 64)
    sem = dev.create_semaphore(0)
    dev.queue_fill(affinity, [], [(sem, 1)], scratch, 0, 64, b"\x01")
    assert sem.value == 0
    return sem, scratch


def _read(dev: Any, buf: Any, wait: tuple) -> bytes:
    out = dev.allocator.allocate_buffer(BufferParams(type=MemoryType.HOST_LOCAL, usage=USAGE), 64)
    sem = dev.create_semaphore(0)
    dev.queue_copy(Q0, wait, [(sem, 1)], buf, 0, out, 0, 64)
    sem.wait(1, TIMEOUT)
    return bytes(buffer_storage(out).host_array[:64])


def test_alloca_behind_own_queue_work_is_queued_at_once_with_no_wait_call(
    dev: Any, fake: Any
) -> None:
    fake.hold()
    produced, _scratch = _producer(dev, fake)
    fake.reset_calls()
    before = _backend(dev).stream_waits.event
    sem = dev.create_semaphore(0)
    buf = dev.queue_alloca(Q0, [(produced, 1)], [(sem, 1)], BufferParams(usage=USAGE), 256)
    # queued on the stream while the producer still runs: committed, nothing waited on
    # the host, no cuStreamWaitEvent (stream order is the wait)
    assert buf.is_committed and isinstance(buffer_storage(buf), StreamStorage)
    assert produced.value == 0 and sem.value == 0
    calls = fake.calls_on("")
    assert calls["cuMemAllocFromPoolAsync"] == 1 and not calls.get("cuStreamWaitEvent")
    assert _backend(dev).stream_waits.event == before + 1
    fake.release()
    sem.wait(1, TIMEOUT)
    done = dev.create_semaphore(0)
    dev.queue_dealloca(Q0, [(sem, 1)], [(done, 1)], buf)
    done.wait(1, TIMEOUT)
    assert not fake.pool_allocations


def test_alloca_behind_another_queues_work_waits_on_its_event(dev: Any, fake: Any) -> None:
    fake.hold()
    produced, _scratch = _producer(dev, fake, Q1)
    fake.reset_calls()
    sem = dev.create_semaphore(0)
    buf = dev.queue_alloca(Q0, [(produced, 1)], [(sem, 1)], BufferParams(usage=USAGE), 256)
    assert buf.is_committed
    calls = fake.calls_on("")
    assert calls["cuStreamWaitEvent"] == 1 and calls["cuMemAllocFromPoolAsync"] == 1
    fake.release()
    sem.wait(1, TIMEOUT)
    dev.queue_dealloca(Q0, [(sem, 1)], [(sem, 2)], buf)
    sem.wait(2, TIMEOUT)
    assert not fake.pool_allocations


def test_chain_across_two_queues_is_queued_before_anything_completes(dev: Any, fake: Any) -> None:
    """producer (q0) -> alloca (q0) -> fill (q1) -> copy out (q0) -> dealloca (q1): every op
    is on a stream before the GPU runs any of them; the data arrives and the memory goes
    back."""
    fake.hold()
    produced, _scratch = _producer(dev, fake)
    fake.reset_calls()
    s = dev.create_semaphore(0)
    buf = dev.queue_alloca(Q0, [(produced, 1)], [(s, 1)], BufferParams(usage=USAGE), 4096)
    dev.queue_fill(Q1, [(s, 1)], [(s, 2)], buf, 0, 64, b"\x7e")
    out = dev.allocator.allocate_buffer(BufferParams(type=MemoryType.HOST_LOCAL, usage=USAGE), 64)
    dev.queue_copy(Q0, [(s, 2)], [(s, 3)], buf, 0, out, 0, 64)
    dev.queue_dealloca(Q1, [(s, 3)], [(s, 4)], buf)
    # all four queued, nothing completed
    assert s.value == 0 and buf.is_decommitted
    calls = fake.calls_on("")
    assert calls["cuMemAllocFromPoolAsync"] == 1 and calls["cuMemFreeAsync"] == 1
    # fill waits on the alloca (q0), copy on the fill (q1), dealloca on the copy (q0) and
    # on the alloca's stream (the buffer came from q0)
    assert calls["cuStreamWaitEvent"] == 4
    fake.release()
    s.wait(4, TIMEOUT)
    assert bytes(buffer_storage(out).host_array[:64]) == b"\x7e" * 64
    assert not fake.pool_allocations


def test_a_failed_producer_fails_the_alloca_which_gives_its_memory_back(
    dev: Any, fake: Any
) -> None:
    fake.hold()
    produced, _scratch = _producer(dev, fake)
    sem = dev.create_semaphore(0)
    buf = dev.queue_alloca(Q0, [(produced, 1)], [(sem, 1)], BufferParams(usage=USAGE), 512)
    assert buf.is_committed and len(fake.pool_allocations) == 1
    produced.fail(StatusCode.ABORTED, "producer gave up")
    fake.release()
    with pytest.raises(hal_core.AbortedError, match="producer gave up"):
        sem.wait(1, TIMEOUT)
    # decommitted like any failed alloca; a dealloca of it is refused and keeps nothing
    assert not buf.is_committed
    done = dev.create_semaphore(0)
    try:
        dev.queue_dealloca(Q0, [], [(done, 1)], buf)
    except hal_core.FailedPreconditionError:
        pass
    else:
        with pytest.raises(hal_core.FailedPreconditionError):
            done.wait(1, TIMEOUT)
    # the memory goes back with the buffer (ops holding it have completed)
    flush = dev.create_semaphore(0)
    for value in (1, 2):
        dev.queue_barrier(Q0, [], [(flush, value)])
        flush.wait(value, TIMEOUT)
    del buf
    gc.collect()
    assert not fake.pool_allocations
    # the device still works
    assert _read(dev, _scratch, ()) == b"\x01" * 64


def test_a_failed_producer_fails_the_dealloca_which_still_frees(dev: Any, fake: Any) -> None:
    sem = dev.create_semaphore(0)
    buf = dev.queue_alloca(Q0, [], [(sem, 1)], BufferParams(usage=USAGE), 512)
    sem.wait(1, TIMEOUT)
    fake.hold()
    dev.queue_fill(Q1, [], [(sem, 2)], buf, 0, 64, b"\x02")  # the buffer's last use
    fake.reset_calls()
    done = dev.create_semaphore(0)
    dev.queue_dealloca(Q0, [(sem, 2)], [(done, 1)], buf)
    # queued behind the fill's event: the free is on the stream, the buffer gone
    calls = fake.calls_on("")
    assert calls["cuStreamWaitEvent"] == 1 and calls["cuMemFreeAsync"] == 1
    assert buf.is_decommitted
    sem.fail(StatusCode.DATA_LOSS, "fill reported bad data")
    fake.release()
    with pytest.raises(hal_core.DataLossError, match="bad data"):
        done.wait(1, TIMEOUT)
    assert not fake.pool_allocations


def test_exhaustion_behind_device_waits_fails_the_signals_and_allocates_nothing(
    dev: Any, fake: Any
) -> None:
    big = TOTAL_MEMORY * 3 // 4
    sem = dev.create_semaphore(0)
    first = dev.queue_alloca(Q0, [], [(sem, 1)], BufferParams(), big)
    fake.hold()
    produced, _scratch = _producer(dev, fake)
    failed = dev.create_semaphore(0)
    late = dev.queue_alloca(Q0, [(produced, 1)], [(failed, 1)], BufferParams(), big)
    assert not late.is_committed  # refused on the stream, at once
    fake.release()
    with pytest.raises(hal_core.ResourceExhaustedError, match="cuMemAllocFromPoolAsync"):
        failed.wait(1, TIMEOUT)
    assert len(fake.pool_allocations) == 1
    dev.queue_dealloca(Q0, [(sem, 1)], [(sem, 2)], first)
    sem.wait(2, TIMEOUT)
    assert not fake.pool_allocations


def test_mixed_waits_keep_host_deferral(dev: Any, fake: Any) -> None:
    fake.hold()
    produced, _scratch = _producer(dev, fake)
    host = dev.create_semaphore(0)  # signalled by the host: nothing in flight signals it
    sem = dev.create_semaphore(0)
    fake.reset_calls()
    buf = dev.queue_alloca(
        Q0, [(produced, 1), (host, 1)], [(sem, 1)], BufferParams(usage=USAGE), 256
    )
    assert not buf.is_committed and not fake.calls_on("").get("cuMemAllocFromPoolAsync")
    fake.release()
    produced.wait(1, TIMEOUT)
    assert not buf.is_committed
    host.signal(1)
    sem.wait(1, TIMEOUT)
    assert buf.is_committed
    # a dealloca waiting on the host is deferred too, then frees
    gate = dev.create_semaphore(0)
    done = dev.create_semaphore(0)
    dev.queue_dealloca(Q0, [(sem, 1), (gate, 1)], [(done, 1)], buf)
    assert buf.is_committed
    gate.signal(1)
    done.wait(1, TIMEOUT)
    assert not fake.pool_allocations


def test_a_dealloca_behind_a_parked_alloca_takes_the_host_path(dev: Any, fake: Any) -> None:
    """The buffer is not committed when the dealloca is submitted (its alloca waits on the
    host), so it cannot be queued yet: it parks and frees once the alloca ran."""
    host = dev.create_semaphore(0)
    sem = dev.create_semaphore(0)
    buf = dev.queue_alloca(Q0, [(host, 1)], [(sem, 1)], BufferParams(), 256)
    done = dev.create_semaphore(0)
    dev.queue_dealloca(Q1, [(sem, 1)], [(done, 1)], buf)
    assert done.value == 0 and not fake.pool_allocations
    host.signal(1)
    done.wait(1, TIMEOUT)
    assert buf.is_decommitted and not fake.pool_allocations


def test_close_with_device_waited_allocas_in_flight(fake: Any) -> None:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {"alloca": "stream"})
    dev = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    fake.hold()
    produced, _scratch = _producer(dev, fake)
    s = dev.create_semaphore(0)
    buf = dev.queue_alloca(Q0, [(produced, 1)], [(s, 1)], BufferParams(usage=USAGE), 256)
    dev.queue_dealloca(Q1, [(s, 1)], [(s, 2)], buf)
    parked = dev.create_semaphore(0)
    host = dev.create_semaphore(0)
    other = dev.queue_alloca(Q0, [(host, 1)], [(parked, 1)], BufferParams(), 256)
    fake.release()
    dev.close()
    # queued work finished; the parked alloca was cancelled and allocated nothing
    assert s.value == 2
    with pytest.raises(hal_core.CancelledError):
        parked.wait(1, TIMEOUT)
    assert not other.is_committed and not fake.pool_allocations
    with pytest.raises(hal_core.FailedPreconditionError):
        dev.queue_alloca(Q0, [(s, 2)], [(s, 3)], BufferParams(), 256)


def test_a_long_device_waited_chain_runs_without_host_round_trips(dev: Any, fake: Any) -> None:
    """2,000 alloca -> dealloca pairs, each behind the previous pair's signal, queued with
    the GPU held: every pair goes on the stream at once (no recursion, no parking)."""
    fake.hold()
    produced, _scratch = _producer(dev, fake)
    s = dev.create_semaphore(0)
    wait = (produced, 1)
    for i in range(2000):
        buf = dev.queue_alloca(Q0, [wait], [(s, 2 * i + 1)], BufferParams(), 256)
        dev.queue_dealloca(Q0, [(s, 2 * i + 1)], [(s, 2 * i + 2)], buf)
        wait = (s, 2 * i + 2)
    assert s.value == 0
    calls = fake.calls_on("")
    assert calls["cuMemAllocFromPoolAsync"] == 2000 and calls["cuMemFreeAsync"] == 2000
    fake.release()
    s.wait(4000, 60.0)
    assert not fake.pool_allocations


def test_another_gpus_buffer_is_freed_only_after_the_waits_are_reached(
    monkeypatch: Any,
) -> None:
    """On a logical device a buffer of GPU 1 is freed on GPU 1's stream, which GPU 0's
    events would not order: its dealloca behind GPU 0's in-flight work keeps host
    deferral."""
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    from fake_cuda_peers import FakePeerDriver

    api = FakePeerDriver(gpus=2)
    install(monkeypatch, api)
    try:
        backend = cuda_driver.CudaDriverBackend().create_device_by_path(
            "", {"alloca": "stream", "queues": "1"}
        )
        dev = device_from_backend(backend, driver_name="cuda", uri="cuda://")
        s = dev.create_semaphore(0)
        buf = dev.queue_alloca(0b10, [], [(s, 1)], BufferParams(usage=USAGE), 256)
        s.wait(1, TIMEOUT)
        api.hold()
        produced, _scratch = _producer(dev, api, 0b01)  # GPU 0's work, in flight
        api.reset_calls()
        done = dev.create_semaphore(0)
        dev.queue_dealloca(0b01, [(produced, 1)], [(done, 1)], buf)
        assert buf.is_committed and not api.calls_on("").get("cuMemFreeAsync")
        api.release()
        done.wait(1, TIMEOUT)
        assert not api.pool_allocations
        dev.close()
    finally:
        api.release()
        cuda_api.reset_for_tests()
