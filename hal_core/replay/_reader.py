"""Reading ``.ireereplay`` files: the container, the records and their typed payloads.

``ReplayFile`` holds the whole file in memory (captures are as large as the data the
program moved; the bytes are sliced, never copied, by the payload views). Iterating
``records()`` validates each record header as it goes; ``decode(record)`` validates and
decodes the payload of one record. Every failure is a ``HalError`` naming the byte offset:

* DATA_LOSS: truncated or corrupt bytes (lengths that disagree, reserved fields that are
  not zero, ranges past the end).
* INVALID_ARGUMENT: not a replay file (bad magic) or a major version this reader does not
  speak.
* UNIMPLEMENTED: a record, payload type or operation this reader does not know, in a
  record that is not marked optional (optional ones are skipped by ``records()``).

The reader never loops without advancing: each record is at least one header long.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Iterator

from .._status import DataLossError, HalError, InvalidArgumentError, UnimplementedError
from . import _format as F
from ._format import Layout, PayloadType, RecordFlags, RecordType

__all__ = ["FileHeader", "Record", "ReplayFile"]

_U32 = struct.Struct("<I")
_KNOWN_RECORD_TYPES = frozenset(int(m) for m in RecordType if m != RecordType.NONE)
_KNOWN_PAYLOADS = frozenset(int(m) for m in PayloadType)
_KNOWN_OPERATIONS = frozenset(int(m) for m in F.OperationCode)
_KNOWN_OBJECTS = frozenset(int(m) for m in F.ObjectType)


class FileHeader:
    """The 24-byte file header."""

    __slots__ = ("magic", "version_major", "version_minor", "header_length", "flags", "file_length")

    def __init__(self, values: tuple[int, ...]) -> None:
        (
            self.magic,
            self.version_major,
            self.version_minor,
            self.header_length,
            self.flags,
            self.file_length,
        ) = values


class Record:
    """One record: its header fields, where it lies in the file and its payload bytes.

    ``offset`` is the record's byte offset in the file; ``payload_offset`` the payload's.
    ``payload`` is a read-only memoryview into the file (no copy).
    """

    __slots__ = (
        "offset",
        "payload_offset",
        "payload",
        *F.RECORD_HEADER_FIELDS,
    )

    offset: int
    payload_offset: int
    payload: memoryview
    record_length: int
    payload_length: int
    sequence_ordinal: int
    thread_id: int
    device_id: int
    object_id: int
    related_object_id: int
    header_length: int
    record_type: int
    record_flags: int
    payload_type: int
    object_type: int
    operation_code: int
    status_code: int
    reserved0: int
    reserved1: int

    @property
    def optional(self) -> bool:
        return bool(self.record_flags & RecordFlags.OPTIONAL)

    @property
    def operation_name(self) -> str:
        return F.operation_name(self.operation_code)

    def __repr__(self) -> str:
        what = F.record_type_name(self.record_type)
        if self.record_type == RecordType.OPERATION:
            what += f" {self.operation_name}"
        elif self.record_type == RecordType.OBJECT:
            what += f" {F.object_type_name(self.object_type)}"
        return f"<Record #{self.sequence_ordinal} @{self.offset} {what} obj={self.object_id}>"


def _data_loss(offset: int, message: str) -> HalError:
    return DataLossError(f"corrupt replay file at byte offset {offset}: {message}")


class ReplayFile:
    """An ``.ireereplay`` capture, read fully into memory and validated as it is walked.

    Build with ``ReplayFile.open(path)`` or ``ReplayFile(data)`` (bytes-like). The file
    header is checked at construction; records as ``records()`` reaches them.
    Thread-safety: immutable after construction; any number of readers.
    """

    def __init__(self, data: Any, *, path: str | None = None) -> None:
        self.path = path
        self.data = memoryview(data).toreadonly().cast("B")
        self.header = self._parse_header()
        end = self.header.file_length or len(self.data)
        self.end = end

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "ReplayFile":
        """Read the file at ``path``. NOT_FOUND-like OS errors propagate as ``OSError``."""
        with open(path, "rb") as f:
            data = f.read()
        return cls(data, path=os.fspath(path))

    # -- header ----------------------------------------------------------------------------

    def _parse_header(self) -> FileHeader:
        data = self.data
        if len(data) < F.FILE_HEADER.size:
            raise DataLossError(
                f"replay file is {len(data)} bytes, too small for the {F.FILE_HEADER.size}-byte "
                "header (truncated at byte offset 0)"
            )
        h = FileHeader(F.FILE_HEADER.unpack_from(data, 0))
        if h.magic != F.MAGIC:
            raise InvalidArgumentError(
                f"not an IREE HAL replay file: magic at byte offset 0 is {bytes(data[:4])!r}, "
                "expected b'IRRP'"
            )
        if h.version_major != F.VERSION_MAJOR:
            raise InvalidArgumentError(
                f"unsupported replay file version {h.version_major}.{h.version_minor} at byte "
                f"offset 4: this reader reads version {F.VERSION_MAJOR}.x"
            )
        if h.header_length < F.FILE_HEADER.size or h.header_length > len(data):
            raise _data_loss(8, f"file header length {h.header_length} is invalid")
        if h.flags != 0:
            raise _data_loss(12, f"reserved file flags are {h.flags:#x}, must be zero")
        if h.file_length and h.file_length < h.header_length:
            raise _data_loss(16, f"file length {h.file_length} ends before the first record")
        if h.file_length > len(data):
            raise _data_loss(
                16,
                f"file length {h.file_length} in the header is past the {len(data)} bytes "
                "present (the file is truncated)",
            )
        return h

    # -- records ---------------------------------------------------------------------------

    def records(self, *, skip_optional_unknown: bool = True) -> Iterator[Record]:
        """Every record in file order, validated. Unknown record types marked OPTIONAL are
        skipped (``skip_optional_unknown``); unknown required ones are UNIMPLEMENTED."""
        data = self.data
        end = self.end
        offset = self.header.header_length
        unpack = F.RECORD_HEADER.unpack_from
        fields = F.RECORD_HEADER_FIELDS
        hsize = F.RECORD_HEADER.size
        sequence = 0
        while offset < end:
            if end - offset < hsize:
                raise _data_loss(
                    offset, f"{end - offset} bytes left, too few for a {hsize}-byte record header"
                )
            values = unpack(data, offset)
            rec = Record()
            for name, value in zip(fields, values):
                setattr(rec, name, value)
            rec.offset = offset
            if rec.sequence_ordinal != sequence:
                raise _data_loss(
                    offset, f"record sequence ordinal {rec.sequence_ordinal}, expected {sequence}"
                )
            sequence += 1
            if rec.record_flags & ~int(RecordFlags.OPTIONAL):
                raise _data_loss(offset, f"reserved record flags {rec.record_flags:#x} are set")
            if rec.reserved0 or rec.reserved1:
                raise _data_loss(offset, "reserved record header fields are not zero")
            length = rec.record_length
            if length > end - offset:
                raise _data_loss(
                    offset,
                    f"record of {length} bytes runs past the end of the file at {end} "
                    "(the file is truncated)",
                )
            if rec.header_length < hsize or rec.header_length > length:
                raise _data_loss(offset, f"record header length {rec.header_length} is invalid")
            if rec.payload_length != length - rec.header_length:
                raise _data_loss(
                    offset,
                    f"payload length {rec.payload_length} disagrees with record length {length} "
                    f"and header length {rec.header_length}",
                )
            rec.payload_offset = offset + rec.header_length
            rec.payload = data[rec.payload_offset : offset + length]
            offset += length
            if rec.record_type not in _KNOWN_RECORD_TYPES:
                if rec.optional and skip_optional_unknown:
                    continue
                if not rec.optional:
                    raise UnimplementedError(
                        f"replay record at byte offset {rec.offset} has unknown record type "
                        f"{rec.record_type} and is not marked optional; this reader knows "
                        f"{sorted(F.record_type_name(t) for t in _KNOWN_RECORD_TYPES)}"
                    )
            yield rec

    def record_list(self) -> list[Record]:
        return list(self.records())

    # -- payloads --------------------------------------------------------------------------

    def decode(self, rec: Record) -> dict[str, Any]:
        """The decoded payload of ``rec``: its struct fields (refs and timepoints as dicts,
        arrays as lists), trailing lists decoded, trailing bytes as memoryviews, and
        ``_ranges``: name -> (absolute file offset, length) of each trailing part.
        An empty dict for records without payload. DATA_LOSS / UNIMPLEMENTED as above."""
        ptype = rec.payload_type
        if ptype == PayloadType.NONE:
            if rec.payload_length:
                raise _data_loss(
                    rec.offset, f"record without payload type carries {rec.payload_length} bytes"
                )
            return {}
        if ptype not in _KNOWN_PAYLOADS:
            op = F.operation_name(rec.operation_code)
            raise UnimplementedError(
                f"replay record at byte offset {rec.offset} ({op}) has unknown payload type "
                f"{ptype}; this reader knows payload types 0..{max(_KNOWN_PAYLOADS)}"
            )
        decoder = _DECODERS[ptype]
        return decoder(_Cursor(rec), F.PAYLOAD_LAYOUTS[ptype])


class _Cursor:
    """Walks one record's payload; every read is bounds-checked against the payload."""

    __slots__ = ("rec", "buf", "pos", "base")

    def __init__(self, rec: Record) -> None:
        self.rec = rec
        self.buf = rec.payload
        self.pos = 0
        self.base = rec.payload_offset

    def fail(self, message: str) -> HalError:
        rec = self.rec
        if rec.operation_code:
            what = F.operation_name(rec.operation_code)
        else:
            what = F.record_type_name(rec.record_type)
        kind = F.payload_type_name(rec.payload_type)
        return _data_loss(rec.offset, f"{kind} payload of {what}: {message}")

    def struct(self, layout: Layout) -> dict[str, Any]:
        if self.pos + layout.size > len(self.buf):
            raise self.fail(
                f"{len(self.buf) - self.pos} bytes left at payload offset {self.pos}, "
                f"need {layout.size} for {layout.name}"
            )
        values = layout.struct.unpack_from(self.buf, self.pos)
        self.pos += layout.size
        return _nest(self, layout, values)

    def take(self, name: str, length: int, out: dict[str, Any]) -> memoryview:
        if length > len(self.buf) - self.pos:
            raise self.fail(f"{name} of {length} bytes runs past the payload end")
        view = self.buf[self.pos : self.pos + length]
        out["_ranges"][name] = (self.base + self.pos, length)
        self.pos += length
        return view

    def items(
        self, name: str, layout: Layout, count: int, out: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if count > (len(self.buf) - self.pos) // layout.size:
            raise self.fail(f"{count} {name} run past the payload end")
        out["_ranges"][name] = (self.base + self.pos, count * layout.size)
        return [self.struct(layout) for _ in range(count)]

    def finish(self, out: dict[str, Any]) -> dict[str, Any]:
        if self.pos != len(self.buf):
            raise self.fail(
                f"payload is {len(self.buf)} bytes but its fields account for {self.pos}"
            )
        return out


def _nest(cur: _Cursor, layout: Layout, values: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(layout.fields, values):
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("reserved"):
            if value:
                raise cur.fail(f"reserved field {name} of {layout.name} is {value}, must be zero")
            continue
        if "." not in name:
            out[name] = value
            continue
        head, tail = name.split(".", 1)
        if tail.isdigit():
            out.setdefault(head, []).append(value)
        else:
            out.setdefault(head, {})[tail] = value
    return out


def _head(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = cur.struct(layout)
    out["_ranges"] = {}
    return out


def _plain(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    return cur.finish(_head(cur, layout))


def _semaphores(cur: _Cursor, out: dict[str, Any]) -> None:
    out["wait_semaphores"] = cur.items(
        "wait_semaphores", F.TIMEPOINT, out["wait_semaphore_count"], out
    )
    out["signal_semaphores"] = cur.items(
        "signal_semaphores", F.TIMEPOINT, out["signal_semaphore_count"], out
    )


def _queue_sem_only(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    _semaphores(cur, out)
    return cur.finish(out)


def _trailing(field: str, length_key: str) -> Any:
    def decode(cur: _Cursor, layout: Layout) -> dict[str, Any]:
        out = _head(cur, layout)
        out[field] = cur.take(field, out[length_key], out)
        return cur.finish(out)

    return decode


def _range_data(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    out["data"] = cur.take("data", out["data_length"], out)
    if out["data_length"] > out["byte_length"]:
        raise cur.fail(
            f"{out['data_length']} data bytes overflow the {out['byte_length']}-byte range"
        )
    return cur.finish(out)


def _import_buffer(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    out["data"] = cur.take("data", out["data_length"], out)
    if out["data_length"] > out["allocation"]["allocation_size"]:
        raise cur.fail("captured bytes overflow the allocation")
    return cur.finish(out)


def _scope(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    if out["flags"]:
        raise cur.fail(f"scope flags {out['flags']:#x} are reserved")
    if out["name_length"] == 0:
        raise cur.fail("scope name is empty")
    raw = cur.take("name", out["name_length"], out)
    out["name"] = bytes(raw).decode("utf-8", "replace")
    return cur.finish(out)


def _cache_object(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    out["identifier"] = bytes(cur.take("identifier", out["identifier_length"], out)).decode(
        "utf-8", "replace"
    )
    return cur.finish(out)


def _prepare(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    fmt = cur.take("format", out["executable_format_length"], out)
    out["format"] = bytes(fmt).decode("utf-8", "replace")
    out["data"] = cur.take("data", out["executable_data_length"], out)
    count = out["constant_count"]
    if count > (len(cur.buf) - cur.pos) // 4:
        raise cur.fail(f"{count} specialization constants run past the payload end")
    consts = cur.take("constants", 4 * count, out)
    out["constants"] = list(consts.cast("I")) if count else []
    meta = cur.take("metadata", out["executable_metadata_length"], out)
    cur.finish(out)
    out["functions"] = _function_metadata(cur, meta)
    return out


def _function_metadata(cur: _Cursor, meta: memoryview) -> list[dict[str, Any]]:
    """The captured reflection: one dict per function (name, counts, workgroup size,
    parameters). IREE requires it, so an empty block is DATA_LOSS."""
    if len(meta) == 0:
        raise cur.fail("executable prepare carries no function metadata")
    sub = _Cursor.__new__(_Cursor)
    sub.rec, sub.buf, sub.pos, sub.base = cur.rec, meta, 0, 0
    head = sub.struct(F.EXECUTABLE_METADATA_HEADER)
    nfun = head["function_count"]
    npar = head["parameter_count"]
    if (
        nfun > len(meta) // F.FUNCTION_METADATA.size
        or npar > len(meta) // F.PARAMETER_METADATA.size
    ):
        raise cur.fail("executable metadata counts run past the metadata")
    functions = [sub.struct(F.FUNCTION_METADATA) for _ in range(nfun)]
    params = [sub.struct(F.PARAMETER_METADATA) for _ in range(npar)]
    names_len = head["function_name_storage_length"]
    if sum(f["name_length"] for f in functions) != names_len:
        raise cur.fail("function name lengths disagree with the name storage length")
    if sum(f["parameter_count"] for f in functions) != npar:
        raise cur.fail("function parameter counts disagree with the parameter total")
    if sub.pos + names_len != len(meta):
        raise cur.fail("executable metadata length disagrees with its contents")
    pos = sub.pos
    p = 0
    for f in functions:
        f["name"] = bytes(meta[pos : pos + f["name_length"]]).decode("utf-8", "replace")
        pos += f["name_length"]
        f["parameters"] = params[p : p + f["parameter_count"]]
        p += f["parameter_count"]
    return functions


def _dispatch(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    _semaphores(cur, out)
    out["constants"] = cur.take("constants", out["constants_length"], out)
    out["bindings"] = cur.items("bindings", F.BUFFER_REF, out["binding_count"], out)
    return cur.finish(out)


def _execute(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    _semaphores(cur, out)
    out["bindings"] = cur.items("bindings", F.BUFFER_REF, out["binding_count"], out)
    return cur.finish(out)


def _queue_fill(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    _semaphores(cur, out)
    out["pattern"] = cur.take("pattern", out["pattern_length"], out)
    return cur.finish(out)


def _queue_update(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    _semaphores(cur, out)
    out["data"] = cur.take("data", out["data_length"], out)
    return cur.finish(out)


def _queue_read(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    _semaphores(cur, out)
    out["data"] = cur.take("data", out["captured_data_length"], out)
    return cur.finish(out)


def _barrier(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    out["memory_barriers"] = cur.items(
        "memory_barriers", F.MEMORY_BARRIER, out["memory_barrier_count"], out
    )
    out["buffer_barriers"] = cur.items(
        "buffer_barriers", F.BUFFER_BARRIER, out["buffer_barrier_count"], out
    )
    return cur.finish(out)


_EVENT_ID = Layout("event_id", "Q", ("event_id",))


def _wait_events(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    out["event_ids"] = [
        e["event_id"] for e in cur.items("event_ids", _EVENT_ID, out["event_count"], out)
    ]
    out["memory_barriers"] = cur.items(
        "memory_barriers", F.MEMORY_BARRIER, out["memory_barrier_count"], out
    )
    out["buffer_barriers"] = cur.items(
        "buffer_barriers", F.BUFFER_BARRIER, out["buffer_barrier_count"], out
    )
    return cur.finish(out)


def _file_object(cur: _Cursor, layout: Layout) -> dict[str, Any]:
    out = _head(cur, layout)
    out["reference"] = cur.take("reference", out["reference_length"], out)
    return cur.finish(out)


_DECODERS: dict[int, Any] = {
    PayloadType.BUFFER_OBJECT: _plain,
    PayloadType.ALLOCATOR_ALLOCATE_BUFFER: _plain,
    PayloadType.ALLOCATOR_IMPORT_BUFFER: _import_buffer,
    PayloadType.BUFFER_RANGE: _plain,
    PayloadType.BUFFER_RANGE_DATA: _range_data,
    PayloadType.COMMAND_BUFFER_OBJECT: _plain,
    PayloadType.EXECUTABLE_CACHE_OBJECT: _cache_object,
    PayloadType.EXECUTABLE_PREPARE: _prepare,
    PayloadType.DISPATCH: _dispatch,
    PayloadType.DEVICE_QUEUE_EXECUTE: _execute,
    PayloadType.SEMAPHORE_OBJECT: _plain,
    PayloadType.COMMAND_BUFFER_COPY_BUFFER: _plain,
    PayloadType.DEVICE_QUEUE_ALLOCA: _queue_sem_only,
    PayloadType.COMMAND_BUFFER_EXECUTION_BARRIER: _barrier,
    PayloadType.DEVICE_QUEUE_DEALLOCA: _queue_sem_only,
    PayloadType.DEVICE_QUEUE_FILL: _queue_fill,
    PayloadType.DEVICE_QUEUE_UPDATE: _queue_update,
    PayloadType.DEVICE_QUEUE_COPY: _queue_sem_only,
    PayloadType.COMMAND_BUFFER_FILL_BUFFER: _trailing("pattern", "pattern_length"),
    PayloadType.COMMAND_BUFFER_UPDATE_BUFFER: _trailing("data", "data_length"),
    PayloadType.EVENT_OBJECT: _plain,
    PayloadType.COMMAND_BUFFER_EVENT: _plain,
    PayloadType.COMMAND_BUFFER_WAIT_EVENTS: _wait_events,
    PayloadType.FILE_OBJECT: _file_object,
    PayloadType.DEVICE_QUEUE_READ: _queue_read,
    PayloadType.DEVICE_QUEUE_WRITE: _queue_sem_only,
    PayloadType.REPLAY_SCOPE: _scope,
}
assert set(_DECODERS) == set(_KNOWN_PAYLOADS) - {PayloadType.NONE}


def check_known(rec: Record) -> None:
    """UNIMPLEMENTED for an operation code or object type this reader does not know in
    a record not marked optional."""
    if rec.record_type == RecordType.OPERATION and rec.operation_code not in _KNOWN_OPERATIONS:
        raise UnimplementedError(
            f"replay record at byte offset {rec.offset} has unknown operation code "
            f"{rec.operation_code} (a newer capture format?)"
        )
    if rec.record_type == RecordType.OBJECT and rec.object_type not in _KNOWN_OBJECTS:
        raise UnimplementedError(
            f"replay record at byte offset {rec.offset} has unknown object type {rec.object_type}"
        )
