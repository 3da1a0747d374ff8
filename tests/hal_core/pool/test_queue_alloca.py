"""The shared queue_alloca/queue_dealloca state machine (``QueueAllocaMachine``), driven
directly through a minimal backend: one queue whose retired epoch the test moves, one
frontier tracker, completions recorded instead of signalled."""

from __future__ import annotations

import gc
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core
from hal_core import AllocaFlags, Buffer, BufferParams, MemoryAccess, MemoryType, PlacementFlags
from hal_core.backend import (
    AllocaState,
    FrontierTracker,
    HostStorage,
    Notification,
    QueueAllocaMachine,
    QueueOp,
    QueueOpKind,
    TransientAllocation,
    axis_make_queue,
    new_buffer,
)
from hal_core.pool import AcquireResult, CpuSlabProvider, FixedBlockPool, PoolSet

T = 10.0
BLOCK = 64


class _Machine(QueueAllocaMachine):
    """Two queues, each on its own tracker axis. ``retired[q]`` is the queue's retire
    watermark; the tracker learns it only through ``publish`` (as local timelines
    publish lazily)."""

    def __init__(self, block_count: int = 1) -> None:
        super().__init__()
        self.tracker = FrontierTracker(axis_capacity=4)
        self.axes = [axis_make_queue(1, 0, 0, q) for q in range(2)]
        for axis in self.axes:
            self.tracker.register_axis(axis)
        self.retired = [0, 0]
        self.notification = Notification()
        self.pool = FixedBlockPool(
            CpuSlabProvider(),
            block_size=BLOCK,
            block_count=block_count,
            notification=self.notification,
            epoch_query=self.tracker.query_epoch,
        )
        self.default_pools = PoolSet()
        self.done: list[tuple[QueueOp, hal_core.HalError | None]] = []
        self.event = threading.Event()

    def publish(self, queue: int) -> None:
        self.tracker.advance(self.axes[queue], self.retired[queue])

    def _complete(self, op, state, error):
        self.done.append((op, error))
        self.event.set()

    def _retired_epoch(self, queue_index):
        return self.retired[queue_index]

    def queue_axis(self, queue_index):
        return self.axes[queue_index]

    def _tracker_for(self, frontier):
        return self.tracker

    def _dealloca_epoch(self, op, queue):
        return self.retired[op.queue]

    def _empty_storage(self):
        return HostStorage.allocate(0)

    def _close_backend(self):
        self.tracker.close()
        self.pool.close()


def _op(m: _Machine, length: int = BLOCK, flags: int = 0, *, lifetime=PlacementFlags.NONE):
    op = QueueOp(QueueOpKind.ALLOCA, 0, (), ())
    op.target = new_buffer(
        None,
        memory_type=MemoryType.HOST_LOCAL,
        allowed_usage=BufferParams().usage,
        allowed_access=MemoryAccess.ALL,
        allocation_size=length,
        placement_flags=PlacementFlags.ASYNCHRONOUS | lifetime,
    )
    op.length = length
    op.pool = m.pool
    op.params = BufferParams()
    op.alloca_state = None
    op.flags = AllocaFlags(flags)
    return op


def _run(m: _Machine, op: QueueOp) -> None:
    m.prepare(op)
    m.begin(op, m.started_state(op))


def _dealloca(m: _Machine, buffer: Buffer, queue: int = 0) -> None:
    op = QueueOp(QueueOpKind.DEALLOCA, queue, (), ())
    op.target = buffer
    m.dealloca(op)


def test_a_subclass_missing_hooks_cannot_be_created():
    class Partial(QueueAllocaMachine):
        def _complete(self, op, state, error):
            self.last = error

    with pytest.raises(TypeError, match="abstract"):
        Partial()


def test_commit_then_dealloca_then_reuse_on_the_same_queue():
    m = _Machine()
    first = _op(m)
    _run(m, first)
    assert m.done == [(first, None)]
    assert first.target.is_committed and first.alloca_state is None
    assert first.target.pool_state.__class__ is TransientAllocation
    m.retired[0] = 1
    _dealloca(m, first.target)
    assert not first.target.is_committed and first.target.pool_state is None
    # The block died at {axis: 1}; the queue retired 1, so it is reused without a wait.
    second = _op(m)
    _run(m, second)
    assert m.done[-1] == (second, None) and second.target.is_committed
    assert m.pending_count == 0


def test_zero_length_commits_empty_storage_without_reserving():
    m = _Machine()
    op = _op(m, 0)
    _run(m, op)
    assert m.done == [(op, None)] and op.target.is_committed
    assert m.pool.query_stats().reservation_count == 0


