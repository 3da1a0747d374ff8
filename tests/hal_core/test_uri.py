import pytest

import hal_core as hal
from hal_core import DeviceUri


@pytest.mark.parametrize("uri", ["local-task", "local-task:", "local-task://", "local-task:/"])
def test_bare_forms_are_one_device(uri):
    parsed = DeviceUri.parse(uri)
    assert parsed.scheme == "local-task" and parsed.path == "" and parsed.params == ()


def test_colon_and_slashes_are_equivalent():
    assert DeviceUri.parse("amdgpu:0") == DeviceUri.parse("amdgpu://0")


def test_params_split_like_iree():
    parsed = DeviceUri.parse("amdgpu://0,1?hsa=soft&&x&y=a=b&")
    assert parsed.path == "0,1"
    assert parsed.params == (("hsa", "soft"), ("x", ""), ("y", "a=b"))


def test_too_many_params_is_invalid_argument():
    uri = "local-task://?" + "&".join(f"k{i}=v" for i in range(129))
    with pytest.raises(hal.InvalidArgumentError, match="at most 128"):
        DeviceUri.parse(uri)
    assert len(DeviceUri.parse("x://?" + "&".join(f"k{i}=v" for i in range(128))).params) == 128


@pytest.mark.parametrize("uri", ["", "://x", ":"])
def test_malformed_uri_names_it(uri):
    with pytest.raises(hal.InvalidArgumentError) as info:
        DeviceUri.parse(uri)
    assert repr(uri) in str(info.value)


def test_unknown_driver_is_not_found_naming_the_uri():
    with pytest.raises(hal.NotFoundError) as info:
        hal.create_device("nosuchdriver://0")
    assert "nosuchdriver://0" in str(info.value)


def test_create_device_defaults_to_local_task():
    with hal.create_device() as device:
        assert device.id == "local-task"
