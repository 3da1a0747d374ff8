"""IREE 3.13's gfx1100 code objects (``iree_code_objects/``, made by its ``generate.py``
from the ``.mlir`` next to them): the current LLVM's target spelling, raw HSACO and both
``rocm-hsaco-fb`` containers (HIP1, AMD1) load and reflect; the kernels run on the soft
agent through host twins (Python stand-ins for the GPU code, named as such below) that
read IREE's nameless kernel arguments by offset; malformed input is INVALID_ARGUMENT."""

from __future__ import annotations

import pathlib
import struct

import numpy as np
import pytest
from hal_amdgpu.code_object import metadata_processor, parse_hsaco
from hal_amdgpu.iree_container import (
    BINDING_INDIRECT,
    BINDING_READ_ONLY,
    FORMAT_ROCM_HSACO_FB,
    parse_container,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hal_core
from hal_core import BufferParams, BufferUsage, DispatchConfig, MemoryType
from hal_core.backend import buffer_storage

HERE = pathlib.Path(__file__).parent / "iree_code_objects"
KINDS = ("hsaco", "hip1", "amd1")
URI = "amdgpu://0?hsa=soft"  # the soft agent's default GPUs are gfx1100
TIMEOUT = 30.0
RO_IND = BINDING_READ_ONLY | BINDING_INDIRECT

# What each program's MLIR implies: its dispatches in order, with their binding flags
# (inputs read-only, outputs written; IREE passes every binding indirectly) and the
# number of 32-bit constants (a dynamic length is one i64, two words).
EXPECTED = {
    "add": [("add_dispatch_0_elementwise_64_f32", (RO_IND, RO_IND, BINDING_INDIRECT), 0)],
    "scale": [("scale_dispatch_0_elementwise_D_f32", (RO_IND, RO_IND, BINDING_INDIRECT), 2)],
    "two_exports": [
        ("mul_sum_dispatch_0_elementwise_256_f32", (RO_IND, RO_IND, BINDING_INDIRECT), 0),
        ("mul_sum_dispatch_1_reduction_256_f32", (RO_IND, BINDING_INDIRECT), 0),
    ],
}


def _artifact(program: str, kind: str) -> bytes:
    return (HERE / f"{program}.{kind}").read_bytes()


@pytest.fixture(scope="module")
def device():
    with hal_core.create_device(URI) as d:
        yield d


def _buffer(device, data: bytes):
    buf = device.allocator.allocate_buffer(
        BufferParams(
            type=MemoryType.DEVICE_LOCAL | MemoryType.HOST_VISIBLE,
            usage=BufferUsage.DEFAULT | BufferUsage.MAPPING_SCOPED,
        ),
        max(4, len(data)),
    )
    if data:
        buf.write(data)
    return buf


# -- target spelling --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, processor",
    [
        ("amdgcn-amd-amdhsa--gfx1100", "gfx1100"),
        ("amdgcn-amd-amdhsa--gfx90a:sramecc+:xnack-", "gfx90a"),
        ("amdgcn-amd-amdhsa--gfx11-generic", "gfx11-generic"),
        ("amdgpu11.00-amd-amdhsa-unknown-gfx1100", "gfx1100"),
        ("amdgpu9.42-amd-amdhsa-unknown-gfx942:sramecc+:xnack-", "gfx942"),
        ("amdgpu11.00-amd-amdhsa-unknown-gfx11-generic", "gfx11-generic"),
    ],
)
def test_both_llvm_spellings_of_the_metadata_target(text, processor):
    assert metadata_processor(text) == processor


@pytest.mark.parametrize(
    "text",
    [
        "x86_64-unknown-linux-gnu",
        "amdgcn-amd-amdpal--gfx1100",
        "gfx1100",
        "amdgpu10.30-amd-amdhsa-unknown-gfx1100",  # arch version of another major
    ],
)
def test_other_metadata_targets_are_invalid(text):
    with pytest.raises(hal_core.InvalidArgumentError):
        metadata_processor(text)


