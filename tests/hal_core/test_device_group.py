"""Device groups: building, topology, tracker sharing, cross-device sync and copies."""

from __future__ import annotations

import gc
import json
import threading
import weakref

import attrs
import numpy as np
import pytest
from hal_local_cpu.device import LocalDeviceBackend
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core as hal
from hal_core import QueueAffinity
from hal_core._device_group import MAX_GROUP_DEVICES, DeviceGroup, create_device_group
from hal_core._frontier import Frontier, axis_device_index, axis_queue_index
from hal_core._group_copy import CopyStrategy
from hal_core._topology import (
    DeviceCapabilities,
    InteropMode,
    LinkClass,
    TopologyEdge,
    edge_from_capabilities,
    format_topology,
)
from hal_core.backend import device_from_backend

ANY = QueueAffinity.ANY
T = 10.0  # generous timeout for host waits (never a sleep)

PAIRS = [
    pytest.param(["local-task://", "local-sync://"], id="task+sync"),
    pytest.param(["local-task://", "local-task://"], id="task+task"),
]


# -- simulated devices for edges the CPU backend never produces --------------------------


class _DiscreteBackend(LocalDeviceBackend):
    """A CPU backend that reports a private memory domain (like a discrete GPU reached
    only by copies through host memory). Execution is the CPU backend's."""

    driver = "sim-discrete"

    def __init__(self, domain: str) -> None:
        super().__init__(self.driver, 2, 0)
        self._domain = domain

    def query_capabilities(self) -> DeviceCapabilities:
        return DeviceCapabilities(memory_domain=self._domain, host_memory_access=InteropMode.COPY)

    def refine_topology_edge(self, other, edge):
        return edge


class _IsolatedBackend(_DiscreteBackend):
    """Same-driver pairs of these are refined to ISOLATED: nothing shared."""

    driver = "sim-isolated"

    def refine_topology_edge(self, other, edge):
        return attrs.evolve(
            edge,
            link_class=LinkClass.ISOLATED,
            buffer_read_mode=InteropMode.NONE,
            buffer_write_mode=InteropMode.NONE,
            wait_mode=InteropMode.NONE,
            signal_mode=InteropMode.NONE,
        )


class _FailingAssignBackend(LocalDeviceBackend):
    """Refuses to join a group (as a backend whose queues cannot re-register would)."""

    def __init__(self) -> None:
        super().__init__("sim-failing", 1, 0)
        self.assigned: list = []

    def assign_topology_info(self, info):
        if info is not None:
            raise hal.ResourceExhaustedError("sim: no room for another tracker")
        self.assigned.append(info)


def _sim_device(backend, name="sim://") -> hal.Device:
    return device_from_backend(backend, driver_name=backend.name, uri=name)


def _open(uris):
    return [hal.create_device(u) for u in uris]


def _buffer(device, data: bytes) -> hal.Buffer:
    buf = device.allocator.allocate_buffer(hal.BufferParams(), len(data))
    buf.write(data)
    return buf


# -- building ------------------------------------------------------------------------------


def test_empty_group_is_invalid_argument():
    with pytest.raises(hal.InvalidArgumentError, match="at least one device"):
        create_device_group([])
    with pytest.raises(hal.InvalidArgumentError, match="at least one device"):
        DeviceGroup.from_devices([])
    with pytest.raises(hal.InvalidArgumentError, match="list of URIs"):
        create_device_group("local-task://")


def test_more_than_32_devices_is_resource_exhausted_and_changes_nothing():
    with pytest.raises(hal.ResourceExhaustedError, match="at most 32"):
        create_device_group(["local-sync://"] * (MAX_GROUP_DEVICES + 1))
    devices = _open(["local-sync://?queues=1"] * (MAX_GROUP_DEVICES + 1))
    try:
        with pytest.raises(hal.ResourceExhaustedError, match="got 33"):
            DeviceGroup.from_devices(devices)
        assert all(d.topology_info is None for d in devices)
        # Exactly 32 works.
        with DeviceGroup.from_devices(devices[:32], owns_devices=False) as group:
            assert group.device_count == 32
            assert group.topology_info(31).can_wait_from == (1 << 32) - 1
    finally:
        for d in devices:
            d.close()


