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
FAMILIES = (
    F.QUEUE_EVENTS
    | F.DISPATCH_EVENTS
    | F.MEMORY_EVENTS
    | F.EXECUTABLE_METADATA
    | F.HOST_EXECUTION_EVENTS
)


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
        int(r["submission_id"]) for r in d
    }
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
    profiling = device.backend.__dict__.get("_profiling")
    assert profiling is not None
    qp = profiling.queues[0]
    device.profiling_end()
    queue = device.backend._host_queue_set.queues[0]
    assert "profiler" not in vars(queue)
    # the failed queue never retires the epoch: its profiling signals were released at end
    assert qp.retired and not qp.pending and not qp.all_signals
    assert len(stats.capture.records("dispatch-events")) == 0
    assert stats.ended


def test_command_buffer_dispatches_each_get_ticks(device):
    """A recorded program of several builtin dispatches with a barrier between them: one
    dispatch event per dispatch packet, command indices in order, one command buffer id."""
    from hal_core import CommandBufferMode, MemoryAccess

    bufs = [device.allocator.allocate_buffer(None, 256) for _ in range(3)]
    cb = device.create_command_buffer(CommandBufferMode.DEFAULT)
    cb.begin()
    cb.fill_buffer(bufs[0], b"\x11")
    cb.fill_buffer(bufs[1], b"\x22")
    cb.execution_barrier()
    cb.copy_buffer(bufs[0], bufs[2])
    cb.end()
    stats = StatisticsSink()
    device.profiling_begin(ProfilingOptions(FAMILIES, sinks=[stats]))
    sem = device.create_semaphore(0)
    for v in (1, 2):
        device.queue_execute(1, [], [(sem, v)], cb)
    sem.wait(2, TIMEOUT)
    # read back through a queue_write into a memory file: a host action (host-execution event)
    out = bytearray(256)
    file = device.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    device.queue_write(1, [], [(sem, 3)], bufs[2], 0, file, 0, 256)
    sem.wait(3, TIMEOUT)
    file.close()
    device.profiling_end()
    assert bytes(out) == b"\x11" * 256
    h = stats.capture.records("host-execution-events")
    assert len(h) == 1 and int(h[0]["end_host_time_ns"]) >= int(h[0]["start_host_time_ns"])
    d = stats.capture.records("dispatch-events")
    assert len(d) == 6
    assert len({int(r["command_buffer_id"]) for r in d}) == 1
    for sub in {int(r["submission_id"]) for r in d}:
        rows = [r for r in d if int(r["submission_id"]) == sub]
        assert [int(r["command_index"]) for r in rows] == sorted(
            int(r["command_index"]) for r in rows
        )
        # the copy after the barrier starts after both fills ended
        assert int(rows[2]["start_tick"]) >= max(int(r["end_tick"]) for r in rows[:2])


def test_counter_samples_with_ranges_fail_at_begin_and_nothing_is_installed(device):
    """Both program the same hardware counters: an unsupported combination is UNIMPLEMENTED
    naming both, before any library is loaded or tap installed."""
    from hal_core.profiling import CounterSet

    qset = device.backend._host_queue_set or device.backend._create_host_queues()
    with pytest.raises(hal_core.UnimplementedError, match="COUNTER_SAMPLES and COUNTER_RANGES"):
        device.profiling_begin(
            ProfilingOptions(
                F.COUNTER_SAMPLES | F.COUNTER_RANGES | F.DEVICE_QUEUE_EVENTS,
                sinks=[StatisticsSink()],
                counter_sets=[CounterSet("s", ("SQ_WAVES",))],
            )
        )
    assert "submit" not in vars(qset) and all(q.profiler is None for q in qset.queues)
    assert device.backend.hsa.lib.queue_for(qset.queues[0]._queue).profiling_enabled is False


def test_hal_profile_perfetto_tracks_and_dispatch_slices(tmp_path, capsys):
    out = tmp_path / "amd.json"
    rc = main(
        ["profile", "--device", URI, "--format", "perfetto", "-o", str(out), "--", "edge.fill4"]
    )
    assert rc == 0, capsys.readouterr().err
    ev = json.loads(out.read_text())["traceEvents"]
    tracks = {e["args"]["name"] for e in ev if e.get("name") == "thread_name"}
    assert {"queue 0", "queue 1"} <= tracks
    slices = [e for e in ev if e.get("ph") == "X" and e.get("cat") == "dispatch"]
    assert len(slices) >= 512 and all(e["dur"] >= 0 for e in slices)


def test_counters_without_aqlprofile_are_unavailable_and_nothing_starts(monkeypatch):
    from hal_core.profiling import CounterSet

    monkeypatch.delenv("HAL_AMDGPU_LIBAQLPROFILE_PATH", raising=False)
    with hal_core.create_device("amdgpu://?hsa=soft") as device:
        with pytest.raises(hal_core.UnavailableError, match="aqlprofile.*Looked for"):
            device.profiling_begin(
                ProfilingOptions(
                    data_families=F.COUNTER_SAMPLES,
                    sinks=[StatisticsSink()],
                    counter_sets=[CounterSet("s", ("SQ_WAVES",))],
                )
            )
        # traces and ranges need the library as well
        for family, extra in (
            (F.EXECUTABLE_TRACES, {}),
            (F.COUNTER_RANGES, {"counter_sets": [CounterSet("s", ("SQ_WAVES",))]}),
        ):
            with pytest.raises(hal_core.UnavailableError, match="aqlprofile.*Looked for"):
                device.profiling_begin(
                    ProfilingOptions(data_families=family, sinks=[StatisticsSink()], **extra)
                )
        # Nothing was left half-started: a supported session still begins and ends.
        session = device.profiling_begin(
            ProfilingOptions(data_families=F.QUEUE_EVENTS, sinks=[StatisticsSink()])
        )
        assert session is not None
        device.profiling_end()


def test_every_family_is_advertised():
    """Each family is produced on every amdgpu target (device queue events by PM4
    timestamps or completion-signal timestamps, counters and traces through aqlprofile),
    so ``begin`` reports all of them."""
    for target in ("gfx1100", "gfx90a"):
        with hal_core.create_device(f"amdgpu://?hsa=soft&soft_gpus={target}") as device:
            supported = supported_families(device)
            for family in F:
                if family is not F.NONE:
                    assert supported & family, (target, family)
