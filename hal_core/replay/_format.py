"""The ``.ireereplay`` v2.x container: constants, enums and byte layouts.

Everything here mirrors IREE's documented replay format (``iree/hal/replay/format.h``,
version 2.0). All fields are little-endian; structs use C natural alignment, so the
layouts below spell their padding out (``x`` bytes) to get IREE's sizes. Names returned by
``*_name`` match the strings IREE's tools print (``device.queue_execute``, ``buffer``...).
"""

from __future__ import annotations

import enum
import struct

MAGIC = 0x50525249  # b"IRRP" read as a little-endian uint32
VERSION_MAJOR = 2
VERSION_MINOR = 0
OBJECT_ID_NONE = 0


class RecordType(enum.IntEnum):
    NONE = 0
    SESSION = 1
    OBJECT = 2
    OPERATION = 3
    BLOB = 4
    UNSUPPORTED = 5


class RecordFlags(enum.IntFlag):
    NONE = 0
    # Readers that do not understand the record may skip it.
    OPTIONAL = 1


class ObjectType(enum.IntEnum):
    NONE = 0
    DEVICE = 1
    ALLOCATOR = 2
    POOL = 3
    BUFFER = 4
    COMMAND_BUFFER = 5
    EXECUTABLE_CACHE = 6
    EXECUTABLE = 7
    SEMAPHORE = 8
    FILE = 9
    EVENT = 10
    CHANNEL = 11
    HOST_CALL = 12


class OperationCode(enum.IntEnum):
    NONE = 0
    DEVICE_TRIM = 1
    DEVICE_QUERY_I64 = 2
    DEVICE_QUERY_CAPABILITIES = 3
    DEVICE_REFINE_TOPOLOGY_EDGE = 4
    DEVICE_ASSIGN_TOPOLOGY_INFO = 5
    DEVICE_CREATE_CHANNEL = 6
    DEVICE_CREATE_COMMAND_BUFFER = 7
    DEVICE_CREATE_EVENT = 8
    DEVICE_CREATE_EXECUTABLE_CACHE = 9
    DEVICE_IMPORT_FILE = 10
    DEVICE_CREATE_SEMAPHORE = 11
    DEVICE_QUERY_QUEUE_POOL_BACKEND = 12
    DEVICE_QUEUE_ALLOCA = 13
    DEVICE_QUEUE_DEALLOCA = 14
    DEVICE_QUEUE_FILL = 15
    DEVICE_QUEUE_UPDATE = 16
    DEVICE_QUEUE_COPY = 17
    DEVICE_QUEUE_READ = 18
    DEVICE_QUEUE_WRITE = 19
    DEVICE_QUEUE_HOST_CALL = 20
    DEVICE_QUEUE_DISPATCH = 21
    DEVICE_QUEUE_EXECUTE = 22
    DEVICE_QUEUE_FLUSH = 23
    DEVICE_PROFILING_BEGIN = 24
    DEVICE_PROFILING_FLUSH = 25
    DEVICE_PROFILING_END = 26
    DEVICE_EXTERNAL_CAPTURE_BEGIN = 27
    DEVICE_EXTERNAL_CAPTURE_END = 28
    REPLAY_SCOPE_BEGIN = 50
    REPLAY_SCOPE_END = 51
    ALLOCATOR_TRIM = 100
    ALLOCATOR_QUERY_MEMORY_HEAPS = 101
    ALLOCATOR_ALLOCATE_BUFFER = 102
    ALLOCATOR_IMPORT_BUFFER = 103
    ALLOCATOR_EXPORT_BUFFER = 104
    ALLOCATOR_VIRTUAL_MEMORY_QUERY_GRANULARITY = 105
    ALLOCATOR_VIRTUAL_MEMORY_RESERVE = 106
    ALLOCATOR_VIRTUAL_MEMORY_RELEASE = 107
    ALLOCATOR_PHYSICAL_MEMORY_ALLOCATE = 108
    ALLOCATOR_PHYSICAL_MEMORY_FREE = 109
    ALLOCATOR_VIRTUAL_MEMORY_MAP = 110
    ALLOCATOR_VIRTUAL_MEMORY_UNMAP = 111
    ALLOCATOR_VIRTUAL_MEMORY_PROTECT = 112
    ALLOCATOR_VIRTUAL_MEMORY_ADVISE = 113
    BUFFER_MAP_RANGE = 200
    BUFFER_UNMAP_RANGE = 201
    BUFFER_INVALIDATE_RANGE = 202
    BUFFER_FLUSH_RANGE = 203
    COMMAND_BUFFER_BEGIN = 300
    COMMAND_BUFFER_END = 301
    COMMAND_BUFFER_BEGIN_DEBUG_GROUP = 302
    COMMAND_BUFFER_END_DEBUG_GROUP = 303
    COMMAND_BUFFER_EXECUTION_BARRIER = 304
    COMMAND_BUFFER_SIGNAL_EVENT = 305
    COMMAND_BUFFER_RESET_EVENT = 306
    COMMAND_BUFFER_WAIT_EVENTS = 307
    COMMAND_BUFFER_ADVISE_BUFFER = 308
    COMMAND_BUFFER_FILL_BUFFER = 309
    COMMAND_BUFFER_UPDATE_BUFFER = 310
    COMMAND_BUFFER_COPY_BUFFER = 311
    COMMAND_BUFFER_COLLECTIVE = 312
    COMMAND_BUFFER_DISPATCH = 313
    EXECUTABLE_CACHE_INFER_FORMAT = 400
    EXECUTABLE_CACHE_CAN_PREPARE_FORMAT = 401
    EXECUTABLE_CACHE_PREPARE_EXECUTABLE = 402
    EXECUTABLE_FUNCTION_COUNT = 500
    EXECUTABLE_FUNCTION_INFO = 501
    EXECUTABLE_FUNCTION_PARAMETERS = 502
    EXECUTABLE_LOOKUP_FUNCTION_BY_NAME = 503


