"""CTS: device profiling (IREE's profiling_begin/flush/end contract).

Every backend: one session at a time (FAILED_PRECONDITION), families without a sink
(INVALID_ARGUMENT), no families is a no-op, flush/end without a session
(FAILED_PRECONDITION), families the backend does not produce fail at begin naming them
(UNIMPLEMENTED or UNAVAILABLE), sinks see begin/writes/end exactly in that order and
only from begin/flush/end. Backends that advertise QUEUE_EVENTS / HOST_EXECUTION_EVENTS /
MEMORY_EVENTS: one record per operation with the right type and queue; execution spans
are ordered. Every test ends its session, so the shared device is left as found.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import pytest

import hal_core
from hal_core import BufferParams, QueueOpKind
from hal_core.profiling import (
    ProfilingDataFamily,
    ProfilingOptions,
    StatisticsSink,
    supported_families,
)

F = ProfilingDataFamily


class OrderSink(StatisticsSink):
    """Records the order of the sink calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def begin_session(self, metadata: Any) -> None:
        self.calls.append("begin")
        super().begin_session(metadata)

    def write(self, metadata: Any, payloads: Any) -> None:
        self.calls.append("write")
        super().write(metadata, payloads)

    def end_session(self, metadata: Any, status_code: int) -> None:
        self.calls.append("end")
        super().end_session(metadata, status_code)


@contextlib.contextmanager
def session(cts: Any, families: F, sink: Any) -> Iterator[Any]:
    cts.device.profiling_begin(ProfilingOptions(families, sinks=[sink]))
    try:
        yield sink
    finally:
        cts.device.profiling_end()


def _need(cts: Any, families: F) -> None:
    missing = families & ~supported_families(cts.device)
    if missing:
        pytest.skip(f"{cts.driver} does not produce {missing!r}")


def test_session_lifecycle_errors(cts):
    device = cts.device
    with pytest.raises(hal_core.FailedPreconditionError):
        device.profiling_flush()
    with pytest.raises(hal_core.FailedPreconditionError):
        device.profiling_end()
    with pytest.raises(hal_core.InvalidArgumentError):
        device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS))
    assert device.profiling_begin(ProfilingOptions(F.NONE, sinks=[StatisticsSink()])) is None
    with pytest.raises(hal_core.FailedPreconditionError):
        device.profiling_end()
    supported = supported_families(device)
    if not supported:
        with pytest.raises((hal_core.UnimplementedError, hal_core.UnavailableError)):
            device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[StatisticsSink()]))
        return
    first = F(supported & -supported)  # the lowest supported family
    with session(cts, first, StatisticsSink()):
        with pytest.raises(hal_core.FailedPreconditionError):
            device.profiling_begin(ProfilingOptions(first, sinks=[StatisticsSink()]))


def test_unsupported_families_fail_at_begin(cts):
    supported = supported_families(cts.device)
    candidates = [
        f
        for f in (F.DEVICE_METRICS, F.EXECUTABLE_TRACES, F.DEVICE_QUEUE_EVENTS, F.QUEUE_EVENTS)
        if not supported & f
    ]
    if not candidates:
        pytest.skip(f"{cts.driver} supports every family probed")
    family = candidates[0]
    with pytest.raises((hal_core.UnimplementedError, hal_core.UnavailableError)) as info:
        cts.device.profiling_begin(ProfilingOptions(family, sinks=[StatisticsSink()]))
    assert family.name is not None and family.name in str(info.value)
    # nothing started: a supported session still begins
    if supported:
        with session(cts, F(supported & -supported), StatisticsSink()):
            pass


def test_sinks_run_only_from_begin_flush_end(cts):
    _need(cts, F.QUEUE_EVENTS)
    sink = OrderSink()
    buf = cts.buffer(256)
    with session(cts, F.QUEUE_EVENTS, sink):
        assert sink.calls == ["begin"]
        sem = cts.semaphore()
        cts.device.queue_fill(1, [], [(sem, 1)], buf, 0, 256, b"\x01")
        cts.wait(sem, 1)
        assert sink.calls == ["begin"]  # nothing reached the sink from the queue
        cts.device.profiling_flush()
        assert sink.calls[-1] == "write"
    assert sink.calls[0] == "begin" and sink.calls[-1] == "end"
    assert sink.calls.count("begin") == 1 and sink.calls.count("end") == 1


def test_queue_events_one_per_operation(cts):
    _need(cts, F.QUEUE_EVENTS)
    buf = cts.buffer(1024)
    other = cts.buffer(1024)
    affinities = cts.queue_affinities()
    with session(cts, F.QUEUE_EVENTS, StatisticsSink()) as sink:
        sem = cts.semaphore()
        v = 0
        for aff in affinities:
            wait = [(sem, v)] if v else []
            cts.device.queue_fill(aff, wait, [(sem, v + 1)], buf, 0, 1024, b"\x02")
            cts.device.queue_copy(aff, [(sem, v + 1)], [(sem, v + 2)], buf, 0, other, 0, 1024)
            cts.device.queue_barrier(aff, [(sem, v + 2)], [(sem, v + 3)])
            v += 3
        cts.wait(sem, v)
    q = sink.capture.records("queue-events")
    assert len(q) == 3 * len(affinities)
    for i in range(len(affinities)):
        mine = q[q["queue_ordinal"] == i]
        assert sorted(int(t) for t in mine["type"]) == sorted(
            [int(QueueOpKind.FILL), int(QueueOpKind.COPY), int(QueueOpKind.BARRIER)]
        )
    assert len(np.unique(q["event_id"])) == len(q)


def test_host_execution_spans_are_ordered(cts):
    _need(cts, F.QUEUE_EVENTS | F.HOST_EXECUTION_EVENTS)
    buf = cts.buffer(4096)
    with session(cts, F.QUEUE_EVENTS | F.HOST_EXECUTION_EVENTS, StatisticsSink()) as sink:
        sem = cts.semaphore()
        for i in range(8):
            wait = [(sem, i)] if i else []
            cts.device.queue_fill(1, wait, [(sem, i + 1)], buf, 0, 4096, bytes([i]))
        cts.wait(sem, 8)
    h = sink.capture.records("host-execution-events")
    q = sink.capture.records("queue-events")
    assert len(h) == 8
    assert np.all(h["end_host_time_ns"] >= h["start_host_time_ns"])
    submitted = {int(r["submission_id"]): int(r["host_time_ns"]) for r in q}
    for r in h:
        assert int(r["start_host_time_ns"]) >= submitted[int(r["submission_id"])]
    order = np.argsort(h["start_host_time_ns"], kind="stable")
    starts = h["start_host_time_ns"][order]
    ends = h["end_host_time_ns"][order]
    assert np.all(starts[1:] >= ends[:-1])  # a chain: each starts after the previous ends


def test_memory_events_for_queue_alloca(cts):
    _need(cts, F.MEMORY_EVENTS)
    with session(cts, F.MEMORY_EVENTS, StatisticsSink()) as sink:
        sem = cts.semaphore()
        buf = cts.device.queue_alloca(1, [], [(sem, 1)], BufferParams(), 4096)
        cts.device.queue_dealloca(1, [(sem, 1)], [(sem, 2)], buf)
        cts.wait(sem, 2)
    counts = sink.statistics().memory_event_counts
    assert counts.get("QUEUE_ALLOCA") == 1 and counts.get("QUEUE_DEALLOCA") == 1