def test_bad_members_are_rejected_with_nothing_assigned():
    a, b = _open(["local-task://", "local-sync://"])
    try:
        with pytest.raises(hal.InvalidArgumentError, match="listed twice"):
            DeviceGroup.from_devices([a, b, a])
        with pytest.raises(hal.InvalidArgumentError, match="expected a hal_core.Device"):
            DeviceGroup.from_devices([a, "local-task://"])
        assert a.topology_info is None and b.topology_info is None
        with DeviceGroup.from_devices([a], owns_devices=False):
            with pytest.raises(hal.FailedPreconditionError, match="already in a device group"):
                DeviceGroup.from_devices([b, a])
            assert b.topology_info is None
        b.close()
        with pytest.raises(hal.FailedPreconditionError, match="closed"):
            DeviceGroup.from_devices([a, b])
        assert a.topology_info is None
    finally:
        a.close()
        b.close()


def test_unknown_uri_closes_devices_opened_so_far():
    with pytest.raises(hal.NotFoundError):
        create_device_group(["local-task://", "nosuchdriver://"])


def test_direct_construction_is_refused():
    with pytest.raises(hal.InvalidArgumentError, match="create_device_group"):
        DeviceGroup()


def test_failed_build_unwinds_every_assignment():
    a, b = _open(["local-task://", "local-sync://"])
    failing = _FailingAssignBackend()
    c = _sim_device(failing)
    try:
        with pytest.raises(hal.ResourceExhaustedError, match="no room"):
            DeviceGroup.from_devices([a, b, c], owns_devices=False)
        assert a.topology_info is None and b.topology_info is None and c.topology_info is None
        # The devices still work exactly as before and can join another group.
        for device in (a, b):
            s = device.create_semaphore()
            device.queue_barrier(ANY, [], [(s, 1)])
            s.wait(1, T)
        with DeviceGroup.from_devices([a, b], owns_devices=False) as group:
            assert a.topology_info.group is group
    finally:
        for d in (a, b, c):
            d.close()


# -- topology --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3])
def test_topology_bitmaps_for_cpu_devices(n):
    uris = ["local-task://", "local-sync://", "local-task://?queues=3"][:n]
    with create_device_group(uris) as group:
        full = (1 << n) - 1
        for i in range(n):
            info = group.devices[i].topology_info
            assert info.index == i and info.group is group
            assert info.self_edge == TopologyEdge.self_edge()
            assert info.can_wait_from == full and info.can_signal_to == full
            assert info.can_import_from == full  # one process, one host memory
            assert info.can_p2p_with & (1 << i)
            assert axis_device_index(info.base_axis) == i
            assert axis_queue_index(info.base_axis) == 0
            assert info.tracker is group.tracker
        for s in range(n):
            for d in range(n):
                edge = group.topology.edge(s, d)
                assert edge.buffer_read_mode == InteropMode.NATIVE
                assert edge.wait_mode == InteropMode.NATIVE
                assert edge.link_class == LinkClass.SAME_DIE
        with pytest.raises(hal.NotFoundError, match="outside"):
            group.topology.edge(0, n)


def test_topology_bitmaps_with_discrete_and_isolated_devices():
    cpu = hal.create_device("local-task://")
    gpu = _sim_device(_DiscreteBackend("sim-gpu-0"), "sim-gpu://0")
    iso = _sim_device(_IsolatedBackend("sim-iso"), "sim-iso://0")
    iso2 = _sim_device(_IsolatedBackend("sim-iso2"), "sim-iso://1")
    with DeviceGroup.from_devices([cpu, gpu, iso, iso2]) as group:
        cpu_info, gpu_info, iso_info, iso2_info = (d.topology_info for d in group.devices)
        # The CPU reads nothing of the discrete device's memory; the discrete device
        # reaches host memory only by copies either.
        assert cpu_info.can_import_from == 0b0001
        assert gpu_info.can_import_from == 0b0010
        edge = group.topology.edge(0, 1)
        assert edge.link_class == LinkClass.HOST_STAGED
        assert edge.buffer_read_mode == InteropMode.COPY
        assert edge.wait_mode == InteropMode.NATIVE  # host semaphores everywhere
        # The isolated pair (same driver, refined to ISOLATED) cannot wait on each other.
        assert group.topology.edge(2, 3).link_class == LinkClass.ISOLATED
        assert not iso2_info.can_wait_from & 0b0100
        assert not iso_info.can_signal_to & 0b1000
        assert iso_info.can_wait_from == 0b0111
        text = format_topology(group)
        assert "ISOLATED" in text and "HOST_STAGED" in text and "sim-gpu://0" in text


