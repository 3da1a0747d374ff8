"""The example driver's CTS configuration: what it advertises and what it does not do.

Tags: ``async_queue`` (ops wait on semaphores signalled later, from other threads),
``file_io`` (``queue_read``/``queue_write``) and ``indirect`` (command buffers with
binding-table slots). Not ``dispatch``: the driver prepares no executables, so it lists
no executable formats either. Not ``allocation_pools``: it has no
``query_queue_pool_backend``, so ``queue_alloca`` takes the default allocation only (its
heap) and the explicit-pool tests are skipped.

``unsupported`` names, by glob on ``<suite>.<test>`` (the suite is the CTS module without
``test_``), the tests of optional capabilities the driver does not have; each is skipped
with its reason.
"""

from __future__ import annotations

from hal_core.cts.config import CtsBackend

_NO_PROFILING = "no profiling taps of its own: only hal_core's generic QUEUE_EVENTS"

UNSUPPORTED = {
    "profiling.test_host_execution_spans_are_ordered": _NO_PROFILING,
    "profiling.test_memory_events_for_queue_alloca": _NO_PROFILING,
}


def cts_backend() -> CtsBackend:
    return CtsBackend(
        driver="example", tags={"async_queue", "file_io", "indirect"}, unsupported=UNSUPPORTED
    )
