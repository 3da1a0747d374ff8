"""CUDA devices in device groups over the stand-in driver: a GPU beside the CPU
(``local-task://``) with cross-device waits and copies through hal_core's group machinery,
the driver's edges between CUDA devices (peer access from ``cuDeviceCanAccessPeer``, one
GPU's memory shared) and a logical device's queues on the group's axes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hal_cuda import cuda_api
from hal_cuda import driver as cuda_driver

import hal_core
from hal_core import BufferParams, BufferUsage, CopyStrategy, MemoryAccess, StatusCode
from hal_core.backend import InteropMode, LinkClass, TopologyCapability, device_from_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import install  # noqa: E402
from fake_cuda_peers import FakePeerDriver  # noqa: E402

TIMEOUT = 10.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER


def make_fake(monkeypatch: Any, **kwargs: Any) -> FakePeerDriver:
    api = FakePeerDriver(**kwargs)
    install(monkeypatch, api)
    return api


@pytest.fixture(autouse=True)
def _forget_driver() -> Any:
    yield
    cuda_api.reset_for_tests()


def cuda(path: str, params: dict[str, str] | None = None) -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path(path, params or {})
    return device_from_backend(backend, driver_name="cuda", uri=f"cuda://{path}")


def read(dev: Any, buf: Any) -> bytes:
    out = bytearray(buf.byte_length)
    file = dev.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    s = dev.create_semaphore(0)
    dev.queue_write(1, (), [(s, 1)], buf, 0, file, 0, buf.byte_length)
    s.wait(1, TIMEOUT)
    file.close()
    return bytes(out)


def test_gpu_beside_the_cpu_waits_and_copies_across(monkeypatch: Any) -> None:
    make_fake(monkeypatch, gpus=1)
    gpu, cpu = cuda("0"), hal_core.create_device("local-task://")
    with hal_core.DeviceGroup.from_devices([gpu, cpu]) as group:
        to_cpu = group.topology.edge(0, 1)  # the CPU using the GPU's buffers
        to_gpu = group.topology.edge(1, 0)
        for edge in (to_cpu, to_gpu):
            assert edge.link_class == LinkClass.HOST_STAGED
            assert edge.wait_mode == InteropMode.NATIVE  # host timelines on both sides
            assert edge.buffer_read_mode == InteropMode.COPY
        g_buf = gpu.allocator.allocate_buffer(BufferParams(usage=USAGE), 256)
        c_buf = cpu.allocator.allocate_buffer(BufferParams(usage=USAGE), 256)
        # GPU fill -> CPU copies it in (staged) -> CPU fill of the rest -> GPU copies back.
        s = gpu.create_semaphore(0)
        gpu.queue_fill(1, [], [(s, 1)], g_buf, 0, 256, b"\x2a")
        assert group.copy(cpu, 1, [(s, 1)], [(s, 2)], g_buf, 0, c_buf, 0, 128) == (
            CopyStrategy.STAGED
        )
        cpu.queue_fill(1, [(s, 2)], [(s, 3)], c_buf, 128, 128, b"\x07")
        assert group.copy(gpu, 1, [(s, 3)], [(s, 4)], c_buf, 0, g_buf, 0, 256) == (
            CopyStrategy.STAGED
        )
        s.wait(4, TIMEOUT)
        assert read(gpu, g_buf) == b"\x2a" * 128 + b"\x07" * 128
        later = gpu.create_semaphore(0)
        gpu.queue_fill(1, [], [(later, 1)], g_buf, 0, 16, b"\x03")
        later.wait(1, TIMEOUT)


def test_a_failed_cpu_signal_fails_the_gpu_op_waiting_on_it(monkeypatch: Any) -> None:
    make_fake(monkeypatch, gpus=1)
    gpu, cpu = cuda("0"), hal_core.create_device("local-task://")
    with hal_core.DeviceGroup.from_devices([gpu, cpu]):
        g_buf = gpu.allocator.allocate_buffer(BufferParams(usage=USAGE), 64)
        gate, produced, out = (cpu.create_semaphore(0) for _ in range(3))

        def fail(args: tuple, context: Any) -> Any:
            return hal_core.HalError(StatusCode.DATA_LOSS, "cpu producer lost its input")

        cpu.queue_host_call(1, [(gate, 1)], [(produced, 1)], fail, (0, 0, 0, 0))
        gpu.queue_fill(1, [(produced, 1)], [(out, 1)], g_buf, 0, 64, b"\x01")
        gate.signal(1)
        with pytest.raises(hal_core.HalError) as info:
            out.wait(1, TIMEOUT)
        assert info.value.code == StatusCode.DATA_LOSS


def test_gpus_with_peer_access_copy_peer_to_peer(monkeypatch: Any) -> None:
    api = make_fake(monkeypatch, gpus=2)
    a, b = cuda("0"), cuda("1")
    with hal_core.DeviceGroup.from_devices([a, b]) as group:
        edge = group.topology.edge(0, 1)
        assert edge.link_class == LinkClass.PCIE_SAME_ROOT  # the fake has no native atomics
        assert edge.capabilities & TopologyCapability.P2P_COPY
        assert edge.buffer_read_mode == edge.buffer_write_mode == InteropMode.NATIVE
        assert api.peers_enabled == {(0, 1), (1, 0)}
        assert a.topology_info.can_p2p_with == b.topology_info.can_p2p_with == 0b11
        src = a.allocator.allocate_buffer(BufferParams(usage=USAGE), 128)
        dst = b.allocator.allocate_buffer(BufferParams(usage=USAGE), 128)
        s = a.create_semaphore(0)
        a.queue_fill(1, [], [(s, 1)], src, 0, 128, b"\x11")
        strategy = group.copy(b, 1, [(s, 1)], [(s, 2)], src, 0, dst, 0, 128)
        s.wait(2, TIMEOUT)
        assert strategy in (CopyStrategy.NATIVE, CopyStrategy.PEER)
        assert read(b, dst) == b"\x11" * 128


def test_gpus_without_peer_access_stage_through_the_host(monkeypatch: Any) -> None:
    api = make_fake(monkeypatch, gpus=2, peer_access=False)
    a, b = cuda("0"), cuda("1")
    with hal_core.DeviceGroup.from_devices([a, b]) as group:
        edge = group.topology.edge(0, 1)
        assert edge.link_class == LinkClass.HOST_STAGED
        assert not edge.capabilities & TopologyCapability.P2P_COPY
        assert api.peers_enabled == set()
        src = a.allocator.allocate_buffer(BufferParams(usage=USAGE), 64)
        dst = b.allocator.allocate_buffer(BufferParams(usage=USAGE), 64)
        s = a.create_semaphore(0)
        a.queue_fill(1, [], [(s, 1)], src, 0, 64, b"\x22")
        assert group.copy(b, 1, [(s, 1)], [(s, 2)], src, 0, dst, 0, 64) == CopyStrategy.STAGED
        s.wait(2, TIMEOUT)
        assert read(b, dst) == b"\x22" * 64


def test_two_devices_on_one_gpu_share_its_memory(monkeypatch: Any) -> None:
    make_fake(monkeypatch, gpus=1)
    a, b = cuda("0"), cuda("0")
    with hal_core.DeviceGroup.from_devices([a, b]) as group:
        edge = group.topology.edge(1, 0)
        assert edge.link_class == LinkClass.SAME_DIE
        assert edge.capabilities & TopologyCapability.UNIFIED_MEMORY
        src = b.allocator.allocate_buffer(BufferParams(usage=USAGE), 32)
        dst = a.allocator.allocate_buffer(BufferParams(usage=USAGE), 32)
        s = b.create_semaphore(0)
        b.queue_fill(1, [], [(s, 1)], src, 0, 32, b"\x33")
        assert group.copy(a, 1, [(s, 1)], [(s, 2)], src, 0, dst, 0, 32) == CopyStrategy.NATIVE
        s.wait(2, TIMEOUT)
        assert read(a, dst) == b"\x33" * 32


def test_a_logical_devices_queues_run_on_the_groups_axes(monkeypatch: Any) -> None:
    make_fake(monkeypatch, gpus=2)
    logical, cpu = cuda(""), hal_core.create_device("local-task://")
    with hal_core.DeviceGroup.from_devices([logical, cpu]) as group:
        assert logical.queue_count == 4
        for q in range(4):
            pool_backend = logical.query_queue_pool_backend(1 << q)
            assert pool_backend.axis == group.queue_axis(0, q)
        buf = logical.allocator.allocate_buffer(BufferParams(usage=USAGE), 64)
        done = [logical.create_semaphore(0) for _ in range(4)]
        for q in range(4):
            logical.queue_fill(1 << q, [], [(done[q], 1)], buf, 16 * q, 16, b"\x01")
        for sem in done:
            sem.wait(1, TIMEOUT)
        # Each logical queue's retirement reaches the group tracker on its own axis.
        published = group.tracker.published_epochs
        assert [published.get(group.queue_axis(0, q), 0) for q in range(4)] == [1, 1, 1, 1]
        assert np.frombuffer(read(logical, buf), np.uint8).tolist() == [1] * 64
