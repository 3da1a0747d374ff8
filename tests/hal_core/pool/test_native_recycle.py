"""The TLSF recycle lists in C (``hal_core.pool._native``): a reserve that takes back a
recycled block (its requester dominating the block's death frontier) and a release that
parks a block with its death frontier must leave the pool exactly as the Python reference
(``TlsfPool._python_class``) does, for any frontiers, and must not call the Python path.
"""

from __future__ import annotations

import random
import sys
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core.backend import Frontier
from hal_core.pool import AcquireResult, CpuSlabProvider, TlsfPool, _fast_paths

native = _fast_paths.native
needs_native = pytest.mark.skipif(native is None, reason=f"{_fast_paths.unavailable_reason}")
PYTHON_TLSF: Any = getattr(TlsfPool, "_python_class", TlsfPool)

_U64 = (1 << 64) - 1
# Axes and epochs at the edges of what a frontier may hold (64-bit axes, epochs >= 1).
_axis = st.sampled_from([0, 1, 2, 7, 1 << 40, _U64 - 1, _U64])
_epoch = st.sampled_from([1, 2, 3, 5, 1 << 62, (1 << 63) + 1, _U64])


@st.composite
def _frontier(draw: Any) -> Frontier:
    entries = draw(st.dictionaries(_axis, _epoch, min_size=0, max_size=4))
    return Frontier(sorted(entries.items()))


_op = st.one_of(
    st.tuples(
        st.just("acquire"),
        st.sampled_from([256, 1024, 4096, 4096, 4096, 8192]),
        st.one_of(st.none(), _frontier()),
    ),
    st.tuples(st.just("release"), st.integers(0, 63), st.one_of(st.none(), _frontier())),
)


def _pool(cls: Any, capacity: int, limit: int) -> Any:
    pool = cls(CpuSlabProvider(), range_length=1 << 16, frontier_capacity=capacity)
    pool._recycle_limit = limit
    return pool


def _state(pool: Any) -> tuple:
    """Everything the recycle paths touch, after the lock has folded the C counts."""
    stats = pool.query_stats()
    with pool._lock:
        recycled = {g: list(blocks) for g, blocks in pool._recycle.items() if blocks}
        fronts = [(b, f._axes, f._epochs) for b, f in enumerate(pool._front) if f is not None]
        return (
            recycled,
            pool._recycle_count,
            pool._quick_bytes,
            pool._reuse_count,
            pool._fresh_count,
            pool._release_count,
            pool._bytes_reserved,
            fronts,
            list(pool._taint),
            stats,
        )


def _run(pool: Any, trace: list) -> list:
    live: list = []
    seen: list = []
    for step in trace:
        if step[0] == "acquire":
            _, size, requester = step
            result, res, _info = pool.acquire_reservation(size, 0, requester, 0)
            seen.append((result, None if res is None else (res.offset, res.length)))
            if res is not None:
                live.append(res)
        elif live:
            _, pick, death = step
            res = live.pop(pick % len(live))
            pool.release_reservation(res, death)
            seen.append(("released", res.offset))
    seen.append(_state(pool))
    return seen


@needs_native
@settings(max_examples=150, deadline=None)
@given(
    trace=st.lists(_op, max_size=50),
    capacity=st.sampled_from([1, 2, 4]),
    limit=st.sampled_from([0, 1, 8]),
)
def test_native_recycle_paths_agree_with_the_python_reference(
    trace: list, capacity: int, limit: int
) -> None:
    fast, slow = _pool(TlsfPool, capacity, limit), _pool(PYTHON_TLSF, capacity, limit)
    assert _run(fast, trace) == _run(slow, trace)
    fast.check_invariants()


@needs_native
@settings(max_examples=200, deadline=None)
@given(requester=_frontier(), death=_frontier())
def test_a_recycle_hit_follows_frontier_dominance(requester: Frontier, death: Frontier) -> None:
    """The C dominance check decides exactly as ``Frontier.dominates``."""
    if not death._axes:
        return  # a release without entries goes to the quick path, not the recycle lists
    fast, slow = _pool(TlsfPool, 4, 8), _pool(PYTHON_TLSF, 4, 8)
    for pool in (fast, slow):
        _, res, _ = pool.acquire_reservation(4096)
        pool.release_reservation(res, death)
    got = [pool.acquire_reservation(4096, 0, requester)[0] for pool in (fast, slow)]
    hit = AcquireResult.OK if requester.dominates(death) else AcquireResult.OK_FRESH
    assert got == [hit, hit]
    assert _state(fast) == _state(slow)


