"""AMD GPU sysfs device metrics over a fake sysfs tree."""

import pytest
from _gpu_metrics_fixtures import build
from hal_profilers.sysfs_metrics import AmdGpuSysfsMetricsSource, format_bdf, pci_device_dir

import hal_core
from hal_core.profiling import DeviceMetric as M
from hal_core.profiling import MetricUnit, StatisticsSink
from hal_core.profiling import ProfilingDataFamily as F


def make_tree(root, *, hwmon=True, blob=None, busy=True):
    d = root / "bus" / "pci" / "devices" / "0000:c3:00.0"
    d.mkdir(parents=True)
    if busy:
        (d / "gpu_busy_percent").write_text("42\n")
        (d / "mem_busy_percent").write_text("7\n")
    (d / "mem_info_vram_used").write_text("1073741824\n")
    (d / "mem_info_vram_total").write_text("17163091968\n")
    if hwmon:
        h = d / "hwmon" / "hwmon3"
        h.mkdir(parents=True)
        (h / "freq1_label").write_text("sclk\n")
        (h / "freq1_input").write_text("2500000000\n")
        (h / "freq2_label").write_text("mclk\n")
        (h / "freq2_input").write_text("1000000000\n")
        (h / "temp1_label").write_text("edge\n")
        (h / "temp1_input").write_text("51000\n")
        (h / "temp2_label").write_text("junction\n")
        (h / "temp2_input").write_text("63000\n")
        (h / "temp3_label").write_text("mem\n")
        (h / "temp3_input").write_text("72000\n")
        (h / "power1_average").write_text("95000000\n")
    if blob is not None:
        (d / "gpu_metrics").write_bytes(blob)
    return d


def test_bdf_formatting(tmp_path):
    bdfid = (0xC3 << 8) | (0 << 3) | 0
    assert format_bdf(0, bdfid) == "0000:c3:00.0"
    assert format_bdf(1, (0x0A << 8) | (0x1F << 3) | 7) == "0001:0a:1f.7"
    assert pci_device_dir(0, bdfid, str(tmp_path)).endswith("bus/pci/devices/0000:c3:00.0")


def test_plain_files_and_hwmon(tmp_path):
    make_tree(tmp_path)
    src = AmdGpuSysfsMetricsSource.for_pci(0, 0xC3 << 8, str(tmp_path))
    assert src.name == "amdgpu.sysfs.0000:c3:00.0"
    units = {d.metric_id: d.unit for d in src.descriptors()}
    assert units[M.TEMPERATURE_EDGE] == MetricUnit.MILLIDEGREES_CELSIUS
    assert units[M.CLOCK_COMPUTE_CURRENT] == MetricUnit.HERTZ
    assert units[M.POWER_SOCKET] == MetricUnit.MICROWATTS
    assert units[M.ACTIVITY_COMPUTE] == MetricUnit.MILLIPERCENT
    assert units[M.MEMORY_LOCAL_TOTAL] == MetricUnit.BYTES
    ids, values = src.sample()
    got = dict(zip(ids, values))
    assert got == {
        M.CLOCK_COMPUTE_CURRENT: 2_500_000_000,
        M.CLOCK_MEMORY_CURRENT: 1_000_000_000,
        M.TEMPERATURE_EDGE: 51_000,
        M.TEMPERATURE_HOTSPOT: 63_000,
        M.TEMPERATURE_MEMORY: 72_000,
        M.POWER_SOCKET: 95_000_000,
        M.ACTIVITY_COMPUTE: 42_000,
        M.ACTIVITY_MEMORY: 7_000,
        M.MEMORY_LOCAL_USED: 1073741824,
        M.MEMORY_LOCAL_TOTAL: 17163091968,
    }


def test_gpu_metrics_fills_gaps(tmp_path):
    blob = build(
        3,
        dict(
            temperature_edge=44,
            temperature_hotspot=58,
            average_socket_power=180,
            average_gfx_activity=90,
            current_gfxclk=1800,
            current_uclk=900,
            indep_throttle_status=0b101,
        ),
    )
    make_tree(tmp_path, hwmon=False, busy=False, blob=blob)
    src = AmdGpuSysfsMetricsSource(str(tmp_path / "bus/pci/devices/0000:c3:00.0"))
    got = dict(zip(*src.sample()))
    assert got[M.TEMPERATURE_EDGE] == 44_000
    assert got[M.TEMPERATURE_HOTSPOT] == 58_000
    assert M.TEMPERATURE_MEMORY not in got  # 0xFFFF: not provided
    assert got[M.POWER_SOCKET] == 180_000_000
    assert got[M.ACTIVITY_COMPUTE] == 90_000
    assert got[M.CLOCK_COMPUTE_CURRENT] == 1_800_000_000
    assert got[M.THROTTLE_STATUS] == 0b101


def test_unparsed_blob_falls_back_and_vanishing_files(tmp_path):
    d = make_tree(tmp_path, blob=build(0, {}, format_revision=2))
    src = AmdGpuSysfsMetricsSource(str(d))
    (d / "gpu_busy_percent").unlink()
    got = dict(zip(*src.sample()))
    assert M.ACTIVITY_COMPUTE not in got and got[M.TEMPERATURE_EDGE] == 51_000


def test_missing_directory_is_not_found(tmp_path):
    with pytest.raises(hal_core.NotFoundError, match="does not exist.*amdgpu kernel driver"):
        AmdGpuSysfsMetricsSource(str(tmp_path / "nope"))


def test_source_in_a_session(tmp_path):
    from _profiling_support_profilers import make_session

    d = make_tree(tmp_path)
    stats = StatisticsSink()
    s = make_session(F.DEVICE_METRICS, [stats])
    s.add_metric_source(AmdGpuSysfsMetricsSource(str(d)))
    s.end()
    cap = stats.capture
    assert cap.metric_names[int(M.TEMPERATURE_EDGE)] == "temperature.edge"
    assert len(cap.metric_samples) == 2  # at add and at end
