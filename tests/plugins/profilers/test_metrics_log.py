"""The metrics-log profiler: registered through the hal_profilers hook, writes CSV."""

import csv

import pytest
from _profiling_support_profilers import make_session
from hal_profilers import plugin as profilers_plugin
from hal_profilers.metrics_log import MetricsLogSink
from hal_profilers.sysfs_metrics import AmdGpuSysfsMetricsSource

import hal_core
from hal_core.profiling import ProfilingDataFamily as F
from hal_core.profiling import available_profilers, create_profiler


def test_hook_provides_metrics_log():
    (factory,) = profilers_plugin.hal_profilers()
    assert factory.name == "metrics-log" and factory.data_families == F.DEVICE_METRICS
    names = [p.name for p in available_profilers()]
    if "metrics-log" not in names:  # hal-profilers not pip-installed: register in-process
        hal_core.registry().register_plugin(profilers_plugin, name="profilers_test")
        try:
            assert "metrics-log" in [p.name for p in available_profilers()]
        finally:
            hal_core.registry().unregister_plugin("profilers_test")
    with pytest.raises(hal_core.InvalidArgumentError, match="output=metrics.csv"):
        factory.create({})


def test_csv_from_a_sysfs_source(tmp_path):
    d = tmp_path / "gpu"
    d.mkdir()
    (d / "gpu_busy_percent").write_text("55\n")
    (d / "mem_info_vram_used").write_text("1024\n")
    out = tmp_path / "m.csv"
    sink = MetricsLogSink(out)
    s = make_session(F.DEVICE_METRICS, [sink])
    s.add_metric_source(AmdGpuSysfsMetricsSource(str(d)))
    (d / "gpu_busy_percent").write_text("60\n")
    s.flush()
    s.end()
    rows = list(csv.DictReader(out.open()))
    busy = [r for r in rows if r["metric"] == "activity.compute"]
    assert [int(r["value"]) for r in busy] == [55_000, 60_000, 60_000]
    assert {r["unit"] for r in busy} == {"MILLIPERCENT"}
    vram = [r for r in rows if r["metric"] == "memory.local.used"]
    assert vram and vram[0]["unit"] == "BYTES" and vram[0]["value"] == "1024"


def test_create_profiler_by_name(tmp_path):
    if "metrics-log" not in [p.name for p in available_profilers()]:
        pytest.skip("hal-profilers is not installed (pip install -e plugins/profilers)")
    sink, families = create_profiler("metrics-log", {"output": str(tmp_path / "x.csv")})
    assert isinstance(sink, MetricsLogSink) and families == F.DEVICE_METRICS
