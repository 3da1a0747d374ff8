"""The example driver distribution passes the CTS with only its declared skips.

The CTS runs in a subprocess, outside the checkout's pytest configuration (whose
``addopts`` name other devices), exactly as the plugin author's guide tells a third party
to run it: ``pytest --pyargs hal_core.cts --hal-device=example://``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip(
    "hal_example_driver",
    reason="hal-example-driver is not installed (pip install -e examples/hal-example-driver)",
)

# Every skip must come from the driver's CTS configuration: a tag it does not advertise,
# an ``unsupported`` entry, or the executable formats it does not list.
_DECLARED_SKIPS = (
    "unsupported on example: ",
    "example does not advertise CTS tags",
    "no executable formats",
)

_MANDATORY_SUITES = {
    "test_driver",
    "test_front_door",
    "test_semaphore",
    "test_semaphore_submission",
    "test_queue_transfer",
    "test_queue_host_call",
    "test_queue_alloca",
    "test_transient_buffer",
    "test_command_buffer",
    "test_command_buffer_retention",
    "test_file",
    "test_profiling",
}


def test_cts_passes_with_declared_skips_only(tmp_path: Path) -> None:
    report = tmp_path / "cts.xml"
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("HAL_CTS_VERIFY_XFAILS", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--pyargs",
            "hal_core.cts",
            "--hal-device=example://",
            f"--junitxml={report}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None, tail
    assert int(suite.get("failures", -1)) == 0 and int(suite.get("errors", -1)) == 0, tail
    cases = suite.findall("testcase")
    passed = [c for c in cases if not list(c)]
    skipped = [c.find("skipped") for c in cases if c.find("skipped") is not None]
    # Every suite of the mandatory contract ran for real on the example device.
    ran = {
        c.get("classname", "").rsplit(".", 1)[-1]
        for c in passed
        if "example://" in c.get("name", "")
    }
    assert _MANDATORY_SUITES <= ran, (sorted(_MANDATORY_SUITES - ran), tail)
    assert len(passed) >= 250, tail
    undeclared = [
        s.get("message", "")
        for s in skipped
        if not any(reason in s.get("message", "") for reason in _DECLARED_SKIPS)
    ]
    assert not undeclared, f"skips the CTS configuration does not declare: {undeclared}"
