"""``hal bench`` in a child process: a benchmark the device cannot run is skipped with its
reason (in the text output and in ``--json``), the others still run, and the exit status
is 0 without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hal_core", "bench", "--repeats", "1", "--device", "local-sync://",
         *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_skipped_benchmark_is_reported_with_its_reason_and_exits_0() -> None:
    # iree.edge.submit cannot run on local-sync (IREE's local-sync would block on the
    # held-back head), nor anywhere without iree.runtime: skipped either way.
    result = _bench("--json", "iree.edge.submit", "edge.submit")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert [r["name"] for r in data["results"]] == ["edge.submit"]
    (skip,) = data["skipped"]
    assert skip["name"] == "iree.edge.submit" and len(skip["reason"]) > 10
    assert data["failed"] == []

    text = _bench("iree.edge.submit", "edge.submit")
    assert text.returncode == 0, text.stderr
    assert "Traceback" not in text.stdout + text.stderr
    line = next(ln for ln in text.stdout.splitlines() if "iree.edge.submit" in ln)
    assert "skipped: " + skip["reason"].split(":")[0] in line
    assert any(ln.split()[:1] == ["edge.submit"] for ln in text.stdout.splitlines())
