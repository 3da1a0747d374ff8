"""Drivers: enumerate devices and create them by id, path or URI."""

from __future__ import annotations

from typing import Any, final

import attrs

from ._backend_contract import bind_driver
from ._construction import INTERNAL, require_internal, sealed
from ._device import Device
from ._status import HalError, InvalidArgumentError, OutOfRangeError, error_for
from ._uri import DeviceUri

__all__ = ["Driver", "DeviceInfo", "DEVICE_ID_DEFAULT"]

DEVICE_ID_DEFAULT = 0
"""``IREE_HAL_DEVICE_ID_DEFAULT``: let the driver choose."""


@attrs.frozen
class DeviceInfo:
    """A device a driver can create: an opaque ``device_id``, a stable driver-specific
    ``path`` (usable in URIs) and a human ``name``."""

    device_id: int
    path: str
    name: str


@final
@sealed
class Driver:
    """One driver (e.g. ``local-task``). Created once per registry and reused: drivers can
    be expensive (``hal_core.registry().driver(name)``; no public constructor). Final.
    Thread-safe."""

    __slots__ = ("name", "full_name", "_backend", "_contract")

    def __init__(self, name: str, full_name: str, backend: Any, *, _token: object = None) -> None:
        """Internal: the registry passes ``_token=INTERNAL``."""
        require_internal(_token, "Driver", "hal_core.registry().driver(name)")
        self.name = name
        self.full_name = full_name
        self._backend = backend
        # The driver contract, resolved once: mandatory entries and optional ones or None.
        self._contract = bind_driver(backend, name)

    def __repr__(self) -> str:
        return f"<hal_core.Driver {self.name!r}>"

    @property
    def backend(self) -> Any:
        return self._backend

    def query_available_devices(self) -> list[DeviceInfo]:
        """Devices this driver can create now (UNAVAILABLE when its library or hardware
        is missing)."""
        return list(self._contract.query_available_devices())

    def dump_device_info(self, device_id: int) -> str:
        """Human-readable details of one device ("" when the driver gives none)."""
        dump = self._contract.dump_device_info
        return dump(device_id) if dump is not None else ""

    def create_device_by_id(
        self, device_id: int = DEVICE_ID_DEFAULT, params: dict[str, str] | None = None
    ) -> Device:
        uri = f"{self.name}://"
        path = ""
        if device_id != DEVICE_ID_DEFAULT:
            for info in self.query_available_devices():
                if info.device_id == device_id:
                    path = info.path
                    break
            uri = f"{self.name}://{path}"
        backend = self._annotate(uri, self._contract.create_device_by_id, device_id, params or {})
        return Device(backend, driver_name=self.name, uri=uri, _token=INTERNAL)

    def create_device_by_ordinal(
        self, ordinal: int, params: dict[str, str] | None = None
    ) -> Device:
        infos = self.query_available_devices()
        if not 0 <= ordinal < len(infos):
            raise OutOfRangeError(
                f"device ordinal {ordinal} is out of range: driver {self.name!r} has "
                f"{len(infos)} devices"
            )
        return self.create_device_by_id(infos[ordinal].device_id, params)

    def create_device_by_path(self, path: str = "", params: dict[str, str] | None = None) -> Device:
        uri = f"{self.name}://{path}"
        backend = self._annotate(uri, self._contract.create_device_by_path, path, params or {})
        return Device(backend, driver_name=self.name, uri=uri, _token=INTERNAL)

    def create_device_by_uri(self, uri: str) -> Device:
        parsed = DeviceUri.parse(uri)
        if parsed.scheme != self.name:
            raise InvalidArgumentError(
                f"device URI {uri!r} names driver {parsed.scheme!r}, not {self.name!r}"
            )
        backend = self._annotate(
            uri, self._contract.create_device_by_path, parsed.path, parsed.param_dict()
        )
        return Device(backend, driver_name=self.name, uri=uri, _token=INTERNAL)

    def create_default_device(self) -> Device:
        return self.create_device_by_id(DEVICE_ID_DEFAULT)

    @staticmethod
    def _annotate(uri: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except HalError as exc:
            raise error_for(exc.code, f"creating device {uri!r}: {exc.message}") from exc

    def close(self) -> None:
        close = self._contract.close
        if close is not None:
            close()
