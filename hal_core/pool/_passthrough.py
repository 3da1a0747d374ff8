"""The passthrough pool: one slab per reservation, no suballocation, no death frontiers.

The baseline policy and the catch-all for requests too large for a suballocating pool.
A release gives the slab straight back to the provider; the death frontier is dropped
because the memory leaves the pool (the provider owns its reuse).
"""

from __future__ import annotations

from typing import Any

from .._frontier import Frontier
from .._status import HalError, StatusCode
from ._pool import Pool
from ._reservation import NO_INFO, AcquireInfo, AcquireResult, PoolCapabilities, Reservation
from ._slab import Slab

__all__ = ["PassthroughPool"]


class PassthroughPool(Pool):
    """Each reservation is its own slab (see ``Pool`` for the contract)."""

    def __init__(self, provider: Any, **kwargs: Any) -> None:
        super().__init__(provider, **kwargs)
        self._live: dict[int, Slab] = {}
        self._next_index = 0
        self._bytes_committed = 0

    def query_capabilities(self) -> PoolCapabilities:
        caps = self._capabilities
        if caps is None:  # fixed at creation; made once (queue_alloca asks every call)
            caps = self._capabilities = PoolCapabilities(
                self._memory_type, self._usage, 1, 0, self.provider.slab_alignment
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
        self._check_request(size, alignment, 0)
        with self._lock:
            if self._over_budget(size):
                return AcquireResult.OVER_BUDGET, None, NO_INFO
            # Count the bytes now so racing requests see the budget as taken.
            self._bytes_reserved += size
        try:
            slab = self.provider.acquire_slab(size)
        except HalError as exc:
            with self._lock:
                self._bytes_reserved -= size
                if exc.code != StatusCode.RESOURCE_EXHAUSTED:
                    raise
                self._exhausted_count += 1
            return AcquireResult.EXHAUSTED, None, NO_INFO
        with self._lock:
            index = self._next_index
            self._next_index += 1
            self._live[index] = slab
            self._fresh_count += 1
            self._bytes_committed += slab.length
        return AcquireResult.OK_FRESH, Reservation(self, 0, size, slab, index), NO_INFO

    def release_reservation(
        self, reservation: Reservation, death_frontier: Frontier | None = None
    ) -> None:
        if self._deferred:
            self._drain_deferred()
        with self._lock:
            self._check_release(reservation, death_frontier)
            slab = self._live.pop(reservation.slab_index)
            reservation._pool = None
            self._release_count += 1
            self._bytes_reserved -= reservation.length
            self._bytes_committed -= slab.length
        self.provider.release_slab(slab)
        if self.notification._observers:
            # Unobserved releases skip the notification entirely (see Notification).
            self.notification.signal_if_observed()

    def _slab_for(self, reservation: Reservation) -> Slab:
        return reservation.block_handle

    def _bytes_free_committed(self) -> tuple[int, int, int]:
        return 0, self._bytes_committed, len(self._live)

    def _close_slabs(self) -> None:
        with self._lock:
            slabs, self._live = list(self._live.values()), {}
        for slab in slabs:
            self.provider.release_slab(slab)
