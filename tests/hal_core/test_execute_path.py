"""The queue_execute path's front door after its plain-int rewrite: buffer roots without
a self-reference, host addresses, binding-table construction (including the checked
constructors the replay player uses), command-buffer creation and submission checks."""

from __future__ import annotations

import gc
import weakref
from collections import namedtuple

import numpy as np
import pytest

import hal_core as hal
from hal_core import (
    BindingTable,
    BufferBinding,
    BufferParams,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    ExecuteFlags,
    MemoryAccess,
    MemoryType,
)
from hal_core._buffer import HostStorage, host_address
from hal_core._buffer_ref import checked_binding, checked_table

ANY = (1 << 64) - 1


@pytest.fixture(scope="module")
def device():
    with hal.create_device("local-sync://") as d:
        yield d


# -- buffers -------------------------------------------------------------------------------


def test_dropped_root_buffer_is_freed_without_the_cycle_collector(device):
    # A root that referenced itself lived (with its memory) until a gc pass.
    gc.collect()
    gc.disable()
    try:
        buf = device.allocator.allocate_buffer(BufferParams(), 1024)
        watch = weakref.ref(buf)
        del buf
        assert watch() is None
    finally:
        gc.enable()


def test_root_and_subspan_roots(device):
    buf = device.allocator.allocate_buffer(BufferParams(), 64)
    assert buf.allocated_buffer is buf and buf._root is buf
    sub = buf.subspan(8, 16)
    subsub = sub.subspan(4, 4)
    assert sub.allocated_buffer is buf and subsub.allocated_buffer is buf
    # The subspan keeps its root (and the root's memory) alive.
    watch = weakref.ref(buf)
    del buf
    gc.collect()
    assert watch() is not None
    subsub.write(b"wxyz")
    assert sub.read(4, 4) == b"wxyz"


def test_zero_length_root_still_is_its_own_root(device):
    buf = device.allocator.allocate_buffer(BufferParams(), 0)
    assert buf.allocated_buffer is buf and buf.is_committed


def test_host_address_agrees_with_numpy():
    raw = np.zeros(100, dtype=np.uint8)
    assert host_address(raw) == raw.ctypes.data
    assert host_address(raw[7:50]) == raw.ctypes.data + 7
    readonly = np.zeros(10, dtype=np.uint8)
    readonly.flags.writeable = False
    assert host_address(readonly) == readonly.ctypes.data
    strided = np.zeros(20, dtype=np.uint8)[::2]
    assert host_address(strided) == strided.ctypes.data
    assert host_address(np.zeros(0, dtype=np.uint8)) == 0


@pytest.mark.parametrize("size", [0, 1, 100, 4096])
@pytest.mark.parametrize("alignment", [64, 128, 4096])
def test_host_storage_allocate_is_aligned_and_zeroed(size, alignment):
    storage = HostStorage.allocate(size, alignment)
    assert storage.nbytes == size and not storage.host_array.any()
    if size:
        assert storage.address == storage.host_array.ctypes.data
        assert storage.address % alignment == 0
    else:
        assert storage.address == 0


def test_allocator_buffers_are_64_byte_aligned(device):
    for size in (1, 100, 1000):
        buf = device.allocator.allocate_buffer(BufferParams(min_alignment=0), size)
        assert hal.backend.buffer_storage(buf).address % 64 == 0


def test_require_usage_and_access_with_flags_and_ints(device):
    buf = device.allocator.allocate_buffer(
        BufferParams(usage=BufferUsage.TRANSFER, access=MemoryAccess.READ), 16
    )
    buf.require_usage(BufferUsage.TRANSFER_SOURCE, "x")
    buf.require_usage(int(BufferUsage.TRANSFER), "x")
    with pytest.raises(hal.PermissionDeniedError, match="DISPATCH_STORAGE_READ"):
        buf.require_usage(BufferUsage.DISPATCH_STORAGE_READ, "a dispatch")
    buf.require_access(MemoryAccess.READ, "x")
    with pytest.raises(hal.PermissionDeniedError, match="WRITE"):
        buf.require_access(MemoryAccess.WRITE, "a write")
    anything = device.allocator.allocate_buffer(BufferParams(access=MemoryAccess.ANY), 16)
    anything.require_access(MemoryAccess.WRITE | MemoryAccess.DISCARD, "x")


