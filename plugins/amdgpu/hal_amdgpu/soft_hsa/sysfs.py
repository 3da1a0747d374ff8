"""A sysfs tree standing in for ``/sys`` for the soft agent's GPUs, so the amdgpu device
metrics path (the PCI device directory's plain files and its binary ``gpu_metrics``) runs
over the software agent exactly as over the kernel's files.

``SoftSysfs(root)`` writes ``<root>/bus/pci/devices/<DDDD:BB:DD.F>/`` per GPU agent (the
address its HSA ``AMD_DOMAIN``/``AMD_BDFID`` give). Only what the software agent really
knows is provided: ``mem_info_vram_total`` (its coarse-grained pool sizes),
``mem_info_vram_used`` (the bytes live in that GPU's pools) and a ``gpu_metrics`` v1.3 blob
carrying the system clock counter and a throttle status of 0 (a software agent never
throttles), with every field it has no model for (temperatures, clocks, power, activity)
set to the kernel's "not provided" value. ``refresh()`` rewrites the files from the
runtime's state (the amdgpu metric source calls it before each sample); ``remove()``
deletes the tree. Thread-safe: the tree's own lock serialises writes and removal (no
other lock is held across its file I/O).
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from typing import Iterable

__all__ = ["SoftSysfs", "GPU_METRICS_V1_3", "pci_name"]

# struct gpu_metrics_v1_3 (drivers/gpu/drm/amd/include/kgd_pp_interface.h) after the
# 4-byte metrics_table_header (u16 structure_size, u8 format_revision, u8 content_revision):
# (name, struct code). Natural alignment is made explicit below, as the C compiler does.
_V1_3_FIELDS = (
    [(f"temperature_{n}", "H") for n in ("edge", "hotspot", "mem", "vrgfx", "vrsoc", "vrmem")]
    + [(f"average_{n}_activity", "H") for n in ("gfx", "umc", "mm")]
    + [("average_socket_power", "H"), ("energy_accumulator", "Q"), ("system_clock_counter", "Q")]
    + [(f"average_{n}_frequency", "H") for n in ("gfxclk", "socclk", "uclk")]
    + [(f"average_{n}_frequency", "H") for n in ("vclk0", "dclk0", "vclk1", "dclk1")]
    + [(f"current_{n}", "H") for n in ("gfxclk", "socclk", "uclk", "vclk0", "dclk0")]
    + [("current_vclk1", "H"), ("current_dclk1", "H"), ("throttle_status", "I")]
    + [("current_fan_speed", "H"), ("pcie_link_width", "H"), ("pcie_link_speed", "H")]
    + [("padding", "H"), ("gfx_activity_acc", "I"), ("mem_activity_acc", "I")]
    + [("temperature_hbm", "4H"), ("firmware_timestamp", "Q")]
    + [("voltage_soc", "H"), ("voltage_gfx", "H"), ("voltage_mem", "H"), ("padding1", "H")]
    + [("indep_throttle_status", "Q")]
)


def _layout(fields: Iterable[tuple[str, str]]) -> tuple[struct.Struct, list[tuple[str, str]]]:
    fmt, offset = "<HBB", 4
    out = []
    for name, code in fields:
        count = int(code[:-1]) if len(code) > 1 else 1
        size = struct.calcsize("<" + code[-1])
        pad = -offset % size
        fmt += "x" * pad + code
        offset += pad + size * count
        out.append((name, code))
    fmt += "x" * (-offset % 8)  # the struct holds u64 members: 8-byte aligned size
    return struct.Struct(fmt), out


GPU_METRICS_V1_3, _FIELDS = _layout(_V1_3_FIELDS)
_NOT_PROVIDED = {"H": 0xFFFF, "I": 0xFFFFFFFF, "Q": 0xFFFFFFFFFFFFFFFF}


def pci_name(domain: int, bdf_id: int) -> str:
    """``DDDD:BB:DD.F`` from the HSA domain and BDFID (bus<<8 | device<<3 | function)."""
    return f"{domain:04x}:{(bdf_id >> 8) & 0xFF:02x}:{(bdf_id >> 3) & 0x1F:02x}.{bdf_id & 0x7:x}"


def gpu_metrics_blob(values: dict[str, int]) -> bytes:
    """A v1.3 blob: ``values`` by field name, every other field "not provided"."""
    args: list[int] = [GPU_METRICS_V1_3.size, 1, 3]
    for name, code in _FIELDS:
        count = int(code[:-1]) if len(code) > 1 else 1
        default = 0 if name.startswith("padding") else _NOT_PROVIDED[code[-1]]
        args += [values.get(name, default)] * count
    return GPU_METRICS_V1_3.pack(*args)


class SoftSysfs:
    """The tree under ``root`` (see module doc). ``gpus`` are (domain, bdf_id, vram_total)
    per GPU agent, in agent order."""

    def __init__(self, root: str, gpus: list[tuple[int, int, int]]) -> None:
        self.root = root
        self.dirs = [
            os.path.join(root, "bus", "pci", "devices", pci_name(domain, bdf))
            for domain, bdf, _total in gpus
        ]
        self._totals = [total for _domain, _bdf, total in gpus]
        self._lock = threading.Lock()
        self._removed = False
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)

    def refresh(self, vram_used: list[int]) -> None:
        """Rewrite every GPU's files; ``vram_used[i]`` is GPU i's live pool bytes."""
        clock = time.monotonic_ns()
        blob = gpu_metrics_blob(
            {"system_clock_counter": clock, "throttle_status": 0, "indep_throttle_status": 0}
        )
        with self._lock:
            if self._removed:
                return
            for d, total, used in zip(self.dirs, self._totals, vram_used):
                _write(os.path.join(d, "mem_info_vram_total"), f"{total}\n".encode())
                _write(os.path.join(d, "mem_info_vram_used"), f"{used}\n".encode())
                _write(os.path.join(d, "gpu_metrics"), blob)

    def remove(self) -> None:
        """Delete the tree; later ``refresh`` calls do nothing."""
        with self._lock:
            self._removed = True
            shutil.rmtree(self.root, ignore_errors=True)


def _write(path: str, data: bytes) -> None:
    # Replace atomically: a reader never sees a half-written file.
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
