"""amdgpu DEVICE_QUEUE_EVENTS, COUNTER_RANGES and EXECUTABLE_TRACES over the software HSA
agent, on gfx1100 (PM4 ``COPY_DATA`` timestamps through PM4-IB packets) and gfx90a
(completion-signal timestamps), with the fake aqlprofile compiled from
``tests/plugins/profilers/fake_aqlprofile.c`` for the library families (skipped without a C
compiler); the PM4 the soft agent decodes; and ``hal profile`` end to end."""

import json
import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
from hal_amdgpu.aql_packets import PM4_IB_DTYPE, emit_pm4_ib, new_staging
from hal_amdgpu.aql_ring import WRITE_INDEX_WORD
from hal_amdgpu.hsa_enums import HsaStatus
from hal_amdgpu.pm4_packets import (
    COPY_DATA_DWORDS,
    Pm4Opcode,
    clock_copy_control,
    encode_clock_copy,
    type3_header,
)
from hal_amdgpu.soft_hsa.memory import SoftMemory
from hal_amdgpu.soft_hsa.pm4 import run_pm4_ib

import hal_core
from hal_core import CommandBufferMode
from hal_core.backend import QueueOpKind
from hal_core.cli.main import main
from hal_core.profiling import CounterSet, ProfilingOptions, StatisticsSink, read_profile_bundle
from hal_core.profiling import ProfilingDataFamily as F

TIMEOUT = 10
PM4_TARGET, SIGNAL_TARGET = "gfx1100", "gfx90a"
FAKE_C = os.path.join(os.path.dirname(__file__), "..", "profilers", "fake_aqlprofile.c")
DEVICE_QUEUE = "queue-device-events"


def _uri(target):
    return f"amdgpu://?hsa=soft&soft_gpus={target}"


@pytest.fixture(scope="module")
def att_library(tmp_path_factory):
    """The fake library with its ATT functions (``-DWITH_ATT``)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the fake aqlprofile library")
    out = tmp_path_factory.mktemp("aqlatt") / "libhsa-amd-aqlprofile64.so.1"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O0", "-DWITH_ATT", "-o", str(out), FAKE_C], check=True
    )
    return str(out)


class _Retired:
    """A retire listener installed before profiling begins: the profiling listener runs
    first, so once it saw every published epoch the records of those epochs exist."""

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


def _work(device):
    """A fill, a barrier and a command buffer of two fills and a copy, on queue 0; returns
    (buffers, command buffer)."""
    bufs = [device.allocator.allocate_buffer(None, 256) for _ in range(3)]
    cb = device.create_command_buffer(CommandBufferMode.DEFAULT)
    cb.begin()
    cb.fill_buffer(bufs[0], b"\x11")
    cb.fill_buffer(bufs[1], b"\x22")
    cb.execution_barrier()
    cb.copy_buffer(bufs[0], bufs[2])
    cb.end()
    sem = device.create_semaphore(0)
    device.queue_fill(1, [], [(sem, 1)], bufs[0], 0, 256, b"\x33")
    device.queue_barrier(1, [(sem, 1)], [(sem, 2)])
    device.queue_execute(1, [(sem, 2)], [(sem, 3)], cb)
    sem.wait(3, TIMEOUT)
    return bufs, cb


def _profile(device, options):
    retired = _Retired(device)
    t0 = time.perf_counter_ns()
    device.profiling_begin(options)
    out = _work(device)
    retired.wait_all()
    device.profiling_end()
    return out, t0, time.perf_counter_ns()


@pytest.mark.parametrize("target", [PM4_TARGET, SIGNAL_TARGET])
def test_device_queue_events_per_operation(target):
    """One event per queue operation: its kind, queue, submission and command buffer, with
    device ticks that bracket its dispatches and map into the session's host interval."""
    with hal_core.create_device(_uri(target)) as device:
        stats = StatisticsSink()
        (bufs, cb), t0, t1 = _profile(
            device,
            ProfilingOptions(
                F.DEVICE_QUEUE_EVENTS | F.DISPATCH_EVENTS | F.QUEUE_EVENTS, sinks=[stats]
            ),
        )
        cap = stats.capture
        dq = cap.records(DEVICE_QUEUE)
        queue_events = cap.records("queue-events")
        assert [int(r["type"]) for r in dq] == [
            int(QueueOpKind.FILL),
            int(QueueOpKind.BARRIER),
            int(QueueOpKind.EXECUTE),
        ]
        assert [int(r["submission_id"]) for r in dq] == [
            int(r["submission_id"]) for r in queue_events
        ]
        assert {int(r["queue_ordinal"]) for r in dq} == {0}
        cb_ids = [int(r["command_buffer_id"]) for r in dq]
        assert cb_ids == [int(r["command_buffer_id"]) for r in queue_events]
        assert cb_ids[:2] == [0, 0] and cb_ids[2] != 0
        starts = [int(r["start_tick"]) for r in dq]
        ends = [int(r["end_tick"]) for r in dq]
        assert all(0 < s <= e for s, e in zip(starts, ends))
        assert all(ends[i] <= starts[i + 1] for i in range(len(dq) - 1))  # in queue order
        d = cap.records("dispatch-events")
        by_sub = {int(r["submission_id"]): r for r in dq}
        for r in d:
            ev = by_sub[int(r["submission_id"])]
            assert int(ev["start_tick"]) <= int(r["start_tick"])
            assert int(r["end_tick"]) <= int(ev["end_tick"])
        host = cap.clock.to_host_ns(0, np.array(starts + ends, np.float64))
        assert np.all(host >= t0 - 1e6) and np.all(host <= t1 + 1e6)  # 1 ms fit slack


