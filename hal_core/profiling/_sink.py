"""Chunks and the sink protocol.

Everything a session produces is a chunk: ``ChunkMetadata`` (content type, ids, flags)
plus a payload of packed records (see ``_records``). Sinks receive chunks only from
``Device.profiling_flush``/``profiling_end``, on the calling thread and with no queue
lock held, so a sink may block, allocate or write files. A sink must copy what it keeps:
the payload memory is reused once ``write`` returns.
"""

from __future__ import annotations

import enum
from typing import Protocol, Sequence, runtime_checkable

import attrs

__all__ = ["ChunkFlags", "ChunkMetadata", "ProfileSink", "NO_ORDINAL"]

NO_ORDINAL = 0xFFFFFFFF


class ChunkFlags(enum.IntFlag):
    NONE = 0
    #: Records were dropped from this chunk (aggregate streams only); see
    #: ``ChunkMetadata.dropped_record_count``.
    TRUNCATED = 1 << 0


@attrs.frozen
class ChunkMetadata:
    """Describes one chunk. ``physical_device_ordinal``/``queue_ordinal`` are
    ``NO_ORDINAL`` when the chunk is not about one device/queue."""

    content_type: str
    name: str = ""
    session_id: int = 0
    stream_id: int = 0
    event_id: int = 0
    executable_id: int = 0
    command_buffer_id: int = 0
    physical_device_ordinal: int = NO_ORDINAL
    queue_ordinal: int = NO_ORDINAL
    flags: ChunkFlags = attrs.field(default=ChunkFlags.NONE, converter=ChunkFlags)
    dropped_record_count: int = 0


@runtime_checkable
class ProfileSink(Protocol):
    """Consumer of a profiling session.

    Call order: ``begin_session`` once, ``write`` any number of times, ``end_session`` once
    (also when the session failed: ``status_code`` says so). ``payloads`` may be empty
    (a metadata-only or truncation-marker chunk). Errors raised by a sink propagate out of
    ``profiling_flush``/``profiling_end`` after the session's resources are released.
    """

    def begin_session(self, metadata: ChunkMetadata) -> None: ...

    def write(self, metadata: ChunkMetadata, payloads: Sequence[memoryview | bytes]) -> None: ...

    def end_session(self, metadata: ChunkMetadata, status_code: int) -> None: ...
