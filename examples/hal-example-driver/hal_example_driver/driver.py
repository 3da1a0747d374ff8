"""``ExampleDriverBackend``: one device, path ``""`` (or ``"0"``)."""

from __future__ import annotations

from hal_core import DeviceInfo, InvalidArgumentError, NotFoundError

from .device import ExampleDeviceBackend

DEFAULT_QUEUES = 2
MAX_QUEUES = 4


class ExampleDriverBackend:
    """``DriverBackend`` of the ``example`` driver. URI parameter ``queues=N``
    (1..4, default 2): the number of queues, each with its own worker thread."""

    def query_available_devices(self) -> list[DeviceInfo]:
        return [DeviceInfo(device_id=1, path="", name="example device (host memory)")]

    def create_device_by_id(self, device_id: int, params: dict[str, str]) -> ExampleDeviceBackend:
        if device_id not in (0, 1):  # 0: the default device
            raise NotFoundError(f"example has one device, id 1; got id {device_id}")
        return _create(params)

    def create_device_by_path(self, path: str, params: dict[str, str]) -> ExampleDeviceBackend:
        if path not in ("", "0"):
            raise NotFoundError(f"example has one device, path '' (or '0'); got path {path!r}")
        return _create(params)


def _create(params: dict[str, str]) -> ExampleDeviceBackend:
    unknown = sorted(set(params) - {"queues"})
    if unknown:
        raise InvalidArgumentError(
            f"example does not know device parameters {unknown}; known: queues"
        )
    raw = params.get("queues", "")
    if raw == "":
        return ExampleDeviceBackend(DEFAULT_QUEUES)
    try:
        queues = int(raw)
    except ValueError:
        raise InvalidArgumentError(f"device parameter queues={raw!r} is not an integer") from None
    if not 1 <= queues <= MAX_QUEUES:
        raise InvalidArgumentError(f"device parameter queues={queues} is outside 1..{MAX_QUEUES}")
    return ExampleDeviceBackend(queues)
