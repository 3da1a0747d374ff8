import contextlib

import pytest
from hal_amdgpu.target_id import (
    Feature,
    TargetId,
    TargetKind,
    check_compatible,
    compatibility_problem,
    target_from_e_flags,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core import IncompatibleError, InvalidArgumentError


@pytest.mark.parametrize(
    "text,kind,version,fmt",
    [
        ("gfx1100", TargetKind.EXACT, (11, 0, 0), "gfx1100"),
        ("amdgcn-amd-amdhsa--gfx90a", TargetKind.EXACT, (9, 0, 10), "gfx90a"),
        ("gfx942:sramecc+:xnack-", TargetKind.EXACT, (9, 4, 2), "gfx942:sramecc+:xnack-"),
        ("gfx90c", TargetKind.EXACT, (9, 0, 12), "gfx90c"),
        ("gfx1030", TargetKind.EXACT, (10, 3, 0), "gfx1030"),
        ("gfx11-generic", TargetKind.GENERIC, (11, None, None), "gfx11-generic"),
        ("gfx9-4-generic:xnack+", TargetKind.GENERIC, (9, 4, None), "gfx9-4-generic:xnack+"),
    ],
)
def test_parse_and_format(text, kind, version, fmt):
    t = TargetId.parse(text)
    assert t.kind is kind
    assert (t.major, t.minor, t.stepping) == version
    assert t.format() == fmt
    assert TargetId.parse(t.hsa_isa_name) == t


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "gfx",
        "gfxzz",
        "sm_80",
        "gfx1100:foo+",
        "gfx1100:xnack",
        "gfx1100:xnack+:xnack-",
        "amdgcn-amd-unknown--gfx1100",
    ],
)
def test_parse_rejects(bad):
    with pytest.raises(InvalidArgumentError):
        TargetId.parse(bad)


def test_e_flags():
    assert target_from_e_flags(0x41, 3).format() == "gfx1100"
    t = target_from_e_flags(0x53F, 3)
    assert t.processor == "gfx90a" and t.xnack is Feature.ANY and t.sramecc is Feature.ANY
    t = target_from_e_flags(0x4C | 0x300 | 0x800, 2)
    assert t.format() == "gfx942:sramecc-:xnack+"
    g = target_from_e_flags(0x54 | (1 << 24), 4)
    assert g.kind is TargetKind.GENERIC and g.generic_version == 1
    with pytest.raises(InvalidArgumentError):
        target_from_e_flags(0x01, 3)


@pytest.mark.parametrize(
    "code,agent,ok",
    [
        ("gfx1100", "gfx1100", True),
        ("gfx1100", "gfx1101", False),
        ("gfx11-generic", "gfx1103", True),
        ("gfx11-generic", "gfx1030", False),
        ("gfx9-4-generic", "gfx942:sramecc+:xnack-", True),
        ("gfx90a:xnack+", "gfx90a:xnack-", False),
        ("gfx90a", "gfx90a:xnack-", True),
    ],
)
def test_compatibility(code, agent, ok):
    c = TargetId.parse(code)
    a = TargetId.parse(agent)
    assert (compatibility_problem(c, a) is None) == ok
    if not ok:
        with pytest.raises(IncompatibleError) as info:
            check_compatible(c, a)
        assert c.processor in str(info.value) and a.processor in str(info.value)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40))
def test_parse_fuzz_only_invalid_argument(text):
    with contextlib.suppress(InvalidArgumentError):  # the one error allowed
        TargetId.parse(text)