def test_edge_fields_are_validated():
    with pytest.raises(hal.InvalidArgumentError, match="copy_cost is a 4-bit cost"):
        TopologyEdge(LinkClass.OTHER, 0, 0, 0, 0, copy_cost=16)
    with pytest.raises(ValueError):
        TopologyEdge(9, 0, 0, 0, 0)
    with pytest.raises(
        hal.InvalidArgumentError, match="must return hal_core.backend.DeviceCapabilities"
    ):

        class _Bad(LocalDeviceBackend):
            def query_capabilities(self):
                return {"memory_domain": "host"}

        bad = _sim_device(_Bad("bad", 1, 0))
        try:
            DeviceGroup.from_devices([bad])
        finally:
            assert bad.topology_info is None
            bad.close()


_caps = st.builds(
    DeviceCapabilities,
    memory_domain=st.sampled_from(["host", "gpu0", "gpu1"]),
    host_memory_access=st.sampled_from(list(InteropMode)),
    host_semaphores=st.booleans(),
    numa_node=st.integers(-1, 3),
)


@settings(max_examples=60, deadline=None)
@given(_caps, _caps)
def test_edge_from_capabilities_properties(src, dst):
    edge = edge_from_capabilities(src, dst)
    back = edge_from_capabilities(dst, src)
    # Semaphore interop and link class are symmetric; buffer modes follow the rules.
    assert edge.wait_mode == back.wait_mode and edge.link_class == back.link_class
    assert (edge.wait_mode == InteropMode.NATIVE) == (src.host_semaphores and dst.host_semaphores)
    if src.memory_domain == dst.memory_domain:
        assert edge.link_class == LinkClass.SAME_DIE and edge.can_read_natively
    elif src.memory_domain != "host":
        assert edge.buffer_read_mode == InteropMode.COPY
    assert edge.numa_distance == back.numa_distance
    word = edge.scheduling_word
    assert (word >> 44) & 0x7 == edge.link_class and word & 0x3 == edge.wait_mode


# -- lifetime ---------------------------------------------------------------------------------


def test_group_keeps_devices_alive_and_closes_them():
    devices = _open(["local-task://", "local-sync://"])
    refs = [weakref.ref(d) for d in devices]
    group = DeviceGroup.from_devices(devices)
    del devices
    gc.collect()
    assert all(r() is not None for r in refs)
    assert [d.uri for d in group.devices] == ["local-task://", "local-sync://"]
    group.close()
    group.close()  # idempotent
    assert all(r().closed and r().topology_info is None for r in refs)
    with pytest.raises(hal.FailedPreconditionError, match="closed"):
        group.semaphore_for_frontier(Frontier())


def test_devices_leave_and_rejoin_groups_and_keep_working():
    a, b = _open(["local-task://", "local-sync://"])
    try:
        for _round in range(2):
            with DeviceGroup.from_devices([a, b], owns_devices=False) as group:
                s = a.create_semaphore()
                b.queue_barrier(ANY, [(s, 1)], [])
                a.queue_barrier(ANY, [], [(s, 1)])
                s.wait(1, T)
                assert group.tracker.current_epoch(group.queue_axis(0, 0)) >= 1
            assert a.topology_info is None and b.topology_info is None
            s = a.create_semaphore()
            a.queue_barrier(ANY, [], [(s, 1)])
            s.wait(1, T)
    finally:
        a.close()
        b.close()


