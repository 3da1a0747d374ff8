"""The .ireereplay reader: the corpus decodes; bad input is DATA_LOSS / INVALID_ARGUMENT /
UNIMPLEMENTED with the byte offset; nothing loops or crashes."""

from __future__ import annotations

import struct

import pytest
from _replay_capture import CORPUS, CORPUS_NAMES, Capture, payload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hal_core as hal
from hal_core.replay import (
    OperationCode,
    PayloadType,
    Player,
    RecordFlags,
    RecordType,
    ReplayFile,
)
from hal_core.replay import _format as F

ALLOWED = (hal.DataLossError, hal.InvalidArgumentError, hal.UnimplementedError)


def corpus_bytes(name: str) -> bytes:
    return (CORPUS / f"{name}.ireereplay").read_bytes()


def read_all(data: bytes) -> int:
    f = ReplayFile(data)
    n = 0
    for rec in f.records():
        f.decode(rec)
        n += 1
    return n


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_decodes_every_record(name):
    f = ReplayFile.open(CORPUS / f"{name}.ireereplay")
    assert (f.header.version_major, f.header.version_minor) == (2, 0)
    recs = f.record_list()
    assert [r.sequence_ordinal for r in recs] == list(range(len(recs)))
    ops = {r.operation_code for r in recs if r.record_type == RecordType.OPERATION}
    assert OperationCode.DEVICE_QUEUE_EXECUTE in ops
    assert OperationCode.COMMAND_BUFFER_DISPATCH in ops
    for rec in recs:
        p = f.decode(rec)
        if rec.payload_type == PayloadType.EXECUTABLE_PREPARE:
            assert p["format"] == "embedded-elf-x86_64"
            assert bytes(p["data"][:4]) == b"\x7fELF"
            assert all(fn["name"] for fn in p["functions"])


def test_corpus_covers_what_it_promises():
    def dispatches(name):
        f = ReplayFile.open(CORPUS / f"{name}.ireereplay")
        return [
            f.decode(r)
            for r in f.records()
            if r.operation_code == OperationCode.COMMAND_BUFFER_DISPATCH
        ]

    assert len(dispatches("chain")) >= 200  # hundreds of dispatches in one command buffer
    assert any(d["constants_length"] for d in dispatches("dynamic"))  # push constants
    f = ReplayFile.open(CORPUS / "transient.ireereplay")
    ops = [r.operation_code for r in f.records()]
    assert OperationCode.DEVICE_QUEUE_ALLOCA in ops and OperationCode.DEVICE_QUEUE_DEALLOCA in ops


def test_truncation_at_every_record_boundary_and_inside_is_data_loss():
    data = corpus_bytes("dynamic")
    f = ReplayFile(data)
    cuts = {0, 3, 23, 30}
    for rec in f.records():
        cuts.update({rec.offset + 1, rec.offset + 95, rec.offset + rec.record_length - 1})
    for cut in sorted(c for c in cuts if c < len(data)):
        with pytest.raises(hal.DataLossError, match="offset"):
            read_all(data[:cut])


def test_truncated_file_with_unset_length_stops_at_a_broken_record():
    data = bytearray(corpus_bytes("mlp"))
    struct.pack_into("<Q", data, 16, 0)  # a capture whose writer never finished
    read_all(bytes(data))  # whole: fine
    with pytest.raises(hal.DataLossError, match="byte offset 244"):
        read_all(bytes(data[:300]))


def test_bad_magic_and_wrong_major_are_invalid_argument():
    data = bytearray(corpus_bytes("mlp"))
    with pytest.raises(hal.InvalidArgumentError, match="magic"):
        ReplayFile(b"XXXX" + bytes(data[4:]))
    struct.pack_into("<H", data, 4, 3)
    with pytest.raises(hal.InvalidArgumentError, match=r"version 3\.0"):
        ReplayFile(bytes(data))


def test_newer_minor_version_reads():
    data = bytearray(corpus_bytes("dynamic"))
    struct.pack_into("<H", data, 6, 7)
    assert read_all(bytes(data)) > 0


def test_header_fields_are_checked():
    data = corpus_bytes("dynamic")
    with pytest.raises(hal.DataLossError, match="too small"):
        ReplayFile(data[:10])
    bad = bytearray(data)
    struct.pack_into("<I", bad, 12, 1)  # reserved file flags
    with pytest.raises(hal.DataLossError, match="byte offset 12"):
        ReplayFile(bytes(bad))
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 16, len(data) + 1)
    with pytest.raises(hal.DataLossError, match="truncated"):
        ReplayFile(bytes(bad))


def _record_bytes_of(data: bytes, index: int) -> int:
    return list(ReplayFile(data).records())[index].offset


@pytest.mark.parametrize(
    "field_offset, value, message",
    [
        (0, 10, "header length|record of"),  # record_length below the header
        (8, 5, "payload length"),  # payload_length disagrees
        (16, 9, "sequence ordinal"),
        (62, 2, "reserved record flags"),
        (80, 1, "reserved record header"),
    ],
)
def test_corrupt_record_header_is_data_loss_with_offset(field_offset, value, message):
    data = bytearray(corpus_bytes("dynamic"))
    at = _record_bytes_of(bytes(data), 3)
    fmt = "<H" if field_offset == 62 else ("<I" if field_offset == 80 else "<Q")
    struct.pack_into(fmt, data, at + field_offset, value)
    with pytest.raises(hal.DataLossError, match=message) as info:
        read_all(bytes(data))
    assert f"byte offset {at}" in str(info.value)


