"""Entry point of the ``hal-amdgpu`` plugin: the ``amdgpu`` driver."""

from __future__ import annotations

from hal_core.backend import DriverFactory, hookimpl


def _create():
    from .driver import AmdgpuDriverBackend

    return AmdgpuDriverBackend()


@hookimpl
def hal_drivers() -> list[DriverFactory]:
    return [DriverFactory(name="amdgpu", full_name="AMD GPU Driver (HSA/ROCR)", create=_create)]
