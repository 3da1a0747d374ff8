"""The plugin registry: entry points loaded lazily into a pluggy PluginManager.

Importing ``hal_core`` loads nothing; the first registry use loads every entry point in
group ``hal_core.plugins``. One plugin never breaks another: a plugin that fails to import
(``SystemExit`` and ``KeyboardInterrupt`` raised by its import included) or to register is
recorded with its error; each hook result is checked item by item (``_plugin_checks``) and
a rejected item, a hook that raises and a hook name no specification knows are recorded on
the plugin's ``hook_errors`` while its valid items keep working; a driver factory whose
``create()`` returns something that is not a driver backend fails that driver only. Hooks
run once per load (their results are cached until a plugin is registered or removed).
Environment:

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
from ._construction import INTERNAL
from ._device import Device
from ._driver import Driver
from ._plugin_checks import (
    check_driver_backend,
    check_hook_result,
    did_you_mean,
    unknown_hooks,
    unmarked_hooks,
)
from ._status import HalError, InternalError, NotFoundError, UnavailableError, error_for
from ._uri import DeviceUri

try:  # the backport tracks the newest API; the stdlib module is the fallback
    import importlib_metadata as _metadata
except ImportError:  # pragma: no cover
    import importlib.metadata as _metadata  # type: ignore[no-redef]  # the same API

__all__ = ["PluginRecord", "DriverRecord", "Registry", "registry", "create_device"]

ENTRY_POINT_GROUP = "hal_core.plugins"
DEFAULT_DEVICE_URI = "local-task://"


#: The hooks plugins may implement (``hal_core.hookspecs``).
HOOK_NAMES = ("hal_drivers", "hal_cts_backends", "hal_profilers")

#: Exceptions a plugin's code may raise that the registry records instead of propagating:
#: a plugin calling ``sys.exit()`` (or raising KeyboardInterrupt) while it imports or runs
#: a hook must not end the program that merely looked up a driver.
_PLUGIN_FAILURES = (Exception, SystemExit, KeyboardInterrupt)


@attrs.define
class PluginRecord:
    """What the registry knows of one plugin.

    ``loaded`` is False (with ``error`` saying why) when the plugin could not be imported
    or registered. A loaded plugin may still have ``hook_errors``: what was rejected from
    its hooks, keyed by hook name (``"registration"`` for hook names no specification
    knows, ``"driver NAME"`` for a driver whose factory failed its contract); everything
    else it provides works.
    """

    name: str
    distribution: str | None = None
    version: str | None = None
    location: str | None = None
    loaded: bool = False
    error: str | None = None
    disabled: bool = False
    hook_errors: dict[str, list[str]] = attrs.field(factory=dict)

    @property
    def errors(self) -> list[str]:
        """Every problem recorded on this plugin, one line each."""
        out = [self.error] if self.error and not self.disabled else []
        for hook, messages in self.hook_errors.items():
            out.extend(f"{hook}: {m}" for m in messages)
        return out

    @property
    def failed(self) -> bool:
        """True when something of this plugin failed (disabled plugins have not)."""
        return bool(self.errors)


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
        self._loading = False
        self._plugins: list[PluginRecord] = []
        self._drivers: dict[str, DriverRecord] | None = None
        # name -> (the factory that made it, the driver): a driver whose factory no longer
        # wins (a later plugin overrides it, or its plugin left) is made again.
        self._driver_objects: dict[str, tuple[Any, Driver]] = {}
        self._hook_cache: dict[str, list[tuple[str, Any]]] = {}

    # -- loading -----------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            # A plugin that uses the registry while it is imported re-enters here on the
            # loading thread (the lock is reentrant): it sees the plugins loaded so far.
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                if self._autoload:
                    self._load_entry_points()
            finally:
                self._loading = False
                self._loaded = True
                self._invalidate()  # drop what a re-entering plugin computed early

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
            except _PLUGIN_FAILURES as exc:
                record.error = f"import failed: {_describe(exc)}"
                continue
            self._register(record, module)

    def register_plugin(self, plugin: Any, name: str | None = None) -> PluginRecord:
        """Register a plugin object or module by hand (after any entry points). Its
        drivers override earlier ones of the same name."""
        self._ensure_loaded()
        with self._lock:
            name = name or getattr(plugin, "__name__", None) or repr(plugin)
            record = PluginRecord(name=name, location=getattr(plugin, "__name__", None))
            self._plugins.append(record)
            self._register(record, plugin)
            self._invalidate()
            return record

    def _register(self, record: PluginRecord, plugin: Any) -> None:
        """Register ``plugin`` under ``record.name``, recording failure on ``record``.
        The caller holds ``self._lock``."""
        try:
            self._pm.register(plugin, name=record.name)
        except _PLUGIN_FAILURES as exc:
            record.error = f"registration failed: {_describe(exc)}"
            # pluggy keeps the hooks it added before the failing one: take them back so a
            # half-registered plugin contributes nothing.
            if self._pm.get_plugin(record.name) is plugin:
                self._pm.unregister(plugin, name=record.name)
            return
        record.loaded = True
        problems = unknown_hooks(self._pm, record.name, HOOK_NAMES)
        problems += unmarked_hooks(self._pm, plugin, HOOK_NAMES)
        if problems:
            record.hook_errors["registration"] = problems

    def unregister_plugin(self, name: str) -> None:
        with self._lock:
            if self._pm.get_plugin(name) is not None:
                self._pm.unregister(name=name)
            self._plugins = [p for p in self._plugins if p.name != name]
            self._invalidate()

    def _invalidate(self) -> None:
        """Forget hook results after the set of plugins changed (hooks run again when
        next needed). The caller holds ``self._lock``."""
        self._hook_cache.clear()
        self._drivers = None
        for record in self._plugins:
            for key in [k for k in record.hook_errors if k != "registration"]:
                del record.hook_errors[key]

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        self._ensure_loaded()
        return self._pm

    def plugins(self) -> list[PluginRecord]:
        """Every plugin, with the errors of all its hooks recorded (each hook is run
        once, so the records are complete)."""
        self._ensure_loaded()
        for hook in HOOK_NAMES:
            self.hook_results(hook)
        return list(self._plugins)

    def failed_plugins(self) -> list[PluginRecord]:
        """Plugins that failed to load or had something rejected (disabled ones excluded)."""
        return [p for p in self.plugins() if p.failed]

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
        """(plugin name, item) for every valid item of a list-returning hook, in
        registration order. Each implementation runs once (until the set of plugins
        changes); one that raises, returns something that is not a list, or returns
        items that fail the hook's check (``_plugin_checks``) has the problem recorded on
        its plugin's ``hook_errors``, and everything valid is still returned, so one
        broken plugin never hides the others."""
        self._ensure_loaded()
        with self._lock:
            cached = self._hook_cache.get(hook_name)
            if cached is not None:
                return list(cached)
            out: list[tuple[str, Any]] = []
            errors: dict[str, list[str]] = {}
            # get_hookimpls() lists implementations in registration order.
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                try:
                    result = impl.function()
                except _PLUGIN_FAILURES as exc:
                    errors.setdefault(impl.plugin_name, []).append(f"raised {_describe(exc)}")
                    continue
                items, problems = check_hook_result(hook_name, result)
                if problems:
                    errors.setdefault(impl.plugin_name, []).extend(problems)
                out.extend((impl.plugin_name, item) for item in items)
            for record in self._plugins:
                if record.name in errors:
                    record.hook_errors[hook_name] = errors[record.name]
                else:
                    record.hook_errors.pop(hook_name, None)
            self._hook_cache[hook_name] = out
            return list(out)

    def driver_names(self) -> list[str]:
        return sorted(self._driver_records())

    def driver_records(self) -> list[DriverRecord]:
        return [self._driver_records()[n] for n in self.driver_names()]

    def driver(self, name: str) -> Driver:
        """The driver object for ``name`` (created once). NOT_FOUND lists the known
        drivers, suggests near-miss names and counts the plugins that failed to load;
        UNAVAILABLE when the driver cannot start here; INTERNAL when its factory returns
        something that is not a driver backend (recorded on its plugin too)."""
        with self._lock:
            records = self._driver_records()
            record = records.get(name)
            existing = self._driver_objects.get(name)
            if existing is not None and record is not None and existing[0] is record.factory:
                return existing[1]
            if record is None:
                raise NotFoundError(self._not_found_message(name, sorted(records)))
            try:
                backend = record.factory.create()
            except HalError:
                raise
            except _PLUGIN_FAILURES as exc:
                raise UnavailableError(
                    f"driver {name!r} failed to start: {_describe(exc)}"
                ) from exc
            problem = check_driver_backend(name, backend)
            if problem is not None:
                message = f"driver {name!r} of plugin {record.plugin!r} is broken: {problem}"
                plugin = self._record(record.plugin)
                if plugin is not None:
                    plugin.hook_errors[f"driver {name}"] = [problem]
                raise InternalError(message)
            driver = Driver(record.name, record.full_name, backend, _token=INTERNAL)
            # Devices made by a driver this replaces keep its backend alive.
            self._driver_objects[name] = (record.factory, driver)
            return driver

    def _not_found_message(self, name: str, known: list[str]) -> str:
        """The caller holds ``self._lock``."""
        message = (
            f"no HAL driver named {name!r} is registered{did_you_mean(name, known)}; "
            f"known: {', '.join(known) or 'none'}"
        )
        failed = [p.name for p in self.failed_plugins()]
        if failed:
            count = f"{len(failed)} plugin{'s' if len(failed) != 1 else ''}"
            message += (
                f"; {count} failed to load or had hook results rejected "
                f"({', '.join(failed)}): run 'hal info' for the errors"
            )
        return message + (
            "; to add a driver, install the distribution that provides it, e.g. from a "
            "checkout 'pip install ./plugins/amdgpu' (docs/getting-started.md)"
        )

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
            for _factory, driver in self._driver_objects.values():
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