def test_corrupt_payload_fields_are_data_loss():
    f = ReplayFile(corpus_bytes("mlp"))
    execute = next(r for r in f.records() if r.operation_code == OperationCode.DEVICE_QUEUE_EXECUTE)
    data = bytearray(corpus_bytes("mlp"))
    struct.pack_into("<Q", data, execute.payload_offset + 40, 1000)  # binding_count
    g = ReplayFile(bytes(data))
    rec = next(r for r in g.records() if r.offset == execute.offset)
    with pytest.raises(hal.DataLossError, match=f"byte offset {execute.offset}"):
        g.decode(rec)


def _one_record_capture(record_type: int, flags: int = 0, **kw) -> bytes:
    c = Capture()
    c.device()
    c.add(record_type, b"\x00" * 8, flags=flags, **kw)
    return c.data()


def test_unknown_required_record_type_is_unimplemented_and_optional_is_skipped():
    with pytest.raises(hal.UnimplementedError, match="unknown record type 77"):
        read_all(_one_record_capture(77))
    data = _one_record_capture(77, flags=RecordFlags.OPTIONAL)
    assert [r.record_type for r in ReplayFile(data).records()] == [1, 2, 2]


def test_unknown_payload_type_and_operation_are_unimplemented_naming_them():
    data = _one_record_capture(RecordType.OPERATION, payload_type=99, operation=402)
    f = ReplayFile(data)
    rec = list(f.records())[-1]
    with pytest.raises(hal.UnimplementedError, match="unknown payload type 99"):
        f.decode(rec)
    c = Capture()
    c.device()
    c.op(999)
    with pytest.raises(hal.UnimplementedError, match="unknown operation code 999"):
        Player(ReplayFile(c.data()), _NoDevice())


def test_unreplayable_operations_are_unimplemented_naming_them():
    for code, name in [
        (OperationCode.DEVICE_QUEUE_HOST_CALL, "device.queue_host_call"),
        (OperationCode.COMMAND_BUFFER_COLLECTIVE, "command_buffer.collective"),
        (OperationCode.ALLOCATOR_VIRTUAL_MEMORY_RESERVE, "allocator.virtual_memory_reserve"),
    ]:
        c = Capture()
        c.device()
        c.op(code, device=1, obj=1)
        with pytest.raises(hal.UnimplementedError, match=name):
            Player(ReplayFile(c.data()), _NoDevice())
    # A call that failed at capture time is skipped, as IREE's executor does.
    c = Capture()
    c.device()
    c.op(OperationCode.DEVICE_QUEUE_HOST_CALL, device=1, obj=1, status=3)
    Player(ReplayFile(c.data()), _NoDevice())
    c = Capture()
    c.device()
    c.add(RecordType.UNSUPPORTED, operation=OperationCode.DEVICE_QUEUE_HOST_CALL)
    with pytest.raises(hal.UnimplementedError, match="could not record"):
        Player(ReplayFile(c.data()), _NoDevice())


def test_scope_payload_checks():
    c = Capture()
    c.device()
    body = payload(PayloadType.REPLAY_SCOPE, name_length=0)
    c.op(OperationCode.REPLAY_SCOPE_BEGIN, body, PayloadType.REPLAY_SCOPE)
    f = ReplayFile(c.data())
    with pytest.raises(hal.DataLossError, match="scope name is empty"):
        f.decode(list(f.records())[-1])


def test_every_payload_type_has_a_decoder_and_names_match_iree():
    assert F.operation_name(OperationCode.DEVICE_QUEUE_EXECUTE) == "device.queue_execute"
    assert F.operation_name(OperationCode.EXECUTABLE_CACHE_PREPARE_EXECUTABLE) == (
        "executable_cache.prepare_executable"
    )
    assert F.operation_name(OperationCode.EXECUTABLE_LOOKUP_FUNCTION_BY_NAME) == (
        "executable.lookup_function_by_name"
    )
    assert F.operation_name(12345) == "unknown"
    from hal_core.replay._reader import _DECODERS

    assert set(_DECODERS) == {int(p) for p in PayloadType if p != PayloadType.NONE}


class _NoDevice:
    """Stands in for a device when only the plan is built (nothing runs)."""

    def queue_execute(self, *args, **kwargs):  # pragma: no cover - never called
        raise AssertionError


_FUZZ_BASE = corpus_bytes("mlp")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_FUZZ_BASE) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    cut=st.one_of(st.none(), st.integers(0, len(_FUZZ_BASE))),
)
def test_fuzzed_captures_fail_cleanly(edits, cut):
    """Mutated and truncated captures decode and plan, or fail with one of the three
    reader errors; never another exception, never a hang."""
    data = bytearray(_FUZZ_BASE)
    for at, value in edits:
        data[at] = value
    if cut is not None:
        data = data[:cut]
    try:
        read_all(bytes(data))
        Player(ReplayFile(bytes(data)), _NoDevice())
    except ALLOWED:
        pass


def test_optional_records_of_unknown_operations_or_payloads_are_skipped():
    c = Capture()
    c.device()
    c.op(999, flags=RecordFlags.OPTIONAL)
    c.op(OperationCode.DEVICE_QUEUE_FLUSH, b"\x00" * 8, 99, flags=RecordFlags.OPTIONAL)
    data = c.data()
    plan = Player(ReplayFile(data), _NoDevice()).plan
    assert [r.record_type for _, r, _ in plan] == [RecordType.OBJECT, RecordType.OBJECT]
    from hal_core.replay import json_records

    lines = list(json_records(ReplayFile(data)))
    assert lines[-1]["operation_code"] == OperationCode.DEVICE_QUEUE_FLUSH
    assert "payload" not in lines[-1]
    c = Capture()
    c.device()
    c.op(OperationCode.DEVICE_QUEUE_FLUSH, b"\x00" * 8, 99)
    with pytest.raises(hal.UnimplementedError, match="unknown payload type 99"):
        list(json_records(ReplayFile(c.data())))
