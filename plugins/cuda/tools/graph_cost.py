"""What a CUDA graph costs against stream launches, on a GPU: a chain of N in-place
``negate`` dispatches (a barrier after each) on ``cuda://0``, as

* ``one_shot_new``: record a ONE_SHOT command buffer of a shape never recorded before,
  submit, wait (stream launches);
* ``one_shot_again``: the same for a shape recorded before, with the same buffers (the
  shape's shared instance launched untouched);
* ``one_shot_set``: the same with other buffers each time (every kernel node set);
* ``graph_new``: record a reusable one of a new shape (its graph built with the node API
  and instantiated at ``end()``), submit, wait;
* ``graph_rerecorded``: the same for a shape recorded before (its instance shared);
* ``graph_replay``: submit+wait of a prebuilt reusable one (one ``cuGraphLaunch``);
* ``graph_table``: submit+wait of a prebuilt reusable one whose every dispatch reads a
  binding-table slot, alternating two tables (each has an instance of its own: no update);
* ``graph_table_updates``: the same cycling through more tables than a shape keeps
  instances (every kernel node set per execution);
* ``stream_replay``: submit+wait of the prebuilt one's program as stream launches.

Prints one JSON object: us per dispatch, the median of 7 runs after a warm-up, then the
shared instances' counters. ``one_shot_again - graph_replay`` is the record tax of a
recording whose shape ran before.

Usage: python plugins/cuda/tools/graph_cost.py [N]
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from typing import Any, Callable

from hal_cuda import kernel_graphs
from hal_cuda.kernels import CTS_LIBRARY, load_ptx

import hal_core
from hal_core import (
    BufferBinding,
    BufferParams,
    BufferRef,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    QueueAffinity,
)

ANY = QueueAffinity.ANY
COUNT_4 = (4).to_bytes(4, "little")


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    dev = hal_core.create_device("cuda://0")
    exe = dev.create_executable_cache("cost").prepare("ptx", load_ptx(CTS_LIBRARY))
    fn = exe.lookup_function("negate")
    params = BufferParams(usage=BufferUsage.DEFAULT | BufferUsage.TRANSFER)
    buf = dev.allocator.allocate_buffer(params, 16)
    other = dev.allocator.allocate_buffer(params, 16)
    config = DispatchConfig.static(1)
    sem = dev.create_semaphore()
    value = [0]

    def record(mode: int, slots: bool = False, extra: int = 0, target: Any = None) -> Any:
        cb = dev.create_command_buffer(mode, CommandCategory.ANY, ANY, 1 if slots else 0)
        cb.begin()
        ref = BufferRef.indirect(0) if slots else (target or buf)
        for _ in range(n + extra):
            cb.dispatch(exe, fn, config, COUNT_4, (ref, ref))
            cb.execution_barrier()
        cb.end()
        return cb

    def submit(cb: Any, table: Any = ()) -> None:
        value[0] += 1
        dev.queue_execute(ANY, (), ((sem, value[0]),), cb, table)
        sem.wait(value[0], 60.0)

    def timed(fn: Callable[[], Any]) -> float:
        fn()
        samples = []
        for _ in range(7):
            gc.collect()
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) / n * 1e6

    mode = CommandBufferMode.UNVALIDATED
    one_shot = mode | CommandBufferMode.ONE_SHOT
    out: dict[str, float] = {}
    kernel = dev.backend.graph_cache.kernel
    shapes = [0]

    def new_one_shot() -> None:
        # One more dispatch each time: no recording had this shape.
        shapes[0] += 1
        submit(record(one_shot, extra=shapes[0]))

    out["one_shot_new"] = timed(new_one_shot)
    out["one_shot_again"] = timed(lambda: submit(record(one_shot)))
    others = [dev.allocator.allocate_buffer(params, 16) for _ in range(kernel_graphs.PER_SHAPE + 2)]
    turn = [0]

    def other_buffers() -> None:
        turn[0] += 1
        submit(record(one_shot, target=others[turn[0] % len(others)]))

    out["one_shot_set"] = timed(other_buffers)

    def new_shape() -> None:
        shapes[0] += 1
        submit(record(mode, extra=shapes[0]))

    out["graph_new"] = timed(new_shape)
    out["graph_rerecorded"] = timed(lambda: submit(record(mode)))
    prebuilt = record(mode)
    out["graph_replay"] = timed(lambda: submit(prebuilt))
    tables = ([BufferBinding(buf)], [BufferBinding(other)])
    with_slots = record(mode, slots=True)
    flip = [0]

    def alternate() -> None:
        flip[0] ^= 1
        submit(with_slots, tables[flip[0]])

    out["graph_table"] = timed(alternate)
    many = [
        [BufferBinding(dev.allocator.allocate_buffer(params, 16))]
        for _ in range(kernel_graphs.PER_SHAPE + 2)
    ]

    def cycle() -> None:
        flip[0] += 1
        submit(with_slots, many[flip[0] % len(many)])

    out["graph_table_updates"] = timed(cycle)
    program = prebuilt.program
    graph, program.graph = program.graph, None
    out["stream_replay"] = timed(lambda: submit(prebuilt))
    program.graph = graph
    out["instantiations"] = kernel.instantiations
    out["untouched"] = kernel.untouched
    out["node_sets"] = kernel.node_sets
    print(json.dumps({k: round(v, 3) for k, v in out.items()}))
    dev.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