def test_needs_wait_without_the_flag_raises_at_the_call_and_keeps_the_block():
    m = _Machine()
    first = _op(m)
    _run(m, first)
    # Freed by queue 1 at its epoch 1, which the tracker has not seen yet.
    m.retired[1] = 1
    _dealloca(m, first.target, queue=1)
    refused = _op(m)
    with pytest.raises(hal_core.ResourceExhaustedError, match="ALLOW_POOL_WAIT_FRONTIER"):
        m.prepare(refused)
    assert refused.alloca_state is None and m.pool.query_stats().reservation_count == 0
    # Queued without waits and without the flag, the op fails (and still completes once).
    failed = _op(m)
    failed.alloca_state = None
    m.begin(failed, m.started_state(failed))
    assert m.done[-1][0] is failed
    assert isinstance(m.done[-1][1], hal_core.ResourceExhaustedError)
    # With the flag the queue waits (hidden) for the block's frontier, then commits.
    waiting = _op(m, flags=AllocaFlags.ALLOW_POOL_WAIT_FRONTIER)
    _run(m, waiting)
    assert m.pending_count == 1 and not waiting.target.is_committed
    m.event.clear()
    m.publish(1)
    assert m.event.wait(T)
    assert m.done[-1] == (waiting, None) and waiting.target.is_committed
    assert m.pending_count == 0


def test_exhausted_parks_then_commits_when_memory_is_released():
    m = _Machine()
    first = _op(m)
    _run(m, first)
    parked = _op(m)
    _run(m, parked)
    assert m.pending_count == 1 and not parked.target.is_committed
    m.event.clear()
    _dealloca(m, first.target)
    assert m.event.wait(T)
    assert m.done[-1] == (parked, None) and parked.target.is_committed
    assert m.pending_count == 0


def test_parked_retry_meeting_a_block_in_flight_waits_for_its_frontier():
    m = _Machine()
    first = _op(m)
    _run(m, first)
    parked = _op(m)  # no ALLOW_POOL_WAIT_FRONTIER: parked work may still wait for memory
    _run(m, parked)
    assert m.pending_count == 1
    m.retired[1] = 1
    _dealloca(m, first.target, queue=1)  # wakes the parked op; the block is still in use
    assert m.pending_count == 1 and not parked.target.is_committed
    assert m.pool.query_stats().reservation_count == 0  # handed back while it waits
    m.event.clear()
    m.publish(1)
    assert m.event.wait(T)
    assert m.done[-1] == (parked, None) and parked.target.is_committed
    assert m.pending_count == 0


def test_indeterminate_lifetime_memory_returns_when_the_buffer_is_dropped():
    m = _Machine()
    op = _op(m, lifetime=PlacementFlags.INDETERMINATE_LIFETIME)
    _run(m, op)
    assert op.target.pool_state.finalizer is not None
    assert m.pool.query_stats().reservation_count == 1
    op.target = None
    gc.collect()
    assert m.pool.query_stats().reservation_count == 0


def test_close_cancels_parked_work_once_and_is_idempotent():
    m = _Machine()
    first = _op(m)
    _run(m, first)
    parked = _op(m)
    _run(m, parked)
    m.close()
    m.close()
    op, error = m.done[-1]
    assert op is parked and isinstance(error, hal_core.CancelledError)
    assert [o for o, _e in m.done].count(parked) == 1 and m.pending_count == 0
    late = _op(m)
    m.begin(late, AllocaState(m.pool))
    assert isinstance(m.done[-1][1], hal_core.CancelledError)


def test_bad_requests_raise_before_anything_is_reserved():
    m = _Machine()
    too_big = _op(m, BLOCK * 2)
    with pytest.raises(hal_core.OutOfRangeError, match="pool=None"):
        m.prepare(too_big)
    misaligned = _op(m)
    misaligned.params = BufferParams(min_alignment=4096)
    with pytest.raises(hal_core.InvalidArgumentError, match="request at most"):
        m.prepare(misaligned)
    assert m.pool.query_stats().reservation_count == 0
    not_committed = _op(m)
    with pytest.raises(hal_core.FailedPreconditionError, match="not committed"):
        _dealloca(m, not_committed.target)
    ok = _op(m)  # later work still runs
    _run(m, ok)
    assert m.done == [(ok, None)]


def test_abandon_gives_the_prepared_reservation_back():
    m = _Machine()
    op = _op(m)
    m.prepare(op)
    assert m.pool.query_stats().reservation_count == 1
    m.abandon(op)
    assert op.alloca_state is None and m.pool.query_stats().reservation_count == 0
    assert m.pool.acquire_reservation(BLOCK)[0] in (AcquireResult.OK, AcquireResult.OK_FRESH)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=12))
def test_every_alloca_completes_exactly_once(frees):
    """Allocate into two blocks, freeing the oldest when told to: every op completes once,
    parked ones as soon as memory comes back, and close cancels whatever is left."""
    m = _Machine(block_count=2)
    ops: list[QueueOp] = []
    freed: set[int] = set()
    for free in frees:
        live = [o for o in ops if o.target.is_committed]
        if free and live:
            freed.add(id(live[0]))
            _dealloca(m, live[0].target)
        op = _op(m)
        ops.append(op)
        _run(m, op)
        assert len([o for o in ops if o.target.is_committed]) <= 2
    m.close()
    completed = [o for o, _e in m.done]
    assert sorted(map(id, completed)) == sorted(map(id, ops))
    for op, error in m.done:
        assert (error is None) == (op.target.is_committed or id(op) in freed)
        assert error is None or isinstance(error, hal_core.CancelledError)
    assert m.pending_count == 0
