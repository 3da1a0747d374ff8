"""Which CUDA driver calls each hal-cuda operation makes, on which thread, pinned over the
stand-in driver (``fake_cuda_driver``, which counts every call per thread): a 4-byte fill
in a cross-queue chain, a ``queue_dispatch`` of a tiny kernel in a one-queue chain, and
the recording of a 512-dispatch command buffer. The fake holds every event unreached
while a chain is submitted (``hold``), as a GPU still running it would, so each wait
finds its producer in flight. Also what a path naming several GPUs answers."""

from __future__ import annotations

import gc
import struct
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
from hal_core import (
    BufferParams,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    MemoryAccess,
    QueueAffinity,
)
from hal_core.backend import device_from_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import FakeDriver, install  # noqa: E402

ANY = QueueAffinity.ANY
TIMEOUT = 10.0
CHAIN = 64
RECORDED = 512
COUNT_4 = (4).to_bytes(4, "little")  # negate's element count (4 float32s)
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER


@pytest.fixture
def fake(monkeypatch: Any) -> Any:
    api = FakeDriver()
    install(monkeypatch, api)
    yield api
    api.release()
    cuda_api.reset_for_tests()


@pytest.fixture
def dev(fake: Any) -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    device = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    yield device
    device.close()


def _warm(dev: Any, fake: FakeDriver) -> None:
    """Make the device's context current on this thread and grow its event pool to a
    held chain's length, so the counts below are the steady state (each op's own calls),
    then forget the calls made so far. Collects garbage first (an earlier test's
    executables unload through their own context). The scratch buffer stays alive with
    the fake (its free would be counted)."""
    gc.collect()
    scratch = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 4)
    sem = dev.create_semaphore()
    fake.hold()
    for v in range(CHAIN + 1):
        dev.queue_fill(1, (), ((sem, v + 1),), scratch, 0, 4, b"\0\0\0\0")
    fake.release()
    sem.wait(CHAIN + 1, TIMEOUT)
    fake.reset_calls()
    fake.keep_alive = scratch


def _read(dev: Any, buf: Any) -> bytes:
    out = bytearray(buf.byte_length)
    file = dev.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    sem = dev.create_semaphore(0)
    dev.queue_write(ANY, (), [(sem, 1)], buf, 0, file, 0, len(out))
    sem.wait(1, TIMEOUT)
    file.close()
    return bytes(out)


def test_fill4_in_a_cross_queue_chain_is_one_memset_one_wait_one_record(
    dev: Any, fake: FakeDriver
) -> None:
    """edge.fill4's shape: fill i on queue i % 2 waits on fill i-1's semaphore. On the
    submitting thread each is one cuMemsetD32Async, one cuEventRecord and (after the
    first, whose wait is already reached) one cuStreamWaitEvent on the other stream's
    event; nothing synchronises there. The completion thread coalesces: it asks about
    the latest events of each stream (a stream runs in order), not about each op's, and
    sleeps in the driver only on work still running (here at most one batch is taken
    while the fake holds the events)."""
    head = dev.create_semaphore(1)
    sems = [dev.create_semaphore() for _ in range(CHAIN)]
    target = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 4 * CHAIN)
    _warm(dev, fake)
    fake.hold()
    prev = (head, 1)
    for i in range(CHAIN):
        sig = (sems[i], 1)
        pattern = struct.pack("<I", 0x01020300 + i)
        dev.queue_fill(2 if i & 1 else 1, (prev,), (sig,), target, 4 * i, 4, pattern)
        prev = sig
    assert fake.calls_on("MainThread") == {
        "cuMemsetD32Async": CHAIN,
        "cuEventRecord": CHAIN,
        "cuStreamWaitEvent": CHAIN - 1,
    }
    fake.release()
    sems[-1].wait(1, TIMEOUT)
    completion = fake.calls_on("cuda0-completion")
    assert 1 <= completion["cuEventQuery"] <= 12
    assert completion.get("cuEventSynchronize", 0) <= 1
    assert set(completion) <= {"cuEventQuery", "cuEventSynchronize"}
    expected = np.arange(0x01020300, 0x01020300 + CHAIN, dtype="<u4").tobytes()
    assert _read(dev, target) == expected


def _negate(dev: Any) -> tuple[Any, Any]:
    exe = dev.create_executable_cache("calls").prepare("ptx", load_ptx(CTS_LIBRARY))
    return exe, exe.lookup_function("negate")


