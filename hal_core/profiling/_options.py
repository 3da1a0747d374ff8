"""Profiling options: data families, the capture filter and counter sets.

All option types are frozen attrs classes; building one validates its fields and touches
no device. ``Device.profiling_begin`` checks them against what the device can produce.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from .._status import InvalidArgumentError

__all__ = [
    "ProfilingDataFamily",
    "ProfilingFlags",
    "CaptureFilterFlags",
    "CaptureFilter",
    "CounterSet",
    "ProfilingOptions",
    "parse_families",
]


class ProfilingDataFamily(enum.IntFlag):
    """What a profiling session captures (IREE's profiling data families)."""

    NONE = 0
    QUEUE_EVENTS = 1 << 0
    HOST_EXECUTION_EVENTS = 1 << 1
    DEVICE_QUEUE_EVENTS = 1 << 2
    DISPATCH_EVENTS = 1 << 3
    COUNTER_SAMPLES = 1 << 4
    EXECUTABLE_METADATA = 1 << 5
    EXECUTABLE_TRACES = 1 << 6
    MEMORY_EVENTS = 1 << 7
    DEVICE_METRICS = 1 << 8
    COUNTER_RANGES = 1 << 9


#: Families whose records form a precise timeline: losing one record makes the capture
#: wrong, so a full ring fails the session instead of dropping (IREE's rule).
PRECISE_FAMILIES = (
    ProfilingDataFamily.DISPATCH_EVENTS
    | ProfilingDataFamily.DEVICE_QUEUE_EVENTS
    | ProfilingDataFamily.COUNTER_SAMPLES
    | ProfilingDataFamily.COUNTER_RANGES
    | ProfilingDataFamily.EXECUTABLE_TRACES
)

_COUNTER_FAMILIES = ProfilingDataFamily.COUNTER_SAMPLES | ProfilingDataFamily.COUNTER_RANGES


class ProfilingFlags(enum.IntFlag):
    NONE = 0
    #: Only cheap aggregate data (IREE turns this into QUEUE_EVENTS|EXECUTABLE_METADATA).
    LIGHTWEIGHT_STATISTICS = 1 << 0


class CaptureFilterFlags(enum.IntFlag):
    """Which fields of a ``CaptureFilter`` are active."""

    NONE = 0
    FUNCTION_PATTERN = 1 << 0
    COMMAND_BUFFER_ID = 1 << 1
    COMMAND_INDEX = 1 << 2
    PHYSICAL_DEVICE = 1 << 3
    QUEUE = 1 << 4


def parse_families(text: str) -> ProfilingDataFamily:
    """``"queue-events,dispatch-events"`` (names as IREE's ``--device_profiling_mode``, or
    member names) -> flags. INVALID_ARGUMENT names the unknown entry and lists the valid."""
    aliases = {
        "host-execution": "HOST_EXECUTION_EVENTS",
        "counters": "COUNTER_SAMPLES",
    }
    out = ProfilingDataFamily.NONE
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name = aliases.get(item, item.replace("-", "_").upper())
        try:
            out |= ProfilingDataFamily[name]
        except KeyError:
            valid = ", ".join(
                m.name.lower().replace("_", "-")
                for m in ProfilingDataFamily
                if m.name and m is not ProfilingDataFamily.NONE
            )
            raise InvalidArgumentError(
                f"unknown profiling data family {item!r}; valid families: {valid}"
            ) from None
    return out


def _family(value: Any) -> ProfilingDataFamily:
    if isinstance(value, str):
        return parse_families(value)
    try:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError
        return ProfilingDataFamily(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"data_families must be ProfilingDataFamily flags or a comma list, got {value!r}"
        ) from None


@attrs.frozen
class CaptureFilter:
    """Limits the *heavy* artifacts (dispatch events, counters, traces) to matching work.

    Each field is active only when its bit is in ``flags``; ``matches_*`` helpers are used
    by producers once per executable function / command buffer, never per record.
    """

    flags: CaptureFilterFlags = attrs.field(
        default=CaptureFilterFlags.NONE, converter=CaptureFilterFlags
    )
    function_pattern: str = ""
    command_buffer_id: int = 0
    command_index: int = 0
    physical_device_ordinal: int = 0
    queue_ordinal: int = 0

    def __attrs_post_init__(self) -> None:
        f = self.flags
        if f & CaptureFilterFlags.FUNCTION_PATTERN and not self.function_pattern:
            raise InvalidArgumentError(
                "capture filter enables FUNCTION_PATTERN but function_pattern is empty; "
                "give a glob such as 'matmul_*' or drop the flag"
            )
        if f & CaptureFilterFlags.COMMAND_BUFFER_ID and self.command_buffer_id == 0:
            raise InvalidArgumentError(
                "capture filter enables COMMAND_BUFFER_ID but command_buffer_id is 0; "
                "command buffer ids start at 1"
            )
        for name in ("command_index", "physical_device_ordinal", "queue_ordinal"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(
                    f"capture filter {name} must be >= 0, got {getattr(self, name)}"
                )

    @classmethod
    def of(
        cls,
        *,
        function_pattern: str | None = None,
        command_buffer_id: int | None = None,
        command_index: int | None = None,
        physical_device_ordinal: int | None = None,
        queue_ordinal: int | None = None,
    ) -> "CaptureFilter":
        """Build a filter setting the flag of every field given."""
        flags = CaptureFilterFlags.NONE
        kw: dict[str, Any] = {}
        for name, flag, value in (
            ("function_pattern", CaptureFilterFlags.FUNCTION_PATTERN, function_pattern),
            ("command_buffer_id", CaptureFilterFlags.COMMAND_BUFFER_ID, command_buffer_id),
            ("command_index", CaptureFilterFlags.COMMAND_INDEX, command_index),
            (
                "physical_device_ordinal",
                CaptureFilterFlags.PHYSICAL_DEVICE,
                physical_device_ordinal,
            ),
            ("queue_ordinal", CaptureFilterFlags.QUEUE, queue_ordinal),
        ):
            if value is not None:
                flags |= flag
                kw[name] = value
        return cls(flags=flags, **kw)

    def matches_function(self, name: str) -> bool:
        if not self.flags & CaptureFilterFlags.FUNCTION_PATTERN:
            return True
        import fnmatch

        return fnmatch.fnmatchcase(name, self.function_pattern)

    def matches_queue(self, device_ordinal: int, queue_ordinal: int) -> bool:
        f = self.flags
        if (
            f & CaptureFilterFlags.PHYSICAL_DEVICE
            and device_ordinal != self.physical_device_ordinal
        ):
            return False
        if f & CaptureFilterFlags.QUEUE and queue_ordinal != self.queue_ordinal:
            return False
        return True

    def matches_command(self, command_buffer_id: int, command_index: int) -> bool:
        f = self.flags
        if f & CaptureFilterFlags.COMMAND_BUFFER_ID and command_buffer_id != self.command_buffer_id:
            return False
        if f & CaptureFilterFlags.COMMAND_INDEX and command_index != self.command_index:
            return False
        return True


def _counter_names(value: Any) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names:
        raise InvalidArgumentError("a counter set needs at least one counter name")
    for n in names:
        if not isinstance(n, str) or not n:
            raise InvalidArgumentError(f"counter names must be non-empty strings, got {n!r}")
    return names


@attrs.frozen
class CounterSet:
    """A named group of hardware counters sampled together (e.g. ``SQ_WAVES``)."""

    name: str
    counters: tuple[str, ...] = attrs.field(converter=_counter_names)

    def __attrs_post_init__(self) -> None:
        if not self.name:
            raise InvalidArgumentError("a counter set needs a non-empty name")


def _counter_sets(value: Any) -> tuple[CounterSet, ...]:
    out = tuple(value or ())
    for item in out:
        if not isinstance(item, CounterSet):
            raise InvalidArgumentError(
                f"counter_sets must hold CounterSet objects, got {type(item).__name__}"
            )
    return out


def _sink_list(value: Any) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


@attrs.frozen
class ProfilingOptions:
    """What to capture and where it goes.

    ``sinks`` receive chunks from ``profiling_flush``/``profiling_end`` only, on the thread
    calling those, never under queue locks. ``ring_capacity`` is the number of records each
    per-stream ring holds between flushes: aggregate streams (queue, host-execution, memory
    events) drop and mark the chunk TRUNCATED when full, precise ones fail the session.
    """

    data_families: ProfilingDataFamily = attrs.field(
        default=ProfilingDataFamily.NONE, converter=_family
    )
    sinks: tuple = attrs.field(default=(), converter=_sink_list)
    capture_filter: CaptureFilter = attrs.field(factory=CaptureFilter)
    counter_sets: tuple[CounterSet, ...] = attrs.field(default=(), converter=_counter_sets)
    flags: ProfilingFlags = attrs.field(default=ProfilingFlags.NONE, converter=ProfilingFlags)
    ring_capacity: int = 1 << 16

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.capture_filter, CaptureFilter):
            raise InvalidArgumentError(
                f"capture_filter must be a CaptureFilter, got {type(self.capture_filter).__name__}"
            )
        if self.counter_sets and not self.data_families & _COUNTER_FAMILIES:
            raise InvalidArgumentError(
                "counter_sets were given but neither COUNTER_SAMPLES nor COUNTER_RANGES is "
                "requested; add one of them to data_families"
            )
        if self.data_families & _COUNTER_FAMILIES and not self.counter_sets:
            raise InvalidArgumentError(
                "COUNTER_SAMPLES/COUNTER_RANGES need at least one CounterSet in counter_sets"
            )
        if not isinstance(self.ring_capacity, int) or not 16 <= self.ring_capacity <= 1 << 26:
            raise InvalidArgumentError(
                f"ring_capacity must be an int in [16, {1 << 26}], got {self.ring_capacity!r}"
            )
        for sink in self.sinks:
            for method in ("begin_session", "write", "end_session"):
                if not callable(getattr(sink, method, None)):
                    raise InvalidArgumentError(
                        f"sink {sink!r} has no {method}() method; sinks implement "
                        "hal_core.profiling.ProfileSink"
                    )

    @property
    def effective_families(self) -> ProfilingDataFamily:
        fam = self.data_families
        if self.flags & ProfilingFlags.LIGHTWEIGHT_STATISTICS:
            fam |= ProfilingDataFamily.QUEUE_EVENTS | ProfilingDataFamily.EXECUTABLE_METADATA
        return fam
