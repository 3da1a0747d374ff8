"""Semaphore benchmarks: the cost of releasing work parked on one timeline semaphore.

``sem.release.N`` parks N queue barriers on one semaphore, barrier i waiting for value i+1
(and signalling value i+1 of a second one), then releases them with N host signals
(1, 2, ..., N), one op per signal. The figure is microseconds per released op, signal
included. A signal must cost O(log N + released), so the two sizes should report about the
same figure; a per-signal scan of every parked timepoint shows up as the larger size costing
N times more.
"""

from __future__ import annotations

from . import BenchContext, benchmark

_TIMEOUT = 120.0


def _release(ctx: BenchContext, n: int) -> float:
    device = ctx.device
    barrier = device.queue_barrier
    gate = device.create_semaphore()
    done = device.create_semaphore()
    # Each op signals the shared ``done`` semaphore at its own value: parked ops release in
    # value order, so the values increase as the timeline requires.
    for i in range(n):
        barrier(1, ((gate, i + 1),), ((done, i + 1),))
    signal = gate.signal
    t0 = ctx.now()
    for v in range(1, n + 1):
        signal(v)
    done.wait(n, _TIMEOUT)
    return (ctx.now() - t0) / n * 1e6


@benchmark("sem.release.1000", "us/op")
def sem_release_1000(ctx: BenchContext) -> float:
    """1,000 ops parked on one semaphore at distinct values, one host signal each."""
    return ctx.median(lambda: _release(ctx, 1000))


@benchmark("sem.release.8000", "us/op")
def sem_release_8000(ctx: BenchContext) -> float:
    """8,000 ops parked on one semaphore at distinct values, one host signal each."""
    return ctx.median(lambda: _release(ctx, 8000))
