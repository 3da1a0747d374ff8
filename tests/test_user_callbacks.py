"""No HAL thread can be killed by user code.

With Python's default ``sys.unraisablehook`` (pytest's own hook accepts anything and hid
reporting bugs), every kind of user callback raises, or returns something odd, on every
queue of every backend: blocking, DEFERRED and NON_BLOCKING host calls, semaphore
timepoint callbacks and profiler sinks. Afterwards a 1 MiB fill on every queue of the
device must still run and produce the right bytes: a worker, completion thread or
packet processor that died would leave it hanging (each wait has a deadline, so the test
fails instead).
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import hal_core as hal
from hal_core import HostCallFlags, MemoryAccess, StatusCode
from hal_core.profiling import ProfilingDataFamily, ProfilingOptions

BACKENDS = ["local-task://", "local-sync://", "amdgpu://0?hsa=soft"]
TIMEOUT = 30
MIB = 1 << 20
ROUNDS = 3  # more failing calls per queue than local-task has workers in total


class _EqRaises:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("== raises")

    __hash__ = object.__hash__


class _BrokenSink:
    """A profiler sink whose every method raises."""

    def begin_session(self, metadata):
        pass

    def write(self, metadata, payloads):
        raise OSError("sink write failed")

    def end_session(self, metadata, status_code):
        raise OSError("sink end failed")


class _CountingSink:
    def __init__(self) -> None:
        self.writes = 0
        self.ended = False

    def begin_session(self, metadata):
        pass

    def write(self, metadata, payloads):
        self.writes += 1

    def end_session(self, metadata, status_code):
        self.ended = True


@pytest.fixture(params=BACKENDS)
def device(request):
    try:
        dev = hal.create_device(request.param)
    except hal.UnavailableError as exc:
        pytest.skip(f"{request.param}: {exc}")
    with dev:
        yield dev


@pytest.fixture
def reports(monkeypatch):
    """Python's default unraisable hook, wrapped only to count reports (the wrapper passes
    the hook's own argument on, so a malformed report still fails as it would)."""
    done = threading.Semaphore(0)

    def hook(args):
        sys.__unraisablehook__(args)
        done.release()

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return done


def _expect_failure(sem: hal.Semaphore, value: int, error: type) -> None:
    with pytest.raises(error):
        sem.wait(value, TIMEOUT)


def _fills_work_on_every_queue(device: hal.Device) -> None:
    for q in range(device.queue_count):
        buf = device.allocator.allocate_buffer(hal.BufferParams(), MIB)
        pattern = (0x01020304 + q).to_bytes(4, "little")
        out = bytearray(MIB)
        file = device.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
        filled, read = device.create_semaphore(), device.create_semaphore()
        device.queue_fill(1 << q, [], [(filled, 1)], buf, 0, MIB, pattern)
        device.queue_write(1 << q, [(filled, 1)], [(read, 1)], buf, 0, file, 0, MIB)
        read.wait(1, TIMEOUT)
        file.close()
        words = np.frombuffer(out, np.uint32)
        assert (words == int.from_bytes(pattern, "little")).all(), f"queue {q}"


def test_no_user_callback_can_kill_a_hal_thread(device, reports, capsys):
    expected_reports = 0
    for _round in range(ROUNDS):
        for q in range(device.queue_count):
            a = 1 << q

            # Blocking host calls: a raise, odd return values, a bad context.fail.
            def raises(args, ctx):
                raise RuntimeError("blocking host call failed")

            for fn, error in [
                (raises, hal.UnknownError),
                (lambda args, ctx: np.ones(3), hal.InvalidArgumentError),
                (lambda args, ctx: _EqRaises(), hal.InvalidArgumentError),
                (lambda args, ctx: True, hal.InvalidArgumentError),
                (lambda args, ctx: ctx.fail("not a status"), hal.InvalidArgumentError),
            ]:
                done = device.create_semaphore()
                device.queue_host_call(a, [], [(done, 1)], fn)
                _expect_failure(done, 1, error)

            # DEFERRED: completed (signalled, or failed) from timepoint callbacks that then
            # raise on the thread signalling the gate (a HAL thread on asynchronous backends).
            gate = device.create_semaphore()
            ok, failed = device.create_semaphore(), device.create_semaphore()

            def deferred(args, ctx, gate=gate):
                def complete(_arg, _status):
                    if args[0]:
                        ctx.fail(hal.DataLossError("deferred work lost"))
                    else:
                        ctx.signal()
                    raise RuntimeError("deferred completion callback failed")

                gate.add_timepoint(1, complete, None)
                return StatusCode.DEFERRED

            device.queue_host_call(a, [], [(ok, 1)], deferred, (0, 0, 0, 0))
            device.queue_host_call(a, [], [(failed, 1)], deferred, (1, 0, 0, 0))
            trigger = device.create_semaphore()
            device.queue_barrier(a, [], [(trigger, 1)])
            device.queue_host_call(a, [(trigger, 1)], [(gate, 1)], lambda args, ctx: None)
            ok.wait(1, TIMEOUT)
            _expect_failure(failed, 1, hal.DataLossError)
            expected_reports += 2

            # NON_BLOCKING: signalled first, the error is only reported.
            done = device.create_semaphore()
            device.queue_host_call(a, [], [(done, 1)], raises, flags=HostCallFlags.NON_BLOCKING)
            done.wait(1, TIMEOUT)
            expected_reports += 1

            # A timepoint callback on a semaphore the queue signals (runs on its thread),
            # with another callback queued behind it that must still run.
            sem, after = device.create_semaphore(), []

            def bad_timepoint(_arg, _status):
                raise RuntimeError("timepoint callback failed")

            sem.add_timepoint(1, bad_timepoint, None)
            sem.add_timepoint(1, lambda arg, status: arg.append("ran"), after)
            fence = device.create_semaphore()
            device.queue_barrier(a, [], [(sem, 1)])
            device.queue_barrier(a, [(sem, 1)], [(fence, 1)])
            fence.wait(1, TIMEOUT)
            expected_reports += 1
            assert after == ["ran"]

    # Profiler sinks: a broken sink fails the flush of whoever flushes (here a host call
    # on each queue, so on a HAL thread), but not the session, the other sink or a thread.
    counting = _CountingSink()
    device.profiling_begin(
        ProfilingOptions(
            data_families=ProfilingDataFamily.QUEUE_EVENTS, sinks=[_BrokenSink(), counting]
        )
    )
    for q in range(device.queue_count):
        done = device.create_semaphore()
        device.queue_host_call(1 << q, [], [(done, 1)], lambda args, ctx: device.profiling_flush())
        with pytest.raises(hal.UnknownError, match="sink write failed"):
            done.wait(1, TIMEOUT)
    with pytest.raises(OSError, match="sink write failed"):
        device.profiling_end()
    assert counting.writes > 0 and counting.ended
    expected_reports += 1  # the broken sink's end_session error, behind its write error

    for _ in range(expected_reports):
        assert reports.acquire(timeout=TIMEOUT), "an error was not reported"
    _fills_work_on_every_queue(device)
    err = capsys.readouterr().err
    assert "TypeError" not in err
    assert "deferred completion callback failed" in err
    assert "timepoint callback failed" in err
    assert "sink end failed" in err
