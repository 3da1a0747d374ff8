import numpy as np
import pytest

import hal_core as hal
from hal_core import BufferParams, BufferUsage, ElementType, MemoryAccess


@pytest.fixture(scope="module")
def device():
    with hal.create_device("local-sync://") as d:
        yield d


def test_allocate_map_and_subspan(device):
    buf = device.allocator.allocate_buffer(BufferParams(), 64)
    assert buf.byte_length == 64 and buf.read() == bytes(64)
    sub = buf.subspan(16, 8)
    assert sub.allocated_buffer is buf and sub.byte_offset == 16
    sub.write(b"abcdefgh")
    assert buf.read(16, 8) == b"abcdefgh"
    with pytest.raises(hal.OutOfRangeError):
        buf.subspan(60, 8)
    with buf.map(MemoryAccess.READ) as m:
        assert m.asarray(np.uint8)[16] == ord("a")
        with pytest.raises(ValueError):
            m.contents[0] = 1


def test_zero_size_allocation_succeeds(device):
    assert device.allocator.allocate_buffer(None, 0).byte_length == 0


def test_mapping_requires_mapping_usage_on_non_mapping_buffers(device):
    buf = device.allocator.allocate_buffer(BufferParams(access=MemoryAccess.READ), 8)
    with pytest.raises(hal.PermissionDeniedError):
        buf.map(MemoryAccess.WRITE)


def test_import_host_memory_is_zero_copy(device):
    data = bytearray(b"\x00" * 32)
    buf = device.allocator.import_host_buffer(BufferParams(), data)
    buf.write(b"\x07" * 4, 4)
    assert data[4:8] == b"\x07" * 4
    with pytest.raises(hal.InvalidArgumentError):
        device.allocator.import_host_buffer(BufferParams(), b"readonly")


def test_compatibility_and_heaps(device):
    compat, params, size = device.allocator.query_buffer_compatibility(BufferParams(), 100)
    assert compat & hal.BufferCompatibility.ALLOCATABLE
    assert compat & hal.BufferCompatibility.QUEUE_TRANSFER
    assert params.usage & BufferUsage.MAPPING_SCOPED
    heaps = device.allocator.query_memory_heaps()
    assert heaps and heaps[0].type.has(hal.MemoryType.HOST_VISIBLE)


def test_buffer_view(device):
    buf = device.allocator.allocate_buffer(None, 24)
    buf.write(np.arange(6, dtype=np.float32).tobytes())
    view = hal.BufferView(buf, (2, 3), ElementType.FLOAT_32)
    assert view.element_count == 6 and view.byte_length == 24
    assert view.compute_offset((1, 2)) == 20
    np.testing.assert_array_equal(view.to_numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
    assert view.reshape((3, 2)).shape == (3, 2)
    with pytest.raises(hal.InvalidArgumentError):
        view.reshape((4, 2))
    with pytest.raises(hal.OutOfRangeError):
        hal.BufferView(buf, (7,), ElementType.FLOAT_32)