class PayloadType(enum.IntEnum):
    NONE = 0
    BUFFER_OBJECT = 1
    ALLOCATOR_ALLOCATE_BUFFER = 2
    BUFFER_RANGE = 3
    BUFFER_RANGE_DATA = 4
    COMMAND_BUFFER_OBJECT = 5
    EXECUTABLE_CACHE_OBJECT = 6
    EXECUTABLE_PREPARE = 7
    DISPATCH = 8
    DEVICE_QUEUE_EXECUTE = 9
    SEMAPHORE_OBJECT = 10
    COMMAND_BUFFER_COPY_BUFFER = 11
    DEVICE_QUEUE_ALLOCA = 12
    COMMAND_BUFFER_EXECUTION_BARRIER = 13
    DEVICE_QUEUE_DEALLOCA = 14
    DEVICE_QUEUE_FILL = 15
    DEVICE_QUEUE_UPDATE = 16
    DEVICE_QUEUE_COPY = 17
    COMMAND_BUFFER_FILL_BUFFER = 18
    COMMAND_BUFFER_UPDATE_BUFFER = 19
    EVENT_OBJECT = 20
    COMMAND_BUFFER_EVENT = 21
    COMMAND_BUFFER_WAIT_EVENTS = 22
    FILE_OBJECT = 23
    DEVICE_QUEUE_READ = 24
    DEVICE_QUEUE_WRITE = 25
    ALLOCATOR_IMPORT_BUFFER = 26
    REPLAY_SCOPE = 27


class FileReferenceType(enum.IntEnum):
    NONE = 0
    EXTERNAL_PATH = 1
    INLINE_BYTES = 2
    CAPTURED_RANGES = 3


class FileValidationType(enum.IntEnum):
    NONE = 0
    IDENTITY = 1
    CONTENT_DIGEST = 2


class DigestType(enum.IntEnum):
    NONE = 0
    FNV1A_64 = 1


# The only external buffer type a capture can carry bytes for (IREE's HOST_ALLOCATION).
EXTERNAL_BUFFER_TYPE_HOST_ALLOCATION = 1

_OP_GROUPS = ("replay", "device", "allocator", "buffer", "command_buffer", "executable_cache")


def _op_name(member: OperationCode) -> str:
    lower = member.name.lower()
    if member is OperationCode.NONE:
        return "none"
    # Longest group prefix wins (executable_cache before executable).
    for group in sorted((*_OP_GROUPS, "executable"), key=len, reverse=True):
        if lower.startswith(group + "_"):
            return f"{group}.{lower[len(group) + 1 :]}"
    return lower


_RECORD_NAMES = {m.value: m.name.lower() for m in RecordType}
_OBJECT_NAMES = {m.value: m.name.lower() for m in ObjectType}
_OPERATION_NAMES = {m.value: _op_name(m) for m in OperationCode}
_PAYLOAD_NAMES = {m.value: m.name.lower() for m in PayloadType}


