"""amdgpu reliability over the software agent: devices free what they load, close from any
thread (a host call of the device itself included), the completion thread survives
whatever user code raises, and a 100,000-op chain on one timeline completes.

Tests with threads run with Python's default ``sys.unraisablehook`` (pytest installs its
own, which accepts anything and would hide a reporter that kills the thread)."""

from __future__ import annotations

import gc
import sys
import threading

import numpy as np
import pytest

import hal_core
from hal_core import HostCallFlags

URI = "amdgpu://0?hsa=soft"
TIMEOUT = 30.0
MIB = 1 << 20


@pytest.fixture
def default_hooks(monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)


def _live(runtime) -> dict[str, int]:
    """Everything the soft agent holds for its users (handles and memory)."""
    return {
        "executables": len(runtime._executables),
        "loaded code objects": len(runtime._loaded),
        "kernel objects": len(runtime.kernel_objects),
        "allocations": len(runtime.memory._by_start),
        "signals": len(runtime.signals._records),
        "queues": len(runtime._queues),
        "readers": len(runtime._readers),
    }


def _use(device) -> None:
    """Touch every path that loads or allocates: blits, a command buffer, a host call, an
    alloca/dealloca pair, a user executable."""
    buf = device.allocator.allocate_buffer(None, 4096)
    sem = device.create_semaphore(0)
    device.queue_fill(1, [], [(sem, 1)], buf, 0, 4096, b"\x11")
    device.queue_copy(2, [(sem, 1)], [(sem, 2)], buf, 0, buf, 2048, 1024)
    cb = device.create_command_buffer(hal_core.CommandBufferMode.ONE_SHOT)
    cb.begin()
    cb.fill_buffer(hal_core.BufferRef(buf, 0, 64), b"\x22")
    cb.end()
    device.queue_execute(1, [(sem, 2)], [(sem, 3)], cb)
    device.queue_host_call(1, [(sem, 3)], [(sem, 4)], lambda args, ctx: None, (0, 0, 0, 0))
    transient = device.queue_alloca(1, [(sem, 4)], [(sem, 5)], None, 1024)
    device.queue_dealloca(1, [(sem, 5)], [(sem, 6)], transient)
    sem.wait(6, TIMEOUT)


def test_device_cycles_free_everything_they_load():
    """Each device used to leave its device library loaded for the process (an executable,
    its code object memory and kernel objects per device, ~41 KiB each). After any
    number of create/use/close cycles the agent holds what it held before."""
    first = hal_core.create_device(URI)
    runtime = first.backend.hsa.lib
    first.close()
    gc.collect()
    baseline = _live(runtime)
    for _ in range(12):
        device = hal_core.create_device(URI)
        assert device.backend.hsa.lib is runtime
        _use(device)
        device.close()
    gc.collect()
    assert _live(runtime) == baseline


def test_device_library_is_freed_with_the_queues():
    with hal_core.create_device(URI) as device:
        _use(device)
        library = device.backend._host_queue_set.library
        executables = list(library.executables)
        assert executables and not any(e.closed for e in executables)
    assert all(e.closed for e in executables)


def _close_from_inside(device, how: str) -> threading.Event:
    """Arrange for ``device.close()`` to run on one of the device's own completion
    threads; the event is set once close returned there."""
    closed = threading.Event()
    errors: list[BaseException] = []

    def close(*_args):
        try:
            device.close()
        except BaseException as exc:  # recorded for the assertion below
            errors.append(exc)
        closed.set()

    sem = device.create_semaphore(0)
    if how == "blocking":
        device.queue_host_call(1, [], [(sem, 1)], close, (0, 0, 0, 0))
    elif how == "non_blocking":
        device.queue_host_call(
            2, [], [(sem, 1)], close, (0, 0, 0, 0), flags=HostCallFlags.NON_BLOCKING
        )
    else:  # a semaphore callback run by the completion thread that signals it
        sem.add_timepoint(1, lambda arg, status: close(), None)
        device.queue_barrier(1, [], [(sem, 1)])
    closed.errors = errors  # type: ignore[attr-defined]
    return closed


@pytest.mark.parametrize("how", ["blocking", "non_blocking", "timepoint"])
def test_close_from_a_completion_thread(default_hooks, capfd, how):
    """Closing from a host call (or a callback) of the device itself: the completion
    thread must not join itself, and what it still reads (its stop and epoch signals,
    the kernarg ring) must outlive it. Everything is freed once it ends."""
    device = hal_core.create_device(URI)
    runtime = device.backend.hsa.lib
    _use(device)  # queues exist, work has run
    qset = device.backend._host_queue_set
    threads = [q._thread for q in qset.queues]
    # in-flight work on the other queue is drained or cancelled, never left hanging
    other = device.create_semaphore(0)
    buf = device.allocator.allocate_buffer(None, MIB)
    device.queue_fill(2, [], [(other, 1)], buf, 0, MIB, b"\x01")
    closed = _close_from_inside(device, how)
    assert closed.wait(TIMEOUT)
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive()
    assert closed.errors == []
    assert device.closed or device.backend._closed
    # the other queue's fill finished or was cancelled: either way it completed
    try:
        other.wait(1, TIMEOUT)
    except hal_core.CancelledError:
        pass
    gc.collect()
    assert _live(runtime)["signals"] == 0 and _live(runtime)["queues"] == 0
    assert runtime.init_count == 0  # hsa_shut_down ran after the thread ended
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception" not in err, err


