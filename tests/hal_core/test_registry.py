import sys
import types

import pytest

import hal_core as hal
from hal_core import _registry
from hal_core.backend import DriverFactory, hookimpl


class _FakeDriver:
    def __init__(self, label):
        self.label = label

    def query_available_devices(self):
        return [hal.DeviceInfo(1, "", self.label)]


def _plugin(driver_name, label):
    mod = types.SimpleNamespace()

    @hookimpl
    def hal_drivers():
        return [DriverFactory(driver_name, label, lambda: _FakeDriver(label))]

    mod.hal_drivers = hal_drivers
    return mod


def test_import_loads_no_plugins():
    # importing hal_core must not touch entry points: a fresh registry is unloaded.
    reg = _registry.Registry()
    assert reg._loaded is False


def test_later_registrations_override_earlier():
    reg = _registry.Registry(autoload=False)
    reg.register_plugin(_plugin("fake", "first"), name="p1")
    reg.register_plugin(_plugin("fake", "second"), name="p2")
    record = {r.name: r for r in reg.driver_records()}["fake"]
    assert record.plugin == "p2" and record.overridden == ["p1"]
    assert reg.driver("fake").backend.label == "second"


def test_failing_plugin_is_recorded_and_others_still_work():
    class Broken:
        @hookimpl
        def hal_drivers(self):
            raise RuntimeError("plugin exploded")

    reg = _registry.Registry(autoload=False)
    reg.register_plugin(Broken(), name="broken")
    reg.register_plugin(_plugin("fine", "ok"), name="fine")
    assert reg.driver_names() == ["fine"]
    records = {p.name: p for p in reg.plugins()}
    assert not records["broken"].loaded
    assert "plugin exploded" in records["broken"].error
    assert records["fine"].loaded


class _EP:
    def __init__(self, name, value):
        self.name = name
        self.value = value
        self.dist = types.SimpleNamespace(name=f"dist-{name}", version="9.9")

    def load(self):
        __import__(self.value)
        return sys.modules[self.value]


@pytest.fixture
def fake_entry_points(monkeypatch):
    good = types.ModuleType("hal_test_good_plugin")
    good.hal_drivers = _plugin("good", "good").hal_drivers
    monkeypatch.setitem(sys.modules, "hal_test_good_plugin", good)
    eps = [_EP("good", "hal_test_good_plugin"), _EP("bad", "hal_test_missing_module_xyz")]
    monkeypatch.setattr(_registry._metadata, "entry_points", lambda group: eps)
    return eps


def test_entry_point_import_failure_is_recorded(fake_entry_points):
    reg = _registry.Registry(autoload=True)
    records = {p.name: p for p in reg.plugins()}
    assert records["good"].loaded and records["good"].distribution == "dist-good"
    assert records["good"].version == "9.9"
    assert not records["bad"].loaded and "hal_test_missing_module_xyz" in records["bad"].error
    assert "good" in reg.driver_names()


def test_env_allow_and_deny_lists(fake_entry_points, monkeypatch):
    monkeypatch.setenv("HAL_PLUGINS", "bad")
    reg = _registry.Registry(autoload=True)
    assert reg.driver_names() == []
    assert {p.name: p for p in reg.plugins()}["good"].disabled
    monkeypatch.delenv("HAL_PLUGINS")
    monkeypatch.setenv("HAL_DISABLE_PLUGINS", "good")
    reg = _registry.Registry(autoload=True)
    assert "good" not in reg.driver_names()


def test_disable_autoload(fake_entry_points, monkeypatch):
    monkeypatch.setenv("HAL_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = _registry.Registry()
    assert reg.plugins() == [] and reg.driver_names() == []
    reg.register_plugin(_plugin("manual", "m"), name="manual")
    assert reg.driver_names() == ["manual"]


def test_driver_creation_failure_is_unavailable():
    mod = types.SimpleNamespace()

    @hookimpl
    def hal_drivers():
        def create():
            raise OSError("libfoo.so: cannot open shared object file")

        return [DriverFactory("foo", "Foo", create)]

    mod.hal_drivers = hal_drivers
    reg = _registry.Registry(autoload=False)
    reg.register_plugin(mod, name="foo")
    with pytest.raises(hal.UnavailableError, match="libfoo.so"):
        reg.create_device("foo://")
