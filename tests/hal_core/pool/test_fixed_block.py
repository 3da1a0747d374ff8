"""Fixed-block pool: bitmap reuse, death frontiers, NEEDS_WAIT rules, taint, bad input,
and a reference-model property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core import FailedPreconditionError, InvalidArgumentError, OutOfRangeError
from hal_core.backend import Frontier
from hal_core.pool import AcquireResult, CpuSlabProvider, FixedBlockPool, ReserveFlags

R = AcquireResult
ALLOW = ReserveFlags.ALLOW_WAIT_FRONTIER


def _pool(count=4, size=256, **kw):
    return FixedBlockPool(CpuSlabProvider(), block_size=size, block_count=count, **kw)


def test_blocks_fresh_then_exhausted_then_reused():
    pool = _pool(count=2)
    r1 = pool.acquire_reservation(100)
    r2 = pool.acquire_reservation(256)
    assert r1[0] == r2[0] == R.OK_FRESH
    assert {r1[1].offset, r2[1].offset} == {0, 256}
    assert pool.acquire_reservation(1)[0] == R.EXHAUSTED
    pool.release_reservation(r1[1])
    result, res, _ = pool.acquire_reservation(1)
    assert result == R.OK_FRESH and res.offset == r1[1].offset
    stats = pool.query_stats()
    assert stats.exhausted_count == 1 and stats.reservation_count == 2


def test_death_frontier_gates_reuse_and_needs_wait_only_when_allowed():
    pool = _pool(count=1)
    res = pool.acquire_reservation(64)[1]
    pool.release_reservation(res, Frontier([(3, 2)]))
    # Not dominated and not allowed to wait: exhausted, nothing reserved.
    assert pool.acquire_reservation(64)[0] == R.EXHAUSTED
    # Dominated: reused without a wait.
    result, res, info = pool.acquire_reservation(64, requester_frontier=Frontier([(3, 2)]))
    assert result == R.OK and info.wait_frontier is None
    pool.release_reservation(res, Frontier([(3, 4)]))
    assert pool.query_stats().wait_count == 0
    result, res, info = pool.acquire_reservation(64, flags=ALLOW)
    assert result == R.OK_NEEDS_WAIT and info.wait_frontier.entries == ((3, 4),)
    assert pool.query_stats().wait_count == 1


def test_fresh_block_preferred_over_waiting():
    pool = _pool(count=2)
    a = pool.acquire_reservation(64)[1]
    pool.acquire_reservation(64)
    pool.release_reservation(a, Frontier([(1, 1)]))
    b = pool.acquire_reservation(64)[1]  # the other block is live: must wait or fail
    assert b is None
    pool2 = _pool(count=2)
    a = pool2.acquire_reservation(64)[1]
    pool2.release_reservation(a, Frontier([(1, 1)]))
    result, _, _ = pool2.acquire_reservation(64, flags=ALLOW)
    assert result == R.OK_FRESH  # an immediately usable block wins over NEEDS_WAIT


def test_tainted_block_is_never_needs_wait():
    pool = _pool(count=1)
    res = pool.acquire_reservation(64)[1]
    pool.mark_tainted(res)
    pool.release_reservation(res, Frontier([(1, 1)]))
    assert pool.acquire_reservation(64, flags=ALLOW)[0] == R.EXHAUSTED
    # An epoch query that proves the frontier reached still cannot trust a tainted block.
    pool.epoch_query = lambda axis, epoch: True
    assert pool.acquire_reservation(64, flags=ALLOW)[0] == R.OK


def test_epoch_query_proves_reuse():
    reached = {1: 0}
    pool = _pool(count=1, epoch_query=lambda a, e: reached.get(a, 0) >= e)
    res = pool.acquire_reservation(64)[1]
    pool.release_reservation(res, Frontier([(1, 5)]))
    assert pool.acquire_reservation(64)[0] == R.EXHAUSTED
    reached[1] = 5
    assert pool.acquire_reservation(64)[0] == R.OK


def test_bad_input_leaves_pool_unchanged():
    pool = _pool()
    other = _pool()
    before = pool.query_stats()
    with pytest.raises(InvalidArgumentError, match="size"):
        pool.acquire_reservation(0)
    with pytest.raises(InvalidArgumentError, match="power of two"):
        pool.acquire_reservation(16, 12)
    with pytest.raises(OutOfRangeError):
        pool.acquire_reservation(257)
    with pytest.raises(InvalidArgumentError, match="aligned"):
        pool.acquire_reservation(16, 512)
    assert pool.query_stats() == before
    res = pool.acquire_reservation(16)[1]
    with pytest.raises(InvalidArgumentError, match="belongs to pool"):
        other.release_reservation(res)
    with pytest.raises(InvalidArgumentError, match="Frontier"):
        pool.release_reservation(res, {1: 2})
    pool.release_reservation(res)
    with pytest.raises(FailedPreconditionError, match="already released"):
        pool.release_reservation(res)
    assert pool.query_stats().reservation_count == 0
    with pytest.raises(InvalidArgumentError, match="block_size"):
        FixedBlockPool(CpuSlabProvider(), block_size=0, block_count=1)


def test_budget():
    pool = _pool(count=4, budget_limit=512)
    pool.acquire_reservation(1)
    pool.acquire_reservation(1)
    assert pool.acquire_reservation(1)[0] == R.OVER_BUDGET


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 100), st.booleans()), max_size=80))
def test_fixed_block_against_reference_model(trace):
    count, size = 8, 64
    pool = _pool(count=count, size=size)
    live = []
    dirty = set()
    for reserve, pick, with_frontier in trace:
        if reserve:
            result, res, _ = pool.acquire_reservation(1 + pick % size)
            free = count - len(live)
            # Dirty blocks (released with a frontier nobody proves) are never reused here.
            if free - len(dirty) > 0:
                assert result == R.OK_FRESH
            else:
                assert result == R.EXHAUSTED
            if res is not None:
                assert res.offset % size == 0 and res.length == size
                assert all(res.offset != other.offset for other in live)
                live.append(res)
        elif live:
            res = live.pop(pick % len(live))
            pool.release_reservation(res, Frontier([(1, 1)]) if with_frontier else None)
            if with_frontier:
                dirty.add(res.offset)
        stats = pool.query_stats()
        assert stats.bytes_reserved == size * len(live)
        assert stats.bytes_free == size * (count - len(live))


def test_bytes_reserved_snapshot_tracks_live_blocks():
    pool = _pool(count=3, size=128)
    a = pool.acquire_reservation(1)[1]
    pool.acquire_reservation(1)
    assert pool.bytes_reserved == 256 == pool.query_stats().bytes_reserved
    pool.release_reservation(a, Frontier([(1, 1)]))
    assert pool.bytes_reserved == 128
    pool.acquire_reservation(1, flags=ALLOW)  # fresh block first
    assert pool.acquire_reservation(1, flags=ALLOW)[0] == R.OK_NEEDS_WAIT
    assert pool.bytes_reserved == 384
