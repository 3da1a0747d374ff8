"""AQL packet layouts against the system HSA headers, header encoding, emitters."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from hal_amdgpu import aql_packets as aql

HSA_INCLUDE = "/usr/include/hsa"

# (numpy dtype, C type, fields (numpy name -> C member expression))
_LAYOUTS = [
    (
        aql.KERNEL_DISPATCH_DTYPE,
        "hsa_kernel_dispatch_packet_t",
        {
            n: {"workgroup_size": "workgroup_size_x", "grid_size": "grid_size_x"}.get(n, n)
            for n in aql.KERNEL_DISPATCH_DTYPE.names
        },
    ),
    (
        aql.BARRIER_AND_DTYPE,
        "hsa_barrier_and_packet_t",
        {n: n for n in aql.BARRIER_AND_DTYPE.names},
    ),
    (aql.BARRIER_OR_DTYPE, "hsa_barrier_or_packet_t", {n: n for n in aql.BARRIER_OR_DTYPE.names}),
    (
        aql.BARRIER_VALUE_DTYPE,
        "hsa_amd_barrier_value_packet_t",
        {
            "header": "header.header",
            "amd_format": "header.AmdFormat",
            "reserved": "header.reserved",
            **{
                n: n
                for n in aql.BARRIER_VALUE_DTYPE.names
                if n not in ("header", "amd_format", "reserved")
            },
        },
    ),
    (
        aql.PM4_IB_DTYPE,
        "hsa_ext_amd_aql_pm4_packet_t",
        {"header": "header", "completion_signal": "completion_signal"},
    ),
]


def _probe_source() -> str:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        '#include "hsa.h"',
        '#include "hsa_ext_amd.h"',
        '#include "hsa_ven_amd_aqlprofile.h"',
        "int main(void) {",
    ]
    for _, ctype, fields in _LAYOUTS:
        lines.append(f'printf("{ctype} sizeof %zu\\n", sizeof({ctype}));')
        for name, member in fields.items():
            lines.append(f'printf("{ctype} {name} %zu\\n", offsetof({ctype}, {member}));')
    lines += ["return 0;", "}"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_layouts(tmp_path_factory) -> dict[str, int]:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler on PATH to build the layout probe (install gcc)")
    if not os.path.exists(os.path.join(HSA_INCLUDE, "hsa.h")):
        pytest.skip("no /usr/include/hsa/hsa.h (apt-get install libhsa-runtime-dev)")
    d = tmp_path_factory.mktemp("probe")
    src = d / "probe.c"
    src.write_text(_probe_source())
    exe = d / "probe"
    subprocess.run(
        [cc, "-I", HSA_INCLUDE, "-DAMD_INTERNAL_BUILD", str(src), "-o", str(exe)],
        check=True,
        capture_output=True,
    )
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    result = {}
    for line in out.splitlines():
        ctype, name, value = line.split()
        result[f"{ctype}.{name}"] = int(value)
    return result


@pytest.mark.parametrize("dtype,ctype,fields", _LAYOUTS, ids=[c for _, c, _ in _LAYOUTS])
def test_layout_matches_hsa_headers(c_layouts, dtype, ctype, fields):
    assert dtype.itemsize == 64
    assert c_layouts[f"{ctype}.sizeof"] == 64
    for name in fields:
        assert dtype.fields[name][1] == c_layouts[f"{ctype}.{name}"], name
    # Grouped x/y/z fields span exactly the three C members.
    if "grid_size" in dtype.names:
        assert dtype.fields["grid_size"][0].itemsize == 12
        assert dtype.fields["workgroup_size"][0].itemsize == 6


def test_pm4_layout_offsets_from_reference():
    # The PM4-IB fields inside pm4_command[27] are not named by any header.
    f = aql.PM4_IB_DTYPE.fields
    assert (f["ib_jump_cmd"][1], f["dw_cnt_remain"][1], f["completion_signal"][1]) == (4, 20, 56)


def test_header_encoding_round_trip():
    h = aql.encode_header(
        aql.PacketType.KERNEL_DISPATCH,
        barrier=True,
        acquire=aql.FenceScope.AGENT,
        release=aql.FenceScope.SYSTEM,
    )
    assert h == 2 | (1 << 8) | (1 << 9) | (2 << 11)
    word = aql.header_setup_word(h, aql.DISPATCH_SETUP_3D)
    assert word >> 16 == 3
    assert aql.decode_header(word) == (
        aql.PacketType.KERNEL_DISPATCH,
        True,
        aql.FenceScope.AGENT,
        aql.FenceScope.SYSTEM,
    )
    assert aql.vendor_header_word(0, aql.AmdFormat.BARRIER_VALUE) == 2 << 16


def test_emit_dispatches_vectorised():
    n = 7
    rows = aql.new_staging(n)
    rows[:] = 0xAB  # garbage must be cleared from reserved fields
    rows.view("<u4")[:, 0] = aql.INVALID_HEADER_WORD
    wg = np.tile([64, 1, 1], (n, 1))
    grid = np.stack([np.arange(1, n + 1) * 64, np.ones(n), np.ones(n)], axis=1)
    ka = 0x1000 + np.arange(n, dtype=np.uint64) * 64
    aql.emit_dispatches(
        rows,
        kernel_object=0xDEAD0000,
        workgroup_size=wg,
        grid_size=grid,
        kernarg_address=ka,
        group_segment_size=128,
    )
    pk = aql.as_dispatch(rows)
    assert list(pk["grid_size"][:, 0]) == [64 * (i + 1) for i in range(n)]
    assert (pk["kernarg_address"] == ka).all()
    assert (pk["reserved0"] == 0).all() and (pk["reserved2"] == 0).all()
    assert (pk["completion_signal"] == 0).all()
    assert (aql.header_words(rows) == aql.INVALID_HEADER_WORD).all()


def test_emit_barrier_value_and_barrier_and():
    rows = aql.new_staging(2)
    aql.emit_barrier_value(rows[:1], signal=0x5000, value=41, completion_signal=9)
    bv = aql.as_barrier_value(rows[:1])[0]
    assert (bv["signal"], bv["value"], bv["mask"], bv["cond"]) == (
        0x5000,
        41,
        (1 << 63) - 1,
        aql.SignalCondition.LT,
    )
    aql.emit_barrier_and(rows[1:], dep_signals=np.array([1, 2, 3]))
    assert list(aql.as_barrier(rows[1:])[0]["dep_signal"]) == [1, 2, 3, 0, 0]
    with pytest.raises(ValueError):
        aql.emit_barrier_and(rows[1:], dep_signals=np.arange(6))


def test_pm4_ib_jump_words():
    rows = aql.new_staging(1)
    aql.emit_pm4_ib(rows, ib_address=0x1_2345_6780, dword_count=9)
    p = aql.as_pm4_ib(rows)[0]
    assert p["ib_jump_cmd"][0] == (3 << 30) | (0x3F << 8) | (2 << 16)
    assert p["ib_jump_cmd"][1] == 0x23456780 and p["ib_jump_cmd"][2] == 1
    assert p["ib_jump_cmd"][3] == 9 | (1 << 23)
    assert p["dw_cnt_remain"] == 0xA