def test_pm4_timestamps_cost_one_lead_packet_and_signal_timestamps_none():
    """gfx1100: a timed submission publishes a PM4-IB start packet and a PM4-IB trailer
    (carrying the epoch) that the soft agent decodes and runs; gfx90a: the trailer only."""
    for target, extra in ((PM4_TARGET, 2), (SIGNAL_TARGET, 1)):
        with hal_core.create_device(_uri(target)) as device:
            qset = device.backend._host_queue_set or device.backend._create_host_queues()
            q = qset.queues[0]
            buf = device.allocator.allocate_buffer(None, 256)
            sem = device.create_semaphore(0)
            w0 = int(q.ring.indices[WRITE_INDEX_WORD])
            device.queue_fill(1, [], [(sem, 1)], buf, 0, 256, b"\x01")
            sem.wait(1, TIMEOUT)
            plain = int(q.ring.indices[WRITE_INDEX_WORD]) - w0
            device.profiling_begin(
                ProfilingOptions(F.DEVICE_QUEUE_EVENTS, sinks=[StatisticsSink()])
            )
            assert (q.profiler.ticks is not None) == (target == PM4_TARGET)
            w0 = int(q.ring.indices[WRITE_INDEX_WORD])
            device.queue_fill(1, [], [(sem, 2)], buf, 0, 256, b"\x02")
            sem.wait(2, TIMEOUT)
            published = int(q.ring.indices[WRITE_INDEX_WORD]) - w0
            assert published == plain + extra, target
            if target == PM4_TARGET:
                rows = q.ring.rows
                lead = rows[w0 & q.ring.mask].view(PM4_IB_DTYPE)[0]
                assert int(lead["amd_format"]) == 1 and int(lead["completion_signal"]) == 0
                trailer = rows[(w0 + published - 1) & q.ring.mask].view(PM4_IB_DTYPE)[0]
                assert int(trailer["completion_signal"]) == q.epoch_handle
            device.profiling_end()


def test_multi_block_command_buffer_is_one_event():
    """A command buffer replayed as several blocks (a 64-packet ring makes 16-packet
    blocks) is one device queue event from its first block's start to its last block's
    end."""
    with hal_core.create_device(_uri(PM4_TARGET) + "&aql_capacity=64") as device:
        stats = StatisticsSink()
        retired = _Retired(device)
        device.profiling_begin(
            ProfilingOptions(F.DEVICE_QUEUE_EVENTS | F.DISPATCH_EVENTS, sinks=[stats])
        )
        n = 40
        buf = device.allocator.allocate_buffer(None, 64 * n)
        cb = device.create_command_buffer(CommandBufferMode.DEFAULT)
        cb.begin()
        for i in range(n):
            cb.fill_buffer(hal_core.BufferRef(buf, 64 * i, 64), bytes([i + 1]))
        cb.end()
        q = device.backend._host_queue_set.queues[0]
        epoch = q.published_epoch
        sem = device.create_semaphore(0)
        device.queue_execute(1, [], [(sem, 1)], cb)
        sem.wait(1, TIMEOUT)
        retired.wait_all()
        device.profiling_end()
        assert q.published_epoch - epoch >= 3  # one epoch per block
        dq = stats.capture.records(DEVICE_QUEUE)
        d = stats.capture.records("dispatch-events")
        assert len(dq) == 1 and len(d) == n
        assert int(dq[0]["command_buffer_id"]) != 0
        assert int(dq[0]["start_tick"]) <= int(d["start_tick"].min())
        assert int(d["end_tick"].max()) <= int(dq[0]["end_tick"])


