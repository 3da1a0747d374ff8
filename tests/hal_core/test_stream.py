"""Streams give the results of the raw queue ops they stand for, on every backend; their
ordering, cross-stream waits, failure naming and call-time errors."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import hal_core as hal
from hal_core import BufferParams, BufferUsage, MemoryType, StatusCode
from hal_core.cts.plugin import _config_for

ANY = hal.QueueAffinity.ANY
RW = hal.MemoryAccess.READ | hal.MemoryAccess.WRITE
TIMEOUT = 10.0
DEVICES = ["local-task://", "local-sync://", "amdgpu://0?hsa=soft"]
HOST = BufferParams(
    usage=BufferUsage.DEFAULT | BufferUsage.MAPPING_SCOPED, type=MemoryType.HOST_LOCAL
)


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    dev = hal.create_device(request.param)
    yield dev
    dev.close()


@pytest.fixture
def local(monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    dev = hal.create_device("local-task://")
    yield dev
    dev.close()


def _cts_executable(device: hal.Device) -> hal.Executable:
    formats = _config_for(device.uri).executable_formats
    fmt = "local-cpu-python" if "local-cpu-python" in formats else "hsaco"
    return device.create_executable_cache("stream-test").prepare(fmt, formats[fmt]("cts_kernels"))


class _Raw:
    """The same program written with raw queue ops: one semaphore, hand-numbered values."""

    def __init__(self, device: hal.Device) -> None:
        self.device = device
        self.sem = device.create_semaphore()
        self.value = 0

    def next(self) -> tuple[tuple, tuple]:
        wait = ((self.sem, self.value),) if self.value else ()
        self.value += 1
        return wait, ((self.sem, self.value),)

    def read(self, buffer: hal.Buffer) -> bytes:
        host = self.device.allocator.allocate_buffer(HOST, buffer.byte_length)
        wait, signal = self.next()
        self.device.queue_copy(ANY, wait, signal, buffer, 0, host, 0, buffer.byte_length)
        self.sem.wait(self.value, TIMEOUT)
        return host.read()


def _record_cb(device: hal.Device, buffer: hal.Buffer) -> hal.CommandBuffer:
    cb = device.create_command_buffer()
    cb.begin()
    cb.fill_buffer(hal.BufferRef(buffer, 0, 16), b"\x11\x22")
    cb.update_buffer(bytes(range(8)), 0, hal.BufferRef(buffer, 16, 8))
    cb.end()
    return cb


def test_stream_matches_raw_queue_ops(device):
    """Every op kind through a stream leaves the bytes the raw queue ops leave."""
    exe = _cts_executable(device)
    src = np.arange(16, dtype=np.float32)
    calls_stream: list = []
    calls_raw: list = []

    # Stream program.
    s = device.create_stream()
    a = s.upload(src)
    b = device.allocator.allocate_buffer(None, 64)
    c = device.allocator.allocate_buffer(None, 64)
    s.fill(b, b"\x07\x00\x00\x00")
    s.update(b, np.uint32([1, 2, 3]), offset=8)
    s.copy(b, c, length=32)
    s.dispatch(exe, "negate", 1, [a, c], [10])
    t = s.alloca(64)
    s.fill(t, np.uint16(0xBEEF))
    s.copy(t, b, target_offset=32, length=32)
    s.dealloca(t)
    e = device.allocator.allocate_buffer(None, 32)
    s.execute(_record_cb(device, e))
    s.host_call(lambda args, ctx: calls_stream.append(tuple(args)), (1, 2, 3, 4))
    f_stream = device.import_file(bytearray(range(64)), RW)
    s.write(b, f_stream, offset=8, file_offset=4, length=16)
    s.read(f_stream, e, offset=24)
    got = [s.download(x) for x in (a, b, c, e)]
    assert s.value >= 13 and s.done  # (downloads of unmappable buffers add copies)

    # Raw program.
    r = _Raw(device)
    q = device
    ra = q.allocator.allocate_buffer(None, src.nbytes)
    rb = q.allocator.allocate_buffer(None, 64)
    rc = q.allocator.allocate_buffer(None, 64)
    q.queue_update(ANY, *r.next(), src.tobytes(), 0, ra, 0, src.nbytes)
    q.queue_fill(ANY, *r.next(), rb, 0, 64, b"\x07\x00\x00\x00")
    q.queue_update(ANY, *r.next(), np.uint32([1, 2, 3]).tobytes(), 0, rb, 8, 12)
    q.queue_copy(ANY, *r.next(), rb, 0, rc, 0, 32)
    q.queue_dispatch(
        ANY,
        *r.next(),
        exe,
        "negate",
        hal.DispatchConfig.static(1),
        np.uint32([10]).tobytes(),
        [ra, rc],
    )
    rt = q.queue_alloca(ANY, *r.next(), None, 64)
    q.queue_fill(ANY, *r.next(), rt, 0, 64, b"\xef\xbe")
    q.queue_copy(ANY, *r.next(), rt, 0, rb, 32, 32)
    q.queue_dealloca(ANY, *r.next(), rt)
    re_ = q.allocator.allocate_buffer(None, 32)
    q.queue_execute(ANY, *r.next(), _record_cb(device, re_))
    q.queue_host_call(ANY, *r.next(), lambda args, ctx: calls_raw.append(tuple(args)), (1, 2, 3, 4))
    f_raw = device.import_file(bytearray(range(64)), RW)
    q.queue_write(ANY, *r.next(), rb, 8, f_raw, 4, 16)
    q.queue_read(ANY, *r.next(), f_raw, 0, re_, 24, 8)
    want = [r.read(x) for x in (ra, rb, rc, re_)]

    assert [g.tobytes() for g in got] == want
    assert calls_stream == calls_raw == [(1, 2, 3, 4)]
    # And the values are what the ops say (not merely equal to each other).
    c_f32 = np.frombuffer(want[2], np.float32)
    assert c_f32[:10].tolist() == (-src[:10]).tolist()
    assert np.frombuffer(want[1], np.uint16)[16:].tolist() == [0xBEEF] * 16
    # The file got b[8:24] at 4, and e[24:32] was read back from the file's start.
    assert want[3][24:32] == bytes(range(4)) + want[1][8:12]


def test_typed_constants_match_raw_bytes(device):
    exe = _cts_executable(device)
    info = exe.function_info("scale_and_offset")
    names = [p.name for p in info.parameters if p.type == hal.ParameterType.CONSTANT]
    raw = np.float32([2.0, 0.5]).tobytes() + np.uint32([8]).tobytes()
    with device.create_stream() as s:
        x = s.upload(np.arange(8, dtype=np.float32))
        outs = [device.allocator.allocate_buffer(None, 32) for _ in range(4)]
        s.dispatch(exe, "scale_and_offset", 1, [x, outs[0]], raw)
        s.dispatch(exe, "scale_and_offset", (1,), [x, outs[1]], (np.float32(2), 0.5, 8))
        s.dispatch(
            exe,
            "scale_and_offset",
            (1, 1, 1),
            [x, outs[2]],
            dict(zip(names, (2.0, np.float32(0.5), np.uint32(8)))),
        )
        s.dispatch(
            exe,
            "scale_and_offset",
            hal.DispatchConfig.static(1),
            [x, outs[3]],
            [np.float32([2.0, 0.5]), 8],
        )
        results = [s.download(o, np.float32).tolist() for o in outs]
    assert results == [[v * 2 + 0.5 for v in range(8)]] * 4


def test_failure_is_named_at_synchronize_and_later_ops_fail(local):
    s = local.create_stream()
    buf = local.allocator.allocate_buffer(None, 16)
    s.fill(buf, b"\x01")

    def boom(args, ctx):
        raise ValueError("kernel bug")

    s.host_call(boom)
    ran = []
    s.host_call(lambda args, ctx: ran.append(1))
    with pytest.raises(hal.UnknownError) as info:
        s.synchronize(TIMEOUT)
    assert str(info.value).startswith("UNKNOWN: stream op 2 (host_call) failed: ")
    assert "kernel bug" in str(info.value)
    assert isinstance(info.value.__cause__, hal.HalError)
    assert ran == []  # op 3 waited on the failed op and failed with it
    with pytest.raises(hal.UnknownError, match="stream op 2"):
        s.download(buf)  # the stream stays failed
    assert not s.done


def test_failure_names_the_op_kind_of_a_failing_dispatch(local):
    exe = _cts_executable(local)
    s = local.create_stream()
    s.barrier()
    s.dispatch(exe, "fail_status", 1, [], [13, 0])  # INTERNAL from the kernel
    with pytest.raises(hal.HalError, match=r"^\w+: stream op 2 \(dispatch\) failed"):
        s.synchronize(TIMEOUT)


def test_call_time_error_raises_and_leaves_the_stream_as_it_was(local):
    head = local.create_semaphore()
    s = local.create_stream()
    buf = local.allocator.allocate_buffer(None, 16)
    s.wait((head, 1))
    with pytest.raises(hal.InvalidArgumentError):
        s.fill(buf, b"\x01\x02\x03")  # 3-byte pattern
    with pytest.raises(hal.OutOfRangeError):
        s.copy(buf, local.allocator.allocate_buffer(None, 16), source_offset=32)
    with pytest.raises(hal.InvalidArgumentError):
        s.dispatch(None, "f", "lots")
    assert s.value == 0
    s.fill(buf, b"\x05")  # still carries the wait on head
    with pytest.raises(hal.DeadlineExceededError):
        s.synchronize(0.05)
    head.signal(1)
    assert s.download(buf).tolist() == [5] * 16


def test_wait_on_another_stream_orders_and_record_includes_waits(local):
    head = local.create_semaphore()
    producer = local.create_stream()
    consumer = local.create_stream()
    buf = local.allocator.allocate_buffer(None, 16)
    out = local.allocator.allocate_buffer(None, 16)
    producer.wait((head, 1))
    producer.fill(buf, b"\x09")
    consumer.wait(producer)
    consumer.copy(buf, out)
    tp = consumer.record()
    assert isinstance(tp, hal.Timepoint) and tp == (consumer.semaphore, 1)
    sem, value = tp
    assert not tp.reached
    with pytest.raises(hal.DeadlineExceededError):
        tp.wait(0.05)
    head.signal(1)
    tp.wait(TIMEOUT)
    assert out.read() == b"\x09" * 16

    # A wait with no op after it still counts for record() and synchronize().
    gate = local.create_semaphore()
    lone = local.create_stream()
    lone.wait((gate, 1))
    assert not lone.done
    tp2 = lone.record()
    assert tp2.value == 1 and not tp2.reached
    gate.signal(1)
    lone.synchronize(TIMEOUT)
    # Timepoints work in raw wait lists as plain pairs.
    done = local.create_semaphore()
    local.queue_barrier(ANY, [tp2], [(done, 1)])
    done.wait(1, TIMEOUT)


def test_ping_pong_streams_keep_order_and_propagate_failure(local):
    """Alternating two streams (the shape of the stream.e2e benchmark) keeps every
    stream's own order, and a failure in one reaches every later op of both."""
    head = local.create_semaphore()
    s0 = local.create_stream(1)
    s1 = local.create_stream(2 if local.queue_count > 1 else 1)
    log: list[int] = []
    s0.wait((head, 1))
    prev = s1
    for i in range(200):
        s = (s0, s1)[i & 1]
        s.wait(prev)
        s.host_call(lambda args, ctx: log.append(args[0]), (i, 0, 0, 0))
        prev = s
    head.signal(1)
    prev.synchronize(TIMEOUT)
    assert log == list(range(200))

    def boom(args, ctx):
        raise RuntimeError("no")

    s0.host_call(boom)
    prev = s0
    for i in range(6):
        s = (s1, s0)[i & 1]
        s.wait(prev)
        s.barrier()
        prev = s
    with pytest.raises(hal.UnknownError, match=r"stream op 101 \(host_call\) failed"):
        s0.synchronize(TIMEOUT)
    with pytest.raises(hal.UnknownError, match=r"stream op 101 \(barrier\) failed"):
        s1.synchronize(TIMEOUT)


