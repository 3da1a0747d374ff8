"""``cuda://0?alloca=stream`` on a real NVIDIA GPU: queue_alloca / queue_dealloca through
CUDA's stream-ordered allocator (results across queues, chains without host waits,
exhaustion with nothing leaked, dropped buffers given back), HOST_EXECUTION_EVENTS next
to DISPATCH_EVENTS, and the CTS's alloca, transient-buffer and profiling suites on the
option. Skipped where no GPU is usable; ``plugins/cuda/tools/gpu_check.sh`` runs these
on the GPU machine."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

import hal_core
from hal_core import BufferParams, BufferUsage, MemoryAccess, MemoryType, StatusCode
from hal_core.backend import buffer_storage
from hal_core.profiling import ProfilingDataFamily, ProfilingOptions, StatisticsSink

TIMEOUT = 30.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
Q0, Q1 = 0b01, 0b10


def _open() -> Any:
    try:
        return hal_core.create_device("cuda://0?alloca=stream")
    except hal_core.UnavailableError as exc:
        pytest.skip(f"no usable NVIDIA GPU here: {exc}", allow_module_level=True)


DEVICE = _open()


@pytest.fixture
def dev(monkeypatch: Any) -> Any:
    """The device, with the default unraisablehook (its threads must not leak errors)."""
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    return DEVICE


def _read(dev: Any, buf: Any, length: int) -> bytes:
    out = bytearray(length)
    file = dev.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    s = dev.create_semaphore(0)
    dev.queue_write(Q0, (), [(s, 1)], buf, 0, file, 0, length)
    s.wait(1, TIMEOUT)
    file.close()
    return bytes(out)


def _drain(dev: Any) -> None:
    """Two fills on queue 0, each waited for: the completion thread has then let go of
    every op completed before them (it drops a batch before it takes the next)."""
    scratch = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 256)
    s = dev.create_semaphore(0)
    for value in (1, 2):
        dev.queue_fill(Q0, [], [(s, value)], scratch, 0, 256, b"\x00")
        s.wait(value, TIMEOUT)


def _pool_used(dev: Any, what: str = "USED") -> int:
    """Bytes of the device's CUDA pool in use (``what="RESERVED"``: held from the GPU),
    after the GPU finished its work."""
    backend = dev.backend
    api = backend.ctx.api
    backend.ctx.make_current()
    assert not api.cuCtxSynchronize()[0]
    pool = backend.stream_allocas.pool
    attr = getattr(api.CUmemPool_attribute, f"CU_MEMPOOL_ATTR_{what}_MEM_CURRENT")
    err, value = api.cuMemPoolGetAttribute(pool, attr)
    assert not err
    return int(value)


def test_alloca_fill_copy_across_queues_then_dealloca_on_the_other(dev: Any) -> None:
    used = _pool_used(dev)
    s = dev.create_semaphore(0)
    buf = dev.queue_alloca(Q0, [], [(s, 1)], BufferParams(usage=USAGE), 1 << 20)
    assert isinstance(buffer_storage(buf).address, int)
    out = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 1 << 20)
    # the fill on queue 1 waits on the alloca's signal on the device
    dev.queue_fill(Q1, [(s, 1)], [(s, 2)], buf, 0, 1 << 20, b"\xa5\x5a\x0f\xf0")
    dev.queue_copy(Q1, [(s, 2)], [(s, 3)], buf, 0, out, 0, 1 << 20)
    dev.queue_dealloca(Q1, [(s, 3)], [(s, 4)], buf)
    s.wait(4, TIMEOUT)
    assert _read(dev, out, 1 << 20) == b"\xa5\x5a\x0f\xf0" * (1 << 18)
    assert buf.is_decommitted and _pool_used(dev) == used


def test_chains_without_host_waits_over_both_queues(dev: Any) -> None:
    chains = 64
    results = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), chains * 16)
    last = []
    for i in range(chains):
        queue = Q0 if i % 2 else Q1
        a, f, c, d = (dev.create_semaphore(0) for _ in range(4))
        buf = dev.queue_alloca(queue, (), [(a, 1)], BufferParams(usage=USAGE), 4096)
        dev.queue_fill(queue, [(a, 1)], [(f, 1)], buf, 0, 4096, bytes([i]))
        dev.queue_copy(queue, [(f, 1)], [(c, 1)], buf, 0, results, 16 * i, 16)
        # dealloca on the other queue: ordered after the alloca's stream
        dev.queue_dealloca(queue ^ 0b11, [(c, 1)], [(d, 1)], buf)
        last.append(d)
    hal_core.wait_all([(d, 1) for d in last], TIMEOUT)
    assert _read(dev, results, chains * 16) == b"".join(bytes([i]) * 16 for i in range(chains))


def test_exhaustion_is_resource_exhausted_with_nothing_leaked(dev: Any) -> None:
    api = dev.backend.ctx.api
    dev.backend.ctx.make_current()
    err, free, total = api.cuMemGetInfo()
    assert not err
    size = min(int(free) + (256 << 20), int(total))  # more than the GPU has free
    used = _pool_used(dev)
    s = dev.create_semaphore(0)
    with pytest.raises(hal_core.ResourceExhaustedError):
        dev.queue_alloca(Q0, [], [(s, 1)], BufferParams(), size)
    gate = dev.create_semaphore(0)
    late = dev.queue_alloca(Q0, [(gate, 1)], [(s, 1)], BufferParams(), size)
    gate.signal(1)
    with pytest.raises(hal_core.ResourceExhaustedError):
        s.wait(1, TIMEOUT)
    assert not late.is_committed and _pool_used(dev) == used
    # a pool that cannot grow gives back what it reserved trying (other processes, and
    # later devices of this one, need that memory)
    assert _pool_used(dev, "RESERVED") <= used + (64 << 20)
    # the device still works
    ok = dev.create_semaphore(0)
    buf = dev.queue_alloca(Q0, [], [(ok, 1)], BufferParams(usage=USAGE), 4096)
    dev.queue_fill(Q0, [(ok, 1)], [(ok, 2)], buf, 0, 4096, b"\x11")
    dev.queue_dealloca(Q0, [(ok, 2)], [(ok, 3)], buf)
    ok.wait(3, TIMEOUT)


def test_dropped_buffer_gives_its_memory_back(dev: Any) -> None:
    used = _pool_used(dev)
    s = dev.create_semaphore(0)
    buf = dev.queue_alloca(Q0, [], [(s, 1)], BufferParams(usage=USAGE), 8 << 20)
    s.wait(1, TIMEOUT)
    assert _pool_used(dev) >= used + (8 << 20)
    _drain(dev)
    del buf
    gc.collect()
    assert _pool_used(dev) == used


def test_alignment_and_host_memory(dev: Any) -> None:
    s = dev.create_semaphore(0)
    with pytest.raises(hal_core.InvalidArgumentError, match="alignment"):
        dev.queue_alloca(Q0, [], [(s, 1)], BufferParams(min_alignment=1 << 20), 64)
    host = dev.queue_alloca(
        Q0, [], [(s, 1)], BufferParams(type=MemoryType.HOST_LOCAL, usage=USAGE), 256
    )
    s.wait(1, TIMEOUT)
    assert buffer_storage(host).host_array is not None  # hal_core's pinned host pool
    dev.queue_dealloca(Q0, [(s, 1)], [(s, 2)], host)
    s.wait(2, TIMEOUT)


def test_host_execution_and_dispatch_events_together(dev: Any) -> None:
    from hal_cuda.kernels import load_ptx

    exe = dev.create_executable_cache("test").prepare("ptx", load_ptx("cts_kernels"))
    fn = exe.lookup_function("negate")
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    families = (
        ProfilingDataFamily.QUEUE_EVENTS
        | ProfilingDataFamily.HOST_EXECUTION_EVENTS
        | ProfilingDataFamily.DISPATCH_EVENTS
    )
    sink = StatisticsSink()
    dev.profiling_begin(ProfilingOptions(families, sinks=[sink]))
    s = dev.create_semaphore(0)
    dev.queue_update(Q0, [], [(s, 1)], np.ones(4, np.float32).view(np.uint8), 0, buf, 0, 16)
    config = hal_core.DispatchConfig.static(1)
    count = (4).to_bytes(4, "little")
    dev.queue_dispatch(Q0, [(s, 1)], [(s, 2)], exe, fn, config, count, (buf, buf))
    dev.queue_host_call(Q0, [(s, 2)], [(s, 3)], lambda args, ctx: None)
    s.wait(3, TIMEOUT)
    dev.profiling_end()
    h = sink.capture.records("host-execution-events")
    d = sink.capture.records("dispatch-events")
    q = sink.capture.records("queue-events")
    assert len(h) == 3 and len(q) == 3 and len(d) == 1
    assert all(int(r["status_code"]) == int(StatusCode.OK) for r in h)
    ids = {int(r["submission_id"]) for r in q}
    assert {int(r["submission_id"]) for r in h} == ids
    assert int(d["submission_id"][0]) in ids


CTS = textwrap.dedent(
    """
    import sys, pytest
    sys.exit(pytest.main([
        "-q", "-x", "--tb=short", "-p", "no:cacheprovider", "--pyargs", "hal_core.cts",
        "--hal-device", "cuda://0?alloca=stream",
        "-k", "queue_alloca or transient_buffer or profiling",
    ]))
    """
)


def test_cts_alloca_suites_on_the_stream_ordered_allocator() -> None:
    run = subprocess.run([sys.executable, "-c", CTS], capture_output=True, text=True, timeout=120)
    tail = (run.stdout + run.stderr)[-3000:]
    assert run.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail
