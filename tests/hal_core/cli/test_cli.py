import json
import subprocess
import sys

from hal_core.cli.main import main


def test_info_json_lists_plugins_drivers_and_devices(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["local_cpu"]["loaded"]
    assert plugins["local_cpu"]["distribution"] == "hal-local-cpu"
    drivers = {d["name"]: d for d in data["drivers"]}
    assert drivers["local-task"]["devices"][0]["uri"] == "local-task://"
    assert drivers["local-sync"]["available"]
    profilers = {p["name"]: p for p in data["profilers"]}
    assert "op-histogram" in profilers  # the example third-party distribution
    assert data["pool_fast_paths"].startswith(("native", "python ("))


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
    try:
        main(["bench", "no.such.bench"])
    except SystemExit as exc:
        assert "no benchmark matches" in str(exc)
    else:
        raise AssertionError("expected SystemExit")
    assert main(["bench", "--device", "nosuch://", "edge.e2e"]) == 2
    assert "nosuch://" in capsys.readouterr().err


def test_hal_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "hal_core.cli.main", "info", "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "local-task" in out.stdout