def test_context_manager_synchronizes_and_lets_the_body_error_through(local):
    buf = local.allocator.allocate_buffer(None, 1 << 20)
    with local.create_stream() as s:
        for i in range(8):
            s.fill(buf, bytes([i]))
    assert s.done and buf.read(0, 4) == b"\x07" * 4

    never = local.create_semaphore()
    with pytest.raises(KeyError):
        with local.create_stream() as s:
            s.wait((never, 1))
            s.fill(buf, b"\x01")
            raise KeyError("body")  # propagates without waiting for the blocked fill
    assert not s.done
    never.signal(1)
    s.synchronize(TIMEOUT)
    assert buf.read(0, 4) == b"\x01" * 4


def test_create_stream_validates_affinity(local):
    with pytest.raises(hal.InvalidArgumentError):
        local.create_stream(1 << 40)
    with pytest.raises(hal.InvalidArgumentError):
        local.create_stream("queue 0")  # type: ignore[arg-type]
    s = local.create_stream(hal.QueueAffinity.ANY)
    assert s.affinity == 1
    assert "Stream" in repr(s)


def test_wait_rejects_what_is_no_timepoint(local):
    s = local.create_stream()
    for bad in (3, (1, 2), ("sem", 1), (local.create_semaphore(), 1.5)):
        with pytest.raises(hal.InvalidArgumentError):
            s.wait(bad)  # type: ignore[arg-type]


