"""The profile bundle file: a versioned binary container of profile chunks.

Layout (all little-endian)::

    file header (32 bytes)
      magic            8s   b"HALPROF\\0"
      version          u4   BUNDLE_VERSION (readers reject a newer major version)
      header_length    u4   32 (readers skip unknown trailing header bytes)
      flags            u4   0
      reserved         u4   0
      file_length      u8   total bytes; 0 while being written (an unfinished file)
    chunk record, repeated (each starts 8-byte aligned)
      record_length            u4   header + strings + payload + padding
      header_length            u2   80 (readers skip unknown trailing header bytes)
      content_type_length      u2
      name_length              u4
      flags                    u4   ChunkFlags (TRUNCATED)
      session_id, stream_id, event_id, executable_id, command_buffer_id   5 x u8
      physical_device_ordinal, queue_ordinal                              2 x u4
      dropped_record_count     u8
      payload_length           u8
      content type (UTF-8), name (UTF-8), payload (packed records, see _records), padding

``ProfileBundleSink`` writes it; ``read_profile_bundle`` reads it back and
``ProfileBundle.replay(sinks)`` feeds the chunks to other sinks (statistics, Perfetto).
"""

from __future__ import annotations

import os
import struct
import threading
from typing import IO, Any, Iterator, Sequence

import attrs
import numpy as np

from .._status import (
    DataLossError,
    FailedPreconditionError,
    IncompatibleError,
    InvalidArgumentError,
)
from . import _records as R
from ._sink import ChunkFlags, ChunkMetadata

__all__ = [
    "BUNDLE_MAGIC",
    "BUNDLE_VERSION",
    "ProfileBundleSink",
    "ProfileBundle",
    "ProfileChunk",
    "read_profile_bundle",
    "parse_profile_bundle",
]

BUNDLE_MAGIC = b"HALPROF\0"
BUNDLE_VERSION = 1
_FILE_HEADER = struct.Struct("<8sIIIIQ")
_CHUNK_HEADER = struct.Struct("<IHHII5Q2IQQ")


class ProfileBundleSink:
    """Writes a session to a bundle file at ``path``. Not thread-safe by itself; the
    session calls it from one flushing thread at a time. ``close()`` is idempotent."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._length = 0

    def begin_session(self, metadata: ChunkMetadata) -> None:
        with self._lock:
            if self._file is not None:
                raise FailedPreconditionError(
                    f"profile bundle {self.path!r} already has an open session; one sink "
                    "writes one session"
                )
            self._file = open(self.path, "wb")
            self._file.write(
                _FILE_HEADER.pack(BUNDLE_MAGIC, BUNDLE_VERSION, _FILE_HEADER.size, 0, 0, 0)
            )
            self._length = _FILE_HEADER.size

    def write(self, metadata: ChunkMetadata, payloads: Sequence[Any]) -> None:
        with self._lock:
            f = self._file
            if f is None:
                raise FailedPreconditionError(
                    f"profile bundle {self.path!r}: write() outside begin_session/end_session"
                )
            ct = metadata.content_type.encode("utf-8")
            name = metadata.name.encode("utf-8")
            payload_length = sum(memoryview(p).nbytes for p in payloads)
            body = _CHUNK_HEADER.size + len(ct) + len(name) + payload_length
            pad = -body % 8
            f.write(
                _CHUNK_HEADER.pack(
                    body + pad,
                    _CHUNK_HEADER.size,
                    len(ct),
                    len(name),
                    int(metadata.flags),
                    metadata.session_id,
                    metadata.stream_id,
                    metadata.event_id,
                    metadata.executable_id,
                    metadata.command_buffer_id,
                    metadata.physical_device_ordinal,
                    metadata.queue_ordinal,
                    metadata.dropped_record_count,
                    payload_length,
                )
            )
            f.write(ct)
            f.write(name)
            for p in payloads:
                f.write(p)
            f.write(b"\0" * pad)
            self._length += body + pad

    def end_session(self, metadata: ChunkMetadata, status_code: int) -> None:
        with self._lock:
            f = self._file
            if f is None:
                return
            f.seek(_FILE_HEADER.size - 8)
            f.write(struct.pack("<Q", self._length))
            f.close()
            self._file = None

    def close(self) -> None:
        """Close an unfinished file (left with file_length 0, which readers report)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


@attrs.frozen
class ProfileChunk:
    metadata: ChunkMetadata
    payload: bytes

    def records(self) -> tuple[np.ndarray, list | None]:
        """Decoded (fixed records, trailing items) of this chunk."""
        return R.decode_records(self.metadata.content_type, self.payload)


@attrs.frozen
class ProfileBundle:
    """A bundle read back: its version, chunks in file order and helpers."""

    version: int
    chunks: tuple[ProfileChunk, ...]
    complete: bool

    def chunks_of(self, kind: str) -> Iterator[ProfileChunk]:
        ct = R.schema_for(kind).content_type
        return (c for c in self.chunks if c.metadata.content_type == ct)

    def records(self, kind: str) -> np.ndarray:
        """All fixed records of one kind concatenated (trailing data dropped)."""
        schema = R.schema_for(kind)
        arrays = [c.records()[0] for c in self.chunks_of(kind)]
        return np.concatenate(arrays) if arrays else np.zeros(0, schema.dtype)

    def named_records(self, kind: str) -> list[tuple[np.void, Any]]:
        """(record, trailing item) pairs of one kind (names, sample values, trace bytes)."""
        out: list[tuple[np.void, Any]] = []
        for c in self.chunks_of(kind):
            recs, tails = c.records()
            out.extend(zip(recs, tails or [None] * len(recs)))
        return out

    def replay(self, sinks: Sequence[Any]) -> None:
        """Feed this bundle's chunks to ``sinks`` as a live session would."""
        session = [c for c in self.chunks if c.metadata.content_type == R.SESSION.content_type]
        begin = session[0].metadata if session else ChunkMetadata(R.SESSION.content_type)
        status = 0
        if session:
            recs, _ = session[-1].records()
            status = int(recs[-1]["status_code"]) if len(recs) else 0
        for sink in sinks:
            sink.begin_session(begin)
        for c in self.chunks:
            for sink in sinks:
                sink.write(c.metadata, [c.payload] if c.payload else [])
        for sink in sinks:
            sink.end_session(session[-1].metadata if session else begin, status)