def test_close_from_a_host_call_then_reopen(default_hooks):
    device = hal_core.create_device(URI)
    closed = _close_from_inside(device, "blocking")
    assert closed.wait(TIMEOUT)
    with hal_core.create_device(URI) as again:
        _use(again)


def _fill_every_queue(device) -> None:
    buf = device.allocator.allocate_buffer(None, MIB)
    for q in range(device.queue_count):
        sem = device.create_semaphore(0)
        device.queue_fill(1 << q, [], [(sem, 1)], buf, 0, MIB, bytes([q + 1]))
        sem.wait(1, TIMEOUT)
    host = np.zeros(MIB, np.uint8)
    done = device.create_semaphore(0)
    device.queue_write(
        1, [], [(done, 1)], buf, 0, device.import_file(host, hal_core.MemoryAccess.WRITE), 0, MIB
    )
    done.wait(1, TIMEOUT)
    assert host[0] == device.queue_count and host[-1] == device.queue_count


class Boom(Exception):
    pass


def _raise(*_args):
    raise Boom("user callback failed on purpose")


def test_completion_thread_survives_every_user_callback(default_hooks, capfd):
    """Every kind of user callback the completion thread runs raises: blocking and
    NON_BLOCKING host calls, a semaphore callback, a retire listener. Each failure is
    reported (or fails the op's signals), the callbacks behind it still run, and the
    queues keep working."""
    with hal_core.create_device(URI) as device:
        _fill_every_queue(device)  # creates the queues
        qset = device.backend._host_queue_set
        for q in range(device.queue_count):
            aff = 1 << q
            sem = device.create_semaphore(0)
            later = device.create_semaphore(0)
            device.queue_host_call(
                aff, [], [(sem, 1)], _raise, (0, 0, 0, 0), flags=HostCallFlags.NON_BLOCKING
            )
            # a raising callback and a good one on one semaphore, and another semaphore
            # signalled by the same drain
            ran = threading.Event()
            sem.add_timepoint(2, _raise, None)
            sem.add_timepoint(2, lambda arg, status: arg.set(), ran)
            device.queue_barrier(aff, [(sem, 1)], [(sem, 2), (later, 1)])
            later.wait(1, TIMEOUT)
            assert ran.wait(TIMEOUT)
            failed = device.create_semaphore(0)
            device.queue_host_call(aff, [], [(failed, 1)], _raise, (0, 0, 0, 0))
            with pytest.raises(hal_core.HalError, match="failed on purpose"):
                failed.wait(1, TIMEOUT)
        qset.retire_listener = _raise
        _fill_every_queue(device)
        qset.retire_listener = None
        _fill_every_queue(device)
        assert all(q._thread.is_alive() for q in qset.queues)
    err = capfd.readouterr().err
    assert "failed on purpose" in err  # reported, not swallowed


def test_a_hundred_thousand_op_chain_on_one_timeline():
    """100,000 ops, each waiting on the previous value of one timeline semaphore and
    signalling the next, alternating the device's two queues (every wait crosses queues:
    software deferral on gfx1100), released by one host signal."""
    n = 100_000
    with hal_core.create_device(URI) as device:
        sem = device.create_semaphore(0)
        for i in range(n):
            device.queue_barrier(1 << (i & 1), [(sem, i + 1)], [(sem, i + 2)])
        sem.signal(1)
        sem.wait(n + 1, 300)
        assert sem.query() == n + 1


@pytest.mark.parametrize(
    "uri",
    [
        "amdgpu://0?hsa=soft&soft_gpus=gfx90a",  # barrier-value packets by default
        "amdgpu://0?hsa=soft&wait_barrier=barrier_value",
        "amdgpu://0?hsa=soft",  # software deferral
    ],
)
def test_a_chain_alternating_queues_signals_in_order(uri):
    """Each op waits on the previous value of one semaphore (produced by the other
    queue) and signals the next. Device-ordered on the GPU, the two completion threads
    used to signal out of order on the host (a higher value first), failing the
    semaphore with INVALID_ARGUMENT."""
    n = 3000
    with hal_core.create_device(uri) as device:
        sem = device.create_semaphore(0)
        for i in range(n):
            device.queue_barrier(1 << (i & 1), [(sem, i)] if i else [], [(sem, i + 1)])
        sem.wait(n, 120)


def test_one_ops_semaphores_all_land_before_work_they_release_signals():
    """An op signals S and T; the next op, on the other queue, waits on S and signals a
    higher T. The first op's T must land before the second op can signal, so all of a
    drained batch's semaphores are signalled before any callback they release runs (the
    window is narrow: this repeats the pattern rather than forcing the interleaving)."""
    with hal_core.create_device(URI) as device:
        for _ in range(200):
            s, t = device.create_semaphore(0), device.create_semaphore(0)
            device.queue_barrier(1, [], [(s, 1), (t, 1)])
            device.queue_barrier(2, [(s, 1)], [(t, 2)])
            t.wait(2, TIMEOUT)
