"""The native ``queue_alloca`` / ``queue_dealloca`` agree with their Python references.

``Device.queue_alloca`` / ``queue_dealloca`` are ``hal_core._native_queue.alloca_op`` /
``dealloca_op`` when the extension is built: the common call shape (and, once the backend
bound an alloca lane, the straight path through its pool machine) in C, everything else
through ``_queue_alloca_paths.alloca_reference`` / ``dealloca_reference``. For any program
of allocas, deallocas, host signals and failures (waits met or not, good and bad arguments,
sizes for the TLSF pool, the passthrough pool and none, the call shapes the lane keys on and
others), a device driven through the native methods and one driven through the references
must agree on every call's result or error, every buffer's metadata, commit state and
reservation, every semaphore's value and failure, and every default pool's statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import hal_core as hal
from hal_core import (
    AllocaFlags,
    BufferParams,
    BufferUsage,
    DeallocaFlags,
    HalError,
    MemoryType,
    StatusCode,
)
from hal_core._queue_alloca_paths import (
    MAX_ALLOCA_LANES,
    AllocaLane,
    alloca_reference,
    dealloca_reference,
)
from hal_core._queue_fast_paths import native
from hal_core.backend import TransientAllocation

pytestmark = pytest.mark.skipif(native is None, reason="hal_core._native_queue is not built")

# Shared objects, and an equal copy: the lane keys on the params' value.
PARAMS = [
    None,
    BufferParams(),
    BufferParams(usage=BufferUsage.TRANSFER),
    BufferParams(type=MemoryType.HOST_LOCAL | MemoryType.DEVICE_VISIBLE),
    BufferParams(min_alignment=128),
    {"usage": BufferUsage.TRANSFER},
    "not params",
    BufferParams(),  # equal to PARAMS[1], another object: the lane compares by value
]
SIZES: list[Any] = [4096, 4096, 64, 0, 17 << 20, -1, np.int64(64), 1 << 62, 4096.0]
ALLOCA_FLAGS = [0, 0, 0, int(AllocaFlags.INDETERMINATE_LIFETIME), 2, 1 << 9]
DEALLOCA_FLAGS = [0, 0, 0, int(DeallocaFlags.PREFER_ORIGIN), 1 << 5]
AFFINITIES: list[Any] = [1, 1, 1, 2, -1, 0, 1 << 40, "1"]

_wait = st.one_of(st.none(), st.tuples(st.integers(0, 1), st.integers(-1, 2)))
_signal = st.tuples(st.integers(0, 1), st.integers(-1, 2))
# The call shapes lanes key on (params PARAMS[1], [2], [3] or the equal [7]; 4096 or 64
# bytes; queue 0, no pool or flags), with waits met or not: most steps, so that lanes are
# bound and used, and more shapes than a device keeps lanes for (the oldest is dropped).
_common = st.one_of(
    st.tuples(
        st.just("alloca"),
        _wait,
        _signal,
        st.just(0),
        st.sampled_from([1, 1, 2, 3, 7]),
        st.sampled_from([0, 0, 2]),
        st.just(0),
        st.just(False),
    ),
    st.tuples(st.just("dealloca"), _wait, _signal, st.just(0), st.integers(-1, 7), st.just(0)),
)
_step = st.one_of(
    _common,
    _common,
    st.tuples(
        st.just("alloca"),
        _wait,
        _signal,
        st.integers(0, len(AFFINITIES) - 1),
        st.integers(0, len(PARAMS) - 1),
        st.integers(0, len(SIZES) - 1),
        st.integers(0, len(ALLOCA_FLAGS) - 1),
        st.booleans(),  # pool: None, or something that is not a pool
    ),
    st.tuples(
        st.just("dealloca"),
        _wait,
        _signal,
        st.integers(0, len(AFFINITIES) - 1),
        st.integers(-1, 7),  # the buffer of that alloca (-1: something else)
        st.integers(0, len(DEALLOCA_FLAGS) - 1),
    ),
    st.tuples(st.just("signal"), st.integers(0, 1), st.integers(1, 2)),
    st.tuples(st.just("fail"), st.integers(0, 1)),
)


def _error(exc: BaseException) -> tuple:
    code = exc.code if isinstance(exc, HalError) else None
    return ("error", type(exc).__name__, code, str(exc))


def _buffer_facts(buffer: Any) -> tuple:
    transient = buffer.pool_state
    reservation = None
    if isinstance(transient, TransientAllocation):
        r = transient.reservation
        reservation = (transient.pool.trace_name, r.offset, r.length, r.is_live)
    return (
        buffer.allocation_size,
        buffer.byte_length,
        int(buffer.memory_type),
        int(buffer.allowed_usage),
        int(buffer.allowed_access),
        buffer.queue_affinity,
        int(buffer.placement_flags),
        buffer._state,
        buffer.is_committed and buffer._storage.nbytes,
        reservation,
    )


def _run(uri: str, steps: list, native_calls: bool) -> list:
    trace: list = []
    with hal.create_device(uri) as device:
        if native_calls:
            alloca, dealloca = device.queue_alloca, device.queue_dealloca
        else:

            def alloca(*args: Any, **kwargs: Any) -> Any:
                return alloca_reference(device, *args, **kwargs)

            def dealloca(*args: Any, **kwargs: Any) -> Any:
                return dealloca_reference(device, *args, **kwargs)

        sems = [device.create_semaphore(), device.create_semaphore()]
        # The next value each semaphore will be signalled to by queue work (host signals
        # and queue signals both advance it).
        top = [0, 0]
        buffers: list[Any] = []
        for step in steps:
            kind = step[0]
            try:
                if kind == "signal":
                    top[step[1]] = max(top[step[1]], sems[step[1]]._value) + step[2]
                    sems[step[1]].signal(top[step[1]])
                    trace.append(("signalled",))
                elif kind == "fail":
                    sems[step[1]].fail(StatusCode.ABORTED, "scenario")
                    trace.append(("failed",))
                else:
                    wait = (
                        ()
                        if step[1] is None
                        else ((sems[step[1][0]], top[step[1][0]] + step[1][1]),)
                    )
                    index, delta = step[2]
                    value = top[index] + 1 + delta
                    if value > top[index]:
                        top[index] = value
                    signal = [(sems[index], value)]
                    affinity = AFFINITIES[step[3]]
                    if kind == "alloca":
                        kwargs: dict[str, Any] = {}
                        if ALLOCA_FLAGS[step[6]]:
                            kwargs["flags"] = ALLOCA_FLAGS[step[6]]
                        if step[7]:
                            kwargs["pool"] = "not a pool"
                        buffer = alloca(
                            affinity, wait, signal, PARAMS[step[4]], SIZES[step[5]], **kwargs
                        )
                        buffers.append(buffer)
                        trace.append(("alloca", _buffer_facts(buffer)))
                    else:
                        target = buffers[step[4]] if 0 <= step[4] < len(buffers) else object()
                        kwargs = {}
                        if DEALLOCA_FLAGS[step[5]]:
                            kwargs["flags"] = DEALLOCA_FLAGS[step[5]]
                        dealloca(affinity, wait, signal, target, **kwargs)
                        trace.append(("dealloca",))
            except Exception as exc:
                trace.append(_error(exc))
            trace.append(
                (
                    "sems",
                    tuple((s._value, s.failure and s.failure.code) for s in sems),
                    tuple(_buffer_facts(b) for b in buffers),
                )
            )
        stats = [
            (priority, pool.trace_name, pool.query_stats())
            for priority, pool in device.backend.pools.default_pools.pools
        ]
        trace.append(("stats", stats))
    return trace


@pytest.mark.parametrize("uri", ["local-sync://", "local-task://"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_step, max_size=16))
@example(steps=[("alloca", None, (0, 0), 0, 1, 0, 0, False)] * 3)
@example(
    steps=[
        ("alloca", None, (0, 0), 0, 1, 0, 0, False),
        ("alloca", (0, 0), (0, 0), 0, 1, 0, 0, False),
        ("dealloca", (0, 0), (0, 0), 0, 0, 0),
        ("alloca", (0, 0), (0, 0), 0, 1, 0, 0, False),
        ("dealloca", (0, 0), (0, 0), 0, 1, 0),
        ("dealloca", (0, 0), (0, 0), 0, 2, 0),
    ]
)
@example(
    # Five shapes (one more than the lanes a device keeps), then deallocas of blocks whose
    # lane was dropped, and the first shape again.
    steps=[("alloca", None, (0, 0), 0, p, z, 0, False) for p, z in ((1, 0), (1, 2), (2, 0))]
    + [("alloca", None, (0, 0), 0, p, z, 0, False) for p, z in ((2, 2), (3, 0), (1, 0))]
    + [("dealloca", None, (0, 0), 0, i, 0) for i in range(6)]
    + [("alloca", None, (0, 0), 0, 1, 2, 0, False)]
)
def test_native_alloca_agrees_with_reference(uri: str, steps: list) -> None:
    assert _run(uri, steps, True) == _run(uri, steps, False)


def _chain(device: Any, params: Any, pairs: int) -> list:
    sem = device.create_semaphore()
    buffers = []
    for i in range(pairs):
        v = 2 * i
        buffer = device.queue_alloca(1, ((sem, v),) if v else (), ((sem, v + 1),), params, 4096)
        buffers.append(buffer)
        device.queue_dealloca(1, ((sem, v + 1),), ((sem, v + 2),), buffer)
    assert sem.query() == 2 * pairs
    return buffers


@pytest.mark.parametrize("uri", ["local-sync://", "local-task://"])
def test_ready_chain_takes_the_straight_path(uri: str) -> None:
    """After the first call of a shape binds the lane, a ready alloca and dealloca never
    reach the backend's submit: both complete inside the native call, the recycled block
    commits to the storage it had (reusable wraps), and the books balance."""
    params = BufferParams()
    with hal.create_device(uri) as device:
        _chain(device, params, 1)  # binds the lane
        lane = device._alloca_lanes[0]
        assert isinstance(lane, AllocaLane) and lane.valid and lane.timelines
        submitted: list = []
        inner_alloca, inner_submit = device._submit_alloca, device._submit
        device._submit_alloca = lambda op: (submitted.append(op), inner_alloca(op))
        device._submit = lambda op: (submitted.append(op), inner_submit(op))
        buffers = _chain(device, params, 8)
        assert submitted == []
        assert all(b._state == 2 and b.pool_state is None for b in buffers)
        pool = lane.pool
        stats = pool.query_stats()
        assert stats.reservation_count == 0 and stats.release_count == stats.reserve_count
        # Each recycled commit reused the first wrap of that block.
        sem = device.create_semaphore()
        a = device.queue_alloca(1, (), ((sem, 1),), params, 4096)
        b = device.queue_alloca(1, ((sem, 1),), ((sem, 2),), params, 4096)
        storage_a = a._storage
        device.queue_dealloca(1, ((sem, 2),), ((sem, 3),), a)
        c = device.queue_alloca(1, ((sem, 3),), ((sem, 4),), params, 4096)
        assert c._storage is storage_a and b._storage is not storage_a
        assert submitted == []
        for buffer, v in ((b, 4), (c, 5)):
            device.queue_dealloca(1, ((sem, v),), ((sem, v + 1),), buffer)
        assert sem.query() == 6


def test_lane_stops_when_shadowed_or_regrouped() -> None:
    """A shadowed backend ``submit`` (profiling taps, recorders) sends every call through
    the backend again; joining a device group invalidates the lane (the queue axes
    change), and the next call binds one naming the group's axes."""
    params = BufferParams()
    with hal.create_device("local-sync://") as device:
        _chain(device, params, 1)
        backend = device.backend
        seen: list = []
        inner = backend.submit
        backend.submit = lambda op: (seen.append(op.kind), inner(op))
        device_submit = device._submit
        device._submit = lambda op: (seen.append(("device", op.kind)), device_submit(op))
        try:
            _chain(device, params, 2)
        finally:
            del backend.submit
            device._submit = device_submit
        # The alloca reaches the shadow through submit_alloca; the dealloca goes to the
        # device's submit (which the reference calls too) instead of running natively.
        assert seen.count(hal.QueueOpKind.ALLOCA) == 2
        assert seen.count(("device", hal.QueueOpKind.DEALLOCA)) == 2
        lane = device._alloca_lanes[0]
        group = hal.DeviceGroup.from_devices([device], owns_devices=False)
        try:
            assert not lane.valid
            _chain(device, params, 2)
            new_lane = device._alloca_lanes[0]
            assert new_lane is not lane and new_lane.valid
            assert new_lane.axes[0] == group.queue_axis(0, 0)
        finally:
            group.close()


