"""Value types of the pool API: acquisition results, flags, reservations, info and stats.

Capacity pressure is a *result* (``AcquireResult.EXHAUSTED`` / ``OVER_BUDGET``), never an
exception: running out of pool space is a normal hot-path outcome. Exceptions are kept for
misuse (size 0, bad alignment, double release) and infrastructure failures.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from .._frontier import Frontier
from .._memory import BufferUsage, MemoryType

__all__ = [
    "AcquireResult",
    "ReserveFlags",
    "AcquireFlags",
    "Reservation",
    "AcquireInfo",
    "PoolStats",
    "PoolCapabilities",
    "NO_INFO",
]


class AcquireResult(enum.IntEnum):
    """Outcome of ``Pool.acquire_reservation``."""

    OK = 0
    """A recycled block whose death frontier the requester dominates (or the epoch query
    proved reached): reuse without synchronisation."""
    OK_FRESH = 1
    """Never-used space, or space released with no death frontier."""
    OK_NEEDS_WAIT = 2
    """Reserved, but usable only after ``info.wait_frontier`` is reached (returned only
    with ``ReserveFlags.ALLOW_WAIT_FRONTIER``)."""
    EXHAUSTED = 3
    """Nothing reserved: observe the pool's notification and retry after a release."""
    OVER_BUDGET = 4
    """Nothing reserved: the pool's budget limit refused the request."""


class ReserveFlags(enum.IntFlag):
    NONE = 0
    ALLOW_WAIT_FRONTIER = 1 << 0
    """The caller can add a wait on a recycled block's death frontier (OK_NEEDS_WAIT)."""
    DISALLOW_GROWTH = 1 << 1
    """Do not call the slab provider: report EXHAUSTED + GROWTH_REQUIRED instead."""


class AcquireFlags(enum.IntFlag):
    """Flags of ``AcquireInfo``."""

    NONE = 0
    WAIT_FRONTIER_TAINTED = 1 << 0
    """The wait frontier is a lower bound only (a merge overflowed)."""
    GROWTH_REQUIRED = 1 << 1
    """EXHAUSTED because growth was disallowed; retry without DISALLOW_GROWTH."""


@attrs.frozen
class AcquireInfo:
    """Extra facts about an acquisition. ``wait_frontier`` is set for OK_NEEDS_WAIT and is
    owned by the pool (valid until the reservation is released; do not mutate)."""

    wait_frontier: Frontier | None = None
    flags: AcquireFlags = AcquireFlags.NONE


NO_INFO = AcquireInfo()
"""The shared info of every plain acquisition (no per-call allocation)."""


class Reservation:
    """A range of pool memory: ``[offset, offset + length)`` of slab ``slab_index``.

    Created by ``Pool.acquire_reservation``; ``length >= `` the requested size. The
    reservation borrows its pool: keep the pool alive until it is released. After
    ``release_reservation`` it is dead and releasing it again is FAILED_PRECONDITION.
    """

    __slots__ = ("offset", "length", "block_handle", "slab_index", "_pool")

    def __init__(
        self, pool: Any, offset: int, length: int, block_handle: Any, slab_index: int
    ) -> None:
        self.offset = offset
        self.length = length
        self.block_handle = block_handle
        self.slab_index = slab_index
        self._pool = pool

    @property
    def pool(self) -> Any:
        """The owning pool, or None once released."""
        return self._pool

    @property
    def is_live(self) -> bool:
        return self._pool is not None

    def __repr__(self) -> str:
        state = "live" if self._pool is not None else "released"
        return (
            f"<Reservation slab={self.slab_index} [{self.offset}, {self.offset + self.length}) "
            f"{state}>"
        )


@attrs.frozen
class PoolCapabilities:
    """What a pool serves: memory type, usages, and the size range (max 0 = unlimited)."""

    memory_type: MemoryType
    supported_usage: BufferUsage
    min_allocation_size: int = 1
    max_allocation_size: int = 0
    max_alignment: int = 4096


@attrs.frozen
class PoolStats:
    """A snapshot of a pool's counters (``Pool.query_stats``)."""

    bytes_reserved: int = 0
    bytes_free: int = 0
    bytes_committed: int = 0
    budget_limit: int = 0
    reservation_count: int = 0
    slab_count: int = 0
    reserve_count: int = 0
    release_count: int = 0
    reuse_count: int = 0
    reuse_miss_count: int = 0
    fresh_count: int = 0
    exhausted_count: int = 0
    over_budget_count: int = 0
    wait_count: int = 0


# The C type (hal_core.pool._native) has the same contract and is what the native fast
# paths create; the class above stands in when the extension is not built.
from ._fast_paths import native as _native  # noqa: E402

if _native is not None:
    # The C type replaces the Python class of the same shape: a class rebinding mypy
    # cannot type.
    Reservation = _native.Reservation  # type: ignore[misc]  # noqa: F811
    _native.configure(AcquireResult.OK_FRESH, NO_INFO)
