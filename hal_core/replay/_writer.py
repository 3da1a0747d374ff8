"""Writing ``.ireereplay`` v2.0 files: the header, then records appended in order.

``CaptureWriter`` assigns sequence ordinals, writes each record as it comes (so a crash
leaves a readable prefix: the header's file length stays zero until ``close()``, which
readers take as "read to the end") and patches the final length in at ``close()``.
Thread-safety: ``record`` may be called from any thread; records are serialised under one
lock (held only while appending bytes, never across a wait).
"""

from __future__ import annotations

import os
import threading
from typing import BinaryIO

from .._status import FailedPreconditionError
from . import _format as F

__all__ = ["CaptureWriter"]


class CaptureWriter:
    """Appends records to a new capture file at ``path`` (truncated if it exists)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: BinaryIO | None = open(self.path, "wb")
        self._lock = threading.Lock()
        self._sequence = 0
        self._length = F.FILE_HEADER.size
        self._file.write(F.FILE_HEADER.pack(F.MAGIC, F.VERSION_MAJOR, F.VERSION_MINOR, 24, 0, 0))

    def record(
        self,
        record_type: int,
        payload: bytes = b"",
        *,
        payload_type: int = 0,
        object_type: int = 0,
        operation_code: int = 0,
        device_id: int = 0,
        object_id: int = 0,
        related_object_id: int = 0,
        status_code: int = 0,
        flags: int = 0,
    ) -> int:
        """Append one record; returns its sequence ordinal. FAILED_PRECONDITION after
        ``close()``."""
        with self._lock:
            f = self._file
            if f is None:
                raise FailedPreconditionError(f"capture {self.path!r} is closed")
            seq = self._sequence
            header = F.RECORD_HEADER.pack(
                F.RECORD_HEADER.size + len(payload),
                len(payload),
                seq,
                threading.get_ident() & 0xFFFFFFFFFFFFFFFF,
                device_id,
                object_id,
                related_object_id,
                F.RECORD_HEADER.size,
                record_type,
                flags,
                payload_type,
                object_type,
                operation_code,
                status_code,
                0,
                0,
            )
            f.write(header)
            f.write(payload)
            self._sequence = seq + 1
            self._length += len(header) + len(payload)
            return seq

    @property
    def closed(self) -> bool:
        return self._file is None

    def close(self) -> None:
        """Write the final file length into the header and close. Idempotent."""
        with self._lock:
            f = self._file
            if f is None:
                return
            self._file = None
            f.seek(16)
            f.write(self._length.to_bytes(8, "little"))
            f.close()
