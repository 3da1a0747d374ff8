"""Allocation pools: slab providers, the passthrough / fixed-block / TLSF policies, pool
sets and the synchronous ``allocate_buffer`` helper.

Layers: a slab provider supplies real memory (``CpuSlabProvider`` for host memory),
optionally behind a ``SlabCache``; a pool policy carves reservations out of slabs and
gates reuse with death frontiers; a ``PoolSet`` routes requests by memory type, usage and
size. Everything above the provider is pure offset bookkeeping. Queue allocations
(``Device.queue_alloca``) go through a device's default set or a pool passed explicitly;
``Device.query_queue_pool_backend`` hands out the ingredients for building one.

This package only re-exports; implementations live in its private modules. The common
frontier-free reserve/release cases run in a C extension when it is built (``_fast_paths``).
"""

from ._fixed_block import FixedBlockPool
from ._passthrough import PassthroughPool
from ._pool import EpochQuery, Pool, allocate_buffer, release_buffer
from ._pool_set import DEFAULT_PRIORITY_OVERSIZED, DEFAULT_PRIORITY_TLSF, PoolSet
from ._queue_backend import QueuePoolBackend
from ._reservation import (
    AcquireFlags,
    AcquireInfo,
    AcquireResult,
    PoolCapabilities,
    PoolStats,
    Reservation,
    ReserveFlags,
)
from ._slab import CpuSlabProvider, Slab, SlabCache, SlabProvider, SlabProviderStats
from ._tlsf import TlsfPool

__all__ = [
    "AcquireFlags",
    "AcquireInfo",
    "AcquireResult",
    "CpuSlabProvider",
    "DEFAULT_PRIORITY_OVERSIZED",
    "DEFAULT_PRIORITY_TLSF",
    "EpochQuery",
    "FixedBlockPool",
    "PassthroughPool",
    "Pool",
    "PoolCapabilities",
    "PoolSet",
    "PoolStats",
    "QueuePoolBackend",
    "Reservation",
    "ReserveFlags",
    "Slab",
    "SlabCache",
    "SlabProvider",
    "SlabProviderStats",
    "TlsfPool",
    "allocate_buffer",
    "release_buffer",
]
