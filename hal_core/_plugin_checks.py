"""Validation of what plugins hand the registry: hook results, item by item, and the
driver backends their factories create.

Each check returns what it accepts plus one message per rejected part, so the registry can
record the messages on the plugin that produced them and keep everything else. Nothing here
runs on a hot path: hooks are called once per registry load, factories once per driver.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterable

import pluggy

__all__ = [
    "check_hook_result",
    "check_driver_backend",
    "unknown_hooks",
    "unmarked_hooks",
    "close_matches",
    "describe_value",
    "did_you_mean",
]

#: The methods every ``DriverBackend`` must have (``hal_core.backend.DriverBackend``).
DRIVER_BACKEND_METHODS = ("query_available_devices", "create_device_by_id", "create_device_by_path")

_SCHEME_FORBIDDEN = frozenset(":/?&=")


def describe_value(value: Any, limit: int = 60) -> str:
    """``type`` and a shortened repr, for messages about a value a plugin returned."""
    try:
        text = repr(value)
    except Exception as exc:  # a plugin's broken __repr__ must not hide the real problem
        text = f"<unrepresentable: {type(exc).__name__}>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def close_matches(name: str, candidates: Iterable[str]) -> list[str]:
    """Near-miss spellings of ``name`` among ``candidates`` (best first)."""
    return difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for a near miss, else the empty string."""
    matches = close_matches(name, candidates)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"


def _check_driver_factory(item: Any) -> str | None:
    from .backend import DriverFactory

    if not isinstance(item, DriverFactory):
        return f"{describe_value(item)} is not a hal_core.backend.DriverFactory"
    name = item.name
    if not isinstance(name, str) or not name.strip():
        return f"DriverFactory name must be a non-empty str, got {describe_value(name)}"
    if any(c.isspace() or c in _SCHEME_FORBIDDEN for c in name):
        return (
            f"DriverFactory name {name!r} cannot be a URI scheme (no whitespace or any of ':/?&=')"
        )
    if not isinstance(item.full_name, str):
        return f"driver {name!r}: full_name must be a str, got {describe_value(item.full_name)}"
    if not callable(item.create):
        return f"driver {name!r}: create must be callable, got {describe_value(item.create)}"
    return None


def _check_cts_backend(item: Any) -> str | None:
    from ._status import HalError
    from ._uri import DeviceUri
    from .cts.config import CtsBackend

    if not isinstance(item, CtsBackend):
        return f"{describe_value(item)} is not a hal_core.cts.config.CtsBackend"
    if not isinstance(item.driver, str) or not item.driver.strip():
        return f"CtsBackend driver must be a non-empty str, got {describe_value(item.driver)}"
    if not isinstance(item.uri, str):
        return f"CTS configuration of {item.driver!r}: uri must be a str"
    try:
        scheme = DeviceUri.parse(item.device_uri).scheme
    except HalError as exc:
        return f"CTS configuration of {item.driver!r}: {exc.message}"
    if scheme != item.driver:
        return f"CTS configuration of {item.driver!r}: its uri {item.uri!r} names driver {scheme!r}"
    formats = item.executable_formats
    if not isinstance(formats, dict):
        return f"CTS configuration of {item.driver!r}: executable_formats must be a dict"
    for fmt, loader in formats.items():
        if not isinstance(fmt, str) or not callable(loader):
            return (
                f"CTS configuration of {item.driver!r}: executable_formats maps "
                f"{fmt!r} to {describe_value(loader)}; expected str -> callable(kernel_name)"
            )
    return None


def _check_profiler_factory(item: Any) -> str | None:
    from .profiling import ProfilerFactory

    if not isinstance(item, ProfilerFactory):
        return f"{describe_value(item)} is not a hal_core.profiling.ProfilerFactory"
    return None


_ITEM_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "hal_drivers": _check_driver_factory,
    "hal_cts_backends": _check_cts_backend,
    "hal_profilers": _check_profiler_factory,
}


def check_hook_result(hook_name: str, result: Any) -> tuple[list[Any], list[str]]:
    """Split one implementation's result of a list-returning hook into the items that pass
    that hook's check and one message per rejected item (or one for the whole result when
    it is not a list). ``None`` means "nothing" as pluggy allows."""
    if result is None:
        return [], []
    if not isinstance(result, (list, tuple)):
        return [], [f"returned {describe_value(result)}; expected a list"]
    check = _ITEM_CHECKS.get(hook_name)
    accepted: list[Any] = []
    errors: list[str] = []
    for index, item in enumerate(result):
        problem = check(item) if check is not None else None
        if problem is None:
            accepted.append(item)
        else:
            errors.append(f"item {index} rejected: {problem}")
    return accepted, errors


def check_driver_backend(driver: str, backend: Any) -> str | None:
    """Why ``backend`` (what a factory's ``create()`` returned) cannot serve as a driver
    backend, or None when it has every method a driver needs."""
    missing = [m for m in DRIVER_BACKEND_METHODS if not callable(getattr(backend, m, None))]
    if not missing:
        return None
    return (
        f"its factory's create() returned {describe_value(backend)}, which lacks "
        f"{', '.join(missing)} (a hal_core.backend.DriverBackend needs "
        f"{', '.join(DRIVER_BACKEND_METHODS)})"
    )


def unknown_hooks(pm: pluggy.PluginManager, plugin_name: str, known: Iterable[str]) -> list[str]:
    """Messages for the hook implementations of ``plugin_name`` that match no hook
    specification, as pluggy's ``check_pending`` reports them (optional hooks excepted),
    each with a near-miss suggestion."""
    known = list(known)
    plugin = pm.get_plugin(plugin_name)
    if plugin is None:
        return []
    messages: list[str] = []
    for caller in pm.get_hookcallers(plugin) or ():
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin_name == plugin_name and not impl.optionalhook:
                messages.append(
                    f"unknown hook {caller.name!r}{did_you_mean(caller.name, known)} "
                    f"(hooks: {', '.join(known)})"
                )
    return messages


def unmarked_hooks(pm: pluggy.PluginManager, plugin: Any, known: Iterable[str]) -> list[str]:
    """Messages for functions of ``plugin`` named like a hook but not marked with
    ``hal_core.hookimpl`` (pluggy ignores them silently, so the plugin would provide
    nothing without saying why)."""
    messages = []
    for name in known:
        try:
            attr = getattr(plugin, name, None)
        except Exception:  # a plugin's failing __getattr__: nothing to report here
            continue
        if callable(attr) and pm.parse_hookimpl_opts(plugin, name) is None:
            messages.append(f"{name} is not marked with @hal_core.hookimpl, so it is ignored")
    return messages
