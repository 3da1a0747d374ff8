"""TLSF's reserve fast path also takes a head block whose death frontier the requester
dominates, and coalescing keeps a dominating frontier without copying it. Both must
behave exactly as the general path (``_acquire_general``: ``_find`` + ``_take``) and the
full merge do: a pool driven through the fast paths and a twin that always takes the
general path agree on every result, offset, length and statistic (quick and recycle
lists, separate fast paths with their own tests, are turned off in both)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core.backend import Frontier
from hal_core.pool import CpuSlabProvider, TlsfPool

SLAB = 1 << 14


class _GeneralOnly(TlsfPool):
    """The reference: every reserve through ``_acquire_general``, every merge copied."""

    def acquire_reservation(  # type: ignore[override]
        self, size: int, alignment: int = 0, requester_frontier: Any = None, flags: int = 0
    ) -> Any:
        return self._acquire_general(size, alignment, requester_frontier, flags)

    def _absorb(self, a: int, b: int) -> None:
        fa, fb = self._front[a], self._front[b]
        if fa is not None and fb is not None:
            # Force the copy-and-merge path of the original.
            merged = fa.copy(self.frontier_capacity) if len(fa) <= self.frontier_capacity else None
            if merged is not None and merged.merge(fb):
                self._front[a] = merged
            else:
                self._taint[a] = True
            self._front[b] = None
        super()._absorb(a, b)


def _frontier(entries: list[tuple[int, int]]) -> Frontier | None:
    if not entries:
        return None
    merged: dict[int, int] = {}
    for axis, epoch in entries:
        merged[axis] = max(epoch, merged.get(axis, 0))
    return Frontier(sorted(merged.items()))


_frontiers = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 6)), max_size=3)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.integers(1, 64).map(lambda g: g * 64), _frontiers),
        st.tuples(st.just("release"), st.integers(0, 1 << 20), _frontiers),
    ),
    max_size=80,
)


def _stats(pool: TlsfPool) -> tuple:
    s = pool.query_stats()
    return (s.reservation_count, s.slab_count, s.bytes_reserved, s.bytes_free, s.bytes_committed)


@settings(max_examples=200, deadline=None)
@given(ops=_ops)
def test_fast_paths_agree_with_the_general_path(ops: list) -> None:
    fast = TlsfPool(CpuSlabProvider(), range_length=SLAB)
    ref = _GeneralOnly(CpuSlabProvider(), range_length=SLAB)
    # Quick and recycle lists are separate fast paths (the reference skips them; see
    # test_tlsf_recycle.py): off in both.
    fast._quick_depth = ref._quick_depth = 0
    fast._recycle_limit = ref._recycle_limit = 0
    live: list[tuple[Any, Any]] = []
    for kind, arg, entries in ops:
        frontier = _frontier(entries)
        if kind == "acquire":
            a = fast.acquire_reservation(arg, 0, frontier)
            b = ref.acquire_reservation(arg, 0, frontier)
            assert (a[0], a[2].wait_frontier) == (b[0], b[2].wait_frontier)
            if a[1] is None:
                assert b[1] is None
                continue
            assert (a[1].offset, a[1].length, a[1].slab_index) == (
                b[1].offset,
                b[1].length,
                b[1].slab_index,
            )
            live.append((a[1], b[1]))
        elif live:
            ra, rb = live.pop(arg % len(live))
            fast.release_reservation(ra, frontier)
            ref.release_reservation(rb, frontier)
        assert _stats(fast) == _stats(ref)
    for ra, rb in live:
        fast.release_reservation(ra)
        ref.release_reservation(rb)
    assert _stats(fast) == _stats(ref)
