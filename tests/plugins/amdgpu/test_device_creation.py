"""What amdgpu checks at device creation: host queue options from URI parameters (ring
capacities and the wait strategy, validated with ranges), a device library for every
GPU's target, and the executable formats it advertises."""

from __future__ import annotations

import pytest
from hal_amdgpu.device_library import shipped_library_targets
from hal_amdgpu.queue_options import HostQueueOptions, WaitBarrierStrategy

import hal_core

BASE = "amdgpu://0?hsa=soft"
TIMEOUT = 30.0


def _run_some_work(device) -> None:
    """More submissions than the small rings below hold at once, each queue waiting on
    the other's previous fill (device barriers or software deferral, by strategy)."""
    buf = device.allocator.allocate_buffer(None, 1 << 16)
    n = device.queue_count
    sems = [device.create_semaphore(0) for _ in range(n)]
    rounds = 40
    for r in range(rounds):
        for q in range(n):
            waits = [(sems[q - 1], r)] if r and n > 1 else []
            device.queue_fill(1 << q, waits, [(sems[q], r + 1)], buf, 0, 1 << 16, b"\x07")
    for sem in sems:
        sem.wait(rounds, TIMEOUT)


def test_ring_capacities_and_wait_strategy_from_the_uri():
    uri = (
        f"{BASE}&aql_capacity=32&kernarg_capacity=0x2000&notification_capacity=16"
        "&wait_barrier=barrier_value"
    )
    with hal_core.create_device(uri) as device:
        options = device.backend.queue_options
        assert options == HostQueueOptions(32, 8192, 16, WaitBarrierStrategy.BARRIER_VALUE)
        _run_some_work(device)
        qset = device.backend._host_queue_set
        assert all(q.ring.capacity == 32 for q in qset.queues)
        assert all(q.kernargs.capacity * 64 == 8192 for q in qset.queues)  # 64-byte blocks
        # gfx1100 would defer in software under AUTO; the URI forced barrier-value packets
        assert qset.barrier_value_supported
    with hal_core.create_device(f"{BASE}&wait_barrier=DEFER") as device:
        _run_some_work(device)
        assert not device.backend._host_queue_set.barrier_value_supported


def test_defaults_without_parameters():
    with hal_core.create_device(BASE) as device:
        assert device.backend.queue_options == HostQueueOptions()


@pytest.mark.parametrize(
    "param, value, match",
    [
        ("aql_capacity", "8", r"aql_capacity=8 \(packets\) must be a power of two in 16\.\.131072"),
        ("aql_capacity", "1000", r"aql_capacity=1000 .*power of two"),
        ("aql_capacity", str(1 << 18), r"aql_capacity=262144"),
        ("kernarg_capacity", "1024", r"kernarg_capacity=1024 \(bytes\) .* 4096\.\.1073741824"),
        ("kernarg_capacity", "lots", r"kernarg_capacity='lots' is not an integer"),
        ("notification_capacity", "4", r"notification_capacity=4 \(entries\) .* 8\.\.1048576"),
        ("notification_capacity", "-16", r"notification_capacity=-16"),
        ("wait_barrier", "sometimes", r"wait_barrier='sometimes'; use wait_barrier=auto"),
    ],
)
def test_bad_queue_parameters_fail_device_creation(param, value, match):
    with pytest.raises(hal_core.InvalidArgumentError, match=match):
        hal_core.create_device(f"{BASE}&{param}={value}")


def test_unknown_parameters_still_fail():
    with pytest.raises(hal_core.InvalidArgumentError, match="aql_size"):
        hal_core.create_device(f"{BASE}&aql_size=64")


# gfx908 has no generic family and gfx1010's (gfx10-1-generic) is not built: neither ships.
@pytest.mark.parametrize("target", ["gfx908", "gfx1010", "gfx1013"])
def test_a_gpu_without_a_device_library_fails_at_creation(target):
    """Before, the device was created and every queue operation failed INCOMPATIBLE."""
    shipped = shipped_library_targets()
    assert target not in shipped  # the soft agent presents a target that does not ship
    with pytest.raises(hal_core.IncompatibleError) as info:
        hal_core.create_device(f"amdgpu://0?hsa=soft&soft_gpus={target}")
    text = str(info.value)
    assert target in text
    for name in shipped:
        assert name in text


def test_a_multi_gpu_device_names_the_unshipped_target():
    with pytest.raises(hal_core.IncompatibleError, match=r"gfx908.*ships \["):
        hal_core.create_device("amdgpu://0,1?hsa=soft&soft_gpus=gfx908,gfx908")
    # the shipped one next to it alone is fine
    with hal_core.create_device("amdgpu://0?hsa=soft&soft_gpus=gfx90a,gfx908") as device:
        _run_some_work(device)


@pytest.mark.parametrize(
    "uri", [BASE, "amdgpu://0,1?hsa=soft", "amdgpu://0?hsa=soft&soft_gpus=gfx90a"]
)
def test_executable_formats_are_listed_once(uri):
    with hal_core.create_device(uri) as device:
        formats = device.create_executable_cache().formats()
        assert len(formats) == len(set(formats)), formats
        processor = device.backend.gpus[0].target.processor
        assert "hsaco" in formats and processor in formats
        assert f"amdgcn-amd-amdhsa--{processor}" in formats
