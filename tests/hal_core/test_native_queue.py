"""The native queue front door agrees with its Python reference.

``hal_core._native_queue.queue_op`` builds the ``QueueOp`` of the common call shape in C
and calls ``_queue_checks.queue_op`` for everything else. For any arguments (good or bad
wait and signal lists, affinities, kinds, a closed device) both must return an op with the
same fields or raise the same error with the same message.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core
from hal_core._queue import QueueOpKind
from hal_core._queue_fast_paths import native, queue_op_reference
from hal_core._semaphore import MAX_VALUE

pytestmark = pytest.mark.skipif(native is None, reason="hal_core._native_queue is not built")


@pytest.fixture(scope="module")
def env() -> Any:
    device = hal_core.create_device("local-task://")
    closed = hal_core.create_device("local-sync://")
    closed.close()
    sems = [device.create_semaphore(v) for v in (0, 0, 5, MAX_VALUE - 1)]
    yield device, closed, sems
    device.close()


_values = st.one_of(
    st.integers(-2, 8),
    st.sampled_from([MAX_VALUE - 1, MAX_VALUE, MAX_VALUE + 1, 1 << 64, -(1 << 70)]),
    st.sampled_from([True, 1.0, "1", None]),
    st.integers(0, 8).map(np.int64),
)


def _pairs(sems: list) -> Any:
    sem = st.one_of(st.sampled_from(sems), st.sampled_from([None, 3, "sem"]))
    good = st.tuples(st.sampled_from(sems), st.integers(0, 8))
    pair = st.one_of(
        # The common shape most of the time, so whole calls take the native path.
        good,
        good,
        good,
        good,
        st.tuples(sem, _values),
        st.tuples(sem, _values).map(list),
        st.tuples(sem),
        st.tuples(sem, _values, _values),
        st.just(7),
    )
    container = st.sampled_from([tuple, list, iter])
    return st.one_of(
        st.builds(lambda c, items: c(items), container, st.lists(pair, max_size=3)),
        st.builds(tuple, st.lists(good, max_size=3)),
        st.sampled_from([None, (), [], 5, "x"]),
    )


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        op = fn(*args)
    except Exception as exc:
        return (type(exc), str(exc))
    return (
        type(op.kind),
        op.kind,
        op.queue,
        tuple(op.waits),
        tuple(op.signals),
        op.flags,
        op.retained,
    )


@settings(max_examples=600, deadline=None)
@given(data=st.data())
def test_native_front_door_agrees_with_the_reference(env: Any, data: Any) -> None:
    device, closed, sems = env
    dev = data.draw(st.sampled_from([device] * 6 + [closed]))
    kind = data.draw(st.sampled_from([QueueOpKind.BARRIER] * 3 + [QueueOpKind.FILL, 0, 4]))
    affinity = data.draw(
        st.sampled_from(
            [1, 1, 1, 2, 2, 2, 3, 4, 0, -1, 1 << 64, hal_core.QueueAffinity.ANY, np.uint64(2)]
        )
    )
    wait_strategy = _pairs(sems)
    # Draw once, then rebuild iterators: an iterator is consumed by the first call.
    wait = data.draw(wait_strategy)
    signal = data.draw(wait_strategy)
    wait_list = list(wait) if hasattr(wait, "__next__") else wait
    signal_list = list(signal) if hasattr(signal, "__next__") else signal

    def fresh(x: Any, was_iter: bool) -> Any:
        return iter(list(x)) if was_iter else x

    wi, si = hasattr(wait, "__next__"), hasattr(signal, "__next__")
    fast = _outcome(
        native.queue_op, dev, kind, affinity, fresh(wait_list, wi), fresh(signal_list, si)
    )
    ref = _outcome(
        queue_op_reference, dev, kind, affinity, fresh(wait_list, wi), fresh(signal_list, si)
    )
    assert fast == ref


def test_edges_of_the_common_shape_agree(env: Any) -> None:
    device, closed, sems = env
    a, b, five, top = sems
    cases = [
        ((), ((a, 0),)),  # a signal that does not advance its semaphore
        ((), ((five, 5),)),
        ((), ((five, 6),)),
        ((), ((top, MAX_VALUE),)),
        ((), ((top, MAX_VALUE + 1),)),
        ((), ((a, 1), (a, 2))),  # the same semaphore twice
        ((), ((a, 1), (b, 1), (five, 6))),  # three signals (the reference checks them)
        ((), ((a, 1), (b, 1), (a, 2))),
        (((a, MAX_VALUE),), ()),
        (((a, MAX_VALUE + 1),), ()),
        (((a, -1),), ()),
        (((a, True),), ()),
        (((a, np.int64(1)),), ()),
        (([a, 1],), ()),
        (((a, 1, 2),), ()),
        ([(a, 1)], [(b, 1)]),
    ]
    for wait, signal in cases:
        for dev, affinity in ((device, 1), (device, 2), (device, 3), (closed, 1), (device, 0)):
            args = (dev, QueueOpKind.BARRIER, affinity, wait, signal)
            assert _outcome(native.queue_op, *args) == _outcome(queue_op_reference, *args), args


def test_the_common_shape_builds_the_op_natively(env: Any) -> None:
    device, _closed, sems = env
    a, b = sems[0], sems[1]
    op = native.queue_op(device, QueueOpKind.BARRIER, 2, [(a, 0)], ((a, 1), (b, 1)))
    assert op.kind is QueueOpKind.BARRIER and op.queue == 1
    assert op.waits == ((a, 0),) and op.signals == ((a, 1), (b, 1))
    assert op.flags == 0 and op.retained is None
    # The device's front door uses it: a queue call still runs end to end.
    device.queue_barrier(1, ((a, 0),), ((a, 1),))
    a.wait(1, timeout=10)
