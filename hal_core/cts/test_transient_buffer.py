"""CTS: transfers on queue_alloca'd (transient) buffers (IREE's TransientBufferTest).

Fill, update and copy on transient buffers, ordered only by the alloca signal; a transfer
queued before the alloca commits (waiting on its signal) sees committed memory; a
zero-access-flag transient; fill -> barrier -> copy between two transients; and work
queued against a transient whose alloca is parked on an exhausted pool runs once memory
is released. Command buffers (AsyncTransientBufferTest): fill + barrier + copy in one
command buffer, a static reference recorded against a transient not committed yet, and an
indirect reference bound to a parked transient.
"""

from __future__ import annotations

import pytest

import hal_core
from hal_core import BufferParams, MemoryAccess, QueueAffinity
from hal_core.pool import FixedBlockPool

from .context import deterministic_bytes

ANY = QueueAffinity.ANY


def _transient(cts, size, wait=(), pool=None, params=None):
    sem = cts.semaphore(0)
    buf = cts.device.queue_alloca(ANY, wait, [(sem, 1)], params or BufferParams(), size, pool=pool)
    return buf, sem


def _free(cts, buf, wait=()):
    sem = cts.semaphore(0)
    cts.device.queue_dealloca(ANY, wait, [(sem, 1)], buf)
    cts.wait(sem, 1)


def _one_block_pool(cts, block_size):
    """A group around the device and a one-block pool on queue 0's pool backend (skips
    backends without one). Close the group when done."""
    group = hal_core.DeviceGroup.from_devices([cts.device], owns_devices=False)
    try:
        b = cts.device.query_queue_pool_backend(1)
    except hal_core.UnimplementedError as exc:
        group.close()
        pytest.skip(f"{cts.driver} has no queue pool backend: {exc}")
    pool = FixedBlockPool(
        b.slab_provider,
        block_size=block_size,
        block_count=1,
        notification=b.notification,
        epoch_query=b.epoch_query,
    )
    return group, pool


def test_fill_update_copy_on_transients(cts):
    size = 4096
    a, sa = _transient(cts, size)
    b, sb = _transient(cts, size)
    data = deterministic_bytes(size, 3)
    s1, s2, s3 = cts.semaphore(0), cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_fill(ANY, [(sa, 1)], [(s1, 1)], a, 0, size, b"\x00\x00\x00\x00")
    cts.device.queue_update(ANY, [(s1, 1)], [(s2, 1)], data, 0, a, 0, size)
    cts.device.queue_copy(ANY, [(s2, 1), (sb, 1)], [(s3, 1)], a, 0, b, 0, size)
    cts.wait(s3, 1)
    assert cts.read_bytes(b) == data
    _free(cts, a)
    _free(cts, b)


def test_transfer_queued_before_commit(cts):
    gate = cts.semaphore(0)
    buf, sem = _transient(cts, 256, wait=[(gate, 1)])
    filled = cts.semaphore(0)
    cts.device.queue_fill(ANY, [(sem, 1)], [(filled, 1)], buf, 0, 256, b"\x3c")
    assert filled.value == 0 and not buf.is_committed
    gate.signal(1)
    cts.wait(filled, 1)
    assert cts.read_bytes(buf) == b"\x3c" * 256
    _free(cts, buf)


def test_zero_access_transient(cts):
    buf, sem = _transient(cts, 64, params=BufferParams(access=MemoryAccess.NONE))
    filled = cts.semaphore(0)
    cts.device.queue_fill(ANY, [(sem, 1)], [(filled, 1)], buf, 0, 64, b"\x01\x02")
    cts.wait(filled, 1)
    assert cts.read_bytes(buf) == b"\x01\x02" * 32
    _free(cts, buf)


