"""QUEUE_EVENTS and HOST_EXECUTION_EVENTS on the cuda driver (``hal_cuda.host_spans``)
over the stand-in driver: one host-execution record per operation of every kind, made
before the op's signals publish, with the op's epoch as submission id (matching its
queue event), its status and the thread it ran on; host calls timed around their
callback (blocking, NON_BLOCKING, deferred, failing); no tap installed outside a session;
a logical device over two GPUs taps every member."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hal_cuda import cuda_api
from hal_cuda import driver as cuda_driver

import hal_core
from hal_core import (
    BufferParams,
    BufferUsage,
    HostCallFlags,
    MemoryAccess,
    QueueOpKind,
    StatusCode,
)
from hal_core.backend import device_from_backend
from hal_core.profiling import (
    ProfilingDataFamily,
    ProfilingOptions,
    StatisticsSink,
    host_time_ns,
    supported_families,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fake_cuda_driver import FakeDriver  # noqa: E402
from fake_cuda_peers import FakePeerDriver  # noqa: E402

F = ProfilingDataFamily
K = QueueOpKind
TIMEOUT = 10.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
TAPPED = ("submit", "_enqueue", "_run_host_side", "_run_pool_op", "_run_host_call", "_complete")


def _install(monkeypatch: Any, api: Any) -> None:
    """``api`` as cuda.bindings.driver, no context or loaded driver remembered (all put
    back afterwards), and the default unraisablehook."""
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    package = type(sys)("cuda.bindings")
    package.driver = api  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda.bindings", package)
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", api)
    monkeypatch.setattr(cuda_driver, "_contexts", {})
    monkeypatch.setattr(cuda_api, "_api", None)
    monkeypatch.setattr(cuda_api, "_load_error", None)


def _open(path: str, params: dict[str, str]) -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path(path, params)
    return device_from_backend(backend, driver_name="cuda", uri=f"cuda://{path}")


@pytest.fixture(params=["pools", "stream"])
def dev(request: Any, monkeypatch: Any) -> Any:
    """One stand-in GPU with either alloca mode (the default unraisablehook)."""
    _install(monkeypatch, FakeDriver())
    device = _open("0", {"alloca": request.param})
    yield device
    device.close()


def _session(dev: Any, families: F = F.QUEUE_EVENTS | F.HOST_EXECUTION_EVENTS) -> Any:
    sink = StatisticsSink()
    dev.profiling_begin(ProfilingOptions(families, sinks=[sink]))
    return sink


def _records(sink: Any) -> tuple[Any, Any]:
    return (
        sink.capture.records("host-execution-events"),
        sink.capture.records("queue-events"),
    )


def test_families_are_advertised_and_taps_exist_only_during_a_session(dev: Any) -> None:
    assert supported_families(dev) & (F.QUEUE_EVENTS | F.HOST_EXECUTION_EVENTS)
    backend = dev.backend
    before = {name: vars(backend).get(name) for name in TAPPED}
    _session(dev, F.DISPATCH_EVENTS)
    assert {name: vars(backend).get(name) for name in TAPPED} == before
    dev.profiling_end()
    _session(dev)
    assert all(vars(backend).get(name) is not before[name] for name in TAPPED)
    dev.profiling_end()
    # the device's own methods (or the alloca=stream routes) are back
    assert {name: vars(backend).get(name) for name in TAPPED} == before


def test_one_record_per_operation_of_every_kind(dev: Any, tmp_path: Path) -> None:
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 4096)
    other = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 4096)
    data = bytearray(4096)
    file = dev.import_file(data, MemoryAccess.READ | MemoryAccess.WRITE)
    sink = _session(dev)
    s = dev.create_semaphore(0)
    dev.queue_fill(1, [], [(s, 1)], buf, 0, 4096, b"\x01")
    dev.queue_update(1, [(s, 1)], [(s, 2)], np.ones(16, np.uint8), 0, buf, 0, 16)
    dev.queue_copy(1, [(s, 2)], [(s, 3)], buf, 0, other, 0, 4096)
    dev.queue_write(1, [(s, 3)], [(s, 4)], other, 0, file, 0, 4096)
    dev.queue_read(1, [(s, 4)], [(s, 5)], file, 0, buf, 0, 4096)
    dev.queue_barrier(1, [(s, 5)], [(s, 6)])
    dev.queue_host_call(1, [(s, 6)], [(s, 7)], lambda args, ctx: None, (1, 2, 3, 4))
    t = dev.queue_alloca(1, [(s, 7)], [(s, 8)], BufferParams(), 1024)
    dev.queue_dealloca(1, [(s, 8)], [(s, 9)], t)
    s.wait(9, TIMEOUT)
    dev.profiling_end()
    file.close()
    h, q = _records(sink)
    kinds = [K.FILL, K.UPDATE, K.COPY, K.WRITE, K.READ, K.BARRIER, K.HOST_CALL]
    kinds += [K.ALLOCA, K.DEALLOCA]
    assert sorted(int(k) for k in h["type"]) == sorted(int(k) for k in kinds)
    assert sorted(int(k) for k in q["type"]) == sorted(int(k) for k in kinds)
    submitted = {int(r["submission_id"]): int(r["host_time_ns"]) for r in q}
    assert len(submitted) == len(q)
    for r in h:
        assert int(r["queue_ordinal"]) == 0 and int(r["status_code"]) == 0
        assert int(r["start_host_time_ns"]) >= submitted[int(r["submission_id"])]
        assert int(r["end_host_time_ns"]) >= int(r["start_host_time_ns"])
        assert int(r["thread_id"]) > 0
    by_kind = {int(r["type"]): r for r in h}
    for kind in (K.FILL, K.COPY, K.WRITE, K.READ):
        assert int(by_kind[int(kind)]["payload_length"]) == 4096
    barrier = by_kind[int(K.BARRIER)]  # no host execution: a zero-length span
    assert int(barrier["start_host_time_ns"]) == int(barrier["end_host_time_ns"])
    # the chain ran in order: each span starts after the previous one ended
    order = np.argsort(h["start_host_time_ns"], kind="stable")
    assert np.all(h["start_host_time_ns"][order][1:] >= h["end_host_time_ns"][order][:-1])


def test_host_call_spans_cover_the_callback(dev: Any) -> None:
    inside: dict[str, tuple[int, int]] = {}
    later: list[threading.Thread] = []

    def callback(name: str, result: Any = None) -> Any:
        def fn(args: tuple, context: Any) -> Any:
            t0 = host_time_ns()
            total = sum(range(20_000))  # some host work to time
            inside[name] = (t0, host_time_ns() + 0 * total)
            if result is StatusCode.DEFERRED:
                helper = threading.Thread(target=context.signal)
                helper.start()
                later.append(helper)
            if isinstance(result, BaseException):
                raise result
            return result

        return fn

    sink = _session(dev)
    s = dev.create_semaphore(0)
    dev.queue_host_call(1, [], [(s, 1)], callback("blocking"))
    dev.queue_host_call(
        1, [(s, 1)], [(s, 2)], callback("non_blocking"), flags=HostCallFlags.NON_BLOCKING
    )
    dev.queue_host_call(1, [(s, 2)], [(s, 3)], callback("deferred", StatusCode.DEFERRED))
    failing = dev.create_semaphore(0)
    error = hal_core.DataLossError("lost")
    dev.queue_host_call(1, [(s, 3)], [(failing, 1)], callback("failing", error))
    # The last call runs on the same worker after the others' callbacks returned (and
    # their spans were recorded), and its own record precedes its signal.
    with pytest.raises(hal_core.DataLossError):
        failing.wait(1, TIMEOUT)
    for helper in later:
        helper.join()
    dev.profiling_end()
    h, _q = _records(sink)
    assert len(h) == 4 and set(int(t) for t in h["type"]) == {int(K.HOST_CALL)}
    spans = sorted(
        (int(r["start_host_time_ns"]), int(r["end_host_time_ns"]), int(r["status_code"])) for r in h
    )
    names = sorted(inside, key=lambda n: inside[n][0])
    for (start, end, status), name in zip(spans, names):
        t0, t1 = inside[name]
        assert start <= t0 <= t1 <= end, name
        assert status == (int(StatusCode.DATA_LOSS) if name == "failing" else 0), name


def test_the_record_exists_as_soon_as_the_signal_is_seen(dev: Any) -> None:
    """A waiter ending the session right after its wait finds the op's record: it is made
    before the signals publish (the ops complete on the device's threads)."""
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 256)
    for i in range(30):
        sink = _session(dev)
        gate = dev.create_semaphore(0)
        done = dev.create_semaphore(0)
        dev.queue_fill(1, [(gate, 1)], [(done, 1)], buf, 0, 256, bytes([i]))
        threading.Thread(target=gate.signal, args=(1,)).start()
        done.wait(1, TIMEOUT)
        dev.profiling_end()
        h, _q = _records(sink)
        assert len(h) == 1 and int(h["type"][0]) == int(K.FILL)