def test_queue_dispatch_in_a_one_queue_chain_is_one_launch_one_record(
    dev: Any, fake: FakeDriver
) -> None:
    """dispatch.direct's shape: each queue_dispatch waits on the previous one's value on
    the same queue. Stream order already runs it after its producer, so it is one
    cuLaunchKernel and one cuEventRecord: no cuStreamWaitEvent, no module or function
    lookup, no synchronize. The launch carries the binding's address and the constant."""
    exe, fn = _negate(dev)
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    sem = dev.create_semaphore()
    config = DispatchConfig.static(1)
    _warm(dev, fake)
    fake.hold()
    for v in range(CHAIN):
        dev.queue_dispatch(1, ((sem, v),), ((sem, v + 1),), exe, fn, config, COUNT_4, (buf, buf))
    assert fake.calls_on("MainThread") == {"cuLaunchKernel": CHAIN, "cuEventRecord": CHAIN}
    fake.release()
    sem.wait(CHAIN, TIMEOUT)
    assert len(fake.launches) == CHAIN
    address = fake.launches[0].params[0]
    for launch in fake.launches:
        assert launch.name == "negate" and launch.grid == (1, 1, 1)
        assert launch.params == [address, address, 4]


def test_a_failed_producer_on_the_same_queue_fails_its_waiter(dev: Any, fake: FakeDriver) -> None:
    """A wait satisfied by stream order still carries the producer's failure: the
    waiter's work runs (the stream does not know), but its signal fails with the cause."""
    exe, fn = _negate(dev)
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    a, b = dev.create_semaphore(), dev.create_semaphore()
    config = DispatchConfig.static(1)
    fake.hold()
    dev.queue_dispatch(1, (), ((a, 1),), exe, fn, config, COUNT_4, (buf, buf))
    dev.queue_dispatch(1, ((a, 1),), ((b, 1),), exe, fn, config, COUNT_4, (buf, buf))
    a.fail(hal_core.HalError(hal_core.StatusCode.ABORTED, "producer failed"))
    fake.release()
    with pytest.raises(hal_core.HalError) as caught:
        b.wait(1, TIMEOUT)
    assert caught.value.code == hal_core.StatusCode.ABORTED


@pytest.mark.parametrize(
    "mode",
    [CommandBufferMode.UNVALIDATED | CommandBufferMode.ONE_SHOT, CommandBufferMode.ONE_SHOT],
    ids=["unvalidated", "validated"],
)
def test_recording_makes_no_driver_call(dev: Any, fake: FakeDriver, mode: int) -> None:
    """cb.record's shape: 512 dispatches with a barrier after each, then end(): the
    recording and the program built at end() are host data (launch descriptors), so no
    driver call happens until the command buffer is submitted, where each dispatch is
    one cuLaunchKernel."""
    exe, fn = _negate(dev)
    a = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    b = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    config = DispatchConfig.static(1)
    _warm(dev, fake)
    cb = dev.create_command_buffer(mode, CommandCategory.ANY, ANY, 0)
    cb.begin()
    for i in range(RECORDED):
        cb.dispatch(exe, fn, config, COUNT_4, (a, b) if i & 1 else (b, a))
        cb.execution_barrier()
    cb.end()
    assert dict(fake.calls) == {}
    sem = dev.create_semaphore()
    dev.queue_execute(ANY, (), ((sem, 1),), cb)
    sem.wait(1, TIMEOUT)
    assert fake.calls_on("MainThread") == {"cuLaunchKernel": RECORDED, "cuEventRecord": 1}
    addresses = [launch.params[:2] for launch in fake.launches[:2]]
    assert addresses[0] == addresses[1][::-1] and addresses[0][0] != addresses[0][1]


def test_a_path_naming_several_gpus_opens_one_logical_device(monkeypatch: Any) -> None:
    """``cuda://`` on a two-GPU machine and a list of two GPUs are one logical device
    over both (``test_cuda_logical_device.py`` runs it); one GPU, named once or twice,
    is that GPU's own device."""
    install(monkeypatch, FakeDriver(gpus=2))
    driver = cuda_driver.CudaDriverBackend()
    assert [d.path for d in driver.query_available_devices()] == ["0", "1"]
    for path in ("", "0,1"):
        backend = driver.create_device_by_path(path, {})
        assert isinstance(backend, CudaLogicalDevice) and backend.queue_count == 4
        assert [m.ctx.ordinal for m in backend.members] == [0, 1]
        backend.close(1.0)
    for path in ("0", "1", "1,1"):
        backend = driver.create_device_by_path(path, {})
        assert not isinstance(backend, CudaLogicalDevice)
        backend.close(1.0)
    cuda_api.reset_for_tests()
