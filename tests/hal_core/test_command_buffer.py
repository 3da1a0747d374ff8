"""Unit, property and concurrency tests of hal_core command buffers, references, binding
tables and the validation layer (device-independent parts use a local-sync device)."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core as hal
from hal_core import (
    WHOLE_BUFFER,
    BindingTable,
    BufferBinding,
    BufferRef,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    QueueAffinity,
)
from hal_core._command_buffer import constants_bytes
from hal_core.backend import bound_range, resolve_binding

ANY = QueueAffinity.ANY
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def device():
    dev = hal.create_device("local-sync://")
    yield dev
    dev.close()


def _buf(device, size):
    return device.allocator.allocate_buffer(
        hal.BufferParams(usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.MAPPING), size
    )


# -- value types --------------------------------------------------------------------------


def test_buffer_ref_validation(device):
    b = _buf(device, 16)
    assert BufferRef(b).length == WHOLE_BUFFER
    assert BufferRef(b, 4, 8).resolved_length() == 8
    assert BufferRef(b, 4).resolved_length() == 12
    ind = BufferRef.indirect(3, 4, 8)
    assert ind.is_indirect and ind.slot == 3
    with pytest.raises(hal.InvalidArgumentError, match="offset"):
        BufferRef(b, -1)
    with pytest.raises(hal.InvalidArgumentError, match="slot"):
        BufferRef.indirect(1 << 24)
    with pytest.raises(hal.InvalidArgumentError, match="length"):
        BufferRef(b, 0, 1.5)


def test_binding_table_entries(device):
    b = _buf(device, 16)
    table = BindingTable([b, (b, 4, 8), BufferBinding(b, 8), None])
    assert len(table) == 4
    assert table[0].buffer is b and table[1].offset == 4 and table[3] is None
    with pytest.raises(hal.InvalidArgumentError, match="entry 1"):
        BindingTable([b, 42])
    with pytest.raises(hal.InvalidArgumentError, match="entry 0"):
        BindingTable([("not a buffer", 0, 4)])
    assert table.resolve(BufferRef.indirect(1, 2, 4)) == (b, 6, 4)
    assert table.resolve(BufferRef(b, 1, 2)) == (b, 1, 2)
    with pytest.raises(hal.OutOfRangeError, match="past the table"):
        table.resolve(BufferRef.indirect(9))
    with pytest.raises(hal.InvalidArgumentError, match="holds no buffer"):
        table.resolve(BufferRef.indirect(3))


@settings(max_examples=80, deadline=None)
@given(
    size=st.integers(0, 64),
    boff=st.integers(0, 80),
    blen=st.one_of(st.just(WHOLE_BUFFER), st.integers(0, 80)),
    roff=st.integers(0, 80),
    rlen=st.one_of(st.just(WHOLE_BUFFER), st.integers(0, 80)),
)
def test_resolve_binding_matches_model(device, size, boff, blen, roff, rlen):
    """Composition equals the model: slice the buffer by the binding, then by the ref."""
    b = _buf(device, size)
    model_blen = size - boff if blen == WHOLE_BUFFER else blen
    ok_binding = boff <= size and 0 <= model_blen and boff + model_blen <= size
    model_rlen = model_blen - roff if rlen == WHOLE_BUFFER else rlen
    ok_ref = (
        ok_binding and roff <= model_blen and 0 <= model_rlen and roff + model_rlen <= model_blen
    )
    table = (BufferBinding(b, boff, blen),)
    ref = BufferRef.indirect(0, roff, rlen)
    if not ok_ref:
        with pytest.raises(hal.OutOfRangeError):
            resolve_binding(ref, table)
        return
    buffer, off, length = resolve_binding(ref, table)
    assert buffer is b and off == boff + roff and length == model_rlen
    assert bound_range(table, 0) == (b, boff, model_blen)
    # The same range named directly on the bound slice's buffer resolves alike.
    assert resolve_binding(BufferRef(b, boff + roff, length)) == (b, boff + roff, length)


def test_resolve_binding_refuses_bad_slots(device):
    b = _buf(device, 16)
    with pytest.raises(hal.OutOfRangeError, match="past the table of 1 entries"):
        resolve_binding(BufferRef.indirect(1), (BufferBinding(b),))
    with pytest.raises(hal.InvalidArgumentError, match="holds no buffer"):
        resolve_binding(BufferRef.indirect(0), (None,))
    with pytest.raises(hal.OutOfRangeError, match="exceeds its buffer"):
        resolve_binding(BufferRef(b, 8, 16))
    with pytest.raises(hal.InvalidArgumentError, match="expected a Buffer or BufferRef"):
        resolve_binding(b"bytes", ())  # type: ignore[arg-type]
    assert resolve_binding(b) == (b, 0, 16)


def test_dispatch_config_validation(device):
    assert DispatchConfig.static(2, 3).workgroup_count == (2, 3, 1)
    ref = BufferRef(_buf(device, 16), 0, 12)
    assert DispatchConfig.indirect(ref).workgroup_count_ref is ref
    assert DispatchConfig.indirect(_buf(device, 16), 4).workgroup_count_ref.offset == 4
    with pytest.raises(hal.InvalidArgumentError, match="workgroup_count"):
        DispatchConfig((1, 1))
    with pytest.raises(hal.InvalidArgumentError, match="workgroup_count"):
        DispatchConfig((-1, 1, 1))
    with pytest.raises(hal.InvalidArgumentError, match="workgroup_size"):
        DispatchConfig((1, 1, 1), None, (1 << 32, 1, 1))


def test_constants_bytes():
    assert constants_bytes([1, 2]) == np.array([1, 2], np.uint32).tobytes()
    assert constants_bytes(b"abcd") == b"abcd"
    assert constants_bytes(np.array([1.0], np.float32)) == np.array([1.0], np.float32).tobytes()
    with pytest.raises(hal.InvalidArgumentError, match="uint32"):
        constants_bytes(["x"])
    with pytest.raises(hal.InvalidArgumentError, match="uint32"):
        constants_bytes([-1])


# -- recording ----------------------------------------------------------------------------


def test_state_and_repr(device):
    cb = device.create_command_buffer(CommandBufferMode.ONE_SHOT, CommandCategory.TRANSFER)
    assert "new" in repr(cb)
    cb.begin()
    cb.execution_barrier()
    cb.begin_debug_group("g")
    cb.end_debug_group()
    assert "recording" in repr(cb)
    cb.end()
    assert "ended" in repr(cb) and cb.dispatch_count == 0
    with cb:
        pass
    assert cb.commands == []


def test_binding_count_tracked_with_and_without_validation(device):
    for mode in (0, CommandBufferMode.UNVALIDATED):
        cb = device.create_command_buffer(mode, CommandCategory.ANY, ANY, 8)
        cb.begin()
        cb.fill_buffer(BufferRef.indirect(5, 0, 4), b"\x01")
        cb.fill_buffer(BufferRef.indirect(2, 0, 4), b"\x01")
        cb.end()
        assert cb.binding_count == 6


def test_concurrent_recording_raises(device):
    """Recording is single-threaded: a second thread entering while a call is inside gets
    FAILED_PRECONDITION (a conflict detector, not a lock)."""
    target = _buf(device, 16)
    cb = device.create_command_buffer()
    cb.begin()
    entered, release = threading.Event(), threading.Event()
    results = []

    class BlockingExecutable:
        def lookup_function(self, name):
            entered.set()
            release.wait(TIMEOUT)
            raise hal.NotFoundError(f"no {name}")

    def recorder():
        try:
            cb.dispatch(BlockingExecutable(), "f", DispatchConfig.static(1))
        except hal.HalError as exc:
            results.append(exc)

    t = threading.Thread(target=recorder)
    t.start()
    assert entered.wait(TIMEOUT)
    with pytest.raises(hal.FailedPreconditionError, match="another thread"):
        cb.fill_buffer(target, b"\x01")
    with pytest.raises(hal.FailedPreconditionError, match="another thread"):
        cb.end()
    release.set()
    t.join(TIMEOUT)
    assert isinstance(results[0], hal.NotFoundError)
    cb.fill_buffer(target, b"\x01")  # usable again once the other call left
    cb.end()


def test_unvalidated_garbage_fails_at_end(device):
    cb = device.create_command_buffer(CommandBufferMode.UNVALIDATED)
    cb.begin()
    cb.dispatch(object(), 0, DispatchConfig.static(1), b"", [])
    with pytest.raises(hal.InvalidArgumentError, match="malformed"):
        cb.end()


def test_unretained_buffer_released_early_fails_cleanly(device):
    """UNRETAINED: the caller keeps buffers alive. If it does not, execution fails with
    FAILED_PRECONDITION instead of touching freed memory."""
    target = _buf(device, 16)
    cb = device.create_command_buffer(CommandBufferMode.UNRETAINED)
    cb.begin()
    cb.fill_buffer(target, b"\x05")
    cb.end()
    watch = weakref.ref(target)
    del target
    gc.collect()
    assert watch() is None
    sem = device.create_semaphore()
    device.queue_execute(ANY, (), [(sem, 1)], cb)
    with pytest.raises(hal.FailedPreconditionError, match="UNRETAINED"):
        sem.wait(1, TIMEOUT)


def test_affinity_checks(device):
    with pytest.raises(hal.InvalidArgumentError, match="selects no queue"):
        device.create_command_buffer(0, CommandCategory.ANY, 1 << 40)
    cb = device.create_command_buffer(0, CommandCategory.ANY, 1 << 0)
    cb.begin()
    cb.end()
    sem = device.create_semaphore()
    if device.queue_count > 1:
        with pytest.raises(hal.InvalidArgumentError, match="outside the command buffer"):
            device.queue_execute(1 << 1, (), [(sem, 1)], cb)
    device.queue_execute(1 << 0, (), [(sem, 1)], cb)
    sem.wait(1, TIMEOUT)


def test_queue_execute_rejects_foreign_objects(device):
    sem = device.create_semaphore()
    with pytest.raises(hal.InvalidArgumentError, match="CommandBuffer"):
        device.queue_execute(ANY, (), [(sem, 1)], "cb")
    other = hal.create_device("local-sync://")
    try:
        cb = other.create_command_buffer()
        cb.begin()
        cb.end()
        with pytest.raises(hal.InvalidArgumentError, match="another device"):
            device.queue_execute(ANY, (), [(sem, 1)], cb)
    finally:
        other.close()


def test_buffer_checks_are_remembered_per_use_only(device):
    """A buffer checked for one use (fill target) is still checked for another (copy
    source), and a refused command leaves no memory of the buffer behind."""
    target_only = device.allocator.allocate_buffer(
        hal.BufferParams(usage=hal.BufferUsage.TRANSFER_TARGET), 16
    )
    full = _buf(device, 16)
    cb = device.create_command_buffer()
    cb.begin()
    cb.fill_buffer(target_only, b"\x01")
    cb.fill_buffer(BufferRef(target_only, 4, 4), b"\x02")  # remembered: range still checked
    with pytest.raises(hal.OutOfRangeError):
        cb.fill_buffer(BufferRef(target_only, 12, 8), b"\x02")
    for _ in range(2):  # refused every time, not only the first
        with pytest.raises(hal.PermissionDeniedError, match="TRANSFER_SOURCE"):
            cb.copy_buffer(target_only, full)
    cb.copy_buffer(full, target_only)
    cb.end()
    assert len(cb.commands) == 3


def test_unretained_recording_does_not_keep_checked_buffers(device):
    """The validation layer's memos of checked buffers and bindings end with recording:
    an UNRETAINED command buffer keeps none of the caller's buffers alive."""
    a, b = _buf(device, 16), _buf(device, 16)
    cb = device.create_command_buffer(CommandBufferMode.UNRETAINED)
    cb.begin()
    cb.fill_buffer(a, b"\x05")
    cb.copy_buffer(a, b)
    cb.end()
    watch = [weakref.ref(a), weakref.ref(b)]
    del a, b
    gc.collect()
    assert [w() for w in watch] == [None, None]