def test_a_failed_wait_is_a_zero_length_record_with_its_status(dev: Any) -> None:
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 256)
    sink = _session(dev)
    bad = dev.create_semaphore(0)
    done = dev.create_semaphore(0)
    dev.queue_fill(1, [(bad, 1)], [(done, 1)], buf, 0, 256, b"\x02")
    bad.fail(StatusCode.ABORTED, "producer aborted")
    with pytest.raises(hal_core.AbortedError):
        done.wait(1, TIMEOUT)
    dev.profiling_end()
    h, _q = _records(sink)
    assert len(h) == 1 and int(h["status_code"][0]) == int(StatusCode.ABORTED)
    assert int(h["start_host_time_ns"][0]) == int(h["end_host_time_ns"][0])


def test_logical_device_taps_every_member(monkeypatch: Any) -> None:
    _install(monkeypatch, FakePeerDriver(gpus=2))
    device = _open("", {"queues": "1"})
    try:
        assert supported_families(device) == F.QUEUE_EVENTS | F.HOST_EXECUTION_EVENTS
        buf = device.allocator.allocate_buffer(BufferParams(usage=USAGE), 256)
        sink = _session(device)
        s = device.create_semaphore(0)
        device.queue_fill(0b01, [], [(s, 1)], buf, 0, 256, b"\x01")
        device.queue_fill(0b10, [(s, 1)], [(s, 2)], buf, 0, 256, b"\x02")
        device.queue_barrier(0b10, [(s, 2)], [(s, 3)])
        s.wait(3, TIMEOUT)
        device.profiling_end()
        h, q = _records(sink)
        assert sorted(int(x) for x in h["queue_ordinal"]) == [0, 1, 1]
        assert len(q) == 3
        for member in device.backend.members:
            assert not any(name in vars(member) for name in TAPPED)
    finally:
        device.close()