@needs_native
def test_recycle_release_and_hit_run_without_the_python_path() -> None:
    calls: list[str] = []

    class Counting(TlsfPool):  # type: ignore[misc, valid-type]
        def _acquire_slow(self, *args: Any) -> Any:
            calls.append("acquire")
            return PYTHON_TLSF.acquire_reservation(self, *args)

        def _release_slow(self, *args: Any) -> Any:
            calls.append("release")
            return PYTHON_TLSF.release_reservation(self, *args)

    pool = Counting(CpuSlabProvider(), range_length=1 << 16)
    _, res, _ = pool.acquire_reservation(4096)  # fresh space: the Python path
    # The first recycle of a size makes its list (the Python path, which may collect garbage).
    pool.release_reservation(res, Frontier.single(3, 1))
    result, res, _ = pool.acquire_reservation(4096, 0, Frontier.single(3, 1))
    assert result is AcquireResult.OK
    calls.clear()
    for epoch in range(2, 51):
        pool.release_reservation(res, Frontier.single(3, epoch))
        result, res, _ = pool.acquire_reservation(4096, 0, Frontier.single(3, epoch))
        assert result is AcquireResult.OK
    assert calls == []
    assert pool.query_stats().reuse_count == 50
    # A requester that does not dominate the death frontier is the Python path's to decide.
    pool.release_reservation(res, Frontier.single(3, 100))
    assert pool.acquire_reservation(4096, 0, Frontier.single(3, 99))[0] is AcquireResult.OK_FRESH
    assert calls == ["acquire"]
    pool.check_invariants()


@needs_native
def test_a_death_frontier_whose_caller_drops_it_stays_alive() -> None:
    """The release path keeps its own reference to the frontier it files."""
    pool = TlsfPool(CpuSlabProvider(), range_length=1 << 16)
    _, res, _ = pool.acquire_reservation(4096)
    pool.release_reservation(res, Frontier([(1, 2), (5, 6)]))
    with pool._lock:
        (block,) = next(iter(pool._recycle.values()))
        assert pool._front[block]._axes == [1, 5]
    assert pool.acquire_reservation(4096, 0, Frontier([(1, 2), (5, 7)]))[0] is AcquireResult.OK


@needs_native
def test_threads_recycling_through_c_and_python_never_share_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four threads release with death frontiers and reserve with dominating requesters
    (the C recycle paths), every 5th reserve aligned (the Python path, under the lock). No
    range is handed to two holders at once and the books balance at the end."""
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    pool = TlsfPool(CpuSlabProvider(), range_length=1 << 20)
    owners: dict = {}
    guard = threading.Lock()
    errors: list = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        mine: list = []
        try:
            for i in range(1, 2000):
                if mine and (len(mine) > 3 or rng.random() < 0.5):
                    res = mine.pop(rng.randrange(len(mine)))
                    with guard:
                        assert owners.pop((res.slab_index, res.offset)) == seed
                    pool.release_reservation(res, Frontier.single(1 + seed % 2, i))
                else:
                    requester = Frontier([(1, 1 << 40), (2, 1 << 40)])
                    _, res, _ = pool.acquire_reservation(4096, 64 if i % 5 == 0 else 0, requester)
                    assert res is not None
                    key = (res.slab_index, res.offset)
                    with guard:
                        assert key not in owners, f"{key} handed out twice"
                        owners[key] = seed
                    mine.append(res)
            for res in mine:
                with guard:
                    owners.pop((res.slab_index, res.offset))
                pool.release_reservation(res)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors[0]
    stats = pool.query_stats()
    assert stats.reservation_count == 0 and stats.bytes_reserved == 0
    assert stats.reuse_count > 0
    assert stats.release_count == stats.fresh_count + stats.reuse_count + stats.wait_count
    pool.check_invariants()
