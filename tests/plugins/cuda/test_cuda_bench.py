"""hal-cuda's ``hal bench`` entries without a GPU: they register through ``MODULES``, and on
any other device, or without PyTorch / cuda-bindings / a driver, each one is skipped with
its reason (never a failure)."""

from __future__ import annotations

import json
import sys

import pytest
from hal_cuda import bench

import hal_core
from hal_core.bench import MODULES, BenchContext, BenchmarkSkipped, all_benchmarks
from hal_core.cli.main import main

HAL_SIDE = ("cb.replay.cuda", "dispatch.direct", "replay.chain512")
PEERS = (
    "torch.event_edge",
    "torch.eager.add",
    "torch.graph.capture",
    "torch.graph.replay",
    "cuda.event_edge",
    "iree.replay.chain512",
)


def test_entries_register_through_modules():
    assert "hal_cuda.bench" in MODULES
    known = all_benchmarks()
    for name in HAL_SIDE:
        assert known[name].needs_device, name
    for name in PEERS[:-1]:
        assert not known[name].needs_device, name
    assert known["iree.replay.chain512"].unit == "us/dispatch"


@pytest.fixture(scope="module")
def local_device():
    device = hal_core.create_device("local-task://")
    yield device
    device.close()


@pytest.mark.parametrize("name", HAL_SIDE + PEERS)
def test_every_entry_skips_on_another_device(local_device, name):
    entry = all_benchmarks()[name]
    with pytest.raises(BenchmarkSkipped, match=r"cuda://"):
        entry.fn(BenchContext(local_device, "local-task://", repeats=1))


@pytest.mark.parametrize("name", [n for n in PEERS if n.startswith("torch.")])
def test_torch_peers_skip_without_torch(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(BenchmarkSkipped, match="PyTorch is not importable"):
        all_benchmarks()[name].fn(BenchContext(None, "cuda://0", repeats=1))


def test_raw_driver_peer_skips_without_bindings_or_driver(monkeypatch):
    fn = all_benchmarks()["cuda.event_edge"].fn
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", None)
    with pytest.raises(BenchmarkSkipped, match="cuda-bindings is not importable"):
        fn(BenchContext(None, "cuda://0", repeats=1))
    monkeypatch.undo()

    class NoDriver:  # cuda-bindings' behaviour on a machine without libcuda
        @staticmethod
        def cuInit(flags: int) -> None:
            raise RuntimeError('"cuda" is an NVIDIA driver library and can only be found ...')

    monkeypatch.setattr(bench, "_driver", lambda: NoDriver)
    with pytest.raises(BenchmarkSkipped, match="driver library cannot be loaded"):
        fn(BenchContext(None, "cuda://0", repeats=1))


def test_chain512_capture_from_the_environment(monkeypatch, tmp_path):
    bench._chain512_capture.cache_clear()
    monkeypatch.setenv(bench.CAPTURE_ENV, str(tmp_path / "missing.ireereplay"))
    with pytest.raises(BenchmarkSkipped, match="not a file"):
        bench._chain512_capture("cuda")
    capture = tmp_path / "chain512.cuda.ireereplay"
    capture.write_bytes(b"x")
    monkeypatch.setenv(bench.CAPTURE_ENV, str(capture))
    bench._chain512_capture.cache_clear()
    assert bench._chain512_capture("cuda") == capture
    bench._chain512_capture.cache_clear()


def test_chain512_fixture_and_inputs_are_in_the_checkout(monkeypatch):
    monkeypatch.delenv(bench.CHECKOUT_ENV, raising=False)
    root = bench._checkout()
    assert (root / bench._CHAIN512_VMFB).is_file()
    assert all((root / p).is_file() for p in bench._CHAIN_INPUTS)


@pytest.mark.parametrize(
    ("uri", "ordinal", "iree"),
    [
        ("cuda://", 0, "cuda"),
        ("cuda://1", 1, "cuda://1"),
        ("cuda://0,1", 0, "cuda://0"),
        ("cuda://GPU-0123abcd", 0, "cuda://GPU-0123abcd"),
        ("cuda://2?queues=2", 2, "cuda://2"),
    ],
)
def test_uri_mapping(uri, ordinal, iree):
    assert bench._cuda_ordinal(uri) == ordinal
    assert bench._iree_device(uri) == iree


def test_hal_bench_reports_the_skips(capsys):
    rc = main(["bench", "--json", "--repeats", "1", "torch.*", "cuda.*", "dispatch.direct"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {
        "torch.event_edge",
        "torch.eager.add",
        "torch.graph.capture",
        "torch.graph.replay",
        "cuda.event_edge",
        "dispatch.direct",
    }
    assert all("cuda://" in reason for reason in skipped.values())
