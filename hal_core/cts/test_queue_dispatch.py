"""CTS: ``queue_dispatch`` (a dispatch without a command buffer)."""

from __future__ import annotations

import gc
import weakref

import pytest

import hal_core as hal
from hal_core import BufferRef, DispatchConfig, DispatchFlags, QueueAffinity

from .context import TIMEOUT
from .dispatch_support import (  # noqa: F401
    count_constant,
    dbuffer,
    executable,
    f32,
    pytest_generate_tests,
    read_f32,
    read_u32,
    scale_offset_constants,
    u32,
)

pytestmark = pytest.mark.hal_requires("dispatch")

ANY = QueueAffinity.ANY
ONE = DispatchConfig.static(1)
COUNT_4 = count_constant(4)


def test_queue_dispatch(cts, exe_format):
    exe = executable(cts, exe_format)
    src = dbuffer(cts, 16, f32([1, 2, 3, 4]))
    dst = dbuffer(cts, 16)
    sem = cts.semaphore()
    so = scale_offset_constants(3, 10, 4)
    cts.device.queue_dispatch(ANY, (), [(sem, 1)], exe, "scale_and_offset", ONE, so, [src, dst])
    sem.wait(1, TIMEOUT)
    assert read_f32(cts, dst) == [13, 16, 19, 22]


def test_queue_dispatch_retains_resources(cts, exe_format):
    exe = executable(cts, exe_format)
    src = dbuffer(cts, 16, f32([1, 2, 3, 4]))
    dst = dbuffer(cts, 16)
    gate, sem = cts.semaphore(), cts.semaphore()
    bindings = [BufferRef(src), dst]
    watch = weakref.ref(src)
    cts.device.queue_dispatch(ANY, [(gate, 1)], [(sem, 1)], exe, "negate", ONE, COUNT_4, bindings)
    del src
    bindings.clear()
    gc.collect()
    assert watch() is not None  # held by the submission
    gate.signal(1)
    sem.wait(1, TIMEOUT)
    assert read_f32(cts, dst) == [-1, -2, -3, -4]
    gc.collect()
    assert watch() is None  # released once the signal published


def test_queue_dispatch_borrowed_lifetimes(cts, exe_format):
    exe = executable(cts, exe_format)
    src = dbuffer(cts, 16, f32([1, 2, 3, 4]))
    dst = dbuffer(cts, 16)
    gate, sem = cts.semaphore(), cts.semaphore()
    cts.device.queue_dispatch(
        ANY,
        [(gate, 1)],
        [(sem, 1)],
        exe,
        "double",
        ONE,
        COUNT_4,
        [src, dst],
        DispatchFlags.BORROW_RESOURCE_LIFETIMES,
    )
    gate.signal(1)  # the caller keeps src and dst alive: that is the contract
    sem.wait(1, TIMEOUT)
    assert read_f32(cts, dst) == [2, 4, 6, 8]


def test_queue_dispatch_zero_workgroups_still_signals(cts, exe_format):
    exe = executable(cts, exe_format)
    out = dbuffer(cts, 8, b"\xff" * 8)
    sem = cts.semaphore()
    cts.device.queue_dispatch(
        ANY, (), [(sem, 1)], exe, "write_workgroup_ids", DispatchConfig.static(0, 1, 1), b"", [out]
    )
    sem.wait(1, TIMEOUT)
    assert cts.read_bytes(out) == b"\xff" * 8


def test_queue_dispatch_wait_before_signal(cts, exe_format):
    exe = executable(cts, exe_format)
    a = dbuffer(cts, 16, f32([1, 2, 3, 4]))
    b = dbuffer(cts, 16)
    c = dbuffer(cts, 16)
    s1, s2, s3 = cts.semaphore(), cts.semaphore(), cts.semaphore()
    dev = cts.device
    dev.queue_dispatch(ANY, [(s2, 1)], [(s3, 1)], exe, "negate", ONE, COUNT_4, [b, c])
    dev.queue_dispatch(ANY, [(s1, 1)], [(s2, 1)], exe, "double", ONE, COUNT_4, [a, b])
    # Independent work is not blocked behind the parked dispatches.
    other = dbuffer(cts, 16)
    s4 = cts.semaphore()
    dev.queue_dispatch(ANY, (), [(s4, 1)], exe, "double", ONE, COUNT_4, [a, other])
    s4.wait(1, TIMEOUT)
    assert s3.value == 0
    s1.signal(1)
    s3.wait(1, TIMEOUT)
    assert read_f32(cts, c) == [-2, -4, -6, -8]


@pytest.mark.parametrize(
    "flags", [DispatchFlags.STATIC_INDIRECT_PARAMETERS, DispatchFlags.DYNAMIC_INDIRECT_PARAMETERS]
)
def test_queue_dispatch_indirect_parameters(cts, exe_format, flags):
    exe = executable(cts, exe_format)
    params = dbuffer(cts, 16, u32([0, 2, 3, 1]))
    out = dbuffer(cts, 4 * 8, b"\xff" * 32)
    sem = cts.semaphore()
    cts.device.queue_dispatch(
        ANY,
        (),
        [(sem, 1)],
        exe,
        "write_workgroup_ids",
        DispatchConfig.indirect(BufferRef(params, 4, 12)),
        b"",
        [out],
        flags,
    )
    sem.wait(1, TIMEOUT)
    assert read_u32(cts, out) == [0, 1, 2, 3, 4, 5, 0xFFFFFFFF, 0xFFFFFFFF]


def test_queue_dispatch_bad_input(cts, exe_format):
    exe = executable(cts, exe_format)
    buf = dbuffer(cts, 16)
    sem = cts.semaphore()
    qd = cts.device.queue_dispatch
    with pytest.raises(hal.InvalidArgumentError, match="direct references only"):
        qd(ANY, (), [(sem, 1)], exe, "negate", ONE, COUNT_4, [buf, BufferRef.indirect(0)])
    with pytest.raises(hal.NotFoundError):
        qd(ANY, (), [(sem, 1)], exe, "missing", ONE, b"", [buf, buf])
    with pytest.raises(hal.InvalidArgumentError, match="multiple of 4"):
        qd(ANY, (), [(sem, 1)], exe, "scale_and_offset", ONE, b"123", [buf, buf])
    with pytest.raises(hal.OutOfRangeError):
        qd(ANY, (), [(sem, 1)], exe, "negate", ONE, COUNT_4, [buf, BufferRef(buf, 8, 16)])
    with pytest.raises(hal.InvalidArgumentError):
        qd(ANY, (), [(sem, 1)], "not an executable", "negate", ONE, COUNT_4, [buf, buf])
    assert sem.value == 0
    qd(ANY, (), [(sem, 1)], exe, "negate", ONE, COUNT_4, [buf, buf.subspan(0, 16)])
    sem.wait(1, TIMEOUT)


def test_queue_dispatch_kernel_failure(cts, exe_format):
    exe = executable(cts, exe_format)
    sem = cts.semaphore()
    cts.device.queue_dispatch(
        ANY, (), [(sem, 1)], exe, "fail_status", DispatchConfig.static(2), u32([13, 1]), []
    )
    with pytest.raises(hal.InternalError):
        sem.wait(1, TIMEOUT)
    ok = cts.semaphore()
    cts.device.queue_dispatch(ANY, (), [(ok, 1)], exe, "noop", ONE, b"", [])
    ok.wait(1, TIMEOUT)
