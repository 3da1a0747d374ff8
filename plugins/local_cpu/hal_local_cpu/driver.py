"""Drivers ``local-task`` (worker pool, several queues) and ``local-sync`` (inline)."""

from __future__ import annotations

import os

from hal_core import DeviceInfo, InvalidArgumentError, NotFoundError

from .device import LocalDeviceBackend

DEFAULT_QUEUE_COUNT = 2


def _int_param(params: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgumentError(f"device parameter {key}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise InvalidArgumentError(f"device parameter {key}={value} is outside {lo}..{hi}")
    return value


class LocalDriverBackend:
    """One logical CPU device, path ``""`` (or ``0``). URI params: ``queues=N`` (1..64) and,
    for local-task, ``workers=N``."""

    def __init__(self, name: str, synchronous: bool) -> None:
        self.name = name
        self.synchronous = synchronous

    def query_available_devices(self) -> list[DeviceInfo]:
        kind = "inline, deterministic" if self.synchronous else "worker pool"
        return [DeviceInfo(device_id=1, path="", name=f"host CPU ({kind})")]

    def dump_device_info(self, device_id: int) -> str:
        return f"{self.name}: {os.cpu_count()} host CPUs"

    def create_device_by_id(self, device_id: int, params: dict[str, str]) -> LocalDeviceBackend:
        if device_id not in (0, 1):
            raise NotFoundError(f"{self.name} has no device with id {device_id}")
        return self._create(params)

    def create_device_by_path(self, path: str, params: dict[str, str]) -> LocalDeviceBackend:
        if path not in ("", "0"):
            raise NotFoundError(f"{self.name} has one device, path '' (or '0'); got path {path!r}")
        return self._create(params)

    def _create(self, params: dict[str, str]) -> LocalDeviceBackend:
        unknown = set(params) - {"queues", "workers"}
        if unknown:
            raise InvalidArgumentError(
                f"{self.name} does not know device parameters {sorted(unknown)}; "
                "known: queues, workers"
            )
        queues = _int_param(params, "queues", DEFAULT_QUEUE_COUNT, 1, 64)
        if self.synchronous:
            if "workers" in params:
                raise InvalidArgumentError("local-sync runs inline and takes no workers")
            workers = 0
        else:
            default_workers = max(2, min(8, os.cpu_count() or 2))
            workers = _int_param(params, "workers", default_workers, 1, 256)
        return LocalDeviceBackend(self.name, queues, workers)
