"""Host allocations of the local CPU allocator: aligned, zero-filled, the storage's address
is its first byte; the allocator's statistics count each allocation once and its free once,
when the buffer and every subspan of it are gone."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest

import hal_core as hal
from hal_core import BufferParams
from hal_core.backend import buffer_storage


@pytest.fixture(params=["local-task://", "local-sync://"])
def device(request: pytest.FixtureRequest) -> Any:
    dev = hal.create_device(request.param)
    yield dev
    dev.close()


@pytest.mark.parametrize("alignment", [0, 64, 256, 4096])
@pytest.mark.parametrize("size", [0, 1, 128, 4097])
def test_allocation_is_aligned_zeroed_and_addressed(device: Any, alignment: int, size: int) -> None:
    buffers = [
        device.allocator.allocate_buffer(BufferParams(min_alignment=alignment), size)
        for _ in range(8)
    ]
    for b in buffers:
        storage = buffer_storage(b)
        assert storage.nbytes == size
        if size == 0:
            assert storage.address == 0
            continue
        assert storage.address == storage.host_array.ctypes.data
        assert storage.address % max(64, alignment) == 0
        assert not np.any(storage.host_array)


def test_statistics_count_each_allocation_and_free_once(device: Any) -> None:
    allocator = device.allocator
    gc.collect()
    before = allocator.query_statistics()
    a = allocator.allocate_buffer(1000)
    b = allocator.allocate_buffer(24)
    allocator.allocate_buffer(0)  # nothing to count
    stats = allocator.query_statistics()
    assert stats.host_bytes_allocated - before.host_bytes_allocated == 1024
    assert stats.host_bytes_peak >= stats.host_bytes_allocated - stats.host_bytes_freed
    view = a.subspan(8, 16)
    del a, b
    gc.collect()
    stats = allocator.query_statistics()
    assert stats.host_bytes_freed - before.host_bytes_freed == 24  # the subspan keeps 1000
    del view
    gc.collect()
    gc.collect()
    stats = allocator.query_statistics()
    assert stats.host_bytes_freed - before.host_bytes_freed == 1024
    assert stats.host_bytes_allocated - before.host_bytes_allocated == 1024
