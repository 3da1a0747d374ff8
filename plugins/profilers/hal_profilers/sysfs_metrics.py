"""AMD GPU device metrics from Linux PCI sysfs (``/sys/bus/pci/devices/DDDD:BB:DD.F``).

Read per sample: ``gpu_busy_percent``, ``mem_busy_percent``, ``mem_info_vram_used`` and
``mem_info_vram_total``, ``hwmon/hwmon*/`` (``freqN_label/freqN_input`` in Hz,
``tempN_label/tempN_input`` in millidegrees Celsius, ``power1_average`` in microwatts) and
the binary ``gpu_metrics`` (see ``gpu_metrics``), which fills what the plain files lack and
provides the throttle status. KFD topology is not read.

Values are reported in HAL metric units: HERTZ, MILLIDEGREES_CELSIUS, MICROWATTS,
MILLIPERCENT, BYTES, BITFIELD. The set of metrics is fixed when the source is created
(from what exists then); a file that disappears later is left out of that sample.
"""

from __future__ import annotations

import glob
import hashlib
import os
from typing import Callable

from hal_core import NotFoundError
from hal_core.profiling import DeviceMetric as M
from hal_core.profiling import MetricDescriptor, MetricSemantic, MetricUnit

from .gpu_metrics import GpuMetrics, parse_gpu_metrics

__all__ = ["pci_device_dir", "format_bdf", "AmdGpuSysfsMetricsSource", "SOURCE_CLASS_AMDGPU_SYSFS"]

SOURCE_CLASS_AMDGPU_SYSFS = 1


def format_bdf(domain: int, bdfid: int) -> str:
    """``DDDD:BB:DD.F`` from the HSA domain and BDFID (bus<<8 | device<<3 | function)."""
    return f"{domain:04x}:{(bdfid >> 8) & 0xFF:02x}:{(bdfid >> 3) & 0x1F:02x}.{bdfid & 0x7:x}"


def pci_device_dir(domain: int, bdfid: int, sysfs_root: str = "/sys") -> str:
    return os.path.join(sysfs_root, "bus", "pci", "devices", format_bdf(domain, bdfid))


