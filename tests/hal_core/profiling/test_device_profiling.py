"""Device.profiling_begin/flush/end on the local CPU devices, end to end."""

import json
import threading

import numpy as np
import pytest

import hal_core
import hal_core.profiling
from hal_core import BufferParams
from hal_core.profiling import (
    ChunkFlags,
    CounterSet,
    PerfettoSink,
    ProfileBundleSink,
    ProfilingOptions,
    StatisticsSink,
    read_profile_bundle,
)
from hal_core.profiling import (
    ProfilingDataFamily as F,
)

LOCAL = F.QUEUE_EVENTS | F.HOST_EXECUTION_EVENTS | F.MEMORY_EVENTS | F.EXECUTABLE_METADATA
TIMEOUT = 20.0


@pytest.fixture(params=["local-sync://", "local-task://"])
def device(request):
    with hal_core.create_device(request.param) as d:
        yield d


def run_transfers(device, n=3):
    """fill, update, copy, barrier, host call, alloca + dealloca on queue 0; returns when done."""
    a = device.allocator.allocate_buffer(BufferParams(), 256)
    b = device.allocator.allocate_buffer(BufferParams(), 256)
    sem = device.create_semaphore()
    v = 0
    for _ in range(n):
        device.queue_fill(1, [(sem, v)] if v else [], [(sem, v + 1)], a, 0, 256, b"\x07")
        device.queue_update(
            1, [(sem, v + 1)], [(sem, v + 2)], np.arange(16, dtype=np.uint8), 0, a, 0, 16
        )
        device.queue_copy(1, [(sem, v + 2)], [(sem, v + 3)], a, 0, b, 0, 256)
        device.queue_barrier(1, [(sem, v + 3)], [(sem, v + 4)])
        device.queue_host_call(1, [(sem, v + 4)], [(sem, v + 5)], lambda args, ctx: None)
        t = device.queue_alloca(1, [(sem, v + 5)], [(sem, v + 6)], BufferParams(), 1024)
        device.queue_dealloca(1, [(sem, v + 6)], [(sem, v + 7)], t)
        v += 7
    sem.wait(v, TIMEOUT)
    return b


def test_local_session_counts_every_operation(device):
    stats = StatisticsSink()
    assert device.profiling_begin(ProfilingOptions(LOCAL, sinks=[stats])) is not None
    run_transfers(device, 3)
    device.profiling_end()
    st = stats.statistics()
    (q0,) = [q for q in st.queues if q.queue_ordinal == 0]
    assert q0.op_counts == {
        "FILL": 3,
        "UPDATE": 3,
        "COPY": 3,
        "BARRIER": 3,
        "HOST_CALL": 3,
        "ALLOCA": 3,
        "DEALLOCA": 3,
    }
    assert q0.busy_ns > 0
    mem = st.memory_event_counts
    assert mem["QUEUE_ALLOCA"] == 3 and mem["QUEUE_DEALLOCA"] == 3
    # the default pools' taps: one reservation and one release per alloca/dealloca pair
    assert mem["POOL_RESERVE"] == 3 and mem["POOL_RELEASE"] == 3
    cap = stats.capture
    h = cap.records("host-execution-events")
    assert len(h) == 21 and np.all(h["end_host_time_ns"] >= h["start_host_time_ns"])
    q = cap.records("queue-events")
    # every execution starts after its submission (same queue, same submission id)
    sub = {int(r["submission_id"]): int(r["host_time_ns"]) for r in q}
    assert all(int(r["start_host_time_ns"]) >= sub[int(r["submission_id"])] for r in h)
    assert len(cap.records("clock-correlations")) >= 2
    assert stats.ended and st.status_code == 0


def test_taps_are_removed_when_profiling_is_off(device):
    backend = device.backend
    assert "submit" not in vars(backend) and "_execute" not in vars(backend)
    device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[StatisticsSink()]))
    assert "submit" in vars(backend)
    device.profiling_end()
    assert "submit" not in vars(backend) and "_execute" not in vars(backend)
    assert backend.profiler is None