def test_memory_type_has_composite_members():
    assert MemoryType.DEVICE_LOCAL.has(MemoryType.DEVICE_VISIBLE)
    assert not MemoryType.DEVICE_VISIBLE.has(MemoryType.DEVICE_LOCAL)
    assert MemoryType.HOST_LOCAL.has(int(MemoryType.HOST_VISIBLE))


def test_buffer_params_hash_follows_equality():
    a = BufferParams(usage=3, access=7, type=50)
    b = BufferParams(usage=BufferUsage.TRANSFER, access=MemoryAccess.ALL, type=50)
    assert a == b and hash(a) == hash(b)
    c = a.with_usage(BufferUsage.DISPATCH_STORAGE)
    assert c != a and {a: 1, c: 2}[b] == 1


# -- binding tables --------------------------------------------------------------------------


def test_binding_table_entry_forms(device):
    buf = device.allocator.allocate_buffer(BufferParams(), 64)
    Pair = namedtuple("Pair", "buffer offset")
    table = BindingTable(
        [
            BufferBinding(buf, 8, 16),
            None,
            buf,
            (buf, 4),
            (buf,),
            (buf, 0, 32),
            Pair(buf, 2),
            BufferBinding(None),
        ]
    )
    b = table.bindings
    assert b[0] == BufferBinding(buf, 8, 16) and b[1] is None
    assert b[2] == BufferBinding(buf) and b[3] == BufferBinding(buf, 4)
    assert b[4] == BufferBinding(buf) and b[5] == BufferBinding(buf, 0, 32)
    assert b[6] == BufferBinding(buf, 2) and b[7] == BufferBinding(None)
    assert len(BindingTable(iter([buf, None]))) == 2


@pytest.mark.parametrize(
    "entries, index, what",
    [
        ([None, "buffer"], 1, "is a str"),
        ([(), None], 0, "is a tuple"),
        ([None, None, (1, 2, 3, 4)], 2, "is a tuple"),
        ([BufferBinding("not a buffer")], 0, "holds a str"),
        ([None, ("not a buffer", 0, 4)], 1, "holds a str"),
    ],
)
def test_binding_table_bad_entries_name_their_index(entries, index, what):
    with pytest.raises(hal.InvalidArgumentError, match=f"entry {index} {what}"):
        BindingTable(entries)


def test_binding_table_bad_ranges_are_converter_errors(device):
    buf = device.allocator.allocate_buffer(BufferParams(), 64)
    with pytest.raises(hal.InvalidArgumentError, match="offset"):
        BindingTable([(buf, -1)])
    with pytest.raises(hal.InvalidArgumentError, match="length"):
        BindingTable([(buf, 0, 1 << 64)])


def test_binding_subclass_is_not_a_binding(device):
    # Only BufferBinding itself (as before): a subclass is refused like any other object.
    buf = device.allocator.allocate_buffer(BufferParams(), 64)

    class Sub(BufferBinding):
        pass

    with pytest.raises(hal.InvalidArgumentError, match="entry 0 is a Sub"):
        BindingTable([Sub(buf)])


def test_checked_constructors_equal_the_converting_ones(device):
    buf = device.allocator.allocate_buffer(BufferParams(), 64)
    binding = checked_binding(buf, 8, 16)
    assert binding == BufferBinding(buf, 8, 16)
    assert hash(binding) == hash(BufferBinding(buf, 8, 16))
    assert binding.__class__ is BufferBinding
    with pytest.raises(AttributeError):  # still frozen
        binding.offset = 0  # type: ignore[misc]
    table = checked_table((binding, None))
    assert isinstance(table, BindingTable) and table.bindings == (binding, None)
    assert len(table) == 2 and table[0] is binding


# -- command buffers and queue_execute -------------------------------------------------------


def _copy_cb(device, mode, capacity=1):
    cb = device.create_command_buffer(mode, CommandCategory.TRANSFER, ANY, capacity)
    cb.begin()
    cb.fill_buffer(hal.BufferRef.indirect(0, 0, 16), b"\x07")
    cb.end()
    return cb


@pytest.mark.parametrize(
    "mode",
    [0, 1, 0x11, 0x20, 0x40, 0x71, CommandBufferMode.ONE_SHOT, np.uint8(1), np.int64(0x20)],
)
def test_create_command_buffer_modes_are_flag_members(device, mode):
    capacity = 0 if int(mode) & 0x10 else 2
    cb = device.create_command_buffer(mode, 3, ANY, capacity)
    assert cb.mode.__class__ is CommandBufferMode and cb.mode == int(mode)
    assert cb.categories is CommandCategory.ANY


