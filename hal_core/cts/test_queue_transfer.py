"""CTS: queue_fill, queue_update and queue_copy (IREE's QueueTransferTest).

Fills with 1/2/4-byte patterns over whole buffers, subranges (boundaries untouched),
large buffers and an alignment-class table; updates of whole buffers, subranges, with
source offsets, larger than 64 KiB, unaligned, and capturing the host bytes at call time;
copies whole/offset/large/unaligned; bursts; chains; barrier ordering. Bad input: ranges
(OUT_OF_RANGE), patterns (INVALID_ARGUMENT), usage (PERMISSION_DENIED), deallocated
buffers (FAILED_PRECONDITION on the signal); later work always still runs.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

import hal_core
from hal_core import BufferParams, BufferUsage, QueueAffinity, StatusCode

from .context import TIMEOUT, deterministic_bytes

ANY = QueueAffinity.ANY


def _expected_fill(size: int, offset: int, length: int, pattern: bytes, base: bytes | None = None):
    out = bytearray(base if base is not None else bytes(size))
    reps = length // len(pattern)
    out[offset : offset + length] = pattern * reps
    return bytes(out)


def _fill(cts, buffer, offset, length, pattern, wait=()):
    sem = cts.semaphore(0)
    cts.device.queue_fill(ANY, wait, [(sem, 1)], buffer, offset, length, pattern)
    cts.wait(sem, 1)


def _copy(cts, src, src_offset, dst, dst_offset, length):
    sem = cts.semaphore(0)
    cts.device.queue_copy(ANY, [], [(sem, 1)], src, src_offset, dst, dst_offset, length)
    cts.wait(sem, 1)


def _update(cts, data, src_offset, dst, dst_offset, length):
    sem = cts.semaphore(0)
    cts.device.queue_update(ANY, [], [(sem, 1)], data, src_offset, dst, dst_offset, length)
    cts.wait(sem, 1)


def _later_work_runs(cts):
    """After an error the device keeps working: a fresh fill lands."""
    buf = cts.buffer(16)
    _fill(cts, buf, 0, 16, b"\x5a")
    assert cts.read_bytes(buf) == b"\x5a" * 16


# --------------------------------------------------------------------------- fill

PATTERNS = {1: b"\xa7", 2: b"\x12\xb4", 4: b"\x01\x02\xfe\xff"}


@pytest.mark.parametrize("pattern_length", [1, 2, 4])
def test_fill_whole_buffer(cts, pattern_length):
    pattern = PATTERNS[pattern_length]
    buf = cts.buffer(256)
    _fill(cts, buf, 0, 256, pattern)
    assert cts.read_bytes(buf) == pattern * (256 // pattern_length)


@pytest.mark.parametrize("pattern_length", [1, 2, 4])
def test_fill_int_pattern_with_length(cts, pattern_length):
    value = int.from_bytes(PATTERNS[pattern_length], "little")
    buf = cts.buffer(64)
    sem = cts.semaphore(0)
    cts.device.queue_fill(ANY, [], [(sem, 1)], buf, 0, 64, value, pattern_length=pattern_length)
    cts.wait(sem, 1)
    assert cts.read_bytes(buf) == PATTERNS[pattern_length] * (64 // pattern_length)


@pytest.mark.parametrize("pattern_length", [1, 2, 4])
def test_fill_subrange_leaves_boundaries_untouched(cts, pattern_length):
    size = 128
    base = deterministic_bytes(size, seed=3)
    buf = cts.buffer(size, base)
    offset, length = 16, 64
    _fill(cts, buf, offset, length, PATTERNS[pattern_length])
    expect = _expected_fill(size, offset, length, PATTERNS[pattern_length], base)
    assert cts.read_bytes(buf) == expect


@pytest.mark.parametrize("pattern_length", [1, 4])
def test_fill_large_buffer(cts, pattern_length):
    size = 3 * 1024 * 1024 + 12  # past any inline threshold, not a power of two
    buf = cts.buffer(size)
    _fill(cts, buf, 0, size, PATTERNS[pattern_length])
    data = np.frombuffer(cts.read_bytes(buf), np.uint8)
    expect = np.frombuffer(PATTERNS[pattern_length] * (size // pattern_length), np.uint8)
    assert np.array_equal(data, expect)


FILL_ALIGNMENT_CLASSES = [
    # (pattern_length, offset, length)
    (1, 0, 1),
    (1, 1, 1),
    (1, 3, 5),
    (1, 7, 33),
    (1, 13, 0),
    (2, 2, 2),
    (2, 6, 10),
    (2, 30, 34),
    (4, 4, 4),
    (4, 12, 20),
    (4, 60, 68),
    (4, 0, 0),
]


@pytest.mark.parametrize("pattern_length,offset,length", FILL_ALIGNMENT_CLASSES)
def test_fill_alignment_classes(cts, pattern_length, offset, length):
    size = 160
    base = deterministic_bytes(size, seed=11)
    buf = cts.buffer(size, base)
    pattern = PATTERNS[pattern_length]
    _fill(cts, buf, offset, length, pattern)
    assert cts.read_bytes(buf) == _expected_fill(size, offset, length, pattern, base)


def test_fill_subspan_buffer(cts):
    base = deterministic_bytes(64, seed=5)
    buf = cts.buffer(64, base)
    sub = buf.subspan(8, 32)
    _fill(cts, sub, 4, 16, b"\xee\xff")
    assert cts.read_bytes(buf) == _expected_fill(64, 12, 16, b"\xee\xff", base)


# --------------------------------------------------------------------------- update


def test_update_whole_buffer(cts):
    data = deterministic_bytes(256, seed=1)
    buf = cts.buffer(256)
    _update(cts, data, 0, buf, 0, 256)
    assert cts.read_bytes(buf) == data


def test_update_subrange(cts):
    base = deterministic_bytes(128, seed=2)
    buf = cts.buffer(128, base)
    data = b"\xcd" * 40
    _update(cts, data, 0, buf, 24, 40)
    expect = bytearray(base)
    expect[24:64] = data
    assert cts.read_bytes(buf) == bytes(expect)


def test_update_with_source_offset(cts):
    data = deterministic_bytes(100, seed=4)
    buf = cts.buffer(64)
    _update(cts, data, 30, buf, 8, 50)
    expect = bytearray(64)
    expect[8:58] = data[30:80]
    assert cts.read_bytes(buf) == bytes(expect)


def test_update_larger_than_64k(cts):
    size = 64 * 1024 * 3 + 77
    data = deterministic_bytes(size, seed=9)
    buf = cts.buffer(size + 16)
    _update(cts, data, 0, buf, 16, size)
    out = cts.read_bytes(buf)
    assert out[:16] == bytes(16)
    assert out[16:] == data


@pytest.mark.parametrize(
    "source_offset,target_offset,length",
    [(1, 0, 7), (0, 3, 9), (5, 7, 1), (3, 1, 31), (7, 13, 64), (2, 0, 0)],
)
def test_update_unaligned_offsets(cts, source_offset, target_offset, length):
    data = deterministic_bytes(96, seed=6)
    base = deterministic_bytes(96, seed=7)
    buf = cts.buffer(96, base)
    _update(cts, data, source_offset, buf, target_offset, length)
    expect = bytearray(base)
    expect[target_offset : target_offset + length] = data[source_offset : source_offset + length]
    assert cts.read_bytes(buf) == bytes(expect)


@pytest.mark.parametrize("source_kind", ["bytearray", "numpy"])
def test_update_captures_source_at_call_time(cts, source_kind):
    """The host bytes are copied when queue_update returns: overwriting them before the
    wait resolves does not change what lands."""
    original = deterministic_bytes(1024, seed=8)
    source = (
        bytearray(original)
        if source_kind == "bytearray"
        else np.frombuffer(original, np.uint8).copy()
    )
    buf = cts.buffer(1024)
    gate, done = cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_update(ANY, [(gate, 1)], [(done, 1)], source, 0, buf, 0, 1024)
    if isinstance(source, bytearray):  # source_kind == "bytearray"
        source[:] = b"\xee" * 1024
    else:
        source[:] = 0xEE
    del source
    gate.signal(1)
    cts.wait(done, 1)
    assert cts.read_bytes(buf) == original


# --------------------------------------------------------------------------- copy


def test_copy_whole_buffer(cts):
    data = deterministic_bytes(512, seed=10)
    src, dst = cts.buffer(512, data), cts.buffer(512)
    _copy(cts, src, 0, dst, 0, 512)
    assert cts.read_bytes(dst) == data


def test_copy_with_offsets(cts):
    data = deterministic_bytes(256, seed=12)
    base = deterministic_bytes(256, seed=13)
    src, dst = cts.buffer(256, data), cts.buffer(256, base)
    _copy(cts, src, 32, dst, 100, 64)
    expect = bytearray(base)
    expect[100:164] = data[32:96]
    assert cts.read_bytes(dst) == bytes(expect)


def test_copy_large_buffer(cts):
    size = 2 * 1024 * 1024 + 3
    data = deterministic_bytes(size, seed=14)
    src, dst = cts.buffer(size, data), cts.buffer(size)
    _copy(cts, src, 0, dst, 0, size)
    assert cts.read_bytes(dst) == data


@pytest.mark.parametrize(
    "source_offset,target_offset,length",
    [(0, 0, 1), (1, 0, 3), (0, 1, 5), (3, 5, 17), (7, 2, 64), (1, 1, 0), (4, 8, 40)],
)
def test_copy_alignment_classes(cts, source_offset, target_offset, length):
    data = deterministic_bytes(128, seed=15)
    base = deterministic_bytes(128, seed=16)
    src, dst = cts.buffer(128, data), cts.buffer(128, base)
    _copy(cts, src, source_offset, dst, target_offset, length)
    expect = bytearray(base)
    expect[target_offset : target_offset + length] = data[source_offset : source_offset + length]
    assert cts.read_bytes(dst) == bytes(expect)


def test_copy_between_disjoint_ranges_of_one_buffer(cts):
    data = deterministic_bytes(128, seed=17)
    buf = cts.buffer(128, data)
    _copy(cts, buf, 0, buf, 64, 64)
    assert cts.read_bytes(buf) == data[:64] + data[:64]


def test_copy_burst_into_disjoint_slices(cts):
    slices, width = 32, 48
    data = deterministic_bytes(slices * width, seed=18)
    src, dst = cts.buffer(slices * width, data), cts.buffer(slices * width)
    sem = cts.semaphore(0)
    affinities = cts.queue_affinities()
    sems = []
    for i in range(slices):
        sem = cts.semaphore(0)
        cts.device.queue_copy(
            affinities[i % len(affinities)],
            [],
            [(sem, 1)],
            src,
            i * width,
            dst,
            (slices - 1 - i) * width,
            width,
        )
        sems.append((sem, 1))
    hal_core.wait_all(sems, TIMEOUT)
    out = cts.read_bytes(dst)
    for i in range(slices):
        j = slices - 1 - i
        assert out[j * width : (j + 1) * width] == data[i * width : (i + 1) * width]


# --------------------------------------------------------------------------- chains


def test_fill_then_copy_chain(cts):
    a, b = cts.buffer(64), cts.buffer(64)
    s = cts.semaphore(0)
    cts.device.queue_fill(ANY, [], [(s, 1)], a, 0, 64, b"\x11\x22\x33\x44")
    cts.device.queue_copy(ANY, [(s, 1)], [(s, 2)], a, 0, b, 0, 64)
    cts.wait(s, 2)
    assert cts.read_bytes(b) == b"\x11\x22\x33\x44" * 16


def test_update_then_copy_chain(cts):
    data = deterministic_bytes(200, seed=19)
    a, b = cts.buffer(200), cts.buffer(200)
    s = cts.semaphore(0)
    gate = cts.semaphore(0)
    cts.device.queue_update(ANY, [(gate, 1)], [(s, 1)], data, 0, a, 0, 200)
    cts.device.queue_copy(ANY, [(s, 1)], [(s, 2)], a, 0, b, 0, 200)
    assert s.query() == 0
    gate.signal(1)
    cts.wait(s, 2)
    assert cts.read_bytes(b) == data


def test_fill_copy_fill_chain(cts):
    a, b = cts.buffer(64), cts.buffer(64)
    s = cts.semaphore(0)
    affinities = cts.queue_affinities()
    last = affinities[-1]
    cts.device.queue_fill(affinities[0], [], [(s, 1)], a, 0, 64, b"\x01")
    cts.device.queue_copy(last, [(s, 1)], [(s, 2)], a, 0, b, 0, 64)
    cts.device.queue_fill(affinities[0], [(s, 2)], [(s, 3)], b, 16, 16, b"\x02")
    cts.wait(s, 3)
    assert cts.read_bytes(b) == b"\x01" * 16 + b"\x02" * 16 + b"\x01" * 32


def test_barrier_signals(cts):
    s = cts.semaphore(0)
    cts.device.queue_barrier(ANY, [], [(s, 1)])
    cts.wait(s, 1)


def test_fill_barrier_copy_ordering(cts):
    a, b = cts.buffer(256), cts.buffer(256)
    gate = cts.semaphore(0)
    filled, barrier, copied = cts.semaphore(0), cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_copy(ANY, [(barrier, 1)], [(copied, 1)], a, 0, b, 0, 256)
    cts.device.queue_barrier(ANY, [(filled, 1)], [(barrier, 1)])
    cts.device.queue_fill(ANY, [(gate, 1)], [(filled, 1)], a, 0, 256, b"\x9c\x9d")
    assert copied.query() == 0
    gate.signal(1)
    cts.wait(copied, 1)
    assert cts.read_bytes(b) == b"\x9c\x9d" * 128


def test_transfers_are_retained_after_user_drops_references(cts):
    """Buffers of submitted work stay alive until it completes, whatever the user drops."""
    data = deterministic_bytes(4096, seed=20)
    src, dst = cts.buffer(4096, data), cts.buffer(4096)
    gate, done = cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_copy(ANY, [(gate, 1)], [(done, 1)], src, 0, dst, 0, 4096)
    del src
    gate.signal(1)
    cts.wait(done, 1)
    assert cts.read_bytes(dst) == data


# --------------------------------------------------------------------------- bad input


def test_fill_out_of_range(cts):
    buf = cts.buffer(64)
    sem = cts.semaphore(0)
    for offset, length in ((0, 68), (60, 8), (68, 4), (-4, 4)):
        with pytest.raises(hal_core.OutOfRangeError) as info:
            cts.device.queue_fill(ANY, [], [(sem, 1)], buf, offset, length, b"\x01\x02\x03\x04")
        assert info.value.code == StatusCode.OUT_OF_RANGE
        assert "64" in info.value.message
    assert sem.query() == 0  # nothing was submitted: the signal value is still free
    _fill(cts, buf, 0, 64, b"\x07")
    assert cts.read_bytes(buf) == b"\x07" * 64


@pytest.mark.parametrize(
    "pattern,kwargs",
    [
        (b"\x01\x02\x03", {}),
        (b"", {}),
        (b"\x01" * 8, {}),
        (7, {}),
        (7, {"pattern_length": 3}),
        (0x1FF, {"pattern_length": 1}),
        (b"\x01\x02", {"pattern_length": 4}),
        ("ab", {}),
    ],
)
def test_fill_bad_pattern_is_invalid(cts, pattern, kwargs):
    buf = cts.buffer(64)
    with pytest.raises(hal_core.InvalidArgumentError, match="pattern"):
        cts.device.queue_fill(ANY, [], [], buf, 0, 64, pattern, **kwargs)
    _later_work_runs(cts)


@pytest.mark.parametrize(
    "pattern_length,offset,length", [(2, 1, 4), (4, 2, 8), (4, 0, 6), (2, 0, 3)]
)
def test_fill_misaligned_is_invalid(cts, pattern_length, offset, length):
    buf = cts.buffer(64)
    with pytest.raises(hal_core.InvalidArgumentError, match="multiple"):
        cts.device.queue_fill(ANY, [], [], buf, offset, length, PATTERNS[pattern_length])
    _later_work_runs(cts)


@pytest.mark.parametrize("bad", ["4", None, 1.5])
def test_non_integer_offsets_and_lengths_are_invalid(cts, bad):
    src, dst = cts.buffer(64), cts.buffer(64)
    with pytest.raises(hal_core.InvalidArgumentError):
        cts.device.queue_fill(ANY, [], [], dst, bad, 4, b"\x01")
    with pytest.raises(hal_core.InvalidArgumentError):
        cts.device.queue_fill(ANY, [], [], dst, 0, bad, b"\x01")
    with pytest.raises(hal_core.InvalidArgumentError):
        cts.device.queue_copy(ANY, [], [], src, 0, dst, 0, bad)
    with pytest.raises(hal_core.InvalidArgumentError):
        cts.device.queue_copy(ANY, [], [], src, bad, dst, 0, 4)
    with pytest.raises(hal_core.InvalidArgumentError):
        cts.device.queue_update(ANY, [], [], bytes(8), 0, dst, bad, 4)
    _later_work_runs(cts)


def test_update_out_of_range(cts):
    buf = cts.buffer(64)
    data = bytes(100)
    with pytest.raises(hal_core.OutOfRangeError):
        cts.device.queue_update(ANY, [], [], data, 0, buf, 0, 65)
    with pytest.raises(hal_core.OutOfRangeError):
        cts.device.queue_update(ANY, [], [], data, 0, buf, 60, 8)
    with pytest.raises(hal_core.OutOfRangeError, match="host bytes"):
        cts.device.queue_update(ANY, [], [], data, 90, buf, 0, 20)
    with pytest.raises(hal_core.InvalidArgumentError, match="buffer-protocol"):
        cts.device.queue_update(ANY, [], [], "not bytes", 0, buf, 0, 4)
    _later_work_runs(cts)


def test_copy_out_of_range(cts):
    src, dst = cts.buffer(64), cts.buffer(32)
    with pytest.raises(hal_core.OutOfRangeError):
        cts.device.queue_copy(ANY, [], [], src, 0, dst, 0, 64)
    with pytest.raises(hal_core.OutOfRangeError):
        cts.device.queue_copy(ANY, [], [], src, 40, dst, 0, 32)
    with pytest.raises(hal_core.OutOfRangeError):
        cts.device.queue_copy(ANY, [], [], src, 0, dst, 31, 2)
    _later_work_runs(cts)


def test_copy_overlapping_ranges_is_invalid(cts):
    buf = cts.buffer(64)
    with pytest.raises(hal_core.InvalidArgumentError, match="overlap"):
        cts.device.queue_copy(ANY, [], [], buf, 0, buf, 16, 32)
    with pytest.raises(hal_core.InvalidArgumentError, match="overlap"):
        cts.device.queue_copy(ANY, [], [], buf.subspan(0, 32), 8, buf.subspan(16, 32), 0, 16)
    _later_work_runs(cts)


def test_missing_usage_is_permission_denied(cts):
    no_transfer = cts.device.allocator.allocate_buffer(
        BufferParams(usage=BufferUsage.DISPATCH_STORAGE), 64
    )
    ok = cts.buffer(64)
    with pytest.raises(hal_core.PermissionDeniedError, match="TRANSFER_TARGET") as info:
        cts.device.queue_fill(ANY, [], [], no_transfer, 0, 64, b"\x01")
    assert info.value.code == StatusCode.PERMISSION_DENIED
    with pytest.raises(hal_core.PermissionDeniedError):
        cts.device.queue_update(ANY, [], [], bytes(64), 0, no_transfer, 0, 64)
    with pytest.raises(hal_core.PermissionDeniedError, match="TRANSFER_SOURCE"):
        cts.device.queue_copy(ANY, [], [], no_transfer, 0, ok, 0, 64)
    with pytest.raises(hal_core.PermissionDeniedError):
        cts.device.queue_copy(ANY, [], [], ok, 0, no_transfer, 0, 64)
    _later_work_runs(cts)


def test_non_buffer_arguments_are_invalid(cts):
    buf = cts.buffer(16)
    with pytest.raises(hal_core.InvalidArgumentError, match="Buffer"):
        cts.device.queue_fill(ANY, [], [], bytearray(16), 0, 16, b"\x01")
    with pytest.raises(hal_core.InvalidArgumentError, match="Buffer"):
        cts.device.queue_copy(ANY, [], [], buf, 0, b"x" * 16, 0, 16)
    _later_work_runs(cts)


def _deallocated_buffer(cts, size=64):
    sem = cts.semaphore(0)
    buf = cts.device.queue_alloca(ANY, [], [(sem, 1)], None, size)
    cts.wait(sem, 1)
    cts.device.queue_dealloca(ANY, [(sem, 1)], [(sem, 2)], buf)
    cts.wait(sem, 2)
    return buf


@pytest.mark.parametrize("op", ["fill", "update", "copy_from", "copy_to"])
def test_deallocated_buffer_fails_later_op(cts, op):
    """IREE allows either an enqueue-time INVALID_ARGUMENT or a signal failed with
    FAILED_PRECONDITION; either way nothing else is disturbed."""
    dead = _deallocated_buffer(cts)
    live = cts.buffer(64, deterministic_bytes(64, seed=21))
    sem = cts.semaphore(0)
    submit = {
        "fill": lambda: cts.device.queue_fill(ANY, [], [(sem, 1)], dead, 0, 64, b"\x01"),
        "update": lambda: cts.device.queue_update(ANY, [], [(sem, 1)], bytes(64), 0, dead, 0, 64),
        "copy_from": lambda: cts.device.queue_copy(ANY, [], [(sem, 1)], dead, 0, live, 0, 64),
        "copy_to": lambda: cts.device.queue_copy(ANY, [], [(sem, 1)], live, 0, dead, 0, 64),
    }[op]
    try:
        submit()
    except hal_core.InvalidArgumentError:
        pass  # refused at enqueue: one of the two answers IREE allows
    else:
        with pytest.raises(hal_core.FailedPreconditionError) as info:
            sem.wait(1, TIMEOUT)
        assert info.value.code == StatusCode.FAILED_PRECONDITION
        assert sem.value >= hal_core.FAILURE_VALUE
    assert cts.read_bytes(live) == deterministic_bytes(64, seed=21)
    _later_work_runs(cts)


def test_failed_wait_skips_the_transfer(cts):
    base = deterministic_bytes(64, seed=22)
    buf = cts.buffer(64, base)
    gate, done = cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_fill(ANY, [(gate, 1)], [(done, 1)], buf, 0, 64, b"\x00")
    gate.fail(StatusCode.ABORTED, "upstream")
    with pytest.raises(hal_core.AbortedError):
        done.wait(1, TIMEOUT)
    assert cts.read_bytes(buf) == base  # the fill never ran
    _later_work_runs(cts)


# --------------------------------------------------------------------------- properties

try:  # hypothesis is a test extra; the CTS still runs without it
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    _HAVE_HYPOTHESIS = True
except ImportError:  # pragma: no cover
    _HAVE_HYPOTHESIS = False

_SIZE = 96


def _transfer_ops():
    offset = st.integers(0, _SIZE)

    def fill(pattern_length, o, n, pattern):
        o -= o % pattern_length
        n -= n % pattern_length
        return ("fill", o, n, pattern[:pattern_length])

    fills = st.builds(
        fill,
        st.sampled_from([1, 2, 4]),
        offset,
        st.integers(0, _SIZE),
        st.binary(min_size=4, max_size=4),
    )
    updates = st.builds(lambda o, data: ("update", o, data), offset, st.binary(max_size=_SIZE))
    copies = st.builds(lambda s, t, n: ("copy", s, t, n), offset, offset, st.integers(0, _SIZE))
    return st.lists(st.one_of(fills, updates, copies), min_size=1, max_size=12)


def _model_and_submit(cts, ops, buffers, model, sem):
    """Submit each op (chained through ``sem``, alternating queues) and apply it to the
    numpy model; ops that are out of range must raise OUT_OF_RANGE at call time and leave
    both the device and the model unchanged. Returns the last value signalled."""
    affinities = cts.queue_affinities()
    value = sem.query()
    for i, op in enumerate(ops):
        affinity = affinities[i % len(affinities)]
        waits, signals = [(sem, value)], [(sem, value + 1)]
        target = i % 2
        buf, other = buffers[target], buffers[1 - target]
        kind = op[0]
        if kind == "fill":
            _, o, n, pattern = op
            fits = o + n <= _SIZE
            submit = partial(cts.device.queue_fill, affinity, waits, signals, buf, o, n, pattern)
            lands = (o, np.frombuffer(pattern * (n // len(pattern)), np.uint8))
        elif kind == "update":
            _, o, data = op
            fits = o + len(data) <= _SIZE
            submit = partial(
                cts.device.queue_update, affinity, waits, signals, data, 0, buf, o, len(data)
            )
            lands = (o, np.frombuffer(data, np.uint8))
        else:
            _, src, o, n = op
            fits = src + n <= _SIZE and o + n <= _SIZE
            submit = partial(cts.device.queue_copy, affinity, waits, signals, other, src, buf, o, n)
            lands = (o, model[1 - target][src : src + n].copy())
        if not fits:
            with pytest.raises(hal_core.OutOfRangeError):
                submit()
            continue
        submit()
        o, data = lands
        model[target][o : o + data.size] = data
        value += 1
    return value


if _HAVE_HYPOTHESIS:

    @settings(
        max_examples=20,
        deadline=None,
        database=None,  # the CTS runs from installed packages: leave no files behind
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(ops=_transfer_ops())
    def test_random_transfer_sequences_match_a_model(cts, ops):
        """Any sequence of fills, updates and copies between two buffers, ordered only by
        one semaphore and spread over the queues, gives what a host model gives."""
        seeds = (deterministic_bytes(_SIZE, seed=40), deterministic_bytes(_SIZE, seed=41))
        buffers = [cts.buffer(_SIZE, seeds[0]), cts.buffer(_SIZE, seeds[1])]
        model = [np.frombuffer(s, np.uint8).copy() for s in seeds]
        sem = cts.semaphore(0)
        last = _model_and_submit(cts, ops, buffers, model, sem)
        cts.wait(sem, last)
        assert cts.read_bytes(buffers[0]) == model[0].tobytes()
        assert cts.read_bytes(buffers[1]) == model[1].tobytes()
