"""Profiling options: families, filter and counter-set validation."""

import attrs
import pytest

import hal_core
from hal_core.profiling import (
    CaptureFilter,
    CaptureFilterFlags,
    CounterSet,
    ProfilingFlags,
    ProfilingOptions,
    StatisticsSink,
    parse_families,
)
from hal_core.profiling import (
    ProfilingDataFamily as F,
)


def test_parse_families_accepts_iree_mode_names():
    assert parse_families("queue-events, dispatch-events") == F.QUEUE_EVENTS | F.DISPATCH_EVENTS
    assert parse_families("host-execution") == F.HOST_EXECUTION_EVENTS
    assert parse_families("MEMORY_EVENTS") == F.MEMORY_EVENTS


def test_parse_families_rejects_unknown_with_list():
    with pytest.raises(hal_core.InvalidArgumentError, match="'warp-stalls'.*queue-events"):
        parse_families("queue-events,warp-stalls")


def test_options_are_frozen_and_convert():
    o = ProfilingOptions("queue-events", sinks=StatisticsSink())
    assert o.data_families == F.QUEUE_EVENTS and len(o.sinks) == 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        o.data_families = F.NONE  # type: ignore[misc]


def test_lightweight_statistics_adds_families():
    o = ProfilingOptions(flags=ProfilingFlags.LIGHTWEIGHT_STATISTICS, sinks=[StatisticsSink()])
    assert o.effective_families == F.QUEUE_EVENTS | F.EXECUTABLE_METADATA


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(counter_sets=[CounterSet("s", ["SQ_WAVES"])]), "neither COUNTER_SAMPLES"),
        (dict(data_families=F.COUNTER_SAMPLES), "at least one CounterSet"),
        (dict(ring_capacity=3), "ring_capacity"),
        (dict(sinks=[object()]), "no begin_session"),
        (dict(capture_filter="x"), "CaptureFilter"),
        (dict(data_families=1.5), "ProfilingDataFamily"),
    ],
)
def test_bad_options_are_invalid_argument(kwargs, match):
    with pytest.raises(hal_core.InvalidArgumentError, match=match):
        ProfilingOptions(**kwargs)


def test_capture_filter_validation_and_matching():
    with pytest.raises(hal_core.InvalidArgumentError, match="function_pattern is empty"):
        CaptureFilter(flags=CaptureFilterFlags.FUNCTION_PATTERN)
    with pytest.raises(hal_core.InvalidArgumentError, match="command_buffer_id is 0"):
        CaptureFilter(flags=CaptureFilterFlags.COMMAND_BUFFER_ID)
    with pytest.raises(hal_core.InvalidArgumentError, match="queue_ordinal must be >= 0"):
        CaptureFilter(queue_ordinal=-1)
    f = CaptureFilter.of(function_pattern="mat*", queue_ordinal=1, command_index=2)
    assert f.matches_function("matmul") and not f.matches_function("add")
    assert f.matches_queue(0, 1) and not f.matches_queue(0, 0)
    assert f.matches_command(5, 2) and not f.matches_command(5, 3)
    assert CaptureFilter().matches_function("anything")


def test_counter_set_validation():
    assert CounterSet("waves", "SQ_WAVES").counters == ("SQ_WAVES",)
    with pytest.raises(hal_core.InvalidArgumentError, match="at least one counter"):
        CounterSet("x", [])
    with pytest.raises(hal_core.InvalidArgumentError, match="non-empty name"):
        CounterSet("", ["SQ_WAVES"])
