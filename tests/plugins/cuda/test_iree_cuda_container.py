"""IREE's cuda-nvptx-fb (CDA1) container: the committed IREE 3.13 executables parse to the
exports the compiler configured, their PTX follows the HAL kernel ABI, and malformed input
is INVALID_ARGUMENT naming the byte (never another exception, never a hang)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable

import pytest
from hal_cuda.iree_cuda_container import (
    BINDING_INDIRECT,
    BINDING_READ_ONLY,
    IDENTIFIER,
    is_container,
    parse_container,
)
from hal_cuda.kernels import reflect_ptx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hal_core

HERE = Path(__file__).resolve().parent / "iree_executables"
MANIFEST = json.loads((HERE / "manifest.json").read_text())
PROGRAMS = sorted(MANIFEST["programs"])


def _fixture(name: str) -> bytes:
    return (HERE / f"{name}.cda1").read_bytes()


def test_fixtures_come_from_iree_3_13_for_sm_80():
    assert "3.13" in MANIFEST["compiler"][1]
    assert "--iree-cuda-target=sm_80" in MANIFEST["flags"]
    assert set(PROGRAMS) == {"add", "chain512", "scale", "two_exports"}


@pytest.mark.parametrize("program", PROGRAMS)
def test_exports_match_the_compiler_configuration(program):
    parsed = parse_container(_fixture(program))
    expected = MANIFEST["programs"][program]["exports"]
    assert [e.name for e in parsed.exports] == [e["name"] for e in expected]
    for export, want in zip(parsed.exports, expected):
        assert export.workgroup_size == tuple(want["workgroup_size"])
        assert export.constant_count == want["constant_count"]
        assert export.binding_flags == tuple(want["binding_flags"])
        assert export.binding_count == len(want["binding_flags"])
        assert export.module_ordinal == 0
        assert export.debug_name == export.name
        assert export.source is not None and export.source[0] == f"{program}.mlir"


@pytest.mark.parametrize("program", PROGRAMS)
def test_module_is_the_compiled_ptx_and_follows_the_hal_abi(program):
    parsed = parse_container(_fixture(program))
    assert parsed.modules == ((HERE / f"{program}.ptx").read_bytes(),)
    ptx = reflect_ptx(parsed.modules[0])
    assert ptx.target == "sm_80"
    for export in parsed.exports:
        entry = ptx.entry(export.name)
        # IREE's launch: the bindings as pointers, then one 32-bit word per constant.
        assert (entry.binding_count, entry.constant_count) == (
            export.binding_count,
            export.constant_count,
        )


def test_scale_flags_and_two_exports_order():
    scale = parse_container(_fixture("scale")).exports[0]
    assert scale.binding_flags[0] == BINDING_READ_ONLY | BINDING_INDIRECT
    assert scale.binding_flags[2] == BINDING_INDIRECT
    two = parse_container(_fixture("two_exports"))
    assert [e.workgroup_size for e in two.exports] == [(32, 1, 1), (64, 1, 1)]
    reduction = two.export("mul_sum_dispatch_1_reduction_256_f32")
    assert reduction.binding_count == 2
    # The reduction's workgroup shares 16 bytes of dynamic shared memory (IREE passes it
    # as cuLaunchKernel's sharedMemBytes); the elementwise kernels need none.
    assert reduction.shared_memory_size == 16 and scale.shared_memory_size == 0
    with pytest.raises(KeyError):
        two.export("nope")


def test_bare_flatbuffer_is_accepted():
    data = _fixture("add")
    (size,) = struct.unpack_from("<Q", data, 8)
    bare = data[64 : 64 + size]
    assert bare[4:8] == IDENTIFIER and is_container(bare)
    assert parse_container(bare) == parse_container(data)


def test_is_container():
    assert is_container(_fixture("add"))
    assert not is_container(b"CDA")
    assert not is_container(b"HIP1" + bytes(60))
    assert not is_container((HERE / "add.ptx").read_bytes())


# -- bad input ---------------------------------------------------------------------------------


def _header(body: bytes, *, version: int = 0, size: int | None = None) -> bytes:
    size = len(body) if size is None else size
    return IDENTIFIER + struct.pack("<IQ", version, size) + bytes(48) + body


def _bare_add() -> bytes:
    data = _fixture("add")
    (size,) = struct.unpack_from("<Q", data, 8)
    return data[64 : 64 + size]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "no CDA1 identifier"),
        (b"HIP1" + bytes(100), "no CDA1 identifier"),
        (IDENTIFIER + bytes(10), "shorter than IREE's 64-byte"),
        (_header(_bare_add(), version=1), "version 1 at byte 4"),
        (_header(_bare_add(), size=10**6), "content bytes but"),
        (_header(b"\x08\x00\x00\x00HIP1" + bytes(8)), "identifier at byte 68"),
        (_header(b"\xff\xff\xff\x7fCDA1"), "root offset|outside"),
        (b"\x00\x00\x00\x00CDA1", "vtable|outside"),
    ],
)
def test_malformed_headers(data, match):
    with pytest.raises(hal_core.InvalidArgumentError, match=match):
        parse_container(data)


def test_errors_name_the_byte_in_the_callers_data():
    data = bytearray(_fixture("add"))
    # The root table's soffset to its vtable pointed far outside the buffer.
    (root,) = struct.unpack_from("<I", data, 64)
    struct.pack_into("<i", data, 64 + root, -(10**6))
    with pytest.raises(hal_core.InvalidArgumentError, match=r"at byte \d+ .*FlatBuffer"):
        parse_container(bytes(data))


class _Builder:
    """A tiny FlatBuffer writer for the semantic checks the compiler never violates:
    objects are written front to back, each offset field patched once the object it names
    is written after it (FlatBuffer offsets point forward)."""

    def __init__(self) -> None:
        self.out = bytearray(8)  # root offset + identifier, patched by finish()
        self.pending: list[tuple[int, Callable[[], int]]] = []

    def align(self, n: int, skew: int = 0) -> None:
        while (len(self.out) + skew) % n:
            self.out.append(0)

    def string(self, s: bytes) -> Callable[[], int]:
        def write() -> int:
            self.align(4)
            pos = len(self.out)
            self.out.extend(struct.pack("<I", len(s)) + s + b"\x00")
            return pos

        return write

    def u64s(self, values: list[int]) -> Callable[[], int]:
        def write() -> int:
            self.align(8, skew=4)  # the elements start 8-aligned after the length
            pos = len(self.out)
            self.out.extend(struct.pack(f"<I{len(values)}Q", len(values), *values))
            return pos

        return write

    def tables(self, items: list[Callable[[], int]]) -> Callable[[], int]:
        def write() -> int:
            self.align(4)
            pos = len(self.out)
            self.out.extend(struct.pack("<I", len(items)))
            for item in items:
                self.pending.append((len(self.out), item))
                self.out.extend(bytes(4))
            return pos

        return write

    def table(self, fields: list[bytes | Callable[[], int] | None]) -> Callable[[], int]:
        """Fields: 4-byte-aligned inline bytes, an object to reference, or None (absent)."""

        def write() -> int:
            self.align(4)
            vtable = len(self.out)
            self.out.extend(bytes(4 + 2 * len(fields)))
            self.align(4)
            table = len(self.out)
            self.out.extend(struct.pack("<i", table - vtable))
            offsets = []
            for f in fields:
                if f is None:
                    offsets.append(0)
                    continue
                offsets.append(len(self.out) - table)
                if callable(f):
                    self.pending.append((len(self.out), f))
                    self.out.extend(bytes(4))
                else:
                    self.out.extend(f)
            struct.pack_into(
                f"<HH{len(fields)}H",
                self.out,
                vtable,
                4 + 2 * len(fields),
                len(self.out) - table,
                *offsets,
            )
            return table

        return write

    def finish(self, root: Callable[[], int]) -> bytes:
        struct.pack_into("<I", self.out, 0, root())
        self.out[4:8] = IDENTIFIER
        while self.pending:
            at, write = self.pending.pop(0)
            struct.pack_into("<I", self.out, at, write() - at)
        return bytes(self.out)


def _builder_container(*, exports: list[dict], modules: list[bytes]) -> bytes:
    b = _Builder()
    export_tables = []
    for e in exports:
        dims = e.get("block_dims")
        export_tables.append(
            b.table(
                [
                    struct.pack("<I", e.get("module_ordinal", 0)),
                    b.string(e["name"]),
                    None if dims is None else struct.pack("<3I", *dims),
                    struct.pack("<I", e.get("shared", 0)),
                    struct.pack("<I", e.get("constants", 0)),
                    b.u64s(e["binding_flags"]),
                ]
            )
        )
    module_tables = [b.table([b.string(image)]) for image in modules]
    return b.finish(b.table([b.tables(export_tables), b.tables(module_tables)]))


_GOOD = {"name": b"k", "block_dims": (32, 1, 1), "binding_flags": [1, 0], "constants": 3}
_PTX = b".version 7.6\n.target sm_80\n"


def test_hand_built_container_parses():
    parsed = parse_container(_builder_container(exports=[_GOOD], modules=[_PTX]))
    (export,) = parsed.exports
    assert (export.name, export.workgroup_size, export.constant_count) == ("k", (32, 1, 1), 3)
    assert export.binding_flags == (1, 0) and parsed.modules == (_PTX,)
    assert export.source is None and export.debug_name == ""


@pytest.mark.parametrize(
    ("exports", "modules", "match"),
    [
        ([_GOOD], [], "no modules"),
        ([_GOOD], [b""], r"modules\[0\] has no PTX image"),
        ([], [_PTX], "exports no functions"),
        ([{**_GOOD, "name": b""}], [_PTX], r"exports\[0\] has no kernel_name"),
        ([{**_GOOD, "module_ordinal": 1}], [_PTX], "names module 1; there are 1"),
        ([{**_GOOD, "block_dims": None}], [_PTX], "has no block_dims"),
        ([{**_GOOD, "block_dims": (0, 1, 1)}], [_PTX], "block dims"),
        ([{**_GOOD, "block_dims": (1, 1, 65)}], [_PTX], "block dims"),
        ([{**_GOOD, "block_dims": (64, 32, 1)}], [_PTX], "at most 1024 threads"),
        ([_GOOD, _GOOD], [_PTX], "exported twice"),
        ([{**_GOOD, "name": b"\xff"}], [_PTX], "not UTF-8"),
    ],
)
def test_semantic_errors(exports, modules, match):
    data = _builder_container(exports=exports, modules=modules)
    with pytest.raises(hal_core.InvalidArgumentError, match=match):
        parse_container(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_containers_never_crash(data):
    """Flip, overwrite, truncate or extend the real containers: the parser returns a
    result or raises INVALID_ARGUMENT, nothing else, and always returns."""
    original = bytearray(_fixture(data.draw(st.sampled_from(PROGRAMS))))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "word", "truncate", "extend"]))
        if op == "flip" and original:
            i = data.draw(st.integers(0, len(original) - 1))
            original[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "word" and len(original) >= 4:
            i = data.draw(st.integers(0, len(original) - 4))
            value = data.draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 64]))
            struct.pack_into("<I", original, i, value)
        elif op == "truncate":
            del original[data.draw(st.integers(0, len(original))) :]
        else:
            original.extend(data.draw(st.binary(max_size=64)))
    try:
        parsed = parse_container(bytes(original))
    except hal_core.InvalidArgumentError:
        return
    assert parsed.exports and parsed.modules


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_after_the_identifier_never_crash(tail):
    for data in (IDENTIFIER + tail, b"\x08\x00\x00\x00" + IDENTIFIER + tail):
        try:
            parsed = parse_container(data)
        except hal_core.InvalidArgumentError:
            continue
        assert parsed.exports and parsed.modules