def test_bad_begin_calls_leave_the_device_usable(device):
    with pytest.raises(hal_core.InvalidArgumentError, match="gives no sink"):
        device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS))
    with pytest.raises(hal_core.UnimplementedError, match="DEVICE_METRICS.*supports QUEUE_EVENTS"):
        device.profiling_begin(
            ProfilingOptions(F.QUEUE_EVENTS | F.DEVICE_METRICS, sinks=[StatisticsSink()])
        )
    with pytest.raises(hal_core.UnimplementedError, match="COUNTER_SAMPLES"):
        device.profiling_begin(
            ProfilingOptions(
                F.COUNTER_SAMPLES,
                sinks=[StatisticsSink()],
                counter_sets=[CounterSet("s", ["SQ_WAVES"])],
            )
        )
    with pytest.raises(hal_core.InvalidArgumentError, match="ProfilingOptions"):
        device.profiling_begin({"families": 1})
    with pytest.raises(
        hal_core.FailedPreconditionError, match="without an active profiling session"
    ):
        device.profiling_flush()
    with pytest.raises(
        hal_core.FailedPreconditionError, match="without an active profiling session"
    ):
        device.profiling_end()
    assert device.profiling_begin(ProfilingOptions(F.NONE, sinks=[StatisticsSink()])) is None
    with pytest.raises(hal_core.FailedPreconditionError):
        device.profiling_end()  # the no-op begin opened nothing
    # after all that, a real session works
    stats = StatisticsSink()
    device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[stats]))
    with pytest.raises(hal_core.FailedPreconditionError, match="already has a profiling session"):
        device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[StatisticsSink()]))
    run_transfers(device, 1)
    device.profiling_end()
    assert sum(q.op_counts.get("FILL", 0) for q in stats.statistics().queues) == 1


def test_failing_sink_still_ends_the_session(device):
    class FailingBegin(StatisticsSink):
        def begin_session(self, metadata):
            raise OSError("cannot open output")

    with pytest.raises(OSError, match="cannot open output"):
        device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[FailingBegin()]))
    assert "submit" not in vars(device.backend)  # detached again
    stats = StatisticsSink()
    device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[stats]))
    device.profiling_end()
    assert stats.ended


def test_small_ring_truncates_queue_events(device):
    stats = StatisticsSink()
    device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[stats], ring_capacity=16))
    sem = device.create_semaphore()
    for i in range(40):
        device.queue_barrier(1, [], [(sem, i + 1)])
    sem.wait(40, TIMEOUT)
    device.profiling_end()
    st = stats.statistics()
    assert st.dropped_records == 24 and st.truncated_chunks == 1


def test_flush_while_submitting_from_threads(device):
    stats = StatisticsSink()
    device.profiling_begin(
        ProfilingOptions(
            F.QUEUE_EVENTS | F.HOST_EXECUTION_EVENTS, sinks=[stats], ring_capacity=1 << 12
        )
    )
    sems = [device.create_semaphore() for _ in range(4)]

    def submit(sem):
        for i in range(150):
            device.queue_barrier(1, [], [(sem, i + 1)])

    threads = [threading.Thread(target=submit, args=(s,)) for s in sems]
    for t in threads:
        t.start()
    flushes = 0
    while any(t.is_alive() for t in threads) and flushes < 5000:
        device.profiling_flush()  # concurrently with the submitters (no sleeps)
        flushes += 1
    for t in threads:
        t.join(TIMEOUT)
    for s in sems:
        s.wait(150, TIMEOUT)
    device.profiling_end()
    cap = stats.capture
    assert len(cap.records("queue-events")) == 600
    assert len(np.unique(cap.records("queue-events")["event_id"])) == 600
    assert len(cap.records("host-execution-events")) == 600


