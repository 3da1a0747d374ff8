"""Entry point of the ``hal-amdgpu`` plugin: the ``amdgpu`` driver."""

from __future__ import annotations

from hal_core.backend import DriverFactory, hookimpl


def _create():
    from .driver import AmdgpuDriverBackend

    return AmdgpuDriverBackend()


@hookimpl
def hal_drivers() -> list[DriverFactory]:
    return [DriverFactory(name="amdgpu", full_name="AMD GPU Driver (HSA/ROCR)", create=_create)]


@hookimpl
def hal_cts_backends():
    # The CTS runs the amdgpu driver over the software HSA agent (hsa=soft) so it runs on
    # every machine; on ROCr hosts select ``--hal-device=amdgpu://0`` explicitly.
    from hal_core.cts.config import CtsBackend

    return [
        CtsBackend(
            driver="amdgpu",
            uri="amdgpu://?hsa=soft",
            tags={"async_queue", "file_io", "host_calls", "mapping", "indirect"},
        )
    ]
