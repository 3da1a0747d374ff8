"""``RecordRing``: the preallocated ring of one record kind that profiling producers append
to between flushes (a ``ProfilingSession`` holds one per stream and kind).

Concurrency: an append claims a row under the ring's own short lock and writes one tuple;
nothing else runs under it and no thread ever waits while holding it. ``drain`` takes the
rows under the same lock and packs them outside it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import _records as R

__all__ = ["RecordRing"]


class RecordRing:
    """A preallocated ring of one record kind, filled between flushes.

    ``append(row)`` takes the body fields (everything after ``record_length``) as a tuple
    and stores it in a preallocated slot: one short lock and one list store, the cheapest
    thing Python offers (a numpy structured-row store costs about three times as much).
    ``drain`` packs the rows into the kind's numpy structured layout off the hot path.
    When full: an aggregate ring counts the drop (the chunk is marked TRUNCATED); a precise
    ring counts it too and the session fails at the next flush (RESOURCE_EXHAUSTED).
    """

    __slots__ = (
        "schema",
        "precise",
        "capacity",
        "row_fields",
        "_lock",
        "_slots",
        "_count",
        "dropped",
        "_row_dtype",
    )

    def __init__(
        self,
        schema: R.RecordSchema,
        capacity: int,
        precise: bool,
        row_fields: Sequence[str] | None = None,
    ) -> None:
        self.schema = schema
        self.precise = precise
        self.capacity = capacity
        # The fields a producer passes, in order; the rest (device ordinal, stream and
        # event ids, constants) are filled at drain time, off the hot path.
        self.row_fields = list(row_fields or schema.body_fields)
        self._lock = threading.Lock()
        self._slots: list[Any] = [None] * capacity
        self._count = 0
        self.dropped = 0
        # A schema's dtype is structured, so ``fields`` is never None.
        fields: Mapping[str, Any] = schema.dtype.fields or {}
        self._row_dtype = np.dtype([(n, fields[n][0]) for n in self.row_fields])

    def append(self, row: tuple) -> bool:
        # Explicit acquire/release: cheaper than ``with`` here, and nothing between them
        # can raise (an in-bounds list store and int arithmetic).
        lock = self._lock
        lock.acquire()
        i = self._count
        if i < self.capacity:
            self._slots[i] = row
            self._count = i + 1
            lock.release()
            return True
        self.dropped += 1
        lock.release()
        return False

    def __len__(self) -> int:
        return self._count

    def drain(self, fill: Callable[[np.ndarray], None] | None = None) -> tuple[bytes, int]:
        """Take the records and the drop count (emptying the ring) and pack them;
        ``fill(records)`` completes the fields producers did not pass."""
        with self._lock:
            n = self._count
            rows = self._slots[:n]
            dropped = self.dropped
            self._count = 0
            self.dropped = 0
        if not n:
            return b"", dropped
        out = np.zeros(n, dtype=self.schema.dtype)
        out["record_length"] = self.schema.dtype.itemsize
        out[self.row_fields] = np.array(rows, dtype=self._row_dtype)
        if fill is not None:
            fill(out)
        return out.tobytes(), dropped
