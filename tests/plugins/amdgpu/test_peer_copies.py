"""Copies between GPUs over the software HSA agent, with and without peer access
(``soft_gpus=...,no_peer_access``): between two amdgpu devices of a group and between the
GPUs of one multi-GPU device. The queue set's ``peers`` counters say which path ran: a
blit over peer memory (``device_copies``) or host staging (``staged_copies``)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hal_amdgpu.hsa_cdef import ffi
from hal_amdgpu.hsa_enums import AgentPoolInfo, HsaStatus, PoolAccess
from hal_amdgpu.peer_copies import PeerCopies
from hal_amdgpu.soft_hsa import SoftHsaRuntime, SoftSystemConfig

import hal_core
from hal_core.backend import InteropMode, LinkClass, TopologyCapability

TIMEOUT = 10
PEER = ""
NO_PEER = "&soft_gpus=gfx1100,gfx1100,no_peer_access"
SIZE = 3 * 4096 + 36  # not a multiple of 16: the blit picks its narrower width


@pytest.fixture(autouse=True)
def _default_unraisablehook(monkeypatch: pytest.MonkeyPatch) -> None:
    # Completion threads report through sys.unraisablehook; pytest replaces it.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)


def _pattern(n: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def _upload(
    device: hal_core.Device,
    buf: hal_core.Buffer,
    data: np.ndarray,
    sem: hal_core.Semaphore,
    value: int,
    queue: int = 1,
) -> None:
    f = device.import_file(data.copy(), hal_core.MemoryAccess.READ)
    device.queue_read(queue, [], [(sem, value)], f, 0, buf, 0, data.nbytes)


def _download(device: hal_core.Device, buf: hal_core.Buffer, n: int, queue: int = 1) -> np.ndarray:
    out = np.zeros(n, np.uint8)
    sem = device.create_semaphore(0)
    f = device.import_file(out, hal_core.MemoryAccess.WRITE)
    device.queue_write(queue, [], [(sem, 1)], buf, 0, f, 0, n)
    sem.wait(1, TIMEOUT)
    return out


def _peers(device: hal_core.Device) -> PeerCopies:
    return device.backend._host_queue_set.peers


# -- the soft agent ------------------------------------------------------------------


@pytest.mark.parametrize("peer", [True, False])
def test_soft_agent_reports_and_enforces_peer_access(peer: bool) -> None:
    """GPU -> other GPU's pools: DISALLOWED_BY_DEFAULT (a grant makes them reachable) with
    peer access, NEVER_ALLOWED (and a refused grant) without, as ROCr reports them."""
    spec = "gfx1100,gfx1100" + ("" if peer else ",no_peer_access")
    rt = SoftHsaRuntime(SoftSystemConfig.from_isas(spec))
    gpus = [h for h, a in rt._agents.items() if a.is_gpu]
    pool = rt._agent_pools[gpus[1]][0]
    agent = ffi.new("hsa_agent_t*", [gpus[0]])[0]
    pool_t = ffi.new("hsa_amd_memory_pool_t*", [pool])[0]
    out = ffi.new("uint32_t*")
    assert rt.hsa_amd_agent_memory_pool_get_info(agent, pool_t, AgentPoolInfo.ACCESS, out) == 0
    assert out[0] == (PoolAccess.DISALLOWED_BY_DEFAULT if peer else PoolAccess.NEVER_ALLOWED)
    ptr = ffi.new("void**")
    assert rt.hsa_amd_memory_pool_allocate(pool_t, 4096, 0, ptr) == 0
    address = int(ffi.cast("uintptr_t", ptr[0]))
    agents = ffi.new("hsa_agent_t[1]", [[gpus[0]]])
    status = rt.hsa_amd_agents_allow_access(1, agents, ffi.NULL, ptr[0])
    alloc = rt.memory.find(address)
    assert alloc is not None
    if peer:
        assert status == 0 and gpus[0] in alloc.allowed_agents
        rt.memory.view(address, 16, gpus[0])  # the grant lets GPU 0 touch it
    else:
        assert status == HsaStatus.ERROR_INVALID_AGENT and gpus[0] not in alloc.allowed_agents
        with pytest.raises(Exception, match="without being granted"):
            rt.memory.view(address, 16, gpus[0])


# -- groups of two amdgpu devices ------------------------------------------------------


def _group(spec: str) -> hal_core.DeviceGroup:
    return hal_core.create_device_group(
        [f"amdgpu://0?hsa=soft{spec}", f"amdgpu://1?hsa=soft{spec}"]
    )


def test_group_topology_advertises_peer_copies() -> None:
    with _group(PEER) as g:
        e = g.topology.edge(0, 1)
        assert e.link_class == LinkClass.NVLINK_IF  # the soft agent's xGMI link
        assert e.capabilities & TopologyCapability.P2P_COPY
        assert e.capabilities & TopologyCapability.PEER_ACCESS_REQUIRES_GRANT
        assert not e.capabilities & TopologyCapability.UNIFIED_MEMORY
        assert e.buffer_read_mode == e.buffer_write_mode == InteropMode.IMPORT
        assert e.copy_cost == 3
        assert g.devices[0].topology_info.can_p2p_with == 0b11
        assert g.devices[0].backend.query_capabilities().peer_copy


def test_group_topology_without_peer_access_is_host_staged() -> None:
    with _group(NO_PEER) as g:
        e = g.topology.edge(0, 1)
        assert e.link_class == LinkClass.HOST_STAGED
        assert not e.capabilities & (
            TopologyCapability.P2P_COPY | TopologyCapability.PEER_ACCESS_REQUIRES_GRANT
        )
        assert e.capabilities & TopologyCapability.LINK_XGMI  # the physical link still
        assert e.buffer_read_mode == InteropMode.COPY
        assert g.devices[0].topology_info.can_p2p_with == 0b01
        assert not g.devices[0].backend.query_capabilities().peer_copy


@pytest.mark.parametrize("spec", [PEER, NO_PEER], ids=["peer", "no_peer"])
def test_group_copy_between_gpus(spec: str) -> None:
    """Bit-exact both ways; with peer access one queue_copy on a GPU over the peer's
    memory, without it the group stages."""
    with _group(spec) as g:
        a, b = g.devices
        data = _pattern(SIZE)
        src = a.allocator.allocate_buffer(None, SIZE)
        dst = b.allocator.allocate_buffer(None, SIZE)
        back = a.allocator.allocate_buffer(None, SIZE)
        ready = a.create_semaphore(0)
        _upload(a, src, data, ready, 1)
        done = b.create_semaphore(0)
        used = g.copy(b, 1, [(ready, 1)], [(done, 1)], src, 0, dst, 0, SIZE)
        # ... and back, run by the other device (a pushes into its own memory from b's)
        used_back = g.copy(a, 1, [(done, 1)], [(done, 2)], dst, 0, back, 0, SIZE)
        done.wait(2, TIMEOUT)
        assert np.array_equal(_download(b, dst, SIZE), data)
        assert np.array_equal(_download(a, back, SIZE), data)
        if spec == PEER:
            assert used == used_back == hal_core.CopyStrategy.NATIVE
            assert g.copy_history[-2].executing_devices == (1,)
            pb, pa = _peers(b), _peers(a)
            assert (pb.device_copies, pb.staged_copies) == (1, 0)
            assert (pa.device_copies, pa.staged_copies) == (1, 0)
        else:
            assert used == used_back == hal_core.CopyStrategy.STAGED
            assert g.copy_history[-1].executing_devices == (1, 0)
            for d in (a, b):
                assert _peers(d).device_copies == 0
            with pytest.raises(hal_core.IncompatibleError):
                g.copy(b, 1, [], [], src, 0, dst, 0, SIZE, strategy=hal_core.CopyStrategy.NATIVE)
            with pytest.raises(hal_core.IncompatibleError):
                g.copy(b, 1, [], [], src, 0, dst, 0, SIZE, strategy=hal_core.CopyStrategy.PEER)


@pytest.mark.parametrize("spec", [PEER, NO_PEER], ids=["peer", "no_peer"])
def test_member_transfers_with_the_other_members_buffers(spec: str) -> None:
    """Device.queue_fill / queue_copy of a member naming the other member's buffer: run
    by the calling device over peer memory (granted at allocation) when the topology
    allows it, else by the buffer's owner / staged by the group."""
    with _group(spec) as g:
        a, b = g.devices
        data = _pattern(SIZE, 3)
        theirs = b.allocator.allocate_buffer(None, SIZE)
        mine = a.allocator.allocate_buffer(None, SIZE)
        ready = b.create_semaphore(0)
        _upload(b, theirs, data, ready, 1)
        done = a.create_semaphore(0)
        a.queue_copy(1, [(ready, 1)], [(done, 1)], theirs, 0, mine, 0, SIZE)
        a.queue_fill(1, [(done, 1)], [(done, 2)], theirs, 0, 32, b"\x22")
        done.wait(2, TIMEOUT)
        assert np.array_equal(_download(a, mine, SIZE), data)
        want = data.copy()
        want[:32] = 0x22
        assert np.array_equal(_download(b, theirs, SIZE), want)
        peers = _peers(a)
        if spec == PEER:
            assert g.last_copy_strategy == hal_core.CopyStrategy.NATIVE
            assert (peers.device_copies, peers.staged_copies) == (1, 0)
        else:
            assert g.last_copy_strategy == hal_core.CopyStrategy.STAGED
            assert (peers.device_copies, peers.staged_copies) == (0, 0)


