"""Profiling sessions as context managers (``with device.profiling_begin(...) as s:``
ends the session on exit, also when the block raises) and kernel names in profiles
whenever dispatch events are captured, without asking for EXECUTABLE_METADATA too: in the
statistics reducer, the Perfetto export and ``hal profile summary``."""

import json
import subprocess
import sys

import pytest
from hal_local_cpu.kernels import python_module

import hal_core as hal
from hal_core import CommandCategory, DispatchConfig, QueueAffinity
from hal_core.profiling import (
    PerfettoSink,
    ProfileBundleSink,
    ProfilingOptions,
    ProfilingSession,
    StatisticsSink,
)
from hal_core.profiling import ProfilingDataFamily as F

ANY = QueueAffinity.ANY
TIMEOUT = 20.0


@pytest.fixture(params=["local-task://", "local-sync://"])
def device(request):
    with hal.create_device(request.param) as d:
        yield d


def _noop(device, exe, sem, value):
    device.queue_dispatch(ANY, [], [(sem, value)], exe, "noop", DispatchConfig.static(1))
    sem.wait(value, TIMEOUT)


def _exe(device):
    return device.create_executable_cache("ctx").prepare(
        "local-cpu-python", python_module("cts_kernels")
    )


class _FailingEnd(StatisticsSink):
    def end_session(self, metadata, status_code):
        super().end_session(metadata, status_code)
        raise hal.DataLossError("sink could not finish its file")


def test_with_block_ends_the_session(device):
    exe = _exe(device)
    stats = StatisticsSink()
    with device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[stats])) as s:
        assert isinstance(s, ProfilingSession) and "active" in repr(s)
        _noop(device, exe, device.create_semaphore(), 1)
    assert "ended" in repr(s)
    with pytest.raises(hal.FailedPreconditionError):
        device.profiling_end()  # nothing left to end
    assert [(f.name, f.dispatch_count) for f in stats.statistics().functions] == [("noop", 1)]
    # a new session can begin at once
    with device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[StatisticsSink()])):
        pass


def test_block_that_raises_still_ends_the_session(device):
    exe = _exe(device)
    stats = StatisticsSink()
    with pytest.raises(KeyError, match="from the block"):
        with device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[stats])):
            _noop(device, exe, device.create_semaphore(), 1)
            raise KeyError("from the block")
    assert stats.ended and len(stats.statistics().functions) == 1
    with pytest.raises(hal.FailedPreconditionError):
        device.profiling_flush()


def test_explicit_end_or_close_inside_the_block(device):
    with device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[StatisticsSink()])):
        device.profiling_end()  # leaving the block then has nothing to end
    # a later session is not ended by an earlier session's block
    first = device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[StatisticsSink()]))
    device.profiling_end()
    second = device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[StatisticsSink()]))
    with first:
        pass
    assert "active" in repr(second)
    with second:
        device.close()  # closing the device ends its session
    assert "ended" in repr(second)


def test_end_error_raised_when_the_block_succeeded(device):
    sink = _FailingEnd()
    with pytest.raises(hal.DataLossError, match="could not finish"):
        with device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[sink])):
            pass
    with pytest.raises(hal.FailedPreconditionError):
        device.profiling_end()  # the session was released anyway


def test_block_error_wins_over_end_error(device, monkeypatch):
    reports = []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)
    with pytest.raises(KeyError):
        with device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[_FailingEnd()])):
            raise KeyError("block")
    assert len(reports) == 1 and isinstance(reports[0].exc_value, hal.DataLossError)
    with pytest.raises(hal.FailedPreconditionError):
        device.profiling_end()


def test_session_repr_is_short():
    with hal.create_device("local-task://") as device:
        all_families = F.QUEUE_EVENTS | F.HOST_EXECUTION_EVENTS | F.DISPATCH_EVENTS
        all_families |= F.MEMORY_EVENTS | F.EXECUTABLE_METADATA
        s = device.profiling_begin(ProfilingOptions(all_families, sinks=[StatisticsSink()]))
        text = repr(s)
        assert text.startswith("<ProfilingSession") and len(text) < 120 and "active" in text
        device.profiling_end()
        assert "ended" in repr(s)


def test_dispatch_events_alone_name_kernels(device, tmp_path):
    """Without EXECUTABLE_METADATA in the request, dispatch events are still named."""
    exe = _exe(device)
    stats = StatisticsSink()
    trace = tmp_path / "trace.json"
    bundle = tmp_path / "run.halprof"
    sinks = [stats, PerfettoSink(str(trace)), ProfileBundleSink(str(bundle))]
    cb = device.create_command_buffer(0, CommandCategory.ANY, ANY, 0)
    cb.begin()
    cb.dispatch(exe, exe.lookup_function("noop"), DispatchConfig.static(1))
    cb.end()
    with device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=sinks)):
        sem = device.create_semaphore()
        _noop(device, exe, sem, 1)
        device.queue_execute(ANY, [(sem, 1)], [(sem, 2)], cb)
        sem.wait(2, TIMEOUT)
    assert {f.name: f.dispatch_count for f in stats.statistics().functions} == {"noop": 2}
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(1 for e in events if e.get("name") == "noop" and e.get("ph") == "X") == 2
    out = subprocess.run(
        [sys.executable, "-m", "hal_core", "profile", "summary", str(bundle), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert [(f["name"], f["dispatch_count"]) for f in summary["functions"]] == [("noop", 2)]


def test_amdgpu_soft_dispatch_events_name_builtin_kernels():
    pytest.importorskip("hal_amdgpu")
    try:
        device = hal.create_device("amdgpu://?hsa=soft")
    except hal.HalError as exc:
        pytest.skip(f"software HSA agent unavailable: {exc}")
    with device:
        stats = StatisticsSink()
        with device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[stats])):
            sem = device.create_semaphore()
            buf = device.allocator.allocate_buffer(None, 256)
            device.queue_fill(1, [], [(sem, 1)], buf, 0, 256, b"\1")
            sem.wait(1, TIMEOUT)
    names = [f.name for f in stats.statistics().functions]
    assert names and all(not n.startswith("executable") for n in names), names


@pytest.mark.parametrize("uri", ["local-task://", "local-sync://", "amdgpu://0?hsa=soft"])
def test_closing_a_device_ends_its_open_session(uri):
    # The backend's profiling end reads device state that its close releases (on amdgpu
    # the HSA runtime itself): closing a device with a session open ends the session
    # first, and the session's records reach its sink.
    stats = StatisticsSink()
    device = hal.create_device(uri)
    device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[stats]))
    sem = device.create_semaphore(0)
    buf = device.allocator.allocate_buffer(4096)
    device.queue_fill(ANY, [], [(sem, 1)], buf, 0, 4096, b"\x01")
    sem.wait(1, TIMEOUT)
    device.close()
    assert device.closed
    counts = [q.op_counts for q in stats.statistics().queues]
    assert any(c.get("FILL") for c in counts), counts
