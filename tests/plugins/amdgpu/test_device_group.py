"""Device groups with amdgpu over the software agent: local-task + two simulated GPUs as
two amdgpu devices (one HSA system: a same-driver edge from HSA link info), fan-out/fan-in,
failure propagation across devices, topology bitmaps, ``hal info --topology``."""

import pytest

import hal_core
from hal_core import InteropMode, LinkClass, TopologyCapability
from hal_core.cli.main import main

URIS = ["local-task://", "amdgpu://0?hsa=soft", "amdgpu://1?hsa=soft"]
TIMEOUT = 10


@pytest.fixture
def group():
    g = hal_core.create_device_group(URIS)
    yield g
    g.close()


def test_same_driver_edge_from_hsa_links(group):
    topo = group.topology
    e = topo.edge(1, 2)
    assert e.link_class == LinkClass.NVLINK_IF  # soft agent GPUs: xGMI
    assert e.capabilities & TopologyCapability.LINK_XGMI
    assert e.capabilities & TopologyCapability.P2P_COPY
    assert e.buffer_read_mode == InteropMode.COPY and e.copy_cost == 3
    # local-task <-> amdgpu: capability-derived, staged through host memory
    assert topo.edge(0, 1).link_class == LinkClass.HOST_STAGED
    info = group.devices[1].topology_info
    assert info.can_p2p_with & 0b100 and info.can_wait_from == 0b111


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
    # the other amdgpu device still works
    ok = b.create_semaphore(0)
    b.queue_barrier(1, [], [(ok, 1)])
    ok.wait(1, TIMEOUT)


def test_leaving_group_unhooks_axes():
    g = hal_core.create_device_group(URIS[1:])
    backend = g.devices[0].backend
    assert backend._group_axes is not None
    g.close()


def test_hal_info_topology(capsys):
    rc = main(["info", "--topology"] + [a for u in URIS for a in ("--device", u)])
    out = capsys.readouterr().out
    assert rc == 0 and "amdgpu" in out
