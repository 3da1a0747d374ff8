"""What the native alloca path keeps between calls, and what makes it look again.

``alloca_op`` / ``dealloca_op`` keep per-call look-ups and objects out of the straight
path: a lane adopts an equal ``params`` object as its key (so the caller's next calls match
by identity), attribute reads (the device's lanes, the pool's budget, the pool set's
entries, a slab's storage) are remembered while the object's dict and type are unchanged,
a queue timeline's ``begin`` is a native ``EpochCounter`` read without a call, and a death
frontier nothing else holds is reused. Each test changes one of those facts after the path
has kept it and checks that the native calls then behave as the Python references do.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hal_core as hal
from hal_core import BufferParams, HalError
from hal_core._device import Device
from hal_core._frontier import Frontier
from hal_core._queue_alloca_paths import alloca_reference, dealloca_reference
from hal_core._queue_fast_paths import native
from hal_core._queue_timeline import QueueTimeline

pytestmark = pytest.mark.skipif(native is None, reason="hal_core._native_queue is not built")


@given(start=st.integers(0, 1 << 62), calls=st.integers(0, 50))
def test_epoch_counter_agrees_with_itertools_count(start: int, calls: int) -> None:
    counter = native.EpochCounter(start)
    reference = itertools.count(start).__next__
    assert [counter() for _ in range(calls)] == [reference() for _ in range(calls)]
    assert counter.next_epoch == reference()
    assert repr(counter) == f"EpochCounter({start + calls})"


def test_epoch_counter_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        native.EpochCounter(-1)
    with pytest.raises(TypeError):
        native.EpochCounter("1")
    counter = native.EpochCounter()
    with pytest.raises(TypeError):
        counter(1)
    with pytest.raises(TypeError):
        counter(step=1)
    assert counter() == 1  # the failed calls took no epoch
    last = native.EpochCounter((1 << 63) - 2)
    assert last() == (1 << 63) - 2
    with pytest.raises(OverflowError):
        last()


def test_timelines_take_epochs_from_the_native_counter() -> None:
    timeline = QueueTimeline(0)
    assert type(timeline.begin) is native.EpochCounter
    assert [timeline.begin() for _ in range(3)] == [1, 2, 3]
    with hal.create_device("local-sync://") as device:
        params = BufferParams()
        sem = device.create_semaphore()
        for i in range(3):
            buffer = device.queue_alloca(1, ((sem, 2 * i),), ((sem, 2 * i + 1),), params, 64)
            device.queue_dealloca(1, ((sem, 2 * i + 1),), ((sem, 2 * i + 2),), buffer)
        # Every op took one epoch and retired it, native or not.
        queue = device._alloca_lanes[0].timelines[0]
        assert queue.retired == queue.begin.next_epoch - 1 == 6


def test_an_equal_params_becomes_the_lane_key() -> None:
    with hal.create_device("local-sync://") as device:
        sem = device.create_semaphore()
        first, second = BufferParams(), BufferParams()
        assert first == second and first is not second
        buffer = device.queue_alloca(1, (), ((sem, 1),), first, 4096)
        device.queue_dealloca(1, ((sem, 1),), ((sem, 2),), buffer)
        lane = device._alloca_lanes[0]
        assert lane.key_params is first
        buffer = device.queue_alloca(1, ((sem, 2),), ((sem, 3),), second, 4096)
        assert lane.key_params is second and device._alloca_lanes == [lane]
        assert buffer.is_committed and sem.query() == 3
        device.queue_dealloca(1, ((sem, 3),), ((sem, 4),), buffer)
        # Another value is another lane; the first stays keyed on its params.
        other = BufferParams(min_alignment=128)
        buffer = device.queue_alloca(1, ((sem, 4),), ((sem, 5),), other, 4096)
        device.queue_dealloca(1, ((sem, 5),), ((sem, 6),), buffer)
        assert lane.key_params is second and device._alloca_lanes[0].key_params is other
        assert sem.query() == 6


def _outcome(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except HalError as exc:
        return ("error", exc.code)


def _scenario(native_calls: bool, change: Callable[[Any, Any], None]) -> list:
    """A ready chain (binding the lane), ``change(device, lane)``, then two more pairs:
    what each call did, the semaphore, and the default pool's books."""
    with hal.create_device("local-sync://") as device:
        if native_calls:
            alloca, dealloca = device.queue_alloca, device.queue_dealloca
        else:

            def alloca(*args: Any) -> Any:
                return alloca_reference(device, *args)

            def dealloca(*args: Any) -> Any:
                return dealloca_reference(device, *args)

        params = BufferParams()
        sem = device.create_semaphore()
        trace: list = []
        v = 0
        for step in range(4):
            if step == 2:
                change(device, device._alloca_lanes[0])
            result = _outcome(alloca, 1, ((sem, v),), ((sem, v + 1),), params, 4096)
            buffer = result[1] if result[0] == "ok" else None
            trace.append(result if buffer is None else ("buffer", buffer.is_committed))
            if buffer is not None:
                trace.append(_outcome(dealloca, 1, ((sem, v + 1),), ((sem, v + 2),), buffer))
            failure = sem.failure
            trace.append((sem._value, failure and failure.code))
            if failure is not None:
                break
            v += 2
        pool = device._alloca_lanes[0].pool
        stats = pool.query_stats()
        trace.append((stats.reservation_count, stats.reserve_count, stats.release_count))
    return trace


