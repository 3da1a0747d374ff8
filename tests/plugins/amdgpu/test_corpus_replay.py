"""The replay corpus on the soft AMDGPU agent: each CPU capture replayed with its program's
IREE gfx1100 build substituted (``tests/replay_corpus/gfx1100``), the kernels running as
host twins, gives IREE's own outputs bit for bit, from Python and from ``hal replay run``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hal_amdgpu.soft_hsa.host_twins import TWINS_ENV, initial_host_twins

import hal_core
from hal_core.replay import OperationCode, Player, ReplayFile, Substitution

CORPUS = Path(__file__).resolve().parents[2] / "replay_corpus"
GFX1100 = CORPUS / "gfx1100"
TWINS_FILE = GFX1100 / "twins.py"
MANIFEST = json.loads((GFX1100 / "manifest.json").read_text())
NAMES = ("mlp", "chain", "dynamic", "transient", "conv")
URI = "amdgpu://0?hsa=soft"  # the soft agent's default GPUs are gfx1100


def _load_twins() -> Any:
    spec = importlib.util.spec_from_file_location("corpus_gfx1100_twins", TWINS_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TWINS = _load_twins()


@pytest.fixture(autouse=True)
def _default_unraisablehook(monkeypatch):
    # Twins run on the soft agent's packet-processor threads: keep Python's own hook.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)


@pytest.fixture(scope="module")
def device():
    with hal_core.create_device(URI) as d:
        runtime = d.backend.hsa.lib
        for name, twin in TWINS.HOST_TWINS.items():
            runtime.register_host_twin(name, twin)
        yield d


def _entry(name: str) -> dict[str, Any]:
    return MANIFEST["programs"][name]


def _substitution(name: str, counts: bool = True) -> Substitution:
    entry = _entry(name)
    return Substitution(
        (GFX1100 / entry["executable"]).read_bytes(),
        None,
        entry["format"],
        entry["executable"],
        {f: tuple(c) for f, c in entry["workgroup_counts"].items()} if counts else {},
    )


def _captured_functions(name: str) -> list[dict[str, Any]]:
    file = ReplayFile.open(CORPUS / f"{name}.ireereplay")
    (prepare,) = [
        file.decode(r)
        for r in file.records()
        if r.operation_code == OperationCode.EXECUTABLE_CACHE_PREPARE_EXECUTABLE
    ]
    assert prepare["format"] == "embedded-elf-x86_64"
    return prepare["functions"]


@pytest.mark.parametrize("name", NAMES)
def test_gfx1100_build_exports_the_captured_functions_in_order(device, name):
    """Substitution maps functions by name; the builds also keep IREE's export ordinals,
    binding and constant counts, and the manifest has a count for every function."""
    exe = device.create_executable_cache().prepare("rocm-hsaco-fb", _substitution(name).data)
    captured = _captured_functions(name)
    for ordinal, fn in enumerate(captured):
        info = exe.function_info(ordinal)
        assert (info.name, info.binding_count, info.constant_count) == (
            fn["name"],
            fn["binding_count"],
            fn["constant_count"],
        )
        assert fn["name"] in TWINS.HOST_TWINS
    assert sorted(_entry(name)["workgroup_counts"]) == sorted(f["name"] for f in captured)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_replays_on_amdgpu_soft_bit_identical_to_iree(device, name):
    player = Player(CORPUS / f"{name}.ireereplay", device, substitutions=[_substitution(name)])
    player.run()
    expected = np.load(CORPUS / f"{name}.expected0.npy")
    assert player.buffer_contents(player.output_buffer_ids[-1]) == expected.tobytes()


def test_the_captured_counts_are_the_cpu_builds_and_the_manifest_gives_the_gpu_builds(device):
    """mlp's second matmul: the CPU build dispatched 1 workgroup, the gfx1100 build tiles
    the 4x8 output into two 8x4 tiles and needs 2; the twin sees what the replay
    dispatches and writes only the tiles of the workgroups it got."""
    function = "mlp_dispatch_1_matmul_4x8x32_f32"
    seen: list[tuple[int, ...]] = []
    outputs: list[np.ndarray] = []

    def spy(ctx) -> None:
        seen.append(ctx.workgroup_count)
        out = ctx.explicit_args()[2]
        ctx.array(out, 32, np.float32)[:] = np.nan  # whatever the twin leaves stays NaN
        TWINS.HOST_TWINS[function](ctx)
        outputs.append(ctx.array(out, 32, np.float32).reshape(4, 8).copy())

    runtime = device.backend.hsa.lib
    runtime.register_host_twin(function, spy)
    try:
        for counts in (False, True):
            player = Player(
                CORPUS / "mlp.ireereplay", device, substitutions=[_substitution("mlp", counts)]
            )
            player.run()
    finally:
        runtime.register_host_twin(function, TWINS.HOST_TWINS[function])
    assert seen == [(1, 1, 1), (2, 1, 1)]
    partial, whole = outputs
    assert not np.isnan(partial[:, :4]).any() and np.isnan(partial[:, 4:]).all()
    assert not np.isnan(whole).any()
    assert np.array_equal(partial[:, :4], whole[:, :4])


def test_store_tiles_writes_the_dispatched_workgroups_tiles_only():
    class Ctx:
        def __init__(self, count: tuple[int, int, int]) -> None:
            self.workgroup_count = count

    result = np.arange(6 * 6 * 4, dtype=np.float32).reshape(6, 6, 4)
    for count, rows in (((6, 1, 1), 6), ((4, 1, 1), 4), ((2, 2, 1), 4), ((9, 1, 1), 6)):
        out = np.full_like(result, -1)
        TWINS.store_tiles(Ctx(count), out, result, (1, 8, 4))
        assert np.array_equal(out[:rows], result[:rows])
        assert (out[rows:] == -1).all()


def test_twins_sum_in_the_reference_order():
    """Sequential f32 sums: not numpy's pairwise sum, not a float64 matmul."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((4, 32)).astype(np.float32)
    b = rng.standard_normal((32, 8)).astype(np.float32)
    ref = np.zeros((4, 8), np.float32)
    for i in range(4):
        for j in range(8):
            acc = np.float32(0)
            for k in range(32):
                acc = np.float32(acc + np.float32(a[i, k] * b[k, j]))
            ref[i, j] = acc
    assert np.array_equal(TWINS.matmul(a, b), ref)


