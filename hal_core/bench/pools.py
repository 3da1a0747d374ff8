"""Pool benchmarks: TLSF and fixed-block reserve/release cost, TLSF fragmentation, and the
first-fit peer (a sorted free list, the simple allocator a user would write).

``pool.tlsf.16`` / ``pool.tlsf.10000`` and ``firstfit.16`` / ``firstfit.10000`` time one
reserve+release pair while 16 or 10,000 other reservations are live, so the O(1) claim of
TLSF shows against first-fit's O(n) walk. ``pool.tlsf.fragmentation`` replays a seeded
random trace of mixed sizes and reports peak bytes committed (slabs) over peak bytes live.

The 256-byte pairs of ``pool.tlsf.*`` and ``pool.fixed_block`` are the steady state of a
recycling workload: TLSF serves them from its quick lists, both through the native fast
paths when ``hal_core.pool._native`` is built. Peers in the same run show the rest:
``pool.tlsf.bitmap.*`` pairs 2 KiB (above the quick-list sizes, so every pair splits,
searches the bitmaps and coalesces), and ``*.python`` the same pairs on the pure-Python
implementation.
"""

from __future__ import annotations

import bisect
import random
from typing import Any, Callable

from .._status import ResourceExhaustedError
from ..pool import CpuSlabProvider, FixedBlockPool, Slab, TlsfPool
from . import BenchContext, benchmark

_PAIRS = 20_000
_SLAB = 1 << 26


class _Provider(CpuSlabProvider):
    """Slabs without memory behind them: the benchmarks measure bookkeeping only."""

    def acquire_slab(self, min_length: int) -> Slab:
        return Slab(None, min_length)


def _fragmented(reserve: Callable[[int], Any], release: Callable[[Any], object], live: int) -> None:
    """``live`` reservations of 256..4096 bytes separated by 32-byte holes: the holes are
    too small for the timed 256-byte request, so a first-fit walk visits all of them."""
    rng = random.Random(1)
    holes = []
    for _ in range(live):
        holes.append(reserve(32))
        reserve(rng.randint(256, 4096))
    for hole in holes:
        release(hole)


def _time_pairs(
    ctx: BenchContext,
    acquire: Callable[[int], tuple[Any, Any, Any]],
    release: Callable[[Any], object],
    size: int,
) -> float:
    def run_once() -> float:
        t0 = ctx.now()
        for _ in range(_PAIRS):
            release(acquire(size)[1])
        return (ctx.now() - t0) / _PAIRS * 1e6

    return ctx.median(run_once)


def _python(cls: type) -> type:
    """The pure-Python implementation of a pool class (itself without the extension)."""
    return getattr(cls, "_python_class", cls)


def _tlsf(ctx: BenchContext, live: int, size: int = 256, cls: type = TlsfPool) -> float:
    pool = cls(_Provider(), range_length=_SLAB)
    _fragmented(lambda n: pool.acquire_reservation(n)[1], pool.release_reservation, live)
    value = _time_pairs(ctx, pool.acquire_reservation, pool.release_reservation, size)
    pool.check_invariants()
    return value


@benchmark("pool.tlsf.16", "us/pair", needs_device=False)
def tlsf_16(ctx: BenchContext) -> float:
    """TLSF reserve+release of 256 bytes with 16 live reservations."""
    return _tlsf(ctx, 16)


@benchmark("pool.tlsf.10000", "us/pair", needs_device=False)
def tlsf_10000(ctx: BenchContext) -> float:
    """TLSF reserve+release of 256 bytes with 10,000 live reservations."""
    return _tlsf(ctx, 10_000)


@benchmark("pool.tlsf.16.python", "us/pair", needs_device=False)
def tlsf_16_python(ctx: BenchContext) -> float:
    """Peer: pool.tlsf.16 on the pure-Python implementation."""
    return _tlsf(ctx, 16, cls=_python(TlsfPool))


@benchmark("pool.tlsf.bitmap.16", "us/pair", needs_device=False)
def tlsf_bitmap_16(ctx: BenchContext) -> float:
    """Peer: TLSF reserve+release of 2 KiB (no quick list) with 16 live reservations."""
    return _tlsf(ctx, 16, 2048)


@benchmark("pool.tlsf.bitmap.10000", "us/pair", needs_device=False)
def tlsf_bitmap_10000(ctx: BenchContext) -> float:
    """Peer: TLSF reserve+release of 2 KiB (no quick list) with 10,000 live reservations."""
    return _tlsf(ctx, 10_000, 2048)


def _fixed_block(ctx: BenchContext, cls: type) -> float:
    pool = cls(_Provider(), block_size=256, block_count=64)
    for _ in range(32):
        pool.acquire_reservation(256)
    return _time_pairs(ctx, pool.acquire_reservation, pool.release_reservation, 256)


