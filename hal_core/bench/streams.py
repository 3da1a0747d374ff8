"""Stream benchmarks: what the in-order stream layer costs over the raw queue calls.

``stream.e2e`` builds the chain of ``edge.e2e`` (``hal_core.bench.edges``) through two
streams: 512 operations, op i on queue ``i % 2`` (when the device has two) waiting on op
i-1, timed from the first submit until the host wait on the last returns. Each edge is a
``wait`` on the other stream plus a ``barrier`` (the stream's no-work op), so the figure
minus ``edge.e2e`` in the same run is the stream's cost per op.
"""

from __future__ import annotations

from . import BenchContext, benchmark
from .edges import _TIMEOUT, EDGES, _affinities


def _chain(ctx: BenchContext, *, signal_head_first: bool) -> float:
    device = ctx.device
    a0, a1 = _affinities(ctx)
    head = device.create_semaphore()
    streams = (device.create_stream(a0), device.create_stream(a1))
    streams[0].wait((head, 1))  # both chains start behind the head, as edge.e2e's do
    if signal_head_first:
        head.signal(1)
    prev = streams[1]
    t0 = ctx.now()
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


@benchmark("stream.submit", "us/edge")
def stream_submit(ctx: BenchContext) -> float:
    """edge.submit through two streams (wait + barrier per edge); us per edge."""
    return ctx.median(lambda: _chain(ctx, signal_head_first=False))


@benchmark("stream.e2e", "us/edge")
def stream_e2e(ctx: BenchContext) -> float:
    """edge.e2e through two streams: 512 cross-queue edges until the last is reached."""
    return ctx.median(lambda: _chain(ctx, signal_head_first=True))
