"""Stress: a random DAG of a few hundred queue operations over every queue of every device
of a group, checked against a sequential reference.

Each op i runs on a random (device, queue) and waits on up to three random earlier ops.
It is one of: a 4-byte fill of cell i with a constant; a cross-device copy of the cell of
its first dependency into cell i (``DeviceGroup.copy``, any strategy); or a host call
that checks every dependency had already signalled and writes a value derived from them.
The reference computes the cells sequentially; any ordering bug shows up as a wrong cell
or a recorded violation. Seeded, so a failure reproduces.
"""

from __future__ import annotations

import random
import threading

import pytest
from hal_local_cpu.device import LocalDeviceBackend

import hal_core as hal
from hal_core._device_group import DeviceGroup, create_device_group
from hal_core._group_copy import CopyStrategy
from hal_core._topology import DeviceCapabilities, InteropMode
from hal_core.backend import Frontier, device_from_backend

T = 30.0
OPS = 300


class _DiscreteBackend(LocalDeviceBackend):
    """A CPU backend reporting a private memory domain: copies to it get staged."""

    def __init__(self) -> None:
        super().__init__("sim-discrete", 2, 0)

    def query_capabilities(self) -> DeviceCapabilities:
        return DeviceCapabilities(memory_domain="sim-gpu", host_memory_access=InteropMode.COPY)


def _mix(values: list[int], i: int) -> int:
    h = (i * 2654435761) & 0xFFFFFFFF
    for v in values:
        h = ((h ^ v) * 16777619) & 0xFFFFFFFF
    return h or 1


def _run_dag(group: DeviceGroup, seed: int) -> set[CopyStrategy]:
    rng = random.Random(seed)
    devices = group.devices
    # Host-visible, mappable cells: host calls read them on every backend (a GPU's
    # default DEVICE_LOCAL memory would not map).
    params = hal.BufferParams(
        type=hal.MemoryType.HOST_VISIBLE | hal.MemoryType.DEVICE_VISIBLE,
        usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.MAPPING,
    )
    cells = [d.allocator.allocate_buffer(params, 4 * OPS) for d in devices]
    sems = [None] * OPS
    where = [0] * OPS  # device index holding cell i
    reference = [0] * OPS
    violations: list[str] = []
    head = devices[0].create_semaphore()  # holds the whole graph back until submitted
    strategies: set[CopyStrategy] = set()

    for i in range(OPS):
        d = rng.randrange(len(devices))
        device = devices[d]
        q = rng.randrange(device.queue_count)
        deps = sorted(rng.sample(range(i), min(i, rng.randrange(4))))
        waits = [(sems[j], 1) for j in deps] or [(head, 1)]
        sem = device.create_semaphore()
        sems[i] = sem
        where[i] = d
        kind = rng.randrange(3) if deps else 0
        if kind == 0:
            value = _mix([], i)
            device.queue_fill(
                1 << q, waits, [(sem, 1)], cells[d], 4 * i, 4, value, pattern_length=4
            )
            reference[i] = value
        elif kind == 1:
            j = deps[0]
            used = group.copy(
                device, 1 << q, waits, [(sem, 1)], cells[where[j]], 4 * j, cells[d], 4 * i, 4
            )
            strategies.add(used)
            reference[i] = reference[j]
        else:
            dep_sems = [sems[j] for j in deps]
            dep_cells = [(cells[where[j]], 4 * j) for j in deps]

            def host(args, ctx, i=i, dep_sems=dep_sems, dep_cells=dep_cells, d=d):
                if any(s.value < 1 for s in dep_sems):
                    violations.append(f"op {i} ran before a dependency signalled")
                vals = [int.from_bytes(b.read(off, 4), "little") for b, off in dep_cells]
                cells[d].write(_mix(vals, i).to_bytes(4, "little"), 4 * i)

            device.queue_host_call(1 << q, waits, [(sem, 1)], host)
            reference[i] = _mix([reference[j] for j in deps], i)

    assert all(s.value == 0 for s in sems)  # nothing ran before the head
    head.signal(1)
    hal.wait_all([(s, 1) for s in sems], T)
    got = [int.from_bytes(cells[where[i]].read(4 * i, 4), "little") for i in range(OPS)]
    assert not violations
    assert got == reference
    return strategies


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize(
    "uris",
    [
        pytest.param(["local-task://", "local-sync://"], id="task+sync"),
        pytest.param(["local-task://?queues=3", "local-task://"], id="task+task"),
    ],
)
def test_random_dag_over_every_queue_matches_the_sequential_reference(uris, seed):
    with create_device_group(uris) as group:
        _run_dag(group, seed)
        # Every queue of every device took part and advanced its tracker axis.
        for d, device in enumerate(group.devices):
            for q in range(device.queue_count):
                assert group.tracker.current_epoch(group.queue_axis(d, q)) > 0


