"""The native pool fast paths (``hal_core.pool._native``): they must behave exactly as the
Python implementation they sit in front of, defer to it whenever its lock is held, leave
state untouched on bad input, and stay consistent under threads.

The Python variants (``cls._python_class``) run beside the native ones in one process;
``test_pool_tests_pass_without_the_extension`` runs the pool tests once more with the
extension turned off, which also covers the Python ``Reservation`` class.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import threading
import weakref
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core import FailedPreconditionError, InvalidArgumentError
from hal_core.backend import Frontier
from hal_core.pool import (
    AcquireResult,
    CpuSlabProvider,
    FixedBlockPool,
    Reservation,
    ReserveFlags,
    TlsfPool,
    _fast_paths,
)

R = AcquireResult
T = 10.0
native = _fast_paths.native
needs_native = pytest.mark.skipif(native is None, reason=f"{_fast_paths.unavailable_reason}")


def _fixed(cls=FixedBlockPool, **kw):
    return cls(CpuSlabProvider(), block_size=256, block_count=8, **kw)


def _tlsf(cls=TlsfPool, **kw):
    return cls(CpuSlabProvider(), range_length=1 << 16, **kw)


def _make(cls, **kw):
    return _fixed(cls, **kw) if issubclass(cls, _PYTHON[FixedBlockPool]) else _tlsf(cls, **kw)


_PYTHON = {cls: getattr(cls, "_python_class", cls) for cls in (FixedBlockPool, TlsfPool)}


def _variant_params():
    params = []
    for cls, name in ((FixedBlockPool, "fixed_block"), (TlsfPool, "tlsf")):
        if _PYTHON[cls] is not cls:
            params.append(pytest.param(cls, id=f"{name}-native"))
        params.append(pytest.param(_PYTHON[cls], id=f"{name}-python"))
    return params


VARIANTS = _variant_params()


def _stats(pool):
    return pool.query_stats()


# -- build and selection -----------------------------------------------------------------


def test_native_extension_is_built_where_it_can_be():
    """A checkout installed with a C compiler and the Python headers has the extension:
    without it the pool targets of ``hal bench`` are out of reach."""
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if os.environ.get("HAL_POOL_NATIVE") == "0":
        pytest.skip("turned off by HAL_POOL_NATIVE=0")
    if not (shutil.which("cc") or shutil.which("gcc")) or not headers.exists():
        pytest.skip("no C compiler or Python headers here: the Python paths are expected")
    assert native is not None, _fast_paths.unavailable_reason
    assert _fast_paths.describe().startswith("native")
    assert FixedBlockPool.__mro__[1] is native.FixedBlockCore
    assert TlsfPool.__mro__[1] is native.TlsfCore
    assert Reservation is native.Reservation


@pytest.mark.slow
def test_pool_tests_pass_without_the_extension():
    here = Path(__file__).parent
    files = sorted(str(p) for p in here.glob("test_*.py") if p.name != Path(__file__).name)
    env = dict(os.environ, HAL_POOL_NATIVE="0")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    probe = subprocess.run(
        [sys.executable, "-c", "from hal_core.pool import _fast_paths as f; print(f.describe())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.startswith("python (turned off by HAL_POOL_NATIVE=0)")


# -- the native and Python variants agree ------------------------------------------------

_op = st.one_of(
    st.tuples(
        st.just("acquire"),
        st.sampled_from([1, 16, 100, 256, 300, 1024, 4096]),
        st.sampled_from([0, 0, 0, 16, 64]),
        st.booleans(),  # requester frontier
        st.booleans(),  # ALLOW_WAIT_FRONTIER
    ),
    st.tuples(st.just("release"), st.integers(0, 63), st.booleans()),  # death frontier?
)


def _run_trace(pool, trace):
    """Apply ``trace`` and return everything observable about each step."""
    live: list = []
    seen = []
    for step in trace:
        if step[0] == "acquire":
            _, size, align, requester, allow = step
            try:
                result, res, info = pool.acquire_reservation(
                    size,
                    align,
                    Frontier([(1, 5)]) if requester else None,
                    ReserveFlags.ALLOW_WAIT_FRONTIER if allow else 0,
                )
            except Exception as exc:  # noqa: BLE001 - compared across variants
                seen.append(("error", type(exc).__name__))
                continue
            seen.append((result, None if res is None else (res.offset, res.length)))
            if res is not None:
                live.append(res)
        elif live:
            _, pick, frontier = step
            res = live.pop(pick % len(live))
            pool.release_reservation(res, Frontier([(1, 3 + pick % 4)]) if frontier else None)
            seen.append(("released", res.offset))
    seen.append(_stats(pool))
    return seen


@needs_native
@pytest.mark.parametrize("cls", [FixedBlockPool, TlsfPool], ids=["fixed_block", "tlsf"])
@settings(max_examples=60, deadline=None)
@given(trace=st.lists(_op, max_size=60))
def test_native_and_python_variants_agree(cls, trace):
    fast, slow = _make(cls), _make(_PYTHON[cls])
    assert _run_trace(fast, trace) == _run_trace(slow, trace)
    if cls is TlsfPool:
        fast.check_invariants()


# -- bad input through the fast entry points ---------------------------------------------


@pytest.mark.parametrize("cls", VARIANTS)
def test_bad_input_is_refused_and_changes_nothing(cls):
    pool = _make(cls)
    keep = pool.acquire_reservation(256)[1]
    before = _stats(pool)
    for args, error in [
        ((0,), InvalidArgumentError),
        ((-5,), InvalidArgumentError),
        ((256.0,), InvalidArgumentError),
        (("256",), InvalidArgumentError),
        ((256, 3), InvalidArgumentError),
        ((256, -16), InvalidArgumentError),
    ]:
        with pytest.raises(error):
            pool.acquire_reservation(*args)
    with pytest.raises(TypeError):
        pool.acquire_reservation(256, 0, None, 0, "extra")
    with pytest.raises(InvalidArgumentError, match="needs a Reservation"):
        pool.release_reservation("not a reservation")
    other = _make(cls)
    foreign = other.acquire_reservation(256)[1]
    with pytest.raises(InvalidArgumentError, match="belongs to pool"):
        pool.release_reservation(foreign)
    with pytest.raises(InvalidArgumentError, match="death frontier"):
        pool.release_reservation(keep, death_frontier=[(1, 2)])
    assert _stats(pool) == before
    pool.release_reservation(keep)
    with pytest.raises(FailedPreconditionError, match="already released"):
        pool.release_reservation(keep)
    after = _stats(pool)
    assert after.reservation_count == 0 and after.release_count == before.release_count + 1
    # Keywords take the Python path and mean the same.
    result, res, _ = pool.acquire_reservation(size=256, alignment=0)
    assert result == R.OK_FRESH and res.length >= 256
    pool.release_reservation(reservation=res, death_frontier=None)
    assert _stats(pool).reservation_count == 0


@pytest.mark.parametrize("cls", VARIANTS)
def test_closed_pool_refuses_reservations(cls):
    pool = _make(cls)
    res = pool.acquire_reservation(256)[1]
    pool.release_reservation(res)  # a warm fast path (free stack / quick list)
    pool.close()
    with pytest.raises(FailedPreconditionError, match="closed"):
        pool.acquire_reservation(256)


@pytest.mark.parametrize("cls", VARIANTS)
def test_budget_is_enforced_past_the_fast_path(cls):
    pool = _make(cls, budget_limit=512)
    a = pool.acquire_reservation(256)[1]
    pool.release_reservation(a)
    held = [pool.acquire_reservation(256)[1] for _ in range(2)]
    assert pool.acquire_reservation(256)[0] == R.OVER_BUDGET
    assert _stats(pool).over_budget_count == 1
    for res in held:
        pool.release_reservation(res)


# -- the lock --------------------------------------------------------------------------


@needs_native
def test_fence_lock_behaves_as_a_lock():
    lock = native.FenceLock()
    assert not lock.locked()
    assert lock.acquire() is True and lock.locked()
    assert lock.acquire(blocking=False) is False
    assert lock.acquire(timeout=0.01) is False
    lock.release()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(ValueError):
        lock.acquire(False, 1.0)
    with pytest.raises(TypeError, match="owner must be a pool"):
        native.FenceLock(1)


@needs_native
@pytest.mark.parametrize("cls", [FixedBlockPool, TlsfPool], ids=["fixed_block", "tlsf"])
def test_counts_kept_in_c_are_exact_wherever_they_are_read(cls):
    """The fast paths count in C; acquiring the lock folds those counts into the pool's
    counters, and the lock-free ``bytes_reserved`` adds the pending ones."""
    pool = _make(cls)
    warm = pool.acquire_reservation(256)[1]
    pool.release_reservation(warm)
    held = [pool.acquire_reservation(256)[1] for _ in range(3)]
    pool.release_reservation(held.pop())
    assert pool.bytes_reserved == 2 * 256  # lock-free, pending counts included
    stats = _stats(pool)  # under the lock: folded
    assert (stats.bytes_reserved, stats.fresh_count, stats.release_count) == (512, 4, 2)
    with pool._lock:
        assert pool._bytes_reserved == 512 and pool._fresh_count == 4
    for res in held:
        pool.release_reservation(res)
    assert pool.bytes_reserved == 0 and _stats(pool).reservation_count == 0


@needs_native
def test_a_lock_outliving_its_pool_still_works():
    pool = _fixed()
    pool.release_reservation(pool.acquire_reservation(256)[1])  # counts pending in C
    lock = pool._lock
    stray = native.FenceLock(pool)  # another lock naming the same pool
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None
    for held in (lock, stray):
        with held:  # must not fold into the freed pool
            assert held.locked()


@needs_native
@pytest.mark.parametrize("make", [_fixed, _tlsf], ids=["fixed_block", "tlsf"])
def test_fast_paths_wait_while_the_lock_is_held(make):
    pool = make()
    warm = pool.acquire_reservation(256)[1]
    pool.release_reservation(warm)
    results = []
    pool._lock.acquire()
    try:
        worker = threading.Thread(target=lambda: results.append(pool.acquire_reservation(256)))
        worker.start()
        # The worker must queue on the lock rather than take the block under our feet.
        worker.join(0.2)
        assert worker.is_alive() and not results
    finally:
        pool._lock.release()
    worker.join(T)
    assert results and results[0][0] == R.OK_FRESH
    pool.release_reservation(results[0][1])


# -- Reservation -------------------------------------------------------------------------


def test_reservation_value_type():
    pool = _fixed()
    res = pool.acquire_reservation(100)[1]
    assert (res.offset, res.length, res.slab_index) == (0, 256, 0)
    assert res.pool is pool and res.is_live and "live" in repr(res)
    made = Reservation(pool=pool, offset=16, length=32, block_handle=None, slab_index=2)
    assert (made.offset, made.length, made.block_handle, made.slab_index) == (16, 32, None, 2)
    pool.release_reservation(res)
    assert res.pool is None and not res.is_live and "released" in repr(res)
    if native is not None:
        with pytest.raises(AttributeError):
            res.offset = 5  # a pool's answer, not the caller's to edit


def test_reservation_cycles_are_collected():
    class Holder:
        pass

    holder = Holder()
    holder.res = Reservation(holder, 0, 16, holder, 0)
    ref = weakref.ref(holder)
    del holder
    gc.collect()
    assert ref() is None


# -- threads -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", VARIANTS)
def test_threads_mixing_fast_and_slow_paths_never_share_memory(cls):
    """Four threads reserve and release; every 7th release carries a death frontier (the
    slow path) and every 5th reserve asks for alignment (the slow path). No range is ever
    handed to two holders at once and the books balance at the end."""
    pool = _make(cls, epoch_query=lambda axis, epoch: True)  # every frontier is reached
    owners: dict = {}
    guard = threading.Lock()
    errors: list = []

    def worker(seed):
        rng = random.Random(seed)
        mine = []
        try:
            for i in range(3000):
                if mine and (len(mine) > 3 or rng.random() < 0.5):
                    res = mine.pop(rng.randrange(len(mine)))
                    key = (res.slab_index, res.offset)
                    with guard:
                        assert owners.pop(key) == seed
                    frontier = Frontier([(1, i)]) if i % 7 == 0 else None
                    pool.release_reservation(res, frontier)
                else:
                    result, res, _ = pool.acquire_reservation(256, 16 if i % 5 == 0 else 0)
                    if res is None:
                        assert result == R.EXHAUSTED
                        continue
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
    stats = _stats(pool)
    assert stats.reservation_count == 0 and stats.bytes_reserved == 0
    assert stats.release_count == stats.fresh_count + stats.reuse_count + stats.wait_count
    if isinstance(pool, TlsfPool):
        pool.check_invariants()
