"""Property: whatever a session captured comes back from the bundle file unchanged."""

import tempfile

import numpy as np
from _profiling_support import make_session
from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core.profiling import ProfileBundleSink, StatisticsSink, read_profile_bundle
from hal_core.profiling import ProfilingDataFamily as F

u32 = st.integers(0, 2**32 - 1)
u48 = st.integers(0, 2**48)
queue_event = st.tuples(st.integers(0, 10), st.integers(0, 3), u48, u32, u32, u48)
memory_event = st.tuples(st.integers(0, 11), st.integers(0, 3), u48, u48)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.lists(queue_event, max_size=20), min_size=1, max_size=4),
    st.lists(memory_event, max_size=20),
    st.sampled_from([16, 64]),
)
def test_bundle_round_trip(batches, memory, capacity):
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/p.halprof"
        stats = StatisticsSink()
        s = make_session(
            F.QUEUE_EVENTS | F.MEMORY_EVENTS,
            [ProfileBundleSink(path), stats],
            ring_capacity=capacity,
            queue_count=4,
        )
        kept = []
        for batch in batches:  # a flush between batches
            for op_type, queue, sub, waits, signals, length in batch:
                s.record_queue_event(op_type, queue, sub, waits, signals, length)
            kept += batch[:capacity]
            s.flush()
        for ev_type, queue, alloc, length in memory:
            s.record_memory_event(ev_type, queue, alloc, length)
        s.end()
        b = read_profile_bundle(path)
        q = b.records("queue-events")
        got = list(
            zip(
                q["type"].tolist(),
                q["queue_ordinal"].tolist(),
                q["submission_id"].tolist(),
                q["wait_count"].tolist(),
                q["signal_count"].tolist(),
                q["payload_length"].tolist(),
            )
        )
        assert got == kept
        assert len(np.unique(q["event_id"])) == len(q)
        dropped = sum(max(0, len(batch) - capacity) for batch in batches) + max(
            0, len(memory) - capacity
        )
        assert sum(c.metadata.dropped_record_count for c in b.chunks) == dropped
        m = b.records("memory-events")
        assert m["allocation_id"].tolist() == [a for _t, _q, a, _l in memory][:capacity]
        # the in-memory reducer saw exactly what the file holds
        assert sum(sum(x.op_counts.values()) for x in stats.statistics().queues) == len(q)
