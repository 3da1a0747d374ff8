"""Perfetto / Chrome trace-event JSON export (opens in ui.perfetto.dev and chrome://tracing).

One process per device and one track (thread) per queue. Host-execution events become
slices named by operation type; dispatch events become slices named by function, nested
inside the operation that ran them; queue submissions are instant events with a flow arrow
to the slice that executed them; device-side queue timestamps (DEVICE_QUEUE_EVENTS) are slices
on a ``queue N device`` track; memory events are
instants on a per-device "memory" track; device metrics are counter tracks. Timestamps are
microseconds from the session's begin on the host clock; device ticks are converted through
the clock correlations. Operations that overlap on one queue without nesting (local-task
may run independent work of one queue concurrently) go to extra lanes ``queue N #k`` so
the trace stays well-formed.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .._queue import QueueOpKind
from ._capture import CapturedProfile, CaptureSink
from ._records import MemoryEventType
from ._sink import ChunkMetadata

__all__ = ["PerfettoSink", "perfetto_trace", "write_perfetto"]

_LANE_STRIDE = 1000
_DISPATCH_LANES = 500  # lanes of dispatches whose submission has no host slice
_DEVICE_LANES = 800  # lanes of device-side queue timestamps


def _lane_name(queue: int, lane: int) -> str:
    if lane >= _DEVICE_LANES:
        k = lane - _DEVICE_LANES
        return f"queue {queue} device" + (f" #{k}" if k else "")
    if lane >= _DISPATCH_LANES:
        k = lane - _DISPATCH_LANES
        return f"queue {queue} dispatches" + (f" #{k}" if k else "")
    return f"queue {queue}" if lane == 0 else f"queue {queue} #{lane}"


def _take_lane(ends: list[float], start: float, end: float) -> int:
    """The first lane (of one queue) free by ``start``, now busy until ``end``; a new lane
    when every one is still busy. ``ends`` holds each lane's last end time."""
    for lane, last in enumerate(ends):
        if last <= start:
            ends[lane] = end
            return lane
    ends.append(end)
    return len(ends) - 1


def _op(t: int) -> str:
    try:
        return QueueOpKind(t).name.lower()
    except ValueError:
        return f"op{t}"


