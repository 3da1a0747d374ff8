"""Device groups with amdgpu over the software agent: local-task + two simulated GPUs as
two amdgpu devices (one HSA system: a same-driver edge from HSA link info), fan-out/fan-in,
failure propagation across devices, topology bitmaps, ``hal info --topology``."""

import numpy as np
import pytest

import hal_core
import hal_core.backend
from hal_core.backend import InteropMode, LinkClass, TopologyCapability
from hal_core.cli.main import main

URIS = ["local-task://", "amdgpu://0?hsa=soft", "amdgpu://1?hsa=soft"]
TIMEOUT = 10


@pytest.fixture
def group():
    g = hal_core.create_device_group(URIS)
    yield g
    g.close()


def test_same_driver_edge_from_hsa_links(group):
    """Distinct GPUs of one HSA system that can reach each other's pools after a grant:
    the physical link (xGMI on the soft agent) in the LINK_* bits and the link class, a
    peer-copy path and buffers reached by IMPORT (test_peer_copies covers the GPUs
    without peer access, which stage)."""
    topo = group.topology
    e = topo.edge(1, 2)
    assert e.capabilities & TopologyCapability.LINK_XGMI  # soft agent GPUs: xGMI
    assert e.link_class == LinkClass.NVLINK_IF
    assert e.capabilities & TopologyCapability.P2P_COPY
    assert e.capabilities & TopologyCapability.PEER_ACCESS_REQUIRES_GRANT
    assert not e.capabilities & TopologyCapability.UNIFIED_MEMORY
    assert e.buffer_read_mode == InteropMode.IMPORT and e.copy_cost == 3
    # local-task <-> amdgpu: capability-derived, staged through host memory
    assert topo.edge(0, 1).link_class == LinkClass.HOST_STAGED
    info = group.devices[1].topology_info
    assert info.can_p2p_with == 0b110 and info.can_wait_from == 0b111


def test_topology_advertises_the_copy_the_group_makes(group):
    """For every ordered pair, ``can_p2p_with`` has the bit exactly when the group copies
    between the two with one native or peer copy; the amdgpu pair copies over peer memory."""
    devices = group.devices
    bufs = [d.allocator.allocate_buffer(None, 256) for d in devices]
    for s in range(3):
        for t in range(3):
            strategy = group.select_copy_strategy(devices[t], bufs[s], bufs[t])
            direct = strategy != hal_core.CopyStrategy.STAGED
            assert bool(devices[t].topology_info.can_p2p_with & (1 << s)) == direct, (s, t)
    a, b = devices[1], devices[2]
    src, dst = bufs[1], bufs[2]
    sem = a.create_semaphore(0)
    a.queue_fill(1, [], [(sem, 1)], src, 0, 256, b"\x5a")
    done = b.create_semaphore(0)
    used = group.copy(b, 1, [(sem, 1)], [(done, 1)], src, 0, dst, 0, 256)
    done.wait(1, TIMEOUT)
    assert used == hal_core.CopyStrategy.NATIVE  # one blit on b's GPU over a's memory
    assert group.last_copy.executing_devices == (2,)
    out = b.create_semaphore(0)
    host = np.zeros(256, np.uint8)
    b.queue_write(
        1, [], [(out, 1)], dst, 0, b.import_file(host, hal_core.MemoryAccess.WRITE), 0, 256
    )
    out.wait(1, TIMEOUT)
    assert host.tobytes() == b"\x5a" * 256


def test_fan_out_fan_in(group):
    local, a, b = group.devices
    start = local.create_semaphore(0)
    done_a, done_b, joined = (d.create_semaphore(0) for d in (a, b, local))
    bufs = [a.allocator.allocate_buffer(None, 64), b.allocator.allocate_buffer(None, 64)]
    a.queue_fill(1, [(start, 1)], [(done_a, 1)], bufs[0], 0, 64, b"\x0a")
    b.queue_fill(1, [(start, 1)], [(done_b, 1)], bufs[1], 0, 64, b"\x0b")
    local.queue_barrier(1, [(done_a, 1), (done_b, 1)], [(joined, 1)])
    start.signal(1)
    joined.wait(1, TIMEOUT)
    # group axes advanced for the amdgpu queues that ran
    tracker = group.devices[1].topology_info.tracker
    assert tracker is group.devices[2].topology_info.tracker


def test_failure_propagates_to_other_devices(group):
    local, a, b = group.devices
    sem_a = a.create_semaphore(0)
    after = b.create_semaphore(0)
    a.backend.hsa.lib.inject_fault()
    buf = a.allocator.allocate_buffer(None, 64)
    a.queue_fill(1, [], [(sem_a, 1)], buf, 0, 64, b"\x01")
    b.queue_barrier(1, [(sem_a, 1)], [(after, 1)])
    with pytest.raises(hal_core.HalError):
        after.wait(1, TIMEOUT)
    # The other amdgpu device still works. (Its queue 0 fails with a's queue when the
    # wait became a device barrier on a's epoch signal; test_group_device_waits.)
    ok = b.create_semaphore(0)
    b.queue_barrier(2, [], [(ok, 1)])
    ok.wait(1, TIMEOUT)