def record_type_name(value: int) -> str:
    return _RECORD_NAMES.get(value, "unknown")


def object_type_name(value: int) -> str:
    return _OBJECT_NAMES.get(value, "unknown")


def operation_name(value: int) -> str:
    return _OPERATION_NAMES.get(value, "unknown")


def payload_type_name(value: int) -> str:
    return _PAYLOAD_NAMES.get(value, "unknown")


# -- byte layouts -------------------------------------------------------------------------

FILE_HEADER = struct.Struct("<IHHIIQ")  # magic, major, minor, header_length, flags, length
RECORD_HEADER = struct.Struct("<7QIHHIIIII4xQ")
RECORD_HEADER_FIELDS = (
    "record_length",
    "payload_length",
    "sequence_ordinal",
    "thread_id",
    "device_id",
    "object_id",
    "related_object_id",
    "header_length",
    "record_type",
    "record_flags",
    "payload_type",
    "object_type",
    "operation_code",
    "status_code",
    "reserved0",
    "reserved1",
)
assert FILE_HEADER.size == 24 and RECORD_HEADER.size == 96


class Layout:
    """A fixed-size payload struct: ``unpack(buf, offset)`` gives a dict of its fields.

    Fields named ``reserved*`` are checked by the reader (they must be zero) and left out
    of the dict.
    """

    __slots__ = ("name", "struct", "fields", "size")

    def __init__(self, name: str, fmt: str, fields: tuple[str, ...]) -> None:
        self.name = name
        self.struct = struct.Struct("<" + fmt)
        self.fields = fields
        self.size = self.struct.size


BUFFER_REF = Layout(
    "buffer_ref", "QQQII", ("buffer_id", "offset", "length", "buffer_slot", "reserved0")
)
TIMEPOINT = Layout("semaphore_timepoint", "QQ", ("semaphore_id", "value"))
MEMORY_BARRIER = Layout("memory_barrier", "II", ("source_scope", "target_scope"))
_REF = "QQQII"  # an embedded buffer ref (32 bytes, 8-aligned)
_REF_FIELDS = ("buffer_id", "offset", "length", "buffer_slot", "reserved0")
BUFFER_BARRIER = Layout(
    "buffer_barrier",
    "II" + _REF,
    ("source_scope", "target_scope") + tuple(f"buffer_ref.{f}" for f in _REF_FIELDS),
)
_ALLOC = "QQQIIHHI"
_ALLOC_FIELDS = (
    "allocation_size",
    "queue_affinity",
    "min_alignment",
    "usage",
    "type",
    "access",
    "reserved0",
    "reserved1",
)


