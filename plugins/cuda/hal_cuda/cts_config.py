"""The cuda driver's CTS configuration: what it advertises and what it does not do.

Tags: ``async_queue``, ``file_io``, ``indirect`` and ``dispatch``; the CTS kernels are the
committed PTX (``kernels/cts_kernels.ptx``). ``unsupported`` names, by glob on
``<suite>.<test>``, the tests of what a CUDA kernel cannot do or what this driver has not
built yet, each with its reason.
"""

from __future__ import annotations

from hal_core.cts.config import CtsBackend

_NO_POOLS = (
    "no allocation pools yet (no query_queue_pool_backend): queue_alloca allocates with "
    "cuMemAlloc / cuMemHostAlloc when its waits are reached"
)
_NO_PROFILING = "no profiling taps of its own yet: only hal_core's generic QUEUE_EVENTS"
_NO_STATUS = (
    "a CUDA kernel cannot return a status: a kernel that fails traps, which CUDA reports "
    "as a sticky error (CUDA_ERROR_LAUNCH_FAILED) that leaves the context unusable for "
    "the rest of the process"
)

UNSUPPORTED = {
    "queue_alloca.test_query_queue_pool_backend_needs_a_group": _NO_POOLS,
    "queue_alloca.test_passthrough_pool_alloca": _NO_POOLS,
    "queue_alloca.test_tlsf_*": _NO_POOLS,
    "queue_alloca.test_fixed_block_*": _NO_POOLS,
    "queue_alloca.test_pending_dealloca_leaves_next_alloca_usable": _NO_POOLS,
    "queue_alloca.test_exhaustion_completes_after_dealloca_releases": _NO_POOLS,
    "queue_alloca.test_bad_pool_arguments": _NO_POOLS,
    "queue_alloca.test_indeterminate_lifetime_released_when_dropped": _NO_POOLS,
    "queue_alloca.test_stress_many_chains_through_a_small_pool": _NO_POOLS,
    "transient_buffer.test_*_parked_transient*": _NO_POOLS,
    "profiling.test_host_execution_spans_are_ordered": _NO_PROFILING,
    "profiling.test_memory_events_for_queue_alloca": _NO_PROFILING,
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
        tags={"async_queue", "file_io", "indirect", "dispatch"},
        executable_formats={"ptx": _cts_ptx},
        unsupported=UNSUPPORTED,
    )
