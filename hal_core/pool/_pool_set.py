"""Pool sets: route a request to the first capable pool by priority.

Pools are kept sorted by descending priority (registration order breaks ties) with their
capabilities cached at registration. ``select`` returns the first pool whose memory type
covers the required bits (OPTIMAL is only a hint), whose usage covers the requested usage,
and whose size range holds the size. Oversized requests are routed explicitly: a TLSF pool
reports its slab size as ``max_allocation_size``, so the passthrough catch-all registered
at priority 0 takes them.
"""

from __future__ import annotations

import threading
from typing import Any

from .._buffer import Buffer
from .._frontier import Frontier
from .._memory import BufferParams, MemoryType
from .._reprs import names, safe_repr
from .._status import InvalidArgumentError, NotFoundError
from ._pool import Pool, allocate_buffer
from ._reservation import PoolCapabilities

__all__ = ["PoolSet", "DEFAULT_PRIORITY_TLSF", "DEFAULT_PRIORITY_OVERSIZED"]

DEFAULT_PRIORITY_TLSF = 10
"""Priority of the default TLSF pool in a device's default set (IREE's local-task value)."""
DEFAULT_PRIORITY_OVERSIZED = 0
"""Priority of the passthrough catch-all for requests too large for the TLSF slabs."""

_NOT_HINTS = ~int(MemoryType.OPTIMAL)


class PoolSet:
    """A priority router over pools. Thread-safe; ``select`` is lock-free (it reads an
    immutable tuple replaced on each registration). The set borrows nothing: it keeps
    its pools alive and ``close()`` closes them (idempotent)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: tuple[tuple[int, int, Pool, PoolCapabilities], ...] = ()
        self._serial = 0

    def register(self, priority: int, pool: Pool) -> None:
        """Add ``pool`` at ``priority`` (higher is tried first)."""
        if not isinstance(pool, Pool):
            raise InvalidArgumentError(f"PoolSet.register needs a Pool, got {type(pool).__name__}")
        if priority.__class__ is not int:
            raise InvalidArgumentError(f"priority must be an int, got {priority!r}")
        caps = pool.query_capabilities()
        with self._lock:
            self._serial += 1
            entries = list(self._entries)
            entries.append((priority, self._serial, pool, caps))
            entries.sort(key=lambda e: (-e[0], e[1]))
            self._entries = tuple(entries)

    @safe_repr
    def __repr__(self) -> str:
        entries = self._entries
        listed = names(f"{p.trace_name}@{prio}" for prio, _serial, p, _caps in entries)
        return f"<hal_core.PoolSet {len(entries)} pools: {listed or 'none'}>"

    @property
    def pools(self) -> list[tuple[int, Pool]]:
        return [(e[0], e[2]) for e in self._entries]

    def select(self, params: BufferParams, size: int) -> Pool | None:
        """The first pool that can serve ``params`` and ``size``, or None."""
        # Plain ints: ``flag & flag`` on the enums would build new members on every call.
        required_type = int(params.type) & _NOT_HINTS
        usage = int(params.usage)
        for _priority, _serial, pool, caps in self._entries:
            if (int(caps.memory_type) & required_type) != required_type:
                continue
            if (int(caps.supported_usage) & usage) != usage:
                continue
            if size < caps.min_allocation_size:
                continue
            if caps.max_allocation_size and size > caps.max_allocation_size:
                continue
            return pool
        return None

    def select_or_raise(self, params: BufferParams, size: int) -> Pool:
        pool = self.select(params, size)
        if pool is None:
            raise NotFoundError(
                f"no pool in this set serves {size} bytes with {params}; register a "
                "catch-all (e.g. a PassthroughPool at priority 0)"
            )
        return pool

    def allocate_buffer(
        self,
        params: BufferParams,
        size: int,
        requester_frontier: Frontier | None = None,
        timeout: float | None = None,
        *,
        device: Any = None,
    ) -> Buffer:
        """``allocate_buffer`` on the selected pool; NOT_FOUND when none matches."""
        return allocate_buffer(
            self.select_or_raise(params, size),
            params,
            size,
            requester_frontier,
            timeout,
            device=device,
        )

    def trim(self) -> None:
        for _p, _s, pool, _c in self._entries:
            pool.trim()

    def close(self) -> None:
        with self._lock:
            entries, self._entries = self._entries, ()
        for _p, _s, pool, _c in entries:
            pool.close()

    def __enter__(self) -> "PoolSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
