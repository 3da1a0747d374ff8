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

    def create_device_by_id(self, device_id, params):
        raise hal.UnavailableError("a fake driver creates no devices")

    def create_device_by_path(self, path, params):
        raise hal.UnavailableError("a fake driver creates no devices")


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
    # Loaded (its other hooks would still work), but the failing hook is recorded.
    assert records["broken"].failed
    assert "plugin exploded" in records["broken"].hook_errors["hal_drivers"][0]
    assert records["fine"].loaded and not records["fine"].failed


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


# -- one plugin never breaks another: every hook result is checked item by item ----------


def _hook_plugin(hook_name, result):
    """A plugin object whose one hook returns ``result`` (called if callable)."""

    class P:
        pass

    def impl(self):
        return result() if callable(result) else result

    setattr(P, hook_name, hookimpl(impl))
    return P()


def _registry_with(*plugins):
    """A registry holding ``plugins`` (name, object) and then a working ``fine`` driver."""
    reg = _registry.Registry(autoload=False)
    for name, plugin in plugins:
        reg.register_plugin(plugin, name=name)
    reg.register_plugin(_plugin("fine", "ok"), name="fine")
    return reg


def _errors(reg, name):
    return {p.name: p for p in reg.plugins()}[name].errors


@pytest.mark.parametrize(
    "result, expected",
    [
        ("local-task", "returned str 'local-task'; expected a list"),
        ({"bad": DriverFactory("bad", "Bad", object)}, "returned dict"),
        (42, "returned int 42"),
        ([None], "item 0 rejected: NoneType None is not a hal_core.backend.DriverFactory"),
        (["local-task"], "item 0 rejected: str 'local-task' is not a"),
        ([DriverFactory("", "x", object)], "non-empty str"),
        ([DriverFactory("a:b", "x", object)], "cannot be a URI scheme"),
        ([DriverFactory(7, "x", object)], "non-empty str, got int 7"),
        ([DriverFactory("bad", "Bad", "not callable")], "create must be callable"),
    ],
)
def test_driver_hook_garbage_is_recorded_and_others_work(result, expected):
    reg = _registry_with(("broken", _hook_plugin("hal_drivers", result)))
    assert reg.driver_names() == ["fine"]
    assert reg.driver("fine").backend.label == "ok"
    errors = _errors(reg, "broken")
    assert len(errors) == 1 and errors[0].startswith("hal_drivers: ")
    assert expected in errors[0]


def test_valid_items_of_a_partly_broken_hook_are_kept():
    good = DriverFactory("half", "Half", lambda: _FakeDriver("half"))
    reg = _registry_with(("mixed", _hook_plugin("hal_drivers", [good, "junk", None])))
    assert reg.driver_names() == ["fine", "half"]
    errors = _errors(reg, "mixed")
    assert [e.split(" rejected")[0] for e in errors] == [
        "hal_drivers: item 1",
        "hal_drivers: item 2",
    ]


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), ValueError("boom")])
def test_hook_raising_anything_is_recorded(exc):
    def raise_it():
        raise exc

    reg = _registry_with(("raiser", _hook_plugin("hal_drivers", raise_it)))
    assert reg.driver_names() == ["fine"]
    assert f"raised {type(exc).__name__}" in _errors(reg, "raiser")[0]


def test_factory_create_returning_garbage_fails_that_driver_only():
    reg = _registry_with(
        ("liar", _hook_plugin("hal_drivers", [DriverFactory("liar", "Liar", lambda: 42)]))
    )
    assert reg.driver_names() == ["fine", "liar"]
    with pytest.raises(hal.InternalError) as info:
        reg.create_device("liar://")
    message = str(info.value)
    assert "'liar'" in message and "returned int 42" in message
    assert "query_available_devices" in message
    # Recorded on the plugin, shown by hal info; the other driver still works.
    assert any("returned int 42" in e for e in _errors(reg, "liar"))
    assert reg.driver("fine").backend.label == "ok"


def test_factory_create_raising_system_exit_is_unavailable():
    def create():
        raise SystemExit("no hardware")

    reg = _registry_with(
        ("exits", _hook_plugin("hal_drivers", [DriverFactory("exits", "Exits", create)]))
    )
    with pytest.raises(hal.UnavailableError, match="failed to start: SystemExit"):
        reg.driver("exits")
    assert reg.driver("fine").backend.label == "ok"


def test_cts_hook_garbage_is_recorded_and_other_configs_kept():
    from hal_core.cts.config import CtsBackend

    good = _hook_plugin("hal_cts_backends", [CtsBackend(driver="fine", tags={"file_io"})])
    reg = _registry_with(
        ("good-cts", good),
        (
            "bad-cts",
            _hook_plugin("hal_cts_backends", [object(), CtsBackend(driver="x", uri="y://")]),
        ),
        ("dict-cts", _hook_plugin("hal_cts_backends", {"driver": "x"})),
    )
    configs = reg.hook_results("hal_cts_backends")
    assert [(p, c.driver) for p, c in configs] == [("good-cts", "fine")]
    bad = _errors(reg, "bad-cts")
    assert "is not a hal_core.cts.config.CtsBackend" in bad[0]
    assert "names driver 'y'" in bad[1]
    assert "returned dict" in _errors(reg, "dict-cts")[0]


def test_cts_tag_typo_is_an_error_recorded_on_the_plugin():
    from hal_core.cts.config import CtsBackend

    def configs():
        return [CtsBackend(driver="fine", tags={"async_queue", "dispach"})]

    reg = _registry_with(("typo", _hook_plugin("hal_cts_backends", configs)))
    assert reg.hook_results("hal_cts_backends") == []
    (error,) = _errors(reg, "typo")
    assert "unknown CTS tags 'dispach' (did you mean 'dispatch'?)" in error