def test_fill_barrier_copy_between_transients(cts):
    a, sa = _transient(cts, 1024)
    b, sb = _transient(cts, 1024)
    s1, s2, s3 = cts.semaphore(0), cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_fill(ANY, [(sa, 1)], [(s1, 1)], a, 0, 1024, b"\xee\xff")
    cts.device.queue_barrier(ANY, [(s1, 1), (sb, 1)], [(s2, 1)])
    cts.device.queue_copy(ANY, [(s2, 1)], [(s3, 1)], a, 0, b, 0, 1024)
    cts.wait(s3, 1)
    assert cts.read_bytes(b) == b"\xee\xff" * 512
    _free(cts, a)
    _free(cts, b)


@pytest.mark.hal_requires("allocation_pools")
def test_work_on_parked_transient_runs_after_release(cts):
    group, pool = _one_block_pool(cts, 1024)
    first, s1 = _transient(cts, 1024, pool=pool)
    parked, s2 = _transient(cts, 1024, pool=pool)
    filled = cts.semaphore(0)
    cts.device.queue_fill(ANY, [(s2, 1)], [(filled, 1)], parked, 0, 1024, b"\x5e")
    cts.wait(s1, 1)
    assert filled.value == 0 and not parked.is_committed
    _free(cts, first)
    cts.wait(filled, 1)
    assert cts.read_bytes(parked) == b"\x5e" * 1024
    _free(cts, parked)
    pool.close()
    group.close()


# -- command buffers on transient buffers (IREE's AsyncTransientBufferTest) ------------------


def test_command_buffer_fill_barrier_copy_on_transients(cts):
    a, sa = _transient(cts, 512)
    b, sb = _transient(cts, 512)
    cb = cts.device.create_command_buffer()
    cb.begin()
    cb.fill_buffer(hal_core.BufferRef(a, 0, 512), b"\x21\x43")
    cb.execution_barrier()
    cb.copy_buffer(hal_core.BufferRef(a, 0, 512), hal_core.BufferRef(b, 0, 512))
    cb.end()
    done = cts.semaphore(0)
    cts.device.queue_execute(ANY, [(sa, 1), (sb, 1)], [(done, 1)], cb)
    cts.wait(done, 1)
    assert cts.read_bytes(b) == b"\x21\x43" * 256
    _free(cts, a)
    _free(cts, b)


def test_static_ref_to_uncommitted_transient(cts):
    """A command buffer recorded against a transient whose memory is not committed yet
    executes correctly once the alloca signal publishes."""
    gate = cts.semaphore(0)
    buf, sem = _transient(cts, 256, wait=[(gate, 1)])
    assert not buf.is_committed
    cb = cts.device.create_command_buffer()
    cb.begin()
    cb.fill_buffer(hal_core.BufferRef(buf, 0, 256), b"\x7a")
    cb.end()
    done = cts.semaphore(0)
    cts.device.queue_execute(ANY, [(sem, 1)], [(done, 1)], cb)
    assert done.value == 0
    gate.signal(1)
    cts.wait(done, 1)
    assert cts.read_bytes(buf) == b"\x7a" * 256
    _free(cts, buf)


@pytest.mark.hal_requires("allocation_pools")
def test_indirect_ref_bound_to_parked_transient(cts):
    """An indirect reference bound (at submit) to a transient whose alloca is parked on an
    exhausted pool resolves to the committed memory once a release lets it commit."""
    group, pool = _one_block_pool(cts, 256)
    first, s1 = _transient(cts, 256, pool=pool)
    cts.wait(s1, 1)
    parked, s2 = _transient(cts, 256, pool=pool)
    assert not parked.is_committed
    cb = cts.device.create_command_buffer(binding_capacity=1)
    cb.begin()
    cb.fill_buffer(hal_core.BufferRef.indirect(0, 0, 256), b"\x0d")
    cb.end()
    done = cts.semaphore(0)
    cts.device.queue_execute(ANY, [(s2, 1)], [(done, 1)], cb, [parked])
    assert done.value == 0
    _free(cts, first)
    cts.wait(done, 1)
    assert cts.read_bytes(parked) == b"\x0d" * 256
    _free(cts, parked)
    pool.close()
    group.close()
