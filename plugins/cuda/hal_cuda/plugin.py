"""Entry point of the ``hal-cuda`` plugin: the ``cuda`` driver and its CTS configuration.

Hooks run once, when hal-core's registry loads plugins; they import nothing from CUDA, so
the plugin loads on machines without a GPU (the driver then reports UNAVAILABLE).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hal_core.backend import DriverBackend, DriverFactory, hookimpl

if TYPE_CHECKING:
    from hal_core.cts.config import CtsBackend


def create_driver() -> DriverBackend:
    """The factory's ``create``: loads the CUDA driver API (UNAVAILABLE without it)."""
    from .driver import CudaDriverBackend

    return CudaDriverBackend()


@hookimpl
def hal_drivers() -> list[DriverFactory]:
    return [DriverFactory("cuda", "NVIDIA GPU Driver (CUDA driver API)", create=create_driver)]


@hookimpl
def hal_cts_backends() -> list[CtsBackend]:
    from .cts_config import cts_backend

    return [cts_backend()]