@pytest.mark.parametrize("categories, want", [(0, 3), (1, 1), (2, 2), (3, 3), (np.int32(1), 1)])
def test_create_command_buffer_categories(device, categories, want):
    cb = device.create_command_buffer(0, categories, ANY, 0)
    assert cb.categories.__class__ is CommandCategory and cb.categories == want


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": 0x2}, "unknown command buffer mode bits 0x2"),
        ({"mode": 0x80}, "unknown command buffer mode bits 0x80"),
        ({"mode": -1}, "command buffer mode -1 is not a 64-bit flag word"),
        ({"mode": "one-shot"}, "command buffer mode must be integer flag bits"),
        ({"mode": 1 << 64}, "not a 64-bit flag word"),
        ({"categories": 4}, "categories must be CommandCategory bits, got 4"),
        ({"categories": -2}, "command categories -2 is not a 64-bit flag word"),
        ({"categories": 1.0}, "command categories must be integer flag bits"),
        ({"binding_capacity": 1 << 24}, "binding_capacity must be an int in"),
        ({"binding_capacity": -1}, "binding_capacity must be an int in"),
        ({"binding_capacity": "4"}, "binding_capacity must be an integer"),
        ({"mode": 0x10}, "ALLOW_INLINE_EXECUTION needs ONE_SHOT"),
        ({"mode": 0x11, "binding_capacity": 1}, "ALLOW_INLINE_EXECUTION needs ONE_SHOT"),
        ({"affinity": 1 << 40}, "selects no queue"),
    ],
)
def test_create_command_buffer_rejects(device, kwargs, match):
    args = {"mode": 0, "categories": 3, "affinity": ANY, "binding_capacity": 0} | kwargs
    with pytest.raises(hal.InvalidArgumentError, match=match):
        device.create_command_buffer(
            args["mode"], args["categories"], args["affinity"], args["binding_capacity"]
        )


def test_one_shot_submits_once(device):
    buf = device.allocator.allocate_buffer(BufferParams(), 16)
    cb = _copy_cb(device, CommandBufferMode.ONE_SHOT)
    sem = device.create_semaphore(0)
    device.queue_execute(ANY, [], [(sem, 1)], cb, [buf])
    sem.wait(1, timeout=10)
    assert buf.read() == b"\x07" * 16
    with pytest.raises(hal.FailedPreconditionError, match="submitted once"):
        device.queue_execute(ANY, [], [(sem, 2)], cb, [buf])


def test_reusable_submits_again_with_other_tables(device):
    a = device.allocator.allocate_buffer(BufferParams(), 16)
    b = device.allocator.allocate_buffer(BufferParams(), 16)
    cb = _copy_cb(device, 0)
    sem = device.create_semaphore(0)
    device.queue_execute(ANY, [], [(sem, 1)], cb, BindingTable([a]))
    device.queue_execute(
        ANY, [(sem, 1)], [(sem, 2)], cb, checked_table((checked_binding(b, 0, 16),))
    )
    sem.wait(2, timeout=10)
    assert a.read() == b.read() == b"\x07" * 16


def test_inline_command_buffer_cannot_wait(device):
    cb = device.create_command_buffer(0x11, CommandCategory.TRANSFER, ANY, 0)
    buf = device.allocator.allocate_buffer(BufferParams(), 16)
    cb.begin()
    cb.fill_buffer(hal.BufferRef(buf, 0, 16), b"\x01")
    cb.end()
    gate = device.create_semaphore(0)
    with pytest.raises(hal.InvalidArgumentError, match="ALLOW_INLINE_EXECUTION cannot wait"):
        device.queue_execute(ANY, [(gate, 1)], [], cb)
    # Refused at the door: it was not counted as submitted, so it still runs once.
    done = device.create_semaphore(0)
    device.queue_execute(ANY, [], [(done, 1)], cb)
    done.wait(1, timeout=10)
    assert buf.read() == b"\x01" * 16


