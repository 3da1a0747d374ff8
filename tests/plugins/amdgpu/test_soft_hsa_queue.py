"""The soft agent's AQL queue and packet processor, driven through the HSA calls."""

import threading

import numpy as np
import pytest
from hal_amdgpu.agents import discover_agents
from hal_amdgpu.aql_packets import (
    BARRIER_DTYPE,
    BARRIER_VALUE_DTYPE,
    DISPATCH_SETUP_3D,
    KERNEL_DISPATCH_DTYPE,
    AmdFormat,
    FenceScope,
    PacketType,
    make_header,
)
from hal_amdgpu.executable import load_executable
from hal_amdgpu.hsa_cdef import ffi
from hal_amdgpu.hsa_enums import UINT64_MAX, HsaStatus, SignalCondition
from hal_amdgpu.hsa_memory import find_cpu_memory_pools, find_gpu_memory_pools
from hal_amdgpu.kernels import code_object_path

TIMEOUT_NS = 10_000_000_000


class Harness:
    def __init__(self, hsa):
        self.hsa = hsa
        self.lib = hsa.lib
        self.system = discover_agents(hsa)
        self.gpu = self.system.gpus[0]
        self.cpu_pools = find_cpu_memory_pools(hsa, self.system.cpus[0])
        self.gpu_pools = find_gpu_memory_pools(hsa, self.gpu)
        self.errors = []
        self.error_event = threading.Event()

        @ffi.callback("void(hsa_status_t, hsa_queue_t*, void*)")
        def on_error(status, queue, data):
            self.errors.append(status)
            self.error_event.set()

        self._on_error = on_error
        out = ffi.new("hsa_queue_t**")
        hsa.check(
            self.lib.hsa_queue_create(
                self.gpu.hsa_handle(hsa), 64, 0, on_error, ffi.NULL, 0xFFFFFFFF, 0xFFFFFFFF, out
            ),
            "hsa_queue_create",
        )
        self.queue = out[0]
        self.amd = ffi.cast("amd_queue_t*", self.queue)
        ring = ffi.buffer(self.queue.base_address, 64 * self.queue.size)
        self.raw = np.frombuffer(ring, dtype=np.uint8)

    def signal(self, value):
        out = ffi.new("hsa_signal_t*")
        self.hsa.check(self.lib.hsa_amd_signal_create(value, 0, ffi.NULL, 0, out), "signal")
        return out[0]

    def alloc(self, pool, size):
        out = ffi.new("void**")
        handle = ffi.new("hsa_amd_memory_pool_t*", [pool.handle])[0]
        self.hsa.check(self.lib.hsa_amd_memory_pool_allocate(handle, size, 0, out), "alloc")
        agents = ffi.new("hsa_agent_t[]", [[self.gpu.handle], [self.system.cpus[0].handle]])
        self.hsa.check(self.lib.hsa_amd_agents_allow_access(2, agents, ffi.NULL, out[0]), "allow")
        return int(ffi.cast("uintptr_t", out[0]))

    def host(self, address, count, dtype):
        dt = np.dtype(dtype)
        return np.frombuffer(ffi.buffer(ffi.cast("char*", address), count * dt.itemsize), dt)

    def reserve(self):
        index = self.lib.hsa_queue_add_write_index_scacq_screl(self.queue, 1)
        slot = index & (self.queue.size - 1)
        return index, self.raw[slot * 64 : (slot + 1) * 64]

    def publish(self, index, slot_bytes, header, setup=0):
        # Header and setup go out last as one 32-bit store, then the doorbell.
        slot_bytes.view(np.uint32)[0] = header | (setup << 16)
        self.lib.hsa_signal_store_screlease(self.queue.doorbell_signal, index)

    def wait(self, signal, value):
        got = self.lib.hsa_signal_wait_scacquire(signal, SignalCondition.EQ, value, TIMEOUT_NS, 0)
        assert got == value


@pytest.fixture
def h(soft_hsa):
    harness = Harness(soft_hsa)
    yield harness
    soft_hsa.lib.hsa_queue_destroy(harness.queue)


def test_queue_descriptor_layout(h):
    assert h.queue.size == 64 and h.queue.doorbell_signal.handle
    assert h.amd.write_dispatch_id == 0 and h.amd.read_dispatch_id == 0
    headers = h.raw.view(np.uint16)[::32]
    assert (headers == PacketType.INVALID).all()


