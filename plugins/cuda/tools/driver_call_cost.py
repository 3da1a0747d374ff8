"""Per-call cost of the CUDA driver API from Python: NVIDIA's cuda-bindings against a ctypes
call of the same function, on the hot-path calls hal-cuda makes (event record, async
memset, kernel launch, stream query). Needs a GPU. Prints one JSON object (ns per call,
the median of 7 repeats of N calls each).

Usage: python plugins/cuda/tools/driver_call_cost.py [N]
"""

from __future__ import annotations

import ctypes
import json
import statistics
import sys
import time
from typing import Any, Callable

from hal_cuda.cuda_api import check, driver_api
from hal_cuda.kernels import load_ptx


def _time(fn: Callable[[], Any], n: int) -> float:
    best = []
    for _ in range(7):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best.append((time.perf_counter_ns() - t0) / n)
    return statistics.median(best)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    cu = driver_api()
    dev = check(cu.cuDeviceGet(0), "cuDeviceGet")
    ctx = check(cu.cuDevicePrimaryCtxRetain(dev), "retain")
    check(cu.cuCtxSetCurrent(ctx), "set")
    stream = check(cu.cuStreamCreate(1), "stream")
    event = check(cu.cuEventCreate(2), "event")
    mem = int(check(cu.cuMemAlloc(1 << 20), "alloc"))
    module = check(cu.cuModuleLoadData(load_ptx("cts_kernels")), "load")
    noop = check(cu.cuModuleGetFunction(module, b"noop"), "fn")

    lib = ctypes.CDLL("libcuda.so.1")
    h_stream = ctypes.c_void_p(int(stream))
    h_event = ctypes.c_void_p(int(event))
    h_noop = ctypes.c_void_p(int(noop))
    lib.cuEventRecord.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.cuStreamQuery.argtypes = [ctypes.c_void_p]
    lib.cuMemsetD32Async.argtypes = [
        ctypes.c_uint64,
        ctypes.c_uint,
        ctypes.c_size_t,
        ctypes.c_void_p,
    ]
    lib.cuLaunchKernel.argtypes = (
        [ctypes.c_void_p]
        + [ctypes.c_uint] * 7
        + [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
    )
    rec, query = lib.cuEventRecord, lib.cuStreamQuery
    memset, launch = lib.cuMemsetD32Async, lib.cuLaunchKernel

    def sync() -> None:
        check(cu.cuStreamSynchronize(stream), "sync")

    results: dict[str, float] = {}
    cases = {
        "cuEventRecord": (lambda: cu.cuEventRecord(event, stream), lambda: rec(h_event, h_stream)),
        "cuStreamQuery": (lambda: cu.cuStreamQuery(stream), lambda: query(h_stream)),
        "cuMemsetD32Async": (
            lambda: cu.cuMemsetD32Async(mem, 7, 16, stream),
            lambda: memset(mem, 7, 16, h_stream),
        ),
        "cuLaunchKernel(noop)": (
            lambda: cu.cuLaunchKernel(noop, 1, 1, 1, 1, 1, 1, 0, stream, 0, 0),
            lambda: launch(h_noop, 1, 1, 1, 1, 1, 1, 0, h_stream, None, None),
        ),
    }
    for name, (binding, raw) in cases.items():
        results[f"{name} cuda-bindings ns"] = _time(binding, n)
        sync()
        results[f"{name} ctypes ns"] = _time(raw, n)
        sync()
    print(json.dumps({k: round(v, 1) for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
