"""Dispatch events on the local CPU devices: one per dispatch, timed on the host clock,
named through executable metadata, filtered by the capture filter."""

import json

import numpy as np
import pytest
from hal_local_cpu.executable_native import replay_available
from hal_local_cpu.kernels import native_library, python_module

import hal_core as hal
from hal_core import CommandCategory, DispatchConfig, QueueAffinity
from hal_core.profiling import (
    CaptureFilter,
    PerfettoSink,
    ProfilingOptions,
    StatisticsSink,
)
from hal_core.profiling import ProfilingDataFamily as F

ANY = QueueAffinity.ANY
TIMEOUT = 20.0
FAMILIES = F.QUEUE_EVENTS | F.HOST_EXECUTION_EVENTS | F.DISPATCH_EVENTS | F.EXECUTABLE_METADATA


@pytest.fixture(params=["local-task://", "local-sync://"])
def device(request):
    with hal.create_device(request.param) as d:
        yield d


@pytest.fixture(params=["python", "native"])
def exe(request, device):
    cache = device.create_executable_cache("profiling")
    if request.param == "native":
        if not replay_available():
            pytest.skip("no C compiler for native kernels")
        return cache.prepare("local-cpu-native", native_library("cts_kernels"))
    return cache.prepare("local-cpu-python", python_module("cts_kernels"))


def _buf(device, n):
    params = hal.BufferParams(usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.MAPPING)
    return device.allocator.allocate_buffer(params, n)


def _program(device, exe, out):
    cb = device.create_command_buffer(0, CommandCategory.ANY, ANY, 0)
    cb.begin()
    cb.fill_buffer(out, b"\0\0\0\0")  # a transfer record between the dispatches' records
    ids = exe.lookup_function("write_workgroup_ids")
    cb.dispatch(exe, ids, DispatchConfig.static(64), b"", [out])
    cb.execution_barrier()
    cb.dispatch(exe, exe.lookup_function("noop"), DispatchConfig.static(1))
    cb.dispatch(exe, exe.lookup_function("noop"), DispatchConfig.static(2))
    cb.end()
    return cb


def test_dispatch_events_per_dispatch(device, exe):
    out = _buf(device, 4 * 64)
    cb = _program(device, exe, out)
    stats = StatisticsSink()
    device.profiling_begin(ProfilingOptions(FAMILIES, sinks=[stats]))
    sem = device.create_semaphore()
    for i in range(3):
        device.queue_execute(ANY, [(sem, i)] if i else [], [(sem, i + 1)], cb)
    device.queue_dispatch(ANY, [(sem, 3)], [(sem, 4)], exe, "noop", DispatchConfig.static(1))
    sem.wait(4, TIMEOUT)
    device.profiling_end()
    # profiled execution computes the same results
    assert np.frombuffer(out.read(), np.uint32).tolist() == list(range(64))
    st = stats.statistics()
    counts = {f.name: f.dispatch_count for f in st.functions}
    assert counts == {"write_workgroup_ids": 3, "noop": 7}
    d = stats.capture.records("dispatch-events")
    assert len(d) == 10 and np.all(d["end_tick"] >= d["start_tick"])
    ids = d[d["function_ordinal"] == d["function_ordinal"][0]]
    assert list(ids["workgroup_count"][0]) == [64, 1, 1]
    assert len(set(d["command_buffer_id"][:9].tolist())) == 1 and d["command_buffer_id"][9] == 0
    # each dispatch lies inside the host execution of its submission
    h = stats.capture.records("host-execution-events")
    spans = {
        int(r["submission_id"]): (int(r["start_host_time_ns"]), int(r["end_host_time_ns"]))
        for r in h
    }
    for r in d:
        start, end = spans[int(r["submission_id"])]
        assert start <= int(r["start_tick"]) <= int(r["end_tick"]) <= end
    assert {n for n in stats.capture.function_names.values()} >= {"noop", "write_workgroup_ids"}


def test_capture_filter_limits_dispatch_events(device, exe):
    cb = _program(device, exe, _buf(device, 4 * 64))
    stats = StatisticsSink()
    device.profiling_begin(
        ProfilingOptions(
            FAMILIES, sinks=[stats], capture_filter=CaptureFilter.of(function_pattern="write_*")
        )
    )
    sem = device.create_semaphore()
    device.queue_execute(ANY, [], [(sem, 1)], cb)
    sem.wait(1, TIMEOUT)
    device.profiling_end()
    assert {f.name: f.dispatch_count for f in stats.statistics().functions} == {
        "write_workgroup_ids": 1
    }


def test_dispatch_ring_overflow_fails_the_session(device, exe):
    cb = _program(device, exe, _buf(device, 4 * 64))
    stats = StatisticsSink()
    device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[stats], ring_capacity=16))
    sem = device.create_semaphore()
    for i in range(6):  # 18 dispatches > 16
        device.queue_execute(ANY, [(sem, i)] if i else [], [(sem, i + 1)], cb)
    sem.wait(6, TIMEOUT)
    with pytest.raises(hal.ResourceExhaustedError, match="dispatch-events overflowed"):
        device.profiling_end()
    assert stats.ended and stats.capture.status_code == hal.StatusCode.RESOURCE_EXHAUSTED
    # the device is fine and profiling can start again
    device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[StatisticsSink()]))
    device.profiling_end()
    assert device.backend._handlers[hal.QueueOpKind.EXECUTE] == device.backend._run_program


def test_perfetto_dispatch_slices(tmp_path, exe, device):
    path = tmp_path / "trace.json"
    cb = _program(device, exe, _buf(device, 4 * 64))
    device.profiling_begin(ProfilingOptions(FAMILIES, sinks=[PerfettoSink(path)]))
    sem = device.create_semaphore()
    device.queue_execute(ANY, [], [(sem, 1)], cb)
    sem.wait(1, TIMEOUT)
    device.profiling_end()
    ev = json.loads(path.read_text())["traceEvents"]
    slices = [e for e in ev if e.get("cat") == "dispatch"]
    assert sorted(e["name"] for e in slices) == ["noop", "noop", "write_workgroup_ids"]
    (execute,) = [e for e in ev if e.get("cat") == "queue" and e["name"] == "execute"]
    for s in slices:
        assert s["tid"] == execute["tid"]
        assert (
            execute["ts"] <= s["ts"] and s["ts"] + s["dur"] <= execute["ts"] + execute["dur"] + 1e-3
        )