def test_barrier_and_waits_for_dependencies(h):
    dep = h.signal(1)
    done = h.signal(1)
    index, slot = h.reserve()
    pkt = slot.view(BARRIER_DTYPE)[0]
    pkt["dep_signal"][0] = dep.handle
    pkt["completion_signal"] = done.handle
    h.publish(
        index, slot, make_header(PacketType.BARRIER_AND, True, FenceScope.SYSTEM, FenceScope.SYSTEM)
    )
    assert h.lib.hsa_signal_wait_scacquire(done, SignalCondition.EQ, 0, 1_000_000, 0) == 1
    h.lib.hsa_signal_store_screlease(dep, 0)
    h.wait(done, 0)
    assert h.lib.hsa_queue_load_read_index_scacquire(h.queue) == 1
    assert h.raw.view(np.uint16)[0] == PacketType.INVALID  # slot handed back


def test_barrier_or_and_barrier_value(h):
    a, b, done = h.signal(1), h.signal(1), h.signal(2)
    index, slot = h.reserve()
    pkt = slot.view(BARRIER_DTYPE)[0]
    pkt["dep_signal"][0] = a.handle
    pkt["dep_signal"][1] = b.handle
    pkt["completion_signal"] = done.handle
    h.publish(index, slot, make_header(PacketType.BARRIER_OR, True, 0, 0))
    index2, slot2 = h.reserve()
    value_pkt = slot2.view(BARRIER_VALUE_DTYPE)[0]
    value_pkt["signal"] = a.handle
    value_pkt["value"] = 5
    value_pkt["mask"] = 0xFF
    value_pkt["cond"] = SignalCondition.GTE
    value_pkt["completion_signal"] = done.handle
    h.publish(
        index2,
        slot2,
        make_header(PacketType.VENDOR_SPECIFIC, True, 0, 0),
        setup=int(AmdFormat.BARRIER_VALUE),
    )
    h.lib.hsa_signal_store_screlease(b, 0)  # OR satisfied by b
    h.wait(done, 1)
    h.lib.hsa_signal_store_screlease(a, 0x105)  # masked value 5 >= 5
    h.wait(done, 0)
    assert h.amd.read_dispatch_id == 2


def _dispatch(h, kernel_object, kernarg, grid, wg, done):
    index, slot = h.reserve()
    pkt = slot.view(KERNEL_DISPATCH_DTYPE)[0]
    pkt["workgroup_size"] = wg
    pkt["grid_size"] = grid
    pkt["kernel_object"] = kernel_object
    pkt["kernarg_address"] = kernarg
    pkt["completion_signal"] = done.handle
    h.publish(
        index,
        slot,
        make_header(PacketType.KERNEL_DISPATCH, True, FenceScope.AGENT, FenceScope.SYSTEM),
        DISPATCH_SETUP_3D,
    )


def test_kernel_dispatch_runs_host_twin(h):
    exe = load_executable(h.hsa, [h.gpu], code_object_path("scale_and_offset", "gfx1100"))
    info = exe.dispatch_info[0][0]
    n = 100
    src = h.alloc(h.gpu_pools.fine, n * 4)
    dst = h.alloc(h.gpu_pools.coarse, n * 4)
    h.host(src, n, np.float32)[:] = np.arange(n, dtype=np.float32)
    kernarg = h.alloc(h.cpu_pools.kernarg, 64)
    args = h.host(kernarg, 8, np.uint32)
    args.view(np.uint64)[:2] = [src, dst]
    args[4] = np.float32(2.0).view(np.uint32)
    args[5] = np.float32(0.5).view(np.uint32)
    args[6] = n
    done = h.signal(1)
    _dispatch(h, info.kernel_object, kernarg, (128, 1, 1), (64, 1, 1), done)
    h.wait(done, 0)
    np.testing.assert_allclose(h.host(dst, n, np.float32), np.arange(n) * 2.0 + 0.5)
    exe.close()