# -- one device over two GPUs ------------------------------------------------------------


@pytest.mark.parametrize("spec", [PEER, NO_PEER], ids=["peer", "no_peer"])
def test_copy_on_the_second_gpu_of_one_device_in_order_with_other_work(spec: str) -> None:
    """Queue 2 runs on GPU 1; the device's memory is GPU 0's. A chain fill (GPU 0) ->
    copy (GPU 1) -> fill of part of the target (GPU 0) -> copy back (GPU 1) keeps its
    order and is bit-exact; the copy path follows the peer access."""
    d = hal_core.create_device(f"amdgpu://?hsa=soft{spec}")
    try:
        assert d.query_i64("hal.device", "gpu_count") == 2
        data = _pattern(SIZE, 11)
        src, dst, back = (d.allocator.allocate_buffer(None, SIZE) for _ in range(3))
        s = d.create_semaphore(0)
        _upload(d, src, data, s, 1)
        gpu1 = 1 << 2
        d.queue_copy(gpu1, [(s, 1)], [(s, 2)], src, 0, dst, 0, SIZE)
        d.queue_fill(1, [(s, 2)], [(s, 3)], dst, 0, 64, b"\xab")
        d.queue_copy(gpu1, [(s, 3)], [(s, 4)], dst, 0, back, 0, SIZE)
        s.wait(4, TIMEOUT)
        want = data.copy()
        want[:64] = 0xAB
        assert np.array_equal(_download(d, back, SIZE), want)
        peers = _peers(d)
        if spec == PEER:
            assert (peers.device_copies, peers.staged_copies) == (2, 0)
        else:
            assert (peers.device_copies, peers.staged_copies) == (0, 2)
            # a fill of the device's memory on GPU 1 cannot run there: refused at the call
            with pytest.raises(hal_core.IncompatibleError):
                d.queue_fill(gpu1, [], [(s, 5)], dst, 0, 64, b"\x01")
        # copies on GPU 0 itself take neither path
        d.queue_copy(1, [], [(s, 5)], src, 0, dst, 0, SIZE)
        s.wait(5, TIMEOUT)
        assert peers.device_copies + peers.staged_copies == 2
    finally:
        d.close()


