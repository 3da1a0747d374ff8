"""DEVICE_METRICS on amdgpu devices: a sysfs metric source per GPU (the soft agent
supplies its own sysfs tree, rewritten from its state before each sample), UNAVAILABLE
naming the path without the files, and ``hal profile --profiler metrics-log`` on every
soft target."""

from __future__ import annotations

import argparse
import csv
import os
import types

import pytest
from hal_amdgpu.device_metrics import metric_sources
from hal_profilers.gpu_metrics import parse_gpu_metrics

import hal_core
from hal_core.cli import profile as profile_cli
from hal_core.profiling import CaptureSink, ProfilingOptions, StatisticsSink
from hal_core.profiling import DeviceMetric as M
from hal_core.profiling import ProfilingDataFamily as F

MIB = 1 << 20


def hal_profile(argv: list[str]) -> int:
    """``hal profile ARGV`` in this process (as the CLI's own tests run it)."""
    parser = argparse.ArgumentParser(prog="hal")
    sub = parser.add_subparsers(dest="command", required=True)
    profile_cli.add_parser(sub)
    args = parser.parse_args(["profile", *argv])
    return args.run(args)


def _samples(capture) -> list[dict[int, int]]:
    return [
        dict(zip((int(i) for i in v["metric_id"]), (int(x) for x in v["value"])))
        for _t, v in capture.metric_samples
    ]


def test_amdgpu_devices_advertise_device_metrics():
    with hal_core.create_device("amdgpu://?hsa=soft") as device:
        assert device.backend.profiling_families & F.DEVICE_METRICS


def test_samples_follow_the_soft_gpus_memory():
    with hal_core.create_device("amdgpu://0,1?hsa=soft&soft_gpus=gfx942,gfx942") as device:
        sink = CaptureSink()
        device.profiling_begin(ProfilingOptions(F.DEVICE_METRICS, sinks=[sink]))
        buf = device.allocator.allocate_buffer(None, 3 * MIB)
        device.profiling_flush()
        del buf
        device.profiling_end()
        cap = sink.capture
        names = set(cap.metric_names.values())
        assert {"memory.local.used", "memory.local.total", "throttle.status"} <= names
        samples = _samples(cap)
        # begin, flush and end, each for both GPUs (one source per GPU)
        assert len(samples) >= 6
        assert len(set(cap.records("device-metric-samples")["source_id"].tolist())) == 2
        totals = {s[int(M.MEMORY_LOCAL_TOTAL)] for s in samples}
        assert totals == {4 << 30}  # each soft GPU's coarse-grained pool
        used = [s[int(M.MEMORY_LOCAL_USED)] for s in samples]
        assert min(used) < 3 * MIB <= max(used)
        assert {s[int(M.THROTTLE_STATUS)] for s in samples} == {0}


def test_the_soft_sysfs_tree_is_kernel_shaped_and_removed_with_the_device():
    device = hal_core.create_device("amdgpu://?hsa=soft")
    runtime = device.backend.hsa.lib
    root = runtime.soft_sysfs_root()
    gpu = device.backend.gpus[0]
    path = os.path.join(root, "bus", "pci", "devices", gpu.bdf)
    blob = parse_gpu_metrics(open(os.path.join(path, "gpu_metrics"), "rb").read())
    assert (blob.header.format_revision, blob.header.content_revision) == (1, 3)
    assert blob.throttle_status() == 0
    assert blob.temperature_millidegrees("edge") is None  # no thermal model: not provided
    assert int(open(os.path.join(path, "mem_info_vram_total")).read()) == 4 << 30
    device.close()
    assert not os.path.exists(root)


def test_missing_files_are_unavailable_naming_the_path(tmp_path, monkeypatch):
    with hal_core.create_device("amdgpu://?hsa=soft") as device:
        runtime = device.backend.hsa.lib
        monkeypatch.setattr(runtime, "soft_sysfs_root", lambda: str(tmp_path))
        expected = os.path.join(str(tmp_path), "bus", "pci", "devices")
        with pytest.raises(hal_core.UnavailableError, match=expected):
            device.profiling_begin(
                ProfilingOptions(F.DEVICE_METRICS | F.QUEUE_EVENTS, sinks=[StatisticsSink()])
            )
        # An empty directory (no metric files) is unavailable too, naming it.
        gpu_dir = tmp_path / "bus" / "pci" / "devices" / device.backend.gpus[0].bdf
        gpu_dir.mkdir(parents=True)
        with pytest.raises(hal_core.UnavailableError, match="has no metric files"):
            device.profiling_begin(ProfilingOptions(F.DEVICE_METRICS, sinks=[StatisticsSink()]))
        # Nothing was installed: a session without metrics begins and the device works.
        stats = StatisticsSink()
        device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[stats]))
        sem = device.create_semaphore(0)
        device.queue_barrier(signal=[(sem, 1)])
        sem.wait(1, 30.0)
        device.profiling_end()


def test_rocr_devices_read_slash_sys():
    """Over ROCr the GPU's /sys/bus/pci/devices directory is the source (a GPU this machine
    does not have is UNAVAILABLE naming that path)."""
    gpu = types.SimpleNamespace(
        bdf="0000:e3:00.0", target=types.SimpleNamespace(processor="gfx942")
    )
    backend = types.SimpleNamespace(hsa=types.SimpleNamespace(implementation="rocr"), gpus=[gpu])
    with pytest.raises(hal_core.UnavailableError, match="/sys/bus/pci/devices/0000:e3:00.0"):
        metric_sources(backend)


@pytest.mark.parametrize("target", ["gfx90a", "gfx942", "gfx1030", "gfx1101", "gfx1201"])
def test_hal_profile_metrics_log_works_on_every_soft_target(target, tmp_path, capsys):
    out = tmp_path / "metrics.csv"
    argv = [
        "--device",
        f"amdgpu://?hsa=soft&soft_gpus={target}",
        "--profiler",
        "metrics-log",
        "--profiler-option",
        f"output={out}",
        "--",
        "edge.submit",
    ]
    assert hal_profile(argv) == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert {r["metric"] for r in rows} >= {"memory.local.total", "throttle.status"}
    assert {r["unit"] for r in rows if r["metric"] == "memory.local.total"} == {"BYTES"}
