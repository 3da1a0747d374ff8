"""``OpHistogramSink``: counts queue operations per queue and type, sums host execution
time per type, and writes the result as JSON at the end of the session.

It uses only hal_core's public profiling API: the sink protocol and ``decode_records``.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from typing import Any, Sequence

from hal_core import QueueOpKind
from hal_core.profiling import ChunkMetadata, decode_records

_QUEUE = "application/vnd.iree.hal.profile.queue-events"
_EXEC = "application/vnd.iree.hal.profile.host-execution-events"


class OpHistogramSink:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.ops: dict[int, Counter[str]] = defaultdict(Counter)
        self.exec_ns: Counter[str] = Counter()
        self.dropped = 0

    def begin_session(self, metadata: ChunkMetadata) -> None:
        self.ops.clear()
        self.exec_ns.clear()
        self.dropped = 0

    def write(self, metadata: ChunkMetadata, payloads: Sequence[Any]) -> None:
        self.dropped += metadata.dropped_record_count
        if metadata.content_type not in (_QUEUE, _EXEC) or not payloads:
            return
        records, _ = decode_records(metadata.content_type, b"".join(bytes(p) for p in payloads))
        if metadata.content_type == _QUEUE:
            for r in records:
                self.ops[int(r["queue_ordinal"])][QueueOpKind(int(r["type"])).name] += 1
        else:
            for r in records:
                name = QueueOpKind(int(r["type"])).name
                self.exec_ns[name] += int(r["end_host_time_ns"]) - int(r["start_host_time_ns"])

    def end_session(self, metadata: ChunkMetadata, status_code: int) -> None:
        result = {
            "status": status_code,
            "dropped_records": self.dropped,
            "queues": {str(q): dict(c) for q, c in sorted(self.ops.items())},
            "host_execution_ns": dict(self.exec_ns),
        }
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, sort_keys=True)
