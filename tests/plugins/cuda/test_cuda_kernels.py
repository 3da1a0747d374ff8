"""The committed PTX kernels (hal_cuda/kernels) against their CUDA C sources and the CTS
contract, and PTX reflection under the HAL kernel ABI. Needs neither nvcc nor a GPU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hal_cuda.kernels import (
    CTS_LIBRARY,
    KERNEL_DIR,
    NAMES,
    load_ptx,
    ptx_path,
    reflect_ptx,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hal_core
from hal_core.cts.dispatch_support import KERNELS

SRC = KERNEL_DIR / "src"

# name -> (bindings, constants, required workgroup size): the contract of hal-local-cpu's
# cts_kernels.c, which every backend's CTS library keeps.
CONTRACT = {
    "scale_and_offset": (2, 3, (64, 1, 1)),
    "negate": (2, 1, (64, 1, 1)),
    "double": (2, 1, (64, 1, 1)),
    "write_workgroup_ids": (1, 0, (1, 1, 1)),
    "write_workgroup_count": (1, 3, (1, 1, 1)),
    "noop": (0, 0, (1, 1, 1)),
    "fail_status": (0, 2, (1, 1, 1)),
}

_KERNEL = re.compile(
    r"HAL_KERNEL\s+void\s+(?:HAL_WORKGROUP_SIZE\((\w+)\)\s*)?(\w+)\s*\(([^)]*)\)", re.S
)
_DEFINE = re.compile(r"^#define\s+(\w+)\s+(\d+)\s*$", re.M)


def _source_kernels(path: Path) -> dict[str, tuple[int, int, tuple[int, int, int] | None]]:
    """What a .cu file declares: export name -> (pointer params, scalar params, size)."""
    text = path.read_text()
    defines = dict(_DEFINE.findall(text))
    found = {}
    for size, name, params in _KERNEL.findall(text):
        decls = [p for p in params.split(",") if p.strip()]
        pointers = sum("*" in p for p in decls)
        wg = (int(defines.get(size, size)), 1, 1) if size else None
        found[name.removeprefix("hal_export_")] = (pointers, len(decls) - pointers, wg)
    return found


def test_every_source_has_its_committed_ptx():
    sources = sorted(p.stem for p in SRC.glob("*.cu"))
    assert sources == sorted(NAMES)
    assert sorted(p.stem for p in KERNEL_DIR.glob("*.ptx")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_ptx_matches_its_source(name):
    declared = _source_kernels(SRC / f"{name}.cu")
    assert declared, f"{name}.cu declares no HAL_KERNEL"
    module = reflect_ptx(load_ptx(name))
    assert module.target == "sm_80" and module.address_size == 64
    reflected = {
        e.name: (e.binding_count, e.constant_count, e.workgroup_size) for e in module.entries
    }
    assert reflected == declared


def test_cts_library_keeps_the_cts_contract():
    assert CTS_LIBRARY == KERNELS
    module = reflect_ptx(load_ptx(CTS_LIBRARY))
    assert [e.name for e in module.entries] == list(CONTRACT)
    for name, (bindings, constants, wg) in CONTRACT.items():
        entry = module.entry(name)
        assert (entry.binding_count, entry.constant_count, entry.workgroup_size) == (
            bindings,
            constants,
            wg,
        ), name
        assert entry.param_types[:bindings] == (".u64",) * bindings


def test_load_ptx_is_nul_terminated_text_and_unknown_names_are_not_found():
    data = load_ptx("multi_entry")
    assert data.endswith(b"\x00") and data[:-1] == ptx_path("multi_entry").read_bytes()
    with pytest.raises(hal_core.NotFoundError, match="no_such"):
        load_ptx("no_such")
    with pytest.raises(hal_core.NotFoundError):
        ptx_path("../cts_kernels")


# -- reflection of foreign PTX ------------------------------------------------------------------

_HEADER = ".version 8.0\n.target sm_80\n.address_size 64\n"


def test_reflection_reads_params_reqntid_and_comments():
    ptx = (
        _HEADER
        + "// .entry commented_out(.param .u64 x)\n"
        + "/* .entry also_commented() */\n"
        + ".visible .entry k(\n  .param .u64 .ptr .global .align 4 k_p0,\n"
        + "  .param .b64 k_p1,\n  .param .f32 k_p2,\n  .param .s32 k_p3\n)\n"
        + ".maxnreg 32\n.reqntid 128, 2\n{\n ret;\n}\n"
        + ".entry bare\n{\n ret;\n}\n"
    ).encode()
    module = reflect_ptx(ptx)
    assert [e.name for e in module.entries] == ["k", "bare"]
    k = module.entry("k")
    assert (k.binding_count, k.constant_count, k.workgroup_size) == (2, 2, (128, 2, 1))
    assert k.param_types == (".u64", ".b64", ".f32", ".s32")
    bare = module.entry("bare")
    assert (bare.binding_count, bare.constant_count, bare.workgroup_size) == (0, 0, None)
    with pytest.raises(KeyError):
        module.entry("commented_out")


@pytest.mark.parametrize(
    ("ptx", "match"),
    [
        (b"\x7fELF\x02\x01", "no .version"),
        (b"\xff\xfe.version 8.0", "non-ASCII byte at offset 0"),
        (_HEADER.encode() + b"\x00.entry k()\n{}", "NUL byte"),
        (b".target sm_80\n", "no .version"),
        (_HEADER.encode() + b".entry k(.param .f64 x)\n{}", "neither a 64-bit"),
        (_HEADER.encode() + b".entry k(.param .align 8 .b8 s[16])\n{}", "neither a 64-bit"),
        (_HEADER.encode() + b".entry k(.param .u32 n, .param .u64 p)\n{}", "follows a 32-bit"),
        (_HEADER.encode() + b".entry k(.reg .u32 n)\n{}", "is not a .param"),
        (_HEADER.encode() + b".entry k()\n.reqntid 0\n{}", "zero dimension"),
        (_HEADER.encode() + b".entry k()\n{}\n.entry k()\n{}", "repeats"),
        (b".version 8.0\n.target sm_80\n.address_size x\n", "address_size"),
    ],
)
def test_reflection_rejects_what_breaks_the_abi(ptx, match):
    with pytest.raises(hal_core.InvalidArgumentError, match=match):
        reflect_ptx(ptx)


def test_reflection_names_the_line_of_a_bad_entry():
    ptx = _HEADER + ".entry good()\n{}\n\n.entry bad(.param .f64 x)\n{}\n"
    with pytest.raises(hal_core.InvalidArgumentError, match=r"'bad' \(line 7\)"):
        reflect_ptx(ptx.encode())


_PTX_TOKENS = [
    ".version 8.0\n",
    ".target sm_80\n",
    ".address_size 64\n",
    ".visible .entry k",
    ".entry ",
    "(",
    ")",
    ",",
    ".param .u64 p",
    ".param .f32 c",
    ".param .f64 d",
    ".reqntid 32, 2\n",
    "{",
    "}",
    "/*",
    "*/",
    "//",
    "\n",
    "\x00",
    "\xff",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PTX_TOKENS), max_size=60), st.binary(max_size=32))
def test_reflection_fuzz_never_crashes(tokens, noise):
    data = "".join(tokens).encode("latin-1") + noise
    try:
        module = reflect_ptx(data)
    except hal_core.InvalidArgumentError:
        return
    for entry in module.entries:
        assert entry.binding_count + entry.constant_count == len(entry.param_types)


@pytest.mark.parametrize(
    ("ptx", "match"),
    [
        (_HEADER + "/*" * 200_000, None),
        (_HEADER + ".entry k(" * 50_000, "no closing"),
        (_HEADER + ".entry k\n" * 50_000, "repeats"),
        ("\n" * 400_000 + _HEADER, None),
    ],
    ids=["open-comments", "open-params", "many-entries", "blank-lines"],
)
def test_reflection_of_pathological_text(ptx, match):
    """Shapes that would take minutes if any step rescanned the text per match."""
    if match is None:
        assert reflect_ptx(ptx.encode()).entries == ()
    else:
        with pytest.raises(hal_core.InvalidArgumentError, match=match):
            reflect_ptx(ptx.encode())
