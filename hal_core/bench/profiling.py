"""Profiling overhead: existing benchmarks re-run under a profiling session.

``edge.e2e.profiled`` is ``edge.e2e`` (hal_core.bench.edges) and ``cb.replay.profiled``
is ``cb.replay`` (hal_core.bench.command_buffers, once in ``MODULES``) with QUEUE_EVENTS and
DISPATCH_EVENTS captured into an in-memory ``StatisticsSink``; the session ends (and the
sink runs) after the timed body, outside the measurement. Compare each with its
unprofiled twin from the same ``hal bench`` run; the unprofiled figures are the cost of
the taps when profiling is off.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Iterator

from . import BenchContext, benchmark, edges


@contextlib.contextmanager
def _profiled(ctx: BenchContext) -> Iterator[None]:
    from ..profiling import ProfilingDataFamily as F
    from ..profiling import ProfilingOptions, StatisticsSink

    # Room for every record of the warm-up and timed runs (512 ops each), no more: a
    # larger ring only adds garbage-collector traversal to what is measured.
    capacity = max(1 << 12, (ctx.repeats + 2) * 1024)
    options = ProfilingOptions(
        F.QUEUE_EVENTS | F.DISPATCH_EVENTS, sinks=[StatisticsSink()], ring_capacity=capacity
    )
    ctx.device.profiling_begin(options)
    try:
        yield
    finally:
        ctx.device.profiling_end()


@benchmark("edge.e2e.profiled", "us/edge")
def edge_e2e_profiled(ctx: BenchContext) -> float:
    """edge.e2e with QUEUE_EVENTS|DISPATCH_EVENTS captured (statistics sink)."""
    with _profiled(ctx):
        return edges.edge_e2e(ctx)


def _register_cb_replay() -> None:
    """Register ``cb.replay.profiled`` once the command-buffer benchmarks are enabled
    (listed in ``MODULES``): their module is imported here only then."""
    from . import MODULES

    name = "hal_core.bench.command_buffers"
    if name not in MODULES:
        return
    importlib.import_module(name)
    from . import _REGISTRY

    peer = _REGISTRY.get("cb.replay")
    if peer is None:
        return

    @benchmark("cb.replay.profiled", peer.unit)
    def cb_replay_profiled(ctx: BenchContext) -> float:
        """cb.replay with QUEUE_EVENTS|DISPATCH_EVENTS captured (statistics sink)."""
        with _profiled(ctx):
            return peer.fn(ctx)


_register_cb_replay()
