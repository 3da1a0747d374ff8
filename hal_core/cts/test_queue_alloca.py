"""CTS: queue_alloca / queue_dealloca (IREE's QueueAllocaTest).

Default pool: basic alloca, deferred commit behind a wait, metadata valid at once, use
after dealloca, dealloca whose wait failed, chains without host waits, PREFER_ORIGIN, zero
access flags, zero size, oversized requests. Explicit pools (optional: the
``allocation_pools`` tag gates them) built from
``Device.query_queue_pool_backend`` (the device joins a device group for these, as IREE
requires): passthrough, TLSF in a transfer chain, a one-block fixed-block pool across two
queues with and without ALLOW_POOL_WAIT_FRONTIER (hidden frontier wait, ``wait_count``
0 -> 1), a pending dealloca, TLSF skipping a stale cross-queue block by growing, exhaustion
that completes once a dealloca releases, INDETERMINATE_LIFETIME, and a stress run of many
chains through a small pool. Bad input: a non-pool, an oversized request for an explicit
pool, an affinity with no queue, no device group.
"""

from __future__ import annotations

import pytest

import hal_core
from hal_core import (
    AllocaFlags,
    BufferParams,
    BufferUsage,
    DeallocaFlags,
    MemoryAccess,
    PlacementFlags,
    QueueAffinity,
    StatusCode,
)
from hal_core.pool import FixedBlockPool, PassthroughPool, TlsfPool

from .context import TIMEOUT

ANY = QueueAffinity.ANY
ALLOW = AllocaFlags.ALLOW_POOL_WAIT_FRONTIER


POOLS = pytest.mark.hal_requires("allocation_pools")
"""Explicit pools are optional: tests of them need the ``allocation_pools`` tag."""


def _alloca(cts, size, *, affinity=ANY, wait=(), pool=None, flags=0, params=None):
    sem = cts.semaphore(0)
    buf = cts.device.queue_alloca(
        affinity, wait, [(sem, 1)], params or BufferParams(), size, pool=pool, flags=flags
    )
    return buf, sem


def _dealloca(cts, buf, *, affinity=ANY, wait=(), flags=0):
    sem = cts.semaphore(0)
    cts.device.queue_dealloca(affinity, wait, [(sem, 1)], buf, flags=flags)
    return sem


def _fill_and_read(cts, buf, value: int, length: int = 64) -> bytes:
    sem = cts.semaphore(0)
    cts.device.queue_fill(ANY, (), [(sem, 1)], buf, 0, length, bytes([value]))
    cts.wait(sem, 1)
    return cts.read_bytes(buf, 0, length)


def _two_queues(cts):
    if cts.device.queue_count < 2:
        pytest.skip("needs a device with two queues")
    return 1, 2


def _backend(cts, affinity=1):
    return cts.device.query_queue_pool_backend(affinity)


@pytest.fixture
def grouped(cts):
    """Explicit pools need the device in a device group (its frontier tracker), as in
    IREE: group the CTS device (not owned) for the test."""
    group = hal_core.DeviceGroup.from_devices([cts.device], owns_devices=False)
    try:
        try:
            cts.device.query_queue_pool_backend(1)
        except hal_core.UnimplementedError as exc:
            pytest.skip(f"{cts.driver} has no queue pool backend: {exc}")
        yield group
    finally:
        group.close()


# -- default pool ----------------------------------------------------------------------------


def test_basic_alloca_usable_after_signal_and_dealloca(cts):
    buf, sem = _alloca(cts, 1024)
    cts.wait(sem, 1)
    assert _fill_and_read(cts, buf, 0x5A) == b"\x5a" * 64
    done = _dealloca(cts, buf)
    cts.wait(done, 1)
    assert buf.is_decommitted


def test_alloca_waiting_on_semaphore_does_not_commit_early(cts):
    gate = cts.semaphore(0)
    buf, sem = _alloca(cts, 256, wait=[(gate, 1)])
    assert not buf.is_committed and sem.value == 0
    gate.signal(1)
    cts.wait(sem, 1)
    assert buf.is_committed
    cts.wait(_dealloca(cts, buf), 1)


def test_metadata_valid_at_once(cts):
    gate = cts.semaphore(0)
    buf, sem = _alloca(cts, 1000, wait=[(gate, 1)])
    assert buf.byte_length >= 1000
    assert buf.allowed_usage.has(BufferUsage.TRANSFER)
    assert buf.allowed_usage.has(BufferUsage.DISPATCH_STORAGE)
    assert buf.device is cts.device
    assert buf.placement_flags & PlacementFlags.ASYNCHRONOUS
    assert QueueAffinity.count(buf.queue_affinity) == 1
    gate.signal(1)
    cts.wait(sem, 1)
    cts.wait(_dealloca(cts, buf), 1)


