"""Corrupt, truncated and mutated profile bundles: DATA_LOSS naming the byte offset, never a
hang or another exception."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _profiling_support import fill_synthetic, make_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hal_core
from hal_core.profiling import ProfileBundleSink, read_profile_bundle
from hal_core.profiling import ProfilingDataFamily as F
from hal_core.profiling._records import SCHEMAS, decode_records

FILE_HEADER = 32
CHUNK_HEADER = 80
FAMILIES = (
    F.QUEUE_EVENTS
    | F.HOST_EXECUTION_EVENTS
    | F.DISPATCH_EVENTS
    | F.MEMORY_EVENTS
    | F.EXECUTABLE_METADATA
)


@pytest.fixture(scope="module")
def bundle_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("bundle") / "good.halprof"
    session = make_session(FAMILIES, [ProfileBundleSink(path)])
    fill_synthetic(session, n=6)
    session.end()
    data = path.read_bytes()
    assert read_profile_bundle(path).complete
    return data


def _write(tmp_path: Path, data: bytes, name: str = "b.halprof") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _chunk(rec_len: int, hdr_len: int, ct: bytes, name: bytes, payload: bytes) -> bytes:
    header = struct.pack(
        "<IHHII5Q2IQQ",
        rec_len,
        hdr_len,
        len(ct),
        len(name),
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        len(payload),
    )
    body = header + ct + name + payload
    return body + b"\0" * (-len(body) % 8)


def _bundle(*chunks: bytes, finished: bool = True) -> bytes:
    body = b"".join(chunks)
    length = FILE_HEADER + len(body) if finished else 0
    return struct.pack("<8sIIIIQ", b"HALPROF\0", 1, FILE_HEADER, 0, 0, length) + body


def test_zero_record_length_is_data_loss_not_a_hang(tmp_path: Path) -> None:
    # A run in a child with a time limit: the old reader looped forever here.
    path = _write(tmp_path, _bundle(b"\0" * CHUNK_HEADER, finished=False))
    program = textwrap.dedent(
        f"""
        import hal_core
        from hal_core.profiling import read_profile_bundle
        for incomplete in (False, True):
            try:
                read_profile_bundle({str(path)!r}, allow_incomplete=incomplete)
            except hal_core.DataLossError as exc:
                print(incomplete, exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("False") and "never finished" in lines[0]
    assert lines[1].startswith("True") and "chunk at byte 32 has header_length 0" in lines[1]


def test_record_length_smaller_than_the_header_is_data_loss(tmp_path: Path) -> None:
    ct = b"application/x-hal-profile.queue-events"
    data = _bundle(_chunk(8, CHUNK_HEADER, ct, b"", b""))
    with pytest.raises(hal_core.DataLossError, match="chunk at byte 32 has record_length 8"):
        read_profile_bundle(_write(tmp_path, data))


@pytest.mark.parametrize("field", ["content type", "name"])
def test_invalid_utf8_is_data_loss_with_the_offset(tmp_path: Path, field: str) -> None:
    good_ct = b"application/x-hal-profile.queue-events"
    ct, name = (b"\xff\xfe", b"n") if field == "content type" else (good_ct, b"q\xc3")
    record = _chunk(CHUNK_HEADER + len(ct) + len(name), CHUNK_HEADER, ct, name, b"")
    rec_len = len(record)
    record = struct.pack("<I", rec_len) + record[4:]
    offset = FILE_HEADER + CHUNK_HEADER + (0 if field == "content type" else len(ct))
    with pytest.raises(
        hal_core.DataLossError, match=f"chunk {field} at byte {offset} is not UTF-8"
    ):
        read_profile_bundle(_write(tmp_path, _bundle(record)))


@pytest.mark.parametrize("header_length", [0, 8, 31, 10_000])
def test_file_header_length_out_of_range_is_data_loss(tmp_path: Path, header_length: int) -> None:
    data = bytearray(_bundle())
    struct.pack_into("<I", data, 12, header_length)
    with pytest.raises(hal_core.DataLossError, match=f"header_length {header_length}"):
        read_profile_bundle(_write(tmp_path, bytes(data)))


def test_file_cut_inside_its_header_is_data_loss(tmp_path: Path, bundle_bytes: bytes) -> None:
    with pytest.raises(hal_core.DataLossError, match="cut off at byte 20"):
        read_profile_bundle(_write(tmp_path, bundle_bytes[:20]))
    with pytest.raises(hal_core.InvalidArgumentError, match="not a HAL profile bundle"):
        read_profile_bundle(_write(tmp_path, b"PNG\0" + bundle_bytes[4:]))


@pytest.mark.parametrize("length", [1, 2, 3])
@pytest.mark.parametrize("content_type", sorted(SCHEMAS))
def test_short_payloads_are_data_loss(content_type: str, length: int) -> None:
    with pytest.raises(hal_core.DataLossError, match="byte 0"):
        decode_records(content_type, b"\x08" * length)


@pytest.mark.parametrize(
    "content_type",
    [ct for ct, s in sorted(SCHEMAS.items()) if s.trailing in ("u64", "metric", "bytes")],
)
def test_trailing_counts_beyond_the_record_are_data_loss(content_type: str) -> None:
    schema = SCHEMAS[content_type]
    head = bytearray(schema.dtype.itemsize)
    struct.pack_into("<I", head, 0, len(head) + 8)
    count_field = "data_length" if schema.trailing == "bytes" else "value_count"
    offset = schema.dtype.fields[count_field][1]
    size = schema.dtype.fields[count_field][0].itemsize
    head[offset : offset + size] = (1000).to_bytes(size, "little")
    with pytest.raises(hal_core.DataLossError, match="record at byte 0 claims"):
        decode_records(content_type, bytes(head) + bytes(8))


def _read_everything(path: Path, allow_incomplete: bool) -> None:
    bundle = read_profile_bundle(path, allow_incomplete=allow_incomplete)
    for chunk in bundle.chunks:
        if chunk.metadata.content_type in SCHEMAS:
            chunk.records()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    mutations=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6),
    cut=st.one_of(st.none(), st.integers(8, 1 << 20)),
    allow_incomplete=st.booleans(),
    unfinished=st.booleans(),
)
def test_fuzzed_bundles_are_read_or_data_loss(
    tmp_path: Path,
    bundle_bytes: bytes,
    mutations: list[tuple[int, int]],
    cut: int | None,
    allow_incomplete: bool,
    unfinished: bool,
) -> None:
    data = bytearray(bundle_bytes)
    if unfinished:
        struct.pack_into("<Q", data, 24, 0)
    for where, value in mutations:
        # Past magic and version: those have their own codes (INVALID_ARGUMENT,
        # INCOMPATIBLE); everything after them can only be read or be DATA_LOSS.
        data[12 + where % (len(data) - 12)] = value
    if cut is not None:
        del data[cut % len(data) or 8 :]
    path = _write(tmp_path, bytes(data), "fuzz.halprof")
    try:
        _read_everything(path, allow_incomplete)
    except hal_core.DataLossError:
        pass
