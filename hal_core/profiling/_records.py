"""Typed, versioned profile records and their chunk content types.

Every record is a fixed little-endian numpy structured layout that starts with a ``u4``
``record_length`` (the fixed part plus any trailing bytes, padded to 8). Readers that
know a shorter layout skip the rest of each record, so fields can be appended later
without breaking old readers (forward compatibility, as IREE's profile schema does).
Metadata kinds carry a trailing NUL-padded UTF-8 name; counter samples carry a trailing
``u8[value_count]``; device-metric samples ``(metric_id u8, value 8 bytes)[value_count]``;
executable traces their raw trace bytes.

Time domains: fields named ``*_host_time_ns`` / ``host_time_*`` are host nanoseconds
(``time.perf_counter_ns``); fields named ``*_tick`` are device ticks of the device named by
``physical_device_ordinal``. They are converted only through clock-correlation records.
"""

from __future__ import annotations

import enum
from typing import Any, Iterable, Mapping, Sequence

import attrs
import numpy as np

from .._status import DataLossError, InvalidArgumentError

__all__ = [
    "SCHEMA_VERSION",
    "CONTENT_TYPE_PREFIX",
    "RecordSchema",
    "SCHEMAS",
    "schema_for",
    "ClockDomain",
    "DependencyStrategy",
    "MemoryEventType",
    "CounterSampleScope",
    "MetricUnit",
    "MetricValueKind",
    "MetricSemantic",
    "DeviceMetric",
    "pack_records",
    "decode_records",
]

SCHEMA_VERSION = 1
CONTENT_TYPE_PREFIX = "application/vnd.iree.hal.profile."
NO_ORDINAL = 0xFFFFFFFF


class ClockDomain(enum.IntEnum):
    """Which clock a device's ``*_tick`` fields count."""

    HOST_NS = 0  # ticks are host nanoseconds (local CPU devices)
    DEVICE_TICKS = 1  # a device clock; convert through clock correlations


class DependencyStrategy(enum.IntEnum):
    INLINE = 0
    DEVICE_BARRIER = 1
    SOFTWARE_DEFER = 2


class MemoryEventType(enum.IntEnum):
    SLAB_ACQUIRE = 0
    SLAB_RELEASE = 1
    POOL_RESERVE = 2
    POOL_MATERIALIZE = 3
    POOL_RELEASE = 4
    POOL_WAIT = 5
    QUEUE_ALLOCA = 6
    QUEUE_DEALLOCA = 7
    BUFFER_ALLOCATE = 8
    BUFFER_FREE = 9
    BUFFER_IMPORT = 10
    BUFFER_UNIMPORT = 11


class CounterSampleScope(enum.IntEnum):
    DISPATCH = 0
    COMMAND_OPERATION = 1
    DEVICE_TIME_RANGE = 2


class MetricUnit(enum.IntEnum):
    COUNT = 0
    HERTZ = 1
    BYTES = 2
    BYTES_PER_SECOND = 3
    MILLIPERCENT = 4
    MILLIDEGREES_CELSIUS = 5
    MICROWATTS = 6
    MICROJOULES = 7
    BITFIELD = 8
    ENUM = 9


class MetricValueKind(enum.IntEnum):
    I64 = 0
    U64 = 1
    F64 = 2


class MetricSemantic(enum.IntEnum):
    INSTANT = 0
    AVERAGE = 1
    CUMULATIVE = 2
    DELTA = 3
    STATE = 4


class DeviceMetric(enum.IntEnum):
    """Built-in device-metric ids; producer-specific ids start at ``1 << 63``."""

    CLOCK_COMPUTE_CURRENT = 1
    CLOCK_MEMORY_CURRENT = 2
    TEMPERATURE_EDGE = 3
    TEMPERATURE_HOTSPOT = 4
    TEMPERATURE_MEMORY = 5
    POWER_SOCKET = 6
    ENERGY_SOCKET = 7
    ACTIVITY_COMPUTE = 8
    ACTIVITY_MEMORY = 9
    MEMORY_LOCAL_USED = 10
    MEMORY_LOCAL_TOTAL = 11
    MEMORY_TRAFFIC_READ = 12
    MEMORY_TRAFFIC_WRITE = 13
    THROTTLE_STATUS = 14
    PERFORMANCE_TIER = 15

    @property
    def dotted_name(self) -> str:
        return self.name.lower().replace("_", ".")


