"""The ``amdgpu`` driver backend: HSA selection, discovery and device creation.

The HSA implementation is chosen per device: the real ROCr library (default), or the
software HSA agent when the URI says ``hsa=soft`` or ``HAL_AMDGPU_HSA=soft`` is set (never
silently). ``query_available_devices`` raises UNAVAILABLE with the real library's reason
(library path or every path tried, HSA status text, likely fix) when ROCr cannot start.
URI parameters: ``hsa=rocr|soft``, ``soft_gpus=gfx1100,gfx90a`` (soft agent only), and the
host queue options ``aql_capacity``, ``kernarg_capacity``, ``notification_capacity``,
``wait_barrier`` (``queue_options``), validated at device creation. Thread-safe.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from hal_core import DeviceInfo, InvalidArgumentError

from .agents import SystemAgents, discover_agents
from .device import AmdgpuDeviceBackend
from .device_selection import device_id_for, select_by_id, select_by_path
from .hsa import HsaLibrary
from .queue_options import QUEUE_PARAMS, HostQueueOptions
from .system_info import query_system

__all__ = ["AmdgpuDriverBackend", "HSA_ENV"]

HSA_ENV = "HAL_AMDGPU_HSA"
_KNOWN_PARAMS = {"hsa", "soft_gpus"} | QUEUE_PARAMS


class AmdgpuDriverBackend:
    def __init__(self, search_paths: tuple[str, ...] = ()) -> None:
        self._search_paths = search_paths
        self._lock = threading.Lock()
        self._soft: dict[str, Any] = {}

    # -- HSA selection ------------------------------------------------------------------

    def _implementation(self, params: dict[str, str]) -> str:
        unknown = set(params) - _KNOWN_PARAMS
        if unknown:
            raise InvalidArgumentError(
                f"amdgpu does not know device parameters {sorted(unknown)}; known: "
                f"{sorted(_KNOWN_PARAMS)}"
            )
        choice = (params.get("hsa") or os.environ.get(HSA_ENV) or "rocr").strip().lower()
        if choice not in ("rocr", "soft"):
            raise InvalidArgumentError(
                f"hsa={choice!r} is not an HSA implementation; use hsa=rocr (the real "
                "libhsa-runtime64) or hsa=soft (the software agent, for tests)"
            )
        if "soft_gpus" in params and choice != "soft":
            raise InvalidArgumentError("soft_gpus is only meaningful with hsa=soft")
        return choice

    def _open(self, params: dict[str, str]) -> tuple[HsaLibrary, SystemAgents]:
        """An initialised HSA library (caller balances with ``shut_down``) and its agents."""
        if self._implementation(params) == "soft":
            hsa = self._soft_library(params)
        else:
            hsa = HsaLibrary.open_rocr(self._search_paths)
        hsa.init()
        try:
            query_system(hsa)
            return hsa, discover_agents(hsa)
        except BaseException:
            hsa.shut_down()
            raise

    def _soft_library(self, params: dict[str, str]) -> HsaLibrary:
        from .soft_hsa import SOFT_GPUS_ENV, SoftHsaRuntime, SoftSystemConfig

        spec = params.get("soft_gpus") or os.environ.get(SOFT_GPUS_ENV) or ""
        with self._lock:
            hsa = self._soft.get(spec)
            if hsa is None:
                config = SoftSystemConfig.from_isas(spec) if spec else SoftSystemConfig.default()
                hsa = HsaLibrary(
                    SoftHsaRuntime(config),
                    f"hal_amdgpu.soft_hsa ({spec or 'default: gfx1100,gfx1100'})",
                    "soft",
                )
                self._soft[spec] = hsa
            return hsa

    # -- DriverBackend ------------------------------------------------------------------

    def query_available_devices(self) -> list[DeviceInfo]:
        hsa, system = self._open({})
        try:
            gpus = system.gpus
            nodes = ", ".join(str(g.node) for g in gpus)
            infos = [
                DeviceInfo(
                    0,
                    "",
                    f"ROCR_VISIBLE_DEVICES: {len(gpus)} Visible GPU Agents "
                    f"(Nodes {nodes}) [{hsa.implementation} HSA]",
                )
            ]
            for i, gpu in enumerate(gpus):
                infos.append(
                    DeviceInfo(
                        device_id_for(i),
                        gpu.uuid,
                        f"{(gpu.product_name or gpu.name).strip()} (Node {gpu.node})",
                    )
                )
            return infos
        finally:
            hsa.shut_down()

    def dump_device_info(self, device_id: int) -> str:
        hsa, system = self._open({})
        try:
            lines = [f"HSA implementation: {hsa.implementation} ({hsa.path})"]
            for i in select_by_id(system.gpus, device_id):
                g = system.gpus[i]
                lines.append(
                    f"GPU {i}: {g.name} {g.uuid} isa={','.join(g.isa_names)} node={g.node} "
                    f"chip={g.chip_id:#x} CUs={g.compute_unit_count} wave={g.wavefront_size} "
                    f"bdf={g.bdf} nearest_cpu_node={system.nearest_cpu(g).node}"
                )
            return "\n".join(lines)
        finally:
            hsa.shut_down()

    def create_device_by_id(self, device_id: int, params: dict[str, str]) -> AmdgpuDeviceBackend:
        options = HostQueueOptions.from_params(params)  # before HSA starts: nothing to undo
        hsa, system = self._open(params)
        try:
            return AmdgpuDeviceBackend(hsa, system, select_by_id(system.gpus, device_id), options)
        except BaseException:
            hsa.shut_down()
            raise

    def create_device_by_path(self, path: str, params: dict[str, str]) -> AmdgpuDeviceBackend:
        options = HostQueueOptions.from_params(params)  # before HSA starts: nothing to undo
        hsa, system = self._open(params)
        try:
            return AmdgpuDeviceBackend(hsa, system, select_by_path(system.gpus, path), options)
        except BaseException:
            hsa.shut_down()
            raise