@pytest.mark.parametrize("target", [PM4_TARGET, SIGNAL_TARGET])
def test_counter_ranges_one_sample_per_submission(target, att_library, monkeypatch):
    monkeypatch.setenv("HAL_AMDGPU_LIBAQLPROFILE_PATH", att_library)
    with hal_core.create_device(_uri(target)) as device:
        stats = StatisticsSink()
        sets = [CounterSet("waves", ("SQ_WAVES",)), CounterSet("busy", ("SQ_BUSY_CYCLES",))]
        (bufs, cb), _t0, _t1 = _profile(
            device,
            ProfilingOptions(
                F.COUNTER_RANGES | F.DEVICE_QUEUE_EVENTS, sinks=[stats], counter_sets=sets
            ),
        )
        cap = stats.capture
        dq = cap.records(DEVICE_QUEUE)
        samples = cap.counter_samples
        assert len(samples) == 2 * len(dq) == 6
        ticks = {(int(r["start_tick"]), int(r["end_tick"])) for r in dq}
        for rec, values in samples:
            assert int(rec["scope"]) == 2  # DEVICE_TIME_RANGE
            assert int(rec["dispatch_event_id"]) == 0
            assert (int(rec["start_tick"]), int(rec["end_tick"])) in ticks
            expect = 1004 if int(rec["counter_set_id"]) == 1 else 1003
            assert [int(v) for v in values] == [expect]
        assert {int(r["command_buffer_id"]) for r, _ in samples} == {
            int(r["command_buffer_id"]) for r in dq
        }
        assert _bytes(device, bufs[2]) == b"\x11" * 256  # the copy ran after the fills


@pytest.mark.parametrize("target", [PM4_TARGET, SIGNAL_TARGET])
def test_executable_traces_one_per_dispatch(target, att_library, monkeypatch):
    monkeypatch.setenv("HAL_AMDGPU_LIBAQLPROFILE_PATH", att_library)
    with hal_core.create_device(_uri(target)) as device:
        stats = StatisticsSink()
        (bufs, _cb), _t0, _t1 = _profile(
            device,
            ProfilingOptions(F.EXECUTABLE_TRACES | F.DISPATCH_EVENTS, sinks=[stats]),
        )
        cap = stats.capture
        d = cap.records("dispatch-events")
        traces = cap.records("executable-traces")
        assert len(d) == 4 and len(traces) == 4  # the fill, then two fills and a copy
        assert sorted(int(r["dispatch_event_id"]) for r in traces) == sorted(
            int(r["event_id"]) for r in d
        )
        assert len({int(r["trace_id"]) for r in traces}) == 4
        by_event = {int(r["event_id"]): r for r in d}
        for r in traces:
            assert int(r["executable_id"]) == int(
                by_event[int(r["dispatch_event_id"])]["executable_id"]
            )
            assert int(r["format"]) == 1 and int(r["data_length"]) == 16
        assert len(cap.traces) == 4
        for _rec, data in cap.traces:
            data = bytes(data)
            assert data[:8] == b"fake-att"
            # four parameters, the 16 MiB trace buffer
            assert np.frombuffer(data[8:16], np.uint32).tolist() == [4, 16 * 1024 * 1024]
        assert _bytes(device, bufs[2]) == b"\x11" * 256


