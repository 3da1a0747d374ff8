"""Slab providers: where pool memory comes from, and a cache in front of them.

A slab is one large piece of real memory a pool carves reservations out of. Providers
acquire and release whole slabs and wrap ranges of them as buffer storage; pools never
touch memory themselves. ``CpuSlabProvider`` serves host memory; ``SlabCache`` keeps a
freelist of equally sized slabs in front of any provider.

Thread-safety: providers and caches are thread-safe (one lock each, never held while
calling the inner provider's allocation).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Protocol, runtime_checkable

import attrs

from .._buffer import HostStorage
from .._memory import BufferUsage, MemoryType
from .._status import InvalidArgumentError, ResourceExhaustedError

__all__ = [
    "Slab",
    "SlabProvider",
    "SlabProviderStats",
    "CpuSlabProvider",
    "SlabCache",
]


class Slab:
    """One piece of provider memory. ``storage`` is provider payload (pools must not read
    it); ``length`` may exceed what was asked for."""

    __slots__ = ("storage", "length", "provider_handle")

    def __init__(self, storage: Any, length: int, provider_handle: Any = None) -> None:
        self.storage = storage
        self.length = length
        self.provider_handle = provider_handle

    def __repr__(self) -> str:
        return f"<Slab {self.length} bytes>"


@attrs.frozen
class SlabProviderStats:
    slabs_acquired: int = 0
    slabs_released: int = 0
    bytes_acquired: int = 0
    bytes_released: int = 0
    cache_count: int = 0
    cache_hits: int = 0
    cache_misses: int = 0


@runtime_checkable
class SlabProvider(Protocol):
    """What pools need from memory. ``acquire_slab`` raises RESOURCE_EXHAUSTED when the
    memory is not there (pools turn that into an EXHAUSTED result)."""

    slab_alignment: int

    def acquire_slab(self, min_length: int) -> Slab: ...

    def release_slab(self, slab: Slab) -> None: ...

    def wrap(
        self,
        slab: Slab,
        offset: int,
        length: int,
        release_callback: Callable[[], None] | None = None,
    ) -> Any:
        """Buffer storage over ``[offset, offset+length)`` of ``slab`` (no copy)."""

    def query_properties(self) -> tuple[MemoryType, BufferUsage]: ...

    def query_stats(self) -> SlabProviderStats: ...

    def trim(self) -> None: ...


# Host memory on a CPU device is also its device-local memory (what local_cpu's heap reports).
_HOST_TYPE = MemoryType.HOST_LOCAL | MemoryType.HOST_CACHED | MemoryType.DEVICE_LOCAL
_HOST_USAGE = (
    BufferUsage.TRANSFER
    | BufferUsage.DISPATCH
    | BufferUsage.SHARING_EXPORT
    | BufferUsage.SHARING_CONCURRENT
    | BufferUsage.MAPPING_SCOPED
    | BufferUsage.MAPPING_PERSISTENT
    | BufferUsage.MAPPING_ACCESS_RANDOM
    | BufferUsage.MAPPING_ACCESS_SEQUENTIAL_WRITE
)


class CpuSlabProvider:
    """Slabs of zeroed host memory (numpy), aligned to ``slab_alignment`` bytes.

    Reports HOST_LOCAL | HOST_CACHED | DEVICE_LOCAL memory and the transfer, dispatch,
    sharing and mapping usages, as the local CPU devices' heap does; pass ``memory_type``
    / ``usage`` to describe other host memory.
    """

    #: ``wrap`` without a release callback returns a plain view with no state of its own:
    #: two wraps of one slab range are interchangeable, so a caller may keep one and hand
    #: it out again for the same range of the same slab (the native alloca path does).
    reusable_wraps = True

    def __init__(
        self,
        slab_alignment: int = 4096,
        max_slab_size: int = 1 << 40,
        *,
        memory_type: MemoryType = _HOST_TYPE,
        usage: BufferUsage = _HOST_USAGE,
    ) -> None:
        if slab_alignment < 16 or slab_alignment & (slab_alignment - 1):
            raise InvalidArgumentError(
                f"slab alignment must be a power of two >= 16, got {slab_alignment}"
            )
        self.slab_alignment = slab_alignment
        self.max_slab_size = max_slab_size
        self._memory_type = MemoryType(memory_type)
        self._usage = BufferUsage(usage)
        self._lock = threading.Lock()
        self._acquired = 0
        self._released = 0
        self._bytes_acquired = 0
        self._bytes_released = 0

    def acquire_slab(self, min_length: int) -> Slab:
        if min_length <= 0 or min_length > self.max_slab_size:
            raise ResourceExhaustedError(
                f"cannot provide a slab of {min_length} bytes (limit {self.max_slab_size})"
            )
        try:
            storage = HostStorage.allocate(min_length, self.slab_alignment)
        except MemoryError:
            raise ResourceExhaustedError(
                f"host memory for a {min_length}-byte slab is not available"
            ) from None
        with self._lock:
            self._acquired += 1
            self._bytes_acquired += min_length
        return Slab(storage, min_length)

    def release_slab(self, slab: Slab) -> None:
        with self._lock:
            self._released += 1
            self._bytes_released += slab.length
        slab.storage = None

    def wrap(
        self,
        slab: Slab,
        offset: int,
        length: int,
        release_callback: Callable[[], None] | None = None,
    ) -> HostStorage:
        storage = slab.storage
        return HostStorage(
            storage.host_array[offset : offset + length],
            release_callback,
            storage.address + offset if length else 0,
        )

    def query_properties(self) -> tuple[MemoryType, BufferUsage]:
        return self._memory_type, self._usage

    def query_stats(self) -> SlabProviderStats:
        with self._lock:
            return SlabProviderStats(
                self._acquired, self._released, self._bytes_acquired, self._bytes_released
            )

    def trim(self) -> None:
        return None


class SlabCache:
    """A freelist of ``slab_size`` slabs in front of ``inner``.

    ``prefill()`` (also run at creation) acquires up to ``target_count`` slabs ahead of
    need; released slabs return to the freelist up to ``max_count`` and go back to
    ``inner`` beyond it. Requests larger than ``slab_size`` bypass the cache. ``trim()``
    gives every cached slab back. Filling happens on the calling thread (there is no
    background thread).
    """

    def __init__(
        self, inner: SlabProvider, slab_size: int, *, target_count: int = 0, max_count: int = 4
    ) -> None:
        if slab_size <= 0:
            raise InvalidArgumentError(f"slab cache slab_size must be > 0, got {slab_size}")
        if not 0 <= target_count <= max_count:
            raise InvalidArgumentError(
                f"slab cache needs 0 <= target_count <= max_count, got {target_count} and "
                f"{max_count}"
            )
        self.inner = inner
        self.slab_size = slab_size
        self.target_count = target_count
        self.max_count = max_count
        self.slab_alignment = inner.slab_alignment
        self._lock = threading.Lock()
        self._free: list[Slab] = []
        self._hits = 0
        self._misses = 0
        self.prefill()

    def prefill(self) -> None:
        """Top the freelist up to ``target_count``."""
        while True:
            with self._lock:
                if len(self._free) >= self.target_count:
                    return
            slab = self.inner.acquire_slab(self.slab_size)
            with self._lock:
                self._free.append(slab)

    def acquire_slab(self, min_length: int) -> Slab:
        if min_length <= self.slab_size:
            with self._lock:
                if self._free:
                    self._hits += 1
                    return self._free.pop()
                self._misses += 1
            return self.inner.acquire_slab(self.slab_size)
        return self.inner.acquire_slab(min_length)

    def release_slab(self, slab: Slab) -> None:
        if slab.length == self.slab_size:
            with self._lock:
                if len(self._free) < self.max_count:
                    self._free.append(slab)
                    return
        self.inner.release_slab(slab)

    def wrap(
        self,
        slab: Slab,
        offset: int,
        length: int,
        release_callback: Callable[[], None] | None = None,
    ) -> Any:
        return self.inner.wrap(slab, offset, length, release_callback)

    def query_properties(self) -> tuple[MemoryType, BufferUsage]:
        return self.inner.query_properties()

    def query_stats(self) -> SlabProviderStats:
        inner = self.inner.query_stats()
        with self._lock:
            return attrs.evolve(
                inner, cache_count=len(self._free), cache_hits=self._hits, cache_misses=self._misses
            )

    @property
    def cached_count(self) -> int:
        return len(self._free)

    def trim(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for slab in free:
            self.inner.release_slab(slab)
        self.inner.trim()
