"""TLSF recycle lists: blocks released with a death frontier wait, still live, for an
exact-size reserve whose requester dominates that frontier (a queue reusing what it
released). Whatever the sequence, a pool with recycle lists keeps every rule the pool
without them keeps: no reservation ever overlaps a live one, no memory is handed out
without a wait unless the requester dominates the death frontier of every byte of it,
the statistics count recycled blocks as free, and no block stays recycled while the pool
grows or reports EXHAUSTED (both are decided only after the recycle lists are flushed).
(A twin without recycle lists is no oracle for which requests succeed: coalescing spreads
a death frontier over the free neighbours of a released block, and the two pools place
blocks differently, so either may refuse a request the other grants.)"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core.backend import Frontier
from hal_core.pool import AcquireResult, CpuSlabProvider, TlsfPool

SLAB = 1 << 14
GRANULE = 64
R = AcquireResult


def _frontier(entries: list[tuple[int, int]]) -> Frontier | None:
    if not entries:
        return None
    merged: dict[int, int] = {}
    for axis, epoch in entries:
        merged[axis] = max(epoch, merged.get(axis, 0))
    return Frontier(sorted(merged.items()))


def _dominated(requester: Frontier | None, death: Frontier | None) -> bool:
    if death is None:
        return True
    return requester is not None and requester.dominates(death)


_frontiers = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 6)), max_size=2)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.sampled_from([1, 2, 3, 8, 64]), _frontiers),
        st.tuples(st.just("release"), st.integers(0, 1 << 20), _frontiers),
        st.tuples(st.just("trim"), st.just(0), st.just([])),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops=_ops)
def test_recycled_blocks_keep_every_pool_rule(ops: list) -> None:
    pool = TlsfPool(CpuSlabProvider(), range_length=SLAB, alignment=GRANULE, max_slabs=2)
    # (slab, granule) -> the death frontier that granule was last released with.
    death: dict[tuple[int, int], Frontier | None] = {}
    live: list[Any] = []
    for kind, arg, entries in ops:
        frontier = _frontier(entries)
        if kind == "acquire":
            slabs = pool.query_stats().slab_count
            a = pool.acquire_reservation(arg * GRANULE, 0, frontier)
            if a[0] == R.EXHAUSTED or pool.query_stats().slab_count > slabs:
                assert pool._recycle_count == 0  # flushed before growing or refusing
            if a[1] is None:
                continue
            res = a[1]
            granules = [(res.slab_index, res.offset // GRANULE + i) for i in range(arg)]
            for other in live:
                assert other.slab_index != res.slab_index or (
                    other.offset + other.length <= res.offset
                    or res.offset + res.length <= other.offset
                )
            if a[0] in (R.OK, R.OK_FRESH):
                for g in granules:
                    assert _dominated(frontier, death.get(g))
            live.append(res)
        elif kind == "release" and live:
            ra = live.pop(arg % len(live))
            for i in range(ra.length // GRANULE):
                death[(ra.slab_index, ra.offset // GRANULE + i)] = frontier
            pool.release_reservation(ra, frontier)
        elif kind == "trim":
            pool.trim()
            # A slab given back comes back as fresh memory.
            death = {k: f for k, f in death.items() if pool._slabs[k[0]] is not None}
        pool.check_invariants()
        stats = pool.query_stats()
        assert stats.reservation_count == len(live)
        assert stats.bytes_reserved == sum(r.length for r in live)
        assert stats.bytes_free == stats.bytes_committed - stats.bytes_reserved
    for ra in live:
        pool.release_reservation(ra)
    pool.trim()
    assert pool.query_stats().bytes_committed == 0
    pool.check_invariants()


def test_a_queue_reuses_the_block_it_released_without_a_split() -> None:
    pool = TlsfPool(CpuSlabProvider(), range_length=SLAB, alignment=GRANULE)
    first = pool.acquire_reservation(4096)[1]
    pool.release_reservation(first, Frontier([(7, 3)]))
    assert pool._recycle_count == 1
    # A requester that has not seen epoch 3 of axis 7 gets other memory.
    other = pool.acquire_reservation(4096, 0, Frontier([(7, 2)]))
    assert other[0] == R.OK_FRESH and other[1].offset != first.offset
    again = pool.acquire_reservation(4096, 0, Frontier([(7, 3)]))
    assert again[0] == R.OK and again[1].offset == first.offset
    assert pool._recycle_count == 0
    stats = pool.query_stats()
    assert stats.reuse_count == 1 and stats.reservation_count == 2
    pool.check_invariants()


def test_recycled_blocks_are_flushed_before_the_pool_grows_or_refuses() -> None:
    pool = TlsfPool(CpuSlabProvider(), range_length=SLAB, alignment=GRANULE, max_slabs=1)
    whole = pool.acquire_reservation(SLAB)[1]
    pool.release_reservation(whole, Frontier([(1, 5)]))
    assert pool._recycle_count == 1
    # A smaller request flushes it: the requester dominates the frontier, so the slab's
    # memory is reused instead of growing (max_slabs=1 would make growth EXHAUSTED).
    result, res, _ = pool.acquire_reservation(1024, 0, Frontier([(1, 5)]))
    assert result == R.OK and res.slab_index == 0
    assert pool._recycle_count == 0
    pool.release_reservation(res)
    pool.trim()
    assert pool.query_stats().bytes_committed == 0
    pool.check_invariants()