def test_soft_twins_from_the_environment(monkeypatch):
    monkeypatch.setenv(TWINS_ENV, str(TWINS_FILE))
    twins = initial_host_twins()
    assert set(TWINS.HOST_TWINS) <= set(twins) and "hal_amdgpu_buffer_fill_x4" in twins
    monkeypatch.setenv(TWINS_ENV, "no_such_module_for_twins")
    with pytest.raises(hal_core.InvalidArgumentError, match=TWINS_ENV):
        initial_host_twins()
    monkeypatch.setenv(TWINS_ENV, "json")  # imports, but has no HOST_TWINS
    with pytest.raises(hal_core.InvalidArgumentError, match="HOST_TWINS"):
        initial_host_twins()


@pytest.mark.parametrize("name", ("mlp", "conv"))
def test_hal_replay_run_on_amdgpu_soft_through_the_cli(tmp_path, name):
    entry = _entry(name)
    argv = [
        sys.executable,
        "-m",
        "hal_core.cli.main",
        "replay",
        "run",
        str(CORPUS / f"{name}.ireereplay"),
        "--device",
        URI,
        "--substitute",
        f"all@{entry['format']}={GFX1100 / entry['executable']}",
        "--save-buffers",
        str(tmp_path),
        "--dtype",
        "float32",
    ]
    for function, (x, y, z) in entry["workgroup_counts"].items():
        argv += ["--workgroup-count", f"{function}={x},{y},{z}"]
    env = {**os.environ, TWINS_ENV: str(TWINS_FILE)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    (saved,) = tmp_path.glob("buffer_*.npy")  # the program reads back its one result
    expected = np.load(CORPUS / f"{name}.expected0.npy")
    assert np.load(saved).tobytes() == expected.tobytes()