def test_profiler_hook_garbage_is_recorded_and_other_profilers_listed():
    from hal_core.profiling import ProfilerFactory

    good = ProfilerFactory(name="good-prof", create=lambda options: None)
    reg = _registry_with(
        ("prof", _hook_plugin("hal_profilers", [good, "junk"])),
        ("prof-str", _hook_plugin("hal_profilers", "metrics")),
    )
    assert [f.name for _p, f in reg.hook_results("hal_profilers")] == ["good-prof"]
    assert "str 'junk' is not a hal_core.profiling.ProfilerFactory" in _errors(reg, "prof")[0]
    assert "returned str 'metrics'" in _errors(reg, "prof-str")[0]


def test_unknown_hook_name_is_recorded_with_a_suggestion():
    class Typo:
        @hookimpl
        def hal_driver(self):  # the spec is hal_drivers
            return []

        @hookimpl
        def hal_cts_backends(self):
            return []

    reg = _registry_with(("typo", Typo()))
    (error,) = _errors(reg, "typo")
    assert error.startswith("registration: unknown hook 'hal_driver'")
    assert "did you mean 'hal_drivers'" in error
    # Its valid hooks still run.
    assert reg.hook_results("hal_cts_backends") == []


def test_registration_failure_leaves_nothing_half_registered():
    class WrongSignature:
        @hookimpl
        def hal_cts_backends(self):
            raise AssertionError("must never run: the plugin failed to register")

        @hookimpl
        def hal_drivers(self, unexpected_argument):
            return []

    reg = _registry_with(("wrong", WrongSignature()))
    record = {p.name: p for p in reg.plugins()}["wrong"]
    assert not record.loaded and "registration failed" in record.error
    assert reg.plugin_manager.get_plugin("wrong") is None
    assert reg.hook_results("hal_cts_backends") == []


def test_hooks_run_once_and_errors_are_not_repeated():
    calls = []

    def result():
        calls.append(1)
        return ["junk"]

    reg = _registry_with(("junk", _hook_plugin("hal_drivers", result)))
    for _ in range(3):
        reg.driver_names()
        reg.plugins()
    assert len(calls) == 1
    assert len(_errors(reg, "junk")) == 1


def test_registering_an_override_after_use_takes_effect():
    reg = _registry.Registry(autoload=False)
    reg.register_plugin(_plugin("fake", "first"), name="p1")
    assert reg.driver("fake").backend.label == "first"
    reg.register_plugin(_plugin("fake", "second"), name="p2")
    assert reg.driver("fake").backend.label == "second"
    reg.unregister_plugin("p2")
    assert reg.driver("fake").backend.label == "first"


def test_not_found_suggests_near_misses_and_counts_failed_plugins():
    reg = _registry_with(
        ("broken-a", _hook_plugin("hal_drivers", "junk")),
        ("broken-b", _hook_plugin("hal_profilers", 1)),
        ("off", _hook_plugin("hal_drivers", [])),
    )
    with pytest.raises(hal.NotFoundError) as info:
        reg.create_device("fien://")
    message = str(info.value)
    assert "creating device 'fien://'" in message
    assert "(did you mean 'fine'?)" in message
    assert "2 plugins failed to load or had hook results rejected (broken-a, broken-b)" in message
    assert "hal info" in message


def test_not_found_without_failures_says_nothing_about_plugins():
    reg = _registry_with()
    with pytest.raises(hal.NotFoundError) as info:
        reg.driver("zzz")
    assert "failed to load" not in str(info.value) and "did you mean" not in str(info.value)


def test_hook_function_without_the_marker_is_recorded():
    mod = types.ModuleType("unmarked_plugin")

    def hal_drivers():
        return [DriverFactory("unmarked", "U", lambda: _FakeDriver("u"))]

    mod.hal_drivers = hal_drivers
    reg = _registry_with(("unmarked", mod))
    assert reg.driver_names() == ["fine"]
    (error,) = _errors(reg, "unmarked")
    assert "hal_drivers is not marked with @hal_core.hookimpl" in error


def test_plugin_using_the_registry_while_imported_does_not_reload(fake_entry_points, monkeypatch):
    seen = []
    reentrant = types.ModuleType("hal_test_reentrant_plugin")
    monkeypatch.setitem(sys.modules, "hal_test_reentrant_plugin", reentrant)
    later = types.ModuleType("hal_test_later_plugin")
    later.hal_drivers = _plugin("later", "later").hal_drivers
    monkeypatch.setitem(sys.modules, "hal_test_later_plugin", later)
    reg = _registry.Registry(autoload=True)

    class _Reentrant(_EP):
        def load(self):
            seen.append(reg.driver_names())  # re-enters the registry while loading
            return reentrant

    monkeypatch.setattr(
        _registry._metadata,
        "entry_points",
        lambda group: [
            *fake_entry_points,
            _Reentrant("reentrant", "hal_test_reentrant_plugin"),
            _EP("zz-later", "hal_test_later_plugin"),
        ],
    )
    records = {p.name: p for p in reg.plugins()}
    assert records["reentrant"].loaded and len(seen) == 1
    assert seen[0] == ["good"]  # what was loaded when it looked
    # Plugins loaded after the re-entry are not hidden by what it computed.
    assert reg.driver_names() == ["good", "later"]
