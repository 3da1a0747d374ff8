"""The ``hal`` command as a user runs it: ``python -m hal_core`` in a child process.

Ordinary mistakes are one line on stderr with exit code 2 (usage) or 1 (runtime failure),
never a traceback; Ctrl-C prints what finished and exits 130; a closed pipe ends quietly.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import hal_core


def hal(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hal_core", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, rc: int, *fragments: str) -> None:
    assert result.returncode == rc, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if not line.startswith("[")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_version() -> None:
    result = hal("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"hal (hal-core) {hal_core.__version__}"


def test_python_dash_m_hal_core_is_the_hal_command() -> None:
    result = hal("info", "--json")
    assert result.returncode == 0, result.stderr
    assert "local-task" in {d["name"] for d in json.loads(result.stdout)["drivers"]}


@pytest.mark.parametrize(
    "args, rc, fragments",
    [
        (["nosuch"], 2, ["invalid choice: 'nosuch'"]),
        (["info", "--device", "local-tsak://"], 2, ["(did you mean 'local-task'"]),
        (["info", "--device", ":nodriver"], 2, ["has no driver name"]),
        (["info", "--topology", "--device", "nosuch://"], 2, ["no HAL driver named 'nosuch'"]),
        (["bench", "no.such.bench"], 2, ["no benchmark matches 'no.such.bench'"]),
        (["bench", "edge.e2ee"], 2, ["did you mean 'edge.e2e'"]),
        (["bench", "--repeats", "0", "edge.e2e"], 2, ["--repeats", "positive integer"]),
        (["bench", "--repeats", "x", "edge.e2e"], 2, ["--repeats", "'x'"]),
        (["bench", "--device", "bad device://", "edge.e2e"], 2, ["invalid characters"]),
        (["bench", "--device", "nosuch://", "edge.e2e"], 2, ["no HAL driver named 'nosuch'"]),
        (["profile", "summary", "/no/such/file.halprof"], 2, ["No such file"]),
        (["profile", "--", "no_such_workload.py"], 2, ["does not exist"]),
        (["profile", "--", "no.such.bench"], 2, ["neither a hal bench benchmark"]),
        (["profile", "--ring-capacity", "3", "--", "edge.e2e"], 2, ["--ring-capacity"]),
        (["profile", "--repeats", "-1", "--", "edge.e2e"], 2, ["--repeats"]),
        (["profile", "--families", "bogus", "--", "edge.e2e"], 2, ["'bogus'", "queue-events"]),
    ],
)
def test_ordinary_mistakes_are_one_line(args: list[str], rc: int, fragments: list[str]) -> None:
    assert_one_line_error(hal(*args), rc, *fragments)


def test_unavailable_device_is_a_runtime_failure() -> None:
    # A driver that is registered but cannot start here: rc 1, one line.
    from hal_core._registry import registry

    available = {r.name for r in registry().driver_records()}
    broken = []
    for name in sorted(available):
        try:
            registry().driver(name).query_available_devices()
        except hal_core.UnavailableError:
            broken.append(name)
    if not broken:
        pytest.skip("every registered driver is available on this machine")
    assert_one_line_error(hal("bench", "--device", f"{broken[0]}://", "edge.e2e"), 1, "UNAVAILABLE")


def test_output_path_is_checked_before_the_workload_runs(tmp_path: Path) -> None:
    missing_dir = tmp_path / "nowhere" / "trace.json"
    result = hal("profile", "--format", "perfetto", "-o", str(missing_dir), "--", "edge.e2e")
    assert_one_line_error(result, 2, "does not exist")
    assert "running" not in result.stderr  # the workload never started
    result = hal("profile", "--format", "bundle", "-o", str(tmp_path), "--", "edge.e2e")
    assert_one_line_error(result, 2, "is a directory")


def test_profile_summary_json_as_documented(tmp_path: Path) -> None:
    bundle = tmp_path / "run.halprof"
    made = hal(
        "profile",
        "--device",
        "local-sync://",
        "--format",
        "bundle",
        "-o",
        str(bundle),
        "--",
        "edge.fill4",
    )
    assert made.returncode == 0, made.stderr
    for args in (["summary", str(bundle), "--json"], ["--json", "summary", str(bundle)]):
        result = hal("profile", *args)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert sum(q["op_counts"]["FILL"] for q in data["queues"]) == 1024
    text = hal("profile", "summary", str(bundle))
    assert text.returncode == 0 and "FILL=" in text.stdout


def test_profile_summary_of_a_corrupt_bundle_is_one_line(tmp_path: Path) -> None:
    bundle = tmp_path / "cut.halprof"
    bundle.write_bytes(b"HALPROF\0" + bytes(8))
    assert_one_line_error(hal("profile", "summary", str(bundle)), 1, "DATA_LOSS")


def test_profile_progress_line_uses_family_spellings() -> None:
    result = hal("profile", "--device", "local-sync://", "--families", "queue-events",
                 "--", "edge.e2e")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(queue-events)" in result.stderr


def _run_with_benchmark(monkeypatch: pytest.MonkeyPatch, error: Exception) -> tuple[int, dict]:
    """``hal bench --json`` over a benchmark raising ``error`` and the futures peer
    (the benchmark is added to the process's table for this test only)."""
    import hal_core.bench as bench_module
    from hal_core.cli.main import main

    bench_module.all_benchmarks()  # import every module before adding to the table

    def raising(ctx: object) -> float:
        raise error

    name = "test.cli.raising"
    monkeypatch.setitem(bench_module._REGISTRY, name, bench_module.Benchmark(name, "us", raising))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["bench", "--json", "--repeats", "1", name, "futures.e2e"])
    return rc, json.loads(out.getvalue())