def test_download_checks_its_arguments(local):
    s = local.create_stream()
    buf = s.upload(np.arange(3, dtype=np.uint8))
    with pytest.raises(hal.InvalidArgumentError):
        s.download(buf, np.uint32)  # 3 bytes are no whole uint32
    with pytest.raises(hal.InvalidArgumentError):
        s.download(b"bytes")  # type: ignore[arg-type]
    assert s.download(buf, np.uint8, (3, 1)).shape == (3, 1)
    with pytest.raises(hal.InvalidArgumentError):
        s.upload(np.arange(3), target="buffer")  # type: ignore[arg-type]


def test_hundred_thousand_op_chain_held_behind_a_head(local):
    head = local.create_semaphore()
    s = local.create_stream()
    s.wait((head, 1))
    for _ in range(100_000):
        s.barrier()
    assert not s.done
    head.signal(1)
    s.synchronize(120)
    assert s.semaphore.value == 100_000


def test_ops_from_a_host_call_thread_are_ordered(local):
    """A stream may be handed between threads (one at a time)."""
    s = local.create_stream()
    buf = local.allocator.allocate_buffer(None, 16)
    t = threading.Thread(target=lambda: s.fill(buf, b"\x03"))
    t.start()
    t.join()
    s.fill(buf, b"\x04", offset=8)
    assert s.download(buf).tolist() == [3] * 8 + [4] * 8


