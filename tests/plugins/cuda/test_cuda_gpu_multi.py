"""Several CUDA devices on a real GPU: word waits (``cuStreamWaitValue64`` on a semaphore
word) between devices, a logical device over two members, ``cuda://`` itself, and device
groups with the CPU and with another CUDA device. On a one-GPU machine the members and
peers are devices over GPU 0 (each with its own streams and completion thread), which is
what the word waits and per-member programs need. Skipped where no GPU is usable;
``plugins/cuda/tools/gpu_check.sh`` runs these on the GPU machine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hal_cuda.cuda_api import check, driver_api
from hal_cuda.driver import context_for, query_gpu
from hal_cuda.kernels import load_ptx
from hal_cuda.logical_device import CudaLogicalDevice, members_for
from hal_cuda.memory import allocate_host
from hal_cuda.stream_waits import FAILED_WORD

import hal_core
from hal_core import (
    BufferParams,
    BufferUsage,
    CommandCategory,
    CopyStrategy,
    DispatchConfig,
    MemoryAccess,
    MemoryType,
    StatusCode,
)
from hal_core.backend import LinkClass, device_from_backend

TIMEOUT = 30.0
Q0, Q1 = 1, 2
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
N = 1 << 20


def _probe() -> None:
    try:
        hal_core.create_device("cuda://0").close()
    except hal_core.UnavailableError as exc:
        pytest.skip(f"no usable NVIDIA GPU here: {exc}", allow_module_level=True)


_probe()


def device_buffer(dev: Any, size: int, **params: Any) -> Any:
    return dev.allocator.allocate_buffer(
        BufferParams(usage=USAGE, type=MemoryType.DEVICE_LOCAL, **params), size
    )


def read(dev: Any, buf: Any) -> bytes:
    out = bytearray(buf.byte_length)
    file = dev.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    s = dev.create_semaphore(0)
    dev.queue_write(Q0, (), [(s, 1)], buf, 0, file, 0, buf.byte_length)
    s.wait(1, TIMEOUT)
    file.close()
    return bytes(out)


class Gate:
    """A word in pinned host memory that streams can be made to wait on (raw
    ``cuStreamWaitValue64``), opened from the host."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.storage = allocate_host(ctx, 4096)
        self.word = np.asarray(self.storage.host_array).view(np.uint64)

    def close_on(self, stream: Any) -> None:
        self.ctx.make_current()
        check(self.ctx.api.cuStreamWaitValue64(stream, self.storage.address, 1, 0), "gate")

    def open(self) -> None:
        self.word[0] = 1


@pytest.fixture
def pair() -> Any:
    """A consumer and a producer device over GPU 0, both with queue 1 held by a gate
    (so each has stream work in flight), the producer's held fill signalling ``sem``."""
    consumer = hal_core.create_device("cuda://0")
    producer = hal_core.create_device("cuda://0")
    cb, pb = consumer._backend, producer._backend
    if not cb.stream_waits.supported:
        consumer.close()
        producer.close()
        pytest.skip(cb.stream_waits.reason)
    gate = Gate(pb.ctx)
    gate.close_on(pb.streams[1])
    gate.close_on(cb.streams[1])
    sem = producer.create_semaphore(0)
    producer.queue_fill(Q1, [], [(sem, 1)], device_buffer(producer, N), 0, N, b"\x5a")
    busy = consumer.create_semaphore(0)
    consumer.queue_fill(Q1, [], [(busy, 1)], device_buffer(consumer, N), 0, N, b"\x01")
    try:
        yield consumer, producer, sem, gate
    finally:
        gate.open()
        consumer.close()
        producer.close()


def test_word_wait_holds_the_stream_until_the_other_device_signals(pair: Any) -> None:
    consumer, _producer, sem, gate = pair
    waits = consumer._backend.stream_waits
    target = device_buffer(consumer, N)
    done = consumer.create_semaphore(0)
    consumer.queue_fill(Q0, [(sem, 1)], [(done, 1)], target, 0, N, b"\x07")
    assert waits.counts()["word"] == 1 and waits.counts()["host"] == 0
    with pytest.raises(hal_core.DeadlineExceededError):
        done.wait(1, 0.2)
    assert waits.word_of(sem) == 0
    gate.open()
    done.wait(1, TIMEOUT)
    sem.wait(1, TIMEOUT)
    assert waits.word_of(sem) == 1
    assert read(consumer, target) == b"\x07" * N


def test_a_failed_semaphore_releases_the_waiting_stream_and_fails_the_op(pair: Any) -> None:
    consumer, _producer, sem, gate = pair
    done = consumer.create_semaphore(0)
    consumer.queue_fill(Q0, [(sem, 1)], [(done, 1)], device_buffer(consumer, 64), 0, 64, b"\x07")
    sem.fail(StatusCode.ABORTED, "the producer gave up")
    # The sentinel satisfies the GEQ wait on the GPU. (Whether the stream moves on before
    # the gate opens depends on which hardware queue each stream landed on: streams share
    # a few, and a gated stream holds what shares its queue.)
    assert consumer._backend.stream_waits.word_of(sem) == FAILED_WORD
    gate.open()
    with pytest.raises(hal_core.HalError) as info:
        done.wait(1, TIMEOUT)
    assert info.value.code == StatusCode.ABORTED
    later = consumer.create_semaphore(0)
    consumer.queue_fill(Q0, [], [(later, 1)], device_buffer(consumer, 64), 0, 64, b"\x01")
    later.wait(1, TIMEOUT)


