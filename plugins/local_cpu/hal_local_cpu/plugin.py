"""Entry point of the ``hal-local-cpu`` plugin: its drivers and CTS configurations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hal_core.backend import DriverFactory, hookimpl

if TYPE_CHECKING:
    from hal_core.cts.config import CtsBackend

from .driver import LocalDriverBackend


@hookimpl
def hal_drivers() -> list[DriverFactory]:
    return [
        DriverFactory(
            name="local-task",
            full_name="Local CPU (task worker threads)",
            create=lambda: LocalDriverBackend("local-task", synchronous=False),
        ),
        DriverFactory(
            name="local-sync",
            full_name="Local CPU (synchronous, inline)",
            create=lambda: LocalDriverBackend("local-sync", synchronous=True),
        ),
    ]


@hookimpl
def hal_cts_backends() -> list[CtsBackend]:
    from hal_core.cts.config import CtsBackend

    from .kernels import cts_executable_formats

    tags = {"async_queue", "file_io", "indirect", "dispatch", "allocation_pools"}
    formats = cts_executable_formats()
    return [
        CtsBackend(driver="local-task", tags=tags, executable_formats=formats),
        CtsBackend(driver="local-sync", tags=tags, executable_formats=formats),
    ]
