import pytest

import hal_core as hal
from hal_core import BufferParams, BufferUsage, MemoryAccess, MemoryType, QueueAffinity


def test_iree_bit_values():
    assert MemoryType.HOST_LOCAL == 0x46
    assert MemoryType.DEVICE_LOCAL == 0x30
    assert MemoryType.OPTIMAL_FOR_DEVICE == 0x31
    assert BufferUsage.DEFAULT == 0x3 | 0xC00
    assert BufferUsage.DISPATCH_INDIRECT_PARAMETERS == 1 << 8
    assert BufferUsage.MAPPING == (1 << 24) | (1 << 27)
    assert MemoryAccess.ALL == 0x7
    assert MemoryAccess.ANY == 1 << 5


def test_composite_members_are_all_bits_tests():
    visible_only = MemoryType.DEVICE_VISIBLE
    assert not visible_only.has(MemoryType.DEVICE_LOCAL)
    assert MemoryType.DEVICE_LOCAL.has(MemoryType.DEVICE_VISIBLE)


def test_zero_params_canonicalise():
    p = BufferParams(usage=0, access=0, type=0, queue_affinity=0)
    assert p.usage == BufferUsage.DEFAULT
    assert p.access == MemoryAccess.ALL
    assert p.type == MemoryType.OPTIMAL
    assert p.queue_affinity == QueueAffinity.ANY


def test_alignment_must_be_power_of_two():
    with pytest.raises(hal.InvalidArgumentError):
        BufferParams(min_alignment=3)
    assert BufferParams(min_alignment=256).min_alignment == 256


def test_queue_affinity_helpers():
    assert QueueAffinity.count(0b1011) == 3
    assert QueueAffinity.find_first_set(0b1000) == 3
    assert QueueAffinity.find_first_set(0) == -1
    assert QueueAffinity.queues(0b101) == [0, 2]
    assert QueueAffinity.is_any(QueueAffinity.ANY)
    with pytest.raises(hal.InvalidArgumentError):
        QueueAffinity.for_queue(64)
