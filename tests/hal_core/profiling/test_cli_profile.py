"""``hal profile`` and ``hal profile summary``."""

import argparse
import json

import pytest

from hal_core.cli import profile as profile_cli
from hal_core.profiling import read_profile_bundle


def hal_profile(argv):
    parser = argparse.ArgumentParser(prog="hal")
    sub = parser.add_subparsers(dest="command", required=True)
    profile_cli.add_parser(sub)
    args = parser.parse_args(["profile", *argv])
    return args.run(args)


WORKLOAD = """
import numpy as np
from hal_core import BufferParams

def main(device):
    sem = device.create_semaphore()
    buf = device.allocator.allocate_buffer(BufferParams(), 1024)
    device.queue_fill(1, [], [(sem, 1)], buf, 0, 1024, b"\\x05")
    tmp = device.queue_alloca(1, [(sem, 1)], [(sem, 2)], BufferParams(), 4096)
    device.queue_copy(1, [(sem, 2)], [(sem, 3)], buf, 0, tmp, 0, 1024)
    device.queue_dealloca(1, [(sem, 3)], [(sem, 4)], tmp)
    sem.wait(4, 20)
"""


def test_perfetto_from_a_python_workload(tmp_path, capsys):
    script = tmp_path / "work.py"
    script.write_text(WORKLOAD)
    out = tmp_path / "trace.json"
    rc = hal_profile(
        ["--device", "local-task://", "--format", "perfetto", "-o", str(out), "--", str(script)]
    )
    assert rc == 0, capsys.readouterr().err
    ev = json.loads(out.read_text())["traceEvents"]
    assert {"fill", "alloca", "copy", "dealloca"} <= {e["name"] for e in ev if e.get("ph") == "X"}
    assert any(e.get("name") == "thread_name" and e["args"]["name"] == "queue 0" for e in ev)
    assert {"queue_alloca", "queue_dealloca"} <= {e["name"] for e in ev if e.get("cat") == "memory"}


def test_bundle_from_a_bench_workload_then_summary(tmp_path, capsys):
    out = tmp_path / "p.halprof"
    rc = hal_profile(
        [
            "--device",
            "local-sync://",
            "--families",
            "queue-events,host-execution",
            "--format",
            "bundle",
            "-o",
            str(out),
            "--",
            "edge.fill4",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert len(read_profile_bundle(out).records("queue-events")) == 2 * 512
    capsys.readouterr()
    assert hal_profile(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "FILL=" in text and "no dispatch events" in text
    assert hal_profile(["--json", "summary", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sum(q["op_counts"]["FILL"] for q in data["queues"]) == 1024


def test_summary_format_prints_table(capsys):
    assert hal_profile(["--device", "local-sync://", "--", "edge.e2e"]) == 0
    assert "BARRIER=" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--", "no-such-workload"], "neither a hal bench benchmark nor a Python file"),
        (["--families", "bogus", "--", "edge.e2e"], "unknown profiling data family 'bogus'"),
        (
            ["--families", "device-metrics", "--", "edge.e2e"],
            "cannot produce profiling data DEVICE_METRICS",
        ),
        (["--device", "nodriver://", "--", "edge.e2e"], "no HAL driver named 'nodriver'"),
        (["--profiler", "nope", "--", "edge.e2e"], "no profiler named 'nope'"),
        (["--profiler-option", "novalue", "--", "edge.e2e"], "wants K=V"),
        ([], "no workload given"),
        (["summary"], "usage: hal profile summary FILE"),
    ],
)
def test_errors_exit_2_with_a_message(argv, message, capsys):
    assert hal_profile(argv) == 2
    assert message in capsys.readouterr().err


def test_summary_of_a_non_bundle(tmp_path, capsys):
    bad = tmp_path / "x"
    bad.write_text("hello")
    assert hal_profile(["summary", str(bad)]) == 2
    assert "not a HAL profile bundle" in capsys.readouterr().err


def test_device_without_profiling_names_the_families(monkeypatch, capsys):
    from hal_local_cpu.device import LocalDeviceBackend

    # a backend with no profiling support of its own
    monkeypatch.setattr(LocalDeviceBackend, "profiling_families", property(lambda self: 0))
    monkeypatch.setattr(LocalDeviceBackend, "profiling_begin", lambda self, session: None)
    monkeypatch.setattr(LocalDeviceBackend, "profiling_end", lambda self, session: None)
    argv = ["--device", "local-sync://", "--families", "host-execution", "--", "edge.e2e"]
    assert hal_profile(argv) == 2
    err = capsys.readouterr().err
    assert "cannot produce profiling data HOST_EXECUTION_EVENTS" in err
    assert "supports QUEUE_EVENTS" in err  # hal_core's generic queue tap
    # the defaults reduce to what the device supports: queue events recorded by hal_core
    assert hal_profile(["--device", "local-sync://", "--", "edge.e2e"]) == 0
    assert "BARRIER=512" in capsys.readouterr().out
