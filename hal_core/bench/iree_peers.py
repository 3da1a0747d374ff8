"""IREE's own runtime as a peer: hal-core's queue benchmarks on IREE's C HAL, same process.

``iree.edge.submit``, ``iree.edge.e2e``, ``iree.edge.fill4`` and ``iree.alloca.e2e`` run the
chains of ``edge.*`` (``edges.py``) and ``alloca.e2e`` (``pools.py``) through
``iree.runtime`` (``iree-base-runtime``, the ``iree`` extra of hal-core) on IREE's driver of
the same name as the device under test (``local-task`` or ``local-sync``): same chain
lengths, same units, same warm-up, GC handling and repeats (``BenchContext.median``).
``iree.<name>.ratio`` reports hal-core / IREE for each pair from medians taken in one
interleaved run (each round times one hal-core sample and one IREE sample, alternating
which goes first), so a change in machine load moves both sides; below 1 means hal-core
is faster.

What a peer does differently (IREE's Python API has no ``queue_barrier``, no
``queue_fill`` and no queue affinity):

* ``iree.edge.*``: an edge is ``queue_execute`` of an empty one-shot ``HalCommandBuffer``
  (created per edge, as a user must) waiting on the previous edge's semaphore and
  signalling its own, all on IREE's one queue; hal-core's edges are ``queue_barrier`` calls
  alternating between two queues (a cross-queue edge each).
* ``iree.edge.fill4``: a one-shot command buffer recording one 4-byte fill per edge;
  hal-core calls ``queue_fill``.
* ``iree.alloca.e2e``: ``queue_alloca(4096)`` / ``queue_dealloca`` on the device's default
  queue pool; hal-core passes default ``BufferParams`` to its default pool set.
* ``local-sync``: IREE executes each submission inline, and one whose waits are unmet
  blocks the submitting thread inside the call while holding the GIL, so nothing can ever
  signal the head: ``iree.edge.submit`` (a chain held back by its head) is skipped there
  rather than hang. hal-core's local-sync defers unmet waits instead.

Any other device under test has no IREE peer: the benchmarks are skipped with that reason,
as they are when ``iree.runtime`` cannot be imported.
"""

from __future__ import annotations

import gc
import statistics
from typing import Any, Callable

from .._status import DeadlineExceededError
from . import BenchContext, BenchmarkSkipped, benchmark
from .edges import EDGES, _chain
from .pools import ALLOCAS, alloca_chain

_TIMEOUT_NS = 60_000_000_000
_DRIVERS = ("local-task", "local-sync")


def iree_runtime() -> Any:
    """``iree.runtime``, or BenchmarkSkipped saying how to install it."""
    try:
        import iree.runtime as rt
    except ImportError as exc:
        raise BenchmarkSkipped(
            f"iree.runtime is not importable ({exc}); install the peer with "
            "pip install iree-base-runtime==3.13.0 (or, from a checkout, pip install '.[iree]')"
        ) from None
    return rt


def driver_name(ctx: BenchContext) -> str:
    """IREE's driver named like the device under test, or BenchmarkSkipped."""
    scheme = ctx.uri.split(":", 1)[0]
    if scheme not in _DRIVERS:
        raise BenchmarkSkipped(
            f"no IREE peer for {ctx.uri!r}: IREE peers run on local-task:// and local-sync://"
        )
    return scheme


class IreePeer:
    """One IREE device of the driver named like ``ctx``'s device, and the peer chains on it.

    Every chain waits for its last signal before returning, so nothing is in flight when
    the device is dropped.
    """

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx
        self.driver = driver_name(ctx)
        self.rt = rt = iree_runtime()
        self.device = rt.get_driver(self.driver).create_default_device()

    def _wait(self, semaphore: Any, value: int) -> None:
        if not semaphore.wait(value, timeout=_TIMEOUT_NS):
            raise DeadlineExceededError(f"IREE {self.driver} chain did not finish in 60 s")

    def edge_chain(self, *, signal_head_first: bool, fill: bool) -> float:
        """One sample of ``iree.edge.*``: us per edge (per submit when the head is held)."""
        rt, device, ctx = self.rt, self.device, self.ctx
        command_buffer = rt.HalCommandBuffer
        execute = device.queue_execute
        head = device.create_semaphore(0)
        sems = [device.create_semaphore(0) for _ in range(EDGES)]
        target = None
        if fill:
            target = device.allocator.allocate_buffer(
                memory_type=rt.MemoryType.DEVICE_LOCAL,
                allowed_usage=rt.BufferUsage.DEFAULT,
                allocation_size=4 * EDGES,
            )
        if signal_head_first:
            head.signal(1)
        prev = (head, 1)
        t0 = ctx.now()
        if fill:
            pattern = b"\x01\x02\x03\x04"
            for i in range(EDGES):
                sig = (sems[i], 1)
                cb = command_buffer(device)
                cb.fill(target, pattern, 4 * i, 4, end=True)
                execute(cb, [prev], [sig])
                prev = sig
        else:
            for i in range(EDGES):
                sig = (sems[i], 1)
                cb = command_buffer(device)
                cb.end()
                execute(cb, [prev], [sig])
                prev = sig
        t1 = ctx.now()
        if not signal_head_first:
            head.signal(1)
        self._wait(sems[-1], 1)
        t2 = ctx.now()
        return ((t1 - t0) if not signal_head_first else (t2 - t0)) / EDGES * 1e6

    def alloca_chain(self) -> float:
        """One sample of ``iree.alloca.e2e``: us per queue_alloca + queue_dealloca pair."""
        device, ctx = self.device, self.ctx
        alloca, dealloca = device.queue_alloca, device.queue_dealloca
        sem = device.create_semaphore(0)
        t0 = ctx.now()
        for i in range(ALLOCAS):
            v = 2 * i
            buffer = alloca(4096, [(sem, v)] if v else [], [(sem, v + 1)])
            dealloca(buffer, [(sem, v + 1)], [(sem, v + 2)])
        self._wait(sem, 2 * ALLOCAS)
        return (ctx.now() - t0) / ALLOCAS * 1e6


