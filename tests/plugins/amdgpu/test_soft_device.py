"""The amdgpu driver end to end over the software HSA agent."""

import numpy as np
import pytest
from hal_amdgpu.agents import discover_agents
from hal_amdgpu.kernels import CTS_SOURCES, code_object_path
from hal_amdgpu.topology import LinkClass, LinkFlag

import hal_core
from hal_core import (
    BufferParams,
    BufferUsage,
    IncompatibleError,
    InvalidArgumentError,
    MemoryType,
    NotFoundError,
)
from hal_core.backend import buffer_host_bytes, buffer_storage


@pytest.fixture
def device():
    dev = hal_core.create_device("amdgpu://0,1?hsa=soft")
    yield dev
    dev.close()


def test_discovery(soft_hsa):
    system = discover_agents(soft_hsa)
    assert len(system.cpus) == 1 and len(system.gpus) == 2
    g = system.gpus[0]
    assert g.isa_names == ("amdgcn-amd-amdhsa--gfx1100",)
    assert g.uuid.startswith("GPU-") and g.vendor == "AMD" and g.wavefront_size == 32
    assert g.compute_unit_count > 0 and g.node == 1 and g.bdf == "0000:10:00.0"
    assert system.nearest_cpu(g) == system.cpus[0]


def test_device_opens_and_reports_soft(device):
    backend = device.backend
    assert backend.hsa_implementation == "soft" and "soft" in backend.describe()
    assert device.queue_count == 4
    assert device.query_i64("amdgpu", "soft_hsa") == 1


def test_soft_selected_only_when_asked(monkeypatch):
    monkeypatch.delenv("HAL_AMDGPU_HSA", raising=False)
    driver = hal_core.registry().driver("amdgpu")
    with pytest.raises(InvalidArgumentError, match="hsa="):
        driver.create_device_by_path("", {"hsa": "fake"})
    with pytest.raises(InvalidArgumentError, match="soft_gpus"):
        driver.create_device_by_path("", {"soft_gpus": "gfx1100"})
    monkeypatch.setenv("HAL_AMDGPU_HSA", "soft")
    dev = hal_core.create_device("amdgpu://1")
    assert dev.backend.hsa_implementation == "soft"
    infos = driver.query_available_devices()
    assert infos[0].device_id == 0 and "2 Visible GPU Agents" in infos[0].name
    assert [i.device_id for i in infos[1:]] == [1, 2]
    dev.close()


def test_allocate_and_map(device):
    heaps = device.allocator.query_memory_heaps()
    assert [h.type for h in heaps][0] == MemoryType.DEVICE_LOCAL
    host = device.allocator.allocate_buffer(
        BufferParams(type=MemoryType.HOST_LOCAL, usage=BufferUsage.DEFAULT | BufferUsage.MAPPING),
        4096,
    )
    assert host.memory_type.has(MemoryType.HOST_LOCAL)
    view = buffer_host_bytes(host)
    view[:4] = [1, 2, 3, 4]
    assert bytes(buffer_host_bytes(host)[:4]) == b"\x01\x02\x03\x04"
    fine = device.allocator.allocate_buffer(
        BufferParams(
            type=MemoryType.HOST_VISIBLE | MemoryType.DEVICE_LOCAL,
            usage=BufferUsage.DEFAULT | BufferUsage.MAPPING,
        ),
        100,
    )
    assert fine.memory_type.has(MemoryType.DEVICE_LOCAL | MemoryType.HOST_VISIBLE)
    assert not buffer_host_bytes(fine).any()
    dev_local = device.allocator.allocate_buffer(BufferParams(), 256)
    assert dev_local.memory_type == MemoryType.DEVICE_LOCAL
    with pytest.raises(hal_core.PermissionDeniedError):
        buffer_host_bytes(dev_local)


@pytest.mark.parametrize("peer", [True, False])
def test_allocations_granted_to_device_agents_and_reachable_peers(peer):
    """Device memory is granted to the device's GPU and nearest CPU, and to the system's
    other GPUs only where they can reach it (peer copies); never to unreachable ones."""
    spec = "gfx1100,gfx1100" + ("" if peer else ",no_peer_access")
    dev = hal_core.create_device(f"amdgpu://0?hsa=soft&soft_gpus={spec}")
    rt = dev.backend.hsa.lib
    buf = dev.allocator.allocate_buffer(BufferParams(), 64)
    alloc = rt.memory.find(buffer_storage(buf).address)
    gpu0, gpu1 = (g.handle for g in dev.backend.system.gpus)
    assert gpu0 in alloc.allowed_agents and (gpu1 in alloc.allowed_agents) == peer
    assert dev.backend.cpus[0].handle in alloc.allowed_agents
    live = rt.memory.live_count()
    buffer_storage(buf).release()
    buffer_storage(buf).release()  # idempotent
    assert rt.memory.live_count() == live - 1
    dev.close()