def test_failed_semaphore_outside_any_op_is_reported(local):
    s = local.create_stream()
    s.barrier()
    s.synchronize(TIMEOUT)
    s.semaphore.fail(StatusCode.ABORTED, "by hand")
    with pytest.raises(hal.AbortedError, match="after op 1"):
        s.synchronize(TIMEOUT)


def test_upload_takes_arrays_and_buffer_protocol_objects(local):
    s = local.create_stream()
    assert s.download(s.upload(b"abc")).tobytes() == b"abc"
    assert s.download(s.upload(np.float32(1.5)), np.float32).tolist() == [1.5]
    strided = np.arange(8, dtype=np.uint16)[::2]
    assert s.download(s.upload(strided), np.uint16).tolist() == [0, 2, 4, 6]
    assert s.download(s.upload(memoryview(np.arange(2, dtype=np.int32)))).size == 8
    with pytest.raises(hal.InvalidArgumentError, match="upload needs"):
        s.upload(np.array([object()]))
    with pytest.raises(hal.InvalidArgumentError, match="upload needs"):
        s.upload(memoryview(np.arange(8, dtype=np.uint8))[::2])
    with pytest.raises(hal.InvalidArgumentError, match="upload needs"):
        s.upload("text")  # type: ignore[arg-type]
    assert s.value == 4  # the refused uploads queued nothing


