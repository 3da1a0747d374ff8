"""Chunks and the sink protocol.

Everything a session produces is a chunk: ``ChunkMetadata`` (content type, ids, flags)
plus a payload of packed records (see ``_records``). Sinks receive chunks only from
``Device.profiling_flush``/``profiling_end``, on the calling thread and with no queue
lock held, so a sink may block, allocate or write files. A sink that raises stops neither
the other sinks nor the session (``SinkCalls``). A sink must copy what it keeps:
the payload memory is reused once ``write`` returns.
"""

from __future__ import annotations

import enum
from typing import Callable, Protocol, Sequence, runtime_checkable

import attrs

from .._callback_errors import report_callback_error

__all__ = ["ChunkFlags", "ChunkMetadata", "ProfileSink", "SinkCalls", "NO_ORDINAL"]

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
    ``profiling_flush``/``profiling_end`` after every sink got every chunk (and, at the
    end, ``end_session``) and the session's resources are released; further errors of
    the same call are reported through ``sys.unraisablehook``.
    """

    def begin_session(self, metadata: ChunkMetadata) -> None: ...

    def write(self, metadata: ChunkMetadata, payloads: Sequence[memoryview | bytes]) -> None: ...

    def end_session(self, metadata: ChunkMetadata, status_code: int) -> None: ...


class SinkCalls:
    """Calls sinks so that one sink's error neither stops the others nor loses chunks.

    ``call(fn, *args)`` runs one sink method; the first error raised is kept in ``first``
    (the session re-raises it once every sink had its calls), later ones are reported
    through ``sys.unraisablehook`` so none is silently lost. Used on the flushing thread
    only; the caller holds the session's flush lock and no queue lock.
    """

    __slots__ = ("first",)

    def __init__(self) -> None:
        self.first: BaseException | None = None

    def call(self, fn: Callable[..., object], *args: object) -> bool:
        """``fn(*args)``; False when it raised (the error is kept or reported)."""
        try:
            fn(*args)
        except BaseException as exc:  # a sink bug must not stop the other sinks
            self.add(exc, fn)
            return False
        return True

    def add(self, exc: BaseException, fn: object = None) -> None:
        if self.first is None:
            self.first = exc
        else:
            report_callback_error(exc, "a profiling sink", fn)
