"""A dropped buffer's reservation goes back to its pool without ever deadlocking.

Its finalizer runs wherever the last reference dies, including inside a garbage collection
that an allocation started while the same thread holds the pool's non-reentrant lock.
Those cases run in a subprocess with a timeout (on code that took the lock in the
finalizer they hang), so the suite never hangs; the rest run in-process."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from hal_core import AllocaFlags
from hal_core.pool import CpuSlabProvider, FixedBlockPool, PassthroughPool, TlsfPool

TIMEOUT = 60

_PRELUDE = """
import gc, sys
import hal_core
from hal_core import AllocaFlags, BufferParams
from hal_core.pool import CpuSlabProvider, FixedBlockPool, PassthroughPool, TlsfPool

POOLS = {
    "tlsf": lambda: TlsfPool(CpuSlabProvider(), range_length=1 << 16),
    "fixed": lambda: FixedBlockPool(CpuSlabProvider(), block_size=256, block_count=4),
    "passthrough": lambda: PassthroughPool(CpuSlabProvider()),
}


class Cycle:
    def __init__(self, buffer):
        self.buffer = buffer
        self.me = self


def collect_holding(pool):
    # An allocation inside a pool-locked section that starts a collection: the cycle
    # holding the dropped buffer is collected on this thread, under the pool's lock.
    gc.disable()
    pool._lock.acquire()
    try:
        gc.collect()
    finally:
        pool._lock.release()
        gc.enable()
"""


def _run(body: str, native: bool = True) -> None:
    env = dict(os.environ)
    if not native:
        env["HAL_POOL_NATIVE"] = "0"
    script = _PRELUDE + textwrap.dedent(body) + "\nprint('done')\n"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("deadlocked: the dropped buffer's release waited on the pool's lock")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("done"), proc.stdout


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("kind", ["tlsf", "fixed", "passthrough"])
def test_an_owned_buffer_collected_under_the_pool_lock_does_not_deadlock(kind, native):
    _run(
        f"""
        pool = POOLS[{kind!r}]()
        _result, reservation, _info = pool.acquire_reservation(256)
        Cycle(pool.materialize_reservation(None, reservation, transfer_ownership=True))
        collect_holding(pool)
        assert reservation.is_live  # deferred: the lock was held
        stats = pool.query_stats()  # the next operation gives it back
        assert stats.bytes_reserved == 0 and stats.reservation_count == 0, stats
        assert not reservation.is_live
        """,
        native,
    )


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("lifetime", [0, int(AllocaFlags.INDETERMINATE_LIFETIME)])
def test_a_transient_collected_under_the_pool_lock_does_not_deadlock(lifetime, native):
    """Both release routes of a committed queue_alloca buffer: the INDETERMINATE_LIFETIME
    finalizer and the dropped pool state of one that never got its dealloca."""
    _run(
        f"""
        device = hal_core.create_device("local-sync://")
        sem = device.create_semaphore(0)
        buf = device.queue_alloca(hal_core.QueueAffinity.ANY, [], [(sem, 1)],
                                  BufferParams(), 256, flags={lifetime})
        sem.wait(1, 10)
        pool = buf.pool_state.pool
        before = pool.query_stats().bytes_reserved
        assert before >= 256
        Cycle(buf)
        del buf
        collect_holding(pool)
        # The next reserve drains what the collection deferred: the budget is back.
        _r, again, _i = pool.acquire_reservation(256)
        pool.release_reservation(again)
        stats = pool.query_stats()
        assert stats.bytes_reserved == before - 256, (before, stats)
        device.close()
        """,
        native,
    )


def test_a_collection_on_another_thread_holding_the_lock_defers_too():
    """A collection that starts while another thread holds the lock defers (it never
    waits inside the collection): the holder's next operation gives the memory back."""
    _run(
        """
        import threading
        pool = POOLS["tlsf"]()
        _r, reservation, _i = pool.acquire_reservation(256)
        Cycle(pool.materialize_reservation(None, reservation, transfer_ownership=True))
        held, go = threading.Event(), threading.Event()

        def holder():
            with pool._lock:
                held.set()
                go.wait(10)

        t = threading.Thread(target=holder)
        t.start()
        held.wait(10)
        gc.collect()
        go.set()
        t.join(10)
        assert not t.is_alive()
        pool.trim()
        assert pool.query_stats().bytes_reserved == 0
        """
    )


