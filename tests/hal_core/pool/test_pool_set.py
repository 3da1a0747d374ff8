"""Passthrough pools, slab providers and caches, pool-set routing, allocate_buffer."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hal_core import (
    BufferParams,
    BufferUsage,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    MemoryType,
    NotFoundError,
    ResourceExhaustedError,
)
from hal_core.pool import (
    DEFAULT_PRIORITY_OVERSIZED,
    DEFAULT_PRIORITY_TLSF,
    AcquireResult,
    CpuSlabProvider,
    FixedBlockPool,
    PassthroughPool,
    PoolSet,
    SlabCache,
    TlsfPool,
    allocate_buffer,
    release_buffer,
)

R = AcquireResult


def test_cpu_slab_provider_alignment_and_stats():
    p = CpuSlabProvider(slab_alignment=4096)
    slab = p.acquire_slab(10_000)
    assert slab.length == 10_000 and slab.storage.address % 4096 == 0
    view = p.wrap(slab, 100, 50)
    assert view.address == view.host_array.ctypes.data == slab.storage.address + 100
    view.host_array[:] = 7
    assert slab.storage.host_array[100:150].sum() == 7 * 50
    p.release_slab(slab)
    stats = p.query_stats()
    assert (stats.slabs_acquired, stats.slabs_released, stats.bytes_acquired) == (1, 1, 10_000)
    with pytest.raises(ResourceExhaustedError):
        p.acquire_slab(0)
    with pytest.raises(InvalidArgumentError):
        CpuSlabProvider(slab_alignment=48)


def test_slab_cache_target_and_max_counts():
    inner = CpuSlabProvider()
    cache = SlabCache(inner, 4096, target_count=2, max_count=3)
    assert cache.cached_count == 2 and inner.query_stats().slabs_acquired == 2
    slabs = [cache.acquire_slab(100) for _ in range(4)]
    stats = cache.query_stats()
    assert (stats.cache_hits, stats.cache_misses) == (2, 2)
    big = cache.acquire_slab(10_000)  # bypasses the cache
    assert big.length == 10_000
    for s in slabs + [big]:
        cache.release_slab(s)
    assert cache.cached_count == 3  # max_count; the rest went back to the provider
    assert inner.query_stats().slabs_released == 2
    cache.prefill()
    cache.trim()
    assert cache.cached_count == 0
    with pytest.raises(InvalidArgumentError, match="target_count"):
        SlabCache(inner, 4096, target_count=5, max_count=1)


def test_passthrough_pool_one_slab_per_reservation():
    provider = CpuSlabProvider()
    pool = PassthroughPool(provider)
    result, res, _ = pool.acquire_reservation(1 << 20)
    assert result == R.OK_FRESH and res.length == 1 << 20
    assert pool.query_stats().slab_count == 1
    pool.release_reservation(res)
    assert provider.query_stats().slabs_released == 1
    with pytest.raises(FailedPreconditionError):
        pool.release_reservation(res)
    with pytest.raises(InvalidArgumentError):
        pool.acquire_reservation(0)


def test_passthrough_provider_exhaustion_is_a_result():
    pool = PassthroughPool(CpuSlabProvider(max_slab_size=1024))
    result, res, _ = pool.acquire_reservation(4096)
    assert result == R.EXHAUSTED and res is None
    assert pool.query_stats().exhausted_count == 1


def test_pool_set_routes_by_priority_size_and_type():
    provider = CpuSlabProvider()
    tlsf = TlsfPool(provider, range_length=1 << 16)
    passthrough = PassthroughPool(provider)
    pools = PoolSet()
    pools.register(DEFAULT_PRIORITY_OVERSIZED, passthrough)
    pools.register(DEFAULT_PRIORITY_TLSF, tlsf)
    params = BufferParams()
    assert pools.select(params, 1000) is tlsf
    assert pools.select(params, 1 << 20) is passthrough  # oversized goes to the catch-all
    assert pools.pools[0] == (10, tlsf)
    # A usage the pools cannot serve selects nothing.
    assert pools.select(BufferParams(usage=BufferUsage.SHARING_REPLICATE), 16) is None
    with pytest.raises(NotFoundError, match="catch-all"):
        pools.select_or_raise(BufferParams(usage=BufferUsage.SHARING_REPLICATE), 16)
    # OPTIMAL is a hint only; the host pools serve host-visible requests.
    assert pools.select(BufferParams(type=MemoryType.HOST_LOCAL), 64) is tlsf
    with pytest.raises(InvalidArgumentError):
        pools.register(1, object())
    pools.close()


def test_allocate_buffer_materializes_and_releases():
    pool = TlsfPool(CpuSlabProvider(), range_length=1 << 16)
    buf = allocate_buffer(pool, BufferParams(), 1000, timeout=1)
    assert buf.byte_length == 1000 and buf.is_committed
    buf.write(np.arange(1000, dtype=np.uint8).tobytes())
    assert buf.read(10, 3) == bytes([10, 11, 12])
    assert pool.query_stats().reservation_count == 1
    release_buffer(buf)
    assert pool.query_stats().reservation_count == 0 and buf.is_decommitted
    with pytest.raises(FailedPreconditionError, match="owns no pool reservation"):
        release_buffer(buf)


def test_allocate_buffer_waits_for_release_then_times_out():
    pool = FixedBlockPool(CpuSlabProvider(), block_size=64, block_count=1)
    first = allocate_buffer(pool, None, 64, timeout=1)
    started = threading.Event()
    got = []

    def waiter():
        started.set()
        got.append(allocate_buffer(pool, None, 64, timeout=10))

    t = threading.Thread(target=waiter)
    t.start()
    started.wait(5)
    release_buffer(first)  # the parked allocate_buffer retries on the notification
    t.join(10)
    assert got and got[0].is_committed
    with pytest.raises(DeadlineExceededError, match="did not become available"):
        allocate_buffer(pool, None, 64, timeout=0.05)
    assert pool.notification.observer_count == 0


def test_pool_set_allocate_buffer():
    pools = PoolSet()
    pools.register(0, PassthroughPool(CpuSlabProvider()))
    buf = pools.allocate_buffer(BufferParams(), 5000)
    assert buf.byte_length == 5000
    release_buffer(buf)
