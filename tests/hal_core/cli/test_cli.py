import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

import hal_core
from hal_core.cli.main import main


def _plugin_loaded(distribution: str) -> bool:
    """Whether ``distribution`` is installed and its plugin loaded (not disabled)."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(p.distribution == distribution and p.loaded for p in hal_core.registry().plugins())


needs_example_profiler = pytest.mark.skipif(
    not _plugin_loaded("hal-example-profiler"),
    reason="the optional example distribution hal-example-profiler is not installed or its "
    "plugin is disabled (pip install -e examples/hal-example-profiler)",
)


def test_info_json_lists_plugins_drivers_and_devices(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["local_cpu"]["loaded"]
    assert plugins["local_cpu"]["distribution"] == "hal-local-cpu"
    drivers = {d["name"]: d for d in data["drivers"]}
    assert drivers["local-task"]["devices"][0]["uri"] == "local-task://"
    assert drivers["local-sync"]["available"]
    assert data["pool_fast_paths"].startswith(("native", "python ("))
    assert drivers["local-task"]["cts"]["uri"] == "local-task://"
    assert "dispatch" in drivers["local-task"]["cts"]["tags"]
    assert all(not p["errors"] for p in data["plugins"] if p["loaded"])


@needs_example_profiler
def test_info_lists_the_example_profiler(capsys):
    assert main(["info", "--json"]) == 0
    profilers = {p["name"]: p for p in json.loads(capsys.readouterr().out)["profilers"]}
    assert "op-histogram" in profilers  # the example third-party distribution


def test_info_text(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "local-task://" in out and "Plugins:" in out and "Pool fast paths:" in out


def test_bench_json_names_and_units(capsys):
    assert main(["bench", "--json", "--repeats", "1", "edge.*", "futures.e2e"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["device"] == "local-task://"
    names = [r["name"] for r in data["results"]]
    assert names == ["edge.e2e", "edge.e2e.profiled", "edge.fill4", "edge.submit", "futures.e2e"]
    assert all(r["unit"] == "us/edge" and r["value"] > 0 for r in data["results"])


def test_bench_unknown_name_and_device(capsys):
    assert main(["bench", "no.such.bench"]) == 2
    assert "no benchmark matches 'no.such.bench'" in capsys.readouterr().err
    assert main(["bench", "edge.e2ee"]) == 2
    assert "(did you mean 'edge.e2e'" in capsys.readouterr().err
    assert main(["bench", "--device", "nosuch://", "edge.e2e"]) == 2
    assert "nosuch://" in capsys.readouterr().err


def test_hal_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "hal_core.cli.main", "info", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "local-task" in out.stdout


def test_example_profiler_test_skips_without_that_distribution():
    # HAL_DISABLE_PLUGINS stands in for an uninstalled distribution: its plugin is absent.
    env = {**os.environ, "HAL_DISABLE_PLUGINS": "example_profiler"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
            f"{__file__}::test_info_lists_the_example_profiler",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 skipped" in result.stdout and "hal-example-profiler" in result.stdout