def paired_ratio(
    ctx: BenchContext, ours: Callable[[], float], theirs: Callable[[], float]
) -> float:
    """median(ours) / median(theirs) over ``ctx.repeats`` interleaved rounds after one
    untimed warm-up round; samples run as ``BenchContext.median`` runs them (one collection
    up front, cyclic GC paused during each sample)."""
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
    return statistics.median(samples[0]) / statistics.median(samples[1])


def _no_local_sync_submit(peer: IreePeer) -> None:
    if peer.driver == "local-sync":
        raise BenchmarkSkipped(
            "IREE's local-sync runs a submission inline and blocks, holding the GIL, until "
            "its waits are met: a chain held back by its head would never return"
        )


@benchmark("iree.edge.submit", "us/edge")
def iree_edge_submit(ctx: BenchContext) -> float:
    """Peer: edge.submit on IREE's runtime (empty one-shot command buffers, one queue)."""
    peer = IreePeer(ctx)
    _no_local_sync_submit(peer)
    return ctx.median(lambda: peer.edge_chain(signal_head_first=False, fill=False))


@benchmark("iree.edge.e2e", "us/edge")
def iree_edge_e2e(ctx: BenchContext) -> float:
    """Peer: edge.e2e on IREE's runtime (empty one-shot command buffers, one queue)."""
    peer = IreePeer(ctx)
    return ctx.median(lambda: peer.edge_chain(signal_head_first=True, fill=False))


@benchmark("iree.edge.fill4", "us/edge")
def iree_edge_fill4(ctx: BenchContext) -> float:
    """Peer: edge.fill4 on IREE's runtime (a one-shot command buffer of one 4-byte fill)."""
    peer = IreePeer(ctx)
    return ctx.median(lambda: peer.edge_chain(signal_head_first=True, fill=True))


@benchmark("iree.alloca.e2e", "us/pair")
def iree_alloca_e2e(ctx: BenchContext) -> float:
    """Peer: alloca.e2e on IREE's runtime (queue_alloca/queue_dealloca, default pool)."""
    peer = IreePeer(ctx)
    return ctx.median(peer.alloca_chain)


@benchmark("iree.edge.submit.ratio", "x")
def iree_edge_submit_ratio(ctx: BenchContext) -> float:
    """edge.submit / iree.edge.submit, medians of one interleaved run (below 1: hal-core
    faster)."""
    peer = IreePeer(ctx)
    _no_local_sync_submit(peer)
    return paired_ratio(
        ctx,
        lambda: _chain(ctx, signal_head_first=False, fill=False),
        lambda: peer.edge_chain(signal_head_first=False, fill=False),
    )


@benchmark("iree.edge.e2e.ratio", "x")
def iree_edge_e2e_ratio(ctx: BenchContext) -> float:
    """edge.e2e / iree.edge.e2e, medians of one interleaved run (below 1: hal-core
    faster)."""
    peer = IreePeer(ctx)
    return paired_ratio(
        ctx,
        lambda: _chain(ctx, signal_head_first=True, fill=False),
        lambda: peer.edge_chain(signal_head_first=True, fill=False),
    )


@benchmark("iree.edge.fill4.ratio", "x")
def iree_edge_fill4_ratio(ctx: BenchContext) -> float:
    """edge.fill4 / iree.edge.fill4, medians of one interleaved run (below 1: hal-core
    faster)."""
    peer = IreePeer(ctx)
    return paired_ratio(
        ctx,
        lambda: _chain(ctx, signal_head_first=True, fill=True),
        lambda: peer.edge_chain(signal_head_first=True, fill=True),
    )


@benchmark("iree.alloca.e2e.ratio", "x")
def iree_alloca_e2e_ratio(ctx: BenchContext) -> float:
    """alloca.e2e / iree.alloca.e2e, medians of one interleaved run (below 1: hal-core
    faster)."""
    peer = IreePeer(ctx)
    return paired_ratio(ctx, lambda: alloca_chain(ctx), peer.alloca_chain)
