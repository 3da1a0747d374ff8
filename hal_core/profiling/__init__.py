"""HAL-native profiling: options, typed records, sessions, sinks and exporters.

``Device.profiling_begin(ProfilingOptions(...))`` starts a session; ``profiling_flush()``
hands captured chunks to the sinks; ``profiling_end()`` ends it. See docs/profiling.md.
"""

from ._bundle import (
    BUNDLE_MAGIC,
    BUNDLE_VERSION,
    ProfileBundle,
    ProfileBundleSink,
    ProfileChunk,
    read_profile_bundle,
)
from ._capture import CapturedProfile, CaptureSink
from ._clock import ClockMap, host_time_ns
from ._control import supported_families
from ._options import (
    PRECISE_FAMILIES,
    CaptureFilter,
    CaptureFilterFlags,
    CounterSet,
    ProfilingDataFamily,
    ProfilingFlags,
    ProfilingOptions,
    parse_families,
)
from ._perfetto import PerfettoSink, perfetto_trace, write_perfetto
from ._pool_events import record_pool_events
from ._profilers import (
    ProfilerFactory,
    ProfilerInfo,
    available_profilers,
    create_profiler,
    describe_profilers,
)
from ._record_ring import RecordRing
from ._records import (
    CONTENT_TYPE_PREFIX,
    PRODUCER_METRIC_BASE,
    SCHEMA_VERSION,
    SCHEMAS,
    ClockDomain,
    CounterSampleScope,
    DependencyStrategy,
    DeviceMetric,
    MemoryEventType,
    MetricSemantic,
    MetricUnit,
    MetricValueKind,
    RecordSchema,
    decode_records,
    pack_records,
    schema_for,
)
from ._session import FunctionMetadata, MetricDescriptor, ProfilingSession
from ._sink import NO_ORDINAL, ChunkFlags, ChunkMetadata, ProfileSink
from ._statistics import FunctionStatistics, ProfileStatistics, QueueStatistics, StatisticsSink

__all__ = [
    "BUNDLE_MAGIC",
    "BUNDLE_VERSION",
    "CONTENT_TYPE_PREFIX",
    "NO_ORDINAL",
    "PRECISE_FAMILIES",
    "PRODUCER_METRIC_BASE",
    "SCHEMAS",
    "SCHEMA_VERSION",
    "CaptureFilter",
    "CaptureFilterFlags",
    "CaptureSink",
    "CapturedProfile",
    "ChunkFlags",
    "ChunkMetadata",
    "ClockDomain",
    "ClockMap",
    "CounterSampleScope",
    "CounterSet",
    "DependencyStrategy",
    "DeviceMetric",
    "FunctionMetadata",
    "FunctionStatistics",
    "MemoryEventType",
    "MetricDescriptor",
    "MetricSemantic",
    "MetricUnit",
    "MetricValueKind",
    "PerfettoSink",
    "ProfileBundle",
    "ProfileBundleSink",
    "ProfileChunk",
    "ProfileSink",
    "ProfileStatistics",
    "ProfilerFactory",
    "ProfilerInfo",
    "ProfilingDataFamily",
    "ProfilingFlags",
    "ProfilingOptions",
    "ProfilingSession",
    "QueueStatistics",
    "RecordRing",
    "RecordSchema",
    "StatisticsSink",
    "available_profilers",
    "create_profiler",
    "decode_records",
    "describe_profilers",
    "host_time_ns",
    "pack_records",
    "parse_families",
    "perfetto_trace",
    "read_profile_bundle",
    "record_pool_events",
    "schema_for",
    "supported_families",
    "write_perfetto",
]
