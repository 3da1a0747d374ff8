"""local_cpu queue axes, tracker publishing, default pools and the alloca state machine."""

from __future__ import annotations

import threading

import pytest

import hal_core
from hal_core import BufferParams
from hal_core.backend import Frontier
from hal_core.pool import AcquireResult, CpuSlabProvider, FixedBlockPool, TlsfPool

T = 10.0


@pytest.fixture(params=["local-task://", "local-sync://"])
def device(request):
    with hal_core.create_device(request.param) as dev:
        yield dev


def _barriers(device, affinity, n):
    sem = device.create_semaphore()
    for v in range(1, n + 1):
        device.queue_barrier(affinity, [], [(sem, v)])
    sem.wait(n, T)


def test_queues_publish_retired_epochs_on_their_axes(device):
    pools = device.backend.pools
    _barriers(device, 1, 3)
    axis = pools.axes[0]
    assert pools.tracker.query_epoch(axis, device.backend.queues[0].retired)
    assert device.backend.queues[0].retired >= 3
    assert not pools.tracker.query_epoch(pools.axes[1], 1)


def test_tracker_waiter_fires_when_the_queue_retires(device):
    pools = device.backend.pools
    axis = pools.axes[0]
    target = device.backend.queues[0].retired + 2
    fired = threading.Event()
    pools.tracker.wait(Frontier([(axis, target)]), lambda arg, st: fired.set(), None)
    assert not fired.is_set()
    _barriers(device, 1, 2)
    assert fired.wait(T)


def test_same_queue_reuse_through_the_default_pool(device):
    tlsf = device.backend.pools.default_pools.pools[0][1]
    assert isinstance(tlsf, TlsfPool)
    for _ in range(30):
        a, d = device.create_semaphore(), device.create_semaphore()
        buf = device.queue_alloca(1, (), [(a, 1)], BufferParams(), 10_000)
        a.wait(1, T)
        device.queue_dealloca(1, (), [(d, 1)], buf)
        d.wait(1, T)
    stats = tlsf.query_stats()
    assert stats.slab_count == 1 and stats.reservation_count == 0
    assert stats.reuse_count + stats.fresh_count == 30


def test_close_cancels_a_parked_alloca():
    device = hal_core.create_device("local-task://")
    pools = device.backend.pools
    pool = FixedBlockPool(
        CpuSlabProvider(), block_size=64, block_count=1, notification=pools.notification
    )
    s1, s2 = device.create_semaphore(), device.create_semaphore()
    # Kept: a dropped queue_alloca buffer gives its block back.
    first = device.queue_alloca(1, (), [(s1, 1)], BufferParams(), 64, pool=pool)
    s1.wait(1, T)
    parked = device.queue_alloca(1, (), [(s2, 1)], BufferParams(), 64, pool=pool)
    assert pools.pending_count == 1 and not parked.is_committed
    device.close()
    with pytest.raises(hal_core.CancelledError):
        s2.wait(1, T)
    assert pool.query_stats().reservation_count == 1  # only the first buffer's block
    assert pool.acquire_reservation(64)[0] == AcquireResult.EXHAUSTED
    assert first.is_committed


def test_group_membership_publishes_on_the_group_tracker(device):
    with hal_core.DeviceGroup.from_devices([device], owns_devices=False) as group:
        _barriers(device, 2, 2)
        axis = group.queue_axis(0, 1)
        assert group.tracker.query_epoch(axis, device.backend.queues[1].retired)
        assert device.backend.pools.queue_axis(1) == axis
    assert device.backend.pools.queue_axis(1) == device.backend.pools.axes[1]


def test_stress_threads_share_a_small_pool(device):
    """Four host threads queue alloca -> fill -> copy -> dealloca chains on every queue
    through one 3-block pool; allocas park and retry as blocks come back. Each chain's
    copy must see its own fill (no two live chains ever share a block)."""
    pools = device.backend.pools
    pool = FixedBlockPool(
        CpuSlabProvider(),
        block_size=128,
        block_count=3,
        notification=pools.notification,
        epoch_query=pools.query_epoch,
    )
    threads_n, chains = 4, 60
    out = device.allocator.allocate_buffer(BufferParams(), threads_n * chains * 8)
    errors = []

    def worker(t):
        try:
            done = []
            for i in range(chains):
                aff = 1 << (i % device.queue_count)
                a, f, c, d = (device.create_semaphore() for _ in range(4))
                buf = device.queue_alloca(
                    aff,
                    (),
                    [(a, 1)],
                    BufferParams(),
                    128,
                    pool=pool,
                    flags=hal_core.AllocaFlags.ALLOW_POOL_WAIT_FRONTIER,
                )
                tag = bytes([(t * chains + i) & 0xFF])
                device.queue_fill(aff, [(a, 1)], [(f, 1)], buf, 0, 128, tag)
                slot = (t * chains + i) * 8
                device.queue_copy(aff, [(f, 1)], [(c, 1)], buf, 0, out, slot, 8)
                device.queue_dealloca(aff, [(c, 1)], [(d, 1)], buf)
                done.append(d)
            for d in done:
                d.wait(1, T)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    expected = b"".join(bytes([k & 0xFF]) * 8 for k in range(threads_n * chains))
    assert out.read() == expected
    assert pool.query_stats().reservation_count == 0


def test_pool_closed_under_a_parked_alloca_fails_it_cleanly(device):
    pools = device.backend.pools
    pool = TlsfPool(
        CpuSlabProvider(), range_length=4096, max_slabs=1, notification=pools.notification
    )
    s1, s2, d1 = (device.create_semaphore() for _ in range(3))
    first = device.queue_alloca(1, (), [(s1, 1)], BufferParams(), 4096, pool=pool)
    s1.wait(1, T)
    device.queue_alloca(1, (), [(s2, 1)], BufferParams(), 4096, pool=pool)
    assert s2.value == 0
    pool.close()
    device.queue_dealloca(1, (), [(d1, 1)], first)  # releases into the closed pool
    d1.wait(1, T)
    with pytest.raises(hal_core.FailedPreconditionError, match="keep a pool open"):
        s2.wait(1, T)
    # The device still works.
    ok = device.create_semaphore()
    buf = device.queue_alloca(1, (), [(ok, 1)], BufferParams(), 64)
    ok.wait(1, T)
    assert buf.is_committed
