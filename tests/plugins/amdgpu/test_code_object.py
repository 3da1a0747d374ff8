import contextlib
import struct

import msgpack
import pytest
from hal_amdgpu.code_object import parse_hsaco, parse_metadata, reflect_hal_layout
from hal_amdgpu.kernels import CTS_SOURCES, KERNEL_DIR, available_targets, code_object_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hal_core import InvalidArgumentError

HSACO = code_object_path("scale_and_offset", "gfx1100").read_bytes()


def test_shipped_code_objects_parse():
    files = sorted(KERNEL_DIR.glob("*.hsaco"))
    assert len(files) >= 10
    for path in files:
        co = parse_hsaco(path.read_bytes())
        assert co.kernels
        for k in co.kernels.values():
            reflect_hal_layout(k)
    for source in CTS_SOURCES + ("blit",):
        assert {"gfx1100", "gfx90a"} <= set(available_targets(source))


def test_scale_and_offset_metadata():
    co = parse_hsaco(HSACO)
    k = co.kernel("scale_and_offset")
    assert k.symbol == "scale_and_offset.kd"
    assert [a.name for a in k.args] == ["in", "out", "scale", "offset", "count"]
    layout = reflect_hal_layout(k)
    assert layout.binding_count == 2 and layout.constant_count == 3
    assert layout.implicit_args_offset is None


def test_reqd_workgroup_size_and_implicit_args():
    wg = parse_hsaco(code_object_path("workgroup_ids", "gfx90a").read_bytes())
    assert wg.kernel("write_workgroup_ids").reqd_workgroup_size == (64, 1, 1)
    ind = parse_hsaco(code_object_path("indirect", "gfx1100").read_bytes()).kernel("indirect_iota")
    layout = reflect_hal_layout(ind)
    assert layout.implicit_args_offset == 16 and layout.explicit_size == 16
    assert layout.kernarg_size >= 16 + 256


def _doc(**kernel):
    base = {
        ".name": "k",
        ".symbol": "k.kd",
        ".kernarg_segment_size": 16,
        ".kernarg_segment_align": 8,
        ".args": [],
    }
    base.update(kernel)
    return msgpack.packb({"amdhsa.target": "amdgcn-amd-amdhsa--gfx1100", "amdhsa.kernels": [base]})


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",
        b"",
        msgpack.packb([1, 2]),
        msgpack.packb({"amdhsa.kernels": []}),
        _doc(**{".kernarg_segment_align": 3}),
        _doc(**{".symbol": "k"}),
        _doc(**{".args": [{".offset": 12, ".size": 8, ".value_kind": "by_value"}]}),
        _doc(**{".reqd_workgroup_size": [0, 1, 1]}),
        _doc(**{".kernarg_segment_size": "x"}),
        b"\x82\xadamdhsa.target\x01\xadamdhsa.target\x02",  # duplicate key
    ],
)
def test_bad_metadata(raw):
    with pytest.raises(InvalidArgumentError):
        parse_metadata(raw)


def test_non_hal_abi_kernel_rejected():
    target, kernels = parse_metadata(
        _doc(
            **{
                ".args": [
                    {".offset": 0, ".size": 4, ".value_kind": "by_value"},
                    {".offset": 8, ".size": 8, ".value_kind": "global_buffer"},
                ]
            }
        )
    )
    with pytest.raises(InvalidArgumentError, match="before constants"):
        reflect_hal_layout(kernels[0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_elf(data):
    blob = bytearray(HSACO)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    with contextlib.suppress(InvalidArgumentError):  # the one error allowed
        parse_hsaco(bytes(blob))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_msgpack(raw):
    with contextlib.suppress(InvalidArgumentError):  # the one error allowed
        parse_metadata(raw)


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
        max_leaves=12,
    )
)
def test_fuzz_structured_msgpack(value):
    doc = {"amdhsa.target": "gfx1100", "amdhsa.kernels": [value]}
    with contextlib.suppress(InvalidArgumentError):  # the one error allowed
        parse_metadata(msgpack.packb(doc))


def test_not_elf():
    with pytest.raises(InvalidArgumentError, match="not an ELF"):
        parse_hsaco(b"hello world" * 10)
    with pytest.raises(InvalidArgumentError):
        parse_hsaco(HSACO[:18] + struct.pack("<H", 62) + HSACO[20:])  # EM_X86_64