def test_implicit_args_reach_the_twin(h):
    exe = load_executable(h.hsa, [h.gpu], code_object_path("indirect", "gfx1100"))
    layout = exe.layouts[0]
    out = h.alloc(h.gpu_pools.coarse, 4 * 128)
    kernarg = h.alloc(h.cpu_pools.kernarg, layout.kernarg_size)
    raw = h.host(kernarg, layout.kernarg_size, np.uint8)
    raw[:8].view(np.uint64)[0] = out
    raw[8:12].view(np.uint32)[0] = 1000
    implicit = raw[layout.implicit_args_offset :]
    implicit[:12].view(np.uint32)[:] = [4, 1, 1]  # block_count
    implicit[12:18].view(np.uint16)[:] = [32, 1, 1]  # group_size
    done = h.signal(1)
    _dispatch(h, exe.dispatch_info[0][0].kernel_object, kernarg, (128, 1, 1), (32, 1, 1), done)
    h.wait(done, 0)
    assert (h.host(out, 128, np.uint32) == np.arange(1000, 1128)).all()


def test_missing_twin_goes_through_error_callback(h):
    exe = load_executable(h.hsa, [h.gpu], code_object_path("multi_entry", "gfx1100"))
    del h.lib.host_twins["negate"]
    done = h.signal(1)
    _dispatch(
        h,
        exe.dispatch_info[0][0].kernel_object,
        h.alloc(h.cpu_pools.kernarg, 64),
        (1, 1, 1),
        (1, 1, 1),
        done,
    )
    assert h.error_event.wait(10)
    assert h.errors == [HsaStatus.ERROR_INVALID_CODE_OBJECT]
    assert h.lib.hsa_signal_load_scacquire(done) == 1  # never completed


def test_injected_fault_and_memory_fault(soft_hsa):
    h = Harness(soft_hsa)
    exe = load_executable(h.hsa, [h.gpu], code_object_path("workgroup_ids", "gfx1100"))
    soft_hsa.lib.inject_fault(HsaStatus.AMD_ERROR_MEMORY_FAULT)
    _dispatch(
        h,
        exe.dispatch_info[0][0].kernel_object,
        h.alloc(h.cpu_pools.kernarg, 64),
        (64, 1, 1),
        (64, 1, 1),
        h.signal(1),
    )
    assert h.error_event.wait(10) and h.errors == [HsaStatus.AMD_ERROR_MEMORY_FAULT]
    soft_hsa.lib.hsa_queue_destroy(h.queue)

    h2 = Harness(soft_hsa)
    kernarg = h2.alloc(h2.cpu_pools.kernarg, 64)
    h2.host(kernarg, 1, np.uint64)[0] = 0x10  # a wild pointer
    _dispatch(
        h2, exe.dispatch_info[0][0].kernel_object, kernarg, (64, 1, 1), (64, 1, 1), h2.signal(1)
    )
    assert h2.error_event.wait(10)
    assert h2.errors == [HsaStatus.AMD_ERROR_MEMORY_APERTURE_VIOLATION]
    soft_hsa.lib.hsa_queue_destroy(h2.queue)


def test_signal_wait_any_and_timeout(h):
    a, b = h.signal(1), h.signal(1)
    signals = ffi.new("hsa_signal_t[]", [[a.handle], [b.handle]])
    conds = ffi.new("uint32_t[]", [0, 0])
    values = ffi.new("int64_t[]", [0, 0])
    out = ffi.new("int64_t*")
    assert h.lib.hsa_amd_signal_wait_any(2, signals, conds, values, 1000, 0, out) == 0xFFFFFFFF
    h.lib.hsa_signal_store_relaxed(b, 0)
    assert h.lib.hsa_amd_signal_wait_any(2, signals, conds, values, UINT64_MAX, 0, out) == 1
    assert out[0] == 0


def test_stress_many_packets_in_order(h):
    done = h.signal(200)
    for _ in range(200):
        index, slot = h.reserve()
        pkt = slot.view(BARRIER_DTYPE)[0]
        pkt["dep_signal"][:] = 0
        pkt["completion_signal"] = done.handle
        h.publish(index, slot, make_header(PacketType.BARRIER_AND, True, 0, 0))
        # Keep at most the ring's size in flight, waiting on the completion count.
        h.lib.hsa_signal_wait_scacquire(done, SignalCondition.LT, 200 - index + 32, TIMEOUT_NS, 0)
    h.wait(done, 0)
    assert h.amd.read_dispatch_id == 200
