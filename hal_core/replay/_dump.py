"""Projections of a capture for people and tools: text lines and JSON objects.

``json_records`` yields one dict per line of ``iree-dump-replay --format=jsonl``: the file
line, the summary line, then one per record with the same keys and values (payload bytes
are given as ranges of the replay file, never inlined). ``text_lines`` is the readable
form. Both validate the capture as they go (the reader's errors, with byte offsets).
"""

from __future__ import annotations

from typing import Any, Iterator

from .._status import StatusCode, UnimplementedError
from . import _format as F
from ._format import OperationCode, PayloadType, RecordType
from ._reader import Record, ReplayFile

__all__ = ["json_records", "summary", "text_lines"]


def _range(offset: int, length: int) -> dict[str, int]:
    return {
        "offset": offset,
        "length": length,
        "uncompressed_length": length,
        "compression_type": 0,
        "digest_type": 0,
    }


def _ref(ref: dict[str, Any]) -> dict[str, int]:
    return {k: ref[k] for k in ("buffer_id", "offset", "length", "buffer_slot")}


def summary(file: ReplayFile) -> dict[str, Any]:
    """Counts over the whole capture, as ``iree-dump-replay`` reports them."""
    s = dict.fromkeys(
        (
            "record_count",
            "object_count",
            "operation_count",
            "unsupported_count",
            "scope_begin_count",
            "scope_end_count",
            "file_object_count",
            "external_file_count",
            "inline_file_count",
            "range_file_count",
            "unknown_file_reference_count",
            "external_file_total_length",
            "inline_file_total_length",
            "range_file_total_length",
            "captured_read_total_length",
        ),
        0,
    )
    validation = {"identity": 0, "digest": 0, "none": 0, "unknown": 0}
    for rec in file.records():
        s["record_count"] += 1
        if rec.record_type == RecordType.OBJECT:
            s["object_count"] += 1
            if rec.payload_type == PayloadType.FILE_OBJECT:
                p = file.decode(rec)
                s["file_object_count"] += 1
                kind = p["reference_type"]
                if kind == F.FileReferenceType.EXTERNAL_PATH:
                    s["external_file_count"] += 1
                    s["external_file_total_length"] += p["file_length"]
                elif kind == F.FileReferenceType.INLINE_BYTES:
                    s["inline_file_count"] += 1
                    s["inline_file_total_length"] += p["reference_length"]
                elif kind == F.FileReferenceType.CAPTURED_RANGES:
                    s["range_file_count"] += 1
                    s["range_file_total_length"] += p["file_length"]
                else:
                    s["unknown_file_reference_count"] += 1
                key = {0: "none", 1: "identity", 2: "digest"}.get(p["validation_type"], "unknown")
                validation[key] += 1
        elif rec.record_type == RecordType.OPERATION:
            s["operation_count"] += 1
            if rec.operation_code == OperationCode.REPLAY_SCOPE_BEGIN:
                s["scope_begin_count"] += 1
            elif rec.operation_code == OperationCode.REPLAY_SCOPE_END:
                s["scope_end_count"] += 1
            if rec.payload_type == PayloadType.DEVICE_QUEUE_READ:
                s["captured_read_total_length"] += file.decode(rec)["captured_data_length"]
        elif rec.record_type == RecordType.UNSUPPORTED:
            s["unsupported_count"] += 1
    environment = s["external_file_count"] != 0
    out = {
        "kind": "summary",
        "hermetic": not environment and s["unknown_file_reference_count"] == 0,
        "environment_referenced": environment,
        "strict_replay_supported": s["unsupported_count"] == 0
        and s["unknown_file_reference_count"] == 0
        and validation["unknown"] == 0,
    }
    out.update(s)
    out["file_validation"] = validation
    return out


def _status_name(code: int) -> str:
    try:
        return StatusCode(code).name
    except ValueError:
        return "UNKNOWN"


