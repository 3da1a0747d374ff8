"""Where ``cb.replay.cuda``'s time goes, on a GPU: the same 512 ``noop`` kernels as a
graph launched and synchronised through the raw driver (no HAL), in two shapes, against
hal-cuda's submit+wait of the prebuilt command buffer:

* ``raw_parallel``: 512 independent kernel nodes (``cb.replay``'s recording has no
  barrier), ``cuGraphLaunch`` + ``cuStreamSynchronize``;
* ``raw_chain``: the same nodes each depending on the one before (a barrier after each);
  ``raw_width4`` / ``raw_width16``: node i depending on node i - 4 / i - 16;
  ``raw_chain_event_blocking`` / ``_spin``: ``raw_chain`` synchronised on an event recorded
  after the launch, created with / without ``CU_EVENT_BLOCKING_SYNC`` (hal-cuda's
  completion thread sleeps on blocking-sync events);
* ``hal_parallel`` / ``hal_chain``: hal-cuda's ``queue_execute`` + ``Semaphore.wait`` of
  the prebuilt command buffer of each shape.

``hal_* - raw_*`` is what the HAL adds per submission (spread over 512 dispatches).
Prints one JSON object, us per dispatch, the median of 15 runs after a warm-up.

Usage: python plugins/cuda/tools/replay_floor.py [N]
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from typing import Any, Callable

from cuda.bindings import driver as cu
from hal_cuda.kernels import CTS_LIBRARY, load_ptx

import hal_core
from hal_core import CommandCategory, DispatchConfig, QueueAffinity


def _ok(result: Any) -> Any:
    err = result[0] if isinstance(result, tuple) else result
    if int(err):
        raise RuntimeError(f"CUDA error {err}")
    return result[1] if isinstance(result, tuple) and len(result) == 2 else result


def _median(n: int, run: Callable[[], None]) -> float:
    run()
    samples = []
    gc.disable()
    try:
        for _ in range(15):
            t0 = time.perf_counter()
            run()
            samples.append((time.perf_counter() - t0) / n * 1e6)
    finally:
        gc.enable()
    return statistics.median(samples)


def _raw(n: int, width: int, event_flags: int | None = None) -> float:
    """Raw launch+sync of ``n`` noop nodes, node i depending on node i - ``width`` (0:
    none), synchronised on the stream, or (``event_flags``) on an event of those flags."""
    module = _ok(cu.cuModuleLoadData(load_ptx(CTS_LIBRARY)))
    fn = _ok(cu.cuModuleGetFunction(module, b"noop"))
    stream = _ok(cu.cuStreamCreate(1))
    graph = _ok(cu.cuGraphCreate(0))
    p = cu.CUDA_KERNEL_NODE_PARAMS()
    p.func = fn
    p.gridDimX = p.gridDimY = p.gridDimZ = 1
    p.blockDimX = p.blockDimY = p.blockDimZ = 1
    p.sharedMemBytes = 0
    p.kernelParams = 0
    nodes: list[Any] = []
    for i in range(n):
        previous = [nodes[i - width]] if width and i >= width else []
        nodes.append(_ok(cu.cuGraphAddKernelNode(graph, previous, len(previous), p)))
    graph_exec = _ok(cu.cuGraphInstantiate(graph, 0))
    event = None if event_flags is None else _ok(cu.cuEventCreate(event_flags))

    def run() -> None:
        _ok(cu.cuGraphLaunch(graph_exec, stream))
        if event is None:
            _ok(cu.cuStreamSynchronize(stream))
        else:
            _ok(cu.cuEventRecord(event, stream))
            _ok(cu.cuEventSynchronize(event))

    return _median(n, run)


def _hal(dev: Any, exe: Any, n: int, chain: bool) -> float:
    fn = exe.lookup_function("noop")
    config = DispatchConfig.static(1)
    cb = dev.create_command_buffer(0, CommandCategory.DISPATCH, QueueAffinity.ANY, 0)
    cb.begin()
    for _ in range(n):
        cb.dispatch(exe, fn, config, b"", ())
        if chain:
            cb.execution_barrier()
    cb.end()
    sem = dev.create_semaphore()
    value = [0]

    def run() -> None:
        value[0] += 1
        dev.queue_execute(QueueAffinity.ANY, (), ((sem, value[0]),), cb)
        sem.wait(value[0], 60.0)

    return _median(n, run)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    dev = hal_core.create_device("cuda://0")
    exe = dev.create_executable_cache("floor").prepare("ptx", load_ptx(CTS_LIBRARY))
    out = {
        "hal_parallel": _hal(dev, exe, n, False),
        "raw_parallel": _raw(n, 0),
        "raw_width4": _raw(n, 4),
        "raw_width16": _raw(n, 16),
        "hal_chain": _hal(dev, exe, n, True),
        "raw_chain": _raw(n, 1),
        "raw_chain_event_blocking": _raw(n, 1, 3),
        "raw_chain_event_spin": _raw(n, 1, 2),
    }
    dev.close()
    # The same HAL chain with completion events that spin instead of sleeping (an
    # experiment: the device's event pool made without CU_EVENT_BLOCKING_SYNC).
    from hal_cuda import device as cuda_device

    blocking = cuda_device.EventPool

    class SpinningEvents(blocking):  # type: ignore[misc, valid-type]
        def __init__(self, ctx: Any, flags: int = 2) -> None:
            super().__init__(ctx, flags)

    cuda_device.EventPool = SpinningEvents
    try:
        dev = hal_core.create_device("cuda://0")
        exe = dev.create_executable_cache("floor").prepare("ptx", load_ptx(CTS_LIBRARY))
        out["hal_chain_spin_events"] = _hal(dev, exe, n, True)
        dev.close()
    finally:
        cuda_device.EventPool = blocking
    print(json.dumps({k: round(v, 3) for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