def test_close_ends_the_session():
    stats = StatisticsSink()
    device = hal_core.create_device("local-sync://")
    device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[stats]))
    run_transfers(device, 1)
    device.close()
    assert stats.ended
    assert sum(sum(q.op_counts.values()) for q in stats.statistics().queues) == 7


def test_perfetto_and_bundle_from_local_task(tmp_path):
    trace, bundle = tmp_path / "t.json", tmp_path / "b.halprof"
    with hal_core.create_device("local-task://") as device:
        device.profiling_begin(
            ProfilingOptions(LOCAL, sinks=[PerfettoSink(trace), ProfileBundleSink(bundle)])
        )
        run_transfers(device, 2)
        device.profiling_flush()
        run_transfers(device, 1)
        device.profiling_end()
    ev = json.loads(trace.read_text())["traceEvents"]
    names = {e["args"]["name"] for e in ev if e.get("name") == "thread_name"}
    assert "queue 0" in names
    slices = [e for e in ev if e.get("ph") == "X"]
    assert len(slices) == 21 and {"fill", "copy", "host_call", "alloca"} <= {
        e["name"] for e in slices
    }
    b = read_profile_bundle(bundle)
    assert len(b.records("host-execution-events")) == 21
    assert not any(c.metadata.flags & ChunkFlags.TRUNCATED for c in b.chunks)


def test_failures_carry_their_status(device):
    stats = StatisticsSink()
    device.profiling_begin(ProfilingOptions(F.HOST_EXECUTION_EVENTS, sinks=[stats]))
    sem = device.create_semaphore()
    sem2 = device.create_semaphore()
    gate = device.create_semaphore()

    def fail(args, ctx):
        raise hal_core.DataLossError("boom")

    device.queue_host_call(1, [], [(sem, 1)], fail)
    device.queue_barrier(1, [(gate, 1)], [(sem2, 1)])  # fails through its wait
    gate.fail(hal_core.AbortedError("upstream"))
    with pytest.raises(hal_core.DataLossError):
        sem.wait(1, TIMEOUT)
    with pytest.raises(hal_core.AbortedError):
        sem2.wait(1, TIMEOUT)
    device.profiling_end()
    h = stats.capture.records("host-execution-events")
    by_type = {int(r["type"]): int(r["status_code"]) for r in h}
    assert by_type[int(hal_core.QueueOpKind.HOST_CALL)] == hal_core.StatusCode.DATA_LOSS
    assert by_type[int(hal_core.QueueOpKind.BARRIER)] == hal_core.StatusCode.ABORTED


def test_generic_queue_events_for_backends_without_taps(monkeypatch):
    """hal_core records QUEUE_EVENTS itself for a backend that does not."""
    from hal_local_cpu.device import LocalDeviceBackend

    # a backend with no profiling support of its own
    monkeypatch.setattr(LocalDeviceBackend, "profiling_families", property(lambda self: 0))
    monkeypatch.setattr(LocalDeviceBackend, "profiling_begin", lambda self, session: None)
    monkeypatch.setattr(LocalDeviceBackend, "profiling_end", lambda self, session: None)
    with hal_core.create_device("local-task://") as device:
        assert hal_core.profiling.supported_families(device) == F.QUEUE_EVENTS
        with pytest.raises(hal_core.UnimplementedError, match="HOST_EXECUTION_EVENTS"):
            device.profiling_begin(
                ProfilingOptions(F.QUEUE_EVENTS | F.HOST_EXECUTION_EVENTS, sinks=[StatisticsSink()])
            )
        assert "submit" not in vars(device.backend)  # the failed begin left no tap
        stats = StatisticsSink()
        device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[stats]))
        assert "submit" in vars(device.backend)
        run_transfers(device, 2)
        device.profiling_end()
        assert "submit" not in vars(device.backend)
        assert device._submit == device.backend.submit
    q = stats.capture.records("queue-events")
    assert len(q) == 14 and q["submission_id"].tolist() == list(range(1, 15))
    assert stats.capture.records("host-execution-events").size == 0
