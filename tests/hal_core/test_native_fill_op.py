"""The native ``fill_op`` (``Device.queue_fill``'s checks and op) agrees with its reference.

``hal_core._native_queue.fill_op`` builds the FILL ``QueueOp`` in C when the pattern is
``bytes`` of 1, 2 or 4 with no ``pattern_length``, the target an exact ``Buffer`` that
allows TRANSFER_TARGET and WRITE, the range ints inside it and aligned to the pattern, and
the flags 0; everything else goes to ``_queue_checks.fill_op``. For any arguments both
must return an op with the same fields or raise the same error with the same message.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core
from hal_core import BufferParams, BufferUsage, MemoryAccess, MemoryType
from hal_core._memory import WHOLE_BUFFER
from hal_core._queue_checks import fill_op as fill_op_reference
from hal_core._queue_fast_paths import native

pytestmark = pytest.mark.skipif(native is None, reason="hal_core._native_queue is not built")


@pytest.fixture(scope="module")
def env() -> Any:
    device = hal_core.create_device("local-task://")
    other = hal_core.create_device("local-sync://")
    closed = hal_core.create_device("local-sync://")
    closed.close()
    alloc = device.allocator.allocate_buffer
    buffers = [
        alloc(BufferParams(), 64),
        alloc(BufferParams(), 16),
        alloc(BufferParams(), 0),
        alloc(BufferParams(usage=BufferUsage.TRANSFER_SOURCE), 64),
        alloc(BufferParams(access=MemoryAccess.READ), 64),
        alloc(BufferParams(type=MemoryType.HOST_LOCAL), 64).subspan(8, 32),
        other.allocator.allocate_buffer(BufferParams(), 64),
        "not a buffer",
        None,
    ]
    sems = [device.create_semaphore(v) for v in (0, 0, 5)]
    yield device, closed, buffers, sems
    device.close()
    other.close()


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        op = fn(*args)
    except Exception as exc:
        return (type(exc), str(exc))
    return (
        op.kind,
        op.queue,
        op.waits,
        op.signals,
        op.flags,
        op.retained,
        op.target,
        op.target_offset,
        op.length,
        op.pattern,
    )


_ints = st.one_of(
    st.integers(-4, 70),
    st.sampled_from([WHOLE_BUFFER, 1 << 63, 1 << 64, -(1 << 70)]),
    st.sampled_from([np.int64(4), np.uint8(8), True, 4.0, "4", None]),
)
_patterns = st.one_of(
    st.binary(min_size=0, max_size=5),
    st.sampled_from([bytearray(b"\x01\x02"), memoryview(b"\x07"), 7, -1, 1 << 40, 2.5, None]),
)


@settings(max_examples=600, deadline=None)
@given(data=st.data())
def test_native_fill_op_agrees_with_the_reference(env: Any, data: Any) -> None:
    device, closed, buffers, sems = env
    dev = data.draw(st.sampled_from([device] * 6 + [closed]))
    affinity = data.draw(st.sampled_from([1, 1, 2, 0, 3, -1]))
    a, b, five = sems
    wait = data.draw(st.sampled_from([(), ((a, 0),), ((five, 9),), ((a, -1),), [(b, 0)], 5]))
    signal = data.draw(st.sampled_from([(), ((b, 1),), ((five, 5),), ((a, 1), (a, 2))]))
    target = data.draw(st.sampled_from(buffers))
    offset = data.draw(_ints)
    length = data.draw(_ints)
    pattern = data.draw(_patterns)
    pattern_length = data.draw(st.sampled_from([None] * 6 + [1, 2, 4, 3, np.int8(2), "2"]))
    flags = data.draw(st.sampled_from([0] * 6 + [1, -1, np.uint8(0), 0.0, None]))
    args = (dev, affinity, wait, signal, target, offset, length, pattern, pattern_length, flags)
    assert _outcome(native.fill_op, *args) == _outcome(fill_op_reference, *args)


def test_the_common_call_takes_the_native_path_and_fills(env: Any) -> None:
    device, _closed, buffers, _sems = env
    target = buffers[0]
    sem = device.create_semaphore()
    device.queue_fill(1, (), ((sem, 1),), target, 8, 8, b"\x01\x02\x03\x04")
    sem.wait(1, 10)
    assert target.read()[8:16] == b"\x01\x02\x03\x04" * 2
    assert type(device)._fill_op is not fill_op_reference  # the native one is bound


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_common_shaped_calls_agree(env: Any, data: Any) -> None:
    """Mostly the common shape, so most calls take the native path (and its range and
    alignment edges: the end of the buffer, zero lengths, misaligned by one)."""
    device, _closed, buffers, sems = env
    a, b, _five = sems
    target = data.draw(st.sampled_from(buffers[:6]))
    offset = data.draw(st.integers(0, 66))
    length = data.draw(st.integers(0, 66))
    pattern = data.draw(st.sampled_from([b"\x01", b"\x01\x02", b"\x01\x02\x03\x04"]))
    args = (device, 1, ((a, 0),), ((b, 1),), target, offset, length, pattern, None, 0)
    assert _outcome(native.fill_op, *args) == _outcome(fill_op_reference, *args)
