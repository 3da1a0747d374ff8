"""TLSF pool: reserve/release, frontiers, growth, bad input, and a reference-model
property test (no overlap, alignment, every byte accounted, full coalescing)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core import FailedPreconditionError, InvalidArgumentError, OutOfRangeError
from hal_core.backend import Frontier
from hal_core.pool import (
    AcquireFlags,
    AcquireResult,
    CpuSlabProvider,
    ReserveFlags,
    TlsfPool,
)

R = AcquireResult
SLAB = 1 << 16


def _pool(**kw):
    kw.setdefault("range_length", SLAB)
    return TlsfPool(CpuSlabProvider(), **kw)


def test_fresh_reserve_release_and_stats():
    pool = _pool()
    result, res, info = pool.acquire_reservation(100)
    assert result == R.OK_FRESH and res.length == 112 and res.offset % 16 == 0
    assert info.wait_frontier is None
    stats = pool.query_stats()
    assert (stats.reservation_count, stats.slab_count, stats.bytes_reserved) == (1, 1, 112)
    assert stats.bytes_free + stats.bytes_reserved == stats.bytes_committed == SLAB
    pool.release_reservation(res)
    stats = pool.query_stats()
    assert (stats.reservation_count, stats.release_count, stats.fresh_count) == (0, 1, 1)
    pool.check_invariants()


@pytest.mark.parametrize("size", [0, -1, 1.5, None])
def test_bad_sizes_are_invalid_argument_and_change_nothing(size):
    pool = _pool()
    before = pool.query_stats()
    with pytest.raises(InvalidArgumentError, match="size must be an int > 0"):
        pool.acquire_reservation(size)
    assert pool.query_stats() == before


@pytest.mark.parametrize("alignment", [3, 24, -16])
def test_non_power_of_two_alignment(alignment):
    pool = _pool()
    with pytest.raises(InvalidArgumentError, match="power of two"):
        pool.acquire_reservation(64, alignment)
    assert pool.query_stats().reserve_count == 0


def test_oversized_is_out_of_range():
    pool = _pool()
    with pytest.raises(OutOfRangeError, match="passthrough"):
        pool.acquire_reservation(SLAB + 1)


def test_double_release_and_foreign_release_keep_state():
    a, b = _pool(), _pool()
    _, res, _ = a.acquire_reservation(64)
    _, other, _ = b.acquire_reservation(64)
    with pytest.raises(InvalidArgumentError, match="belongs to pool"):
        a.release_reservation(other)
    a.release_reservation(res)
    before = a.query_stats()
    with pytest.raises(FailedPreconditionError, match="already released"):
        a.release_reservation(res)
    with pytest.raises(InvalidArgumentError, match="Reservation"):
        a.release_reservation("nope")
    assert a.query_stats() == before
    a.check_invariants()
    _, again, _ = a.acquire_reservation(64)  # later work still runs
    assert again.is_live


def test_large_alignment_is_honoured():
    pool = _pool(alignment=16)
    _, first, _ = pool.acquire_reservation(48)
    _, aligned, _ = pool.acquire_reservation(100, 1024)
    assert aligned.offset % 1024 == 0
    pool.check_invariants()
    pool.release_reservation(first)
    pool.release_reservation(aligned)
    pool.check_invariants()
    assert pool.query_stats().bytes_reserved == 0


def test_dominated_block_is_reused_and_undominated_is_skipped_with_growth():
    pool = _pool()
    _, res, _ = pool.acquire_reservation(SLAB)  # the whole slab
    pool.release_reservation(res, Frontier([(7, 3)]))
    # A requester that has seen axis 7 at epoch 3 reuses the block without waiting.
    result, again, info = pool.acquire_reservation(SLAB, requester_frontier=Frontier([(7, 3)]))
    assert result == R.OK and again.slab_index == 0 and info.wait_frontier is None
    pool.release_reservation(again, Frontier([(7, 5)]))
    # One that has not is never handed the block: the pool grows instead.
    result, grown, _ = pool.acquire_reservation(SLAB, requester_frontier=Frontier([(7, 4)]))
    assert result == R.OK_FRESH and grown.slab_index == 1
    stats = pool.query_stats()
    assert stats.slab_count == 2 and stats.reuse_count == 1 and stats.reuse_miss_count == 1
    pool.check_invariants()


def test_epoch_query_proves_reuse():
    reached = {}
    pool = _pool(epoch_query=lambda axis, epoch: reached.get(axis, 0) >= epoch)
    _, res, _ = pool.acquire_reservation(SLAB)
    pool.release_reservation(res, Frontier([(1, 2)]))
    result, _, _ = pool.acquire_reservation(SLAB, flags=ReserveFlags.DISALLOW_GROWTH)
    assert result == R.EXHAUSTED
    reached[1] = 2
    result, res, _ = pool.acquire_reservation(SLAB)
    assert result == R.OK and res.slab_index == 0


def test_disallow_growth_reports_growth_required_and_max_slabs():
    pool = _pool(max_slabs=1)
    result, res, info = pool.acquire_reservation(64, flags=ReserveFlags.DISALLOW_GROWTH)
    assert result == R.EXHAUSTED and res is None and info.flags & AcquireFlags.GROWTH_REQUIRED
    _, whole, _ = pool.acquire_reservation(SLAB)
    result, res, _ = pool.acquire_reservation(16)
    assert result == R.EXHAUSTED and pool.query_stats().exhausted_count == 2
    pool.release_reservation(whole)
    assert pool.acquire_reservation(16)[0] == R.OK_FRESH


def test_budget_limit_is_over_budget_result():
    pool = _pool(budget_limit=256)
    _, res, _ = pool.acquire_reservation(200)
    result, none, _ = pool.acquire_reservation(100)
    assert result == R.OVER_BUDGET and none is None
    assert pool.query_stats().over_budget_count == 1
    pool.release_reservation(res)
    assert pool.acquire_reservation(100)[0] == R.OK_FRESH


def test_coalescing_merges_frontiers_and_taints_on_overflow():
    pool = _pool(frontier_capacity=2)
    pool._recycle_limit = 0  # recycle lists defer coalescing: this is about coalescing
    parts = [pool.acquire_reservation(SLAB // 4)[1] for _ in range(4)]
    pool.release_reservation(parts[0], Frontier([(1, 1)]))
    pool.release_reservation(parts[1], Frontier([(2, 1)]))
    merged = pool._front[parts[0].block_handle]
    assert merged.entries == ((1, 1), (2, 1))
    pool.release_reservation(parts[2], Frontier([(3, 1)]))  # third axis: overflow -> tainted
    assert pool._taint[parts[0].block_handle]
    # Tainted blocks are never proven reusable, even by a requester that saw everything.
    everything = Frontier([(1, 1), (2, 1), (3, 1)])
    result, res, _ = pool.acquire_reservation(SLAB // 2, requester_frontier=everything)
    assert result == R.OK_FRESH and res.slab_index == 1
    pool.check_invariants()


def test_trim_returns_empty_slabs():
    pool = _pool()
    a = pool.acquire_reservation(SLAB)[1]
    b = pool.acquire_reservation(SLAB)[1]
    pool.release_reservation(a)
    pool.trim()
    stats = pool.query_stats()
    assert stats.slab_count == 1 and stats.bytes_committed == SLAB
    pool.release_reservation(b)
    pool.trim()
    assert pool.query_stats().bytes_committed == 0
    assert pool.acquire_reservation(64)[0] == R.OK_FRESH
    pool.check_invariants()
    pool.close()
    pool.close()


# -- reference model ------------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(1, SLAB // 3), st.sampled_from([0, 16, 64, 512])),
        st.tuples(st.just("release"), st.integers(0, 10_000), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(ops)
def test_tlsf_against_reference_model(trace):
    reached = {1: 0}
    pool = _pool(epoch_query=lambda axis, epoch: reached.get(axis, 0) >= epoch)
    live = []
    epoch = 0
    for op in trace:
        if op[0] == "reserve":
            _, size, alignment = op
            result, res, _ = pool.acquire_reservation(size, alignment)
            assert result in (R.OK, R.OK_FRESH)
            assert res.length >= size and res.length % 16 == 0
            assert res.offset % max(alignment, 16) == 0
            assert res.offset + res.length <= SLAB
            for other in live:  # no two live reservations overlap
                if other.slab_index == res.slab_index:
                    assert (
                        res.offset + res.length <= other.offset
                        or other.offset + other.length <= res.offset
                    )
            live.append(res)
        elif live:
            _, index, with_frontier = op
            res = live.pop(index % len(live))
            epoch += 1
            pool.release_reservation(res, Frontier([(1, epoch)]) if with_frontier else None)
            reached[1] = epoch - 1  # the previous release's frontier is now reached
        pool.check_invariants()  # coverage, no adjacent free blocks, bitmaps vs lists
        stats = pool.query_stats()
        assert stats.bytes_reserved == sum(r.length for r in live)
        assert stats.bytes_free + stats.bytes_reserved == stats.bytes_committed
    for res in live:
        pool.release_reservation(res)
    pool.check_invariants()
    assert pool.query_stats().bytes_reserved == 0


def test_quick_lists_reuse_exact_sizes_and_flush_before_growth():
    pool = _pool()
    first = pool.acquire_reservation(64)[1]
    pool.release_reservation(first)
    again = pool.acquire_reservation(64)[1]
    assert again.offset == first.offset  # taken straight back from the quick list
    pool.release_reservation(again)
    small = [pool.acquire_reservation(64)[1] for _ in range(SLAB // 64)]  # the whole slab
    assert pool.query_stats().slab_count == 1
    for res in small:
        pool.release_reservation(res)  # some park in the quick list, uncoalesced
    result, whole, _ = pool.acquire_reservation(SLAB, flags=ReserveFlags.DISALLOW_GROWTH)
    assert result == R.OK_FRESH and whole.slab_index == 0  # flushed and coalesced first
    assert pool.query_stats().slab_count == 1
    pool.check_invariants()