def test_execute_of_unended_or_foreign_command_buffer(device):
    cb = device.create_command_buffer(0, 3, ANY, 0)
    with pytest.raises(hal.FailedPreconditionError, match="not recorded and ended"):
        device.queue_execute(ANY, [], [], cb)
    cb.begin()
    with pytest.raises(hal.FailedPreconditionError, match="not recorded and ended"):
        device.queue_execute(ANY, [], [], cb)
    with hal.create_device("local-sync://") as other:
        foreign = other.create_command_buffer(0, 3, ANY, 0)
        foreign.begin()
        foreign.end()
        with pytest.raises(hal.InvalidArgumentError, match="another device"):
            device.queue_execute(ANY, [], [], foreign)
    with pytest.raises(hal.InvalidArgumentError, match="needs a CommandBuffer or None"):
        device.queue_execute(ANY, [], [], "cb")
    with pytest.raises(hal.InvalidArgumentError, match="binding table must be"):
        ended = _copy_cb(device, 0)
        device.queue_execute(ANY, [], [], ended, 5)


def test_borrowed_table_lifetime_is_still_accepted(device):
    buf = device.allocator.allocate_buffer(BufferParams(), 16)
    cb = _copy_cb(device, 0)
    sem = device.create_semaphore(0)
    device.queue_execute(ANY, [], [(sem, 1)], cb, [buf], ExecuteFlags.BORROW_BINDING_TABLE_LIFETIME)
    sem.wait(1, timeout=10)
    assert buf.read() == b"\x07" * 16
    with pytest.raises(hal.InvalidArgumentError, match="execute flags"):
        device.queue_execute(ANY, [], [], cb, [buf], 0x8)


def _unvalidated_fill(device, length):
    cb = device.create_command_buffer(
        CommandBufferMode.UNVALIDATED, CommandCategory.TRANSFER, ANY, 1
    )
    cb.begin()
    cb.fill_buffer(hal.BufferRef.indirect(0, 0, length), b"\x05")
    cb.end()
    return cb


def test_unvalidated_table_range_is_checked_when_it_runs(device):
    # No front-door table check without validation: the execution resolves each slot
    # and fails the submission (not the process) when a binding does not fit.
    buf = device.allocator.allocate_buffer(BufferParams(), 32)
    cb = _unvalidated_fill(device, 8)
    bad = device.create_semaphore(0)
    device.queue_execute(ANY, [], [(bad, 1)], cb, [BufferBinding(buf, 16, 32)])
    with pytest.raises(hal.HalError, match="slot 0 range"):
        bad.wait(1, timeout=10)
    good = device.create_semaphore(0)
    # WHOLE_BUFFER resolves to the rest of the buffer from the binding's offset.
    device.queue_execute(ANY, [], [(good, 1)], cb, [BufferBinding(buf, 24)])
    good.wait(1, timeout=10)
    assert buf.read() == bytes(24) + b"\x05" * 8


# -- submissions waiting on several semaphores (local-task) --------------------------------


@pytest.fixture(scope="module")
def task_device():
    with hal.create_device("local-task://") as d:
        yield d


def _fill_with_waits(device, waits):
    buf = device.allocator.allocate_buffer(BufferParams(), 16)
    cb = _copy_cb(device, 0)  # fills slot 0 with 0x07
    done = device.create_semaphore(0)
    device.queue_execute(ANY, waits, [(done, 1)], cb, [buf])
    device.queue_flush(ANY)
    return buf, done


def test_several_reached_waits_run_at_once(task_device):
    a, b = task_device.create_semaphore(3), task_device.create_semaphore(5)
    buf, done = _fill_with_waits(task_device, [(a, 2), (b, 5)])
    done.wait(1, timeout=10)
    assert buf.read() == b"\x07" * 16


def test_several_waits_with_one_pending_run_after_it(task_device):
    a, b = task_device.create_semaphore(1), task_device.create_semaphore(0)
    buf, done = _fill_with_waits(task_device, [(a, 1), (b, 1)])
    assert done.query() == 0 and buf.read() == bytes(16)
    b.signal(1)
    done.wait(1, timeout=10)
    assert buf.read() == b"\x07" * 16


def test_several_waits_with_a_failed_one_fail_the_submission(task_device):
    a, b = task_device.create_semaphore(1), task_device.create_semaphore(0)
    b.fail(hal.AbortedError("upstream failed"))
    buf, done = _fill_with_waits(task_device, [(a, 1), (b, 1)])
    with pytest.raises(hal.HalError, match="upstream failed"):
        done.wait(1, timeout=10)
    assert buf.read() == bytes(16)
    # The queue carries on.
    later, finished = _fill_with_waits(task_device, [(a, 1), (a, 0)])
    finished.wait(1, timeout=10)
    assert later.read() == b"\x07" * 16
