"""Plugin hook specifications (pluggy project name ``hal_core``).

A plugin is a module named by an entry point in group ``hal_core.plugins`` whose functions
are marked with ``hal_core.hookimpl``. Hooks are called once, when the registry loads, never
on hot paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .backend import DriverFactory
    from .cts.config import CtsBackend
    from .profiling import ProfilerFactory

hookspec = pluggy.HookspecMarker("hal_core")
hookimpl = pluggy.HookimplMarker("hal_core")


@hookspec
def hal_drivers() -> "list[DriverFactory]":
    """Return the drivers this plugin provides. A later registration of a driver name
    overrides an earlier one."""


@hookspec
def hal_cts_backends() -> "list[CtsBackend]":
    """Return CTS configurations (tags, executable formats, unsupported and
    expected-failure lists) for drivers this plugin provides."""


@hookspec
def hal_profilers() -> "list[ProfilerFactory]":
    """Return third-party profilers (``hal_core.profiling.ProfilerFactory``): a name, a
    factory producing a profile sink from string options, and the data families it
    needs. Listed by ``hal info``; created by ``hal profile --profiler NAME``."""
