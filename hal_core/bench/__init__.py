"""Benchmarks behind ``hal bench``.

A benchmark is a function registered with ``@benchmark(name, unit)`` taking a
``BenchContext`` and returning one number (already the median over repeats; use
``ctx.median``). Peers (the simple thing a user would write instead) are benchmarks too and
run in the same invocation, so figures are comparable. Modules holding benchmarks are
listed in ``MODULES`` and imported when ``hal bench`` runs, never by ``import hal_core``.
"""

from __future__ import annotations

import gc
import importlib
import statistics
import time
from typing import Any, Callable

import attrs

__all__ = [
    "Benchmark",
    "BenchContext",
    "BenchResult",
    "BenchmarkSkipped",
    "benchmark",
    "all_benchmarks",
    "MODULES",
]

MODULES = [
    "hal_core.bench.command_buffers",
    "hal_core.bench.edges",
    "hal_core.bench.groups",
    "hal_core.bench.pools",
    "hal_core.bench.profiling",
    "hal_core.bench.replay",
    "hal_core.bench.streams",
    "hal_core.bench.semaphores",
    "hal_amdgpu.bench",  # plugin module: skipped when hal-amdgpu is not installed
    "hal_cuda.bench",  # plugin module: skipped when hal-cuda is not installed
    "hal_cuda.bench_alloca",  # plugin module: skipped when hal-cuda is not installed
    "hal_core.bench.iree_peers",  # skip themselves when iree.runtime is not importable
]


class BenchmarkSkipped(Exception):
    """Raised by a benchmark that cannot run here (an optional peer not installed, a device
    it has no counterpart for); the message says why. ``hal bench`` reports it and goes on;
    a skip is not a failure."""


@attrs.frozen
class Benchmark:
    name: str
    unit: str
    fn: Callable[["BenchContext"], float]
    needs_device: bool = True
    description: str = ""


@attrs.frozen
class BenchResult:
    name: str
    value: float
    unit: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit}


_REGISTRY: dict[str, Benchmark] = {}


def benchmark(
    name: str, unit: str, *, needs_device: bool = True
) -> Callable[[Callable[["BenchContext"], float]], Callable[["BenchContext"], float]]:
    """Register ``fn(ctx) -> float`` as benchmark ``name`` reporting in ``unit``."""

    def register(fn: Callable[["BenchContext"], float]) -> Callable[["BenchContext"], float]:
        if name in _REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Benchmark(name, unit, fn, needs_device, doc[0] if doc else "")
        return fn

    return register


def all_benchmarks() -> dict[str, Benchmark]:
    for module in MODULES:
        if module.startswith("hal_core."):
            importlib.import_module(module)
            continue
        try:  # benchmarks of an optional plugin
            importlib.import_module(module)
        except ImportError as exc:
            if exc.name is None or not module.startswith(exc.name.split(".")[0]):
                raise  # the plugin is installed but broken: say so
    return dict(_REGISTRY)


class BenchContext:
    """What a benchmark gets: the device under test (opened once per ``hal bench`` run),
    its URI, and the repeat count."""

    def __init__(self, device: Any, uri: str, repeats: int = 7) -> None:
        self.device = device
        self.uri = uri
        self.repeats = repeats

    @staticmethod
    def now() -> float:
        return time.perf_counter()

    def median(self, run_once: Callable[[], float], repeats: int | None = None) -> float:
        """Median of ``run_once()`` over the repeats (one untimed warm-up first).

        As ``timeit`` does, samples run with the cyclic garbage collector paused, after one
        collection up front, so a gen-2 pass over earlier benchmarks' leftovers does not land
        in a timed window. (No collection between samples: walking the heap would leave
        the caches cold for the next, sometimes microsecond-short, timed region.)
        """
        gc.collect()
        samples = []
        for i in range((repeats or self.repeats) + 1):
            gc.disable()
            try:
                value = run_once()
            finally:
                gc.enable()
            if i:
                samples.append(value)
        return statistics.median(samples)