def record_json(file: ReplayFile, rec: Record) -> dict[str, Any]:
    """One record as ``iree-dump-replay --format=jsonl`` writes it."""
    out: dict[str, Any] = {
        "kind": F.record_type_name(rec.record_type),
        "file_offset": rec.offset,
        "record_length": rec.record_length,
        "payload_length": rec.payload_length,
        "sequence_ordinal": rec.sequence_ordinal,
        "thread_id": rec.thread_id,
        "device_id": rec.device_id,
        "object_id": rec.object_id,
        "related_object_id": rec.related_object_id,
        "record_type_code": rec.record_type,
        "record_flags": rec.record_flags,
        "object_type": F.object_type_name(rec.object_type),
        "object_type_code": rec.object_type,
        "operation": F.operation_name(rec.operation_code),
        "operation_code": rec.operation_code,
        "status_code": rec.status_code,
        "status": _status_name(rec.status_code),
        "payload_type": F.payload_type_name(rec.payload_type),
        "payload_type_code": rec.payload_type,
        "payload_range": _range(rec.payload_offset, rec.payload_length),
    }
    if rec.payload_type != PayloadType.NONE and rec.record_type in (
        RecordType.OBJECT,
        RecordType.OPERATION,
    ):
        try:
            payload = file.decode(rec)
        except UnimplementedError:
            if not rec.optional:
                raise
        else:  # an optional record of a newer payload type is shown without its payload
            out["payload"] = project_payload(rec.payload_type, payload)
    return out


def _ranges(p: dict[str, Any], *names: str, suffix: str = "_range") -> dict[str, Any]:
    return {f"{n}{suffix}": _range(*p["_ranges"][n]) for n in names}


def _semaphore_ranges(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "wait_semaphores_range": _range(*p["_ranges"]["wait_semaphores"]),
        "signal_semaphores_range": _range(*p["_ranges"]["signal_semaphores"]),
    }


def _plain(p: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in p.items() if not k.startswith("_")}


def _enum_name(enum: Any, value: int) -> str:
    try:
        return enum(value).name.lower()
    except ValueError:
        return "unknown"


_SEM_COUNTS = ("wait_semaphore_count", "signal_semaphore_count")
# Queue payloads: (scalar keys in IREE's order, buffer refs, (trailing part, JSON name)).
_QUEUE_KEYS: dict[int, tuple[tuple[str, ...], tuple[str, ...], tuple[str, str] | None]] = {
    PayloadType.DEVICE_QUEUE_FILL: (
        ("queue_affinity", "flags", *_SEM_COUNTS, "pattern_length"),
        ("target_ref",),
        ("pattern", "pattern"),
    ),
    PayloadType.DEVICE_QUEUE_UPDATE: (
        ("queue_affinity", "flags", "source_offset", *_SEM_COUNTS, "data_length"),
        ("target_ref",),
        ("data", "data"),
    ),
    PayloadType.DEVICE_QUEUE_COPY: (
        ("queue_affinity", "flags", *_SEM_COUNTS),
        ("source_ref", "target_ref"),
        None,
    ),
    PayloadType.DEVICE_QUEUE_READ: (
        (
            "source_file_id",
            "source_offset",
            "queue_affinity",
            "flags",
            "captured_data_length",
            *_SEM_COUNTS,
        ),
        ("target_ref",),
        ("data", "captured_data"),
    ),
    PayloadType.DEVICE_QUEUE_WRITE: (
        ("target_file_id", "target_offset", "queue_affinity", "flags", *_SEM_COUNTS),
        ("source_ref",),
        None,
    ),
}


