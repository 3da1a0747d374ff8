"""Stream benchmarks: what the in-order stream layer costs over the raw queue calls.

Each entry builds the chain of its ``edge.*`` twin (``hal_core.bench.edges``) through two
streams, one per queue (``edge.*`` alternates queues 1 and 2 when the device has two):
512 operations, op i on stream ``i % 2`` after ``stream.wait(<the other stream>)``, so it
waits on op i-1 alone (the ping-pong shape: one wait pair and one signal pair per op, as
the raw chain's) and signals its stream's semaphore one higher. Both chains start behind
a ``head`` semaphore, and both are timed from the first submit until the host wait on the
last op returns (``synchronize`` on the last stream; ``Semaphore.wait`` on the last
semaphore for the raw chain). The ``.overhead`` entries report stream minus raw from the
medians of one interleaved run, so load on the machine moves both sides alike.
"""

from __future__ import annotations

import gc
import statistics
from typing import Callable

from .. import BufferParams
from . import BenchContext, benchmark
from .edges import _TIMEOUT, EDGES, _affinities
from .edges import _chain as _raw_chain

_PATTERN = b"\x01\x02\x03\x04"


def _chain(ctx: BenchContext, *, signal_head_first: bool, fill: bool = False) -> float:
    device = ctx.device
    a0, a1 = _affinities(ctx)
    head = device.create_semaphore()
    streams = (device.create_stream(a0), device.create_stream(a1))
    streams[0].wait((head, 1))  # both chains start behind the head, as edge.e2e's do
    target = device.allocator.allocate_buffer(BufferParams(), 4 * EDGES) if fill else None
    if signal_head_first:
        head.signal(1)
    prev = streams[1]
    t0 = ctx.now()
    if target is not None:
        for i in range(EDGES):
            stream = streams[i & 1]
            stream.wait(prev)
            stream.fill(target, _PATTERN, offset=4 * i, length=4)
            prev = stream
    else:
        for i in range(EDGES):
            stream = streams[i & 1]
            stream.wait(prev)
            stream.barrier()
            prev = stream
    t1 = ctx.now()
    if not signal_head_first:
        head.signal(1)
    prev.synchronize(_TIMEOUT)
    t2 = ctx.now()
    return ((t1 - t0) if not signal_head_first else (t2 - t0)) / EDGES * 1e6


def paired_difference(
    ctx: BenchContext, ours: Callable[[], float], theirs: Callable[[], float]
) -> float:
    """median(ours) - median(theirs) over ``ctx.repeats`` interleaved rounds after one
    untimed warm-up round, alternating which side goes first; samples run as
    ``BenchContext.median`` runs them (one collection up front, cyclic GC paused during
    each sample)."""
    gc.collect()
    samples: tuple[list[float], list[float]] = ([], [])
    for i in range(ctx.repeats + 1):
        order = ((0, ours), (1, theirs)) if i % 2 == 0 else ((1, theirs), (0, ours))
        for side, run_once in order:
            gc.disable()
            try:
                value = run_once()
            finally:
                gc.enable()
            if i:
                samples[side].append(value)
    return statistics.median(samples[0]) - statistics.median(samples[1])


@benchmark("stream.submit", "us/edge")
def stream_submit(ctx: BenchContext) -> float:
    """edge.submit through two streams (wait + barrier per edge); us per submit."""
    return ctx.median(lambda: _chain(ctx, signal_head_first=False))


@benchmark("stream.e2e", "us/edge")
def stream_e2e(ctx: BenchContext) -> float:
    """edge.e2e through two streams (wait + barrier per edge) until the last is reached."""
    return ctx.median(lambda: _chain(ctx, signal_head_first=True))


@benchmark("stream.fill4", "us/edge")
def stream_fill4(ctx: BenchContext) -> float:
    """edge.fill4 through two streams (wait + 4-byte fill per edge)."""
    return ctx.median(lambda: _chain(ctx, signal_head_first=True, fill=True))


@benchmark("stream.e2e.overhead", "us/edge")
def stream_e2e_overhead(ctx: BenchContext) -> float:
    """stream.e2e - edge.e2e, medians of one interleaved run: the stream's cost per op."""
    return paired_difference(
        ctx,
        lambda: _chain(ctx, signal_head_first=True),
        lambda: _raw_chain(ctx, signal_head_first=True, fill=False),
    )


@benchmark("stream.fill4.overhead", "us/edge")
def stream_fill4_overhead(ctx: BenchContext) -> float:
    """stream.fill4 - edge.fill4, medians of one interleaved run: the cost per fill op."""
    return paired_difference(
        ctx,
        lambda: _chain(ctx, signal_head_first=True, fill=True),
        lambda: _raw_chain(ctx, signal_head_first=True, fill=True),
    )