def _ref_fields(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{f}" for f in _REF_FIELDS)


PAYLOAD_LAYOUTS: dict[int, Layout] = {
    PayloadType.BUFFER_OBJECT: Layout(
        "buffer_object",
        "QQQQIIIHHI4x",
        (
            "allocation_size",
            "byte_offset",
            "byte_length",
            "queue_affinity",
            "placement_flags",
            "memory_type",
            "allowed_usage",
            "allowed_access",
            "reserved0",
            "reserved1",
        ),
    ),
    PayloadType.ALLOCATOR_ALLOCATE_BUFFER: Layout(
        "allocator_allocate_buffer", _ALLOC, _ALLOC_FIELDS
    ),
    PayloadType.ALLOCATOR_IMPORT_BUFFER: Layout(
        "allocator_import_buffer",
        _ALLOC + "IIQ",
        tuple(f"allocation.{f}" for f in _ALLOC_FIELDS)
        + ("external_type", "external_flags", "data_length"),
    ),
    PayloadType.BUFFER_RANGE: Layout(
        "buffer_range",
        "QQIHHI4x",
        ("byte_offset", "byte_length", "mapping_mode", "memory_access", "reserved0", "reserved1"),
    ),
    PayloadType.BUFFER_RANGE_DATA: Layout(
        "buffer_range_data",
        "QQQIHHI4x",
        (
            "byte_offset",
            "byte_length",
            "data_length",
            "mapping_mode",
            "memory_access",
            "reserved0",
            "reserved1",
        ),
    ),
    PayloadType.COMMAND_BUFFER_OBJECT: Layout(
        "command_buffer_object",
        "IIQQ",
        ("mode", "command_categories", "queue_affinity", "binding_capacity"),
    ),
    PayloadType.EXECUTABLE_CACHE_OBJECT: Layout(
        "executable_cache_object", "QQ", ("identifier_length", "reserved0")
    ),
    PayloadType.EXECUTABLE_PREPARE: Layout(
        "executable_prepare",
        "QQQIIII",
        (
            "queue_affinity",
            "executable_data_length",
            "constant_count",
            "caching_mode",
            "executable_format_length",
            "executable_metadata_length",
            "reserved1",
        ),
    ),
    PayloadType.DISPATCH: Layout(
        "dispatch",
        "QQII3I3I" + _REF + "II4Q",
        (
            "executable_id",
            "queue_affinity",
            "function_ordinal",
            "flags",
            "workgroup_size.0",
            "workgroup_size.1",
            "workgroup_size.2",
            "workgroup_count.0",
            "workgroup_count.1",
            "workgroup_count.2",
        )
        + _ref_fields("workgroup_count_ref")
        + (
            "dynamic_workgroup_local_memory",
            "reserved0",
            "wait_semaphore_count",
            "signal_semaphore_count",
            "constants_length",
            "binding_count",
        ),
    ),
    PayloadType.DEVICE_QUEUE_EXECUTE: Layout(
        "device_queue_execute",
        "6Q",
        (
            "command_buffer_id",
            "queue_affinity",
            "flags",
            "wait_semaphore_count",
            "signal_semaphore_count",
            "binding_count",
        ),
    ),
    PayloadType.SEMAPHORE_OBJECT: Layout(
        "semaphore_object",
        "4Q",
        ("queue_affinity", "initial_value", "flags", "reserved0"),
    ),
    PayloadType.COMMAND_BUFFER_COPY_BUFFER: Layout(
        "command_buffer_copy_buffer",
        _REF + _REF + "IIQ",
        _ref_fields("source_ref") + _ref_fields("target_ref") + ("flags", "reserved0", "reserved1"),
    ),
    PayloadType.DEVICE_QUEUE_ALLOCA: Layout(
        "device_queue_alloca",
        _ALLOC + "4Q",
        tuple(f"allocation.{f}" for f in _ALLOC_FIELDS)
        + ("queue_affinity", "flags", "wait_semaphore_count", "signal_semaphore_count"),
    ),
    PayloadType.COMMAND_BUFFER_EXECUTION_BARRIER: Layout(
        "command_buffer_execution_barrier",
        "5Q",
        (
            "source_stage_mask",
            "target_stage_mask",
            "flags",
            "memory_barrier_count",
            "buffer_barrier_count",
        ),
    ),
    PayloadType.DEVICE_QUEUE_DEALLOCA: Layout(
        "device_queue_dealloca",
        _REF + "4Q",
        _ref_fields("buffer_ref")
        + ("queue_affinity", "flags", "wait_semaphore_count", "signal_semaphore_count"),
    ),
    PayloadType.DEVICE_QUEUE_FILL: Layout(
        "device_queue_fill",
        _REF + "5Q",
        _ref_fields("target_ref")
        + (
            "queue_affinity",
            "flags",
            "wait_semaphore_count",
            "signal_semaphore_count",
            "pattern_length",
        ),
    ),
    PayloadType.DEVICE_QUEUE_UPDATE: Layout(
        "device_queue_update",
        _REF + "6Q",
        _ref_fields("target_ref")
        + (
            "queue_affinity",
            "flags",
            "source_offset",
            "data_length",
            "wait_semaphore_count",
            "signal_semaphore_count",
        ),
    ),
    PayloadType.DEVICE_QUEUE_COPY: Layout(
        "device_queue_copy",
        _REF + _REF + "4Q",
        _ref_fields("source_ref")
        + _ref_fields("target_ref")
        + ("queue_affinity", "flags", "wait_semaphore_count", "signal_semaphore_count"),
    ),
    PayloadType.COMMAND_BUFFER_FILL_BUFFER: Layout(
        "command_buffer_fill_buffer",
        _REF + "IIQ",
        _ref_fields("target_ref") + ("flags", "reserved0", "pattern_length"),
    ),
    PayloadType.COMMAND_BUFFER_UPDATE_BUFFER: Layout(
        "command_buffer_update_buffer",
        _REF + "IIQQ",
        _ref_fields("target_ref") + ("flags", "reserved0", "source_offset", "data_length"),
    ),
    PayloadType.EVENT_OBJECT: Layout(
        "event_object", "QIIQ", ("queue_affinity", "flags", "reserved0", "reserved1")
    ),
    PayloadType.COMMAND_BUFFER_EVENT: Layout(
        "command_buffer_event", "QQ", ("event_id", "source_stage_mask")
    ),
    PayloadType.COMMAND_BUFFER_WAIT_EVENTS: Layout(
        "command_buffer_wait_events",
        "6Q",
        (
            "source_stage_mask",
            "target_stage_mask",
            "event_count",
            "memory_barrier_count",
            "buffer_barrier_count",
            "reserved0",
        ),
    ),
    PayloadType.FILE_OBJECT: Layout(
        "file_object",
        "6Q5IHHI32s4x",
        (
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
            "validation_type",
            "digest_type",
            "reserved0",
            "reserved1",
            "digest",
        ),
    ),
    PayloadType.DEVICE_QUEUE_READ: Layout(
        "device_queue_read",
        "QQ" + _REF + "5Q",
        ("source_file_id", "source_offset")
        + _ref_fields("target_ref")
        + (
            "queue_affinity",
            "flags",
            "captured_data_length",
            "wait_semaphore_count",
            "signal_semaphore_count",
        ),
    ),
    PayloadType.DEVICE_QUEUE_WRITE: Layout(
        "device_queue_write",
        _REF + "6Q",
        _ref_fields("source_ref")
        + (
            "target_file_id",
            "target_offset",
            "queue_affinity",
            "flags",
            "wait_semaphore_count",
            "signal_semaphore_count",
        ),
    ),
    PayloadType.REPLAY_SCOPE: Layout(
        "replay_scope", "QIIQ", ("name_length", "flags", "reserved0", "reserved1")
    ),
}

EXECUTABLE_METADATA_HEADER = Layout(
    "executable_metadata",
    "4Q",
    ("function_count", "parameter_count", "function_name_storage_length", "reserved1"),
)
FUNCTION_METADATA = Layout(
    "function_metadata",
    "Q3IHHHH4x",
    (
        "flags",
        "workgroup_size.0",
        "workgroup_size.1",
        "workgroup_size.2",
        "constant_count",
        "binding_count",
        "parameter_count",
        "name_length",
    ),
)
PARAMETER_METADATA = Layout(
    "parameter_metadata", "HHBBH", ("offset", "flags", "type", "size", "reserved0")
)

_EXPECTED_SIZES = {
    PayloadType.BUFFER_OBJECT: 56,
    PayloadType.ALLOCATOR_ALLOCATE_BUFFER: 40,
    PayloadType.ALLOCATOR_IMPORT_BUFFER: 56,
    PayloadType.BUFFER_RANGE: 32,
    PayloadType.BUFFER_RANGE_DATA: 40,
    PayloadType.COMMAND_BUFFER_OBJECT: 24,
    PayloadType.EXECUTABLE_CACHE_OBJECT: 16,
    PayloadType.EXECUTABLE_PREPARE: 40,
    PayloadType.DISPATCH: 120,
    PayloadType.DEVICE_QUEUE_EXECUTE: 48,
    PayloadType.SEMAPHORE_OBJECT: 32,
    PayloadType.COMMAND_BUFFER_COPY_BUFFER: 80,
    PayloadType.DEVICE_QUEUE_ALLOCA: 72,
    PayloadType.COMMAND_BUFFER_EXECUTION_BARRIER: 40,
    PayloadType.DEVICE_QUEUE_DEALLOCA: 64,
    PayloadType.DEVICE_QUEUE_FILL: 72,
    PayloadType.DEVICE_QUEUE_UPDATE: 80,
    PayloadType.DEVICE_QUEUE_COPY: 96,
    PayloadType.COMMAND_BUFFER_FILL_BUFFER: 48,
    PayloadType.COMMAND_BUFFER_UPDATE_BUFFER: 56,
    PayloadType.EVENT_OBJECT: 24,
    PayloadType.COMMAND_BUFFER_EVENT: 16,
    PayloadType.COMMAND_BUFFER_WAIT_EVENTS: 48,
    PayloadType.FILE_OBJECT: 112,
    PayloadType.DEVICE_QUEUE_READ: 88,
    PayloadType.DEVICE_QUEUE_WRITE: 80,
    PayloadType.REPLAY_SCOPE: 24,
}
for _k, _v in _EXPECTED_SIZES.items():
    assert PAYLOAD_LAYOUTS[_k].size == _v, (_k, PAYLOAD_LAYOUTS[_k].size, _v)
assert BUFFER_BARRIER.size == 40 and FUNCTION_METADATA.size == 32 and PARAMETER_METADATA.size == 8
