"""Bundle file, statistics reducer and Perfetto exporter over a synthetic session."""

import json

import pytest
from _profiling_support import fill_synthetic, make_session

import hal_core
from hal_core.profiling import (
    BUNDLE_MAGIC,
    CapturedProfile,
    PerfettoSink,
    ProfileBundleSink,
    ProfileStatistics,
    StatisticsSink,
    perfetto_trace,
    read_profile_bundle,
)
from hal_core.profiling import ProfilingDataFamily as F

ALL = (
    F.QUEUE_EVENTS
    | F.HOST_EXECUTION_EVENTS
    | F.DISPATCH_EVENTS
    | F.MEMORY_EVENTS
    | F.EXECUTABLE_METADATA
)


def test_bundle_round_trip_and_replay(tmp_path):
    path = tmp_path / "p.halprof"
    s = make_session(ALL, [ProfileBundleSink(path)])
    fill_synthetic(s, 6)
    s.flush()
    fill_synthetic(s, 2)
    s.end()
    b = read_profile_bundle(path)
    assert b.complete and b.version == 1
    assert len(b.records("dispatch-events")) == 8
    assert len(b.records("queue-events")) == 8
    names = [n for _r, n in b.named_records("executable-functions")]
    assert names == ["matmul", "add"]  # recorded once per session
    stats = StatisticsSink()
    b.replay([stats])
    table = stats.statistics()
    assert {f.name: f.dispatch_count for f in table.functions} == {"matmul": 4, "add": 4}
    assert all(abs(f.mean_ns - 8000) < 1e-6 for f in table.functions)


def test_bundle_reader_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a profile at all, sorry")
    with pytest.raises(hal_core.InvalidArgumentError, match="not a HAL profile bundle"):
        read_profile_bundle(bad)
    path = tmp_path / "p"
    sink = ProfileBundleSink(path)
    s = make_session(F.QUEUE_EVENTS, [sink])
    s.record_queue_event(0, 0, 1, 0, 0)
    s.flush()
    sink.close()  # never ended: file_length stays 0
    with pytest.raises(hal_core.DataLossError, match="never finished"):
        read_profile_bundle(path)
    partial = read_profile_bundle(path, allow_incomplete=True)
    assert not partial.complete and len(partial.records("queue-events")) == 1
    # a finished file cut short
    path2 = tmp_path / "p2"
    s = make_session(F.QUEUE_EVENTS, [ProfileBundleSink(path2)])
    s.record_queue_event(0, 0, 1, 0, 0)
    s.end()
    data = path2.read_bytes()
    assert data.startswith(BUNDLE_MAGIC)
    path2.write_bytes(data[:-16])
    with pytest.raises(hal_core.DataLossError, match="truncated"):
        read_profile_bundle(path2)
    newer = bytearray(data)
    newer[8:12] = (99).to_bytes(4, "little")
    path2.write_bytes(bytes(newer))
    with pytest.raises(hal_core.IncompatibleError, match="version 99"):
        read_profile_bundle(path2)


def test_bundle_sink_misuse(tmp_path):
    sink = ProfileBundleSink(tmp_path / "x")
    from hal_core.profiling import ChunkMetadata

    with pytest.raises(hal_core.FailedPreconditionError, match="outside begin_session"):
        sink.write(ChunkMetadata("application/vnd.iree.hal.profile.queues"), [])
    sink.begin_session(ChunkMetadata("s"))
    with pytest.raises(hal_core.FailedPreconditionError, match="already has an open session"):
        sink.begin_session(ChunkMetadata("s"))
    sink.close()
    sink.close()


def test_statistics_per_queue_counts():
    stats = StatisticsSink()
    s = make_session(ALL, [stats])
    fill_synthetic(s, 5)
    s.end()
    st = stats.statistics()
    per_queue = {q.queue_ordinal: q.op_counts for q in st.queues}
    assert per_queue == {0: {"DISPATCH": 3}, 1: {"DISPATCH": 2}}
    assert st.memory_event_counts == {"QUEUE_ALLOCA": 5}
    text = st.format_table()
    assert "matmul" in text and "DISPATCH=3" in text


