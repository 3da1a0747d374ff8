"""CTS: drivers (IREE's DriverTest): enumerate devices, create them by id, by ordinal, by
path (every enumerated path plus the empty path) and by URI; unknown paths, ordinals and
drivers are reported with the right codes. Every device created here is closed."""

from __future__ import annotations

import pytest

import hal_core
from hal_core import DeviceInfo, QueueAffinity, StatusCode

from .context import TIMEOUT


@pytest.fixture
def driver(cts):
    return hal_core.registry().driver(cts.driver)


def _works(device: hal_core.Device) -> None:
    """A created device runs queue work."""
    sem = device.create_semaphore(0)
    device.queue_barrier(QueueAffinity.ANY, [], [(sem, 1)])
    sem.wait(1, TIMEOUT)


def test_driver_identity(cts, driver):
    assert driver.name == cts.driver
    assert isinstance(driver.full_name, str) and driver.full_name
    assert hal_core.registry().driver(cts.driver) is driver  # created once, reused


def test_query_available_devices(driver):
    infos = driver.query_available_devices()
    assert infos, "a CTS backend must enumerate at least one device"
    for info in infos:
        assert isinstance(info, DeviceInfo)
        assert isinstance(info.path, str)
        assert isinstance(info.name, str) and info.name
    assert len({info.device_id for info in infos}) == len(infos)
    assert isinstance(driver.dump_device_info(infos[0].device_id), str)


def test_create_by_id(driver):
    for info in driver.query_available_devices():
        with driver.create_device_by_id(info.device_id) as device:
            assert device.id == driver.name
            _works(device)


def test_create_default_device(driver):
    with driver.create_default_device() as device:
        _works(device)


def test_create_by_ordinal(driver):
    count = len(driver.query_available_devices())
    for ordinal in range(count):
        with driver.create_device_by_ordinal(ordinal) as device:
            _works(device)
    with pytest.raises(hal_core.OutOfRangeError, match=str(count)):
        driver.create_device_by_ordinal(count)


def test_create_by_path(driver):
    paths = [info.path for info in driver.query_available_devices()]
    if "" not in paths:
        paths.append("")  # every driver accepts the empty path
    for path in paths:
        with driver.create_device_by_path(path) as device:
            _works(device)


def test_create_by_unknown_path_is_not_found(driver):
    path = "no-such-device-9f3c"
    with pytest.raises(hal_core.NotFoundError) as info:
        driver.create_device_by_path(path)
    assert info.value.code == StatusCode.NOT_FOUND
    assert path in info.value.message
    with driver.create_device_by_path("") as device:  # the driver still works
        _works(device)


@pytest.mark.parametrize("form", ["{d}", "{d}:", "{d}://", "{d}:/"])
def test_create_by_uri_forms(driver, form):
    uri = form.format(d=driver.name)
    with hal_core.create_device(uri) as device:
        assert device.id == driver.name
        _works(device)


def test_create_by_uri_with_unknown_path_names_the_uri(driver):
    uri = f"{driver.name}://no-such-device-9f3c"
    with pytest.raises(hal_core.NotFoundError, match="no-such-device-9f3c"):
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


def test_closed_device_rejects_work_and_close_is_idempotent(driver):
    device = driver.create_device_by_path("")
    sem = device.create_semaphore(0)
    device.close()
    device.close()
    assert device.closed
    with pytest.raises(hal_core.FailedPreconditionError, match="closed"):
        device.queue_barrier(QueueAffinity.ANY, [], [(sem, 1)])
    assert sem.query() == 0


def test_close_with_waiting_work_fails_it(driver):
    device = driver.create_device_by_path("")
    gate, done = device.create_semaphore(0), device.create_semaphore(0)
    device.queue_barrier(QueueAffinity.ANY, [(gate, 1)], [(done, 1)])
    device.close(TIMEOUT)  # never hangs on work that cannot run
    with pytest.raises(hal_core.HalError) as info:
        done.wait(1, TIMEOUT)
    assert info.value.code in (StatusCode.CANCELLED, StatusCode.ABORTED)
    gate.signal(1)  # a late signal of the gate disturbs nothing
