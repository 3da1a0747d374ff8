"""``hal replay run|bench|dump``, and the dump compared record for record with IREE's."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from _replay_capture import CORPUS, CORPUS_NAMES

import hal_core as hal
from hal_core.cli.main import main
from hal_core.replay import ReplayFile, json_records

MLP = str(CORPUS / "mlp.ireereplay")


def _elf_loads(uri: str = "local-task://") -> bool:
    with hal.create_device(uri) as d:
        return d.create_executable_cache().can_prepare("embedded-elf-x86_64")


@pytest.mark.skipif(
    shutil.which("iree-dump-replay") is None, reason="iree-dump-replay not installed"
)
@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_json_dump_matches_iree_dump_replay(name):
    path = str(CORPUS / f"{name}.ireereplay")
    theirs = subprocess.run(
        ["iree-dump-replay", "--format=jsonl", path], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    ours = list(json_records(ReplayFile.open(path)))
    assert len(ours) == len(theirs)
    for mine, line in zip(ours, theirs):
        assert mine == json.loads(line)


def test_dump_text_and_json(capsys):
    assert main(["replay", "dump", MLP]) == 0
    out = capsys.readouterr().out
    assert out.startswith("IREE HAL replay v2.0")
    assert "op=device.queue_execute(22)" in out
    assert main(["replay", "dump", "--json", MLP]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["kind"] == "file" and lines[1]["kind"] == "summary"
    assert lines[1]["record_count"] == len(lines) - 2


def test_corrupt_and_missing_files_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.ireereplay"
    bad.write_bytes(open(MLP, "rb").read()[:1000])
    for argv in (["replay", "dump", str(bad)], ["replay", "run", str(bad)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hal replay: DATA_LOSS") and "byte offset" in err
        assert "\n" not in err and "Traceback" not in err
    assert main(["replay", "run", str(tmp_path / "missing.ireereplay")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["replay", "run", MLP, "--save-buffer", "x=y.npy"]) == 2
    assert main(["replay", "run", MLP, "--substitute", "four=x"]) == 2


def test_run_saves_buffers_bit_identical(tmp_path, capsys):
    if not _elf_loads():
        pytest.skip("local-task cannot load IREE's embedded-elf-x86_64 executables yet")
    out = tmp_path / "out.npy"
    argv = ["replay", "run", MLP, "--save-buffer", f"16={out}", "--dtype", "float32"]
    argv += ["--save-buffers", str(tmp_path / "all")]
    assert main(argv) == 0
    expected = np.load(CORPUS / "mlp.expected0.npy")
    assert np.load(out).tobytes() == expected.tobytes()
    assert np.load(tmp_path / "all" / "buffer_16.npy").tobytes() == expected.tobytes()
    assert main(["replay", "run", MLP, "--save-buffer", f"999={out}"]) == 1
    assert "not a buffer" in capsys.readouterr().err


def test_bench_json(capsys):
    if not _elf_loads():
        pytest.skip("local-task cannot load IREE's embedded-elf-x86_64 executables yet")
    assert main(["replay", "bench", MLP, "--iterations", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scope"] == "execute" and result["median_us"] > 0
    assert main(["replay", "bench", MLP, "--iterations", "1", "--scope", "nope"]) == 1
    assert "nope" in capsys.readouterr().err


def test_profile_writes_a_bundle_through_hal_profile(tmp_path, capsys):
    if not _elf_loads():
        pytest.skip("local-task cannot load IREE's embedded-elf-x86_64 executables yet")
    out = tmp_path / "mlp.halprof"
    assert main(["replay", "profile", MLP, "--format", "bundle", "--output", str(out)]) == 0
    assert out.stat().st_size > 0
    assert main(["profile", "summary", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats  # the replay's queue operations were profiled
    assert main(["replay", "profile", str(tmp_path / "missing.ireereplay")]) == 2
