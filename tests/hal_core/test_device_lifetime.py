"""Closing devices with work in flight, and errors that must not lose later work."""

import threading

import pytest

import hal_core as hal
from hal_core import QueueAffinity

ANY = QueueAffinity.ANY
URIS = ["local-task://", "local-sync://"]


@pytest.mark.parametrize("uri", URIS)
def test_close_fails_waiting_work_with_cancelled_and_never_hangs(uri):
    device = hal.create_device(uri)
    gate = device.create_semaphore()
    done = device.create_semaphore()
    device.queue_barrier(ANY, [(gate, 1)], [(done, 1)])
    device.close()
    with pytest.raises(hal.CancelledError):
        done.wait(1, timeout=5)
    # The gate may still be signalled by its owner; nothing runs on the closed device.
    gate.signal(1)
    with pytest.raises(hal.FailedPreconditionError, match="closed"):
        device.queue_barrier(ANY, [], [(gate, 2)])
    device.close()  # idempotent


def test_close_lets_running_work_finish():
    device = hal.create_device("local-task://")
    started = threading.Event()
    release = threading.Event()
    done = device.create_semaphore()

    def slow(args, ctx):
        started.set()
        assert release.wait(10)

    device.queue_host_call(ANY, [], [(done, 1)], slow)
    assert started.wait(10)
    closer = threading.Thread(target=device.close)
    closer.start()
    release.set()
    closer.join(10)
    assert not closer.is_alive()
    done.wait(1, timeout=5)


@pytest.mark.parametrize("uri", URIS)
def test_host_call_exception_fails_signals_and_later_work_runs(uri):
    with hal.create_device(uri) as device:
        a, b = device.create_semaphore(), device.create_semaphore()

        def boom(args, ctx):
            raise hal.PermissionDeniedError("no access to the thing")

        device.queue_host_call(ANY, [], [(a, 1), (b, 7)], boom)
        for sem, value in ((a, 1), (b, 7)):
            with pytest.raises(hal.PermissionDeniedError, match="no access"):
                sem.wait(value, timeout=5)

        def plain_error(args, ctx):
            raise KeyError("k")

        c = device.create_semaphore()
        device.queue_host_call(ANY, [], [(c, 1)], plain_error)
        with pytest.raises(hal.UnknownError, match="KeyError"):
            c.wait(1, timeout=5)
        ok = device.create_semaphore()
        device.queue_barrier(ANY, [], [(ok, 1)])
        ok.wait(1, timeout=5)


@pytest.mark.parametrize("uri", URIS)
def test_use_after_dealloca_fails_the_op(uri):
    with hal.create_device(uri) as device:
        s = device.create_semaphore()
        buf = device.queue_alloca(ANY, [], [(s, 1)], hal.BufferParams(), 64)
        assert buf.placement_flags & hal.PlacementFlags.ASYNCHRONOUS
        s.wait(1, timeout=5)
        device.queue_dealloca(ANY, [(s, 1)], [(s, 2)], buf)
        s.wait(2, timeout=5)
        f = device.create_semaphore()
        device.queue_fill(ANY, [], [(f, 1)], buf, 0, 64, b"\x01")
        with pytest.raises(hal.FailedPreconditionError, match="deallocated"):
            f.wait(1, timeout=5)
        again = device.create_semaphore()
        other = device.allocator.allocate_buffer(None, 8)
        device.queue_fill(ANY, [], [(again, 1)], other, 0, 8, b"\x02")
        again.wait(1, timeout=5)
        assert other.read() == b"\x02" * 8


def test_signal_backwards_is_invalid_argument_and_state_is_kept():
    with hal.create_device("local-sync://") as device:
        s = device.create_semaphore(5)
        with pytest.raises(hal.InvalidArgumentError, match="increase"):
            s.signal(5)
        with pytest.raises(hal.InvalidArgumentError):
            device.queue_barrier(ANY, [], [(s, 3)])
        assert s.query() == 5
        s.signal(6)
        assert s.query() == 6


def test_bad_semaphore_lists_and_affinities():
    with hal.create_device("local-task://") as device:
        with pytest.raises(hal.InvalidArgumentError, match="pairs"):
            device.queue_barrier(ANY, [1, 2], [])
        with pytest.raises(hal.InvalidArgumentError, match="Semaphore"):
            device.queue_barrier(ANY, [("x", 1)], [])
        with pytest.raises(hal.InvalidArgumentError, match="selects no queue"):
            device.queue_barrier(1 << 10, [], [])
