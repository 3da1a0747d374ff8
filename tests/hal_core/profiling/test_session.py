"""Sessions: rings, truncation of aggregate streams, failure of precise ones, sink order."""

import threading

import numpy as np
import pytest
from _profiling_support import fill_synthetic, make_session

import hal_core
from hal_core.profiling import ChunkFlags, MetricDescriptor, MetricUnit, decode_records
from hal_core.profiling import ProfilingDataFamily as F


def test_sinks_get_nothing_until_flush(recording_sink):
    s = make_session(F.QUEUE_EVENTS | F.DISPATCH_EVENTS | F.EXECUTABLE_METADATA, [recording_sink])
    fill_synthetic(s)
    assert [c[0] for c in recording_sink.calls] == ["begin"]
    s.flush()
    (w,) = recording_sink.writes("queue-events")
    recs, _ = decode_records(w[1].content_type, w[2])
    assert len(recs) == 4 and list(recs["submission_id"]) == [1, 2, 3, 4]
    assert len(recording_sink.writes("dispatch-events")) == 1
    assert recording_sink.writes("executable-functions")
    # families not requested produce nothing
    assert not recording_sink.writes("memory-events")
    assert not recording_sink.writes("host-execution-events")
    s.end()
    assert recording_sink.calls[-1][0] == "end" and recording_sink.calls[-1][2] == 0


def test_event_ids_are_unique_across_threads(recording_sink):
    s = make_session(F.QUEUE_EVENTS, [recording_sink], ring_capacity=1 << 14)

    def produce():
        for i in range(1000):
            s.record_queue_event(0, 0, i, 0, 0)

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    s.end()
    (w,) = recording_sink.writes("queue-events")
    ids = decode_records(w[1].content_type, w[2])[0]["event_id"]
    assert len(ids) == 4000 and len(np.unique(ids)) == 4000


def test_aggregate_ring_drops_and_marks_truncated(recording_sink):
    s = make_session(F.QUEUE_EVENTS, [recording_sink], ring_capacity=16)
    for i in range(20):
        s.record_queue_event(0, 0, i, 0, 0)
    s.flush()  # no error: aggregate streams may drop
    (w,) = recording_sink.writes("queue-events")
    assert w[1].flags & ChunkFlags.TRUNCATED and w[1].dropped_record_count == 4
    # the ring is empty again and keeps working
    s.record_queue_event(0, 0, 99, 0, 0)
    s.end()
    last = recording_sink.writes("queue-events")[-1]
    assert not last[1].flags & ChunkFlags.TRUNCATED


def test_precise_ring_overflow_fails_session(recording_sink):
    s = make_session(F.DISPATCH_EVENTS, [recording_sink], ring_capacity=16)
    for i in range(17):
        s.record_dispatch(0, i, 0, 1, 0, 0, (1, 1, 1), (1, 1, 1), i, i + 1)
    with pytest.raises(hal_core.ResourceExhaustedError, match="ring_capacity=16.*cannot drop"):
        s.flush()
    with pytest.raises(hal_core.ResourceExhaustedError):
        s.end()
    end = recording_sink.calls[-1]
    assert end[0] == "end" and end[2] == hal_core.StatusCode.RESOURCE_EXHAUSTED


def test_end_reaches_every_sink_when_one_fails(recording_sink):
    class Broken:
        def begin_session(self, m):
            pass

        def write(self, m, p):
            raise RuntimeError("disk full")

        def end_session(self, m, status):
            raise RuntimeError("disk full")

    s = make_session(F.QUEUE_EVENTS, [Broken(), recording_sink])
    s.record_queue_event(0, 0, 1, 0, 0)
    with pytest.raises(RuntimeError, match="disk full"):
        s.end()
    assert recording_sink.calls[-1][0] == "end"


def test_metric_sources_are_sampled_at_flush(recording_sink):
    class Source:
        source_id = 5
        name = "fake.metrics"
        source_class = 1

        def __init__(self):
            self.n = 0

        def descriptors(self):
            return [MetricDescriptor(3, "temperature.edge", MetricUnit.MILLIDEGREES_CELSIUS)]

        def sample(self):
            self.n += 1
            return [3], [40_000 + self.n]

    s = make_session(F.DEVICE_METRICS, [recording_sink])
    src = Source()
    s.add_metric_source(src)
    s.flush()
    s.end()
    samples = []
    for w in recording_sink.writes("device-metric-samples"):
        _recs, tails = decode_records(w[1].content_type, w[2])
        samples += [int(t["value"][0]) for t in tails]
    assert samples == [40_001, 40_002, 40_003]
    assert recording_sink.writes("device-metric-descriptors")