def test_use_after_dealloca_fails(cts):
    buf, sem = _alloca(cts, 128)
    cts.wait(sem, 1)
    cts.wait(_dealloca(cts, buf), 1)
    fill_sem = cts.semaphore(0)
    try:
        cts.device.queue_fill(ANY, (), [(fill_sem, 1)], buf, 0, 16, b"\x01")
    except hal_core.InvalidArgumentError:
        return
    with pytest.raises(hal_core.FailedPreconditionError):
        fill_sem.wait(1, TIMEOUT)


def test_dealloca_of_failed_wait_keeps_buffer_usable(cts):
    buf, sem = _alloca(cts, 128)
    cts.wait(sem, 1)
    failed = cts.semaphore(0)
    failed.fail(StatusCode.CANCELLED, "producer cancelled")
    try:
        done = _dealloca(cts, buf, wait=[(failed, 1)])
    except hal_core.CancelledError:
        pass  # refused at the call: allowed, as is failing the signal below
    else:
        with pytest.raises(hal_core.CancelledError):
            done.wait(1, TIMEOUT)
    assert buf.is_committed
    assert _fill_and_read(cts, buf, 7, 16) == b"\x07" * 16
    cts.wait(_dealloca(cts, buf), 1)


def test_chained_alloca_dealloca_without_host_waits(cts):
    for _ in range(20):
        a = cts.semaphore(0)
        b = cts.semaphore(0)
        c = cts.semaphore(0)
        buf = cts.device.queue_alloca(ANY, (), [(a, 1)], BufferParams(), 4096)
        cts.device.queue_fill(ANY, [(a, 1)], [(b, 1)], buf, 0, 4096, b"\x11\x22\x33\x44")
        cts.device.queue_dealloca(ANY, [(b, 1)], [(c, 1)], buf)
        cts.wait(c, 1)
    # The default pool reuses memory rather than growing once per chain.
    assert cts.device.queue_count >= 1


def test_prefer_origin_reroutes_to_placement_queue(cts):
    q0, q1 = _two_queues(cts)
    buf, sem = _alloca(cts, 256, affinity=q1)
    cts.wait(sem, 1)
    assert buf.queue_affinity == q1
    done = _dealloca(cts, buf, affinity=q0, flags=DeallocaFlags.PREFER_ORIGIN)
    cts.wait(done, 1)
    assert buf.is_decommitted


def test_zero_access_flags_canonicalised(cts):
    params = BufferParams(access=MemoryAccess.NONE)
    buf, sem = _alloca(cts, 64, params=params)
    assert buf.allowed_access == MemoryAccess.ALL
    cts.wait(sem, 1)
    assert _fill_and_read(cts, buf, 3, 64) == b"\x03" * 64
    cts.wait(_dealloca(cts, buf), 1)


def test_oversized_alloca_routes_to_passthrough(cts):
    size = 40 << 20  # larger than the default TLSF slab
    buf, sem = _alloca(cts, size)
    cts.wait(sem, 1)
    assert buf.byte_length == size
    cts.wait(_dealloca(cts, buf), 1)


# -- explicit pools --------------------------------------------------------------------------


@POOLS
def test_query_queue_pool_backend_needs_a_group(cts):
    try:
        cts.device.query_queue_pool_backend(1)
    except hal_core.UnimplementedError as exc:
        pytest.skip(f"{cts.driver} has no queue pool backend: {exc}")
    except hal_core.FailedPreconditionError as exc:
        assert "group" in str(exc)
    else:
        pytest.fail("query_queue_pool_backend outside a device group must be FAILED_PRECONDITION")
    with hal_core.DeviceGroup.from_devices([cts.device], owns_devices=False):
        backend = _backend(cts)
        assert backend.notification is not None and callable(backend.epoch_query)
        with pytest.raises(hal_core.InvalidArgumentError, match="selects no queue"):
            cts.device.query_queue_pool_backend(1 << 63)


@POOLS
def test_passthrough_pool_alloca(cts, grouped):
    b = _backend(cts)
    pool = PassthroughPool(b.slab_provider, notification=b.notification, epoch_query=b.epoch_query)
    buf, sem = _alloca(cts, 3000, pool=pool)
    cts.wait(sem, 1)
    assert _fill_and_read(cts, buf, 9, 32) == b"\x09" * 32
    assert pool.query_stats().reservation_count == 1
    cts.wait(_dealloca(cts, buf), 1)
    assert pool.query_stats().reservation_count == 0
    pool.close()


