"""CTS: drivers (IREE's DriverTest): enumerate devices, create them by id, by ordinal, by
path (every enumerated path plus the empty path) and by URI; unknown paths, ordinals and
drivers are reported with the right codes. Every device created here is closed.

Devices are created with the parameters of the CTS device's URI (e.g. ``?hsa=soft``), so
a backend configured for a software or simulated device is tested as configured. A driver
whose enumeration reports UNAVAILABLE skips the tests that need it."""

from __future__ import annotations

import pytest

import hal_core
from hal_core import DeviceInfo, DeviceUri, QueueAffinity, StatusCode

from .context import TIMEOUT


@pytest.fixture
def driver(cts):
    return hal_core.registry().driver(cts.driver)


@pytest.fixture
def params(cts) -> dict[str, str]:
    """The query parameters of the URI the CTS device was created from."""
    return DeviceUri.parse(cts.device.uri).param_dict()


@pytest.fixture
def infos(driver):
    try:
        return driver.query_available_devices()
    except hal_core.UnavailableError as exc:
        pytest.skip(f"{driver.name} cannot enumerate devices here: {exc}")


def _query(params: dict[str, str]) -> str:
    return "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""


def _works(device: hal_core.Device) -> None:
    """A created device runs queue work."""
    sem = device.create_semaphore(0)
    device.queue_barrier(QueueAffinity.ANY, [], [(sem, 1)])
    sem.wait(1, TIMEOUT)


def test_driver_identity(cts, driver):
    assert driver.name == cts.driver
    assert isinstance(driver.full_name, str) and driver.full_name
    assert hal_core.registry().driver(cts.driver) is driver  # created once, reused


def test_query_available_devices(driver, infos):
    assert infos, "a CTS backend must enumerate at least one device"
    for info in infos:
        assert isinstance(info, DeviceInfo)
        assert isinstance(info.path, str)
        assert isinstance(info.name, str) and info.name
    assert len({info.device_id for info in infos}) == len(infos)
    assert isinstance(driver.dump_device_info(infos[0].device_id), str)


def test_create_by_id(driver, infos, params):
    for info in infos:
        with driver.create_device_by_id(info.device_id, params) as device:
            assert device.id == driver.name
            _works(device)


def test_create_default_device(driver, params):
    with driver.create_device_by_id(hal_core.DEVICE_ID_DEFAULT, params) as device:
        _works(device)


def test_create_by_ordinal(driver, infos, params):
    count = len(infos)
    for ordinal in range(count):
        with driver.create_device_by_ordinal(ordinal, params) as device:
            _works(device)
    with pytest.raises(hal_core.OutOfRangeError, match=str(count)):
        driver.create_device_by_ordinal(count, params)


def test_create_by_path(driver, infos, params):
    paths = [info.path for info in infos]
    if "" not in paths:
        paths.append("")  # every driver accepts the empty path
    for path in paths:
        with driver.create_device_by_path(path, params) as device:
            _works(device)


def test_create_by_unknown_path_is_not_found(driver, params):
    """A well-formed path naming no device is NOT_FOUND; a path the driver cannot parse
    may instead be INVALID_ARGUMENT. Either way the message names the path."""
    path = "9999"
    with pytest.raises(hal_core.NotFoundError) as info:
        driver.create_device_by_path(path, params)
    assert info.value.code == StatusCode.NOT_FOUND
    assert path in info.value.message
    garbage = "no-such-device-9f3c"
    with pytest.raises((hal_core.NotFoundError, hal_core.InvalidArgumentError)) as garbage_info:
        driver.create_device_by_path(garbage, params)
    assert garbage in garbage_info.value.message
    with driver.create_device_by_path("", params) as device:  # the driver still works
        _works(device)


@pytest.mark.parametrize("form", ["{d}", "{d}:", "{d}://", "{d}:/"])
def test_create_by_uri_forms(driver, params, form):
    if params and ":" not in form:
        pytest.skip("a bare driver name cannot carry the CTS device's URI parameters")
    uri = form.format(d=driver.name) + _query(params)
    with hal_core.create_device(uri) as device:
        assert device.id == driver.name
        _works(device)


def test_create_by_uri_with_unknown_path_names_the_uri(driver, params):
    uri = f"{driver.name}://9999" + _query(params)
    with pytest.raises(hal_core.NotFoundError, match=f"'{driver.name}://9999"):
        hal_core.create_device(uri)


def test_unknown_driver_is_not_found():
    uri = "no-such-driver-7b1e://0"
    with pytest.raises(hal_core.NotFoundError, match="no-such-driver-7b1e"):
        hal_core.create_device(uri)


@pytest.mark.parametrize("uri", ["://0", "", "   ", "bad driver://"])
def test_malformed_uri_is_invalid(uri):
    with pytest.raises(hal_core.InvalidArgumentError) as info:
        hal_core.create_device(uri)
    assert repr(uri) in info.value.message  # the message names the URI


def test_too_many_uri_params_is_invalid(driver):
    uri = f"{driver.name}://?" + "&".join(f"k{i}=v" for i in range(129))
    with pytest.raises(hal_core.InvalidArgumentError, match="128"):
        hal_core.create_device(uri)


def test_create_by_uri_on_wrong_driver_is_invalid(driver):
    with pytest.raises(hal_core.InvalidArgumentError):
        driver.create_device_by_uri("some-other-driver://")


def test_closed_device_rejects_work_and_close_is_idempotent(driver, params):
    device = driver.create_device_by_path("", params)
    sem = device.create_semaphore(0)
    device.close()
    device.close()
    assert device.closed
    with pytest.raises(hal_core.FailedPreconditionError, match="closed"):
        device.queue_barrier(QueueAffinity.ANY, [], [(sem, 1)])
    assert sem.query() == 0


def test_close_with_waiting_work_fails_it(driver, params):
    device = driver.create_device_by_path("", params)
    gate, done = device.create_semaphore(0), device.create_semaphore(0)
    device.queue_barrier(QueueAffinity.ANY, [(gate, 1)], [(done, 1)])
    device.close(TIMEOUT)  # never hangs on work that cannot run
    with pytest.raises(hal_core.HalError) as info:
        done.wait(1, TIMEOUT)
    assert info.value.code in (StatusCode.CANCELLED, StatusCode.ABORTED)
    gate.signal(1)  # a late signal of the gate disturbs nothing