def test_local_sync_defers_an_unmet_wait_through_the_native_path() -> None:
    """With the lane bound, an alloca and dealloca whose waits are not reached return at
    once on local-sync (queued, not run inline and not blocking); the host signal runs
    them, and the block is reused by the next straight alloca."""
    params = BufferParams()
    with hal.create_device("local-sync://") as device:
        _chain(device, params, 1)  # binds the lane
        assert device._alloca_lanes[0].valid
        gate = device.create_semaphore()
        sem = device.create_semaphore()
        buffer = device.queue_alloca(1, ((gate, 1),), ((sem, 1),), params, 4096)
        device.queue_dealloca(1, ((sem, 1),), ((sem, 2),), buffer)
        assert not buffer.is_committed and sem.query() == 0
        gate.signal(1)
        assert sem.query() == 2 and buffer._state == 2
        again = device.queue_alloca(1, ((sem, 2),), ((sem, 3),), params, 4096)
        assert again.is_committed and sem.query() == 3
        device.queue_dealloca(1, ((sem, 3),), ((sem, 4),), again)
        assert sem.query() == 4


@pytest.mark.parametrize("uri", ["local-sync://", "local-task://"])
def test_alternating_shapes_keep_their_lanes(uri: str) -> None:
    """A program alternating allocation sizes (an MLP's 128- and 512-byte allocas) binds
    one lane per shape once and then never reaches the backend's submit; more shapes than
    a device keeps drop the oldest lane, and the pool machine does not pile dropped lanes
    up (it held every lane ever bound, two per iteration, when a device kept one)."""
    params = BufferParams()
    with hal.create_device(uri) as device:
        sem = device.create_semaphore()
        v = 0

        def pair(size: int) -> None:
            nonlocal v
            buffer = device.queue_alloca(1, ((sem, v),), ((sem, v + 1),), params, size)
            device.queue_dealloca(1, ((sem, v + 1),), ((sem, v + 2),), buffer)
            v += 2

        pair(128)
        pair(512)
        lanes = list(device._alloca_lanes)
        assert [lane.key_size for lane in lanes] == [512, 128]
        submitted: list = []
        inner_alloca, inner_submit = device._submit_alloca, device._submit
        device._submit_alloca = lambda op: (submitted.append(op), inner_alloca(op))
        device._submit = lambda op: (submitted.append(op), inner_submit(op))
        for _ in range(50):
            pair(128)
            pair(512)
        assert submitted == [] and device._alloca_lanes == lanes
        device._submit_alloca, device._submit = inner_alloca, inner_submit
        for size in range(1, 200):
            pair(size)
        assert len(device._alloca_lanes) == MAX_ALLOCA_LANES
        assert all(lane.valid for lane in device._alloca_lanes)
        assert not any(lane.valid for lane in lanes)  # dropped: marked invalid
        del lanes
        machine = device._alloca_lanes[0].machine
        assert len(machine._lanes) == MAX_ALLOCA_LANES
        assert sem.query() == v
        stats = device._alloca_lanes[0].pool.query_stats()
        assert stats.reservation_count == 0


def test_straight_dealloca_hands_its_transient_to_the_next_alloca() -> None:
    """The straight dealloca keeps the released ``TransientAllocation`` (no reservation)
    on the lane when nothing else holds it, and the next straight alloca commits with it;
    one still held elsewhere is left alone."""
    params = BufferParams()
    with hal.create_device("local-sync://") as device:
        _chain(device, params, 1)  # binds the lane
        lane = device._alloca_lanes[0]
        sem = device.create_semaphore()
        a = device.queue_alloca(1, (), ((sem, 1),), params, 4096)
        device.queue_dealloca(1, ((sem, 1),), ((sem, 2),), a)
        spare = lane.spare
        assert isinstance(spare, TransientAllocation) and spare.reservation is None
        b = device.queue_alloca(1, ((sem, 2),), ((sem, 3),), params, 4096)
        assert b.pool_state is spare and lane.spare is None
        assert spare.reservation.is_live and spare.pool is lane.pool
        held = b.pool_state  # another reference: not reused
        device.queue_dealloca(1, ((sem, 3),), ((sem, 4),), b)
        assert lane.spare is None and held.reservation is not None
        assert not held.reservation.is_live
        assert sem.query() == 4 and lane.pool.query_stats().reservation_count == 0