@pytest.fixture(params=["tlsf", "fixed", "passthrough"])
def pool(request):
    pool = {
        "tlsf": lambda: TlsfPool(CpuSlabProvider(), range_length=1 << 16),
        "fixed": lambda: FixedBlockPool(CpuSlabProvider(), block_size=256, block_count=4),
        "passthrough": lambda: PassthroughPool(CpuSlabProvider()),
    }[request.param]()
    yield pool
    if not pool._lock.locked():  # else a deadlocked drop holds it: fail, do not hang
        pool.close()


def _drop_under_lock(pool, holder: list) -> None:
    """Drop the last references (``holder``'s) while holding the pool's lock, on a daemon
    thread joined with a timeout: code whose finalizer takes the lock fails, not hangs."""

    def drop() -> None:
        with pool._lock:
            holder.clear()

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "deadlocked: the dropped buffer's release took the lock"


def _owned(pool):
    _result, reservation, _info = pool.acquire_reservation(256)
    return pool.materialize_reservation(None, reservation, transfer_ownership=True), reservation


def test_a_buffer_dropped_outside_a_collection_releases_at_once(pool):
    buffer, reservation = _owned(pool)
    del buffer
    assert not reservation.is_live and pool._deferred == []
    assert pool.bytes_reserved == 0


@pytest.mark.parametrize("operation", ["acquire", "release", "trim", "query_stats", "close"])
def test_every_operation_drains_what_was_deferred(pool, operation):
    """Dropped while the lock is held (the release is deferred), the reservation goes back
    at the pool's next operation, fast paths included (they defer to the Python path)."""
    buffer, reservation = _owned(pool)
    other = pool.acquire_reservation(256)[1] if operation == "release" else None
    holder = [buffer]
    del buffer
    _drop_under_lock(pool, holder)
    assert reservation.is_live and len(pool._deferred) == 1
    if operation == "acquire":
        got = pool.acquire_reservation(256)[1]
        pool.release_reservation(got)
    elif operation == "release":
        pool.release_reservation(other)
    elif operation == "trim":
        pool.trim()
    elif operation == "query_stats":
        pool.query_stats()
    else:
        pool.close()
        assert pool._deferred == []
        return
    assert not reservation.is_live and pool._deferred == []
    stats = pool.query_stats()
    assert stats.bytes_reserved == 0 and stats.reservation_count == 0


def test_many_deferred_releases_drain_without_recursion():
    """3,000 buffers dropped under the lock (a subprocess: on code whose finalizers take
    the lock, the ones left would hang the interpreter's exit)."""
    _run(
        """
        import threading
        pool = TlsfPool(CpuSlabProvider(), range_length=1 << 20)
        buffers = [
            pool.materialize_reservation(None, pool.acquire_reservation(256)[1],
                                         transfer_ownership=True)
            for _ in range(3000)
        ]

        def drop():
            with pool._lock:
                buffers.clear()

        t = threading.Thread(target=drop, daemon=True)
        t.start()
        t.join(30)
        assert not t.is_alive(), "deadlocked"
        assert len(pool._deferred) == 3000
        assert pool.query_stats().bytes_reserved == 0
        pool.close()
        """
    )


def test_a_deferred_release_of_a_closed_pool_is_dropped():
    pool = TlsfPool(CpuSlabProvider(), range_length=1 << 16)
    buffer, reservation = _owned(pool)
    holder = [buffer]
    del buffer
    gc.disable()
    try:
        _drop_under_lock(pool, holder)
        pool._closed = True  # closed after the drop, before any drain
        pool._drain_deferred()
    finally:
        gc.enable()
    assert pool._deferred == [] and reservation.is_live
    pool._closed = False
    pool.close()
