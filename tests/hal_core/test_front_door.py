"""Front-door checks that need no particular backend, or more than one device: the range
helper, parameter objects, files, pools and device groups (the per-backend cases are in
``hal_core/cts/test_front_door.py``)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import hal_core as hal
from hal_core import (
    WHOLE_BUFFER,
    BufferParams,
    BufferRef,
    DeviceGroup,
    DispatchConfig,
    MemoryAccess,
    QueueAffinity,
    StatusCode,
)
from hal_core._command_buffer import constants_bytes
from hal_core._ranges import as_flags, as_index, as_u64, check_range
from hal_core.pool import CpuSlabProvider, PassthroughPool, TlsfPool

ANY = QueueAffinity.ANY
T = 10.0


def _code(fn, *args, **kwargs) -> StatusCode:
    with pytest.raises(hal.HalError) as info:
        fn(*args, **kwargs)
    return info.value.code


# ----------------------------------------------------------------------- the range helper


def test_check_range_normalises_integers_and_never_wraps():
    assert check_range(np.int64(4), np.int64(8), 16, "buffer") == 8
    assert check_range(4, WHOLE_BUFFER, 16, "buffer") == 12
    assert check_range(np.uint64(4), np.uint64(WHOLE_BUFFER), 16, "buffer") == 12
    assert check_range(16, 0, 16, "buffer") == 0
    for offset, length in (
        (np.int64(1), np.int64(2**63 - 1)),
        (-1, 4),
        (0, -1),
        (17, 0),
        (np.uint64(2**64 - 2), np.uint64(4)),
    ):
        assert _code(check_range, offset, length, 16, "buffer") == StatusCode.OUT_OF_RANGE
    for offset, length in (("0", 4), (0, 4.0), (None, 1), (0, b"4")):
        assert _code(check_range, offset, length, 16, "buffer") == StatusCode.INVALID_ARGUMENT
    result = check_range(np.int32(2), np.int16(3), 16, "buffer")
    assert result == 3 and result.__class__ is int


def test_integer_helpers():
    assert as_index(np.uint8(7), "x").__class__ is int
    assert as_u64(np.uint64(2**64 - 1), "x") == 2**64 - 1
    assert _code(as_u64, -1, "x") == StatusCode.OUT_OF_RANGE
    assert _code(as_u64, 1 << 64, "x") == StatusCode.OUT_OF_RANGE
    assert _code(as_index, 1.0, "x") == StatusCode.INVALID_ARGUMENT
    assert as_flags(np.int64(3), "x") == 3
    for bad in (-1, 1 << 64, "1", 1.0):
        assert _code(as_flags, bad, "x") == StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------- parameter objects


def test_buffer_params_fields_of_the_wrong_type_are_invalid_argument():
    for kwargs in (
        {"usage": "x"},
        {"type": -1},
        {"access": 1.5},
        {"queue_affinity": "a"},
        {"queue_affinity": -2},
        {"min_alignment": "x"},
        {"min_alignment": 3},
    ):
        assert _code(BufferParams, **kwargs) == StatusCode.INVALID_ARGUMENT, kwargs
    params = BufferParams(usage=np.int64(3), queue_affinity=np.uint64(1))
    assert params.usage == hal.BufferUsage.TRANSFER and params.queue_affinity == 1


def test_refs_configs_and_constants_normalise_numpy_and_refuse_garbage():
    config = DispatchConfig((np.int64(2), np.uint32(3), 1))
    assert config.workgroup_count == (2, 3, 1)
    assert all(v.__class__ is int for v in config.workgroup_count)
    for bad in ((1, 1), (1.0, 1, 1), (-1, 1, 1), 5, (1 << 32, 1, 1)):
        assert _code(DispatchConfig, bad) == StatusCode.INVALID_ARGUMENT
    assert BufferRef.indirect(np.int64(2)).slot == 2
    assert _code(BufferRef.indirect, "2") == StatusCode.INVALID_ARGUMENT
    assert constants_bytes([1, np.uint32(2)]) == np.array([1, 2], np.uint32).tobytes()
    for bad in ([1.5], [-1], [1 << 32], [None], 7):
        assert _code(constants_bytes, bad) == StatusCode.INVALID_ARGUMENT


def test_buffer_views_and_mappings_refuse_garbage():
    with hal.create_device("local-sync://") as device:
        buf = device.allocator.allocate_buffer(64)
        assert _code(hal.BufferView, buf, (2, "x"), hal.ElementType.UINT_8) == (
            StatusCode.INVALID_ARGUMENT
        )
        assert _code(hal.BufferView, buf, 4, hal.ElementType.UINT_8) == StatusCode.INVALID_ARGUMENT
        assert _code(hal.BufferView, buf, (4,), 12345) == StatusCode.INVALID_ARGUMENT
        assert _code(hal.BufferView, b"raw", (4,), hal.ElementType.UINT_8) == (
            StatusCode.INVALID_ARGUMENT
        )
        assert _code(buf.write, 5) == StatusCode.INVALID_ARGUMENT
        assert _code(buf.read, np.int64(1), np.int64(2**63 - 1)) == StatusCode.OUT_OF_RANGE
        buf.write(b"\x01\x02", np.int64(3))
        assert buf.read(np.int64(3), np.int64(2)) == b"\x01\x02"


def test_allocate_buffer_takes_params_and_size_or_size_alone():
    with hal.create_device("local-sync://") as device:
        assert device.allocator.allocate_buffer(np.int64(64)).byte_length == 64
        assert device.allocator.allocate_buffer(BufferParams(), 32).byte_length == 32
        assert device.allocator.allocate_buffer(None, 16).byte_length == 16
        for args in ((), (None,), (BufferParams(),), ("64",), (BufferParams(), "64")):
            assert _code(device.allocator.allocate_buffer, *args) == StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------------------ files


def test_files_refuse_garbage_and_closed_files_fail_at_the_call(tmp_path):
    with hal.create_device("local-task://") as device:
        for access in ("r", 1.5, MemoryAccess.NONE, MemoryAccess.DISCARD):
            assert _code(device.import_file, bytearray(8), access) == StatusCode.INVALID_ARGUMENT
        assert _code(device.import_file, -3) == StatusCode.INVALID_ARGUMENT
        path = tmp_path / "data.bin"
        path.write_bytes(b"\x07" * 64)
        fd = os.open(path, os.O_RDWR)
        try:
            file = device.import_file(fd, MemoryAccess.READ)
        finally:
            os.close(fd)
        buf = device.allocator.allocate_buffer(64)
        s = device.create_semaphore()
        device.queue_read(ANY, [], [(s, 1)], file, np.int64(0), buf, 0, 64)
        s.wait(1, T)
        assert buf.read() == b"\x07" * 64
        file.close()
        with pytest.raises(hal.FailedPreconditionError, match="closed"):
            device.queue_read(ANY, [], [(s, 2)], file, 0, buf, 0, 64)
        with pytest.raises(hal.FailedPreconditionError):
            file.length  # noqa: B018 - the property is what is checked
        mem = device.import_file(bytearray(64), MemoryAccess.READ)
        for offset in ("0", 1.0, -1):
            assert _code(device.queue_read, ANY, [], [(s, 2)], mem, offset, buf, 0, 8) == (
                StatusCode.INVALID_ARGUMENT
            )
        assert _code(device.queue_read, ANY, [], [(s, 2)], mem, 2**64 - 4, buf, 0, 8) == (
            StatusCode.OUT_OF_RANGE
        )
        assert s.query() == 1 and s.failure is None


# ------------------------------------------------------------------------------ pools


def test_a_reservation_larger_than_the_whole_budget_is_resource_exhausted():
    # EXHAUSTED / OVER_BUDGET would make a queue_alloca park until the device closes.
    with PassthroughPool(CpuSlabProvider(), budget_limit=4096) as pool:
        assert _code(pool.acquire_reservation, 8192) == StatusCode.RESOURCE_EXHAUSTED
        result, res, _info = pool.acquire_reservation(4096)
        assert res is not None, result
        pool.release_reservation(res)


def test_queue_alloca_past_its_pools_whole_budget_fails_at_the_call():
    with hal.create_device("local-task://") as device:
        DeviceGroup.from_devices([device], owns_devices=False)
        backend = device.query_queue_pool_backend(ANY)
        common = {
            "notification": backend.notification,
            "epoch_query": backend.epoch_query,
            "budget_limit": 4096,
        }
        pools = [
            PassthroughPool(backend.slab_provider, **common),
            TlsfPool(backend.slab_provider, range_length=1 << 16, **common),
        ]
        s = device.create_semaphore()
        for pool in pools:
            for waits in ([], [(s, 1)]):  # parked forever before, waits or not
                with pytest.raises(hal.ResourceExhaustedError, match="budget"):
                    device.queue_alloca(ANY, waits, [(s, 2)], None, 8192, pool=pool)
            buffer = device.queue_alloca(ANY, [], [(s, 1)], None, 4096, pool=pool)
            s.wait(1, T)
            device.queue_dealloca(ANY, [(s, 1)], [(s, 2)], buffer)
            s.wait(2, T)
            s = device.create_semaphore()
        for pool in pools:
            pool.close()


# ------------------------------------------------------------------------ device groups


def test_buffers_of_group_members_stay_allowed_and_outsiders_are_refused():
    a = hal.create_device("local-task://")
    b = hal.create_device("local-sync://")
    outsider = hal.create_device("local-task://")
    with DeviceGroup.from_devices([a, b]):
        on_b = b.allocator.allocate_buffer(64)
        on_a = a.allocator.allocate_buffer(64)
        foreign = outsider.allocator.allocate_buffer(64)
        s = a.create_semaphore()
        a.queue_fill(ANY, [], [(s, 1)], on_b, 0, 64, b"\x11")
        a.queue_copy(ANY, [(s, 1)], [(s, 2)], on_b, 0, on_a, 0, 64)
        cb = a.create_command_buffer()
        cb.begin()
        cb.fill_buffer(BufferRef(on_b, 0, 32), b"\x22")
        with pytest.raises(hal.InvalidArgumentError, match="another device"):
            cb.fill_buffer(foreign, b"\x33")
        cb.end()
        a.queue_execute(ANY, [(s, 2)], [(s, 3)], cb)
        s.wait(3, T)
        assert on_a.read() == b"\x11" * 64
        assert on_b.read() == b"\x22" * 32 + b"\x11" * 32
        for op in (
            lambda: a.queue_fill(ANY, [], [(s, 4)], foreign, 0, 64, b"\x01"),
            lambda: a.queue_copy(ANY, [], [(s, 4)], foreign, 0, on_a, 0, 64),
            lambda: a.queue_copy(ANY, [], [(s, 4)], on_b, 0, foreign, 0, 64),
        ):
            with pytest.raises(hal.InvalidArgumentError, match="another device"):
                op()
        assert s.query() == 3 and s.failure is None
    outsider.close()
