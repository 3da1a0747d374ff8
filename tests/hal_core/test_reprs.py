"""Every public object has a short repr (under 120 characters) that names its type and
never raises, also once the object (or its device) is closed."""

import numpy as np
import pytest
from hal_local_cpu.kernels import python_module

import hal_core as hal
from hal_core import BufferParams, BufferUsage, CommandCategory, MemoryAccess, QueueAffinity
from hal_core.profiling import ProfilingDataFamily as F
from hal_core.profiling import ProfilingOptions, StatisticsSink

URIS = ["local-task://", "local-sync://", "amdgpu://?hsa=soft"]


def _check(obj, type_name: str, *must: str) -> str:
    text = repr(obj)
    assert len(text) < 120, text
    assert text.startswith(f"<hal_core.{type_name}") or text.startswith(f"<{type_name}"), text
    for part in must:
        assert part in text, (part, text)
    return text


def _open(uri):
    try:
        return hal.create_device(uri)
    except hal.HalError as exc:
        pytest.skip(f"{uri} unavailable: {exc}")


@pytest.mark.parametrize("uri", URIS)
def test_reprs_of_a_device_and_its_objects(uri):
    device = _open(uri)
    host = uri.startswith("local")
    _check(device, "Device", uri.split("?")[0].rstrip("/"))
    _check(device.allocator, "Allocator", "of ")
    cache = device.create_executable_cache("reprs")
    _check(cache, "ExecutableCache", "'reprs'")
    params = BufferParams(usage=BufferUsage.DEFAULT | BufferUsage.MAPPING) if host else None
    buf = device.allocator.allocate_buffer(params, 256)
    text = _check(buf, "Buffer", "256 B", " on ")
    assert "DEVICE_LOCAL" in text or "HOST_LOCAL" in text or "VISIBLE" in text
    _check(buf.subspan(64, 64), "Buffer", "64 B @64")
    _check(hal.BufferView(buf, (4, 16), hal.ElementType.FLOAT_32), "BufferView", "4x16 FLOAT_32")
    if host:
        with buf.map(MemoryAccess.READ, 0, 16) as mapping:
            _check(mapping, "BufferMapping", "16 B", "READ")
        _check(mapping, "BufferMapping", "unmapped")
        exe = cache.prepare("local-cpu-python", python_module("cts_kernels"))
        _check(exe, "Executable", "local-cpu-python", "scale_and_offset")
        exe.close()
        _check(exe, "Executable", "closed")
    sem = device.create_semaphore()
    _check(sem, "Semaphore", "value=0")
    cb = device.create_command_buffer(0, CommandCategory.ANY, QueueAffinity.ANY, 0)
    _check(cb, "CommandBuffer", "new")
    stream = device.create_stream()
    _check(stream, "Stream")
    session = device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[StatisticsSink()]))
    _check(session, "ProfilingSession", "active")
    sem.fail(hal.StatusCode.ABORTED, "for the repr")
    _check(sem, "Semaphore", "failed ABORTED")
    cache.close()
    _check(cache, "ExecutableCache", "closed")
    device.profiling_end()
    device.close()
    # closed: still short, still says what it is
    _check(device, "Device", "closed")
    _check(device.allocator, "Allocator", "closed")
    _check(buf, "Buffer")
    _check(session, "ProfilingSession", "ended")
    _check(stream, "Stream")
    _check(cb, "CommandBuffer")


def test_file_reprs():
    f = hal.File.from_memory(np.zeros(100, np.uint8), MemoryAccess.READ)
    _check(f, "File", "memory 100 B", "READ")
    f.close()
    _check(f, "File", "closed")


def test_device_group_repr():
    group = hal.create_device_group(["local-sync://"] * 3)
    _check(group, "DeviceGroup", "local-sync://")
    group.close()
    _check(group, "DeviceGroup", "closed")


def test_affinity_descriptions():
    assert QueueAffinity.describe(QueueAffinity.ANY) == "ANY"
    assert QueueAffinity.describe(0) == "none"
    assert QueueAffinity.describe(QueueAffinity.for_queue(2)) == "queue 2"
    assert QueueAffinity.describe(0b1011) == "queues 0,1,3"
    assert len(QueueAffinity.describe((1 << 63) - 1)) < 40


def test_long_names_stay_short():
    with hal.create_device("local-sync://") as device:
        cache = device.create_executable_cache("x" * 200)
        _check(cache, "ExecutableCache", "...")
        big = device.allocator.allocate_buffer(None, 3 << 20)
        _check(big, "Buffer", "3 MiB")


def test_reprs_never_raise_on_broken_state():
    with hal.create_device("local-sync://") as device:
        buf = device.allocator.allocate_buffer(None, 16)
        view = hal.BufferView(buf, (4,), hal.ElementType.FLOAT_32)
        object.__setattr__(view, "shape", None)  # a field broken behind the API's back
        _check(view, "BufferView")
        buf.memory_type = "garbage"  # likewise
        _check(buf, "Buffer")


def test_topology_and_binding_table_reprs():
    with hal.create_device("local-sync://") as device:
        buf = device.allocator.allocate_buffer(None, 64)
        table = hal.BindingTable([buf, None, (buf, 16, 16)])
        _check(table, "BindingTable", "3 slots", "2 bound")
    group = hal.create_device_group(["local-sync://"] * 2)
    try:
        _check(group.topology, "Topology", "2 devices", "links=")
    finally:
        group.close()


def test_pool_set_and_host_call_context_reprs():
    from hal_core.pool import CpuSlabProvider, PassthroughPool, PoolSet, TlsfPool

    provider = CpuSlabProvider()
    pools = PoolSet()
    _check(pools, "PoolSet", "0 pools")
    pools.register(0, PassthroughPool(provider))
    pools.register(10, TlsfPool(provider, range_length=1 << 16))
    _check(pools, "PoolSet", "2 pools", "@10", "@0")
    pools.close()
    seen = []
    with hal.create_device("local-task://") as device:
        sem = device.create_semaphore()
        device.queue_host_call(QueueAffinity.ANY, [], [(sem, 1)], lambda a, ctx: seen.append(ctx))
        sem.wait(1, 5.0)
        _check(seen[0], "HostCallContext", "on local-task://", "signals=1")
