"""Entry point of ``hal-example-driver``: its driver and its CTS configuration.

Hooks run once, when hal-core's registry loads plugins; nothing here is on a hot path.
"""

from __future__ import annotations

from hal_core.backend import DriverFactory, hookimpl


@hookimpl
def hal_drivers() -> list[DriverFactory]:
    from .driver import ExampleDriverBackend

    return [DriverFactory("example", "Example driver (host memory)", create=ExampleDriverBackend)]


@hookimpl
def hal_cts_backends() -> list:
    from .cts_config import cts_backend

    return [cts_backend()]
