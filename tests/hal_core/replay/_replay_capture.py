"""A small writer of synthetic ``.ireereplay`` captures for tests (not a recorder).

``Capture`` appends records in order; ``payload(ptype, **fields)`` packs a payload struct
from its field names (nested names such as ``target_ref.buffer_id``; omitted fields are
zero). ``data()`` gives the file bytes with the final length in the header.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from hal_core.replay import _format as F

CORPUS = Path(__file__).resolve().parents[2] / "replay_corpus"
CORPUS_NAMES = ("mlp", "chain", "dynamic", "transient", "conv")


def pack(layout: F.Layout, **fields: Any) -> bytes:
    values = []
    for name in layout.fields:
        key = name.replace(".", "__")
        v = fields.get(key, fields.get(name, 0))
        values.append(v if name != "digest" or v else b"")
    return layout.struct.pack(*values)


def payload(ptype: int, **fields: Any) -> bytes:
    return pack(F.PAYLOAD_LAYOUTS[ptype], **fields)


def ref(buffer_id: int = 0, offset: int = 0, length: int = 0, slot: int = 0) -> bytes:
    return F.BUFFER_REF.struct.pack(buffer_id, offset, length, slot, 0)


def timepoints(*pairs: tuple[int, int]) -> bytes:
    return b"".join(F.TIMEPOINT.struct.pack(s, v) for s, v in pairs)


def ref_fields(
    prefix: str, buffer_id: int, offset: int, length: int, slot: int = 0
) -> dict[str, int]:
    return {
        f"{prefix}__buffer_id": buffer_id,
        f"{prefix}__offset": offset,
        f"{prefix}__length": length,
        f"{prefix}__buffer_slot": slot,
    }


class Capture:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def add(
        self,
        record_type: int,
        body: bytes = b"",
        *,
        payload_type: int = 0,
        operation: int = 0,
        object_type: int = 0,
        device: int = 0,
        obj: int = 0,
        rel: int = 0,
        flags: int = 0,
        status: int = 0,
    ) -> None:
        header = F.RECORD_HEADER.pack(
            96 + len(body),
            len(body),
            len(self.records),
            0,
            device,
            obj,
            rel,
            96,
            record_type,
            flags,
            payload_type,
            object_type,
            operation,
            status,
            0,
            0,
        )
        self.records.append(header + body)

    def op(self, operation: int, body: bytes = b"", ptype: int = 0, **kw: Any) -> None:
        self.add(F.RecordType.OPERATION, body, payload_type=ptype, operation=operation, **kw)

    def device(self) -> None:
        """Device object 1 with allocator object 2."""
        self.add(F.RecordType.SESSION)
        self.add(F.RecordType.OBJECT, object_type=F.ObjectType.DEVICE, obj=1)
        self.add(F.RecordType.OBJECT, object_type=F.ObjectType.ALLOCATOR, device=1, obj=2)

    def scope(self, name: str, begin: bool) -> None:
        raw = name.encode()
        body = payload(F.PayloadType.REPLAY_SCOPE, name_length=len(raw)) + raw
        code = F.OperationCode.REPLAY_SCOPE_BEGIN if begin else F.OperationCode.REPLAY_SCOPE_END
        self.op(code, body, F.PayloadType.REPLAY_SCOPE)

    def semaphore(self, sem_id: int) -> None:
        body = payload(F.PayloadType.SEMAPHORE_OBJECT, queue_affinity=(1 << 64) - 1)
        self.op(
            F.OperationCode.DEVICE_CREATE_SEMAPHORE,
            body,
            F.PayloadType.SEMAPHORE_OBJECT,
            device=1,
            obj=1,
            rel=sem_id,
        )

    def buffer(self, buf_id: int, size: int, data: bytes | None = None) -> None:
        body = payload(
            F.PayloadType.ALLOCATOR_ALLOCATE_BUFFER,
            allocation_size=size,
            queue_affinity=(1 << 64) - 1,
            usage=0x0B000C03,
            type=0x32,
            access=7,
        )
        self.op(
            F.OperationCode.ALLOCATOR_ALLOCATE_BUFFER,
            body,
            F.PayloadType.ALLOCATOR_ALLOCATE_BUFFER,
            device=1,
            obj=2,
            rel=buf_id,
        )
        if data is not None:
            body = (
                payload(
                    F.PayloadType.BUFFER_RANGE_DATA,
                    byte_length=size,
                    data_length=len(data),
                    memory_access=6,
                )
                + data
            )
            self.op(
                F.OperationCode.BUFFER_UNMAP_RANGE,
                body,
                F.PayloadType.BUFFER_RANGE_DATA,
                device=1,
                obj=buf_id,
            )

    def read_back(self, buf_id: int, size: int) -> None:
        body = payload(
            F.PayloadType.BUFFER_RANGE, byte_length=size, mapping_mode=1, memory_access=1
        )
        self.op(
            F.OperationCode.BUFFER_MAP_RANGE, body, F.PayloadType.BUFFER_RANGE, device=1, obj=buf_id
        )

    def data(self, *, major: int = F.VERSION_MAJOR, minor: int = F.VERSION_MINOR) -> bytes:
        body = b"".join(self.records)
        return struct.pack("<IHHIIQ", F.MAGIC, major, minor, 24, 0, 24 + len(body)) + body
