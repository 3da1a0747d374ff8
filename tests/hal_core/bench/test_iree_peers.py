"""IREE peers in ``hal bench``: they run and report positive figures when ``iree.runtime``
is importable, and are skipped with the reason when it is not or when the device under
test has no IREE driver of its name (never a failure, never a hang)."""

from __future__ import annotations

import json
import sys

import pytest

import hal_core as hal
from hal_core.bench import BenchContext, BenchmarkSkipped, all_benchmarks
from hal_core.cli.main import main

PEERS = ["iree.alloca.e2e", "iree.edge.e2e", "iree.edge.fill4", "iree.edge.submit"]
RATIOS = [f"{name}.ratio" for name in PEERS]


@pytest.fixture
def default_unraisablehook(monkeypatch):
    # Worker threads run here: report anything they leak the way a user's process would.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)


def test_peers_are_registered_with_units():
    known = all_benchmarks()
    assert {known[n].unit for n in PEERS} == {"us/edge", "us/pair"}
    assert {known[n].unit for n in RATIOS} == {"x"}


@pytest.mark.parametrize("uri", ["local-task://", "local-sync://"])
def test_peers_run_and_report_positive_figures(uri, default_unraisablehook):
    pytest.importorskip("iree.runtime")
    known = all_benchmarks()
    device = hal.create_device(uri)
    try:
        ctx = BenchContext(device, uri, repeats=1)
        for name in PEERS + RATIOS:
            if uri == "local-sync://" and name.startswith("iree.edge.submit"):
                # IREE's local-sync blocks inside a submit whose waits are unmet.
                with pytest.raises(BenchmarkSkipped, match="holding the GIL"):
                    known[name].fn(ctx)
                continue
            value = known[name].fn(ctx)
            assert value > 0, name
    finally:
        device.close()


def test_peers_skip_with_the_reason_without_iree_runtime(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "iree.runtime", None)  # import raises ImportError
    known = all_benchmarks()
    device = hal.create_device("local-task://")
    try:
        ctx = BenchContext(device, "local-task://", repeats=1)
        for name in PEERS + RATIOS:
            with pytest.raises(BenchmarkSkipped, match=r"pip install iree-base-runtime"):
                known[name].fn(ctx)
    finally:
        device.close()
    assert main(["bench", "--json", "--repeats", "1", "iree.edge.e2e", "edge.e2e"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data["results"]] == ["edge.e2e"]
    assert data["skipped"][0]["name"] == "iree.edge.e2e"
    assert "iree.runtime is not importable" in data["skipped"][0]["reason"]


def test_peers_skip_devices_without_an_iree_driver_of_their_name(capsys):
    known = all_benchmarks()
    ctx = BenchContext(None, "amdgpu://0?hsa=soft", repeats=1)
    for name in PEERS + RATIOS:
        with pytest.raises(BenchmarkSkipped, match="no IREE peer for 'amdgpu://0\\?hsa=soft'"):
            known[name].fn(ctx)
    assert (
        main(["bench", "--device", "amdgpu://?hsa=soft", "--repeats", "1", "iree.alloca.e2e"]) == 0
    )
    out = capsys.readouterr().out
    assert "iree.alloca.e2e" in out and "skipped: no IREE peer" in out
