"""The example driver's CTS configuration: what it advertises and what it does not do.

Tags: ``async_queue`` (ops wait on semaphores signalled later, from other threads),
``file_io`` (``queue_read``/``queue_write``) and ``indirect`` (command buffers with
binding-table slots). Not ``dispatch``: the driver prepares no executables, so it lists
no executable formats either.

``unsupported`` names, by glob on ``<suite>.<test>`` (the suite is the CTS module without
``test_``), the tests of optional capabilities the driver does not have; each is skipped
with its reason.
"""

from __future__ import annotations

from hal_core.cts.config import CtsBackend

_NO_POOLS = "no allocation pools (no query_queue_pool_backend): queue_alloca uses the driver's heap"
_NO_PROFILING = "no profiling taps of its own: only hal_core's generic QUEUE_EVENTS"

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
}


def cts_backend() -> CtsBackend:
    return CtsBackend(
        driver="example", tags={"async_queue", "file_io", "indirect"}, unsupported=UNSUPPORTED
    )