def test_query_queue_pool_backend_needs_a_group():
    with hal.create_device("local-task://") as device:
        # The public method takes an affinity; the backend tier a queue index.
        query, arg = getattr(device, "query_queue_pool_backend", None), ANY
        if query is None:
            query, arg = getattr(device.backend, "query_queue_pool_backend", None), 0
        if query is None:
            pytest.skip("query_queue_pool_backend is not implemented in this tree")
        with pytest.raises(hal.FailedPreconditionError, match="group"):
            query(arg)
        with DeviceGroup.from_devices([device], owns_devices=False) as group:
            backend = query(arg)
            # It hands out the group's axis for the queue.
            assert backend.axis == group.queue_axis(0, 0)
        with pytest.raises(hal.FailedPreconditionError, match="group"):
            query(arg)


# -- the shared tracker -------------------------------------------------------------------------


@pytest.mark.parametrize("uris", PAIRS)
def test_queues_advance_their_axes_in_the_group_tracker(uris):
    with create_device_group(uris) as group:
        tracker = group.tracker
        for d, device in enumerate(group.devices):
            for q in range(device.queue_count):
                s = device.create_semaphore()
                for v in range(1, 4):
                    device.queue_barrier(1 << q, [], [(s, v)])
                s.wait(3, T)
                axis = group.queue_axis(d, q)
                assert axis in tracker.axes()
                # Epochs retire in order; the last retire may land just after the signal.
                done = group.semaphore_for_frontier(Frontier.single(axis, 3))
                done.wait(1, T)
                assert tracker.query_epoch(axis, 3)
        assert len(tracker.axes()) == sum(d.queue_count for d in group.devices)
        with pytest.raises(hal.NotFoundError, match="queue 7"):
            group.queue_axis(0, 7)


def test_frontier_waits_are_elided_when_the_tracker_proves_them():
    with create_device_group(["local-task://", "local-sync://"]) as group:
        a, b = group.devices
        axis_a = group.queue_axis(0, 0)
        s = a.create_semaphore()
        a.queue_barrier(1, [], [(s, 1)])
        s.wait(1, T)
        group.semaphore_for_frontier(Frontier.single(axis_a, 1)).wait(1, T)
        # Reached: the returned semaphore is already signalled, nothing is parked.
        proven = group.semaphore_for_frontier(Frontier.single(axis_a, 1), device=b)
        assert proven.value == 1 and group.is_frontier_reached(Frontier.single(axis_a, 1))
        assert group.tracker.pending_waiter_count == 0
        # Not reached: b's queue waits for a's queue through the tracker.
        later = group.semaphore_for_frontier(Frontier.single(axis_a, 2), device=b)
        out = b.create_semaphore()
        b.queue_barrier(ANY, [(later, 1)], [(out, 1)])
        assert out.value == 0 and not group.is_frontier_reached(Frontier.single(axis_a, 2))
        a.queue_barrier(1, [], [(s, 2)])
        out.wait(1, T)
        with pytest.raises(hal.NotFoundError, match="not registered"):
            group.semaphore_for_frontier(Frontier.single(0x7F << 56, 1))


@pytest.mark.parametrize("uris", PAIRS)
def test_axis_failure_reaches_waiters_on_every_device(uris):
    with create_device_group(uris + ["local-sync://"]) as group:
        axis = group.queue_axis(0, 1)
        outs = []
        for device in group.devices:
            gate = group.semaphore_for_frontier(Frontier.single(axis, 100), device=device)
            out = device.create_semaphore()
            device.queue_barrier(ANY, [(gate, 1)], [(out, 1)])
            outs.append(out)
        group.tracker.fail_axis(axis, hal.DataLossError("sim: device 0 queue 1 lost"))
        for out in outs:
            with pytest.raises(hal.DataLossError, match="device 0 queue 1 lost"):
                out.wait(1, T)
        # Later waits on the failed axis fail at once; other axes still work.
        late = group.semaphore_for_frontier(Frontier.single(axis, 1))
        with pytest.raises(hal.DataLossError):
            late.wait(1, T)
        s = group.devices[1].create_semaphore()
        group.devices[1].queue_barrier(ANY, [], [(s, 1)])
        s.wait(1, T)