def test_random_dag_with_a_discrete_device_uses_staged_copies():
    cpu = hal.create_device("local-task://")
    gpu = device_from_backend(_DiscreteBackend(), driver_name="sim-discrete", uri="sim-gpu://0")
    sync = hal.create_device("local-sync://")
    with DeviceGroup.from_devices([cpu, gpu, sync]) as group:
        strategies = _run_dag(group, seed=3)
        assert CopyStrategy.STAGED in strategies and CopyStrategy.NATIVE in strategies


@pytest.mark.parametrize("uri", ["local-task://", "local-sync://"])
def test_joining_a_group_while_work_retires_loses_no_epoch(uri):
    device = hal.create_device(uri)
    n = 2000
    head = device.create_semaphore()
    sems = [device.create_semaphore() for _ in range(n)]
    prev = (head, 1)
    for s in sems:
        device.queue_barrier(1, [prev], [(s, 1)])
        prev = (s, 1)
    releaser = threading.Thread(target=head.signal, args=(1,))
    releaser.start()  # the chain retires on another thread while the group forms
    with DeviceGroup.from_devices([device]) as group:
        releaser.join(T)
        sems[-1].wait(1, T)
        axis = group.queue_axis(0, 0)
        # Queue 0 ran exactly n ops: its axis must reach epoch n in the group tracker.
        group.semaphore_for_frontier(Frontier.single(axis, n)).wait(1, T)
        assert group.tracker.current_epoch(axis) == n


# -- with the amdgpu driver over the software HSA agent (two simulated GPUs) ---------------

AMDGPU_URIS = ["local-task://", "amdgpu://0?hsa=soft", "amdgpu://1?hsa=soft"]


@pytest.fixture
def amdgpu_group():
    try:
        group = create_device_group(AMDGPU_URIS)
    except (hal.NotFoundError, hal.UnavailableError) as exc:
        pytest.skip(f"amdgpu software agent not available: {exc}")
    with group:
        yield group


def test_random_dag_with_two_simulated_gpus(amdgpu_group):
    strategies = _run_dag(amdgpu_group, seed=4)
    # The GPUs' memory is not the host's: copies between a GPU and the CPU are staged.
    assert CopyStrategy.STAGED in strategies
    cpu, gpu0, gpu1 = amdgpu_group.devices
    assert gpu0.driver_name == gpu1.driver_name == "amdgpu"
    # Two GPUs of one HSA system reach each other's pools after a grant: IMPORT.
    assert amdgpu_group.topology.edge(1, 2).buffer_read_mode == InteropMode.IMPORT


def test_failure_on_the_cpu_reaches_gpu_dependents_and_back(amdgpu_group):
    cpu, gpu0, gpu1 = amdgpu_group.devices
    a, b, c, ok = (d.create_semaphore() for d in (cpu, gpu0, gpu1, cpu))

    def boom(args, ctx):
        raise hal.DataLossError("sim: corrupted input on the CPU")

    cpu.queue_host_call(hal.QueueAffinity.ANY, [(ok, 1)], [(a, 1)], boom)
    gpu0.queue_barrier(hal.QueueAffinity.ANY, [(a, 1)], [(b, 1)])
    gpu1.queue_barrier(hal.QueueAffinity.ANY, [(b, 1)], [(c, 1)])
    after = cpu.create_semaphore()
    cpu.queue_barrier(hal.QueueAffinity.ANY, [(c, 1)], [(after, 1)])
    ok.signal(1)
    for sem in (a, b, c, after):
        with pytest.raises(hal.DataLossError, match="corrupted input"):
            sem.wait(1, T)
    # Independent work on each GPU still runs.
    for gpu in (gpu0, gpu1):
        s = gpu.create_semaphore()
        gpu.queue_barrier(hal.QueueAffinity.ANY, [], [(s, 1)])
        s.wait(1, T)
