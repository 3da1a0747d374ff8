"""A committed ``queue_alloca`` buffer dropped without a ``queue_dealloca`` gives its
reservation back to the pool (as IREE releases a dropped buffer's memory), on the native
straight path and through the Python reference alike; a dealloca'd buffer's later drop
releases nothing twice."""

from __future__ import annotations

import gc
import sys
from typing import Any

import pytest

import hal_core as hal
from hal_core import BufferParams
from hal_core._queue_alloca_paths import alloca_reference


def _pool(device: hal.Device) -> Any:
    return device._alloca_lanes[0].pool


@pytest.mark.parametrize("uri", ["local-sync://", "local-task://"])
@pytest.mark.parametrize("reference", [False, True])
def test_dropped_buffer_returns_its_block(
    uri: str, reference: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    params = BufferParams()
    with hal.create_device(uri) as device:
        sem = device.create_semaphore()
        # Binds the lane (and a dealloca'd buffer dropped afterwards releases nothing).
        first = device.queue_alloca(1, (), ((sem, 1),), params, 128)
        device.queue_dealloca(1, ((sem, 1),), ((sem, 2),), first)
        sem.wait(2, 5.0)
        del first
        pool = _pool(device)
        before = pool.query_stats()
        assert before.reservation_count == 0
        for size in (128, 512) * 20:
            if reference:
                buffer = alloca_reference(device, 1, (), (), params, size)
            else:
                buffer = device.queue_alloca(1, (), (), params, size)
            assert buffer.is_committed
            del buffer  # never dealloca'd
        gc.collect()
        after = pool.query_stats()
        assert after.reservation_count == 0 and after.bytes_reserved == 0
        assert after.reserve_count - before.reserve_count == 40
        assert after.release_count - before.release_count == 40
        # The pool's memory is still whole: a buffer as big as its first slab fits.
        kept = device.queue_alloca(1, (), (), params, 1 << 20)
        assert kept.is_committed
        device.queue_dealloca(1, (), (), kept)
        del kept
        assert pool.query_stats().reservation_count == 0


def test_drop_after_pool_close_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """A buffer outliving its device (and pool) drops without raising or reporting."""
    seen: list = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(unraisable))
    with hal.create_device("local-sync://") as device:
        buffer = device.queue_alloca(1, (), (), BufferParams(), 256)
    del buffer
    gc.collect()
    assert seen == []
