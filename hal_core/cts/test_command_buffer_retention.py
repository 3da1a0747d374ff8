"""CTS: resource retention by command buffers and submissions.

A submission must keep its command buffer and its binding table's buffers alive until its
signals publish, even when the caller drops every reference (and clears its binding list)
right after submitting; once the work completes and the command buffer is dropped,
everything is released.
"""

from __future__ import annotations

import gc
import weakref

import pytest

from hal_core import BufferRef, CommandCategory, DispatchConfig, ExecuteFlags, QueueAffinity

from .context import TIMEOUT
from .dispatch_support import (  # noqa: F401
    count_constant,
    dbuffer,
    executable,
    f32,
    pytest_generate_tests,
    read_f32,
    scale_offset_constants,
)

ANY = QueueAffinity.ANY


def test_indirect_transfer_binding_table_retained_until_signal(cts):
    if not cts.has_tag("indirect"):
        pytest.skip("needs the indirect tag")
    src = cts.buffer(16, bytes(range(16)))
    dst = cts.buffer(16)
    cb = cts.device.create_command_buffer(0, CommandCategory.TRANSFER, ANY, 2)
    cb.begin()
    cb.copy_buffer(BufferRef.indirect(0, 0, 16), BufferRef.indirect(1, 0, 16))
    cb.end()
    bindings = [src, dst]
    gate, done = cts.semaphore(), cts.semaphore()
    watch = [weakref.ref(cb), weakref.ref(src)]
    cts.device.queue_execute(ANY, [(gate, 1)], [(done, 1)], cb, bindings)
    del cb, src
    bindings.clear()
    gc.collect()
    assert all(w() is not None for w in watch)
    gate.signal(1)
    done.wait(1, TIMEOUT)
    assert cts.read_bytes(dst) == bytes(range(16))
    gc.collect()
    assert all(w() is None for w in watch)


@pytest.mark.hal_requires("dispatch")
def test_deferred_execute_retains_dispatch_resources(cts, exe_format):
    exe = executable(cts, exe_format)
    indirect = cts.has_tag("indirect")
    src = dbuffer(cts, 16, f32([1, 2, 3, 4]))
    tmp = dbuffer(cts, 16)
    dst = dbuffer(cts, 16)
    cb = cts.device.create_command_buffer(0, CommandCategory.ANY, ANY, 1 if indirect else 0)
    cb.begin()
    first = BufferRef.indirect(0) if indirect else BufferRef(src)
    so = scale_offset_constants(3, 10, 4)
    cb.dispatch(exe, "scale_and_offset", DispatchConfig.static(1), so, [first, tmp])
    cb.execution_barrier()
    cb.dispatch(exe, "negate", DispatchConfig.static(1), count_constant(4), [tmp, dst])
    cb.end()
    bindings = [src] if indirect else []
    gate, done = cts.semaphore(), cts.semaphore()
    cts.device.queue_execute(ANY, [(gate, 1)], [(done, 1)], cb, bindings)
    watch = [weakref.ref(o) for o in (cb, src, tmp)]
    del cb, src, tmp, first
    bindings.clear()
    gc.collect()
    assert all(w() is not None for w in watch)
    gate.signal(1)
    done.wait(1, TIMEOUT)
    assert read_f32(cts, dst) == [-13, -16, -19, -22]
    gc.collect()
    assert all(w() is None for w in watch), [w() for w in watch]


def test_command_buffer_retains_direct_buffers_until_dropped(cts):
    target = cts.buffer(16)
    cb = cts.device.create_command_buffer()
    cb.begin()
    cb.fill_buffer(target, b"\x07")
    cb.end()
    watch = weakref.ref(target)
    del target
    gc.collect()
    assert watch() is not None  # the reusable command buffer still references it
    sem = cts.semaphore()
    cts.device.queue_execute(ANY, (), [(sem, 1)], cb)
    sem.wait(1, TIMEOUT)
    assert cts.read_bytes(watch()) == b"\x07" * 16
    cb.close()
    cb.close()  # idempotent
    gc.collect()
    assert watch() is None


def test_borrowed_binding_table(cts):
    if not cts.has_tag("indirect"):
        pytest.skip("needs the indirect tag")
    dst = cts.buffer(8)
    cb = cts.device.create_command_buffer(0, CommandCategory.TRANSFER, ANY, 1)
    cb.begin()
    cb.fill_buffer(BufferRef.indirect(0, 0, 8), b"\x42")
    cb.end()
    sem = cts.semaphore()
    cts.device.queue_execute(
        ANY, (), [(sem, 1)], cb, [dst], ExecuteFlags.BORROW_BINDING_TABLE_LIFETIME
    )
    sem.wait(1, TIMEOUT)
    assert cts.read_bytes(dst) == b"\x42" * 8