def test_timepoints_copy_and_take_numpy_values(local):
    import copy

    sem = local.create_semaphore()
    tp = hal.Timepoint(sem, 2)
    assert copy.copy(tp) == tp and type(copy.copy(tp)) is hal.Timepoint
    s = local.create_stream()
    s.wait((sem, np.int64(2)))
    s.barrier()
    sem.signal(2)
    s.synchronize(TIMEOUT)
    assert tp.reached and repr(tp).startswith("Timepoint(")


def test_done_follows_waits_carried_by_another_streams_op(local):
    gate = local.create_semaphore()
    a, b = local.create_stream(), local.create_stream()
    a.wait((gate, 1))
    a.barrier()
    b.wait(a)
    b.barrier()
    a.wait(b)  # a's next op needs only b's last (which waited on a's)
    assert not a.done and not b.done
    gate.signal(1)
    b.synchronize(TIMEOUT)
    assert a.done and b.done
    assert a.record() == (a.semaphore, 2)  # the wait became an op of a's own timeline
    a.synchronize(TIMEOUT)


def test_failing_op_far_behind_is_named_by_number(local):
    """Op kinds are kept for the last 1024 ops; an older failing op keeps its number."""
    s = local.create_stream()
    s.barrier()
    s.host_call(lambda args, ctx: (_ for _ in ()).throw(ValueError("old")))
    for _ in range(1500):
        s.barrier()
    with pytest.raises(hal.UnknownError) as info:
        s.synchronize(TIMEOUT)
    assert "stream op 2 failed: " in str(info.value) and "old" in str(info.value)
    s2 = local.create_stream()
    s2.host_call(lambda args, ctx: (_ for _ in ()).throw(ValueError("recent")))
    for _ in range(1000):
        s2.barrier()
    with pytest.raises(hal.UnknownError, match=r"stream op 1 \(host_call\) failed"):
        s2.synchronize(TIMEOUT)


def test_transfer_defaults_infer_offsets_and_lengths(local):
    """copy(src, dst) copies what fits in both from the offsets; fill and update default to
    the rest of the buffer and all of the data."""
    with local.create_stream() as s:
        small = s.upload(np.arange(16, dtype=np.uint8))
        big = local.allocator.allocate_buffer(64)
        s.copy(small, big)  # 16 bytes: all of the smaller source
        assert s.download(big)[:20].tolist() == list(range(16)) + [0] * 4
        s.copy(big, small, source_offset=4)  # 16 bytes: all the smaller target takes
        assert s.download(small).tolist() == list(range(4, 16)) + [0] * 4
        s.copy(small, big, source_offset=8, target_offset=60)  # 4: the room left in big
        assert s.download(big)[56:].tolist() == [0, 0, 0, 0, 12, 13, 14, 15]
        s.fill(big, b"\x07", offset=62)  # to the end
        s.update(big, np.array([9, 9], np.uint8), offset=0)  # all of the data
        assert s.download(big)[[0, 1, 2, 61, 62, 63]].tolist() == [9, 9, 2, 13, 7, 7]
