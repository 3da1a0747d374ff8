"""Memory events of allocation pools: reserve, wait, release and materialize.

``record_pool_events(session, pool)`` installs taps on one pool *instance* (instance
attributes shadowing ``acquire_reservation``, ``release_reservation`` and
``materialize_reservation``) for the rest of the session; the session removes them when it
ends. A pool that is not being profiled runs its plain class methods: no cost at all.

Records (MEMORY_EVENTS): POOL_RESERVE for OK / OK_FRESH (flags = the ``AcquireResult``),
POOL_WAIT for OK_NEEDS_WAIT, POOL_RESERVE with length 0 and flags = result for EXHAUSTED /
OVER_BUDGET, POOL_RELEASE, POOL_MATERIALIZE. ``allocation_id`` identifies the reservation
(its ``id``), ``offset``/``length``/``alignment`` its range, ``pool_bytes_reserved`` the
pool's reserved bytes right after the operation (read without the pool lock: a snapshot).
"""

from __future__ import annotations

from typing import Any

from .._status import FailedPreconditionError, InvalidArgumentError
from ._options import ProfilingDataFamily
from ._records import MemoryEventType
from ._session import ProfilingSession

__all__ = ["record_pool_events"]

_RESERVE = int(MemoryEventType.POOL_RESERVE)
_WAIT = int(MemoryEventType.POOL_WAIT)
_RELEASE = int(MemoryEventType.POOL_RELEASE)
_MATERIALIZE = int(MemoryEventType.POOL_MATERIALIZE)
_TAPPED = ("acquire_reservation", "release_reservation", "materialize_reservation")
_OK_NEEDS_WAIT = 2
_EXHAUSTED = 3


def record_pool_events(session: ProfilingSession, pool: Any, pool_id: int | None = None) -> None:
    """Record ``pool``'s memory events into ``session`` until it ends. INVALID_ARGUMENT
    when the session does not capture MEMORY_EVENTS; FAILED_PRECONDITION when the pool is
    already tapped or the session has ended."""
    if not session.families & ProfilingDataFamily.MEMORY_EVENTS:
        raise InvalidArgumentError(
            "record_pool_events needs a session capturing MEMORY_EVENTS; add it to "
            "ProfilingOptions.data_families"
        )
    if session.closed:
        raise FailedPreconditionError("record_pool_events on a profiling session that ended")
    if any(name in vars(pool) for name in _TAPPED):
        raise FailedPreconditionError(f"pool {pool!r} is already recording profiling events")
    pid = id(pool) if pool_id is None else pool_id
    cls = type(pool)
    record = session.record_memory_event

    def acquire_reservation(
        size: int, alignment: int = 0, requester_frontier: Any = None, flags: int = 0
    ) -> Any:
        result = cls.acquire_reservation(pool, size, alignment, requester_frontier, flags)
        code, reservation, _info = result
        if reservation is not None:
            record(
                _WAIT if code == _OK_NEEDS_WAIT else _RESERVE,
                allocation_id=id(reservation),
                length=reservation.length,
                pool_id=pid,
                offset=reservation.offset,
                alignment=alignment,
                pool_bytes_reserved=pool.bytes_reserved,
                flags=int(code),
            )
        elif code >= _EXHAUSTED:
            record(
                _RESERVE,
                length=0,
                pool_id=pid,
                alignment=alignment,
                pool_bytes_reserved=pool.bytes_reserved,
                flags=int(code),
            )
        return result

    def release_reservation(reservation: Any, death_frontier: Any = None) -> None:
        offset, length = reservation.offset, reservation.length
        cls.release_reservation(pool, reservation, death_frontier)
        record(
            _RELEASE,
            allocation_id=id(reservation),
            length=length,
            pool_id=pid,
            offset=offset,
            pool_bytes_reserved=pool.bytes_reserved,
        )

    def materialize_reservation(params: Any, reservation: Any, size: Any = None, **kw: Any) -> Any:
        buffer = cls.materialize_reservation(pool, params, reservation, size, **kw)
        record(
            _MATERIALIZE,
            allocation_id=id(reservation),
            length=buffer.byte_length,
            pool_id=pid,
            offset=reservation.offset,
            pool_bytes_reserved=pool.bytes_reserved,
        )
        return buffer

    pool.acquire_reservation = acquire_reservation
    pool.release_reservation = release_reservation
    pool.materialize_reservation = materialize_reservation

    def detach() -> None:
        for name in _TAPPED:
            pool.__dict__.pop(name, None)

    session.add_end_callback(detach)
