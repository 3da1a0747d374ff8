"""The plugin registry: entry points loaded lazily into a pluggy PluginManager.

Importing ``hal_core`` loads nothing; the first registry use loads every entry point in
group ``hal_core.plugins``. A plugin that fails to import or to register is recorded with
its error and never stops the others. Environment:

* ``HAL_PLUGINS=a,b``: load only these entry-point names.
* ``HAL_DISABLE_PLUGINS=a,b``: skip these.
* ``HAL_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (register by hand).

Later registrations of a driver name override earlier ones.
"""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any, Iterable

import attrs
import pluggy

from . import hookspecs
from ._device import Device
from ._driver import Driver
from ._status import HalError, NotFoundError, UnavailableError, error_for
from ._uri import DeviceUri

try:  # the backport tracks the newest API; the stdlib module is the fallback
    import importlib_metadata as _metadata
except ImportError:  # pragma: no cover
    import importlib.metadata as _metadata  # type: ignore[no-redef]

__all__ = ["PluginRecord", "DriverRecord", "Registry", "registry", "create_device"]

ENTRY_POINT_GROUP = "hal_core.plugins"
DEFAULT_DEVICE_URI = "local-task://"


@attrs.define
class PluginRecord:
    """What the registry knows of one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    location: str | None = None
    loaded: bool = False
    error: str | None = None
    disabled: bool = False


@attrs.define
class DriverRecord:
    name: str
    full_name: str
    plugin: str
    factory: Any
    overridden: list[str] = attrs.field(factory=list)


def _env_list(name: str) -> set[str]:
    return {x.strip() for x in os.environ.get(name, "").split(",") if x.strip()}


class Registry:
    """Holds plugins, their drivers and the created Driver objects. Thread-safe."""

    def __init__(self, *, autoload: bool | None = None) -> None:
        self._lock = threading.RLock()
        self._pm = pluggy.PluginManager("hal_core")
        self._pm.add_hookspecs(hookspecs)
        if autoload is None:
            autoload = os.environ.get("HAL_DISABLE_PLUGIN_AUTOLOAD", "") not in ("1", "true", "yes")
        self._autoload = autoload
        self._loaded = False
        self._plugins: list[PluginRecord] = []
        self._drivers: dict[str, DriverRecord] | None = None
        self._driver_objects: dict[str, Driver] = {}

    # -- loading -----------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            if self._autoload:
                self._load_entry_points()
            self._loaded = True

    def _load_entry_points(self) -> None:
        allow = _env_list("HAL_PLUGINS")
        deny = _env_list("HAL_DISABLE_PLUGINS")
        try:
            eps = list(_metadata.entry_points(group=ENTRY_POINT_GROUP))
        except Exception as exc:  # a broken metadata tree must not break hal_core
            self._plugins.append(PluginRecord(name="<entry points>", error=repr(exc)))
            return
        seen: set[str] = set()
        for ep in sorted(eps, key=lambda e: e.name):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            record = PluginRecord(
                name=ep.name,
                distribution=getattr(dist, "name", None),
                version=getattr(dist, "version", None),
                location=ep.value,
            )
            self._plugins.append(record)
            if (allow and ep.name not in allow) or ep.name in deny:
                record.disabled = True
                record.error = "disabled by HAL_PLUGINS / HAL_DISABLE_PLUGINS"
                continue
            try:
                module = ep.load()
                self._pm.register(module, name=ep.name)
            except BaseException as exc:  # noqa: BLE001 - any plugin failure is recorded
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                record.error = _describe(exc)
                continue
            record.loaded = True

    def register_plugin(self, plugin: Any, name: str | None = None) -> PluginRecord:
        """Register a plugin object or module by hand (after any entry points). Its
        drivers override earlier ones of the same name."""
        self._ensure_loaded()
        with self._lock:
            name = name or getattr(plugin, "__name__", None) or repr(plugin)
            record = PluginRecord(name=name, location=getattr(plugin, "__name__", None))
            self._plugins.append(record)
            try:
                self._pm.register(plugin, name=name)
            except Exception as exc:
                record.error = _describe(exc)
                return record
            record.loaded = True
            self._drivers = None
            return record

    def unregister_plugin(self, name: str) -> None:
        with self._lock:
            self._pm.unregister(name=name)
            self._plugins = [p for p in self._plugins if p.name != name]
            self._drivers = None
            self._driver_objects = {
                k: v for k, v in self._driver_objects.items() if k in self._driver_records()
            }

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        self._ensure_loaded()
        return self._pm

    def plugins(self) -> list[PluginRecord]:
        self._ensure_loaded()
        self._driver_records()  # registration errors land on the records
        return list(self._plugins)

    def _record(self, name: str) -> PluginRecord | None:
        for record in self._plugins:
            if record.name == name:
                return record
        return None

    # -- drivers -----------------------------------------------------------------------

    def _driver_records(self) -> dict[str, DriverRecord]:
        self._ensure_loaded()
        with self._lock:
            if self._drivers is not None:
                return self._drivers
            drivers: dict[str, DriverRecord] = {}
            for plugin_name, factory in self.hook_results("hal_drivers"):
                previous = drivers.get(factory.name)
                entry = DriverRecord(
                    name=factory.name,
                    full_name=factory.full_name,
                    plugin=plugin_name,
                    factory=factory,
                )
                if previous is not None:
                    entry.overridden = previous.overridden + [previous.plugin]
                drivers[factory.name] = entry
            self._drivers = drivers
            return drivers

    def hook_results(self, hook_name: str) -> list[tuple[str, Any]]:
        """(plugin name, item) for every implementation of a list-returning hook, in
        registration order. A failing implementation is skipped and its error recorded on
        the plugin's record, so one broken plugin never hides the others."""
        self._ensure_loaded()
        out: list[tuple[str, Any]] = []
        # get_hookimpls() lists implementations in registration order.
        for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
            try:
                items = list(impl.function() or ())
            except Exception as exc:
                record = self._record(impl.plugin_name)
                if record is not None:
                    record.error = _describe(exc)
                    record.loaded = False
                continue
            out.extend((impl.plugin_name, item) for item in items)
        return out

    def driver_names(self) -> list[str]:
        return sorted(self._driver_records())

    def driver_records(self) -> list[DriverRecord]:
        return [self._driver_records()[n] for n in self.driver_names()]

    def driver(self, name: str) -> Driver:
        """The driver object for ``name`` (created once). NOT_FOUND lists the known
        drivers; UNAVAILABLE when the driver cannot start here."""
        with self._lock:
            existing = self._driver_objects.get(name)
            if existing is not None:
                return existing
            record = self._driver_records().get(name)
            if record is None:
                known = ", ".join(self.driver_names()) or "none"
                raise NotFoundError(
                    f"no HAL driver named {name!r} is registered (known: {known}); install "
                    "the plugin that provides it, e.g. pip install 'hal-core[all]'"
                )
            try:
                backend = record.factory.create()
            except HalError:
                raise
            except Exception as exc:
                raise UnavailableError(
                    f"driver {name!r} failed to start: {_describe(exc)}"
                ) from exc
            driver = Driver(record.name, record.full_name, backend)
            self._driver_objects[name] = driver
            return driver

    def create_device(self, uri: str | None = None) -> Device:
        """Create a device by URI (``local-task://`` when None)."""
        uri = DEFAULT_DEVICE_URI if uri is None else uri
        parsed = DeviceUri.parse(uri)
        try:
            driver = self.driver(parsed.scheme)
        except HalError as exc:
            if str(uri) in exc.message:
                raise
            raise error_for(exc.code, f"creating device {uri!r}: {exc.message}") from exc
        return driver.create_device_by_uri(uri)

    def close(self) -> None:
        with self._lock:
            for driver in self._driver_objects.values():
                driver.close()
            self._driver_objects.clear()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, HalError):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


_default: Registry | None = None
_default_lock = threading.Lock()


def registry() -> Registry:
    """The process-wide default registry (created on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Registry()
    return _default


def create_device(uri: str | None = None) -> Device:
    """Create a device by URI with the default registry; ``None`` means ``local-task://``.

    NOT_FOUND for an unknown driver, INVALID_ARGUMENT for a malformed URI, UNAVAILABLE when
    the driver's library or hardware is missing; each message names the URI.
    """
    return registry().create_device(uri)


def iter_hook_results(hook_name: str) -> Iterable[tuple[str, Any]]:
    """``Registry.hook_results`` on the default registry."""
    return registry().hook_results(hook_name)
