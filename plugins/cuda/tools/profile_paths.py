"""Where the time of hal-cuda's single-op chains goes, on a GPU: ``dispatch.direct``'s
chain (512 ``queue_dispatch`` of an in-place ``negate``, each waiting on the previous
one's value) and ``edge.fill4``'s (512 4-byte fills alternating two queues). For each,
the submitting thread's time split into submitting and waiting for the last value
(median of 7 runs, us per op), then one run under cProfile: the submitting thread's top
functions by own time. The completion thread is not profiled (cProfile sees one thread).
Then the dispatch chain's split with kernel launches through cuda-bindings instead of
``HotCalls.launch`` (``HAL_CUDA_LAUNCH=bindings``), the two chains through the Python
submit path instead of the native lane (``HAL_CUDA_NATIVE=0``), and the splits again on a
Python-path device whose driver calls all go through cuda-bindings (which releases the
GIL on every call) instead of ``cuda_api.hot_calls``, for comparison. Last,
when IREE's tools can capture it, hal-core's replay of IREE's 512-dispatch chain
(``replay.chain512``'s run) under cProfile, with the graph counters of the device.

Usage: python plugins/cuda/tools/profile_paths.py [URI]
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from typing import Any, Callable

from hal_cuda import cuda_api
from hal_cuda.kernels import CTS_LIBRARY, load_ptx

import hal_core
from hal_core import (
    BufferParams,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    QueueAffinity,
)

N = 512
COUNT_4 = (4).to_bytes(4, "little")


def _dispatch_chain(dev: Any) -> Callable[[], tuple[float, float]]:
    exe = dev.create_executable_cache("profile").prepare("ptx", load_ptx(CTS_LIBRARY))
    fn = exe.lookup_function("negate")
    buf = dev.allocator.allocate_buffer(
        BufferParams(usage=BufferUsage.DEFAULT | BufferUsage.TRANSFER), 16
    )
    config = DispatchConfig.static(1)
    sem = dev.create_semaphore()
    value = [0]
    dispatch = dev.queue_dispatch

    def run() -> tuple[float, float]:
        v = value[0]
        t0 = time.perf_counter()
        for _ in range(N):
            dispatch(1, ((sem, v),), ((sem, v + 1),), exe, fn, config, COUNT_4, (buf, buf))
            v += 1
        t1 = time.perf_counter()
        sem.wait(v, 60.0)
        value[0] = v
        return t1 - t0, time.perf_counter() - t1

    return run


def _fill_chain(dev: Any) -> Callable[[], tuple[float, float]]:
    target = dev.allocator.allocate_buffer(BufferParams(), 4 * N)
    fill = dev.queue_fill

    def run() -> tuple[float, float]:
        head = dev.create_semaphore(1)
        sems = [dev.create_semaphore() for _ in range(N)]
        prev = (head, 1)
        t0 = time.perf_counter()
        for i in range(N):
            sig = (sems[i], 1)
            fill(2 if i & 1 else 1, (prev,), (sig,), target, 4 * i, 4, b"\x01\x02\x03\x04")
            prev = sig
        t1 = time.perf_counter()
        sems[-1].wait(1, 60.0)
        return t1 - t0, time.perf_counter() - t1

    return run


def _split(name: str, run: Callable[[], tuple[float, float]]) -> None:
    run()
    samples = [run() for _ in range(7)]
    submit = statistics.median(s for s, _ in samples) / N * 1e6
    wait = statistics.median(w for _, w in samples) / N * 1e6
    print(f"== {name}: {submit:.2f} us/op, then {wait:.2f} us/op")


def _one_shot(dev: Any) -> Callable[[], tuple[float, float]]:
    """Record a ONE_SHOT command buffer of N chained dispatches (a barrier after each),
    then submit it (stream launches); (record, submit+wait)."""
    exe = dev.create_executable_cache("profile").prepare("ptx", load_ptx(CTS_LIBRARY))
    fn = exe.lookup_function("negate")
    buf = dev.allocator.allocate_buffer(
        BufferParams(usage=BufferUsage.DEFAULT | BufferUsage.TRANSFER), 16
    )
    config = DispatchConfig.static(1)
    sem = dev.create_semaphore()
    value = [0]
    mode = CommandBufferMode.ONE_SHOT | CommandBufferMode.UNVALIDATED

    def run() -> tuple[float, float]:
        t0 = time.perf_counter()
        cb = dev.create_command_buffer(mode, CommandCategory.ANY, QueueAffinity.ANY, 0)
        cb.begin()
        for _ in range(N):
            cb.dispatch(exe, fn, config, COUNT_4, (buf, buf))
            cb.execution_barrier()
        cb.end()
        t1 = time.perf_counter()
        value[0] += 1
        dev.queue_execute(QueueAffinity.ANY, (), ((sem, value[0]),), cb)
        sem.wait(value[0], 60.0)
        return t1 - t0, time.perf_counter() - t1

    return run


def _report(name: str, run: Callable[[], tuple[float, float]]) -> None:
    _split(name, run)
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    print("\n".join(lines[3:]))


def _replay(dev: Any) -> None:
    from hal_cuda import bench

    from hal_core.replay import Player

    try:
        capture = bench._chain512_capture("cuda://0")
    except Exception as exc:  # no IREE tools or fixture here: say so and go on
        print(f"== replay of chain512: not run ({exc})")
        return
    player = Player(capture, dev)
    player.run("execute")
    cache = dev.backend.graph_cache
    before = (cache.instantiations, cache.updates, cache.node_updates)
    t0 = time.perf_counter()
    runs = 5
    for _ in range(runs):
        player.run("execute")
    per = (time.perf_counter() - t0) / runs / N * 1e6
    after = (cache.instantiations, cache.updates, cache.node_updates)
    print(f"== replay of chain512: {per:.2f} us/dispatch per whole run; over {runs} runs")
    print(f"   instantiations, re-record updates, node updates: {before} -> {after}")
    profiler = cProfile.Profile()
    profiler.enable()
    player.run("execute")
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(22)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    print("\n".join(lines[3:]))
    player.close()


def main() -> int:
    uri = sys.argv[1] if len(sys.argv) > 1 else "cuda://0"
    dev = hal_core.create_device(uri)
    _report("dispatch chain", _dispatch_chain(dev))
    _report("fill4 chain", _fill_chain(dev))
    _split("one-shot chain (record | execute)", _one_shot(dev))
    _replay(dev)
    dev.close()
    os.environ[cuda_api.LAUNCH_ENV] = "bindings"  # read when a device is created
    dev = hal_core.create_device(uri)
    _split("dispatch chain, launches through cuda-bindings", _dispatch_chain(dev))
    dev.close()
    del os.environ[cuda_api.LAUNCH_ENV]
    # The Python submit path (no native lane), for comparison with the lane's figures.
    os.environ["HAL_CUDA_NATIVE"] = "0"  # read when a device is created
    dev = hal_core.create_device(uri)
    _report("dispatch chain, python submit path", _dispatch_chain(dev))
    _report("fill4 chain, python submit path", _fill_chain(dev))
    dev.close()
    from hal_cuda import device as cuda_device

    cuda_device.hot_calls = lambda api: api  # every call through cuda-bindings
    dev = hal_core.create_device(uri)
    _split("dispatch chain, bindings only", _dispatch_chain(dev))
    _split("fill4 chain, bindings only", _fill_chain(dev))
    _split("one-shot chain (record | execute), bindings only", _one_shot(dev))
    dev.close()
    del os.environ["HAL_CUDA_NATIVE"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