def read_profile_bundle(
    path: str | os.PathLike[str], *, allow_incomplete: bool = False
) -> ProfileBundle:
    """Read a bundle file. INVALID_ARGUMENT when it is not a bundle, INCOMPATIBLE for a
    newer version, DATA_LOSS (naming the byte offset) when truncated, unfinished (unless
    ``allow_incomplete``, which returns the whole chunks that are present) or corrupt: a
    chunk whose lengths do not fit, a header shorter than its layout, a name that is not
    UTF-8. Every chunk advances the reader by at least its header, so a corrupt file can
    never loop."""
    with open(path, "rb") as f:
        data = f.read()
    return parse_profile_bundle(data, os.fspath(path), allow_incomplete=allow_incomplete)


def parse_profile_bundle(
    data: bytes, source: str = "<bytes>", *, allow_incomplete: bool = False
) -> ProfileBundle:
    """``read_profile_bundle`` of bytes already in memory (``source`` names them in
    errors)."""
    if data[:8] != BUNDLE_MAGIC[: len(data)] or not data:
        raise InvalidArgumentError(
            f"{source!r} is not a HAL profile bundle (expected magic {BUNDLE_MAGIC!r}, "
            f"got {data[:8]!r}); write one with ProfileBundleSink or `hal profile --format bundle`"
        )
    if len(data) < _FILE_HEADER.size:
        raise DataLossError(
            f"profile bundle {source!r} is cut off at byte {len(data)}, inside its "
            f"{_FILE_HEADER.size}-byte file header"
        )
    _magic, version, header_length, _flags, _res, file_length = _FILE_HEADER.unpack_from(data)
    if version > BUNDLE_VERSION:
        raise IncompatibleError(
            f"profile bundle {source!r} has version {version}; this reader knows up to "
            f"{BUNDLE_VERSION}. Upgrade hal-core to read it"
        )
    if not _FILE_HEADER.size <= header_length <= len(data):
        raise DataLossError(
            f"profile bundle {source!r}: file header at byte 0 claims header_length "
            f"{header_length}, outside [{_FILE_HEADER.size}, {len(data)}]"
        )
    complete = file_length != 0
    if complete and file_length != len(data):
        raise DataLossError(
            f"profile bundle {source!r} says {file_length} bytes but has {len(data)}; "
            "the file was truncated or appended to"
        )
    if not complete and not allow_incomplete:
        raise DataLossError(
            f"profile bundle {source!r} was never finished (the session did not end); "
            "pass allow_incomplete=True to read the chunks written so far"
        )
    # An unfinished file may end inside its last chunk (the writer was interrupted):
    # stop there. Anything else that does not fit is corruption.
    tolerate_tail = allow_incomplete and not complete
    chunks = []
    pos = header_length
    while pos < len(data):
        if pos + _CHUNK_HEADER.size > len(data):
            if tolerate_tail:
                break
            raise DataLossError(f"profile bundle {source!r}: chunk header at byte {pos} is cut off")
        (
            rec_len,
            hdr_len,
            ct_len,
            name_len,
            flags,
            session_id,
            stream_id,
            event_id,
            executable_id,
            cb_id,
            dev,
            queue,
            dropped,
            payload_len,
        ) = _CHUNK_HEADER.unpack_from(data, pos)
        end = pos + rec_len
        if hdr_len < _CHUNK_HEADER.size:
            raise DataLossError(
                f"profile bundle {source!r}: chunk at byte {pos} has header_length {hdr_len}, "
                f"shorter than the {_CHUNK_HEADER.size}-byte chunk header"
            )
        if rec_len < hdr_len + ct_len + name_len + payload_len:
            raise DataLossError(
                f"profile bundle {source!r}: chunk at byte {pos} has record_length {rec_len}, "
                f"less than its parts ({hdr_len} + {ct_len} + {name_len} + {payload_len} bytes)"
            )
        if end > len(data):
            if tolerate_tail:
                break
            raise DataLossError(
                f"profile bundle {source!r}: chunk at byte {pos} claims {rec_len} bytes; only "
                f"{len(data) - pos} remain"
            )
        p = pos + hdr_len
        ct = _utf8(data[p : p + ct_len], source, "content type", p)
        p += ct_len
        name = _utf8(data[p : p + name_len], source, "name", p)
        p += name_len
        payload = data[p : p + payload_len]
        meta = ChunkMetadata(
            ct,
            name,
            session_id,
            stream_id,
            event_id,
            executable_id,
            cb_id,
            dev,
            queue,
            ChunkFlags(flags),
            dropped,
        )
        chunks.append(ProfileChunk(meta, payload))
        pos = end
    return ProfileBundle(version, tuple(chunks), complete)


def _utf8(raw: bytes, source: str, what: str, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataLossError(
            f"profile bundle {source!r}: chunk {what} at byte {offset} is not UTF-8 "
            f"(invalid byte at {offset + exc.start})"
        ) from None
