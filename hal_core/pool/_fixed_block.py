"""The fixed-block pool: one slab cut into equal blocks.

Bookkeeping: ``_free`` is a stack of block indices that are free with no death frontier
(reusable by anyone; lowest index on top at first), ``_dirty`` maps free blocks that carry
a death frontier to it, in release order (reusable when the requester dominates the
frontier or the epoch query proves it reached). A live block is in neither. Every
operation is O(1) on the fresh path whatever the block count (a Python-int bitmap would
cost O(block_count) per update). With the native extension the fresh reserve and the
frontier-free release (pop / push of ``_free``) run in C; the methods below are then the
slow paths it falls back to (see ``_fast_paths``).

A dirty block that cannot be proven reached is handed out as OK_NEEDS_WAIT only when the
caller passes ALLOW_WAIT_FRONTIER and no block is usable at once; a *tainted* block (its
frontier overflowed, so it is only a lower bound) is never handed out that way.
"""

from __future__ import annotations

from typing import Any

from .._frontier import Frontier
from .._status import InvalidArgumentError
from ._fast_paths import native, with_fast_paths
from ._pool import Pool
from ._reservation import (
    NO_INFO,
    AcquireFlags,
    AcquireInfo,
    AcquireResult,
    PoolCapabilities,
    Reservation,
    ReserveFlags,
)
from ._slab import Slab

__all__ = ["FixedBlockPool"]

_ALLOW_WAIT = int(ReserveFlags.ALLOW_WAIT_FRONTIER)
_OK = AcquireResult.OK
_OK_FRESH = AcquireResult.OK_FRESH


class FixedBlockPool(Pool):
    """``block_count`` blocks of ``block_size`` bytes in one slab acquired at creation
    (see ``Pool`` for the contract). Reservations larger than a block are OUT_OF_RANGE."""

    def __init__(self, provider: Any, *, block_size: int, block_count: int, **kwargs: Any) -> None:
        if block_size.__class__ is not int or block_size <= 0:
            raise InvalidArgumentError(f"block_size must be an int > 0, got {block_size!r}")
        if block_count.__class__ is not int or block_count <= 0:
            raise InvalidArgumentError(f"block_count must be an int > 0, got {block_count!r}")
        super().__init__(provider, **kwargs)
        self.block_size = block_size
        self.block_count = block_count
        # The largest power of two dividing block_size bounds every block's alignment.
        self._block_alignment = min(block_size & -block_size, provider.slab_alignment)
        self._slab: Slab | None = provider.acquire_slab(block_size * block_count)
        self._free = list(range(block_count - 1, -1, -1))
        self._dirty: dict[int, Frontier] = {}
        self._tainted: set[int] = set()

    def query_capabilities(self) -> PoolCapabilities:
        caps = self._capabilities
        if caps is None:  # fixed at creation; made once (queue_alloca asks every call)
            caps = self._capabilities = PoolCapabilities(
                self._memory_type, self._usage, 1, self.block_size, self._block_alignment
            )
        return caps

    def acquire_reservation(
        self,
        size: int,
        alignment: int = 0,
        requester_frontier: Frontier | None = None,
        flags: int = 0,
    ) -> tuple[AcquireResult, Reservation | None, AcquireInfo]:
        if self._deferred:
            self._drain_deferred()
        if (
            size.__class__ is not int
            or not 0 < size <= self.block_size
            or alignment
            or self._closed
        ):
            self._check_request(size, alignment, self.block_size)
            if alignment > self._block_alignment:
                raise InvalidArgumentError(
                    f"{self.trace_name}: blocks of {self.block_size} bytes are only "
                    f"{self._block_alignment}-byte aligned; asked for {alignment}"
                )
        lock = self._lock
        lock.acquire()
        try:
            if self.budget_limit and self._over_budget(self.block_size):
                return AcquireResult.OVER_BUDGET, None, NO_INFO
            free = self._free
            if free:
                index = free.pop()
                self._fresh_count += 1
                self._bytes_reserved += self.block_size
                size = self.block_size
                return _OK_FRESH, Reservation(self, index * size, size, index, 0), NO_INFO
            dirty = self._dirty
            waitable = -1
            for index, frontier in dirty.items():
                if self._usable(frontier, requester_frontier):
                    del dirty[index]
                    self._reuse_count += 1
                    return _OK, self._take(index), NO_INFO
                if waitable < 0 and index not in self._tainted:
                    waitable = index
            if dirty:
                self._reuse_miss_count += 1
            if waitable >= 0 and int(flags) & _ALLOW_WAIT:
                frontier = dirty.pop(waitable)
                self._wait_count += 1
                return (
                    AcquireResult.OK_NEEDS_WAIT,
                    self._take(waitable),
                    AcquireInfo(frontier, AcquireFlags.NONE),
                )
            self._exhausted_count += 1
            return AcquireResult.EXHAUSTED, None, NO_INFO
        finally:
            lock.release()

    def _take(self, index: int) -> Reservation:
        self._bytes_reserved += self.block_size
        self._tainted.discard(index)
        return Reservation(self, index * self.block_size, self.block_size, index, 0)

    def release_reservation(
        self, reservation: Reservation, death_frontier: Frontier | None = None
    ) -> None:
        if self._deferred:
            self._drain_deferred()
        lock = self._lock
        lock.acquire()
        try:
            if (
                reservation.__class__ is not Reservation
                or reservation._pool is not self
                or (death_frontier is not None and death_frontier.__class__ is not Frontier)
            ):
                self._check_release(reservation, death_frontier)
            index = reservation.block_handle
            reservation._pool = None
            if death_frontier is None or not death_frontier:
                self._free.append(index)
            else:
                if len(death_frontier) > self.frontier_capacity:
                    # Keep a lower bound and remember it is one.
                    self._tainted.add(index)
                self._dirty[index] = death_frontier
            self._release_count += 1
            self._bytes_reserved -= self.block_size
        finally:
            lock.release()
        if self.notification._observers:
            # Unobserved releases skip the notification entirely (see Notification).
            self.notification.signal_if_observed()

    def mark_tainted(self, reservation: Reservation) -> None:
        """Testing/diagnostic hook: mark a live block's eventual death frontier as a lower
        bound only (as a frontier overflow would)."""
        with self._lock:
            self._tainted.add(reservation.block_handle)

    def _slab_for(self, reservation: Reservation) -> Slab | None:
        return self._slab  # None once the pool is closed

    def _bytes_free_committed(self) -> tuple[int, int, int]:
        total = self.block_size * self.block_count
        if self._slab is None:
            return 0, 0, 0
        return total - self._reserved_bytes(), total, 1

    def _close_slabs(self) -> None:
        slab, self._slab = self._slab, None
        if slab is not None:
            self.provider.release_slab(slab)


# Rebinding the class name to its fast-path subclass (as TlsfPool): not typeable.
if native is not None:
    FixedBlockPool = with_fast_paths(FixedBlockPool, native.FixedBlockCore)  # type: ignore[misc]
