"""DEVICE_METRICS of an amdgpu device: one metric source per GPU over its PCI sysfs
directory (``<sysfs root>/bus/pci/devices/<DDDD:BB:DD.F>``: the plain files and the binary
``gpu_metrics``), read by ``hal_profilers.sysfs_metrics.AmdGpuSysfsMetricsSource``.

The sysfs root is ``/sys`` over ROCr and the software agent's own tree over the soft agent
(``SoftHsaRuntime.soft_sysfs_root``), whose files are rewritten from the agent's state
before each sample. ``metric_sources`` runs at ``profiling_begin``, so a GPU without the
files is UNAVAILABLE there, naming the path, before anything is installed. Samples are
taken by the session at begin, flush and end, never on hot paths. Thread-safe.
"""

from __future__ import annotations

import os
from typing import Any

from hal_core import HalError, UnavailableError

__all__ = ["SYSFS_ROOT", "metric_sources"]

SYSFS_ROOT = "/sys"


class _RefreshedSource:
    """A source whose files are rewritten (``refresh()``) before each sample: the soft
    agent's sysfs tree has no kernel behind it keeping the files current."""

    __slots__ = ("_inner", "_refresh", "name", "source_class", "source_id")

    def __init__(self, inner: Any, refresh: Any) -> None:
        self._inner = inner
        self._refresh = refresh
        self.name = inner.name
        self.source_id = inner.source_id
        self.source_class = inner.source_class

    def descriptors(self) -> list:
        return list(self._inner.descriptors())

    def sample(self) -> tuple[list[int], list[int]]:
        self._refresh()
        ids, values = self._inner.sample()
        return list(ids), list(values)


def metric_sources(backend: Any) -> list[Any]:
    """One source per GPU of ``backend`` (an ``AmdgpuDeviceBackend``). UNAVAILABLE naming
    the path when a GPU's sysfs directory or every metric file in it is missing, or when
    the ``hal-profilers`` plugin (which reads the files) is not installed."""
    try:
        from hal_profilers.sysfs_metrics import AmdGpuSysfsMetricsSource
    except ImportError:
        raise UnavailableError(
            "device metrics on amdgpu need the hal-profilers plugin, which reads the GPU's "
            "sysfs files (not on PyPI: from a checkout, pip install ./plugins/profilers)"
        ) from None
    hsa = backend.hsa
    refresh = None
    if hsa.implementation == "soft":
        root = hsa.lib.soft_sysfs_root()
        refresh = hsa.lib.refresh_soft_sysfs
    else:
        root = SYSFS_ROOT
    sources: list[Any] = []
    for gpu in backend.gpus:
        path = os.path.join(root, "bus", "pci", "devices", gpu.bdf)
        try:
            source = AmdGpuSysfsMetricsSource(path, bdf=gpu.bdf)
        except HalError:
            source = None
        if source is None or not source.descriptors():
            raise UnavailableError(
                f"no device metrics for GPU {gpu.bdf} ({gpu.target.processor}): "
                f"{path} {'has no metric files' if source else 'does not exist'} "
                f"(expected {os.path.join(path, 'gpu_metrics')} or mem_info_vram_used); "
                "device metrics need the amdgpu kernel driver's sysfs files with /sys mounted"
            )
        sources.append(source if refresh is None else _RefreshedSource(source, refresh))
    return sources
