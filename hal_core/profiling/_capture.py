"""``CapturedProfile``: decoded chunks of one session held in memory.

The statistics reducer and the Perfetto exporter both build on it: it decodes every chunk
it is given (copying, as the sink contract requires), remembers names of executables,
functions, devices and metrics, and maps device ticks to host ns through the session's
clock correlations.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import _records as R
from ._clock import ClockMap
from ._sink import ChunkFlags, ChunkMetadata

__all__ = ["CapturedProfile"]


class CapturedProfile:
    """Accumulates decoded records per kind. Not thread-safe (sinks are called from one
    flushing thread)."""

    def __init__(self) -> None:
        self._arrays: dict[str, list[np.ndarray]] = {}
        self.function_names: dict[tuple[int, int], str] = {}
        self.executable_names: dict[int, str] = {}
        self.device_names: dict[int, str] = {}
        self.queue_counts: dict[int, int] = {}
        self.metric_names: dict[int, str] = {}
        self.metric_units: dict[int, int] = {}
        self.metric_samples: list[tuple[int, np.ndarray]] = []  # (host ns, (id, value)[])
        self.counter_samples: list[tuple[np.void, np.ndarray]] = []
        self.traces: list[tuple[np.void, bytes]] = []
        self.clock = ClockMap()
        self.truncated_chunks = 0
        self.dropped_records = 0
        self.begin_host_time_ns: int | None = None
        self.status_code = 0

    def add_chunk(self, metadata: ChunkMetadata, payloads: Sequence[Any]) -> None:
        if metadata.flags & ChunkFlags.TRUNCATED:
            self.truncated_chunks += 1
            self.dropped_records += metadata.dropped_record_count
        if not payloads:
            return
        payload = b"".join(bytes(p) for p in payloads)
        ct = metadata.content_type
        if ct not in R.SCHEMAS:
            return  # a newer producer's kind: ignored, not an error (forward compatible)
        recs, trailing = R.decode_records(ct, payload)
        # Every kind read with its trailing items below declares them (a list, never None).
        tails: list[Any] = trailing if trailing is not None else []
        kind = R.SCHEMAS[ct].kind
        if kind == "session":
            for r in recs:
                if self.begin_host_time_ns is None:
                    self.begin_host_time_ns = int(r["begin_host_time_ns"])
                self.status_code = int(r["status_code"])
        elif kind == "devices":
            for r, name in zip(recs, tails):
                d = int(r["physical_device_ordinal"])
                self.device_names[d] = name
                self.queue_counts[d] = int(r["queue_count"])
                self.clock.add_device(d, int(r["clock_domain"]), int(r["tick_frequency_hz"]))
        elif kind == "executables":
            for r, name in zip(recs, tails):
                self.executable_names[int(r["executable_id"])] = name
        elif kind == "executable-functions":
            for r, name in zip(recs, tails):
                self.function_names[(int(r["executable_id"]), int(r["function_ordinal"]))] = name
        elif kind == "clock-correlations":
            self.clock.add_correlations(recs)
        elif kind == "device-metric-descriptors":
            for r, name in zip(recs, tails):
                self.metric_names[int(r["metric_id"])] = name
                self.metric_units[int(r["metric_id"])] = int(r["unit"])
        elif kind == "device-metric-samples":
            for r, values in zip(recs, tails):
                self.metric_samples.append((int(r["host_time_ns"]), values))
        elif kind == "counter-samples":
            self.counter_samples.extend(zip(recs, tails))
        elif kind == "executable-traces":
            self.traces.extend(zip(recs, tails))
        self._arrays.setdefault(kind, []).append(recs)

    def records(self, kind: str) -> np.ndarray:
        arrays = self._arrays.get(kind)
        if not arrays:
            return np.zeros(0, R.schema_for(kind).dtype)
        if len(arrays) > 1:
            arrays[:] = [np.concatenate(arrays)]
        return arrays[0]

    def function_name(self, executable_id: int, ordinal: int) -> str:
        name = self.function_names.get((executable_id, ordinal))
        if name is not None:
            return name
        exe = self.executable_names.get(executable_id)
        return f"{exe or f'executable{executable_id}'}[{ordinal}]"

    def dispatch_host_ns(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) host ns of every dispatch event, converted per device."""
        d = self.records("dispatch-events")
        start = np.zeros(len(d))
        end = np.zeros(len(d))
        for dev in np.unique(d["physical_device_ordinal"]):
            m = d["physical_device_ordinal"] == dev
            start[m] = self.clock.to_host_ns(int(dev), d["start_tick"][m].astype(np.float64))
            end[m] = self.clock.to_host_ns(int(dev), d["end_tick"][m].astype(np.float64))
        return start, end


class CaptureSink:
    """A sink that only accumulates a ``CapturedProfile`` (base of the in-memory sinks)."""

    def __init__(self) -> None:
        self.capture = CapturedProfile()
        self.ended = False

    def begin_session(self, metadata: ChunkMetadata) -> None:
        self.capture = CapturedProfile()
        self.ended = False

    def write(self, metadata: ChunkMetadata, payloads: Sequence[Any]) -> None:
        self.capture.add_chunk(metadata, payloads)

    def end_session(self, metadata: ChunkMetadata, status_code: int) -> None:
        self.capture.status_code = status_code
        self.ended = True