@POOLS
def test_tlsf_pool_transfer_chain(cts, grouped):
    b = _backend(cts)
    pool = TlsfPool(
        b.slab_provider,
        range_length=1 << 20,
        notification=b.notification,
        epoch_query=b.epoch_query,
    )
    a, s1 = _alloca(cts, 4096, pool=pool)
    c, s2 = _alloca(cts, 4096, pool=pool)
    copied = cts.semaphore(0)
    filled = cts.semaphore(0)
    cts.device.queue_fill(ANY, [(s1, 1)], [(filled, 1)], a, 0, 4096, b"\xab")
    cts.device.queue_copy(ANY, [(filled, 1), (s2, 1)], [(copied, 1)], a, 0, c, 0, 4096)
    cts.wait(copied, 1)
    assert cts.read_bytes(c, 0, 4096) == b"\xab" * 4096
    cts.wait(_dealloca(cts, a), 1)
    cts.wait(_dealloca(cts, c), 1)
    assert pool.query_stats().bytes_reserved == 0
    pool.close()


def _one_block_pool(cts, epoch_query=None):
    b = _backend(cts)
    return FixedBlockPool(
        b.slab_provider,
        block_size=4096,
        block_count=1,
        notification=b.notification,
        epoch_query=epoch_query,
    )


@POOLS
def test_fixed_block_across_queues_with_hidden_frontier_wait(cts, grouped):
    q0, q1 = _two_queues(cts)
    pool = _one_block_pool(cts)  # NULL epoch query: only dominance or a wait reuses
    first, s1 = _alloca(cts, 1024, affinity=q0, pool=pool)
    cts.wait(s1, 1)
    cts.wait(_dealloca(cts, first, affinity=q0), 1)
    assert pool.query_stats().wait_count == 0
    second, s2 = _alloca(cts, 1024, affinity=q1, pool=pool, flags=ALLOW)
    cts.wait(s2, 1)
    assert pool.query_stats().wait_count == 1
    assert _fill_and_read(cts, second, 0x42, 32) == b"\x42" * 32
    cts.wait(_dealloca(cts, second, affinity=q1), 1)
    pool.close()


@POOLS
def test_fixed_block_across_queues_without_flag_is_resource_exhausted(cts, grouped):
    q0, q1 = _two_queues(cts)
    pool = _one_block_pool(cts)
    first, s1 = _alloca(cts, 1024, affinity=q0, pool=pool)
    cts.wait(s1, 1)
    cts.wait(_dealloca(cts, first, affinity=q0), 1)
    sem = cts.semaphore(0)
    with pytest.raises(hal_core.ResourceExhaustedError, match="ALLOW_POOL_WAIT_FRONTIER"):
        cts.device.queue_alloca(q1, (), [(sem, 1)], BufferParams(), 1024, pool=pool)
    assert sem.value == 0
    # Nothing leaked: the same request with the flag still succeeds.
    again, s2 = _alloca(cts, 1024, affinity=q1, pool=pool, flags=ALLOW)
    cts.wait(s2, 1)
    cts.wait(_dealloca(cts, again, affinity=q1), 1)
    pool.close()


@POOLS
def test_pending_dealloca_leaves_next_alloca_usable(cts, grouped):
    pool = _one_block_pool(cts)
    first, s1 = _alloca(cts, 512, pool=pool)
    gate = cts.semaphore(0)
    freed = _dealloca(cts, first, wait=[(s1, 1), (gate, 1)])
    second, s2 = _alloca(cts, 512, wait=[(freed, 1)], pool=pool, flags=ALLOW)
    gate.signal(1)
    cts.wait(s2, 1)
    assert _fill_and_read(cts, second, 0x66, 16) == b"\x66" * 16
    cts.wait(_dealloca(cts, second), 1)
    pool.close()


@POOLS
def test_tlsf_skips_stale_cross_queue_block_and_grows(cts, grouped):
    q0, q1 = _two_queues(cts)
    b = _backend(cts)
    slab = 1 << 16
    pool = TlsfPool(b.slab_provider, range_length=slab, notification=b.notification)
    first, s1 = _alloca(cts, slab, affinity=q0, pool=pool)
    cts.wait(s1, 1)
    cts.wait(_dealloca(cts, first, affinity=q0), 1)
    second, s2 = _alloca(cts, slab, affinity=q1, pool=pool)
    cts.wait(s2, 1)
    stats = pool.query_stats()
    assert stats.slab_count == 2 and stats.wait_count == 0
    assert _fill_and_read(cts, second, 1, 16) == b"\x01" * 16
    cts.wait(_dealloca(cts, second, affinity=q1), 1)
    pool.close()


