"""amdgpu profiling over the software HSA agent: dispatch ticks from per-dispatch
completion signals (soft agent clock), clock correlations, queue/memory events, taps
removed at end, and the Perfetto file of ``hal profile``."""

import json
import time

import pytest

import hal_core
from hal_core.cli.main import main
from hal_core.profiling import ProfilingDataFamily as F
from hal_core.profiling import ProfilingOptions, StatisticsSink, supported_families

URI = "amdgpu://?hsa=soft"
TIMEOUT = 10
FAMILIES = (F.QUEUE_EVENTS | F.DISPATCH_EVENTS | F.MEMORY_EVENTS | F.EXECUTABLE_METADATA
            | F.HOST_EXECUTION_EVENTS)


@pytest.fixture
def device():
    dev = hal_core.create_device(URI)
    yield dev
    dev.close()


def _fills(device, sem, start, n, queue=0):
    buf = device.allocator.allocate_buffer(None, 256)
    for i in range(start, start + n):
        device.queue_fill(1 << queue, [], [(sem, i)], buf, 0, 256, bytes([i & 0xFF]))
    sem.wait(start + n - 1, TIMEOUT)
    return buf


def test_families_and_clock(device):
    assert supported_families(device) & FAMILIES == FAMILIES
    domain, freq = device.backend.profiling_clock
    assert int(domain) == 1 and freq == 1_000_000_000  # soft agent TIMESTAMP_FREQUENCY


def test_dispatch_ticks_from_completion_signals(device):
    qset = device.backend._host_queue_set or device.backend._create_host_queues()
    stats = StatisticsSink()
    t_begin = time.monotonic_ns()
    assert device.profiling_begin(ProfilingOptions(FAMILIES, sinks=[stats])) is not None
    q0 = qset.queues[0]
    assert q0.profiler is not None and "submit" in vars(qset)
    sem = device.create_semaphore(0)
    _fills(device, sem, 1, 8)
    device.profiling_end()
    t_end = time.monotonic_ns()
    # taps gone: the plain class code runs again, and later work still runs
    assert "profiler" not in vars(q0) and "submit" not in vars(qset) and q0.profiler is None
    _fills(device, sem, 9, 2)
    cap = stats.capture
    d = cap.records("dispatch-events")
    assert len(d) == 8
    # ticks from the soft agent's clock (monotonic ns at 1 GHz), ordered, within the session
    assert all(t_begin <= int(r["start_tick"]) <= int(r["end_tick"]) <= t_end for r in d)
    starts = [int(r["start_tick"]) for r in d]
    assert starts == sorted(starts)
    q = cap.records("queue-events")
    assert len(q) == 8 and {int(r["submission_id"]) for r in q} == {
        int(r["submission_id"]) for r in d}
    assert len(cap.records("clock-correlations")) >= 2
    fns = stats.statistics().functions
    assert sum(f.dispatch_count for f in fns) == 8
    assert cap.records("executables") is not None


def test_nested_begin_fails_and_session_still_works(device):
    stats = StatisticsSink()
    device.profiling_begin(ProfilingOptions(FAMILIES, sinks=[stats]))
    with pytest.raises(hal_core.FailedPreconditionError):
        device.profiling_begin(ProfilingOptions(FAMILIES, sinks=[StatisticsSink()]))
    sem = device.create_semaphore(0)
    _fills(device, sem, 1, 3, queue=1)
    device.profiling_end()
    assert len(stats.capture.records("dispatch-events")) == 3


def test_failed_dispatch_keeps_state_consistent(device):
    """A device fault while profiled: the signal fails, profiling_end still releases the
    taps, and the profiler's signals of the failed queue are destroyed."""
    stats = StatisticsSink()
    device.profiling_begin(ProfilingOptions(FAMILIES, sinks=[stats]))
    runtime = device.backend.hsa.lib
    runtime.inject_fault()
    sem = device.create_semaphore(0)
    buf = device.allocator.allocate_buffer(None, 256)
    device.queue_fill(1, [], [(sem, 1)], buf, 0, 256, b"\x01")
    with pytest.raises(hal_core.HalError):
        sem.wait(1, TIMEOUT)
    device.profiling_end()
    prof = device.backend._host_queue_set.queues[0]
    assert "profiler" not in vars(prof)


def test_hal_profile_perfetto_tracks_and_dispatch_slices(tmp_path, capsys):
    out = tmp_path / "amd.json"
    rc = main(["profile", "--device", URI, "--format", "perfetto", "-o", str(out), "--",
               "edge.fill4"])
    assert rc == 0, capsys.readouterr().err
    ev = json.loads(out.read_text())["traceEvents"]
    tracks = {e["args"]["name"] for e in ev if e.get("name") == "thread_name"}
    assert {"queue 0", "queue 1"} <= tracks
    slices = [e for e in ev if e.get("ph") == "X" and e.get("cat") == "dispatch"]
    assert len(slices) >= 512 and all(e["dur"] >= 0 for e in slices)
