"""Record layouts: pack/decode round trips, forward compatibility, corrupt payloads."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core
from hal_core.profiling import (
    CONTENT_TYPE_PREFIX,
    SCHEMAS,
    decode_records,
    pack_records,
    schema_for,
)


def test_content_types_use_iree_names():
    kinds = {s.kind for s in SCHEMAS.values()}
    for kind in (
        "queue-events",
        "dispatch-events",
        "memory-events",
        "clock-correlations",
        "executables",
        "executable-functions",
        "counter-sets",
        "counters",
        "counter-samples",
        "device-metric-sources",
        "device-metric-descriptors",
        "device-metric-samples",
        "executable-traces",
        "host-execution-events",
    ):
        assert kind in kinds
        assert schema_for(kind).content_type == CONTENT_TYPE_PREFIX + kind
    for s in SCHEMAS.values():
        assert s.dtype.names[0] == "record_length"
        assert s.dtype.itemsize % 4 == 0


def test_fixed_round_trip():
    s = schema_for("dispatch-events")
    rows = [(0, 1, 7, 3, 0, 9, 2, 4, (8, 1, 1), (64, 1, 1), 100, 250)]
    recs, tails = decode_records(s.content_type, pack_records(s, rows))
    assert tails is None
    assert int(recs[0]["end_tick"]) == 250
    assert list(recs[0]["workgroup_count"]) == [8, 1, 1]
    assert int(recs[0]["record_length"]) == s.dtype.itemsize


def test_newer_longer_records_still_decode():
    s = schema_for("queue-events")
    payload = bytearray(pack_records(s, [tuple(range(1, len(s.body_fields) + 1))] * 2))
    n = s.dtype.itemsize
    wide = bytearray()
    for i in range(2):
        rec = bytearray(payload[i * n : (i + 1) * n])
        rec[0:4] = (n + 8).to_bytes(4, "little")
        wide += rec + b"\xff" * 8  # a field this reader does not know
    recs, _ = decode_records(s.content_type, bytes(wide))
    assert len(recs) == 2
    assert int(recs[1]["ready_host_time_ns"]) == len(s.body_fields)


def test_corrupt_payload_is_data_loss():
    s = schema_for("executables")
    payload = pack_records(s, [(0, 1, 5)], ["exe"])
    with pytest.raises(hal_core.DataLossError, match="truncated or corrupt|ends inside"):
        decode_records(s.content_type, payload[:-9])
    fixed = schema_for("queue-events")
    with pytest.raises(hal_core.DataLossError, match="record_length"):
        decode_records(fixed.content_type, b"\x04\x00\x00\x00" + b"\0" * 12)


def test_unknown_kind_is_invalid_argument():
    with pytest.raises(hal_core.InvalidArgumentError, match="unknown profile record kind 'bogus'"):
        schema_for("bogus")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.integers(0, 2**32 - 1)), max_size=6))
def test_named_records_round_trip(items):
    s = schema_for("executable-functions")
    rows = [(i, b, 7, 0, (1, 1, 1)) for i, (_n, b) in enumerate(items)]
    payload = pack_records(s, rows, [n for n, _b in items])
    recs, tails = decode_records(s.content_type, payload)
    assert tails == [n.rstrip("\0") for n, _b in items]
    assert [int(x) for x in recs["binding_count"]] if items else True


@settings(max_examples=20, deadline=None)
@given(st.lists(st.lists(st.integers(0, 2**64 - 1), max_size=5), max_size=5))
def test_counter_sample_values_round_trip(values):
    s = schema_for("counter-samples")
    rows = [(0, len(v), 1, 0, 0, 0, 0, 0, 0, 1, 2) for v in values]
    recs, tails = decode_records(s.content_type, pack_records(s, rows, values))
    assert [list(map(int, t)) for t in tails] == values
    assert len(recs) == len(values)


def test_empty_payload():
    recs, tails = decode_records(schema_for("memory-events").content_type, b"")
    assert len(recs) == 0 and tails is None
    assert np.zeros(0, schema_for("memory-events").dtype).dtype == recs.dtype
