"""local_cpu profiling: an op's host execution is recorded before its signals publish, so
a caller that waits on the signal and then ends the session always finds the event (it
was recorded after completion, and a fast waiter could end the session first)."""

import hal_local_cpu.device as device_module
import pytest

import hal_core
from hal_core.profiling import ProfilingDataFamily as F
from hal_core.profiling import ProfilingOptions, StatisticsSink

TIMEOUT = 10


@pytest.mark.parametrize("uri", ["local-task://", "local-sync://"])
def test_host_execution_recorded_before_signals_publish(uri, monkeypatch):
    device = hal_core.create_device(uri)
    try:
        stats = StatisticsSink()
        device.profiling_begin(ProfilingOptions(F.HOST_EXECUTION_EVENTS, sinks=[stats]))
        session = device.backend.profiler
        recorded: list[int] = []
        record = session.record_host_execution

        def recording(op_type, queue, submission_id, *rest):
            recorded.append(submission_id)
            record(op_type, queue, submission_id, *rest)

        monkeypatch.setattr(session, "record_host_execution", recording)
        in_order: list[bool] = []
        complete = device_module.complete_op

        def completing(op, queue):
            in_order.append(op.epoch in recorded)
            complete(op, queue)

        monkeypatch.setattr(device_module, "complete_op", completing)
        buf = device.allocator.allocate_buffer(None, 256)
        sem = device.create_semaphore(0)
        for v in range(1, 9):
            device.queue_fill(1, [], [(sem, v)], buf, 0, 256, bytes([v]))
        sem.wait(8, TIMEOUT)
        device.profiling_end()
        assert len(in_order) == 8 and all(in_order)
        assert len(stats.capture.records("host-execution-events")) == 8
    finally:
        device.close()
