"""Awaiting timepoints, semaphores and streams from asyncio: no thread per wait, failures
raise, timeouts and cancellation take the timepoint back, a closed loop is no error."""

from __future__ import annotations

import asyncio
import sys
import threading

import numpy as np
import pytest

import hal_core as hal

TIMEOUT = 10.0


@pytest.fixture
def device(monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    dev = hal.create_device("local-task://")
    yield dev
    dev.close()


def test_many_awaits_share_no_threads(device):
    sems = [device.create_semaphore() for _ in range(200)]

    async def main() -> list[int]:
        before = threading.active_count()
        tasks = [asyncio.ensure_future(hal.Timepoint(s, 1)) for s in sems]
        await asyncio.sleep(0)
        assert threading.active_count() == before  # parked on timepoints, not threads
        assert not any(t.done() for t in tasks)
        for i, s in enumerate(sems):  # signalled from a HAL queue, another thread
            device.queue_barrier(1 << (i % device.queue_count), [], [(s, 1)])
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        return [s.value for s in sems]

    assert asyncio.run(main()) == [1] * 200


def test_await_stream_semaphore_and_timepoint(device):
    async def main() -> list[float]:
        s = device.create_stream()
        x = s.upload(np.arange(4, dtype=np.float32))
        s.fill(x, np.float32(3), offset=8)
        tp = s.record()
        await tp
        await tp.wait_async(TIMEOUT)
        await s.semaphore.wait_async(tp.value, TIMEOUT)
        await s
        return s.download(x, np.float32).tolist()

    assert asyncio.run(main()) == [0.0, 1.0, 3.0, 3.0]


def test_await_raises_the_failure_and_names_the_stream_op(device):
    def boom(args, ctx):
        raise ValueError("bad")

    async def main() -> None:
        s = device.create_stream()
        s.barrier()
        s.host_call(boom)
        tp = s.record()
        with pytest.raises(hal.UnknownError, match="bad"):
            await tp
        with pytest.raises(hal.UnknownError, match=r"stream op 2 \(host_call\) failed"):
            await s

    asyncio.run(main())


def test_timeout_and_cancel_take_the_timepoint_back(device, monkeypatch):
    from hal_core import _async_wait

    sem = device.create_semaphore()
    fired = []
    woken = []
    real = _async_wait._on_timepoint
    monkeypatch.setattr(
        _async_wait, "_on_timepoint", lambda arg, err: (woken.append(arg), real(arg, err))
    )

    async def main() -> None:
        with pytest.raises(hal.DeadlineExceededError):
            await sem.wait_async(1, timeout=0.02)
        with pytest.raises(hal.DeadlineExceededError):
            await sem.wait_async(1, timeout=0)
        task = asyncio.ensure_future(sem.wait_async(1))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Nothing of the abandoned waits is left to fire: only this one does.
        sem.add_timepoint(1, lambda arg, err: fired.append(err), None)
        sem.signal(1)
        await sem.wait_async(1)  # reached: returns at once

    asyncio.run(main())
    assert fired == [None]
    assert woken == []


def test_a_closed_loop_is_no_error_on_the_signalling_thread(device, capfd):
    sem = device.create_semaphore()
    loop = asyncio.new_event_loop()
    task = loop.create_task(sem.wait_async(1))
    loop.run_until_complete(asyncio.sleep(0))  # parks the wait on its timepoint
    loop.close()  # the task is abandoned with its loop, its timepoint still parked
    done = device.create_semaphore()
    device.queue_barrier(hal.QueueAffinity.ANY, [], [(sem, 1), (done, 1)])
    done.wait(1, TIMEOUT)
    assert sem.value == 1
    assert "Traceback" not in capfd.readouterr().err
    del task


def test_await_checks_value_and_timeout(device):
    sem = device.create_semaphore(1)

    async def main() -> None:
        await sem.wait_async(np.uint8(1))
        with pytest.raises(hal.InvalidArgumentError):
            await sem.wait_async("1")
        with pytest.raises(hal.InvalidArgumentError):
            await sem.wait_async(2, timeout="soon")
        await sem.wait_async(1, timeout=float("inf"))

    asyncio.run(main())
