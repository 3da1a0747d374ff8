"""Instructions per op of hal-cuda's single-op chains over the stand-in driver, per thread
(callgrind), where no GPU exists: ``dispatch`` (dispatch.direct's chain: 512
``queue_dispatch`` of ``negate``, each waiting on the previous value), ``fill``
(edge.fill4's: 512 4-byte fills alternating two queues, each waiting on the previous one)
and ``edge`` (edge.e2e's barriers). Each chain runs under ``valgrind --tool=callgrind
--separate-threads=yes`` twice, with 1 and 4 timed repeats after two warm-ups; the
difference over 3 x 512 ops is printed per thread that ran Python: the submitting thread
and the device's completion thread (the first thread the process starts; OpenBLAS's
threads are turned off so no other thread comes first). The stand-in driver's own calls
are Python too, so the figures compare versions of the same tree, not with a GPU.

``--null-driver``: the stream-work calls (event record and query, stream waits, memsets,
copies, launches) go to C functions that do nothing, through the same routes as on a GPU
(``cuda_api.HotCalls`` over a ``ctypes.PyDLL`` for the Python path, function pointers for
the native lane), so the figures are the HAL's own cost per op without the stand-in's
Python in them; the rest of the stand-in stays. ``HAL_CUDA_NATIVE=0`` in the environment
measures the Python submit path instead of the native lane.

Usage (from a source checkout, which has the stand-in driver under tests/):
    python plugins/cuda/tools/chain_instructions.py [--null-driver] [dispatch] [fill] [edge]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

N = 512
ROOT = Path(__file__).resolve().parents[3]
COUNT_4 = (4).to_bytes(4, "little")


def _device() -> Any:
    """A cuda://0 device over the stand-in driver (installed as cuda.bindings.driver)."""
    sys.path.insert(0, str(ROOT / "tests" / "plugins" / "cuda"))
    from fake_cuda_driver import FakeDriver  # type: ignore[import-not-found]
    from hal_cuda import cuda_api
    from hal_cuda import driver as cuda_driver

    from hal_core.backend import device_from_backend

    null = os.environ.get(NULL_ENV)
    if null:
        import ctypes

        from hal_cuda import device as cuda_device
        from hal_cuda import native_lane

        library = ctypes.PyDLL(null)
        table = tuple(
            ctypes.cast(getattr(library, symbol), ctypes.c_void_p).value or 0
            for _name, symbol, _types in native_lane._DRIVER
        )
        cuda_device.hot_calls = lambda api: cuda_api.HotCalls(api, library)  # type: ignore[attr-defined]
        native_lane.driver_table = lambda api: (table, library)  # type: ignore[assignment]
    api = FakeDriver()
    package = type(sys)("cuda.bindings")
    package.driver = api  # type: ignore[attr-defined]
    sys.modules["cuda.bindings"] = package
    sys.modules["cuda.bindings.driver"] = api
    cuda_api.reset_for_tests()
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    return device_from_backend(backend, driver_name="cuda", uri="cuda://0")


def _chain(dev: Any, which: str) -> Callable[[], None]:
    from hal_cuda.kernels import CTS_LIBRARY, load_ptx

    from hal_core import BufferParams, BufferUsage, DispatchConfig

    usage = BufferUsage.DEFAULT | BufferUsage.TRANSFER
    if which == "dispatch":
        exe = dev.create_executable_cache("chain").prepare("ptx", load_ptx(CTS_LIBRARY))
        fn = exe.lookup_function("negate")
        buf = dev.allocator.allocate_buffer(BufferParams(usage=usage), 16)
        config = DispatchConfig.static(1)
        sem = dev.create_semaphore()
        value = [0]

        def dispatches() -> None:
            v = value[0]
            dispatch = dev.queue_dispatch
            for _ in range(N):
                dispatch(1, ((sem, v),), ((sem, v + 1),), exe, fn, config, COUNT_4, (buf, buf))
                v += 1
            sem.wait(v, 60.0)
            value[0] = v

        return dispatches
    target = dev.allocator.allocate_buffer(BufferParams(usage=usage), 4 * N)

    def edges() -> None:
        head = dev.create_semaphore(1)
        sems = [dev.create_semaphore() for _ in range(N)]
        prev = (head, 1)
        for i in range(N):
            sig = (sems[i], 1)
            if which == "fill":
                dev.queue_fill(2 if i & 1 else 1, (prev,), (sig,), target, 4 * i, 4, b"\1\2\3\4")
            else:
                dev.queue_barrier(2 if i & 1 else 1, (prev,), (sig,))
            prev = sig
        sems[-1].wait(1, 60.0)

    return edges


def _child(which: str, repeats: int) -> None:
    """Run ``which`` twice untimed, then ``repeats`` times; print the threads' names in
    the order they started (callgrind numbers threads the same way, from 1)."""
    import threading

    dev = _device()
    run = _chain(dev, which)
    run()
    run()
    for _ in range(repeats):
        run()
    print("threads:", ",".join(t.name for t in threading.enumerate()), file=sys.stderr)
    dev.close()


def _totals(directory: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for path in Path(directory).iterdir():
        text = path.read_text(errors="replace")
        thread = re.search(r"^thread: (\d+)", text, re.M)
        total = re.search(r"^totals: (\d+)", text, re.M)
        if thread and total:
            out[int(thread.group(1))] = int(total.group(1))
    return out


def _measure(which: str) -> None:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    counts = []
    names: list[str] = []
    for repeats in (1, 4):
        with tempfile.TemporaryDirectory() as directory:
            result = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--separate-threads=yes",
                    f"--callgrind-out-file={directory}/cg",
                    sys.executable,
                    __file__,
                    "--child",
                    which,
                    str(repeats),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            counts.append(_totals(directory))
        found = re.search(r"^threads: (.*)$", result.stderr, re.M)
        names = found.group(1).split(",") if found else []
    print(f"== {which}: instructions per op, by thread")
    for thread in sorted(counts[1]):
        per_op = (counts[1][thread] - counts[0].get(thread, 0)) / (3 * N)
        if per_op > 100:
            name = names[thread - 1] if thread - 1 < len(names) else "?"
            print(f"   {name}: {per_op / 1000:.1f}k")


NULL_ENV = "HAL_CUDA_CHAIN_NULL_DRIVER"
_NULL_SYMBOLS = (
    "cuEventRecord cuEventQuery cuStreamWaitEvent cuMemsetD8Async cuMemsetD16Async "
    "cuMemsetD32Async cuMemcpyAsync cuMemcpyHtoDAsync_v2 cuLaunchKernel"
).split()


def _null_driver(directory: str) -> str:
    """Build the do-nothing driver functions (each returns CUDA_SUCCESS) with ``cc``."""
    source = Path(directory) / "null_cuda.c"
    source.write_text("".join(f"int {name}(void) {{ return 0; }}\n" for name in _NULL_SYMBOLS))
    library = str(Path(directory) / "libnullcuda.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", library, str(source)], check=True)
    return library


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], int(sys.argv[3]))
        return 0
    args = sys.argv[1:]
    if "--null-driver" in args:
        args.remove("--null-driver")
        directory = tempfile.mkdtemp()
        os.environ[NULL_ENV] = _null_driver(directory)
    for which in args or ["dispatch", "fill", "edge"]:
        _measure(which)
    return 0


if __name__ == "__main__":
    sys.exit(main())