def test_mapping_device_local_needs_optional(device):
    with pytest.raises(InvalidArgumentError):
        device.allocator.allocate_buffer(
            BufferParams(usage=BufferUsage.DEFAULT | BufferUsage.MAPPING), 64
        )
    buf = device.allocator.allocate_buffer(
        BufferParams(
            usage=BufferUsage.DEFAULT | BufferUsage.MAPPING | BufferUsage.MAPPING_OPTIONAL
        ),
        64,
    )
    assert buf.memory_type == MemoryType.DEVICE_LOCAL


def test_import_host(device):
    data = np.arange(64, dtype=np.uint8)
    buf = device.allocator.import_host_buffer(BufferParams(), data)
    assert bytes(buffer_host_bytes(buf)[:3]) == b"\x00\x01\x02"


@pytest.mark.parametrize("source", CTS_SOURCES)
def test_loads_cts_executables_on_two_gpus(device, source):
    cache = device.create_executable_cache("cts")
    assert "hsaco" in cache.formats() and "gfx1100" in cache.formats()
    exe = cache.prepare("hsaco", code_object_path(source, "gfx1100"))
    assert exe.function_count >= 1
    info = exe.backend.dispatch_info
    assert len(info) == 2 and all(d.kernel_object for row in info for d in row)
    assert info[0][0].kernel_object != info[1][0].kernel_object  # one load per GPU
    exe.backend.close()
    exe.backend.close()


def test_function_reflection(device):
    exe = device.create_executable_cache("cts").prepare(
        "hsaco", code_object_path("scale_and_offset", "gfx1100")
    )
    info = exe.function_info("scale_and_offset")
    assert (info.binding_count, info.constant_count) == (2, 3)
    wg = device.create_executable_cache("cts").prepare(
        "hsaco", code_object_path("workgroup_ids", "gfx1100").read_bytes()
    )
    assert wg.function_info("write_workgroup_ids").workgroup_size == (64, 1, 1)
    with pytest.raises(NotFoundError):
        exe.lookup_function("nope")


def test_incompatible_code_object_names_both_targets(device):
    with pytest.raises(IncompatibleError) as info:
        device.backend.load_executable(code_object_path("multi_entry", "gfx90a"))
    assert "gfx90a" in str(info.value) and "gfx1100" in str(info.value)
    # The device still works afterwards.
    device.backend.load_executable(code_object_path("multi_entry", "gfx1100")).close()


def test_malformed_executable_is_invalid_argument(device):
    with pytest.raises(InvalidArgumentError):
        device.backend.load_executable(b"\x7fELF" + b"\0" * 100)
    with pytest.raises(hal_core.UnimplementedError):
        device.create_executable_cache("x").prepare(
            "hsaco", code_object_path("multi_entry", "gfx1100"), constants=[1]
        )


def test_topology_edges(device):
    peer = device.backend.topology_edge(0, 1)
    assert peer.link_class == LinkClass.NVLINK_IF and peer.hops == 1
    assert peer.flags & LinkFlag.XGMI and peer.flags & LinkFlag.PEER_ACCESS_REQUIRES_GRANT
    same = device.backend.topology_edge(0, 0)
    assert same.link_class == LinkClass.SAME_DIE and same.copy_cost == 0


def test_queue_barrier_and_fill_run_on_the_soft_agent(device):
    """Queue operations execute through the host queue: a barrier signals, and a fill
    through the builtin blit kernel writes the pattern."""
    sem = device.create_semaphore(0)
    device.queue_barrier(signal=[(sem, 1)])
    sem.wait(1, 10.0)
    buf = device.allocator.allocate_buffer(
        BufferParams(
            usage=BufferUsage.DEFAULT | BufferUsage.TRANSFER | BufferUsage.MAPPING_SCOPED,
            type=MemoryType.DEVICE_LOCAL | MemoryType.HOST_VISIBLE,
        ),
        64,
    )
    any_queue = hal_core.QueueAffinity.ANY
    device.queue_fill(any_queue, [(sem, 1)], [(sem, 2)], buf, 0, 64, 0x5A, pattern_length=1)
    sem.wait(2, 10.0)
    assert buf.read() == b"\x5a" * 64


def test_close_is_idempotent():
    dev = hal_core.create_device("amdgpu://?hsa=soft")
    rt = dev.backend.hsa.lib
    before = rt.init_count
    dev.close()
    dev.close()
    assert rt.init_count == before - 1


