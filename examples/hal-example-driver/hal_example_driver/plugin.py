"""Entry point of ``hal-example-driver``: its driver and its CTS configuration.

Hooks run once, when hal-core's registry loads plugins; nothing here is on a hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hal_core.backend import DriverBackend, DriverFactory, hookimpl

if TYPE_CHECKING:
    from hal_core.cts.config import CtsBackend


def create_driver() -> DriverBackend:
    """The factory's ``create``: imports the driver only when a device is wanted."""
    from .driver import ExampleDriverBackend

    return ExampleDriverBackend()


@hookimpl
def hal_drivers() -> list[DriverFactory]:
    return [DriverFactory("example", "Example driver (host memory)", create=create_driver)]


@hookimpl
def hal_cts_backends() -> list[CtsBackend]:
    from .cts_config import cts_backend

    return [cts_backend()]
