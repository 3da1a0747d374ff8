"""The in-memory statistics reducer: per-function dispatch counts and times, per-queue
operation counts. ``StatisticsSink`` is a profile sink; ``ProfileStatistics`` is what it
reduces to (also built from a bundle by ``hal profile summary``)."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from .._queue import QueueOpKind
from ._capture import CapturedProfile, CaptureSink
from ._records import MemoryEventType

__all__ = ["FunctionStatistics", "QueueStatistics", "ProfileStatistics", "StatisticsSink"]


@attrs.frozen
class FunctionStatistics:
    name: str
    executable_id: int
    function_ordinal: int
    dispatch_count: int
    total_ns: float
    mean_ns: float
    min_ns: float
    max_ns: float


@attrs.frozen
class QueueStatistics:
    physical_device_ordinal: int
    queue_ordinal: int
    op_counts: dict[str, int]
    busy_ns: float  # sum of host-execution time (0 without HOST_EXECUTION_EVENTS)


@attrs.frozen
class ProfileStatistics:
    functions: tuple[FunctionStatistics, ...]
    queues: tuple[QueueStatistics, ...]
    memory_event_counts: dict[str, int]
    dropped_records: int
    truncated_chunks: int
    status_code: int

    @classmethod
    def from_capture(cls, cap: CapturedProfile) -> "ProfileStatistics":
        d = cap.records("dispatch-events")
        functions = []
        if len(d):
            start, end = cap.dispatch_host_ns()
            dur = end - start
            keys = d["executable_id"].astype(np.uint64) * np.uint64(1 << 20) + d["function_ordinal"]
            for key in np.unique(keys):
                m = keys == key
                exe = int(d["executable_id"][m][0])
                ordinal = int(d["function_ordinal"][m][0])
                t = dur[m]
                functions.append(
                    FunctionStatistics(
                        cap.function_name(exe, ordinal),
                        exe,
                        ordinal,
                        int(m.sum()),
                        float(t.sum()),
                        float(t.mean()),
                        float(t.min()),
                        float(t.max()),
                    )
                )
        functions.sort(key=lambda f: -f.total_ns)
        q = cap.records("queue-events")
        h = cap.records("host-execution-events")
        queues = []
        pairs = {(int(a), int(b)) for a, b in zip(q["physical_device_ordinal"], q["queue_ordinal"])}
        pairs |= {
            (int(a), int(b)) for a, b in zip(h["physical_device_ordinal"], h["queue_ordinal"])
        }
        for dev, qi in sorted(pairs):
            src = q if len(q) else h
            m = (src["physical_device_ordinal"] == dev) & (src["queue_ordinal"] == qi)
            types, counts = np.unique(src["type"][m], return_counts=True)
            hm = (h["physical_device_ordinal"] == dev) & (h["queue_ordinal"] == qi)
            busy = float((h["end_host_time_ns"][hm] - h["start_host_time_ns"][hm]).sum())
            queues.append(
                QueueStatistics(dev, qi, {_op_name(t): int(c) for t, c in zip(types, counts)}, busy)
            )
        mem = cap.records("memory-events")
        mtypes, mcounts = np.unique(mem["type"], return_counts=True)
        memory = {_mem_name(t): int(c) for t, c in zip(mtypes, mcounts)}
        return cls(
            tuple(functions),
            tuple(queues),
            memory,
            cap.dropped_records,
            cap.truncated_chunks,
            cap.status_code,
        )

    def format_table(self) -> str:
        """A plain-text table (what ``hal profile summary`` prints)."""
        lines = []
        if self.functions:
            lines.append(
                f"{'function':<40} {'count':>8} {'total us':>12} {'mean us':>10} "
                f"{'min us':>10} {'max us':>10}"
            )
            for f in self.functions:
                lines.append(
                    f"{f.name[:40]:<40} {f.dispatch_count:>8} {f.total_ns / 1e3:>12.3f} "
                    f"{f.mean_ns / 1e3:>10.3f} {f.min_ns / 1e3:>10.3f} {f.max_ns / 1e3:>10.3f}"
                )
        else:
            lines.append("no dispatch events")
        lines.append("")
        if self.queues:
            lines.append(f"{'device':>6} {'queue':>5} {'busy us':>12}  operations")
            for q in self.queues:
                ops = ", ".join(f"{k}={v}" for k, v in sorted(q.op_counts.items()))
                lines.append(
                    f"{q.physical_device_ordinal:>6} {q.queue_ordinal:>5} "
                    f"{q.busy_ns / 1e3:>12.3f}  {ops}"
                )
        else:
            lines.append("no queue events")
        if self.memory_event_counts:
            lines.append("")
            lines.append(
                "memory events: "
                + ", ".join(f"{k}={v}" for k, v in sorted(self.memory_event_counts.items()))
            )
        if self.dropped_records:
            lines.append(
                f"\nWARNING: {self.dropped_records} records dropped in "
                f"{self.truncated_chunks} truncated chunks"
            )
        if self.status_code:
            lines.append(f"\nsession ended with status {self.status_code}")
        return "\n".join(lines)


def _op_name(t: Any) -> str:
    try:
        return QueueOpKind(int(t)).name
    except ValueError:
        return f"type{int(t)}"


def _mem_name(t: Any) -> str:
    try:
        return MemoryEventType(int(t)).name
    except ValueError:
        return f"type{int(t)}"


class StatisticsSink(CaptureSink):
    """In-memory reducer. ``statistics()`` may be called after any flush or after end."""

    def statistics(self) -> ProfileStatistics:
        return ProfileStatistics.from_capture(self.capture)
