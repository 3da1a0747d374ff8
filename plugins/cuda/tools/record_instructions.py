"""Instructions per dispatch of ``cb.record.unvalidated``'s tax on hal-cuda, over the
stand-in driver (callgrind), where no GPU exists.

The loop is the bench's (``hal_core/bench/command_buffers.py``, ``_record_tax``): record a
512 dispatch+barrier chain of ``negate`` (bindings alternating two tuples) UNVALIDATED |
ONE_SHOT, ``end()``, submit, wait; minus the submit+wait of the same chain prebuilt. Each
phase runs under ``valgrind --tool=callgrind --separate-threads=yes`` twice, with 1 and 4
timed repeats after two warm-ups (the shape is then one recorded before: its shared graph
instance is launched untouched, as in the bench's steady state); the difference over
3 x 512 dispatches is per dispatch. Phases:

* ``record``: the recording calls only (no ``end()``);
* ``end``: record + ``end()``;
* ``dynamic``: record + ``end()`` + submit + wait (the bench's dynamic side);
* ``replay``: submit + wait of the prebuilt chain;

and ``tax`` = dynamic - replay (what the bench reports), all threads together. The
stand-in driver's own calls are Python too, so the figures compare versions of the same
tree, not with a GPU.

Usage (from a source checkout, which has the stand-in driver under tests/; run with the
real interpreter, ``$(python -c "import sys; print(sys.executable)")``, as valgrind does
not follow pyenv's shim):
    python plugins/cuda/tools/record_instructions.py [PHASE ...]
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
PHASES = ("record", "end", "dynamic", "replay")


def _device() -> Any:
    """A cuda://0 device over the stand-in driver (installed as cuda.bindings.driver)."""
    sys.path.insert(0, str(ROOT / "tests" / "plugins" / "cuda"))
    from fake_cuda_driver import FakeDriver  # type: ignore[import-not-found]
    from hal_cuda import cuda_api
    from hal_cuda import driver as cuda_driver

    from hal_core.backend import device_from_backend

    api = FakeDriver()
    package = type(sys)("cuda.bindings")
    package.driver = api  # type: ignore[attr-defined]
    sys.modules["cuda.bindings"] = package
    sys.modules["cuda.bindings.driver"] = api
    cuda_api.reset_for_tests()
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    return device_from_backend(backend, driver_name="cuda", uri="cuda://0")


def _phase(dev: Any, which: str) -> Callable[[], None]:
    """One repetition of ``which`` on ``dev``."""
    from hal_cuda.kernels import CTS_LIBRARY, load_ptx

    from hal_core import (
        BufferParams,
        BufferUsage,
        CommandBufferMode,
        CommandCategory,
        DispatchConfig,
        QueueAffinity,
    )

    any_queue = QueueAffinity.ANY
    exe = dev.create_executable_cache("record").prepare("ptx", load_ptx(CTS_LIBRARY))
    fn = exe.lookup_function("negate")
    params = BufferParams(usage=BufferUsage.DEFAULT | BufferUsage.TRANSFER)
    a = dev.allocator.allocate_buffer(params, 16)
    b = dev.allocator.allocate_buffer(params, 16)
    ab, ba = (a, b), (b, a)
    config = DispatchConfig.static(1)
    mode = CommandBufferMode.UNVALIDATED
    sem = dev.create_semaphore()
    value = [0]

    def record(cb_mode: int, end: bool) -> Any:
        cb = dev.create_command_buffer(cb_mode, CommandCategory.ANY, any_queue, 0)
        cb.begin()
        dispatch = cb.dispatch
        barrier = cb.execution_barrier
        for i in range(N):
            dispatch(exe, fn, config, COUNT_4, ab if i & 1 else ba)
            barrier()
        if end:
            cb.end()
        return cb

    def submit(cb: Any) -> None:
        value[0] += 1
        dev.queue_execute(any_queue, (), ((sem, value[0]),), cb)
        sem.wait(value[0], 60.0)

    one_shot = mode | CommandBufferMode.ONE_SHOT
    if which == "record":
        return lambda: record(one_shot, False) and None
    if which == "end":
        return lambda: record(one_shot, True) and None
    if which == "dynamic":
        return lambda: submit(record(one_shot, True))
    prebuilt = record(mode, True)
    return lambda: submit(prebuilt)


def _child(which: str, repeats: int) -> None:
    dev = _device()
    run = _phase(dev, which)
    run()
    run()
    for _ in range(repeats):
        run()
    dev.close()


def _total(directory: str) -> int:
    """Instructions of every thread of one run."""
    total = 0
    for path in Path(directory).iterdir():
        found = re.search(r"^totals: (\d+)", path.read_text(errors="replace"), re.M)
        if found:
            total += int(found.group(1))
    return total


def _measure(which: str) -> float:
    """Instructions per dispatch of one repetition of ``which``."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    counts = []
    for repeats in (1, 4):
        with tempfile.TemporaryDirectory() as directory:
            subprocess.run(
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
            counts.append(_total(directory))
    return (counts[1] - counts[0]) / (3 * N)


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], int(sys.argv[3]))
        return 0
    wanted = sys.argv[1:] or ["dynamic", "replay"]
    found: dict[str, float] = {}
    for which in wanted:
        if which not in PHASES:
            print(f"unknown phase {which!r}; phases: {', '.join(PHASES)}", file=sys.stderr)
            return 2
        found[which] = _measure(which)
        print(f"{which}: {found[which] / 1000:.2f}k instructions per dispatch", flush=True)
    if "dynamic" in found and "replay" in found:
        print(f"tax (dynamic - replay): {(found['dynamic'] - found['replay']) / 1000:.2f}k")
    return 0


if __name__ == "__main__":
    sys.exit(main())