@pytest.fixture
def logical() -> Any:
    """A logical device over two members on GPU 0 (two queues each)."""
    api = driver_api()
    ctx = context_for(api, 0)
    memory = query_gpu(api, 0).memory_bytes
    members = members_for([ctx, ctx], 2, [memory, memory], ["member 0", "member 1"])
    backend = CudaLogicalDevice(members, 2, "cuda://0 twice (test)")
    dev = device_from_backend(backend, driver_name="cuda", uri="cuda://0,0")
    yield dev
    dev.close()


def test_logical_device_runs_dispatches_and_programs_on_every_member(logical: Any) -> None:
    exe = logical.create_executable_cache("multi").prepare("ptx", load_ptx("cts_kernels"))
    count = np.uint32([4]).tobytes()
    cb = logical.create_command_buffer(0, CommandCategory.ANY, binding_capacity=2)
    cb.begin()
    src, dst = hal_core.BufferRef.indirect(0), hal_core.BufferRef.indirect(1)
    cb.dispatch(exe, "negate", DispatchConfig.static(1), count, [src, dst])
    cb.end()
    for q in range(4):
        a = device_buffer(logical, 16, queue_affinity=1 << q)
        b = device_buffer(logical, 16, queue_affinity=1 << q)
        c = device_buffer(logical, 16, queue_affinity=1 << q)
        s = logical.create_semaphore(0)
        values = np.full(4, q + 1.5, np.float32)
        logical.queue_update(1 << q, [], [(s, 1)], values.view(np.uint8), 0, a, 0, 16)
        logical.queue_dispatch(
            1 << q, [(s, 1)], [(s, 2)], exe, "negate", DispatchConfig.static(1), count, (a, b)
        )
        logical.queue_execute(1 << q, [(s, 2)], [(s, 3)], cb, [b, c])
        s.wait(3, TIMEOUT)
        assert np.frombuffer(read(logical, b), np.float32).tolist() == [-(q + 1.5)] * 4
        assert np.frombuffer(read(logical, c), np.float32).tolist() == [q + 1.5] * 4


def test_logical_device_chains_across_members(logical: Any) -> None:
    seen: list[int] = []

    def note(args: tuple, context: Any) -> None:
        seen.append(context.queue_affinity)

    buf = device_buffer(logical, N)
    out = device_buffer(logical, N, queue_affinity=0b1000)
    s = logical.create_semaphore(0)
    for step in range(8):  # alternate between the members' queues
        q = (0, 3, 1, 2)[step % 4]
        logical.queue_fill(
            1 << q, [(s, step)] if step else [], [(s, step + 1)], buf, 0, N, bytes([step])
        )
    logical.queue_copy(0b1000, [(s, 8)], [(s, 9)], buf, 0, out, 0, N)
    logical.queue_host_call(0b0100, [(s, 9)], [(s, 10)], note, (0, 0, 0, 0))
    s.wait(10, TIMEOUT)
    assert read(logical, out) == bytes([7]) * N and seen == [0b0100]


def test_cuda_uri_is_every_gpu() -> None:
    count = int(check(driver_api().cuDeviceGetCount(), "cuDeviceGetCount"))
    with hal_core.create_device("cuda://") as dev:
        assert isinstance(dev._backend, CudaLogicalDevice) == (count > 1)
        assert dev.queue_count == 2 * count
        buf = device_buffer(dev, 64, queue_affinity=1 << (dev.queue_count - 1))
        s = dev.create_semaphore(0)
        dev.queue_fill(1 << (dev.queue_count - 1), [], [(s, 1)], buf, 0, 64, b"\x44")
        s.wait(1, TIMEOUT)
        assert read(dev, buf) == b"\x44" * 64


def test_group_of_the_gpu_and_the_cpu_waits_and_copies_across() -> None:
    gpu, cpu = hal_core.create_device("cuda://0"), hal_core.create_device("local-task://")
    with hal_core.DeviceGroup.from_devices([gpu, cpu]) as group:
        assert group.topology.edge(0, 1).link_class == LinkClass.HOST_STAGED
        g_buf = device_buffer(gpu, N)
        c_buf = cpu.allocator.allocate_buffer(BufferParams(usage=USAGE), N)
        s = gpu.create_semaphore(0)
        gpu.queue_fill(Q0, [], [(s, 1)], g_buf, 0, N, b"\x2a")
        assert group.copy(cpu, Q0, [(s, 1)], [(s, 2)], g_buf, 0, c_buf, 0, N // 2) == (
            CopyStrategy.STAGED
        )
        cpu.queue_fill(Q0, [(s, 2)], [(s, 3)], c_buf, N // 2, N // 2, b"\x07")
        assert group.copy(gpu, Q0, [(s, 3)], [(s, 4)], c_buf, 0, g_buf, 0, N) == (
            CopyStrategy.STAGED
        )
        s.wait(4, TIMEOUT)
        assert read(gpu, g_buf) == b"\x2a" * (N // 2) + b"\x07" * (N // 2)


def test_group_of_two_devices_on_the_gpu_copies_natively() -> None:
    a, b = hal_core.create_device("cuda://0"), hal_core.create_device("cuda://0")
    with hal_core.DeviceGroup.from_devices([a, b]) as group:
        assert group.topology.edge(0, 1).link_class == LinkClass.SAME_DIE
        src, dst = device_buffer(a, N), device_buffer(b, N)
        s = a.create_semaphore(0)
        a.queue_fill(Q0, [], [(s, 1)], src, 0, N, b"\x33")
        assert group.copy(b, Q0, [(s, 1)], [(s, 2)], src, 0, dst, 0, N) == CopyStrategy.NATIVE
        s.wait(2, TIMEOUT)
        assert read(b, dst) == b"\x33" * N
