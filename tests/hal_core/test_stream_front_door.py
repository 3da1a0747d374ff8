"""A stream barrier builds its op with the device's queue front door and hands it to the
device's current submit, so it behaves as ``Device.queue_barrier`` does: profiling taps
installed after the stream was made see it, a closed device refuses it at the call, and
the pending waits a refused op would have carried stay pending. The ``stream.*`` benchmark
entries run and report their units."""

import json

import pytest

import hal_core as hal
from hal_core.cli.main import main
from hal_core.profiling import ProfilingDataFamily as F
from hal_core.profiling import ProfilingOptions, StatisticsSink

TIMEOUT = 20.0


@pytest.fixture(params=["local-task://", "local-sync://"])
def device(request):
    with hal.create_device(request.param) as d:
        yield d


def test_profiling_taps_begun_after_the_stream_see_its_barriers(device):
    s = device.create_stream()
    buf = device.allocator.allocate_buffer(None, 16)
    stats = StatisticsSink()
    with device.profiling_begin(ProfilingOptions(F.QUEUE_EVENTS, sinks=[stats])):
        s.barrier()
        s.fill(buf, b"\x01")
        s.barrier()
        s.barrier()
        s.synchronize(TIMEOUT)
    (q0,) = [q for q in stats.statistics().queues if q.queue_ordinal == 0]
    assert q0.op_counts == {"BARRIER": 3, "FILL": 1}
    s.barrier()  # taps removed: back to the plain submit
    s.synchronize(TIMEOUT)
    assert s.value == 5 and s.semaphore.query() == 5


def test_barrier_on_a_closed_device_is_refused_and_keeps_pending_waits():
    device = hal.create_device("local-task://")
    gate = device.create_semaphore()
    s = device.create_stream()
    s.barrier()
    s.synchronize(TIMEOUT)
    s.wait((gate, 1))
    device.close()
    with pytest.raises(hal.FailedPreconditionError, match="closed"):
        s.barrier()
    assert s.value == 1 and not s.done  # the wait on gate is still pending
    gate.signal(1)
    assert s.done


def test_barrier_carries_pending_waits_from_several_sources(device):
    a, b = device.create_semaphore(), device.create_semaphore()
    other = device.create_stream()
    other.wait((a, 1))
    other.barrier()
    s = device.create_stream()
    s.wait((b, 2))
    s.wait(other)
    s.wait((b, 1))  # already covered by the pending (b, 2)
    s.barrier()
    tp = s.record()
    assert tp.value == 1
    b.signal(2)
    with pytest.raises(hal.DeadlineExceededError):
        tp.wait(0.05)
    a.signal(1)
    tp.wait(TIMEOUT)
    assert s.done and other.done


def test_stream_bench_entries_run(capsys):
    assert main(["bench", "--json", "--repeats", "1", "stream.*"]) == 0
    data = json.loads(capsys.readouterr().out)
    values = {r["name"]: r for r in data["results"]}
    assert sorted(values) == [
        "stream.e2e",
        "stream.e2e.overhead",
        "stream.fill4",
        "stream.fill4.overhead",
        "stream.submit",
    ]
    assert all(r["unit"] == "us/edge" for r in data["results"])
    # Chain times are positive; an overhead is a difference of two medians (any sign).
    assert all(values[n]["value"] > 0 for n in ("stream.e2e", "stream.fill4", "stream.submit"))
