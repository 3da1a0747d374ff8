"""The device library covers every current AMDGPU family: selection (exact target ID ->
processor -> LLVM generic family), generic code objects (code object v6, the generic
version in ``e_flags``) accepted by validation and loaded by the soft agent, and the CTS
passing on one GPU of each family that the soft agent presents."""

from __future__ import annotations

import os
import pathlib
import shutil
import struct
import subprocess
import sys

import pytest
from hal_amdgpu.code_object import parse_hsaco
from hal_amdgpu.device_library import device_library_path, shipped_library_targets
from hal_amdgpu.kernels import (
    BUILTIN_SOURCE,
    CTS_SOURCES,
    KERNEL_DIR,
    available_targets,
    code_object_path,
)
from hal_amdgpu.soft_hsa import SoftSystemConfig
from hal_amdgpu.target_id import TargetId, TargetKind, library_candidates

import hal_core
from hal_core import BufferParams, BufferUsage, MemoryType

TIMEOUT = 30.0

#: GPU target -> the device-library code object it uses.
SELECTION = {
    "gfx906": "gfx9-generic",
    "gfx90a": "gfx90a",
    "gfx940": "gfx9-4-generic",
    "gfx941": "gfx9-4-generic",
    "gfx942": "gfx942",
    "gfx950": "gfx9-4-generic",
    "gfx1030": "gfx10-3-generic",
    "gfx1036": "gfx10-3-generic",
    "gfx1100": "gfx1100",
    "gfx1101": "gfx11-generic",
    "gfx1102": "gfx11-generic",
    "gfx1151": "gfx11-generic",
    "gfx1200": "gfx12-generic",
    "gfx1201": "gfx12-generic",
}

#: One GPU of each family; the CTS runs on each (gfx1100 also runs in every test run).
FAMILIES = ["gfx906", "gfx942", "gfx950", "gfx1030", "gfx1101", "gfx1200"]


def test_the_library_ships_generic_families_and_only_the_exact_targets_they_miss():
    shipped = shipped_library_targets()
    assert shipped == sorted(
        [
            "gfx9-generic",
            "gfx9-4-generic",
            "gfx10-3-generic",
            "gfx11-generic",
            "gfx12-generic",
            "gfx90a",
            "gfx942",
            "gfx1100",
        ]
    )
    # Every source is built for the same targets, so the CTS kernels exist wherever the
    # blit kernels do.
    for source in CTS_SOURCES + (BUILTIN_SOURCE,):
        assert available_targets(source) == shipped, source


BUILD_SCRIPT = KERNEL_DIR.parent.parent / "tools" / "build_kernels.sh"


@pytest.mark.skipif(
    not (BUILD_SCRIPT.is_file() and shutil.which("clang-19") and shutil.which("ld.lld-19")),
    reason="needs a checkout's tools/build_kernels.sh and Debian's clang-19 + lld-19",
)
def test_committed_code_objects_are_what_the_build_script_makes(tmp_path):
    """The shipped objects are reproducible from kernels/src with the documented compiler
    (one generic and one exact target: code object v6 and v5)."""
    env = dict(os.environ, OUT=str(tmp_path), TARGETS="gfx11-generic gfx942")
    subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, check=True, capture_output=True)
    built = sorted(tmp_path.glob("*.hsaco"))
    assert len(built) == 2 * len(CTS_SOURCES + (BUILTIN_SOURCE,))
    for path in built:
        assert path.read_bytes() == (KERNEL_DIR / path.name).read_bytes(), path.name


@pytest.mark.skipif(
    not (BUILD_SCRIPT.is_file() and shutil.which("clang-22") and shutil.which("ld.lld-22")),
    reason="needs a checkout's tools/build_kernels.sh and Debian's clang-22 + lld-22 "
    "(bookworm-security): LLVM 19 has no gfx9-4-generic",
)
def test_committed_gfx9_4_generic_objects_are_what_clang_22_makes(tmp_path):
    """The gfx9-4-generic family (gfx940/941/950) is built by clang-22, the first Debian
    LLVM that knows it; the objects are reproducible from kernels/src."""
    env = dict(os.environ, OUT=str(tmp_path), TARGETS="gfx9-4-generic")
    subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, check=True, capture_output=True)
    built = sorted(tmp_path.glob("*.hsaco"))
    assert len(built) == len(CTS_SOURCES + (BUILTIN_SOURCE,))
    for path in built:
        assert path.read_bytes() == (KERNEL_DIR / path.name).read_bytes(), path.name


@pytest.mark.parametrize("target", ["gfx942:sramecc+:xnack-", "gfx942:sramecc-:xnack+"])
def test_mi300_feature_variants_use_the_exact_gfx942_object(target):
    """MI300 parts report feature-qualified target IDs; the feature-agnostic exact gfx942
    object serves each (it beats the gfx9-4-generic family)."""
    path = device_library_path(TargetId.parse(target))
    assert path is not None and path.name == "blit--amdgcn-amd-amdhsa--gfx942.hsaco"


@pytest.mark.parametrize("target,expected", sorted(SELECTION.items()))
def test_selection_prefers_exact_then_processor_then_generic(target, expected):
    path = device_library_path(TargetId.parse(target))
    assert path is not None and path.name == f"blit--amdgcn-amd-amdhsa--{expected}.hsaco"
    assert code_object_path("cts_kernels", target).name.endswith(f"--{expected}.hsaco")


def test_candidates_follow_iree_order():
    agent = TargetId.parse("gfx942:sramecc+:xnack-")
    assert library_candidates(agent) == (
        "gfx942:sramecc+:xnack-",
        "gfx942",
        "gfx9-4-generic:sramecc+:xnack-",
        "gfx9-4-generic",
    )
    assert library_candidates(TargetId.parse("gfx90a")) == ("gfx90a",)