def test_traces_follow_the_queue_filter(att_library, monkeypatch):
    """Trace packets go only around dispatches of queues the capture filter selects."""
    from hal_core.profiling import CaptureFilter

    monkeypatch.setenv("HAL_AMDGPU_LIBAQLPROFILE_PATH", att_library)
    with hal_core.create_device(_uri(PM4_TARGET)) as device:
        stats = StatisticsSink()
        retired = _Retired(device)
        device.profiling_begin(
            ProfilingOptions(
                F.EXECUTABLE_TRACES | F.DISPATCH_EVENTS,
                sinks=[stats],
                capture_filter=CaptureFilter.of(queue_ordinal=1),
            )
        )
        qset = device.backend._host_queue_set
        assert qset.queues[0].profiler.att is None and qset.queues[1].profiler.att is not None
        buf = device.allocator.allocate_buffer(None, 256)
        sem = device.create_semaphore(0)
        device.queue_fill(1, [], [(sem, 1)], buf, 0, 256, b"\x01")
        device.queue_fill(2, [(sem, 1)], [(sem, 2)], buf, 0, 256, b"\x02")
        sem.wait(2, TIMEOUT)
        retired.wait_all()
        device.profiling_end()
        traces = stats.capture.records("executable-traces")
        d = stats.capture.records("dispatch-events")
        assert len(traces) == 1 and len(d) == 1 and int(d[0]["queue_ordinal"]) == 1


def test_capture_filter_limits_ranges_not_device_queue_events(att_library, monkeypatch):
    """The capture filter selects heavy artifacts: a queue it leaves out gets no counter
    ranges, but its operations still have device queue events."""
    from hal_core.profiling import CaptureFilter

    monkeypatch.setenv("HAL_AMDGPU_LIBAQLPROFILE_PATH", att_library)
    with hal_core.create_device(_uri(SIGNAL_TARGET)) as device:
        stats = StatisticsSink()
        _profile(
            device,
            ProfilingOptions(
                F.COUNTER_RANGES | F.DEVICE_QUEUE_EVENTS,
                sinks=[stats],
                counter_sets=[CounterSet("waves", ("SQ_WAVES",))],
                capture_filter=CaptureFilter.of(queue_ordinal=1),
            ),
        )
        assert len(stats.capture.records(DEVICE_QUEUE)) == 3  # all on queue 0
        assert stats.capture.counter_samples == []


def test_traces_without_att_functions_are_unavailable_and_nothing_starts(tmp_path, monkeypatch):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the fake aqlprofile library")
    lib = tmp_path / "libhsa-amd-aqlprofile64.so.1"
    subprocess.run([cc, "-shared", "-fPIC", "-O0", "-o", str(lib), FAKE_C], check=True)
    monkeypatch.setenv("HAL_AMDGPU_LIBAQLPROFILE_PATH", str(lib))
    with hal_core.create_device(_uri(PM4_TARGET)) as device:
        with pytest.raises(hal_core.UnavailableError, match="no ATT thread-trace functions"):
            device.profiling_begin(
                ProfilingOptions(
                    F.EXECUTABLE_TRACES | F.DEVICE_QUEUE_EVENTS, sinks=[StatisticsSink()]
                )
            )
        qset = device.backend._host_queue_set
        assert qset is None or all(q.profiler is None for q in qset.queues)
        # a later session still runs
        stats = StatisticsSink()
        retired = _Retired(device)
        device.profiling_begin(ProfilingOptions(F.DEVICE_QUEUE_EVENTS, sinks=[stats]))
        _work(device)
        retired.wait_all()
        device.profiling_end()
        assert len(stats.capture.records(DEVICE_QUEUE)) == 3


def _bytes(device, buf):
    out = bytearray(256)
    file = device.import_file(out, hal_core.MemoryAccess.READ | hal_core.MemoryAccess.WRITE)
    sem = device.create_semaphore(0)
    device.queue_write(1, [], [(sem, 1)], buf, 0, file, 0, 256)
    sem.wait(1, TIMEOUT)
    file.close()
    return bytes(out)


