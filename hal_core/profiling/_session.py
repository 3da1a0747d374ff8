"""The profiling session: preallocated per-stream record rings (``_record_ring``) and the
producer API.

Concurrency invariants:

* Producers (queue threads, workers, completion callbacks) only append to rings. An
  append claims a row under the ring's own short lock and writes one tuple; nothing else
  runs under it and no thread ever waits while holding it.
* Sinks are called only by ``flush``/``end``, on the caller's thread, after the rings
  were drained (copied out) and with no ring or queue lock held.
* Event ids come from ``itertools.count`` (atomic under the GIL).

A producer that wants the cheapest possible tap checks one attribute (``profiler is not
None``) and calls one ``record_*`` method, which does no string formatting and creates no
objects beyond the row tuple.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any, Callable, Sequence

import attrs
import numpy as np

from .._callback_errors import report_callback_error
from .._status import HalError, ResourceExhaustedError, StatusCode
from . import _records as R
from ._clock import host_time_ns
from ._options import PRECISE_FAMILIES, ProfilingDataFamily, ProfilingOptions
from ._record_ring import RecordRing
from ._sink import NO_ORDINAL, ChunkFlags, ChunkMetadata, SinkCalls

__all__ = ["ProfilingSession", "MetricDescriptor", "FunctionMetadata"]

F = ProfilingDataFamily


@attrs.frozen
class FunctionMetadata:
    ordinal: int
    name: str
    binding_count: int = 0
    constant_count: int = 0
    workgroup_size: tuple[int, int, int] = (1, 1, 1)


@attrs.frozen
class MetricDescriptor:
    """One metric a device-metric source can sample."""

    metric_id: int
    name: str
    unit: R.MetricUnit
    value_kind: R.MetricValueKind = R.MetricValueKind.I64
    semantic: R.MetricSemantic = R.MetricSemantic.INSTANT
    plot_hint: int = 0


class ProfilingSession:
    """One active profiling session of one device (created by ``Device.profiling_begin``).

    The backend receives it in ``profiling_begin(session)`` and calls the ``record_*``
    methods from its taps. ``families`` is what was requested; rings exist only for those.
    """

    def __init__(
        self,
        options: ProfilingOptions,
        families: ProfilingDataFamily,
        *,
        session_id: int,
        device_name: str,
        queue_count: int,
        device_ordinal: int = 0,
        clock_domain: R.ClockDomain = R.ClockDomain.HOST_NS,
        tick_frequency_hz: int = 1_000_000_000,
    ) -> None:
        self.options = options
        self.families = families
        self.capture_filter = options.capture_filter
        self.sinks = options.sinks
        self.session_id = session_id
        self.device_name = device_name
        self.queue_count = queue_count
        self.device_ordinal = device_ordinal
        self.clock_domain = clock_domain
        self.tick_frequency_hz = tick_frequency_hz
        self.begin_host_time_ns = host_time_ns()
        self.next_event_id = itertools.count(1).__next__
        cap = options.ring_capacity

        def ring(family: F, schema: R.RecordSchema, fields: str) -> RecordRing | None:
            if not families & family:
                return None
            return RecordRing(schema, cap, bool(family & PRECISE_FAMILIES), fields.split())

        self.queue_events = ring(
            F.QUEUE_EVENTS,
            R.QUEUE_EVENTS,
            "type queue_ordinal submission_id host_time_ns wait_count signal_count "
            "payload_length command_buffer_id allocation_id dependency_strategy "
            "operation_count ready_host_time_ns",
        )
        self.host_execution_events = ring(
            F.HOST_EXECUTION_EVENTS,
            R.HOST_EXECUTION_EVENTS,
            "type queue_ordinal submission_id start_host_time_ns end_host_time_ns "
            "status_code payload_length thread_id",
        )
        self.device_queue_events = ring(
            F.DEVICE_QUEUE_EVENTS,
            R.QUEUE_DEVICE_EVENTS,
            "type queue_ordinal submission_id command_buffer_id start_tick end_tick flags",
        )
        self.dispatch_events = ring(
            F.DISPATCH_EVENTS,
            R.DISPATCH_EVENTS,
            "queue_ordinal event_id submission_id command_buffer_id executable_id "
            "command_index function_ordinal workgroup_count workgroup_size start_tick end_tick",
        )
        self.memory_events = ring(
            F.MEMORY_EVENTS,
            R.MEMORY_EVENTS,
            "type queue_ordinal host_time_ns allocation_id length pool_id backing_id "
            "submission_id offset alignment pool_bytes_reserved pool_bytes_committed flags",
        )
        self._rings = [
            r
            for r in (
                self.queue_events,
                self.host_execution_events,
                self.device_queue_events,
                self.dispatch_events,
                self.memory_events,
            )
            if r is not None
        ]
        # Metadata and variable-length records are rare: kept as Python lists under one
        # lock and packed at flush.
        self._meta_lock = threading.Lock()
        self._pending: dict[str, tuple[list, list]] = {}
        self._executables_seen: set[int] = set()
        self._metric_sources: list[Any] = []
        self._metric_sample_ids = itertools.count(1).__next__
        self._clock_sample_ids = itertools.count(1).__next__
        self._started = False
        self._failed: HalError | None = None
        self._flush_lock = threading.Lock()
        self._end_callbacks: list[Callable[[], None]] = []
        self.closed = False

    # -- producer API (hot) -------------------------------------------------------------

    def stream_id(self, queue: int) -> int:
        return (self.device_ordinal << 16) | queue

    def record_queue_event(
        self,
        op_type: int,
        queue: int,
        submission_id: int,
        wait_count: int,
        signal_count: int,
        payload_length: int = 0,
        command_buffer_id: int = 0,
        allocation_id: int = 0,
        strategy: int = 0,
        operation_count: int = 1,
        ready_host_time_ns: int = 0,
        submit_host_time_ns: int = 0,
    ) -> None:
        """A queue operation was submitted (at ``submit_host_time_ns``, default now)."""
        ring = self.queue_events
        if ring is not None:
            ring.append(
                (
                    op_type,
                    queue,
                    submission_id,
                    submit_host_time_ns or host_time_ns(),
                    wait_count,
                    signal_count,
                    payload_length,
                    command_buffer_id,
                    allocation_id,
                    strategy,
                    operation_count,
                    ready_host_time_ns,
                )
            )

    def record_host_execution(
        self,
        op_type: int,
        queue: int,
        submission_id: int,
        start_ns: int,
        end_ns: int,
        status_code: int = 0,
        payload_length: int = 0,
        thread_id: int = 0,
    ) -> None:
        """A queue operation ran on a host thread from ``start_ns`` to ``end_ns``."""
        ring = self.host_execution_events
        if ring is not None:
            ring.append(
                (
                    op_type,
                    queue,
                    submission_id,
                    start_ns,
                    end_ns,
                    status_code,
                    payload_length,
                    thread_id,
                )
            )

    def record_device_queue_event(
        self,
        op_type: int,
        queue: int,
        submission_id: int,
        start_tick: int,
        end_tick: int,
        command_buffer_id: int = 0,
        flags: int = 0,
    ) -> None:
        """A queue operation ran on the device from ``start_tick`` to ``end_tick``
        (device clock; e.g. timestamps the device wrote before and after it)."""
        ring = self.device_queue_events
        if ring is not None:
            ring.append(
                (op_type, queue, submission_id, command_buffer_id, start_tick, end_tick, flags)
            )

    def record_dispatch(
        self,
        queue: int,
        submission_id: int,
        command_buffer_id: int,
        executable_id: int,
        command_index: int,
        function_ordinal: int,
        workgroup_count: tuple,
        workgroup_size: tuple,
        start_tick: int,
        end_tick: int,
    ) -> int:
        """A dispatch ran from ``start_tick`` to ``end_tick`` (device clock). Returns the
        event id (0 when the family is off)."""
        ring = self.dispatch_events
        if ring is None:
            return 0
        event_id = self.next_event_id()
        ring.append(
            (
                queue,
                event_id,
                submission_id,
                command_buffer_id,
                executable_id,
                command_index,
                function_ordinal,
                workgroup_count,
                workgroup_size,
                start_tick,
                end_tick,
            )
        )
        return event_id

    def record_memory_event(
        self,
        event_type: int,
        queue: int = NO_ORDINAL,
        allocation_id: int = 0,
        length: int = 0,
        *,
        pool_id: int = 0,
        backing_id: int = 0,
        submission_id: int = 0,
        offset: int = 0,
        alignment: int = 0,
        pool_bytes_reserved: int = 0,
        pool_bytes_committed: int = 0,
        flags: int = 0,
    ) -> None:
        ring = self.memory_events
        if ring is not None:
            ring.append(
                (
                    event_type,
                    queue,
                    host_time_ns(),
                    allocation_id,
                    length,
                    pool_id,
                    backing_id,
                    submission_id,
                    offset,
                    alignment,
                    pool_bytes_reserved,
                    pool_bytes_committed,
                    flags,
                )
            )

    # -- producer API (rare) ------------------------------------------------------------

    def _add(self, schema: R.RecordSchema, row: tuple, tail: Any = None) -> None:
        with self._meta_lock:
            rows, tails = self._pending.setdefault(schema.content_type, ([], []))
            rows.append(row)
            tails.append(tail)

    def record_executable(
        self, executable_id: int, name: str, functions: Sequence[FunctionMetadata]
    ) -> None:
        """Executable and function metadata (once per executable per session).

        Written when EXECUTABLE_METADATA or DISPATCH_EVENTS is captured: dispatch events
        refer to functions by (executable id, ordinal), and without these records a
        profile could name its kernels only by number."""
        if not self.families & (F.EXECUTABLE_METADATA | F.DISPATCH_EVENTS):
            return
        with self._meta_lock:
            if executable_id in self._executables_seen:
                return
            self._executables_seen.add(executable_id)
        self._add(R.EXECUTABLES, (self.device_ordinal, len(functions), executable_id), name)
        for fn in functions:
            self._add(
                R.EXECUTABLE_FUNCTIONS,
                (
                    fn.ordinal,
                    fn.binding_count,
                    executable_id,
                    fn.constant_count,
                    tuple(fn.workgroup_size),
                ),
                fn.name,
            )

    def record_clock_correlation(
        self,
        device_tick: int,
        host_begin_ns: int,
        host_end_ns: int,
        *,
        host_cpu_timestamp_ns: int = 0,
        system_timestamp: int = 0,
        system_frequency_hz: int = 0,
    ) -> None:
        self._add(
            R.CLOCK_CORRELATIONS,
            (
                self.device_ordinal,
                0,
                self._clock_sample_ids(),
                device_tick,
                host_begin_ns,
                host_end_ns,
                host_cpu_timestamp_ns,
                system_timestamp,
                system_frequency_hz,
            ),
        )

    def record_counter_set(
        self, counter_set_id: int, name: str, counters: Sequence[tuple[str, int, int]]
    ) -> None:
        """``counters``: (name, block, event) per counter, in sample-value order."""
        self._add(R.COUNTER_SETS, (self.device_ordinal, len(counters), counter_set_id), name)
        for i, (cname, block, event) in enumerate(counters):
            self._add(R.COUNTERS, (i, block, counter_set_id, event, 0), cname)

    def record_counter_sample(
        self,
        scope: int,
        counter_set_id: int,
        values: Sequence[int],
        *,
        queue: int,
        dispatch_event_id: int = 0,
        command_buffer_id: int = 0,
        command_index: int = 0,
        start_tick: int = 0,
        end_tick: int = 0,
    ) -> None:
        self._add(
            R.COUNTER_SAMPLES,
            (
                scope,
                len(values),
                counter_set_id,
                dispatch_event_id,
                command_buffer_id,
                command_index,
                self.device_ordinal,
                queue,
                0,
                start_tick,
                end_tick,
            ),
            list(values),
        )

    def record_executable_trace(
        self,
        trace_id: int,
        executable_id: int,
        dispatch_event_id: int,
        data: bytes,
        trace_format: int = 0,
    ) -> None:
        self._add(
            R.EXECUTABLE_TRACES,
            (
                self.device_ordinal,
                trace_format,
                0,
                trace_id,
                executable_id,
                dispatch_event_id,
                len(data),
            ),
            bytes(data),
        )

    def add_metric_source(self, source: Any) -> None:
        """Register a device-metric source: an object with ``source_id``, ``name``,
        ``source_class``, ``descriptors() -> list[MetricDescriptor]`` and
        ``sample() -> (metric ids, int64 values)``. It is sampled at begin, at every flush
        and at end (never from hot paths). Its descriptors are recorded now."""
        self._add(
            R.DEVICE_METRIC_SOURCES,
            (self.device_ordinal, int(source.source_class), int(source.source_id)),
            source.name,
        )
        for d in source.descriptors():
            self._add(
                R.DEVICE_METRIC_DESCRIPTORS,
                (
                    int(d.unit),
                    int(d.value_kind),
                    int(d.semantic),
                    int(d.plot_hint),
                    int(d.metric_id),
                    int(source.source_id),
                ),
                d.name,
            )
        with self._meta_lock:
            self._metric_sources.append(source)
        self._sample_metrics()

    # -- context manager -----------------------------------------------------------------

    def bind_device(self, device: Any) -> None:
        """Remember (weakly) the device this session profiles, so that leaving a ``with``
        block can end it through ``device.profiling_end()``. Called by
        ``Device.profiling_begin``; no lock needed."""
        self._device_ref = weakref.ref(device)

    def __enter__(self) -> "ProfilingSession":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """End the session (``device.profiling_end()``) if it is still the device's
        active one, also when the block raised. The block's exception wins: an error
        ending the session after it is reported through ``sys.unraisablehook``; without
        one, that error is raised here."""
        ref = self.__dict__.get("_device_ref")
        device = ref() if ref is not None else None
        if device is None or device.__dict__.get("_profiling_session") is not self:
            return  # already ended (explicitly, or by closing the device)
        if exc_type is None:
            device.profiling_end()
            return
        try:
            device.profiling_end()
        except Exception as end_error:
            report_callback_error(end_error, "ending a profiling session after its block raised")

    def __repr__(self) -> str:
        state = "ended" if self.closed else ("failed" if self._failed is not None else "active")
        names = "|".join(m.name or "" for m in F if m and self.families & m)
        if len(names) > 48:
            names = f"{bin(int(self.families)).count('1')} families"
        return f"<ProfilingSession {self.session_id} {names} on {self.device_name} {state}>"

    def add_end_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` when the session ends, before the final flush (taps detach)."""
        with self._meta_lock:
            self._end_callbacks.append(fn)

    def _sample_metrics(self) -> None:
        with self._meta_lock:
            sources = list(self._metric_sources)
        for src in sources:
            ids, values = src.sample()
            self._add(
                R.DEVICE_METRIC_SAMPLES,
                (len(ids), int(src.source_id), self._metric_sample_ids(), host_time_ns()),
                (list(ids), list(values)),
            )

    # -- flush / end (never on hot paths) ---------------------------------------------

    def _meta(self, content_type: str, **kw: Any) -> ChunkMetadata:
        return ChunkMetadata(content_type=content_type, session_id=self.session_id, **kw)

    def _session_chunk(self, end_ns: int, status: int) -> tuple[ChunkMetadata, bytes]:
        payload = R.pack_records(
            R.SESSION,
            [
                (
                    R.SCHEMA_VERSION,
                    self.session_id,
                    self.begin_host_time_ns,
                    end_ns,
                    int(self.families),
                    int(self.options.flags),
                    status,
                )
            ],
            [self.device_name],
        )
        return self._meta(R.SESSION.content_type, name=self.device_name), payload

    def start(self) -> None:
        """Call every sink's ``begin_session`` and queue the static metadata chunks. When
        one raises, the sinks that had begun get ``end_session`` (with the error's code)
        and the first error is raised."""
        meta = self._meta(R.SESSION.content_type, name=self.device_name)
        calls = SinkCalls()
        begun = [sink for sink in self.sinks if calls.call(sink.begin_session, meta)]
        if calls.first is not None:
            error = calls.first
            status = int(error.code if isinstance(error, HalError) else StatusCode.UNKNOWN)
            for sink in begun:
                calls.call(sink.end_session, meta, status)
            raise calls.first
        self._started = True
        self._add(
            R.DEVICES,
            (
                self.device_ordinal,
                self.queue_count,
                int(self.clock_domain),
                0,
                self.tick_frequency_hz,
            ),
            self.device_name,
        )
        for q in range(self.queue_count):
            self._add(R.QUEUES, (self.device_ordinal, q, self.stream_id(q)))

    def _fill(self, records: np.ndarray) -> None:
        """Complete ring records: device ordinal, stream ids and (except dispatches,
        which got theirs when recorded) session-unique event ids in record order."""
        records["physical_device_ordinal"] = self.device_ordinal
        names = records.dtype.names or ()
        if "stream_id" in names:
            records["stream_id"] = (self.device_ordinal << 16) | records["queue_ordinal"].astype(
                np.uint64
            )
        if "event_id" in names and not records["event_id"].any():
            nxt = self.next_event_id
            records["event_id"] = np.fromiter(
                (nxt() for _ in range(len(records))), np.uint64, len(records)
            )

    def _collect(self) -> list[tuple[ChunkMetadata, bytes]]:
        if self._metric_sources:
            self._sample_metrics()
        with self._meta_lock:
            pending, self._pending = self._pending, {}
        chunks: list[tuple[ChunkMetadata, bytes]] = []
        # Metadata first so readers know executables/devices before events refer to them.
        for content_type, (rows, tails) in pending.items():
            schema = R.SCHEMAS[content_type]
            payload = R.pack_records(schema, rows, tails if schema.trailing else None)
            chunks.append(
                (self._meta(content_type, physical_device_ordinal=self.device_ordinal), payload)
            )
        for ring in self._rings:
            payload, dropped = ring.drain(self._fill)
            if not payload and not dropped:
                continue
            if dropped and ring.precise and self._failed is None:
                self._failed = ResourceExhaustedError(
                    f"profiling ring for {ring.schema.kind} overflowed: {dropped} records "
                    f"did not fit in ring_capacity={ring.capacity}; precise timelines cannot "
                    "drop records, so the session failed. Raise "
                    "ProfilingOptions.ring_capacity or call profiling_flush() more often"
                )
            flags = ChunkFlags.TRUNCATED if dropped else ChunkFlags.NONE
            chunks.append(
                (
                    self._meta(
                        ring.schema.content_type,
                        physical_device_ordinal=self.device_ordinal,
                        flags=flags,
                        dropped_record_count=dropped,
                    ),
                    payload,
                )
            )
        return chunks

    def flush(self) -> None:
        """Hand everything captured so far to the sinks. Raises the session failure
        (RESOURCE_EXHAUSTED for an overflowed precise ring) after writing what exists."""
        with self._flush_lock:
            calls = SinkCalls()
            for meta, payload in self._collect():
                parts = [payload] if payload else []
                for sink in self.sinks:
                    calls.call(sink.write, meta, parts)
            if calls.first is not None:
                raise calls.first
            if self._failed is not None:
                raise self._failed.clone()

    def end(self) -> None:
        """Flush, then ``end_session`` on every sink (with the failure's code if any).
        Every sink gets every chunk and ``end_session`` even when others raised; the
        first error is re-raised afterwards (later ones are reported, ``SinkCalls``)."""
        with self._flush_lock:
            if self.closed:
                return
            self.closed = True
            calls = SinkCalls()
            with self._meta_lock:
                callbacks, self._end_callbacks = self._end_callbacks, []
            for fn in callbacks:  # detach everything whatever fails
                calls.call(fn)
            try:
                chunks = self._collect()
            except BaseException as exc:  # still end every sink
                calls.add(exc)
                chunks = []
            for m, p in chunks:
                parts = [p] if p else []
                for sink in self.sinks:
                    calls.call(sink.write, m, parts)
            first = calls.first
            if self._failed is not None:
                status = int(self._failed.code)
            elif first is not None:
                status = int(first.code if isinstance(first, HalError) else StatusCode.INTERNAL)
            else:
                status = 0
            meta, payload = self._session_chunk(host_time_ns(), status)
            for sink in self.sinks:
                calls.call(sink.write, meta, [payload])
                calls.call(sink.end_session, meta, status)
            if calls.first is not None:
                raise calls.first
            if self._failed is not None:
                raise self._failed.clone()