@POOLS
def test_exhaustion_completes_after_dealloca_releases(cts, grouped):
    pool = _one_block_pool(cts, epoch_query=_backend(cts).epoch_query)
    first, s1 = _alloca(cts, 4096, pool=pool)
    cts.wait(s1, 1)
    second, s2 = _alloca(cts, 4096, pool=pool)
    assert second is not None
    assert pool.query_stats().exhausted_count >= 1
    assert s2.value == 0 and not second.is_committed
    cts.wait(_dealloca(cts, first), 1)
    cts.wait(s2, 1)
    assert _fill_and_read(cts, second, 0x77, 16) == b"\x77" * 16
    cts.wait(_dealloca(cts, second), 1)
    pool.close()


@POOLS
def test_bad_pool_arguments(cts, grouped):
    sem = cts.semaphore(0)
    with pytest.raises(hal_core.InvalidArgumentError, match="Pool"):
        cts.device.queue_alloca(ANY, (), [(sem, 1)], BufferParams(), 64, pool=object())
    b = _backend(cts)
    pool = TlsfPool(b.slab_provider, range_length=1 << 12, notification=b.notification)
    with pytest.raises(hal_core.OutOfRangeError, match="largest reservation"):
        cts.device.queue_alloca(ANY, (), [(sem, 1)], BufferParams(), 1 << 13, pool=pool)
    assert sem.value == 0
    # Later work still runs.
    buf, ok = _alloca(cts, 64, pool=pool)
    cts.wait(ok, 1)
    cts.wait(_dealloca(cts, buf), 1)
    pool.close()


def test_zero_size_alloca(cts):
    buf, sem = _alloca(cts, 0)
    cts.wait(sem, 1)
    assert buf.byte_length == 0 and buf.is_committed
    cts.wait(_dealloca(cts, buf), 1)


@POOLS
def test_indeterminate_lifetime_released_when_dropped(cts, grouped):
    import gc

    b = _backend(cts)
    pool = TlsfPool(b.slab_provider, range_length=1 << 16, notification=b.notification)
    buf, sem = _alloca(cts, 256, pool=pool, flags=AllocaFlags.INDETERMINATE_LIFETIME)
    cts.wait(sem, 1)
    assert buf.placement_flags & PlacementFlags.INDETERMINATE_LIFETIME
    cts.wait(_dealloca(cts, buf), 1)  # a barrier: the memory stays
    assert pool.query_stats().reservation_count == 1
    del buf
    gc.collect()
    assert pool.query_stats().reservation_count == 0
    pool.close()


@POOLS
def test_stress_many_chains_through_a_small_pool(cts, grouped):
    """200 alloca -> fill -> dealloca chains over every queue through a 4-block pool: most
    allocas park on the notification and complete as deallocas release. Every fill lands
    in memory no other live chain holds."""
    b = _backend(cts)
    pool = FixedBlockPool(
        b.slab_provider,
        block_size=256,
        block_count=4,
        notification=b.notification,
        epoch_query=b.epoch_query,
    )
    affinities = [1 << q for q in range(cts.device.queue_count)]
    chains = 200
    results = cts.buffer(chains * 16)
    last = []
    for i in range(chains):
        aff = affinities[i % len(affinities)]
        a, f, c, d = (cts.semaphore(0) for _ in range(4))
        buf = cts.device.queue_alloca(
            aff, (), [(a, 1)], BufferParams(), 256, pool=pool, flags=ALLOW
        )
        cts.device.queue_fill(aff, [(a, 1)], [(f, 1)], buf, 0, 256, bytes([i & 0xFF]))
        cts.device.queue_copy(aff, [(f, 1)], [(c, 1)], buf, 0, results, 16 * i, 16)
        cts.device.queue_dealloca(aff, [(c, 1)], [(d, 1)], buf)
        last.append(d)
    for d in last:
        cts.wait(d, 1)
    got = cts.read_bytes(results)
    assert got == b"".join(bytes([i & 0xFF]) * 16 for i in range(chains))
    stats = pool.query_stats()
    assert stats.reservation_count == 0 and stats.release_count == chains
    pool.close()


def test_alignment_beyond_the_pool_is_invalid_at_call_time(cts):
    gate = cts.semaphore(0)
    sem = cts.semaphore(0)
    with pytest.raises(hal_core.InvalidArgumentError, match="alignment"):
        cts.device.queue_alloca(
            ANY, [(gate, 1)], [(sem, 1)], BufferParams(min_alignment=1 << 20), 64
        )
    buf, ok = _alloca(cts, 64, params=BufferParams(min_alignment=256))
    cts.wait(ok, 1)
    cts.wait(_dealloca(cts, buf), 1)