@pytest.mark.parametrize("fmt", ["bundle", "perfetto"])
def test_hal_profile_end_to_end(fmt, tmp_path, capsys):
    out = tmp_path / f"amd.{fmt}"
    rc = main(
        [
            "profile",
            "--device",
            _uri(PM4_TARGET),
            "--families",
            "device-queue-events,dispatch-events,queue-events",
            "--format",
            fmt,
            "-o",
            str(out),
            "--",
            "edge.fill4",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    if fmt == "bundle":
        bundle = read_profile_bundle(str(out))
        dq = bundle.records(DEVICE_QUEUE)
        assert len(dq) >= 512
        assert all(int(r["start_tick"]) <= int(r["end_tick"]) for r in dq)
        assert {int(r["type"]) for r in dq} >= {int(QueueOpKind.FILL)}
    else:
        ev = json.loads(out.read_text())["traceEvents"]
        slices = [e for e in ev if e.get("ph") == "X" and e.get("cat") == "device-queue"]
        assert len(slices) >= 512 and all(e["dur"] >= 0 for e in slices)
        assert {e["name"] for e in slices} >= {"fill"}


# -- the PM4 the soft agent decodes --------------------------------------------------------


def _ib_packet(memory, words):
    """An AQL PM4-IB row jumping to a fresh buffer holding ``words``."""
    ib = memory.allocate(4 * max(1, len(words)), 64)
    ib.array.view(np.uint32)[: len(words)] = words
    row = new_staging(1)
    emit_pm4_ib(row, ib_address=ib.address, dword_count=len(words))
    return row.view(PM4_IB_DTYPE)[0, 0]["ib_jump_cmd"]


def _run(memory, jump):
    return run_pm4_ib(jump, memory, 0, threading.Condition(), lambda _a: False, lambda: False)


def test_copy_data_writes_the_agent_clock():
    memory = SoftMemory()
    dest = memory.allocate(16, 8)
    words = np.zeros(2 * COPY_DATA_DWORDS, np.uint32)
    at = encode_clock_copy(words, 0, dest.address, clock_copy_control(11))
    encode_clock_copy(words, at, dest.address + 8, clock_copy_control(12))
    before = time.monotonic_ns()
    assert _run(memory, _ib_packet(memory, words)) == HsaStatus.SUCCESS
    ticks = dest.array.view(np.uint64)
    assert before <= int(ticks[0]) <= int(ticks[1]) <= time.monotonic_ns()
    # the gfx9 form (memory destination) too
    words = np.zeros(COPY_DATA_DWORDS, np.uint32)
    encode_clock_copy(words, 0, dest.address, clock_copy_control(9))
    assert _run(memory, _ib_packet(memory, words)) == HsaStatus.SUCCESS


def test_undecodable_pm4_faults():
    """Strict decoding: a jump of all zeros (no PM4 packet at all, which the decoder once
    let pass as a barrier), a COPY_DATA from another source, to a register, of 32 bits or
    to an unmapped or unaligned address, all fault."""
    memory = SoftMemory()
    dest = memory.allocate(16, 8)
    assert _run(memory, np.zeros(4, np.uint32)) == HsaStatus.ERROR_INVALID_PACKET_FORMAT
    control = clock_copy_control(11)
    bad = [
        (control & ~0xF) | 5,  # immediate data source
        control & ~(0xF << 8),  # register destination
        control & ~(1 << 16),  # 32-bit count
    ]
    for ctl in bad:
        words = np.zeros(COPY_DATA_DWORDS, np.uint32)
        encode_clock_copy(words, 0, dest.address, ctl)
        assert _run(memory, _ib_packet(memory, words)) == HsaStatus.ERROR_INVALID_PACKET_FORMAT
    words = np.zeros(COPY_DATA_DWORDS, np.uint32)
    encode_clock_copy(words, 0, dest.address, control)
    words[4] = (dest.address + 4) & 0xFFFFFFFF  # unaligned (the encoder would align it)
    assert _run(memory, _ib_packet(memory, words)) == HsaStatus.ERROR_INVALID_PACKET_FORMAT
    encode_clock_copy(words, 0, 0x1000, control)  # unmapped
    assert _run(memory, _ib_packet(memory, words)) == HsaStatus.AMD_ERROR_MEMORY_APERTURE_VIOLATION
    short = np.array([type3_header(Pm4Opcode.COPY_DATA, 4), control, 0, 0, 0], np.uint32)
    assert _run(memory, _ib_packet(memory, short)) == HsaStatus.ERROR_INVALID_PACKET_FORMAT