PRODUCER_METRIC_BASE = 1 << 63


@attrs.frozen
class RecordSchema:
    """One record kind: its chunk content type, fixed layout and trailing data kind."""

    kind: str
    dtype: np.dtype
    trailing: str | None = None  # None | "name" | "u64" | "metric" | "bytes"

    @property
    def content_type(self) -> str:
        return CONTENT_TYPE_PREFIX + self.kind

    @property
    def body_fields(self) -> list[str]:
        return [n for n in self.dtype.names or () if n != "record_length"]


def _dt(fields: list[tuple]) -> np.dtype:
    return np.dtype([("record_length", "<u4")] + fields)


U4, U8, I8, U2 = "<u4", "<u8", "<i8", "<u2"

SCHEMAS: dict[str, RecordSchema] = {}


def _schema(kind: str, fields: list[tuple], trailing: str | None = None) -> RecordSchema:
    s = RecordSchema(kind, _dt(fields), trailing)
    SCHEMAS[s.content_type] = s
    return s


SESSION = _schema(
    "session",
    [
        ("schema_version", U4),
        ("session_id", U8),
        ("begin_host_time_ns", I8),
        ("end_host_time_ns", I8),
        ("data_families", U8),
        ("flags", U4),
        ("status_code", U4),
    ],
    "name",
)
DEVICES = _schema(
    "devices",
    [
        ("physical_device_ordinal", U4),
        ("queue_count", U4),
        ("clock_domain", U4),
        ("reserved", U4),
        ("tick_frequency_hz", U8),
    ],
    "name",
)
QUEUES = _schema(
    "queues",
    [("physical_device_ordinal", U4), ("queue_ordinal", U4), ("stream_id", U8)],
)
QUEUE_EVENTS = _schema(
    "queue-events",
    [
        ("type", U2),
        ("dependency_strategy", U2),
        ("flags", U4),
        ("physical_device_ordinal", U4),
        ("queue_ordinal", U4),
        ("event_id", U8),
        ("host_time_ns", I8),
        ("submission_id", U8),
        ("command_buffer_id", U8),
        ("allocation_id", U8),
        ("stream_id", U8),
        ("wait_count", U4),
        ("signal_count", U4),
        ("barrier_count", U4),
        ("operation_count", U4),
        ("payload_length", U8),
        ("ready_host_time_ns", I8),
    ],
)
HOST_EXECUTION_EVENTS = _schema(
    "host-execution-events",
    [
        ("type", U2),
        ("status_code", U2),
        ("physical_device_ordinal", U4),
        ("queue_ordinal", U4),
        ("thread_id", U4),
        ("event_id", U8),
        ("submission_id", U8),
        ("stream_id", U8),
        ("start_host_time_ns", I8),
        ("end_host_time_ns", I8),
        ("payload_length", U8),
    ],
)
QUEUE_DEVICE_EVENTS = _schema(
    "queue-device-events",
    [
        ("type", U2),
        ("flags", U2),
        ("physical_device_ordinal", U4),
        ("queue_ordinal", U4),
        ("reserved", U4),
        ("event_id", U8),
        ("submission_id", U8),
        ("command_buffer_id", U8),
        ("stream_id", U8),
        ("start_tick", U8),
        ("end_tick", U8),
    ],
)
DISPATCH_EVENTS = _schema(
    "dispatch-events",
    [
        ("physical_device_ordinal", U4),
        ("queue_ordinal", U4),
        ("event_id", U8),
        ("submission_id", U8),
        ("command_buffer_id", U8),
        ("executable_id", U8),
        ("command_index", U4),
        ("function_ordinal", U4),
        ("workgroup_count", U4, (3,)),
        ("workgroup_size", U4, (3,)),
        ("start_tick", U8),
        ("end_tick", U8),
    ],
)
MEMORY_EVENTS = _schema(
    "memory-events",
    [
        ("type", U2),
        ("flags", U2),
        ("physical_device_ordinal", U4),
        ("queue_ordinal", U4),
        ("reserved", U4),
        ("event_id", U8),
        ("host_time_ns", I8),
        ("allocation_id", U8),
        ("pool_id", U8),
        ("backing_id", U8),
        ("submission_id", U8),
        ("offset", U8),
        ("length", U8),
        ("alignment", U8),
        ("pool_bytes_reserved", U8),
        ("pool_bytes_committed", U8),
    ],
)
EXECUTABLES = _schema(
    "executables",
    [("physical_device_ordinal", U4), ("function_count", U4), ("executable_id", U8)],
    "name",
)
EXECUTABLE_FUNCTIONS = _schema(
    "executable-functions",
    [
        ("function_ordinal", U4),
        ("binding_count", U4),
        ("executable_id", U8),
        ("constant_count", U4),
        ("workgroup_size", U4, (3,)),
    ],
    "name",
)
CLOCK_CORRELATIONS = _schema(
    "clock-correlations",
    [
        ("physical_device_ordinal", U4),
        ("reserved", U4),
        ("sample_id", U8),
        ("device_tick", U8),
        ("host_time_begin_ns", I8),
        ("host_time_end_ns", I8),
        ("host_cpu_timestamp_ns", I8),
        ("system_timestamp", U8),
        ("system_frequency_hz", U8),
    ],
)
COUNTER_SETS = _schema(
    "counter-sets",
    [("physical_device_ordinal", U4), ("counter_count", U4), ("counter_set_id", U8)],
    "name",
)
COUNTERS = _schema(
    "counters",
    [("counter_index", U4), ("block", U4), ("counter_set_id", U8), ("event", U4), ("reserved", U4)],
    "name",
)
COUNTER_SAMPLES = _schema(
    "counter-samples",
    [
        ("scope", U4),
        ("value_count", U4),
        ("counter_set_id", U8),
        ("dispatch_event_id", U8),
        ("command_buffer_id", U8),
        ("command_index", U4),
        ("physical_device_ordinal", U4),
        ("queue_ordinal", U4),
        ("reserved", U4),
        ("start_tick", U8),
        ("end_tick", U8),
    ],
    "u64",
)
DEVICE_METRIC_SOURCES = _schema(
    "device-metric-sources",
    [("physical_device_ordinal", U4), ("source_class", U4), ("source_id", U8)],
    "name",
)
DEVICE_METRIC_DESCRIPTORS = _schema(
    "device-metric-descriptors",
    [
        ("unit", U2),
        ("value_kind", U2),
        ("semantic", U2),
        ("plot_hint", U2),
        ("metric_id", U8),
        ("source_id", U8),
    ],
    "name",
)
DEVICE_METRIC_SAMPLES = _schema(
    "device-metric-samples",
    [("value_count", U4), ("source_id", U8), ("sample_id", U8), ("host_time_ns", I8)],
    "metric",
)
EXECUTABLE_TRACES = _schema(
    "executable-traces",
    [
        ("physical_device_ordinal", U4),
        ("format", U4),
        ("reserved", U4),
        ("trace_id", U8),
        ("executable_id", U8),
        ("dispatch_event_id", U8),
        ("data_length", U8),
    ],
    "bytes",
)


