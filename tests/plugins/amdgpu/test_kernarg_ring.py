"""Kernarg ring: 64-byte blocks, no wrap across the end, skip fragment, reclaim."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hal_amdgpu.kernarg_ring import KERNARG_BLOCK_SIZE, KernargRing, blocks_for
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core as hal


def make(blocks: int) -> KernargRing:
    return KernargRing(np.zeros(blocks * KERNARG_BLOCK_SIZE, np.uint8), 0x10000)


def test_bad_construction_and_oversize():
    with pytest.raises(hal.InvalidArgumentError, match="power-of-two"):
        make(6)
    with pytest.raises(hal.InvalidArgumentError, match="aligned"):
        KernargRing(np.zeros(256, np.uint8), 0x10001)
    with pytest.raises(hal.OutOfRangeError, match="kernarg ring holds 512"):
        make(8).check_fits(9)
    assert blocks_for(0) == 0 and blocks_for(1) == 1 and blocks_for(65) == 2


def test_skip_fragment_stays_in_flight_until_reclaimed():
    r = make(8)
    assert r.allocate(3) == 0
    assert r.allocate(2) == 3
    r.reclaim(3)  # blocks 3..4 still in flight
    # 3 blocks left at the tail; a 3-block allocation fits, a 4-block one skips them.
    assert r.can_allocate(3)
    assert r.can_allocate(4) is False  # skip 3 + 4 + 2 in flight > 8
    r.reclaim(5)
    b = r.allocate(2)
    assert b == 5  # fits in the tail without skipping
    assert r.can_allocate(4)
    c = r.allocate(4)
    assert c == 8 and r.address(c) == 0x10000  # skipped block 7
    assert r.in_flight == 7  # 2 + skipped 1 + 4
    assert r.allocate(2) == -1
    assert r.write_position == 12  # unchanged by the failure
    r.reclaim(7)  # the allocation before the skip retires; the skip is still in flight
    assert r.in_flight == 5 and not r.can_allocate(4)
    r.reclaim(12)
    # Nothing in flight: the whole ring is allocatable even from offset 4 (free skip).
    assert r.can_allocate(8) and r.allocate(8) == 16 and r.in_flight == 8


def test_allocation_views_are_contiguous_and_addressed():
    r = make(4)
    s = r.allocate(2)
    v = r.view(s, 2)
    v[:] = 7
    assert v.shape == (128,) and r.address(s) == 0x10000
    assert (r.memory[:128] == 7).all()
    with pytest.raises(hal.InvalidArgumentError, match="past the write position"):
        r.reclaim(99)


def test_thousands_of_submissions_with_in_order_retirement():
    r = make(16)
    rng = np.random.default_rng(7)
    inflight: deque[int] = deque()
    for _ in range(5000):
        n = int(rng.integers(0, 9))
        if not r.can_allocate(n):
            while inflight and not r.can_allocate(n):
                r.reclaim(inflight.popleft())
        assert r.can_allocate(n)
        start = r.allocate(n)
        assert start >= 0
        assert (start & r.mask) + n <= r.capacity  # never wraps
        inflight.append(start + n)
        if rng.random() < 0.5 and inflight:
            r.reclaim(inflight.popleft())
        assert 0 <= r.in_flight <= r.capacity


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.booleans()), min_size=1, max_size=80))
def test_property_can_allocate_agrees_with_allocate(ops):
    r = make(8)
    inflight: deque[int] = deque()
    for n, retire in ops:
        predicted = r.can_allocate(n)
        before = (r.write_position, r.read_position)
        start = r.allocate(n)
        assert (start >= 0) == predicted
        if start < 0:
            assert (r.write_position, r.read_position) == before
        else:
            inflight.append(start + n)
        if retire and inflight:
            r.reclaim(inflight.popleft())
