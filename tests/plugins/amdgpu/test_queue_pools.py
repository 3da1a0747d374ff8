"""queue_alloca / queue_dealloca of the amdgpu device through the hal_core.pool substrate:
the HSA slab provider, default pool routing per heap, call-time errors, parking and
teardown with parked work."""

import gc

import numpy as np
import pytest
from hal_amdgpu.slab_provider import HsaSlabProvider

import hal_core
from hal_core import BufferParams, BufferUsage, MemoryType, QueueAffinity
from hal_core.backend import buffer_storage
from hal_core.pool import FixedBlockPool, TlsfPool

TIMEOUT = 10.0
_READABLE = BufferUsage.DEFAULT | BufferUsage.MAPPING_SCOPED


@pytest.fixture
def device():
    dev = hal_core.create_device("amdgpu://0?hsa=soft")
    yield dev
    dev.close()


def _qset(device):
    backend = device.backend
    return backend._host_queue_set or backend._create_host_queues()


def test_slab_provider_wraps_real_hsa_memory(device):
    allocator = device.backend.allocator
    host = HsaSlabProvider(allocator, 1)
    slab = host.acquire_slab(8192)
    view = host.wrap(slab, 4096, 128)
    assert view.address == slab.storage.address + 4096 and view.nbytes == 128
    view.host_array[:] = 7  # host-visible heap: the view is the slab's memory
    assert bytes(slab.storage.host_array[4096:4100]) == b"\x07" * 4
    assert host.query_properties()[0] == MemoryType.DEVICE_LOCAL | MemoryType.HOST_VISIBLE | (
        MemoryType.HOST_COHERENT
    )
    released = []
    host.wrap(slab, 0, 64, lambda: released.append(1)).release()
    host.release_slab(slab)
    host.release_slab(slab)  # idempotent
    stats = host.query_stats()
    assert (stats.slabs_acquired, stats.slabs_released, released) == (1, 1, [1])
    device_only = HsaSlabProvider(allocator, 0)
    slab = device_only.acquire_slab(4096)
    assert device_only.wrap(slab, 0, 64).host_array is None
    device_only.release_slab(slab)
    with pytest.raises(hal_core.InvalidArgumentError, match="heaps"):
        HsaSlabProvider(allocator, 3)


@pytest.mark.parametrize(
    ("memory_type", "usage", "heap"),
    [
        (MemoryType.DEVICE_LOCAL, BufferUsage.TRANSFER | BufferUsage.DISPATCH, 0),
        (MemoryType.HOST_VISIBLE, BufferUsage.DEFAULT, 1),
        (MemoryType.HOST_LOCAL, BufferUsage.DEFAULT, 2),
    ],
)
def test_default_pools_route_by_heap(device, memory_type, usage, heap):
    sem = device.create_semaphore(0)
    buf = device.queue_alloca(
        QueueAffinity.ANY, (), [(sem, 1)], BufferParams(type=memory_type, usage=usage), 1000
    )
    sem.wait(1, TIMEOUT)
    assert buf.is_committed
    assert buf.pool_state.pool.trace_name == f"amdgpu heap {heap} default TLSF"
    device.queue_dealloca(QueueAffinity.ANY, [(sem, 1)], [(sem, 2)], buf)
    sem.wait(2, TIMEOUT)
    assert buf.is_decommitted


def test_oversized_goes_to_passthrough_and_memory_is_reused(device):
    params = BufferParams(type=MemoryType.HOST_VISIBLE, usage=BufferUsage.DEFAULT)
    sem = device.create_semaphore(0)
    big = device.queue_alloca(1, (), [(sem, 1)], params, 20 << 20)
    sem.wait(1, TIMEOUT)
    assert "passthrough" in big.pool_state.pool.trace_name
    device.queue_dealloca(1, [(sem, 1)], [(sem, 2)], big)
    sem.wait(2, TIMEOUT)
    # Same queue, retired release: the TLSF block is reused with no wait.
    addresses = []
    for i in range(3):
        buf = device.queue_alloca(1, [(sem, 2 + 2 * i)], [(sem, 3 + 2 * i)], params, 4096)
        sem.wait(3 + 2 * i, TIMEOUT)
        addresses.append(buffer_storage(buf).address)
        device.queue_dealloca(1, [(sem, 3 + 2 * i)], [(sem, 4 + 2 * i)], buf)
        sem.wait(4 + 2 * i, TIMEOUT)
    assert len(set(addresses)) == 1


def test_bad_alignment_is_invalid_argument_at_call_and_nothing_leaks(device):
    sem = device.create_semaphore(0)
    params = BufferParams(
        type=MemoryType.HOST_VISIBLE, usage=BufferUsage.DEFAULT, min_alignment=1 << 20
    )
    with pytest.raises(hal_core.InvalidArgumentError, match="alignment"):
        device.queue_alloca(1, (), [(sem, 1)], params, 64)
    assert sem.query() == 0
    ok = device.queue_alloca(1, (), [(sem, 1)], BufferParams(type=MemoryType.HOST_VISIBLE), 64)
    sem.wait(1, TIMEOUT)
    assert ok.is_committed


def test_close_with_a_parked_alloca_cancels_it(device):
    with hal_core.DeviceGroup.from_devices([device], owns_devices=False):
        backend = device.query_queue_pool_backend(1)
        pool = FixedBlockPool(
            backend.slab_provider, block_size=4096, block_count=1, notification=backend.notification
        )
        sem = device.create_semaphore(0)
        first = device.queue_alloca(1, (), [(sem, 1)], BufferParams(), 4096, pool=pool)
        sem.wait(1, TIMEOUT)
        parked_sem = device.create_semaphore(0)
        parked = device.queue_alloca(1, (), [(parked_sem, 1)], BufferParams(), 4096, pool=pool)
        assert not parked.is_committed and _qset(device).pools.pending_count == 1
    device.close()  # never hangs; the parked alloca fails CANCELLED
    with pytest.raises(hal_core.CancelledError):
        parked_sem.wait(1, TIMEOUT)
    assert first.is_committed
    del first
    gc.collect()
    pool.close()


def test_tlsf_pool_chains_over_two_queues(device):
    """Alloca -> fill -> dealloca chains alternating between the two queues through one
    small TLSF pool: every fill reads back intact."""
    with hal_core.DeviceGroup.from_devices([device], owns_devices=False):
        backend = device.query_queue_pool_backend(1)
        pool = TlsfPool(
            backend.slab_provider,
            range_length=1 << 14,
            notification=backend.notification,
            epoch_query=backend.epoch_query,
        )
        params = BufferParams(usage=BufferUsage.DEFAULT)
        for i in range(24):
            q = 1 << (i & 1)
            sem = device.create_semaphore(0)
            buf = device.queue_alloca(
                q,
                (),
                [(sem, 1)],
                params,
                4096,
                pool=pool,
                flags=hal_core.AllocaFlags.ALLOW_POOL_WAIT_FRONTIER,
            )
            device.queue_fill(q, [(sem, 1)], [(sem, 2)], buf, 0, 4096, bytes([i]))
            out = device.allocator.allocate_buffer(
                BufferParams(type=MemoryType.HOST_LOCAL, usage=_READABLE), 4096
            )
            device.queue_copy(q, [(sem, 2)], [(sem, 3)], buf, 0, out, 0, 4096)
            device.queue_dealloca(q, [(sem, 3)], [(sem, 4)], buf)
            sem.wait(4, TIMEOUT)
            assert np.all(np.frombuffer(out.read(), np.uint8) == i)
        assert pool.query_stats().bytes_reserved == 0
        pool.close()