def schema_for(kind_or_content_type: str) -> RecordSchema:
    key = kind_or_content_type
    if not key.startswith(CONTENT_TYPE_PREFIX):
        key = CONTENT_TYPE_PREFIX + key
    try:
        return SCHEMAS[key]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown profile record kind {kind_or_content_type!r}; known: "
            + ", ".join(s.kind for s in SCHEMAS.values())
        ) from None


def _encode_trailing(schema: RecordSchema, item: Any) -> bytes:
    t = schema.trailing
    if item is None:
        return b""
    if t == "name":
        return str(item).encode("utf-8")
    if t == "u64":
        return np.asarray(item, dtype="<u8").tobytes()
    if t == "metric":
        ids, values = item
        out = np.empty(len(ids), dtype=[("metric_id", "<u8"), ("value", "<i8")])
        out["metric_id"] = ids
        out["value"] = values
        return out.tobytes()
    return bytes(item)


def pack_records(
    schema: RecordSchema, rows: Iterable[Sequence[Any]], trailing: Iterable[Any] | None = None
) -> bytes:
    """Pack body tuples (fields after ``record_length``) and optional trailing items into
    one chunk payload. Used for metadata and variable-length kinds (not hot paths)."""
    rows = list(rows)
    fixed = np.zeros(len(rows), dtype=schema.dtype)
    body = fixed[schema.body_fields]
    for i, row in enumerate(rows):
        body[i] = tuple(row)
    if schema.trailing is None:
        fixed["record_length"] = schema.dtype.itemsize
        return fixed.tobytes()
    tails = list(trailing) if trailing is not None else [None] * len(rows)
    if len(tails) != len(rows):
        raise InvalidArgumentError(
            f"{schema.kind}: {len(rows)} records but {len(tails)} trailing items"
        )
    parts = []
    for i, tail in enumerate(tails):
        data = _encode_trailing(schema, tail)
        total = schema.dtype.itemsize + len(data)
        total += -total % 8
        fixed[i]["record_length"] = total
        parts.append(
            fixed[i : i + 1].tobytes() + data + b"\0" * (total - schema.dtype.itemsize - len(data))
        )
    return b"".join(parts)