def test_iree_hsaco_metadata_uses_the_new_spelling():
    """Every IREE 3.13 gfx1100 code object was rejected ("metadata target ... disagrees
    with e_flags") before both spellings were read."""
    for program in EXPECTED:
        co = parse_hsaco(_artifact(program, "hsaco"))
        assert co.metadata_target == "amdgpu11.00-amd-amdhsa-unknown-gfx1100"
        assert co.target.processor == "gfx1100"


def _patched(blob: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and blob.count(old) == 1
    return blob.replace(old, new)


def test_a_metadata_target_disagreeing_with_e_flags_is_still_rejected():
    blob = _artifact("add", "hsaco")
    other = _patched(
        blob, b"amdgpu11.00-amd-amdhsa-unknown-gfx1100", b"amdgpu11.00-amd-amdhsa-unknown-gfx1101"
    )
    with pytest.raises(hal_core.InvalidArgumentError, match="disagrees with e_flags"):
        parse_hsaco(other)
    version = _patched(
        blob, b"amdgpu11.00-amd-amdhsa-unknown-gfx1100", b"amdgpu10.00-amd-amdhsa-unknown-gfx1100"
    )
    with pytest.raises(hal_core.InvalidArgumentError, match="arch version"):
        parse_hsaco(version)


# -- containers and reflection ----------------------------------------------------------


@pytest.mark.parametrize("program", sorted(EXPECTED))
def test_containers_carry_the_exports_and_the_hsaco(program):
    raw = _artifact(program, "hsaco")
    for kind, ident in (("hip1", "HIP1"), ("amd1", "AMD1")):
        defn = parse_container(_artifact(program, kind))
        assert defn.identifier == ident
        assert defn.isa == ("gfx1100" if kind == "amd1" else "")
        assert defn.modules == (raw,)  # the same code object as the dumped binary
        got = [(e.name, e.binding_flags, e.constant_count) for e in defn.exports]
        assert got == EXPECTED[program]
        co = parse_hsaco(raw)
        for export in defn.exports:
            kernel = co.kernels[export.name]
            assert export.symbol == kernel.symbol
            assert export.workgroup_size == kernel.reqd_workgroup_size


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("program", sorted(EXPECTED))
def test_load_and_reflect(device, program, kind):
    exe = device.create_executable_cache().prepare(FORMAT_ROCM_HSACO_FB, _artifact(program, kind))
    functions = exe.functions
    assert [f.name for f in functions] == [name for name, _, _ in EXPECTED[program]]
    co = parse_hsaco(_artifact(program, "hsaco"))
    for fn, (name, flags, constants) in zip(functions, EXPECTED[program]):
        assert fn.binding_count == len(flags) and fn.constant_count == constants
        assert fn.workgroup_size == co.kernels[name].reqd_workgroup_size
        bindings = [p for p in fn.parameters if p.type == hal_core.ParameterType.BINDING]
        assert [p.offset for p in bindings] == list(range(len(flags)))
        assert [p.name for p in bindings] == [f"b{i}" for i in range(len(flags))]
        if kind != "hsaco":  # binding flags only travel in the containers
            assert tuple(p.flags for p in bindings) == flags


def test_raw_hsaco_loads_under_the_hsaco_format_too(device):
    exe = device.create_executable_cache().prepare("hsaco", _artifact("add", "hsaco"))
    assert exe.functions[0].name == "add_dispatch_0_elementwise_64_f32"


def test_the_amd1_isa_must_match_its_module():
    blob = _artifact("add", "amd1")
    isa = struct.pack("<I", 7) + b"gfx1100"
    assert blob.count(isa) == 1
    bad = blob.replace(isa, struct.pack("<I", 7) + b"gfx1030")
    with hal_core.create_device(URI) as device:
        with pytest.raises(hal_core.InvalidArgumentError, match="gfx1030"):
            device.create_executable_cache().prepare(FORMAT_ROCM_HSACO_FB, bad)


@pytest.mark.parametrize("kind", KINDS)
def test_gfx1100_code_objects_are_incompatible_with_other_gpus(kind):
    with hal_core.create_device("amdgpu://0?hsa=soft&soft_gpus=gfx90a") as device:
        with pytest.raises(hal_core.IncompatibleError, match="gfx1100"):
            device.create_executable_cache().prepare(FORMAT_ROCM_HSACO_FB, _artifact("add", kind))


# -- execution through host twins -------------------------------------------------------
#
# The soft agent cannot run GPU code: each IREE kernel below runs as a host twin, a numpy
# function registered under the kernel's name that does what the MLIR says, reading the
# kernel arguments the driver wrote exactly where the code object's metadata puts them.


def _twin_add(ctx) -> None:
    """Host twin of add_dispatch_0_elementwise_64_f32: out = a + b (64 floats)."""
    a, b, out = ctx.explicit_args()
    ctx.array(out, 64, np.float32)[:] = ctx.array(a, 64, np.float32) + ctx.array(b, 64, np.float32)


def _twin_scale(ctx) -> None:
    """Host twin of scale_dispatch_0_elementwise_D_f32: out[i] = a[i] * s[0] for the
    dynamic length passed as two 32-bit constants (low, high)."""
    a, s, out, low, high = ctx.explicit_args()
    n = int(low) | int(high) << 32
    ctx.array(out, n, np.float32)[:] = ctx.array(a, n, np.float32) * ctx.array(s, 1, np.float32)[0]


def _twin_mul(ctx) -> None:
    """Host twin of mul_sum_dispatch_0_elementwise_256_f32: out = a * b (256 floats)."""
    a, b, out = ctx.explicit_args()
    ctx.array(out, 256, np.float32)[:] = ctx.array(a, 256, np.float32) * ctx.array(
        b, 256, np.float32
    )


def _twin_sum(ctx) -> None:
    """Host twin of mul_sum_dispatch_1_reduction_256_f32: out[0] = sum(a) (256 floats)."""
    a, out = ctx.explicit_args()
    ctx.array(out, 1, np.float32)[0] = np.float32(ctx.array(a, 256, np.float32).sum())


TWINS = {
    "add_dispatch_0_elementwise_64_f32": _twin_add,
    "scale_dispatch_0_elementwise_D_f32": _twin_scale,
    "mul_sum_dispatch_0_elementwise_256_f32": _twin_mul,
    "mul_sum_dispatch_1_reduction_256_f32": _twin_sum,
}


@pytest.fixture(scope="module")
def twin_device(device):
    runtime = device.backend.hsa.lib
    for name, fn in TWINS.items():
        runtime.register_host_twin(name, fn)
    return device


def _run(device, exe, function, groups, constants, buffers) -> None:
    sem = device.create_semaphore(0)
    device.queue_dispatch(
        1, [], [(sem, 1)], exe, function, DispatchConfig.static(*groups), constants, buffers
    )
    sem.wait(1, TIMEOUT)


@pytest.mark.parametrize("kind", KINDS)
def test_add_runs_with_its_host_twin(twin_device, kind):
    device = twin_device
    exe = device.create_executable_cache().prepare(FORMAT_ROCM_HSACO_FB, _artifact("add", kind))
    a = np.arange(64, dtype=np.float32)
    b = np.linspace(-1, 1, 64, dtype=np.float32)
    bufs = [
        _buffer(device, a.tobytes()),
        _buffer(device, b.tobytes()),
        _buffer(device, b"\0" * 256),
    ]
    _run(device, exe, 0, (2, 1, 1), b"", bufs)
    assert np.array_equal(np.frombuffer(bufs[2].read(), np.float32), a + b)


@pytest.mark.parametrize("kind", KINDS)
def test_dynamic_scale_reads_its_constants_by_offset(twin_device, kind):
    device = twin_device
    exe = device.create_executable_cache().prepare(FORMAT_ROCM_HSACO_FB, _artifact("scale", kind))
    n = 100
    a = np.arange(n, dtype=np.float32)
    bufs = [
        _buffer(device, a.tobytes()),
        _buffer(device, np.float32(2.5).tobytes()),
        _buffer(device, b"\0" * 4 * (n + 4)),
    ]
    _run(device, exe, 0, (-(-n // 32), 1, 1), struct.pack("<II", n, 0), bufs)
    out = np.frombuffer(bufs[2].read(), np.float32)
    assert np.array_equal(out[:n], a * np.float32(2.5)) and not out[n:].any()


@pytest.mark.parametrize("kind", KINDS)
def test_two_exports_run_in_entry_point_order(twin_device, kind):
    device = twin_device
    exe = device.create_executable_cache().prepare(
        FORMAT_ROCM_HSACO_FB, _artifact("two_exports", kind)
    )
    a = np.linspace(0, 3, 256, dtype=np.float32)
    b = np.full(256, 2.0, np.float32)
    bufs = [
        _buffer(device, a.tobytes()),
        _buffer(device, b.tobytes()),
        _buffer(device, b"\0" * 1024),
        _buffer(device, b"\0" * 4),
    ]
    _run(device, exe, 0, (8, 1, 1), b"", bufs[:3])
    _run(device, exe, 1, (1, 1, 1), b"", [bufs[0], bufs[3]])
    assert np.array_equal(np.frombuffer(bufs[2].read(), np.float32), a * b)
    assert np.frombuffer(bufs[3].read(), np.float32)[0] == np.float32(a.sum())


def test_nameless_arguments_reach_twins_by_offset(twin_device):
    """IREE names no kernel argument: three nameless ``global_buffer`` arguments used to
    collapse into one ``args["global_buffer"]`` entry. Each is now its own offset."""
    device = twin_device
    seen = []

    def spy(ctx) -> None:
        seen.append((dict(ctx.args), dict(ctx.by_offset), ctx.explicit_args()))
        _twin_add(ctx)

    runtime = device.backend.hsa.lib
    runtime.register_host_twin("add_dispatch_0_elementwise_64_f32", spy)
    try:
        exe = device.create_executable_cache().prepare(
            FORMAT_ROCM_HSACO_FB, _artifact("add", "hip1")
        )
        bufs = [_buffer(device, b"\0" * 256) for _ in range(3)]
        _run(device, exe, 0, (2, 1, 1), b"", bufs)
    finally:
        runtime.register_host_twin("add_dispatch_0_elementwise_64_f32", _twin_add)
    ((by_name, by_offset, explicit),) = seen
    addresses = [buffer_storage(b).address + b.byte_offset for b in bufs]
    assert by_offset == {0: addresses[0], 8: addresses[1], 16: addresses[2]}
    assert explicit == addresses
    assert "global_buffer" not in by_name


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ("hip1", "amd1"))
def test_truncated_containers_are_invalid_argument(kind):
    blob = _artifact("two_exports", kind)
    for cut in list(range(0, 200, 7)) + list(range(len(blob) - 64, len(blob), 5)):
        with pytest.raises(hal_core.InvalidArgumentError):
            parse_container(blob[:cut])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(("hip1", "amd1")), data=st.data())
def test_corrupted_containers_fail_cleanly(kind, data):
    """Random byte flips in the container (header, FlatBuffer tables, the HSACO inside):
    parsing and loading give INVALID_ARGUMENT or INCOMPATIBLE, or load; never another
    exception, never a crash."""
    blob = bytearray(_artifact("two_exports", kind))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    with hal_core.create_device(URI) as device:
        try:
            device.create_executable_cache().prepare(FORMAT_ROCM_HSACO_FB, bytes(blob))
        except (hal_core.InvalidArgumentError, hal_core.IncompatibleError):
            pass


def test_export_counts_must_match_the_kernel():
    """A container whose export declares other constant counts than its kernel takes
    would dispatch with the wrong kernarg layout: INVALID_ARGUMENT at load."""
    blob = bytearray(_artifact("scale", "hip1"))
    defn = parse_container(bytes(blob))
    assert defn.exports[0].constant_count == 2
    # the export table's constant_count field holds 2; find it next to the block dims
    dims = struct.pack("<III", 32, 1, 1)
    at = bytes(blob).find(dims)
    assert at > 0
    for delta in range(-16, 32, 4):  # the u32 field lies within the table, near the dims
        if struct.unpack_from("<I", blob, at + delta)[0] == 2:
            struct.pack_into("<I", blob, at + delta, 3)
            break
    assert parse_container(bytes(blob)).exports[0].constant_count == 3
    with hal_core.create_device(URI) as device:
        with pytest.raises(hal_core.InvalidArgumentError, match="3 constants"):
            device.create_executable_cache().prepare(FORMAT_ROCM_HSACO_FB, bytes(blob))