def test_a_feature_specific_object_beats_the_bare_processor(tmp_path):
    """A library built for the GPU's exact target ID is preferred, then the processor."""
    blit = device_library_path("gfx90a")
    assert blit is not None
    for name in ("gfx90a", "gfx90a:xnack-"):
        (tmp_path / f"blit--amdgcn-amd-amdhsa--{name}.hsaco").write_bytes(blit.read_bytes())
    chosen = device_library_path("gfx90a:sramecc+:xnack-", tmp_path)
    assert chosen is not None and chosen.name.endswith("--gfx90a.hsaco")
    chosen = device_library_path("gfx90a:xnack-", tmp_path)
    assert chosen is not None and chosen.name.endswith("--gfx90a:xnack-.hsaco")


@pytest.mark.parametrize(
    "family,agent",
    [
        ("gfx9-generic", "gfx906"),
        ("gfx9-4-generic", "gfx950"),
        ("gfx10-3-generic", "gfx1031"),
        ("gfx11-generic", "gfx1102"),
        ("gfx12-generic", "gfx1201"),
    ],
)
def test_generic_code_objects_carry_their_generic_version(family, agent):
    path = code_object_path("blit", agent)
    co = parse_hsaco(path.read_bytes())
    assert co.target.kind is TargetKind.GENERIC and co.target.processor == family
    assert co.abi_version == 4  # code object v6: the only version with generic targets
    assert co.target.generic_version >= 1


def _with_generic_version(blob: bytes, version: int) -> bytes:
    (e_flags,) = struct.unpack_from("<I", blob, 48)
    return blob[:48] + struct.pack("<I", (e_flags & 0x00FFFFFF) | (version << 24)) + blob[52:]


def test_a_generic_code_object_without_a_generic_version_is_refused():
    blob = code_object_path("scale_and_offset", "gfx1101").read_bytes()
    assert parse_hsaco(_with_generic_version(blob, 2)).target.generic_version == 2
    unversioned = _with_generic_version(blob, 0)
    assert parse_hsaco(unversioned).target.generic_version == 0
    with hal_core.create_device("amdgpu://0?hsa=soft&soft_gpus=gfx1101") as device:
        with pytest.raises(hal_core.IncompatibleError, match="generic version"):
            device.backend.load_executable(unversioned)
        # The versioned one loads on the same device afterwards.
        device.backend.load_executable(blob).close()


def test_soft_gpus_must_be_exact_processors():
    with pytest.raises(hal_core.InvalidArgumentError, match="gfx11-generic"):
        SoftSystemConfig.from_isas("gfx11-generic")
    with pytest.raises(hal_core.InvalidArgumentError, match="gfx11-generic"):
        hal_core.create_device("amdgpu://0?hsa=soft&soft_gpus=gfx11-generic")


def _loaded_library_targets(device) -> set[str]:
    runtime = device.backend.hsa.lib
    return {
        loaded.code_object.target.processor
        for exe in runtime._executables.values()
        for loaded in exe.loaded
    }


@pytest.mark.parametrize("target", sorted(SELECTION))
def test_each_target_gets_a_working_device(target):
    """The soft agent presents the target, the builtin blit kernels fill and copy, and the
    device loaded exactly the selected library for them."""
    with hal_core.create_device(f"amdgpu://0?hsa=soft&soft_gpus={target}") as device:
        gpu = device.backend.gpus[0]
        assert gpu.target.processor == target
        assert gpu.wavefront_size == (64 if target.startswith("gfx9") else 32)
        params = BufferParams(
            usage=BufferUsage.DEFAULT | BufferUsage.TRANSFER | BufferUsage.MAPPING_SCOPED,
            type=MemoryType.DEVICE_LOCAL | MemoryType.HOST_VISIBLE,
        )
        src = device.allocator.allocate_buffer(params, 4096)
        dst = device.allocator.allocate_buffer(params, 4096)
        sem = device.create_semaphore(0)
        device.queue_fill(1, [], [(sem, 1)], src, 0, 4096, b"\x5a\xa5\x01\x02")
        device.queue_copy(2, [(sem, 1)], [(sem, 2)], src, 0, dst, 0, 4096)
        sem.wait(2, TIMEOUT)
        assert dst.read() == b"\x5a\xa5\x01\x02" * 1024
        # Loaded with the queues: the selected code object and nothing else.
        assert _loaded_library_targets(device) == {SELECTION[target]}


def _repo_cts_dir() -> pathlib.Path:
    import hal_core.cts

    return pathlib.Path(hal_core.cts.__file__).parent


@pytest.mark.parametrize("target", FAMILIES)
def test_the_cts_passes_on_one_gpu_of_each_family(target, tmp_path):
    """The whole CTS on ``amdgpu://?hsa=soft`` presenting ``target`` (a subprocess: the
    CTS backend picks its kernels for the soft agent's first GPU from the environment)."""
    env = dict(os.environ, HAL_AMDGPU_SOFT_GPUS=target)
    env.pop("PYTEST_ADDOPTS", None)
    report = tmp_path / "junit.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--rootdir={tmp_path}",
            "-c",
            os.devnull,
            f"--junitxml={report}",
            "--hal-device=amdgpu://?hsa=soft",
            str(_repo_cts_dir()),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    text = report.read_text()
    # The run really was the CTS on this device: hundreds of tests, none failed.
    assert 'failures="0"' in text and 'errors="0"' in text, tail
    assert text.count("<testcase") > 300, tail
    assert "amdgpu://?hsa=soft" in text
