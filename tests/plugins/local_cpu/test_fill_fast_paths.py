"""The fill fast paths agree with their references.

* ``_run_fill`` stores the repeated pattern with ``hal_core.backend.fill_host`` (native;
  its reference stores short fills through a memoryview slice and longer ones with
  numpy). Fills are compared with a numpy reference over offsets, lengths (around the
  reference's switch) and pattern widths, on subspans too, and the native ``fill_host``
  with its reference for any arguments.
* The front door tests usage and access bits on plain ints (``check_transfer_*``); it
  must refuse exactly what ``Buffer.require_usage`` / ``require_access`` refuse, with
  their errors.
* ``fill_pattern_bytes`` returns a bytes pattern at once; the result equals the general
  path's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core
from hal_core import Buffer, BufferParams, BufferUsage, MemoryAccess
from hal_core._queue_checks import (
    check_transfer_source,
    check_transfer_target,
    fill_pattern_bytes,
)
from hal_core._queue_fast_paths import _SMALL_FILL_BYTES as SMALL_FILL_BYTES
from hal_core._queue_fast_paths import fill_host_reference, native
from hal_core.backend import buffer_host_bytes, new_buffer

SIZE = 1024


@pytest.fixture(scope="module", params=["local-sync://", "local-task://"])
def device(request: Any) -> Any:
    dev = hal_core.create_device(request.param)
    yield dev
    dev.close()


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    width=st.sampled_from([1, 2, 4]),
    sub=st.booleans(),
)
def test_fill_matches_numpy_reference(device: Any, data: Any, width: int, sub: bool) -> None:
    buf = device.allocator.allocate_buffer(BufferParams(), SIZE)
    buffer_host_bytes(buf)[:] = np.arange(SIZE, dtype=np.uint32).astype(np.uint8)
    base = 0
    target = buf
    if sub:
        base = width * data.draw(st.integers(0, 16))
        target = buf.subspan(base, SIZE - base)
    limit = (target.byte_length // width) * width
    # Lengths cluster around the short/long switch, where the two paths meet.
    length = width * data.draw(
        st.one_of(
            st.integers(0, limit // width),
            st.integers(
                max(0, SMALL_FILL_BYTES // width - 2),
                min(limit // width, SMALL_FILL_BYTES // width + 2),
            ),
        )
    )
    offset = width * data.draw(st.integers(0, (limit - length) // width))
    pattern = data.draw(st.binary(min_size=width, max_size=width))
    expected = np.array(buffer_host_bytes(buf), copy=True)
    if length:
        expected[base + offset : base + offset + length] = np.frombuffer(
            pattern * (length // width), np.uint8
        )
    sem = device.create_semaphore(0)
    device.queue_fill(1, (), ((sem, 1),), target, offset, length, pattern)
    sem.wait(1, timeout=30)
    assert bytes(buffer_host_bytes(buf)) == expected.tobytes()


_USAGES = [int(u) for u in BufferUsage]
_ACCESSES = [int(a) for a in MemoryAccess]


def _reference(buffer: Buffer, usage: BufferUsage, access: MemoryAccess) -> str | None:
    try:
        buffer.require_usage(usage, "op")
        buffer.require_access(access, "op")
    except hal_core.HalError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _fast(check: Any, buffer: Buffer) -> str | None:
    try:
        check(buffer, "op")
    except hal_core.HalError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@settings(max_examples=300, deadline=None)
@given(
    usage=st.lists(st.sampled_from(_USAGES), max_size=4),
    access=st.lists(st.sampled_from(_ACCESSES), max_size=3),
)
def test_int_flag_checks_agree_with_the_buffer_methods(usage: list, access: list) -> None:
    u = BufferUsage(0)
    for bit in usage:
        u |= bit
    a = MemoryAccess(0)
    for bit in access:
        a |= bit
    buffer = new_buffer(
        None,
        memory_type=hal_core.MemoryType.HOST_LOCAL,
        allowed_usage=u,
        allowed_access=a,
        allocation_size=16,
    )
    assert _fast(check_transfer_target, buffer) == _reference(
        buffer, BufferUsage.TRANSFER_TARGET, MemoryAccess.WRITE
    )
    assert _fast(check_transfer_source, buffer) == _reference(
        buffer, BufferUsage.TRANSFER_SOURCE, MemoryAccess.READ
    )


@given(
    pattern=st.one_of(
        st.binary(min_size=0, max_size=6),
        st.builds(bytearray, st.binary(min_size=1, max_size=4)),
    )
)
def test_fill_pattern_fast_path_equals_the_general_path(pattern: Any) -> None:
    def general(p: Any) -> Any:
        # The same pattern, but not of class bytes: the general path handles it.
        try:
            return fill_pattern_bytes(memoryview(bytes(p)), None)
        except hal_core.HalError as exc:
            return type(exc)

    try:
        fast: Any = fill_pattern_bytes(pattern, None)
    except hal_core.HalError as exc:
        fast = type(exc)
    assert fast == general(pattern)


@pytest.mark.skipif(native is None, reason="hal_core._native_queue is not built")
@settings(max_examples=400, deadline=None)
@given(
    size=st.integers(0, 600),
    start=st.one_of(st.integers(-2, 610), st.sampled_from([1 << 63, np.int64(3), 2.0])),
    length=st.one_of(st.integers(-2, 610), st.sampled_from([1 << 64, np.int64(4), None])),
    pattern=st.one_of(
        st.binary(min_size=0, max_size=5), st.sampled_from([bytearray(b"ab"), 7, None])
    ),
)
def test_native_fill_host_agrees_with_the_reference(
    size: int, start: Any, length: Any, pattern: Any
) -> None:
    def run(fn: Any) -> Any:
        host = np.arange(size, dtype=np.uint32).astype(np.uint8)
        try:
            fn(host, start, length, pattern)
        except Exception as exc:
            return type(exc), host.tobytes()
        return None, host.tobytes()

    assert run(native.fill_host) == run(fill_host_reference)
