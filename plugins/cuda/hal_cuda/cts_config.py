"""The cuda driver's CTS configuration: what it advertises and what it does not do.

Tags: ``async_queue``, ``file_io``, ``indirect``, ``dispatch`` and ``allocation_pools``;
the CTS kernels are the committed PTX (``kernels/cts_kernels.ptx``). ``unsupported``
names, by glob on ``<suite>.<test>``, the tests of what a CUDA kernel cannot do or what
this driver has not built yet, each with its reason.
"""

from __future__ import annotations

from hal_core.cts.config import CtsBackend

_NO_STATUS = (
    "a CUDA kernel cannot return a status: a kernel that fails traps, which CUDA reports "
    "as a sticky error (CUDA_ERROR_LAUNCH_FAILED) that leaves the context unusable for "
    "the rest of the process"
)

UNSUPPORTED = {
    "dispatch.test_kernel_error_status_fails_signals": _NO_STATUS,
    "queue_dispatch.test_queue_dispatch_kernel_failure": _NO_STATUS,
    "dispatch.test_kernel_out_of_range_status": (
        "the HAL kernel ABI on CUDA passes bindings as bare 64-bit pointers with no "
        "lengths, so a kernel cannot detect (or report) a too-small output binding"
    ),
}


def _cts_ptx(library: str) -> bytes:
    """The shipped PTX module ``library`` (NOT_FOUND for any other: the CTS skips)."""
    from .kernels import load_ptx

    return load_ptx(library)


def cts_backend() -> CtsBackend:
    return CtsBackend(
        driver="cuda",
        uri="cuda://0",
        tags={"async_queue", "file_io", "indirect", "dispatch", "allocation_pools"},
        executable_formats={"ptx": _cts_ptx},
        unsupported=UNSUPPORTED,
    )
