"""Third-party profilers: named sink factories provided by plugins.

A distribution provides profilers through the ``hal_profilers`` hook (see
``hal_core.hookspecs``), returning ``ProfilerFactory`` objects. ``available_profilers()``
lists them (``hal info`` shows this list) and ``create_profiler(name, options)`` builds the
sink plus the data families the profiler needs, ready for ``ProfilingOptions``. The hook is
called when these functions are called, never on a hot path.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs

from .._status import InvalidArgumentError, NotFoundError, UnavailableError
from ._options import ProfilingDataFamily

__all__ = [
    "ProfilerFactory",
    "ProfilerInfo",
    "available_profilers",
    "create_profiler",
    "describe_profilers",
]


@attrs.frozen
class ProfilerFactory:
    """What a plugin's ``hal_profilers`` hook returns.

    ``create(options)`` gets string options (``hal profile --profiler-option k=v``) and
    returns a ``ProfileSink``; it may raise UnavailableError naming what is missing.
    ``data_families`` are the families the profiler needs; they are added to the session.
    """

    name: str
    create: Callable[[Mapping[str, str]], Any]
    data_families: ProfilingDataFamily = attrs.field(
        default=ProfilingDataFamily.NONE, converter=ProfilingDataFamily
    )
    description: str = ""

    def __attrs_post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise InvalidArgumentError(f"a profiler needs a non-empty name, got {self.name!r}")
        if not callable(self.create):
            raise InvalidArgumentError(f"profiler {self.name!r}: create must be callable")


@attrs.frozen
class ProfilerInfo:
    name: str
    plugin: str
    data_families: ProfilingDataFamily
    description: str
    factory: ProfilerFactory


def available_profilers() -> list[ProfilerInfo]:
    """Every profiler registered by a plugin, sorted by name (later plugins override a
    name registered earlier). Plugins whose hook fails are skipped and recorded."""
    from .._registry import iter_hook_results

    found: dict[str, ProfilerInfo] = {}
    for plugin, factory in iter_hook_results("hal_profilers"):
        if not isinstance(factory, ProfilerFactory):
            continue
        found[factory.name] = ProfilerInfo(
            factory.name, plugin, factory.data_families, factory.description, factory
        )
    return [found[n] for n in sorted(found)]


def create_profiler(
    name: str, options: Mapping[str, str] | None = None
) -> tuple[Any, ProfilingDataFamily]:
    """(sink, data families) of the named profiler. NOT_FOUND lists the known names."""
    for info in available_profilers():
        if info.name == name:
            try:
                sink = info.factory.create(dict(options or {}))
            except (InvalidArgumentError, UnavailableError, NotFoundError):
                raise
            except Exception as exc:
                raise UnavailableError(
                    f"profiler {name!r} (plugin {info.plugin}) failed to start: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            return sink, info.data_families
    known = ", ".join(i.name for i in available_profilers()) or "none installed"
    raise NotFoundError(
        f"no profiler named {name!r} (known: {known}); install the distribution that "
        "provides it (it registers through the hal_profilers hook)"
    )


def describe_profilers() -> list[dict[str, str]]:
    """Rows for ``hal info``: name, plugin, needed data families and description."""
    return [
        {
            "name": p.name,
            "plugin": p.plugin,
            "data_families": ",".join(
                m.name.lower().replace("_", "-")
                for m in ProfilingDataFamily
                if m and m.name and p.data_families & m
            ),
            "description": p.description,
        }
        for p in available_profilers()
    ]
