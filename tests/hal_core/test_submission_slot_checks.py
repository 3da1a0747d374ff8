"""``queue_execute``'s binding-table checks (usage, access, device visibility, range):
each failure is raised at the call with its own code and message, and a good table runs."""

from __future__ import annotations

import pytest

import hal_core as hal
from hal_core import BufferBinding, BufferRef, CommandCategory, QueueAffinity
from hal_core import BufferUsage as U
from hal_core import MemoryAccess as A

ANY = QueueAffinity.ANY


@pytest.fixture(scope="module")
def device():
    dev = hal.create_device("local-task://")
    yield dev
    dev.close()


def _buf(device, size, usage=U.DEFAULT | U.MAPPING, access=A.ALL):
    return device.allocator.allocate_buffer(hal.BufferParams(usage=usage, access=access), size)


def _copy_cb(device):
    """Copies slot 0 [0, 16) to slot 1 [0, 16)."""
    cb = device.create_command_buffer(0, CommandCategory.TRANSFER, ANY, 2)
    cb.begin()
    cb.copy_buffer(BufferRef.indirect(0, 0, 16), BufferRef.indirect(1, 0, 16))
    cb.end()
    return cb


def _execute(device, cb, table):
    done = device.create_semaphore(0)
    device.queue_execute(ANY, [], [(done, 1)], cb, table)
    device.queue_flush(ANY)
    done.wait(1, timeout=20.0)


def test_good_table_runs_and_whole_buffer_resolves(device):
    cb = _copy_cb(device)
    src, dst = _buf(device, 16), _buf(device, 32)
    src.write(bytes(range(16)))
    _execute(device, cb, [BufferBinding(src), BufferBinding(dst, 16, hal.WHOLE_BUFFER)])
    assert bytes(dst.read())[16:] == bytes(range(16))


def test_each_bad_slot_fails_at_the_call_with_its_code(device):
    cb = _copy_cb(device)
    src, dst = _buf(device, 16), _buf(device, 16)
    no_target = _buf(device, 16, usage=U.TRANSFER_SOURCE | U.MAPPING)
    read_only = _buf(device, 16, access=A.READ)
    cases = [
        ([BufferBinding(src), BufferBinding(no_target)], hal.PermissionDeniedError, "usage"),
        ([BufferBinding(src), BufferBinding(read_only)], hal.PermissionDeniedError, "access"),
        ([BufferBinding(src), BufferBinding(dst, 8, 16)], hal.OutOfRangeError, "exceeds"),
        ([BufferBinding(src), BufferBinding(dst, 8)], hal.OutOfRangeError, "binds 8 bytes"),
        ([BufferBinding(src), None], hal.InvalidArgumentError, "slot 1 is empty"),
    ]
    for table, error, words in cases:
        with pytest.raises(error, match=words):
            _execute(device, cb, table)
    # Nothing was lost: the queue still runs a good table afterwards.
    src.write(b"\x05" * 16)
    _execute(device, cb, [BufferBinding(src), BufferBinding(dst)])
    assert bytes(dst.read()) == b"\x05" * 16
