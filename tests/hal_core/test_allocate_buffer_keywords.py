"""``allocate_buffer(size, params=None)``: the size first with params as a keyword, besides
IREE's ``(params, size)`` order and the size alone; mixed or doubled arguments are one
INVALID_ARGUMENT at the call, never a Python TypeError, and the allocator stays usable."""

import pytest

import hal_core as hal
from hal_core import BufferParams, BufferUsage, MemoryType

SOURCE_ONLY = BufferParams(usage=BufferUsage.TRANSFER_SOURCE, type=MemoryType.HOST_LOCAL)


@pytest.fixture
def allocator():
    with hal.create_device("local-sync://") as device:
        yield device.allocator


def test_size_first_with_params_keyword(allocator):
    buf = allocator.allocate_buffer(48, params=SOURCE_ONLY)
    assert buf.byte_length == 48
    iree_order = allocator.allocate_buffer(SOURCE_ONLY, 48)
    assert buf.allowed_usage == iree_order.allowed_usage
    assert not buf.allowed_usage & BufferUsage.TRANSFER_TARGET  # the params were used
    assert buf.memory_type == iree_order.memory_type
    assert allocator.allocate_buffer(16, params=None).byte_length == 16


def test_every_spelling_of_size_and_params(allocator):
    spellings = [
        ((32,), {}),
        ((SOURCE_ONLY, 32), {}),
        ((None, 32), {}),
        ((32,), {"params": SOURCE_ONLY}),
        ((SOURCE_ONLY,), {"allocation_size": 32}),
        ((), {"allocation_size": 32}),
        ((), {"params": SOURCE_ONLY, "allocation_size": 32}),
    ]
    for args, kwargs in spellings:
        assert allocator.allocate_buffer(*args, **kwargs).byte_length == 32, (args, kwargs)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((SOURCE_ONLY, 32), {"params": SOURCE_ONLY}, "again as keywords"),
        ((SOURCE_ONLY, 32), {"allocation_size": 32}, "again as keywords"),
        ((SOURCE_ONLY,), {"params": SOURCE_ONLY}, "needs an allocation size"),
        ((None, 32, 4), {}, "3 positional"),
        ((), {"params": SOURCE_ONLY}, "needs an allocation size"),
        ((SOURCE_ONLY, None), {"params": None}, "again as keywords"),
        ((32, SOURCE_ONLY), {}, "expected BufferParams"),
    ],
)
def test_mixed_or_doubled_arguments_are_invalid_argument(allocator, args, kwargs, message):
    with pytest.raises(hal.InvalidArgumentError, match=message):
        allocator.allocate_buffer(*args, **kwargs)
    assert allocator.allocate_buffer(8, params=SOURCE_ONLY).byte_length == 8  # still works


def test_size_then_params_positionally_keeps_its_refusal(allocator):
    # Positionally the order is IREE's: (size, params) is a params mistake, said as such.
    with pytest.raises(hal.InvalidArgumentError):
        allocator.allocate_buffer(32, SOURCE_ONLY)
