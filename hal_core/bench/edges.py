"""Dependency-edge benchmarks: the cost of one cross-queue semaphore edge.

Each chain has 512 operations; op i runs on queue ``i % 2`` (when the device has two),
waits on op i-1's semaphore and signals its own. The peer ``futures.e2e`` builds the same
chain from ``concurrent.futures`` callbacks on a two-thread executor: what a Python user would
write without a HAL.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from . import BenchContext, benchmark

EDGES = 512
_TIMEOUT = 60.0


def _affinities(ctx: BenchContext) -> tuple[int, int]:
    return (1, 2) if ctx.device.queue_count >= 2 else (1, 1)


def _chain(ctx: BenchContext, *, signal_head_first: bool, fill: bool) -> float:
    device = ctx.device
    a0, a1 = _affinities(ctx)
    head = device.create_semaphore()
    sems = [device.create_semaphore() for _ in range(EDGES)]
    target = None
    if fill:
        from .. import BufferParams

        target = device.allocator.allocate_buffer(BufferParams(), 4 * EDGES)
    if signal_head_first:
        head.signal(1)
    barrier = device.queue_barrier
    queue_fill = device.queue_fill
    prev = (head, 1)
    t0 = ctx.now()
    if fill:
        for i in range(EDGES):
            sig = (sems[i], 1)
            queue_fill(a1 if i & 1 else a0, (prev,), (sig,), target, 4 * i, 4, b"\x01\x02\x03\x04")
            prev = sig
    else:
        for i in range(EDGES):
            sig = (sems[i], 1)
            barrier(a1 if i & 1 else a0, (prev,), (sig,))
            prev = sig
    t1 = ctx.now()
    if not signal_head_first:
        head.signal(1)
    sems[-1].wait(1, _TIMEOUT)
    t2 = ctx.now()
    return ((t1 - t0) if not signal_head_first else (t2 - t0)) / EDGES * 1e6


@benchmark("edge.submit", "us/edge")
def edge_submit(ctx: BenchContext) -> float:
    """Submit 512 cross-queue edges held back by an unsignalled head; us per submit."""
    return ctx.median(lambda: _chain(ctx, signal_head_first=False, fill=False))


@benchmark("edge.e2e", "us/edge")
def edge_e2e(ctx: BenchContext) -> float:
    """512 cross-queue edges from first submit until the host wait on the last returns."""
    return ctx.median(lambda: _chain(ctx, signal_head_first=True, fill=False))


@benchmark("edge.fill4", "us/edge")
def edge_fill4(ctx: BenchContext) -> float:
    """As edge.e2e with a 4-byte queue_fill on each edge."""
    return ctx.median(lambda: _chain(ctx, signal_head_first=True, fill=True))


def _noop() -> None:
    return None


@benchmark("futures.e2e", "us/edge", needs_device=False)
def futures_e2e(ctx: BenchContext) -> float:
    """Peer: the same 512-edge chain with concurrent.futures callbacks, 2 threads."""
    with ThreadPoolExecutor(max_workers=2) as executor:

        def run_once() -> float:
            done = threading.Event()
            remaining = [EDGES]

            def on_done(_future: object) -> None:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()
                    return
                executor.submit(_noop).add_done_callback(on_done)

            t0 = ctx.now()
            executor.submit(_noop).add_done_callback(on_done)
            if not done.wait(_TIMEOUT):
                raise TimeoutError("futures chain did not finish")
            return (ctx.now() - t0) / EDGES * 1e6

        return ctx.median(run_once)