def project_payload(ptype: int, p: dict[str, Any]) -> dict[str, Any]:
    """A decoded payload in ``iree-dump-replay``'s JSON shape (bytes as file ranges)."""
    T = PayloadType
    if ptype == T.REPLAY_SCOPE:
        return {"name": p["name"]}
    if ptype == T.EXECUTABLE_CACHE_OBJECT:
        return {"identifier_length": p["identifier_length"], **_ranges(p, "identifier")}
    if ptype == T.EXECUTABLE_PREPARE:
        fns = p["functions"]
        return {
            "queue_affinity": p["queue_affinity"],
            "caching_mode": p["caching_mode"],
            "executable_format_length": p["executable_format_length"],
            "executable_data_length": p["executable_data_length"],
            "constant_count": p["constant_count"],
            "executable_metadata_length": p["executable_metadata_length"],
            **_ranges(p, "format", "data", "constants", "metadata"),
            "metadata_function_count": len(fns),
            "metadata_parameter_count": sum(f["parameter_count"] for f in fns),
            "metadata_function_name_storage_length": sum(f["name_length"] for f in fns),
        }
    if ptype == T.DISPATCH:
        keys: tuple[str, ...] = (
            "executable_id",
            "queue_affinity",
            "function_ordinal",
            "flags",
            "workgroup_count",
            "workgroup_size",
            "dynamic_workgroup_local_memory",
            "wait_semaphore_count",
            "signal_semaphore_count",
            "constants_length",
            "binding_count",
        )
        return {
            **{k: p[k] for k in keys},
            "workgroup_count_ref": _ref(p["workgroup_count_ref"]),
            **_semaphore_ranges(p),
            **_ranges(p, "constants", "bindings"),
        }
    if ptype in (T.COMMAND_BUFFER_EXECUTION_BARRIER, T.COMMAND_BUFFER_WAIT_EVENTS):
        out = {
            k: v
            for k, v in _plain(p).items()
            if k not in ("memory_barriers", "buffer_barriers", "event_ids")
        }
        extra = ("event_ids",) if ptype == T.COMMAND_BUFFER_WAIT_EVENTS else ()
        return {**out, **_ranges(p, *extra, "memory_barriers", "buffer_barriers")}
    if ptype == T.BUFFER_RANGE_DATA:
        out = {k: p[k] for k in ("byte_offset", "byte_length", "mapping_mode", "memory_access")}
        return {**out, **_ranges(p, "data")}
    if ptype in (T.DEVICE_QUEUE_ALLOCA,):
        alloc = p["allocation"]
        return {
            "allocation_size": alloc["allocation_size"],
            "allocation_queue_affinity": alloc["queue_affinity"],
            "min_alignment": alloc["min_alignment"],
            "usage": alloc["usage"],
            "type": alloc["type"],
            "access": alloc["access"],
            "queue_affinity": p["queue_affinity"],
            "flags": p["flags"],
            "wait_semaphore_count": p["wait_semaphore_count"],
            "signal_semaphore_count": p["signal_semaphore_count"],
            **_semaphore_ranges(p),
        }
    if ptype == T.DEVICE_QUEUE_EXECUTE:
        keys = (
            "command_buffer_id",
            "queue_affinity",
            "flags",
            "wait_semaphore_count",
            "signal_semaphore_count",
            "binding_count",
        )
        return {
            **{k: p[k] for k in keys},
            **_semaphore_ranges(p),
            **_ranges(p, "bindings"),
            "wait_semaphores": p["wait_semaphores"],
            "signal_semaphores": p["signal_semaphores"],
            "bindings": [_ref(b) for b in p["bindings"]],
        }
    if ptype == T.DEVICE_QUEUE_DEALLOCA:
        keys = ("queue_affinity", "flags", "wait_semaphore_count", "signal_semaphore_count")
        return {
            **{k: p[k] for k in keys},
            "buffer_ref": _ref(p["buffer_ref"]),
            **_semaphore_ranges(p),
        }
    if ptype == T.COMMAND_BUFFER_COPY_BUFFER:
        return {
            "flags": p["flags"],
            "source": _ref(p["source_ref"]),
            "target": _ref(p["target_ref"]),
        }
    if ptype == T.ALLOCATOR_IMPORT_BUFFER:
        alloc = p["allocation"]
        keys = ("allocation_size", "queue_affinity", "min_alignment", "usage", "type", "access")
        out = {k: alloc[k] for k in keys}
        out.update(external_type=p["external_type"], external_flags=p["external_flags"])
        return {**out, **_ranges(p, "data")}
    if ptype == T.EVENT_OBJECT:
        return {"queue_affinity": p["queue_affinity"], "flags": p["flags"]}
    if ptype == T.FILE_OBJECT:
        keys = (
            "queue_affinity",
            "file_length",
            "file_device",
            "file_inode",
            "file_mtime_ns",
            "reference_length",
            "access",
            "flags",
            "handle_type",
            "reference_type",
        )
        out = {k: p[k] for k in keys}
        out["reference_type_name"] = _enum_name(F.FileReferenceType, p["reference_type"])
        out["validation_type"] = p["validation_type"]
        out["validation_type_name"] = _enum_name(F.FileValidationType, p["validation_type"])
        out["digest_type"] = p["digest_type"]
        out["digest_fnv1a64"] = f"0x{int.from_bytes(p['digest'][:8], 'little'):016x}"
        return {**out, **_ranges(p, "reference")}
    if ptype in _QUEUE_KEYS:
        keys, refs, tail = _QUEUE_KEYS[ptype]
        out = {k: p[k] for k in keys}
        out.update({name: _ref(p[name]) for name in refs})
        out.update(_semaphore_ranges(p))
        if tail:
            out[f"{tail[1]}_range"] = _range(*p["_ranges"][tail[0]])
        return out
    if ptype == T.COMMAND_BUFFER_FILL_BUFFER:
        out = {"flags": p["flags"], "pattern_length": p["pattern_length"]}
        return {**out, "target": _ref(p["target_ref"]), **_ranges(p, "pattern")}
    if ptype == T.COMMAND_BUFFER_UPDATE_BUFFER:
        keys = ("flags", "source_offset", "data_length")
        return {**{k: p[k] for k in keys}, "target": _ref(p["target_ref"]), **_ranges(p, "data")}
    if ptype == T.COMMAND_BUFFER_WAIT_EVENTS:
        keys = (
            "source_stage_mask",
            "target_stage_mask",
            "event_count",
            "memory_barrier_count",
            "buffer_barrier_count",
        )
        out = {k: p[k] for k in keys}
        out["events_range"] = _range(*p["_ranges"]["event_ids"])
        return {**out, **_ranges(p, "memory_barriers", "buffer_barriers")}
    # The remaining payloads: their scalar fields, refs as dicts, trailing parts as ranges.
    out = {}
    for k, v in _plain(p).items():
        if isinstance(v, memoryview) or k in ("wait_semaphores", "signal_semaphores"):
            continue
        out[k] = _ref(v) if isinstance(v, dict) and "buffer_slot" in v else v
        if isinstance(v, (bytes, bytearray)):
            out[k] = v.hex()
    for name, (off, length) in p["_ranges"].items():
        out[f"{name}_range"] = _range(off, length)
    return out


