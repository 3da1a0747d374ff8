"""AQL ring reservation, wrap, publication order and NOP fill, over host memory."""

from __future__ import annotations

import numpy as np
import pytest
from hal_amdgpu import aql_packets as aql
from hal_amdgpu.aql_ring import NOP_HEADER_WORD, READ_INDEX_WORD, WRITE_INDEX_WORD, AqlRing
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core as hal


class FakeQueue:
    """Ring memory + amd_queue_t indices; ``consume(n)`` plays the packet processor."""

    def __init__(self, capacity: int) -> None:
        self.rows = aql.new_staging(capacity)
        self.indices = np.zeros(32, dtype=np.uint64)
        self.doorbells: list[int] = []
        self.ring = AqlRing(self.rows, self.indices, self.doorbells.append)
        self.seen: list[int] = []

    def consume(self, n: int | None = None) -> None:
        read = int(self.indices[READ_INDEX_WORD])
        limit = self.doorbells[-1] + 1 if self.doorbells else 0
        stop = limit if n is None else min(limit, read + n)
        for pid in range(read, stop):
            slot = pid & self.ring.mask
            word = int(self.ring.words[slot])
            assert word != aql.INVALID_HEADER_WORD, f"packet {pid} not published"
            self.seen.append(int(aql.as_dispatch(self.rows[slot : slot + 1])[0]["kernel_object"]))
            self.ring.words[slot] = aql.INVALID_HEADER_WORD
        self.indices[READ_INDEX_WORD] = stop


def _publish(q: FakeQueue, first: int, tags: list[int]) -> None:
    staging = aql.new_staging(len(tags))
    aql.emit_dispatches(
        staging,
        kernel_object=np.array(tags, dtype=np.uint64),
        workgroup_size=(1, 1, 1),
        grid_size=(1, 1, 1),
        kernarg_address=0,
    )
    q.ring.write_bodies(first, staging)
    word = aql.header_setup_word(aql.encode_header(aql.PacketType.KERNEL_DISPATCH), 3)
    q.ring.commit_headers(first, np.full(len(tags), word, dtype=np.uint32))
    q.ring.ring_doorbell(first + len(tags) - 1)


def test_rejects_bad_capacity_and_oversize():
    with pytest.raises(hal.InvalidArgumentError, match="power of two"):
        AqlRing(aql.new_staging(6), np.zeros(32, np.uint64), lambda _: None)
    q = FakeQueue(8)
    with pytest.raises(hal.OutOfRangeError, match="holds 8"):
        q.ring.check_fits(9)


def test_try_reserve_backs_off_when_full_without_state_change():
    q = FakeQueue(8)
    assert q.ring.try_reserve(6) == 0
    assert q.ring.try_reserve(3) == -1
    assert q.ring.write_index == 6
    _publish(q, 0, list(range(6)))
    q.consume(2)
    assert q.ring.try_reserve(3) == 6
    assert q.ring.available() == 1


def test_thousands_of_submissions_wrap_in_order():
    q = FakeQueue(16)
    rng = np.random.default_rng(1)
    tag = 0
    for _ in range(3000):
        n = int(rng.integers(1, 7))
        first = q.ring.try_reserve(n)
        if first < 0:
            q.consume()
            first = q.ring.try_reserve(n)
        assert first >= 0
        _publish(q, first, list(range(tag, tag + n)))
        tag += n
        if rng.random() < 0.3:
            q.consume(int(rng.integers(0, 8)))
    q.consume()
    assert q.seen == list(range(tag))
    assert q.doorbells[-1] == tag - 1


def test_publish_nops_fills_reserved_slots_and_rings():
    q = FakeQueue(4)
    first = q.ring.try_reserve(3)
    q.ring.rows[:] = 0xFF  # garbage bodies must be cleared
    q.ring.publish_nops(first, 3)
    assert list(q.ring.words[:3]) == [NOP_HEADER_WORD] * 3
    assert (q.ring.rows[:3, 4:] == 0).all()
    assert q.doorbells == [2]
    assert aql.decode_header(NOP_HEADER_WORD)[0] == aql.PacketType.BARRIER_AND


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 8), min_size=1, max_size=60), st.integers(0, 3))
def test_property_never_overwrites_unconsumed(sizes, cap_log):
    q = FakeQueue(8 << cap_log)
    tag = 0
    for n in sizes:
        first = q.ring.try_reserve(n)
        if first < 0:
            q.consume()
            first = q.ring.try_reserve(n)
        live = int(q.indices[WRITE_INDEX_WORD]) - int(q.indices[READ_INDEX_WORD])
        assert live <= q.ring.capacity
        _publish(q, first, list(range(tag, tag + n)))
        tag += n
    q.consume()
    assert q.seen == list(range(tag))