_METRIC_DTYPE = np.dtype([("metric_id", "<u8"), ("value", "<i8")])


def _decode_trailing(schema: RecordSchema, head: np.void, data: bytes, pos: int) -> Any:
    """The trailing item of the record at payload byte ``pos``; DATA_LOSS when the
    counts in its head claim more than the record holds."""
    t = schema.trailing
    if t == "name":
        return data.rstrip(b"\0").decode("utf-8", "replace")
    if t in ("u64", "metric"):
        dtype = np.dtype("<u8") if t == "u64" else _METRIC_DTYPE
        n = int(head["value_count"])
        if n * dtype.itemsize > len(data):
            raise DataLossError(
                f"{schema.kind} record at byte {pos} claims {n} values ({n * dtype.itemsize} "
                f"bytes) but carries {len(data)} bytes; the file is truncated or corrupt"
            )
        return np.frombuffer(data, dtype=dtype, count=n).copy()
    if t == "bytes":
        n = int(head["data_length"])
        if n > len(data):
            raise DataLossError(
                f"{schema.kind} record at byte {pos} claims {n} bytes of data but carries "
                f"{len(data)}; the file is truncated or corrupt"
            )
        return data[:n]
    return None


def decode_records(
    content_type: str, payload: bytes | memoryview
) -> tuple[np.ndarray, list | None]:
    """Decode one chunk payload into (fixed records, trailing items or None).

    Records written by a newer schema (longer ``record_length``) decode with the fields
    this reader knows. DATA_LOSS when a record is shorter than its layout or runs past
    the payload; INVALID_ARGUMENT for an unknown content type.
    """
    schema = schema_for(content_type)
    dtype = schema.dtype
    buf = memoryview(payload).cast("B")
    if not len(buf):
        return np.zeros(0, dtype=dtype), ([] if schema.trailing else None)
    if len(buf) < 4:
        raise DataLossError(
            f"{schema.kind} chunk payload of {len(buf)} bytes is shorter than a record's "
            "4-byte record_length at byte 0; the file is truncated or corrupt"
        )
    if schema.trailing is None:
        length = int(np.frombuffer(buf, "<u4", 1)[0])
        if length < dtype.itemsize or len(buf) % length:
            raise DataLossError(
                f"{schema.kind} chunk: record_length {length} at byte 0 does not fit the "
                f"{dtype.itemsize}-byte layout and {len(buf)}-byte payload; the file is "
                "truncated or corrupt"
            )
        if length != dtype.itemsize:
            names = list(dtype.names or ())
            fields: Mapping[str, Any] = dtype.fields or {}
            wide = np.dtype(
                {
                    "names": names,
                    "formats": [fields[n][0] for n in names],
                    "offsets": [fields[n][1] for n in names],
                    "itemsize": length,
                }
            )
            return np.frombuffer(buf, wide).astype(dtype), None
        return np.frombuffer(buf, dtype).copy(), None
    heads = []
    tails = []
    pos = 0
    while pos < len(buf):
        if pos + dtype.itemsize > len(buf):
            raise DataLossError(f"{schema.kind} chunk ends inside a record at byte {pos}")
        head = np.frombuffer(buf, dtype, 1, pos)[0]
        length = int(head["record_length"])
        if length < dtype.itemsize or pos + length > len(buf):
            raise DataLossError(
                f"{schema.kind} record at byte {pos} has record_length {length}, outside "
                f"[{dtype.itemsize}, {len(buf) - pos}]; the file is truncated or corrupt"
            )
        heads.append(head)
        tails.append(
            _decode_trailing(schema, head, bytes(buf[pos + dtype.itemsize : pos + length]), pos)
        )
        pos += length
    return np.array(heads, dtype=dtype), tails
