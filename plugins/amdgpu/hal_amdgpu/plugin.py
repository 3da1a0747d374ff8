"""Entry point of the ``hal-amdgpu`` plugin: the ``amdgpu`` driver."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hal_core.backend import DriverFactory, hookimpl

if TYPE_CHECKING:
    from hal_core.cts.config import CtsBackend

    from .driver import AmdgpuDriverBackend


def _create() -> AmdgpuDriverBackend:
    from .driver import AmdgpuDriverBackend

    return AmdgpuDriverBackend()


@hookimpl
def hal_drivers() -> list[DriverFactory]:
    return [DriverFactory(name="amdgpu", full_name="AMD GPU Driver (HSA/ROCR)", create=_create)]


def _cts_hsaco(library: str) -> bytes:
    """The shipped code object ``library`` for the soft agent's first GPU (the target the
    CTS device ``amdgpu://?hsa=soft`` runs on, honouring ``HAL_AMDGPU_SOFT_GPUS`` as the
    driver does). NOT_FOUND when no such library ships (the CTS then skips)."""
    from .kernels import code_object_path
    from .soft_hsa import SOFT_GPUS_ENV, SoftSystemConfig

    spec = os.environ.get(SOFT_GPUS_ENV) or ""
    config = SoftSystemConfig.from_isas(spec) if spec else SoftSystemConfig.default()
    isa = next(agent.isa for agent in config.agents if agent.is_gpu)
    return code_object_path(library, isa).read_bytes()


@hookimpl
def hal_cts_backends() -> list[CtsBackend]:
    # The CTS runs the amdgpu driver over the software HSA agent (hsa=soft) so it runs on
    # every machine; on ROCr hosts select ``--hal-device=amdgpu://0`` explicitly.
    from hal_core.cts.config import CtsBackend

    return [
        CtsBackend(
            driver="amdgpu",
            uri="amdgpu://?hsa=soft",
            tags={"async_queue", "file_io", "indirect", "dispatch", "allocation_pools"},
            executable_formats={"hsaco": _cts_hsaco},
            unsupported={
                "dispatch.test_kernel_error_status_fails_signals": (
                    "an AMDGPU kernel cannot return a status: a failing kernel traps (s_trap), "
                    "which the hardware reports as a fatal queue fault "
                    "(HSA_STATUS_ERROR_EXCEPTION) that invalidates the HSA queue, so neither "
                    "the kernel's code nor later work on that queue survives"
                ),
                "queue_dispatch.test_queue_dispatch_kernel_failure": (
                    "an AMDGPU kernel cannot return a status: a failing kernel traps (s_trap), "
                    "a fatal queue fault (HSA_STATUS_ERROR_EXCEPTION) invalidating the queue"
                ),
                "profiling.test_host_execution_spans_are_ordered": (
                    "queue fills run on the GPU as blit-kernel dispatches (profiled as dispatch "
                    "events); the amdgpu device executes nothing for them on the host, so there "
                    "is no host-execution span to report"
                ),
                "dispatch.test_kernel_out_of_range_status": (
                    "the AMDGPU kernarg ABI passes bindings as bare 64-bit pointers with no "
                    "lengths, so a kernel cannot detect (or report) a too-small output binding"
                ),
            },
        )
    ]