def _read_int(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return int(f.read().strip() or b"x")
    except (OSError, ValueError):
        return None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


_FREQ_LABELS = {
    "sclk": M.CLOCK_COMPUTE_CURRENT,
    "gfxclk": M.CLOCK_COMPUTE_CURRENT,
    "mclk": M.CLOCK_MEMORY_CURRENT,
    "uclk": M.CLOCK_MEMORY_CURRENT,
}
_TEMP_LABELS = {
    "edge": M.TEMPERATURE_EDGE,
    "junction": M.TEMPERATURE_HOTSPOT,
    "hotspot": M.TEMPERATURE_HOTSPOT,
    "mem": M.TEMPERATURE_MEMORY,
}

_UNITS = {
    M.CLOCK_COMPUTE_CURRENT: (MetricUnit.HERTZ, MetricSemantic.INSTANT),
    M.CLOCK_MEMORY_CURRENT: (MetricUnit.HERTZ, MetricSemantic.INSTANT),
    M.TEMPERATURE_EDGE: (MetricUnit.MILLIDEGREES_CELSIUS, MetricSemantic.INSTANT),
    M.TEMPERATURE_HOTSPOT: (MetricUnit.MILLIDEGREES_CELSIUS, MetricSemantic.INSTANT),
    M.TEMPERATURE_MEMORY: (MetricUnit.MILLIDEGREES_CELSIUS, MetricSemantic.INSTANT),
    M.POWER_SOCKET: (MetricUnit.MICROWATTS, MetricSemantic.AVERAGE),
    M.ACTIVITY_COMPUTE: (MetricUnit.MILLIPERCENT, MetricSemantic.AVERAGE),
    M.ACTIVITY_MEMORY: (MetricUnit.MILLIPERCENT, MetricSemantic.AVERAGE),
    M.MEMORY_LOCAL_USED: (MetricUnit.BYTES, MetricSemantic.INSTANT),
    M.MEMORY_LOCAL_TOTAL: (MetricUnit.BYTES, MetricSemantic.INSTANT),
    M.THROTTLE_STATUS: (MetricUnit.BITFIELD, MetricSemantic.STATE),
}

# gpu_metrics fallbacks per metric (used when the plain sysfs file gives nothing).
_FROM_BLOB: dict[M, Callable[[GpuMetrics], int | None]] = {
    M.CLOCK_COMPUTE_CURRENT: lambda g: g.clock_hertz("gfxclk"),
    M.CLOCK_MEMORY_CURRENT: lambda g: g.clock_hertz("uclk"),
    M.TEMPERATURE_EDGE: lambda g: g.temperature_millidegrees("edge"),
    M.TEMPERATURE_HOTSPOT: lambda g: g.temperature_millidegrees("hotspot"),
    M.TEMPERATURE_MEMORY: lambda g: g.temperature_millidegrees("mem"),
    M.POWER_SOCKET: lambda g: g.socket_power_microwatts(),
    M.ACTIVITY_COMPUTE: lambda g: g.activity_millipercent("gfx"),
    M.ACTIVITY_MEMORY: lambda g: g.activity_millipercent("umc"),
    M.THROTTLE_STATUS: lambda g: g.throttle_status(),
}


class AmdGpuSysfsMetricsSource:
    """A device-metric source over one GPU's PCI sysfs directory (a profiling session's
    ``add_metric_source``). NOT_FOUND when the directory does not exist. Sampling reads
    small files (blocking, microseconds); it runs at flush time, never on hot paths."""

    def __init__(self, device_dir: str, *, bdf: str | None = None) -> None:
        if not os.path.isdir(device_dir):
            raise NotFoundError(
                f"GPU sysfs directory {device_dir!r} does not exist; device metrics need the "
                "amdgpu kernel driver and /sys mounted (pass the PCI device directory)"
            )
        self.device_dir = device_dir
        bdf = bdf or os.path.basename(os.path.normpath(device_dir))
        self.name = f"amdgpu.sysfs.{bdf}"
        # Stable across processes (str hashes are salted): ids must match in bundles.
        self.source_id = (
            int.from_bytes(hashlib.blake2b(self.name.encode(), digest_size=8).digest(), "little")
            & 0x7FFF_FFFF_FFFF_FFFF
        )
        self.source_class = SOURCE_CLASS_AMDGPU_SYSFS
        first = self._read_all()
        self._metrics = [m for m in _UNITS if m in first]

    @classmethod
    def for_pci(
        cls, domain: int, bdfid: int, sysfs_root: str = "/sys"
    ) -> "AmdGpuSysfsMetricsSource":
        return cls(pci_device_dir(domain, bdfid, sysfs_root), bdf=format_bdf(domain, bdfid))

    def descriptors(self) -> list[MetricDescriptor]:
        return [
            MetricDescriptor(int(m), m.dotted_name, _UNITS[m][0], semantic=_UNITS[m][1])
            for m in self._metrics
        ]

    def _hwmon(self, out: dict[M, int]) -> None:
        for hw in sorted(glob.glob(os.path.join(self.device_dir, "hwmon", "hwmon*"))):
            for label_path in sorted(glob.glob(os.path.join(hw, "freq*_label"))):
                metric = _FREQ_LABELS.get((_read_text(label_path) or "").lower())
                value = _read_int(label_path[: -len("label")] + "input")
                if metric is not None and value is not None:
                    out.setdefault(metric, value)
            for label_path in sorted(glob.glob(os.path.join(hw, "temp*_label"))):
                metric = _TEMP_LABELS.get((_read_text(label_path) or "").lower())
                value = _read_int(label_path[: -len("label")] + "input")
                if metric is not None and value is not None:
                    out.setdefault(metric, value)
            power = _read_int(os.path.join(hw, "power1_average"))
            if power is not None:
                out.setdefault(M.POWER_SOCKET, power)

    def _read_all(self) -> dict[M, int]:
        d = self.device_dir
        out: dict[M, int] = {}
        busy = _read_int(os.path.join(d, "gpu_busy_percent"))
        if busy is not None:
            out[M.ACTIVITY_COMPUTE] = busy * 1000
        mem_busy = _read_int(os.path.join(d, "mem_busy_percent"))
        if mem_busy is not None:
            out[M.ACTIVITY_MEMORY] = mem_busy * 1000
        for name, metric in (
            ("mem_info_vram_used", M.MEMORY_LOCAL_USED),
            ("mem_info_vram_total", M.MEMORY_LOCAL_TOTAL),
        ):
            v = _read_int(os.path.join(d, name))
            if v is not None:
                out[metric] = v
        self._hwmon(out)
        blob = self._gpu_metrics()
        if blob is not None:
            for metric, get in _FROM_BLOB.items():
                if metric not in out:
                    v = get(blob)
                    if v is not None:
                        out[metric] = v
        return out

    def _gpu_metrics(self) -> GpuMetrics | None:
        try:
            with open(os.path.join(self.device_dir, "gpu_metrics"), "rb") as f:
                data = f.read()
        except OSError:
            return None
        try:
            return parse_gpu_metrics(data)
        except Exception:  # an unparsed revision or short blob: the plain files remain
            return None

    def sample(self) -> tuple[list[int], list[int]]:
        """(metric ids, values) of the metrics readable now, in descriptor order."""
        now = self._read_all()
        ids = [int(m) for m in self._metrics if m in now]
        return ids, [now[M(i)] for i in ids]