def _budget(device: Any, lane: Any) -> None:
    lane.pool.budget_limit = 1024  # below the alloca's 4096 bytes


def _budget_roomy(device: Any, lane: Any) -> None:
    lane.pool.budget_limit = 1 << 30


def _lanes_dropped(device: Any, lane: Any) -> None:
    device._alloca_lanes = []


def _pool_added(device: Any, lane: Any) -> None:
    pools = device.backend.pools.default_pools
    pools.register(-100, type(lane.pool)(lane.pool.provider, range_length=1 << 20))


@pytest.mark.parametrize("change", [_budget, _budget_roomy, _lanes_dropped, _pool_added])
def test_remembered_lookups_follow_changes(change: Callable[[Any, Any], None]) -> None:
    """The pool's budget, the device's lanes and the pool set's entries, changed after the
    native path has read them: the native calls agree with the references."""
    assert _scenario(True, change) == _scenario(False, change)


def test_over_budget_after_a_remembered_read_is_refused() -> None:
    trace = _scenario(True, _budget)
    ready = ("buffer", True), ("ok", None)
    assert trace[:6] == [*ready, (2, None), *ready, (4, None)]
    assert trace[6:] == [
        ("error", hal.StatusCode.RESOURCE_EXHAUSTED),
        (4, None),
        ("error", hal.StatusCode.RESOURCE_EXHAUSTED),
        (4, None),
        (0, 2, 2),
    ]


def test_a_type_level_attribute_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """A data descriptor added to the device's class wins over the instance dict the path
    remembered: the change of the type is seen (its version), not the stale dict entry."""
    with hal.create_device("local-sync://") as device:
        params = BufferParams()
        sem = device.create_semaphore()
        buffer = device.queue_alloca(1, (), ((sem, 1),), params, 4096)
        device.queue_dealloca(1, ((sem, 1),), ((sem, 2),), buffer)
        submitted: list = []
        inner = device._submit_alloca
        device._submit_alloca = lambda op: (submitted.append(op), inner(op))
        buffer = device.queue_alloca(1, ((sem, 2),), ((sem, 3),), params, 4096)
        device.queue_dealloca(1, ((sem, 3),), ((sem, 4),), buffer)
        assert submitted == []  # the lane ran the alloca

        seen: list = []

        def lanes(self: Any) -> list:
            seen.append(self)
            return []

        monkeypatch.setattr(
            Device, "_alloca_lanes", property(lanes, lambda self, v: None), raising=False
        )
        buffer = device.queue_alloca(1, ((sem, 4),), ((sem, 5),), params, 4096)
        assert seen and len(submitted) == 1  # no lane: the reference submitted it
        device.queue_dealloca(1, ((sem, 5),), ((sem, 6),), buffer)
        monkeypatch.undo()
        buffer = device.queue_alloca(1, ((sem, 6),), ((sem, 7),), params, 4096)
        device.queue_dealloca(1, ((sem, 7),), ((sem, 8),), buffer)
        assert len(submitted) == 1 and sem.query() == 8
        assert device._alloca_lanes[0].pool.query_stats().reservation_count == 0
        assert sem.failure is None


def test_a_death_frontier_is_reused_only_when_nothing_holds_it() -> None:
    """The straight dealloca keeps the death frontier it released a block with on the lane
    and reuses it (epoch updated) once the pool let it go; one held elsewhere keeps its
    entries and the next dealloca makes another."""
    with hal.create_device("local-sync://") as device:
        params = BufferParams()
        sem = device.create_semaphore()
        v = 0

        def pair() -> None:
            nonlocal v
            buffer = device.queue_alloca(1, ((sem, v),), ((sem, v + 1),), params, 4096)
            device.queue_dealloca(1, ((sem, v + 1),), ((sem, v + 2),), buffer)
            v += 2

        for _ in range(3):
            pair()
        lane = device._alloca_lanes[0]
        axis = lane.axes[0]
        first = lane.death
        assert isinstance(first, Frontier) and dict(first) == {axis: 5}
        del first
        pair()  # the alloca took the block back (the pool dropped the frontier): reused
        reused = lane.death
        assert dict(reused) == {axis: 7}
        held = reused
        pair()
        assert held is reused and dict(held) == {axis: 7}
        assert lane.death is not held and dict(lane.death) == {axis: 9}
        assert sem.query() == v and lane.pool.query_stats().reservation_count == 0
