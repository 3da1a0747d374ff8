"""amdgpu hardware-counter samples through aqlprofile over the software HSA agent, with the
fake library compiled from ``tests/plugins/profilers/fake_aqlprofile.c`` (skipped without a
C compiler). The fake's packets are real PM4-IB packets the soft agent runs (its read
packet copies the clock into the set's result word, without which the fake reports an
error); it reports ``1000 + event id`` for every counter, so these are exactly the values
the samples must carry."""

import os
import shutil
import subprocess
import threading

import numpy as np
import pytest
from hal_amdgpu.aql_ring import WRITE_INDEX_WORD
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core
from hal_core import BufferRef, CommandBufferMode, MemoryAccess
from hal_core.profiling import CounterSet, ProfilingOptions, StatisticsSink
from hal_core.profiling import ProfilingDataFamily as F

URI = "amdgpu://?hsa=soft"
TIMEOUT = 10
FAKE_C = os.path.join(os.path.dirname(__file__), "..", "profilers", "fake_aqlprofile.c")
# SQ_WAVES = (block 6, event 4), SQ_BUSY_CYCLES = (6, 3)
FAKE_VALUES = {"SQ_WAVES": 1004, "SQ_BUSY_CYCLES": 1003}


@pytest.fixture(scope="module")
def fake_library(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the fake aqlprofile library")
    out = tmp_path_factory.mktemp("aqlprofile") / "libhsa-amd-aqlprofile64.so.1"
    subprocess.run([cc, "-shared", "-fPIC", "-O0", "-o", str(out), FAKE_C], check=True)
    return str(out)


@pytest.fixture
def device(fake_library, monkeypatch):
    monkeypatch.setenv("HAL_AMDGPU_LIBAQLPROFILE_PATH", fake_library)
    dev = hal_core.create_device(URI)
    yield dev
    dev.close()


class _Retired:
    """A retire listener installed before profiling begins: the profiling listener calls it
    after recording an epoch's dispatches, so waiting on it orders the test after them
    (semaphores are signalled before retire listeners run)."""

    def __init__(self, device):
        qset = device.backend._host_queue_set or device.backend._create_host_queues()
        self.qset = qset
        self.previous = qset.retire_listener
        self.completed: dict[int, int] = {}
        self.cond = threading.Condition()
        qset.retire_listener = self

    def __call__(self, queue_index, completed):
        with self.cond:
            self.completed[queue_index] = completed
            self.cond.notify_all()
        if self.previous is not None:
            self.previous(queue_index, completed)

    def wait_all(self):
        targets = {q.index: q.published_epoch for q in self.qset.queues}
        with self.cond:
            assert self.cond.wait_for(
                lambda: all(self.completed.get(i, 0) >= e for i, e in targets.items() if e), TIMEOUT
            )


def _counter_options(*sets, families=F.COUNTER_SAMPLES | F.DISPATCH_EVENTS):
    return ProfilingOptions(families, sinks=[StatisticsSink()], counter_sets=list(sets))


def _cb(device, bufs):
    cb = device.create_command_buffer(CommandBufferMode.DEFAULT)
    cb.begin()
    cb.fill_buffer(bufs[0], b"\x11")
    cb.fill_buffer(bufs[1], b"\x22")
    cb.execution_barrier()
    cb.copy_buffer(bufs[0], bufs[2])
    cb.end()
    return cb


def _run_profiled(device, options, cb, fill_buf):
    retired = _Retired(device)
    device.profiling_begin(options)
    sem = device.create_semaphore(0)
    for v in (1, 2):
        device.queue_execute(1, [], [(sem, v)], cb)
    # a single (non command-buffer) dispatch: a blit fill is counted too
    device.queue_fill(1, [(sem, 2)], [(sem, 3)], fill_buf, 0, 256, b"\x33")
    sem.wait(3, TIMEOUT)
    retired.wait_all()
    device.profiling_end()


def test_command_buffer_yields_one_sample_per_dispatch_with_the_fake_values(device):
    bufs = [device.allocator.allocate_buffer(None, 256) for _ in range(4)]
    cb = _cb(device, bufs)
    stats = StatisticsSink()
    sets = [CounterSet("waves", ("SQ_WAVES",)), CounterSet("busy", ("SQ_BUSY_CYCLES", "SQ_WAVES"))]
    _run_profiled(
        device,
        ProfilingOptions(F.COUNTER_SAMPLES | F.DISPATCH_EVENTS, sinks=[stats], counter_sets=sets),
        cb,
        bufs[3],
    )
    cap = stats.capture
    d = cap.records("dispatch-events")
    assert len(d) == 7  # 3 per replay, twice, plus the fill
    set_rows = cap.records("counter-sets")
    assert [(int(r["counter_set_id"]), int(r["counter_count"])) for r in set_rows] == [
        (1, 1),
        (2, 2),
    ]
    counters = cap.records("counters")
    assert [
        (int(r["counter_set_id"]), int(r["counter_index"]), int(r["block"]), int(r["event"]))
        for r in counters
    ] == [(1, 0, 6, 4), (2, 0, 6, 3), (2, 1, 6, 4)]
    samples = cap.counter_samples
    # one sample per counter set per dispatch, each linked to its dispatch event
    assert len(samples) == 2 * len(d)
    by_event = {int(r["event_id"]): r for r in d}
    assert {int(r["dispatch_event_id"]) for r, _ in samples} == set(by_event)
    for rec, values in samples:
        ev = by_event[int(rec["dispatch_event_id"])]
        assert int(rec["scope"]) == 0  # DISPATCH
        assert int(rec["queue_ordinal"]) == int(ev["queue_ordinal"])
        assert int(rec["start_tick"]) == int(ev["start_tick"]) > 0
        assert int(rec["end_tick"]) == int(ev["end_tick"]) >= int(ev["start_tick"])
        assert int(rec["command_index"]) == int(ev["command_index"])
        assert int(rec["command_buffer_id"]) == int(ev["command_buffer_id"])
        expect = (
            [FAKE_VALUES["SQ_WAVES"]]
            if int(rec["counter_set_id"]) == 1
            else [FAKE_VALUES["SQ_BUSY_CYCLES"], FAKE_VALUES["SQ_WAVES"]]
        )
        assert [int(v) for v in values] == expect
    # the work itself ran correctly around the counter packets
    assert _bytes(device, bufs[2]) == b"\x11" * 256
    assert _bytes(device, bufs[3]) == b"\x33" * 256


def _bytes(device, buf):
    """Read back through a queue_write into a memory file (works on any memory type)."""
    out = bytearray(256)
    file = device.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    sem = device.create_semaphore(0)
    device.queue_write(1, [], [(sem, 1)], buf, 0, file, 0, 256)
    sem.wait(1, TIMEOUT)
    file.close()
    return bytes(out)


def test_unknown_counter_fails_begin_and_nothing_starts(device):
    qset = device.backend._host_queue_set or device.backend._create_host_queues()
    with pytest.raises(hal_core.NotFoundError, match="counter 'NO_SUCH'.*known counters"):
        device.profiling_begin(_counter_options(CounterSet("s", ("SQ_WAVES", "NO_SUCH"))))
    assert "submit" not in vars(qset) and all(q.profiler is None for q in qset.queues)
    assert device.backend.hsa.lib.queue_for(qset.queues[0]._queue).profiling_enabled is False
    # later work and a later session still run
    stats = StatisticsSink()
    retired = _Retired(device)
    device.profiling_begin(
        ProfilingOptions(
            F.COUNTER_SAMPLES, sinks=[stats], counter_sets=[CounterSet("s", ("SQ_WAVES",))]
        )
    )
    buf = device.allocator.allocate_buffer(None, 256)
    sem = device.create_semaphore(0)
    device.queue_fill(1, [], [(sem, 1)], buf, 0, 256, b"\x44")
    sem.wait(1, TIMEOUT)
    retired.wait_all()
    device.profiling_end()
    assert [[int(v) for v in vals] for _, vals in stats.capture.counter_samples] == [[1004]]
    assert _bytes(device, buf) == b"\x44" * 256


def test_without_counters_the_queue_path_is_unchanged(device):
    """Profiling off: no tap, no extra slots; dispatch-only profiling: one trailer per
    submission and no PM4-IB packet."""
    qset = device.backend._host_queue_set or device.backend._create_host_queues()
    q = qset.queues[0]
    buf = device.allocator.allocate_buffer(None, 256)
    sem = device.create_semaphore(0)

    assert q.profiler is None and "submit" not in vars(qset)
    w0 = int(q.ring.indices[WRITE_INDEX_WORD])
    device.queue_fill(1, [], [(sem, 1)], buf, 0, 256, b"\x01")
    sem.wait(1, TIMEOUT)
    plain = int(q.ring.indices[WRITE_INDEX_WORD]) - w0
    device.profiling_begin(ProfilingOptions(F.DISPATCH_EVENTS, sinks=[StatisticsSink()]))
    assert q.profiler.pmc is None
    w0 = int(q.ring.indices[WRITE_INDEX_WORD])
    device.queue_fill(1, [], [(sem, 2)], buf, 0, 256, b"\x02")
    sem.wait(2, TIMEOUT)
    assert int(q.ring.indices[WRITE_INDEX_WORD]) - w0 == plain + 1  # the trailer only
    device.profiling_end()
    device.profiling_begin(_counter_options(CounterSet("s", ("SQ_WAVES",))))
    w0 = int(q.ring.indices[WRITE_INDEX_WORD])
    device.queue_fill(1, [], [(sem, 3)], buf, 0, 256, b"\x03")
    sem.wait(3, TIMEOUT)
    assert int(q.ring.indices[WRITE_INDEX_WORD]) - w0 == plain + 1 + 3  # start/read/stop
    device.profiling_end()
    assert q.profiler is None and "submit" not in vars(qset)
    w0 = int(q.ring.indices[WRITE_INDEX_WORD])
    device.queue_fill(1, [], [(sem, 4)], buf, 0, 256, b"\x04")
    sem.wait(4, TIMEOUT)
    assert int(q.ring.indices[WRITE_INDEX_WORD]) - w0 == plain
    assert _bytes(device, buf) == b"\x04" * 256


def _fills_cb(device, buf, count):
    cb = device.create_command_buffer(CommandBufferMode.DEFAULT)
    cb.begin()
    for i in range(count):
        cb.fill_buffer(BufferRef(buf, 64 * i, 64), bytes([(i + 1) & 0xFF]))
    cb.end()
    return cb


def test_stress_ring_wraps_with_counter_packets(fake_library, monkeypatch):
    """A small ring that wraps many times while every dispatch is spread out around its
    counter packets: all data lands, one sample per dispatch, in command order."""
    monkeypatch.setenv("HAL_AMDGPU_LIBAQLPROFILE_PATH", fake_library)
    n, replays = 250, 4  # 4 * 250 + 1 (+ peer barriers) of the 1024-packet ring per replay
    with hal_core.create_device(URI) as device:
        buf = device.allocator.allocate_buffer(None, 64 * n)
        cb = _fills_cb(device, buf, n)
        stats = StatisticsSink()
        retired = _Retired(device)
        device.profiling_begin(
            ProfilingOptions(
                F.COUNTER_SAMPLES | F.DISPATCH_EVENTS,
                sinks=[stats],
                counter_sets=[CounterSet("s", ("SQ_WAVES",))],
            )
        )
        sem = device.create_semaphore(0)
        for v in range(1, replays + 1):
            device.queue_execute(1, [], [(sem, v)], cb)
        sem.wait(replays, TIMEOUT)
        retired.wait_all()
        device.profiling_end()
        d = stats.capture.records("dispatch-events")
        samples = stats.capture.counter_samples
        assert len(d) == n * replays and len(samples) == n * replays
        assert [int(r["dispatch_event_id"]) for r, _ in samples] == [int(r["event_id"]) for r in d]
        assert all([int(v) for v in vals] == [1004] for _, vals in samples)
        for sub in {int(r["submission_id"]) for r in d}:
            rows = [int(r["command_index"]) for r in d if int(r["submission_id"]) == sub]
            assert rows == sorted(rows) and len(rows) == n
        out = bytearray(64 * n)
        file = device.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
        device.queue_write(1, [], [(sem, replays + 1)], buf, 0, file, 0, 64 * n)
        sem.wait(replays + 1, TIMEOUT)
        file.close()
        assert bytes(out) == b"".join(bytes([i + 1]) * 64 for i in range(n))


def test_block_too_large_for_counting_is_out_of_range_and_later_work_runs(
    fake_library, monkeypatch
):
    monkeypatch.setenv("HAL_AMDGPU_LIBAQLPROFILE_PATH", fake_library)
    # A 1024-packet ring (the default is 64 Ki) so that one block overflows it.
    with hal_core.create_device(f"{URI}&aql_capacity=1024") as device:
        buf = device.allocator.allocate_buffer(None, 64 * 256)
        big = _fills_cb(device, buf, 256)  # one block of 256 dispatches: 1028 > 1024
        small = _fills_cb(device, buf, 4)
        stats = StatisticsSink()
        retired = _Retired(device)
        device.profiling_begin(
            ProfilingOptions(
                F.COUNTER_SAMPLES, sinks=[stats], counter_sets=[CounterSet("s", ("SQ_WAVES",))]
            )
        )
        sem = device.create_semaphore(0)
        with pytest.raises(hal_core.OutOfRangeError, match="ring holds 1024.*aql_capacity"):
            device.queue_execute(1, [], [(sem, 1)], big)
        device.queue_execute(1, [], [(sem, 1)], small)
        sem.wait(1, TIMEOUT)
        retired.wait_all()
        device.profiling_end()
        assert len(stats.capture.counter_samples) == 4
        # without counters the same command buffer fits
        device.queue_execute(1, [], [(sem, 2)], big)
        sem.wait(2, TIMEOUT)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=12),
    st.integers(0, 127),
    st.integers(0, 2),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_layout_property(is_dispatch, start, nops_left, counting, tracing, timed):
    """``_layout`` against a model: every payload packet keeps its body and header in
    order, each dispatch with extra packets gets the barrier bit and sits between ATT start,
    PMC start and PMC read, PMC stop, ATT stop; a PM4 start timestamp leads; reserved slots
    left over are NOPs; ring wrap included."""
    from hal_amdgpu import profiling as P

    capacity = 128  # above the largest body drawn (12 + 5 * 14 + 1)
    count = len(is_dispatch)
    counted = [i for i, d in enumerate(is_dispatch) if d]
    pre = int(tracing) + int(counting)
    post = 2 * int(counting) + int(tracing)
    per = pre + post
    lead = int(timed)
    body = lead + count + per * (len(counted) + nops_left)
    rows = np.zeros((capacity, 64), np.uint8)
    for i in range(count):
        rows[(start + i) % capacity, 4:] = i + 1
    qp = P.QueueProfiler.__new__(P.QueueProfiler)
    qp.rows = rows
    qp.mask = capacity - 1
    qp.pre, qp.post, qp.lead = pre, post, lead
    pmc_rows = np.zeros((3, 64), np.uint8)
    pmc_rows[:, 4:] = np.array([[201], [202], [203]], np.uint8)  # start, read, stop
    att_rows = np.zeros((2, 64), np.uint8)
    att_rows[:, 4:] = np.array([[211], [212]], np.uint8)  # start, stop
    record = None
    if timed:
        lead_row = np.zeros(64, np.uint8)
        lead_row[4:] = 221
        record = (None, lead_row, None)
    headers = np.array([0x1000 + i for i in range(count)], np.uint32)
    items = [
        (
            0,
            None,
            0,
            (1, 1, 1),
            (1, 1, 1),
            i,
            (None, pmc_rows) if counting else None,
            (None, att_rows) if tracing else None,
        )
        for i in counted
    ]
    words = qp._layout(start, count, body, headers, False, items, record, None)
    expect_rows, expect_words = [], []
    if timed:
        expect_rows.append(221)
        expect_words.append(P._PM4_IB_WORD)
    for i in range(count):
        if is_dispatch[i] and per:
            before = ([211] if tracing else []) + ([201] if counting else [])
            after = ([202, 203] if counting else []) + ([212] if tracing else [])
            expect_rows += before + [i + 1] + after
            expect_words += [P._PM4_IB_WORD] * len(before)
            expect_words.append(0x1000 + i | P._BARRIER)
            expect_words += [P._PM4_IB_WORD] * len(after)
        else:
            expect_rows.append(i + 1)
            expect_words.append(0x1000 + i)
    expect_rows += [0] * (per * nops_left)
    expect_words += [P._TRAILER_WORD] * (per * nops_left)
    got = [int(rows[(start + j) % capacity, 4]) for j in range(body)]
    assert got == expect_rows
    assert [int(w) for w in words] == expect_words