def json_records(file: ReplayFile) -> Iterator[dict[str, Any]]:
    """The file line, the summary line, then every record (see the module docstring)."""
    h = file.header
    yield {
        "kind": "file",
        "version_major": h.version_major,
        "version_minor": h.version_minor,
        "header_length": h.header_length,
        "flags": h.flags,
        "file_length": h.file_length,
    }
    yield summary(file)
    for rec in file.records():
        yield record_json(file, rec)


def _text_value(v: Any) -> str:
    if isinstance(v, dict):
        return (
            "{"
            + " ".join(
                f"{k}={_text_value(x)}"
                for k, x in v.items()
                if k not in ("uncompressed_length", "compression_type", "digest_type")
            )
            + "}"
        )
    if isinstance(v, list):
        return "[" + ",".join(_text_value(x) for x in v) + "]"
    if isinstance(v, str):
        return repr(v)
    return str(v)


def text_lines(file: ReplayFile) -> Iterator[str]:
    """A readable dump: header, summary, then one line per record."""
    h = file.header
    yield f"IREE HAL replay v{h.version_major}.{h.version_minor}"
    yield f"file_length: {h.file_length}"
    yield f"header_length: {h.header_length}"
    s = summary(file)
    yield "summary:"
    yield f"  hermetic: {'yes' if s['hermetic'] else 'no'}"
    yield f"  environment_referenced: {'yes' if s['environment_referenced'] else 'no'}"
    yield f"  strict_replay_supported: {'yes' if s['strict_replay_supported'] else 'no'}"
    yield (
        f"  records: total={s['record_count']} objects={s['object_count']} "
        f"operations={s['operation_count']} unsupported={s['unsupported_count']}"
    )
    yield f"  scopes: begin={s['scope_begin_count']} end={s['scope_end_count']}"
    yield "records:"
    for rec in file.records():
        j = record_json(file, rec)
        line = (
            f"  @{rec.offset} #{rec.sequence_ordinal} {j['kind']:<11} dev={rec.device_id} "
            f"obj={rec.object_id} rel={rec.related_object_id} status={j['status']}"
        )
        if rec.object_type:
            line += f" object={j['object_type']}({rec.object_type})"
        if rec.operation_code:
            line += f" op={j['operation']}({rec.operation_code})"
        if rec.payload_type:
            line += f" payload={j['payload_type']}({rec.payload_type})"
            for k, v in j.get("payload", {}).items():
                if k.endswith("_range") and isinstance(v, dict):
                    line += f" {k}=[{v['offset']}, +{v['length']}]"
                else:
                    line += f" {k}={_text_value(v)}"
        yield line