def test_device_local_memory_is_zero_filled_through_hsa(device):
    rt = device.backend.hsa.lib
    calls = []
    real_fill = rt.hsa_amd_memory_fill

    def fill(ptr, value, count):
        calls.append((value, count))
        return real_fill(ptr, value, count)

    rt.hsa_amd_memory_fill = fill
    try:
        buf = device.allocator.allocate_buffer(BufferParams(), 100)
    finally:
        del rt.hsa_amd_memory_fill
    assert calls == [(0, 4096 // 4)]  # the whole granule-rounded allocation
    assert not rt.memory.view(buffer_storage(buf).address, 100).any()


def test_bad_soft_gpu_list_is_invalid_argument():
    with pytest.raises(InvalidArgumentError, match="gfxzz"):
        hal_core.create_device("amdgpu://?hsa=soft&soft_gpus=gfx1100,gfxzz")
    with pytest.raises(InvalidArgumentError, match="empty"):
        hal_core.create_device("amdgpu://?hsa=soft&soft_gpus=,")
    # The driver keeps working after bad input.
    hal_core.create_device("amdgpu://?hsa=soft").close()


def test_dump_device_info_names_implementation(monkeypatch):
    monkeypatch.setenv("HAL_AMDGPU_HSA", "soft")
    text = hal_core.registry().driver("amdgpu").dump_device_info(0)
    assert "soft" in text and "gfx1100" in text and "GPU 1" in text


def test_mixed_gpus_default_device_takes_compatible_ones():
    dev = hal_core.create_device("amdgpu://?hsa=soft&soft_gpus=gfx1100,gfx90a,gfx1100")
    assert [g.name for g in dev.backend.gpus] == ["gfx1100", "gfx1100"]
    assert dev.queue_count == 4
    dev.close()
    with pytest.raises(IncompatibleError):
        hal_core.create_device("amdgpu://0,1?hsa=soft&soft_gpus=gfx1100,gfx90a")


def test_system_requirements(soft_hsa):
    from hal_amdgpu.system_info import query_system

    info = query_system(soft_hsa)
    assert info.version_major == 1 and info.timestamp_frequency == 1_000_000_000
    assert info.loader_minor_version == 3
    rt = soft_hsa.lib
    rt.hsa_system_major_extension_supported = lambda ext, major, minor, result: (
        result.__setitem__(0, False) or 0
    )
    try:
        with pytest.raises(IncompatibleError, match="loader extension"):
            query_system(soft_hsa)
    finally:
        del rt.hsa_system_major_extension_supported


def test_loader_extension_table_reports_loaded_code_objects(device):
    from hal_amdgpu.hsa_cdef import ffi
    from hal_amdgpu.hsa_enums import HSA_EXTENSION_AMD_LOADER, LoadedCodeObjectInfo

    hsa = device.backend.hsa
    exe = device.backend.load_executable(code_object_path("multi_entry", "gfx1100"))
    table = ffi.new("hsa_ven_amd_loader_1_03_pfn_t*")
    hsa.check(
        hsa.lib.hsa_system_get_major_extension_table(
            HSA_EXTENSION_AMD_LOADER, 1, ffi.sizeof(table[0]), table
        ),
        "table",
    )
    found = []

    @ffi.callback("hsa_status_t(hsa_executable_t, hsa_loaded_code_object_t, void*)")
    def visit(executable, loaded, data):
        agent = ffi.new("hsa_agent_t*")
        size = ffi.new("uint64_t*")
        table.hsa_ven_amd_loader_loaded_code_object_get_info(
            loaded, LoadedCodeObjectInfo.AGENT, agent
        )
        table.hsa_ven_amd_loader_loaded_code_object_get_info(
            loaded, LoadedCodeObjectInfo.LOAD_SIZE, size
        )
        found.append((agent[0].handle, size[0]))
        return 0

    handle = ffi.new("hsa_executable_t*", [exe.handle])[0]
    assert (
        table.hsa_ven_amd_loader_executable_iterate_loaded_code_objects(handle, visit, ffi.NULL)
        == 0
    )
    assert [a for a, _ in found] == [g.handle for g in device.backend.gpus]
    assert all(size > 0 for _, size in found)
    exe.close()


def test_concurrent_allocation_stress(device):
    import threading

    rt = device.backend.hsa.lib
    before = rt.memory.live_count()
    errors = []

    def worker():
        try:
            for i in range(40):
                buf = device.allocator.allocate_buffer(
                    BufferParams(type=MemoryType.HOST_LOCAL), 64 + i
                )
                buffer_storage(buf).release()
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and rt.memory.live_count() == before