def perfetto_trace(cap: CapturedProfile) -> dict[str, Any]:
    """The trace-event JSON object for a capture."""
    events: list[dict[str, Any]] = []
    h = cap.records("host-execution-events")
    q = cap.records("queue-events")
    d = cap.records("dispatch-events")
    mem = cap.records("memory-events")
    base_candidates = [cap.begin_host_time_ns] if cap.begin_host_time_ns is not None else []
    base = float(min(base_candidates)) if base_candidates else 0.0
    dstart, dend = cap.dispatch_host_ns()
    if not base_candidates:
        for arr in (h["start_host_time_ns"], q["host_time_ns"], dstart):
            if len(arr):
                base = float(np.min(arr)) if not base else min(base, float(np.min(arr)))

    def us(ns: float) -> float:
        return (float(ns) - base) / 1e3

    devices = (
        set(cap.device_names)
        | {int(x) for x in h["physical_device_ordinal"]}
        | {int(x) for x in q["physical_device_ordinal"]}
        | {int(x) for x in d["physical_device_ordinal"]}
    )
    lanes_used: set[tuple[int, int, int]] = set()
    for dev in sorted(devices):
        pid = dev + 1
        events.append(
            {
                "ph": "M",
                "name": "process_name",
                "pid": pid,
                "tid": 0,
                "args": {"name": f"device {dev}: {cap.device_names.get(dev, '?')}"},
            }
        )
        for qi in range(cap.queue_counts.get(dev, 0)):
            lanes_used.add((dev, qi, 0))

    # Host-execution slices, greedily laned per queue so slices of a lane never overlap.
    lane_of_submission: dict[tuple[int, int, int], int] = {}
    order = np.argsort(h["start_host_time_ns"], kind="stable")
    lane_end: dict[tuple[int, int], list[float]] = {}
    exec_start: dict[tuple[int, int, int], tuple[float, int]] = {}
    start: float  # host nanoseconds: integers here, clock-converted floats below
    end: float
    for i in order:
        r = h[i]
        dev, qi = int(r["physical_device_ordinal"]), int(r["queue_ordinal"])
        start, end = int(r["start_host_time_ns"]), int(r["end_host_time_ns"])
        ends = lane_end.setdefault((dev, qi), [])
        lane = _take_lane(ends, start, end)
        lanes_used.add((dev, qi, lane))
        lane_of_submission[(dev, qi, int(r["submission_id"]))] = lane
        exec_start[(dev, qi, int(r["submission_id"]))] = (us(start), qi + 1 + lane * _LANE_STRIDE)
        events.append(
            {
                "ph": "X",
                "cat": "queue",
                "name": _op(int(r["type"])),
                "pid": dev + 1,
                "tid": qi + 1 + lane * _LANE_STRIDE,
                "ts": us(start),
                "dur": (end - start) / 1e3,
                "args": {
                    "submission_id": int(r["submission_id"]),
                    "status": int(r["status_code"]),
                    "bytes": int(r["payload_length"]),
                },
            }
        )
    flow_id = 0
    for r in q:
        dev, qi = int(r["physical_device_ordinal"]), int(r["queue_ordinal"])
        lanes_used.add((dev, qi, 0))
        ran = exec_start.get((dev, qi, int(r["submission_id"])))
        if ran is not None:
            # A flow arrow from the submission to the slice that executed it.
            flow_id += 1
            common = {"cat": "flow", "name": "submit", "id": flow_id, "pid": dev + 1}
            events.append({"ph": "s", "tid": qi + 1, "ts": us(int(r["host_time_ns"])), **common})
            events.append({"ph": "f", "bp": "e", "tid": ran[1], "ts": ran[0], **common})
        events.append(
            {
                "ph": "i",
                "s": "t",
                "cat": "submit",
                "name": "submit " + _op(int(r["type"])),
                "pid": dev + 1,
                "tid": qi + 1,
                "ts": us(int(r["host_time_ns"])),
                "args": {
                    "submission_id": int(r["submission_id"]),
                    "waits": int(r["wait_count"]),
                    "signals": int(r["signal_count"]),
                },
            }
        )
    # Dispatches: inside their submission's lane when known, else their own greedy lanes.
    dispatch_lane_end: dict[tuple[int, int], list[float]] = {}
    for i in np.argsort(dstart, kind="stable"):
        r = d[i]
        dev, qi = int(r["physical_device_ordinal"]), int(r["queue_ordinal"])
        start, end = float(dstart[i]), float(dend[i])
        submission_lane = lane_of_submission.get((dev, qi, int(r["submission_id"])))
        if submission_lane is None:
            ends = dispatch_lane_end.setdefault((dev, qi), [])
            lane = _take_lane(ends, start, end)
            lane += _DISPATCH_LANES  # separate from operation lanes
        else:
            lane = submission_lane
        lanes_used.add((dev, qi, lane))
        events.append(
            {
                "ph": "X",
                "cat": "dispatch",
                "name": cap.function_name(int(r["executable_id"]), int(r["function_ordinal"])),
                "pid": dev + 1,
                "tid": qi + 1 + lane * _LANE_STRIDE,
                "ts": us(start),
                "dur": max(end - start, 0.0) / 1e3,
                "args": {
                    "executable_id": int(r["executable_id"]),
                    "command_buffer_id": int(r["command_buffer_id"]),
                    "command_index": int(r["command_index"]),
                    "workgroup_count": [int(x) for x in r["workgroup_count"]],
                    "workgroup_size": [int(x) for x in r["workgroup_size"]],
                },
            }
        )
    # Device-side queue timestamps (DEVICE_QUEUE_EVENTS): their own lanes per queue.
    dq = cap.records("queue-device-events")
    dq_lane_end: dict[tuple[int, int], list[float]] = {}
    for dev in sorted({int(x) for x in dq["physical_device_ordinal"]}):
        sel = np.flatnonzero(dq["physical_device_ordinal"] == dev)
        starts = np.atleast_1d(cap.clock.to_host_ns(dev, dq["start_tick"][sel].astype(np.float64)))
        ends_ns = np.atleast_1d(cap.clock.to_host_ns(dev, dq["end_tick"][sel].astype(np.float64)))
        for k in np.argsort(starts, kind="stable"):
            r = dq[sel[k]]
            qi = int(r["queue_ordinal"])
            start, end = float(starts[k]), float(ends_ns[k])
            ends = dq_lane_end.setdefault((dev, qi), [])
            lane = _take_lane(ends, start, end)
            lane += _DEVICE_LANES
            lanes_used.add((dev, qi, lane))
            events.append(
                {
                    "ph": "X",
                    "cat": "device-queue",
                    "name": _op(int(r["type"])),
                    "pid": dev + 1,
                    "tid": qi + 1 + lane * _LANE_STRIDE,
                    "ts": us(start),
                    "dur": max(end - start, 0.0) / 1e3,
                    "args": {"submission_id": int(r["submission_id"])},
                }
            )
    for dev, qi, lane in sorted(lanes_used):
        name = _lane_name(qi, lane)
        events.append(
            {
                "ph": "M",
                "name": "thread_name",
                "pid": dev + 1,
                "tid": qi + 1 + lane * _LANE_STRIDE,
                "args": {"name": name},
            }
        )
        events.append(
            {
                "ph": "M",
                "name": "thread_sort_index",
                "pid": dev + 1,
                "tid": qi + 1 + lane * _LANE_STRIDE,
                "args": {"sort_index": qi * 1000 + lane},
            }
        )
    mem_tid = 999
    for r in mem:
        dev = int(r["physical_device_ordinal"])
        try:
            name = MemoryEventType(int(r["type"])).name.lower()
        except ValueError:
            name = f"memory{int(r['type'])}"
        events.append(
            {
                "ph": "i",
                "s": "t",
                "cat": "memory",
                "name": name,
                "pid": dev + 1,
                "tid": mem_tid,
                "ts": us(int(r["host_time_ns"])),
                "args": {
                    "allocation_id": int(r["allocation_id"]),
                    "length": int(r["length"]),
                    "pool_id": int(r["pool_id"]),
                },
            }
        )
    if len(mem):
        for dev in {int(x) for x in mem["physical_device_ordinal"]}:
            events.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": dev + 1,
                    "tid": mem_tid,
                    "args": {"name": "memory"},
                }
            )
    for t, values in cap.metric_samples:
        for mid, value in zip(values["metric_id"], values["value"]):
            events.append(
                {
                    "ph": "C",
                    "name": cap.metric_names.get(int(mid), f"metric{int(mid)}"),
                    "pid": 1,
                    "ts": us(t),
                    "args": {"value": int(value)},
                }
            )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {"producer": "hal_core.profiling", "status": cap.status_code},
    }


def write_perfetto(cap: CapturedProfile, path: str | os.PathLike[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(perfetto_trace(cap), f)


class PerfettoSink(CaptureSink):
    """Collects the session in memory and writes the trace JSON to ``path`` at
    ``end_session`` (also when the session failed, so partial captures can be viewed)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = os.fspath(path)

    def end_session(self, metadata: ChunkMetadata, status_code: int) -> None:
        super().end_session(metadata, status_code)
        write_perfetto(self.capture, self.path)