@benchmark("pool.fixed_block", "us/pair", needs_device=False)
def fixed_block(ctx: BenchContext) -> float:
    """Fixed-block reserve+release (256-byte blocks, 64 of them, half live)."""
    return _fixed_block(ctx, FixedBlockPool)


@benchmark("pool.fixed_block.python", "us/pair", needs_device=False)
def fixed_block_python(ctx: BenchContext) -> float:
    """Peer: pool.fixed_block on the pure-Python implementation."""
    return _fixed_block(ctx, _python(FixedBlockPool))


@benchmark("pool.tlsf.fragmentation", "ratio", needs_device=False)
def tlsf_fragmentation(ctx: BenchContext) -> float:
    """Peak bytes committed / peak bytes live over a seeded random trace of mixed sizes."""
    rng = random.Random(1234)
    pool = TlsfPool(_Provider(), range_length=1 << 22)
    live: list = []
    live_bytes = peak_live = peak_committed = 0
    for _ in range(40_000):
        if live and (len(live) > 2000 or rng.random() < 0.48):
            res = live.pop(rng.randrange(len(live)))
            live_bytes -= res.length
            pool.release_reservation(res)
        else:
            # Mostly small, sometimes large (log-uniform 16 B .. 256 KiB).
            size = int(2 ** rng.uniform(4, 18))
            result, res, _info = pool.acquire_reservation(size)
            if res is None:
                raise ResourceExhaustedError(
                    f"the fragmentation trace could not reserve {size} bytes ({result.name})"
                )
            live.append(res)
            live_bytes += res.length
            peak_live = max(peak_live, live_bytes)
            committed = pool._bytes_committed
            peak_committed = max(peak_committed, committed)
    pool.check_invariants()
    return peak_committed / peak_live


class FirstFit:
    """First-fit over a sorted free list of (offset, length) with coalescing on free."""

    def __init__(self, length: int) -> None:
        self.starts = [0]
        self.lengths = [length]

    def reserve(self, size: int) -> int:
        size = (size + 15) & ~15
        starts, lengths = self.starts, self.lengths
        for i in range(len(starts)):
            if lengths[i] >= size:
                offset = starts[i]
                if lengths[i] == size:
                    del starts[i]
                    del lengths[i]
                else:
                    starts[i] += size
                    lengths[i] -= size
                return offset * 0x100000000 + size
        return -1

    def release(self, handle: int) -> None:
        offset, size = divmod(handle, 0x100000000)
        starts, lengths = self.starts, self.lengths
        i = bisect.bisect_left(starts, offset)
        if i and starts[i - 1] + lengths[i - 1] == offset:
            i -= 1
            lengths[i] += size
        else:
            starts.insert(i, offset)
            lengths.insert(i, size)
        if i + 1 < len(starts) and starts[i] + lengths[i] == starts[i + 1]:
            lengths[i] += lengths[i + 1]
            del starts[i + 1]
            del lengths[i + 1]


def _firstfit(ctx: BenchContext, live: int) -> float:
    ff = FirstFit(_SLAB)
    _fragmented(ff.reserve, ff.release, live)
    reserve, release = ff.reserve, ff.release
    pairs = 2_000 if live > 1000 else _PAIRS

    def run_once() -> float:
        t0 = ctx.now()
        for _ in range(pairs):
            release(reserve(256))
        return (ctx.now() - t0) / pairs * 1e6

    return ctx.median(run_once)


@benchmark("firstfit.16", "us/pair", needs_device=False)
def firstfit_16(ctx: BenchContext) -> float:
    """Peer: first-fit sorted free list, 256-byte pair with 16 live reservations."""
    return _firstfit(ctx, 16)


@benchmark("firstfit.10000", "us/pair", needs_device=False)
def firstfit_10000(ctx: BenchContext) -> float:
    """Peer: first-fit sorted free list, 256-byte pair with 10,000 live reservations."""
    return _firstfit(ctx, 10_000)


ALLOCAS = 256


def alloca_chain(ctx: BenchContext) -> float:
    """One sample of ``alloca.e2e``: us per queue_alloca + queue_dealloca pair."""
    from .. import BufferParams

    device = ctx.device
    alloca, dealloca = device.queue_alloca, device.queue_dealloca
    params = BufferParams()
    sem = device.create_semaphore()
    t0 = ctx.now()
    for i in range(ALLOCAS):
        v = 2 * i
        buffer = alloca(1, ((sem, v),) if v else (), ((sem, v + 1),), params, 4096)
        dealloca(1, ((sem, v + 1),), ((sem, v + 2),), buffer)
    sem.wait(2 * ALLOCAS, 60.0)
    return (ctx.now() - t0) / ALLOCAS * 1e6


@benchmark("alloca.e2e", "us/pair")
def alloca_e2e(ctx: BenchContext) -> float:
    """A chain of 256 queue_alloca (4 KiB, the device's default pool set) + queue_dealloca
    pairs on one queue, from the first submit until the host wait on the last returns."""
    return ctx.median(lambda: alloca_chain(ctx))