# -- failures ----------------------------------------------------------------------------


def test_fault_in_a_peer_blit_fails_its_signals() -> None:
    with _group(PEER) as g:
        a, b = g.devices
        src = a.allocator.allocate_buffer(None, 256)
        dst = b.allocator.allocate_buffer(None, 256)
        done = b.create_semaphore(0)
        b.backend.hsa.lib.inject_fault()
        g.copy(b, 1, [], [(done, 1)], src, 0, dst, 0, 256)
        with pytest.raises(hal_core.HalError):
            done.wait(1, TIMEOUT)
        assert _peers(b).device_copies == 1
        # the other device still works
        ok = a.create_semaphore(0)
        a.queue_fill(1, [], [(ok, 1)], src, 0, 256, b"\x05")
        ok.wait(1, TIMEOUT)


def test_fault_in_a_staged_copy_fails_its_signals_and_later_copies_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d = hal_core.create_device(f"amdgpu://?hsa=soft{NO_PEER}")
    try:
        data = _pattern(SIZE, 5)
        src, dst = (d.allocator.allocate_buffer(None, SIZE) for _ in range(2))
        s = d.create_semaphore(0)
        _upload(d, src, data, s, 1)
        s.wait(1, TIMEOUT)
        lib = d.backend.hsa.lib
        real = lib.hsa_memory_copy
        monkeypatch.setattr(
            lib, "hsa_memory_copy", lambda *a: int(HsaStatus.ERROR_INVALID_ARGUMENT)
        )
        bad = d.create_semaphore(0)
        d.queue_copy(1 << 2, [], [(bad, 1)], src, 0, dst, 0, SIZE)
        with pytest.raises(hal_core.HalError, match="staged copy"):
            bad.wait(1, TIMEOUT)
        monkeypatch.setattr(lib, "hsa_memory_copy", real)
        ok = d.create_semaphore(0)
        d.queue_copy(1 << 2, [], [(ok, 1)], src, 0, dst, 0, SIZE)
        ok.wait(1, TIMEOUT)
        assert np.array_equal(_download(d, dst, SIZE), data)
        assert _peers(d).staged_copies == 2
    finally:
        d.close()


def test_peer_copy_from_a_pending_queue_allocation() -> None:
    """A queue_alloca buffer (inside a pool slab the allocator granted to the peer GPU,
    not yet committed when the copy is submitted): copied over peer memory, bit-exact."""
    with _group(PEER) as g:
        a, b = g.devices
        data = _pattern(SIZE, 13)
        s = a.create_semaphore(0)
        src = a.queue_alloca(1, [], [(s, 1)], None, SIZE)
        f = a.import_file(data.copy(), hal_core.MemoryAccess.READ)
        a.queue_read(1, [(s, 1)], [(s, 2)], f, 0, src, 0, SIZE)
        dst = b.allocator.allocate_buffer(None, SIZE)
        done = b.create_semaphore(0)
        used = g.copy(b, 1, [(s, 2)], [(done, 1)], src, 0, dst, 0, SIZE)
        done.wait(1, TIMEOUT)
        assert used == hal_core.CopyStrategy.NATIVE
        assert np.array_equal(_download(b, dst, SIZE), data)
        assert (_peers(b).device_copies, _peers(b).staged_copies) == (1, 0)