def test_leaving_group_unhooks_axes():
    g = hal_core.create_device_group(URIS[1:])
    backend = g.devices[0].backend
    assert backend._group_axes is not None
    qset = backend._host_queue_set
    g.close()
    assert backend._group_axes is None and qset.retire_listener is None


def test_hal_info_topology(capsys):
    rc = main(["info", "--topology"] + [a for u in URIS for a in ("--device", u)])
    out = capsys.readouterr().out
    assert rc == 0 and "amdgpu" in out


@pytest.mark.parametrize("n", [1, 2, 3])
def test_topology_bitmaps_one_to_three_devices(n):
    uris = ["amdgpu://0?hsa=soft", "amdgpu://1?hsa=soft", "local-task://"][:n]
    with hal_core.create_device_group(uris) as g:
        full = (1 << n) - 1
        for i, device in enumerate(g.devices):
            info = device.topology_info
            assert info.index == i and info.tracker is g.tracker
            assert info.can_wait_from == full and info.can_signal_to == full
            # the two amdgpu GPUs reach each other's memory (after a grant) and copy
            # between them directly; local-task only through host memory
            gpus = 0b11 & full if i < 2 else 0
            assert info.can_import_from == (1 << i) | gpus
            assert info.can_p2p_with == (1 << i) | gpus


def test_amdgpu_queue_axes_advance_in_the_group_tracker(group):
    _local, a, b = group.devices
    for d, device in ((1, a), (2, b)):
        sem = device.create_semaphore(0)
        for q in range(device.queue_count):
            device.queue_barrier(1 << q, [], [(sem, q + 1)])
            sem.wait(q + 1, TIMEOUT)
            axis = group.queue_axis(d, q)
            # the frontier semaphore of "this queue's first epoch" is reached
            group.semaphore_for_frontier(hal_core.backend.Frontier.single(axis, 1)).wait(1, TIMEOUT)
            assert group.tracker.current_epoch(axis) >= 1


def test_devices_over_different_hsa_systems_keep_the_capability_edge():
    """Two soft agents (different ``soft_gpus`` specs: two HSA systems): no HSA link info
    relates them, so the edge stays the capability-derived, host-staged one."""
    uris = ["amdgpu://0?hsa=soft", "amdgpu://0?hsa=soft&soft_gpus=gfx90a"]
    with hal_core.create_device_group(uris) as g:
        a, b = g.devices
        assert a.backend.hsa is not b.backend.hsa
        e = g.topology.edge(0, 1)
        assert e.link_class == LinkClass.HOST_STAGED
        assert not e.capabilities & TopologyCapability.LINK_XGMI


def test_two_devices_over_the_same_gpu_share_memory_natively():
    uris = ["amdgpu://0?hsa=soft", "amdgpu://0?hsa=soft"]
    with hal_core.create_device_group(uris) as g:
        e = g.topology.edge(0, 1)
        assert e.link_class == LinkClass.SAME_DIE
        assert e.buffer_read_mode == InteropMode.NATIVE
        assert e.capabilities & TopologyCapability.UNIFIED_MEMORY


def test_group_and_profiling_listeners_chain():
    """Profiling begun while a member: both retire listeners run (profiling chained in
    front of the group's); each unhooks itself."""
    from hal_core.profiling import ProfilingDataFamily as F
    from hal_core.profiling import ProfilingOptions, StatisticsSink

    device = hal_core.create_device("amdgpu://0?hsa=soft")
    with hal_core.DeviceGroup.from_devices([device]) as g:
        stats = StatisticsSink()
        device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[stats]))
        sem = device.create_semaphore(0)
        buf = device.allocator.allocate_buffer(None, 64)
        device.queue_fill(1, [], [(sem, 1)], buf, 0, 64, b"\x05")
        sem.wait(1, TIMEOUT)
        axis = g.queue_axis(0, 0)
        g.semaphore_for_frontier(hal_core.backend.Frontier.single(axis, 1)).wait(1, TIMEOUT)
        device.profiling_end()
        assert len(stats.capture.records("dispatch-events")) == 1
        # the group's listener still advances the axis after profiling unhooked
        device.queue_fill(1, [], [(sem, 2)], buf, 0, 64, b"\x06")
        sem.wait(2, TIMEOUT)
        g.semaphore_for_frontier(hal_core.backend.Frontier.single(axis, 2)).wait(1, TIMEOUT)
        backend = device.backend
    # leaving the group (close) unhooks the axes listener
    assert backend._group_axes is None