def test_bench_skips_what_the_device_cannot_run_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rc, data = _run_with_benchmark(
        monkeypatch, hal_core.UnimplementedError("this device has no such engine")
    )
    assert rc == 0
    assert [r["name"] for r in data["results"]] == ["futures.e2e"]
    assert data["skipped"] == [
        {"name": "test.cli.raising", "reason": "UNIMPLEMENTED: this device has no such engine"}
    ]
    assert data["failed"] == []


def test_bench_failure_is_reported_and_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    rc, data = _run_with_benchmark(monkeypatch, hal_core.DataLossError("lost the result"))
    assert rc == 1
    assert data["failed"] == [{"name": "test.cli.raising", "error": "DATA_LOSS: lost the result"}]
    assert [r["name"] for r in data["results"]] == ["futures.e2e"]


def test_bench_list_honours_filters_json_and_full_descriptions() -> None:
    result = hal("bench", "--list", "--json", "edge.*")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["benchmarks"]
    assert rows and all(r["name"].startswith("edge.") for r in rows)
    from hal_core.bench import all_benchmarks

    known = all_benchmarks()
    for row in rows:
        assert row["description"] == inspect.getdoc(known[row["name"]].fn)
    text = hal("bench", "--list", "futures.e2e")
    assert text.returncode == 0
    assert text.stdout.splitlines()[0].startswith("futures.e2e")
    assert "edge.e2e" not in text.stdout.split("\n", 1)[0]


def test_ctrl_c_prints_partial_results_and_exits_130() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hal_core", "bench", "--json", "--repeats", "3",
         "futures.e2e", "edge.e2e", "edge.fill4", "edge.submit"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    # Interrupt once the first benchmark has finished (its successor has started).
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[2/4]"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    err = "".join(seen) + err
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    data = json.loads(out)
    assert data["interrupted"] is True
    assert data["results"][0]["name"] == "futures.e2e"


def test_closed_pipe_ends_quietly() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader is gone before anything is written
    try:
        result = subprocess.run(
            [sys.executable, "-m", "hal_core", "bench", "--list"],
            stdout=write_fd,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write_fd)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_cts_device_typo_is_one_usage_error(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(tmp_path / "pytest.ini"),
         "-p", "no:cacheprovider", "--pyargs", "hal_core.cts", "--hal-device=local-snyc"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert "--hal-device=local-snyc" in result.stderr
    assert "did you mean 'local-sync'" in result.stderr
    assert "collected" not in result.stdout  # nothing was collected


def test_cts_in_the_checkout_runs_only_the_named_device() -> None:
    root = Path(hal_core.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        pytest.skip("hal_core is not installed from a checkout")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         "--pyargs", "hal_core.cts.test_semaphore", "--hal-device=local-sync"],
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    assert ids and all("[local-sync" in line for line in ids), ids[:5]


def test_info_device_describes_one_device() -> None:
    result = hal("info", "--device", "local-sync://", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["uri"] == "local-sync://" and data["driver"] == "local-sync"
    with hal_core.create_device("local-sync://") as device:
        assert data["queues"] == device.queue_count
        assert len(data["heaps"]) == len(device.allocator.query_memory_heaps())
        assert data["executable_formats"] == sorted(
            set(device.create_executable_cache("t").formats())
        )
    assert data["heaps"][0]["max_allocation_size"] > 0
    assert data["memory_types"] and "queue-events" in data["profiling_families"]
    assert data["cts"]["uri"] == "local-sync://" and data["cts_error"] is None
    text = hal("info", "--device", "local-sync://")
    assert text.returncode == 0
    for label in ("queues:", "heaps:", "memory types:", "executable formats:", "CTS:"):
        assert label in text.stdout


def test_profile_interrupted_workload_writes_what_was_captured(tmp_path: Path) -> None:
    workload = tmp_path / "work.py"
    workload.write_text(
        "import hal_core\n"
        "def main(device):\n"
        "    sem = device.create_semaphore(0)\n"
        "    device.queue_barrier(hal_core.QueueAffinity.ANY, [], [(sem, 1)])\n"
        "    sem.wait(1, 20)\n"
        "    raise KeyboardInterrupt  # as Ctrl-C would, mid-workload\n"
    )
    bundle = tmp_path / "p.halprof"
    result = hal(
        "profile", "--device", "local-sync://", "--families", "queue-events",
        "--format", "bundle", "-o", str(bundle), "--", str(workload),
    )  # fmt: skip
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    from hal_core.profiling import read_profile_bundle

    assert len(read_profile_bundle(bundle).records("queue-events")) == 1


def test_profile_failing_workload_exits_1(tmp_path: Path) -> None:
    workload = tmp_path / "work.py"
    workload.write_text("def main(device):\n    raise ValueError('my bug')\n")
    result = hal("profile", "--device", "local-sync://", "--", str(workload))
    assert result.returncode == 1
    # The user's own error keeps its traceback (it is their code), then one summary line.
    assert "ValueError: my bug" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("hal profile: workload")