# -- cross-device synchronisation through semaphores ----------------------------------------------


@pytest.mark.parametrize("uris", PAIRS)
def test_fan_out_and_fan_in_across_devices(uris):
    with create_device_group(uris) as group:
        a, b = group.devices
        n = 4096
        src = a.allocator.allocate_buffer(hal.BufferParams(), n)
        ready = a.create_semaphore()
        gate = a.create_semaphore()
        a.queue_fill(1, [(gate, 1)], [(ready, 1)], src, 0, n, b"\x5a\xa5\x00\x7f")
        # Fan out: every queue of every device copies the filled buffer once ready.
        outs, dsts = [], []
        for device in group.devices:
            for q in range(device.queue_count):
                dst = device.allocator.allocate_buffer(hal.BufferParams(), n)
                done = device.create_semaphore()
                group.copy(device, 1 << q, [(ready, 1)], [(done, 1)], src, 0, dst, 0, n)
                outs.append((done, 1))
                dsts.append(dst)
        assert all(s.value == 0 for s, _ in outs)  # held back by the gate
        gate.signal(1)
        # Fan in: one op on device b waits on all of them, then checks every copy.
        seen = []

        def check(args, ctx):
            seen.extend(bytes(d.read()) for d in dsts)

        final = b.create_semaphore()
        b.queue_host_call(ANY, outs, [(final, 1)], check)
        final.wait(1, T)
        assert len(seen) == len(dsts)
        assert all(s == b"\x5a\xa5\x00\x7f" * (n // 4) for s in seen)


def test_failure_on_one_device_propagates_to_dependents_on_the_others():
    with create_device_group(["local-task://", "local-sync://", "local-task://"]) as group:
        a, b, c = group.devices
        s_a, s_b, s_c, ok = (d.create_semaphore() for d in (a, b, c, b))

        def boom(args, ctx):
            raise hal.AbortedError("sim: kernel fault on device 0")

        c.queue_barrier(ANY, [(s_b, 1)], [(s_c, 1)])
        b.queue_barrier(ANY, [(s_a, 1)], [(s_b, 1)])
        a.queue_host_call(ANY, [], [(s_a, 1)], boom)
        for sem in (s_a, s_b, s_c):
            with pytest.raises(hal.AbortedError, match="kernel fault on device 0"):
                sem.wait(1, T)
        # Independent work on every device still runs.
        for device in group.devices:
            device.queue_barrier(ANY, [], [(ok, ok.value + 1)])
        ok.wait(3, T)


# -- cross-device copies -----------------------------------------------------------------------


@pytest.mark.parametrize("uris", PAIRS)
def test_copy_strategies_between_cpu_devices(uris):
    with create_device_group(uris) as group:
        a, b = group.devices
        data = bytes(range(256)) * 4
        src = _buffer(a, data)
        for forced in (None, CopyStrategy.NATIVE, CopyStrategy.PEER, CopyStrategy.STAGED):
            dst = b.allocator.allocate_buffer(hal.BufferParams(), len(data) + 8)
            done = b.create_semaphore()
            used = group.copy(b, ANY, [], [(done, 1)], src, 16, dst, 8, 512, strategy=forced)
            assert used == (CopyStrategy.NATIVE if forced is None else forced)
            assert group.last_copy_strategy == used
            done.wait(1, T)
            assert dst.read(8, 512) == data[16:528]
        record = group.last_copy
        assert record.strategy == CopyStrategy.STAGED and record.executing_devices == (0, 1)
        assert [r.strategy for r in group.copy_history][-4:] == [
            CopyStrategy.NATIVE,
            CopyStrategy.NATIVE,
            CopyStrategy.PEER,
            CopyStrategy.STAGED,
        ]


def test_copy_to_a_discrete_device_is_staged_through_host_memory():
    cpu = hal.create_device("local-task://")
    gpu = _sim_device(_DiscreteBackend("sim-gpu-0"), "sim-gpu://0")
    with DeviceGroup.from_devices([cpu, gpu]) as group:
        data = np.arange(1024, dtype=np.uint32).tobytes()
        src = _buffer(cpu, data)
        dst = gpu.allocator.allocate_buffer(hal.BufferParams(), len(data))
        gate, done = cpu.create_semaphore(), gpu.create_semaphore()
        assert group.select_copy_strategy(cpu, src, dst) == CopyStrategy.STAGED
        used = group.copy(cpu, ANY, [(gate, 1)], [(done, 1)], src, 0, dst, 0, len(data))
        assert used == CopyStrategy.STAGED and done.value == 0
        gate.signal(1)
        done.wait(1, T)
        assert dst.read() == data
        with pytest.raises(hal.IncompatibleError, match="NATIVE is not possible"):
            group.copy(cpu, ANY, [], [], src, 0, dst, 0, 16, strategy=CopyStrategy.NATIVE)
        with pytest.raises(hal.IncompatibleError, match="PEER is not possible"):
            group.copy(cpu, ANY, [], [], src, 0, dst, 0, 16, strategy=CopyStrategy.PEER)


def test_copy_between_isolated_devices_is_incompatible():
    a = _sim_device(_IsolatedBackend("iso-a"), "sim-iso://0")
    b = _sim_device(_IsolatedBackend("iso-b"), "sim-iso://1")
    with DeviceGroup.from_devices([a, b]) as group:
        src = _buffer(a, b"x" * 64)
        dst = b.allocator.allocate_buffer(hal.BufferParams(), 64)
        with pytest.raises(hal.IncompatibleError, match="ISOLATED"):
            group.copy(a, ANY, [], [], src, 0, dst, 0, 64)
        assert group.last_copy is None


def test_bad_copies_raise_and_submit_nothing():
    outsider = hal.create_device("local-sync://")
    with create_device_group(["local-task://", "local-sync://"]) as group, outsider:
        a, b = group.devices
        src = _buffer(a, b"\x01" * 64)
        dst = b.allocator.allocate_buffer(hal.BufferParams(), 64)
        foreign = _buffer(outsider, b"\x02" * 64)
        done = b.create_semaphore()
        with pytest.raises(hal.OutOfRangeError):
            group.copy(b, ANY, [], [(done, 1)], src, 32, dst, 0, 64)
        with pytest.raises(hal.NotFoundError, match="not in this group"):
            group.copy(b, ANY, [], [(done, 1)], foreign, 0, dst, 0, 64)
        with pytest.raises(hal.NotFoundError, match="not in this group"):
            group.copy(outsider, ANY, [], [(done, 1)], src, 0, dst, 0, 64)
        with pytest.raises(hal.NotFoundError, match="outside"):
            group.copy(5, ANY, [], [(done, 1)], src, 0, dst, 0, 64)
        with pytest.raises(hal.InvalidArgumentError, match="must be a Buffer"):
            group.copy(b, ANY, [], [(done, 1)], b"bytes", 0, dst, 0, 64)
        with pytest.raises(hal.PermissionDeniedError):
            ro = a.allocator.allocate_buffer(
                hal.BufferParams(usage=hal.BufferUsage.DISPATCH_STORAGE), 64
            )
            group.copy(b, ANY, [], [(done, 1)], src, 0, ro, 0, 64)
        assert done.value == 0 and group.last_copy is None
        # Later work still runs and the semaphore is usable.
        group.copy(b, ANY, [], [(done, 1)], src, 0, dst, 0, 64)
        done.wait(1, T)
        assert dst.read() == b"\x01" * 64


def test_copy_from_many_threads():
    with create_device_group(["local-task://", "local-task://"]) as group:
        a, b = group.devices
        src = _buffer(a, bytes(range(200)))
        errors = []
        results = []

        def worker(k: int) -> None:
            try:
                for i in range(20):
                    dst = b.allocator.allocate_buffer(hal.BufferParams(), 100)
                    done = b.create_semaphore()
                    strategy = (None, CopyStrategy.STAGED)[(k + i) % 2]
                    group.copy(a, ANY, [], [(done, 1)], src, k, dst, 0, 100, strategy=strategy)
                    done.wait(1, T)
                    results.append(dst.read() == bytes(range(k, k + 100)))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and len(results) == 80 and all(results)


def test_queue_copy_with_a_buffer_of_another_member_goes_through_the_group():
    cpu = hal.create_device("local-task://")
    sync = hal.create_device("local-sync://")
    gpu = _sim_device(_DiscreteBackend("sim-gpu-0"), "sim-gpu://0")
    with DeviceGroup.from_devices([cpu, sync, gpu]) as group:
        data = bytes(range(64))
        src = _buffer(cpu, data)
        on_sync = sync.allocator.allocate_buffer(hal.BufferParams(), 64)
        on_gpu = gpu.allocator.allocate_buffer(hal.BufferParams(), 64)
        done = sync.create_semaphore()
        sync.queue_copy(ANY, [], [(done, 1)], src, 0, on_sync, 0, 64)
        done.wait(1, T)
        assert on_sync.read() == data
        assert group.last_copy == hal.CopyRecord(CopyStrategy.NATIVE, 0, 1, (1,), 64)
        done2 = cpu.create_semaphore()
        cpu.queue_copy(ANY, [], [(done2, 1)], src, 0, on_gpu, 0, 64)
        assert group.last_copy_strategy == CopyStrategy.STAGED
        done2.wait(1, T)
        assert on_gpu.read() == data
        # Same-device copies are not routed (nothing recorded).
        before = len(group.copy_history)
        local = cpu.allocator.allocate_buffer(hal.BufferParams(), 64)
        cpu.queue_copy(ANY, [], [(done2, 2)], src, 0, local, 0, 64)
        done2.wait(2, T)
        assert len(group.copy_history) == before


def test_hal_info_topology_prints_the_matrix(capsys):
    from hal_core.cli.main import main

    argv = ["info", "--topology", "--device", "local-task://", "--device", "local-sync://"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[0] local-task://" in out and "[1] local-sync://" in out
    assert "SAME_DIE" in out and "wait_from=0x3" in out
    assert "Link classes (row src, column dst):" in out
    assert main(["info", "--topology", "--device", "nosuch://"]) == 2
    assert "cannot build a device group" in capsys.readouterr().err
    assert main(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["uri"] for d in data["devices"]] == ["local-task://", "local-sync://"]
    assert len(data["edges"]) == 4 and data["edges"][1]["link_class"] == "SAME_DIE"
    assert data["devices"][1]["can_wait_from"] == 3
    assert "P2P_COPY" in data["edges"][1]["capabilities"]


def test_two_groups_racing_for_one_device_only_one_wins():
    shared = hal.create_device("local-sync://")
    others = _open(["local-sync://"] * 8)
    try:
        start = threading.Barrier(8)
        wins, losses = [], []

        def build(k: int) -> None:
            start.wait(T)
            try:
                wins.append(DeviceGroup.from_devices([others[k], shared], owns_devices=False))
            except hal.FailedPreconditionError:
                losses.append(k)

        threads = [threading.Thread(target=build, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T)
        assert len(wins) == 1 and len(losses) == 7
        assert shared.topology_info.group is wins[0]
        wins[0].close()
        assert shared.topology_info is None
    finally:
        shared.close()
        for d in others:
            d.close()


def test_copy_strategy_is_visible_in_each_devices_profile():
    from hal_core.profiling import ProfilingDataFamily as F
    from hal_core.profiling import ProfilingOptions, StatisticsSink

    with create_device_group(["local-task://", "local-sync://"]) as group:
        a, b = group.devices
        stats = {a: StatisticsSink(), b: StatisticsSink()}
        for device, sink in stats.items():
            device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[sink]))
        src = _buffer(a, b"\x11" * 128)
        dst = b.allocator.allocate_buffer(hal.BufferParams(), 128)
        done = b.create_semaphore()
        group.copy(b, ANY, [], [(done, 1)], src, 0, dst, 0, 128)  # NATIVE: one COPY on b
        group.copy(
            b, ANY, [(done, 1)], [(done, 2)], src, 0, dst, 0, 128, strategy=CopyStrategy.STAGED
        )  # a writes host memory, b reads it
        done.wait(2, T)
        for device in (a, b):
            device.profiling_end()

        def counts(device):
            total: dict[str, int] = {}
            for q in stats[device].statistics().queues:
                for name, n in q.op_counts.items():
                    total[name] = total.get(name, 0) + n
            return total

        assert counts(a) == {"WRITE": 1}
        assert counts(b) == {"COPY": 1, "READ": 1}
        assert [r.executing_devices for r in group.copy_history] == [(1,), (0, 1)]


def test_topology_completeness_is_checked_for_every_backend():
    class _NoGroupCheck(LocalDeviceBackend):
        """A pool substrate that forgets to check group membership itself."""

        def query_queue_pool_backend(self, queue_index):
            return ("pool backend of queue", queue_index)

    device = _sim_device(_NoGroupCheck("sim-pools", 2, 0))
    with device:
        with pytest.raises(hal.FailedPreconditionError, match="in no device group"):
            device.query_queue_pool_backend(2)
        with DeviceGroup.from_devices([device], owns_devices=False):
            assert device.query_queue_pool_backend(2) == ("pool backend of queue", 1)
        with pytest.raises(hal.FailedPreconditionError, match="in no device group"):
            device.query_queue_pool_backend(2)


def test_transfer_ops_on_another_members_buffer_run_where_the_topology_allows():
    from hal_core.profiling import ProfilingDataFamily as F
    from hal_core.profiling import ProfilingOptions, StatisticsSink

    cpu = hal.create_device("local-task://")
    sync = hal.create_device("local-sync://")
    gpu = _sim_device(_DiscreteBackend("sim-gpu-0"), "sim-gpu://0")
    with DeviceGroup.from_devices([cpu, sync, gpu]) as group:
        sinks = {d: StatisticsSink() for d in group.devices}
        for device, sink in sinks.items():
            device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[sink]))
        on_gpu = gpu.allocator.allocate_buffer(hal.BufferParams(), 64)
        on_sync = sync.allocator.allocate_buffer(hal.BufferParams(), 64)
        host = np.zeros(64, np.uint8)
        file = cpu.import_file(host, hal.MemoryAccess.READ | hal.MemoryAccess.WRITE)
        s = cpu.create_semaphore()
        # The CPU cannot reach the discrete device's memory: these run on the GPU itself.
        cpu.queue_fill(ANY, [], [(s, 1)], on_gpu, 0, 64, b"\x21")
        cpu.queue_update(ANY, [(s, 1)], [(s, 2)], b"\x22" * 8, 0, on_gpu, 0, 8)
        cpu.queue_write(ANY, [(s, 2)], [(s, 3)], on_gpu, 0, file, 0, 64)
        cpu.queue_read(ANY, [(s, 3)], [(s, 4)], file, 0, on_gpu, 8, 8)
        # The CPU devices share host memory: a fill of the other's buffer runs here.
        cpu.queue_fill(ANY, [(s, 4)], [(s, 5)], on_sync, 0, 64, b"\x23")
        s.wait(5, T)
        for device in group.devices:
            device.profiling_end()

        def counts(device):
            total: dict[str, int] = {}
            for q in sinks[device].statistics().queues:
                for name, n in q.op_counts.items():
                    total[name] = total.get(name, 0) + n
            return total

        assert counts(gpu) == {"FILL": 1, "UPDATE": 1, "WRITE": 1, "READ": 1}
        assert counts(cpu) == {"FILL": 1}
        assert counts(sync) == {}
        assert host.tobytes() == b"\x22" * 8 + b"\x21" * 56
        assert on_gpu.read() == b"\x22" * 16 + b"\x21" * 48
        assert on_sync.read() == b"\x23" * 64
        assert group.runner_for(cpu, on_gpu, write=True) is gpu
        assert group.runner_for(sync, on_gpu, write=False) is gpu
        assert group.runner_for(gpu, on_gpu, write=True) is gpu