def test_perfetto_tracks_and_slices(tmp_path):
    path = tmp_path / "trace.json"
    s = make_session(ALL, [PerfettoSink(path)])
    fill_synthetic(s, 4)
    s.end()
    trace = json.loads(path.read_text())
    ev = trace["traceEvents"]
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in ev if e.get("name") == "thread_name"
    }
    assert {"queue 0", "queue 1"} <= set(threads.values())
    dispatches = [e for e in ev if e.get("cat") == "dispatch"]
    assert sorted(e["name"] for e in dispatches) == ["add", "add", "matmul", "matmul"]
    ops = {
        (e["pid"], e["tid"], e["args"]["submission_id"]): e for e in ev if e.get("cat") == "queue"
    }
    for d in dispatches:
        assert d["ph"] == "X" and d["dur"] == pytest.approx(8.0)
        assert threads[(d["pid"], d["tid"])].startswith("queue")
        # nested inside the operation slice of its queue track
        op = [o for k, o in ops.items() if k[:2] == (d["pid"], d["tid"])]
        assert any(o["ts"] <= d["ts"] and d["ts"] + d["dur"] <= o["ts"] + o["dur"] for o in op)


def test_perfetto_lanes_for_overlapping_ops():
    stats = StatisticsSink()
    s = make_session(F.HOST_EXECUTION_EVENTS, [stats])
    s.record_host_execution(3, 0, 1, 100, 500)
    s.record_host_execution(3, 0, 2, 200, 300)  # nests: same lane
    s.record_host_execution(3, 0, 3, 400, 900)  # overlaps without nesting: new lane
    s.end()
    ev = perfetto_trace(stats.capture)["traceEvents"]
    x = sorted((e["args"]["submission_id"], e["tid"]) for e in ev if e.get("ph") == "X")
    assert x[0][1] != x[2][1]


def test_empty_capture_exports():
    assert perfetto_trace(CapturedProfile())["traceEvents"] == []
    st = ProfileStatistics.from_capture(CapturedProfile())
    assert "no dispatch events" in st.format_table()


def test_perfetto_flows_link_submissions_to_executions():
    stats = StatisticsSink()
    s = make_session(ALL, [stats])
    fill_synthetic(s, 3)
    s.end()
    ev = perfetto_trace(stats.capture)["traceEvents"]
    starts = {e["id"]: e for e in ev if e.get("ph") == "s"}
    ends = {e["id"]: e for e in ev if e.get("ph") == "f"}
    assert len(starts) == 3 and starts.keys() == ends.keys()
    for fid, f in ends.items():
        assert f["bp"] == "e" and f["ts"] >= starts[fid]["ts"]


def test_device_queue_events_use_the_clock_correlations():
    from hal_core.profiling import ClockDomain

    stats = StatisticsSink()
    s = make_session(
        F.DEVICE_QUEUE_EVENTS,
        [stats],
        clock_domain=ClockDomain.DEVICE_TICKS,
        tick_frequency_hz=100_000_000,
    )
    s.record_clock_correlation(1_000, 5_000_000, 5_000_000)  # tick 1000 at host 5 ms
    s.record_clock_correlation(101_000, 6_000_000, 6_000_000)  # 100_000 ticks = 1 ms
    s.record_device_queue_event(4, 1, 7, 11_000, 21_000)  # a fill: 10_000 ticks = 100 us
    s.end()
    ev = perfetto_trace(stats.capture)["traceEvents"]
    (fill,) = [e for e in ev if e.get("cat") == "device-queue"]
    assert fill["name"] == "fill" and fill["dur"] == pytest.approx(100.0)
    names = {e["args"]["name"] for e in ev if e.get("name") == "thread_name"}
    assert "queue 1 device" in names
    start_ns = 5_000_000 + 10_000 * 10  # 10 ns per tick after tick 1000
    assert fill["ts"] == pytest.approx((start_ns - stats.capture.begin_host_time_ns) / 1e3)
