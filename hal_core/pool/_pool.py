"""The pool contract shared by every policy, and the synchronous ``allocate_buffer`` helper.

A pool hands out *reservations* (offset ranges of slabs) and takes them back with a
*death frontier*: the causal point after which the memory's last user is done. A later
request may reuse the range without synchronisation only when its own frontier dominates
that death frontier, or the epoch query proves every entry reached; otherwise the policy
skips the block (TLSF), or returns it as OK_NEEDS_WAIT when the caller allows that
(fixed-block).

Invariants every policy keeps: all bookkeeping happens under ``_lock`` (the native fast
paths of ``_fast_paths`` are the one exception: each is a single step under the GIL that
runs only while nobody holds ``_lock``); the lock is never held while the slab provider
allocates or while callbacks run; a failed call (bad argument) leaves the pool exactly as
it was; ``release_reservation`` publishes the notification so parked requesters retry.

Dropped buffers: a buffer that owns a reservation (a transient, or ``transfer_ownership``)
gives it back from a finalizer, which runs wherever its last reference dies - including
inside a garbage collection started by an allocation in a section that holds this pool's
non-reentrant lock (or any other lock) on the same thread. So a finalizer never takes a
lock: ``release_dropped`` appends the reservation to ``_deferred`` (``list.append`` is
atomic under the GIL) and releases it at once only when that cannot deadlock (no
collection running, nobody holding ``_lock``); otherwise the pool's next operation
(reserve, release, trim, ``query_stats``, close) drains the list first. The native fast
paths take the Python path while ``_deferred`` is not empty, so they drain it too.
"""

from __future__ import annotations

import abc
import gc
import threading
import weakref
from typing import Any, Callable

from .._buffer import Buffer, decommit_buffer
from .._construction import INTERNAL
from .._frontier import DEFAULT_FRONTIER_CAPACITY, Frontier
from .._memory import BufferParams, BufferUsage
from .._notification import Notification
from .._status import (
    DeadlineExceededError,
    FailedPreconditionError,
    HalError,
    InvalidArgumentError,
    OutOfRangeError,
    ResourceExhaustedError,
)
from ._reservation import (
    AcquireInfo,
    AcquireResult,
    PoolCapabilities,
    PoolStats,
    Reservation,
)
from ._slab import SlabProvider

__all__ = ["Pool", "EpochQuery", "allocate_buffer", "release_buffer"]

_collecting = False
"""Whether a garbage collection is running (set by ``_note_collection``): finalizers it
runs may be on a thread that holds any lock, so ``release_dropped`` only defers then."""


def _note_collection(phase: str, info: dict[str, int]) -> None:
    global _collecting
    _collecting = phase == "start"


gc.callbacks.append(_note_collection)

EpochQuery = Callable[[int, int], bool]
"""``fn(axis, epoch) -> bool``: has ``axis`` reached ``epoch``? (a tracker's query_epoch)"""

_OK = AcquireResult.OK
_OK_FRESH = AcquireResult.OK_FRESH


class Pool(abc.ABC):
    """Base of the pool policies (``PassthroughPool``, ``FixedBlockPool``, ``TlsfPool``).

    Thread-safe. Nothing blocks except ``allocate_buffer``. Pools borrow their slab
    provider and are borrowed by their reservations and buffers: keep a pool alive (and
    do not ``close`` it) while reservations are live. ``close()`` is idempotent and gives
    every slab back.
    """

    def __init__(
        self,
        provider: SlabProvider,
        *,
        notification: Notification | None = None,
        epoch_query: EpochQuery | None = None,
        budget_limit: int = 0,
        frontier_capacity: int = DEFAULT_FRONTIER_CAPACITY,
        trace_name: str = "",
    ) -> None:
        if budget_limit < 0:
            raise InvalidArgumentError(f"budget_limit must be >= 0 (0 = none), got {budget_limit}")
        self.provider = provider
        self.notification = notification if notification is not None else Notification()
        self.epoch_query = epoch_query
        self.budget_limit = budget_limit
        self.frontier_capacity = frontier_capacity
        self.trace_name = trace_name or type(self).__name__
        self._lock = self._new_lock()
        # Reservations of dropped buffers not released yet (``release_dropped``); appended
        # without a lock, drained by the next operation.
        self._deferred: list[Reservation] = []
        self._capabilities: PoolCapabilities | None = None
        self._closed = False
        self._memory_type, self._usage = provider.query_properties()
        # Counters (mutated under _lock only).
        self._bytes_reserved = 0
        self._release_count = 0
        self._reuse_count = 0
        self._reuse_miss_count = 0
        self._fresh_count = 0
        self._exhausted_count = 0
        self._over_budget_count = 0
        self._wait_count = 0

    def _new_lock(self) -> Any:
        """The pool's lock (pools with native fast paths use their ``FenceLock``)."""
        return threading.Lock()

    # -- dropped buffers ---------------------------------------------------------------

    def release_dropped(self, reservation: Reservation) -> None:
        """Give back the reservation of a buffer dropped without an explicit release (from
        a finalizer or ``__del__``: any thread, any lock may be held, this pool's
        included). Never blocks on a lock held by this thread: inside a garbage collection,
        or while anyone holds ``_lock``, the reservation waits in ``_deferred`` for the
        pool's next operation. Releases nothing twice (a released or foreign reservation,
        or a closed pool, is skipped)."""
        self._deferred.append(reservation)
        if not _collecting and not self._lock.locked():
            # Not inside a collection, and nobody holds the lock, so this thread does not
            # either: releasing here may at most wait for another thread's short section.
            self._drain_deferred()

    def _drain_deferred(self) -> None:
        """Release the reservations ``release_dropped`` deferred. The caller holds no lock of
        this pool. Takes the whole list first, so a release made here (which drains too)
        finds it empty: no recursion however many are deferred."""
        deferred = self._deferred
        taken = []
        while deferred:
            try:
                taken.append(deferred.pop())
            except IndexError:  # another thread drained it meanwhile
                break
        for reservation in taken:
            if reservation._pool is self and not self._closed:
                try:
                    self.release_reservation(reservation, None)
                except HalError:
                    pass  # released meanwhile, or the pool closed: nothing is owed

    # -- shared checks -----------------------------------------------------------------

    def _check_request(self, size: int, alignment: int, max_size: int) -> None:
        if size.__class__ is not int or size <= 0:
            raise InvalidArgumentError(
                f"{self.trace_name}: reservation size must be an int > 0, got {size!r}"
            )
        if alignment.__class__ is not int or alignment < 0 or alignment & (alignment - 1):
            raise InvalidArgumentError(
                f"{self.trace_name}: alignment must be 0 or a power of two, got {alignment!r}"
            )
        if alignment > self.provider.slab_alignment:
            raise InvalidArgumentError(
                f"{self.trace_name}: alignment {alignment} exceeds what this pool's slabs "
                f"guarantee ({self.provider.slab_alignment} bytes)"
            )
        if max_size and size > max_size:
            raise OutOfRangeError(
                f"{self.trace_name}: {size} bytes exceed this pool's largest reservation "
                f"({max_size} bytes); route oversized requests to a passthrough pool "
                "(a PoolSet does this)"
            )
        if self._closed:
            raise FailedPreconditionError(
                f"{self.trace_name}: pool is closed; keep a pool open while anything (queue "
                "work included) may still reserve from it"
            )
        limit = self.budget_limit
        if limit and size > limit:
            # Parking it would wait forever: no release brings it under the budget.
            raise ResourceExhaustedError(
                f"{self.trace_name}: {size} bytes exceed the pool's whole budget of {limit} "
                "bytes; no release can ever make room for them"
            )

    def _check_release(self, reservation: Any, death_frontier: Any) -> None:
        if reservation.__class__ is not Reservation:
            raise InvalidArgumentError(
                f"{self.trace_name}: release needs a Reservation, got {type(reservation).__name__}"
            )
        owner = reservation._pool
        if owner is not self:
            if owner is None:
                raise FailedPreconditionError(
                    f"{self.trace_name}: {reservation!r} was already released; release "
                    "each reservation exactly once"
                )
            raise InvalidArgumentError(
                f"{self.trace_name}: {reservation!r} belongs to pool {owner.trace_name!r}, "
                "not this one; release it into the pool that reserved it"
            )
        if death_frontier is not None and death_frontier.__class__ is not Frontier:
            raise InvalidArgumentError(
                f"{self.trace_name}: death frontier must be a Frontier or None, got "
                f"{type(death_frontier).__name__}"
            )

    def _over_budget(self, length: int) -> bool:
        limit = self.budget_limit
        if limit and self._reserved_bytes() + length > limit:
            self._over_budget_count += 1
            return True
        return False

    def _reserved_bytes(self) -> int:
        """Bytes held by live reservations (under ``_lock``)."""
        return self._bytes_reserved

    @property
    def bytes_reserved(self) -> int:
        """Bytes held by live reservations: a lock-free snapshot (for taps and gauges;
        ``query_stats`` gives a consistent set of counters)."""
        return self._bytes_reserved

    def _usable(self, frontier: Frontier | None, requester: Frontier | None) -> bool:
        """May a block with death ``frontier`` be reused by ``requester`` without a wait?"""
        if frontier is None:
            return True
        if requester is not None and requester.dominates(frontier):
            return True
        query = self.epoch_query
        if query is None:
            return False
        for axis, epoch in frontier:
            if not query(axis, epoch):
                return False
        return True

    # -- policy hooks (subclasses) -------------------------------------------------------

    @abc.abstractmethod
    def acquire_reservation(
        self,
        size: int,
        alignment: int = 0,
        requester_frontier: Frontier | None = None,
        flags: int = 0,
    ) -> tuple[AcquireResult, Reservation | None, AcquireInfo]:
        """Reserve ``size`` bytes aligned to ``alignment`` (0 = the pool's natural one).

        ``requester_frontier`` is what the requester has already waited for (None skips
        the dominance test; the epoch query still applies). Returns ``(result,
        reservation or None, info)``; capacity pressure is EXHAUSTED / OVER_BUDGET, never
        an exception. INVALID_ARGUMENT for size 0 or a non-power-of-two alignment;
        OUT_OF_RANGE past ``max_allocation_size``. Non-blocking.
        """
        ...

    @abc.abstractmethod
    def release_reservation(
        self, reservation: Reservation, death_frontier: Frontier | None = None
    ) -> None:
        """Give the range back. ``death_frontier`` (ownership passes to the pool; None =
        reusable at once) gates reuse. FAILED_PRECONDITION for a reservation released
        before; INVALID_ARGUMENT for one of another pool. Publishes the notification."""
        ...

    @abc.abstractmethod
    def _slab_for(self, reservation: Reservation) -> Any: ...

    @abc.abstractmethod
    def query_capabilities(self) -> PoolCapabilities: ...

    @abc.abstractmethod
    def _bytes_free_committed(self) -> tuple[int, int, int]:
        """(bytes_free, bytes_committed, slab_count); called under ``_lock``."""
        ...

    def trim(self) -> None:
        """Give back memory no reservation uses (whole free slabs; here, for pools without
        spare slabs, just what dropped buffers still owe)."""
        if self._deferred:
            self._drain_deferred()

    # -- shared API ----------------------------------------------------------------------

    def query_stats(self) -> PoolStats:
        if self._deferred:
            self._drain_deferred()
        with self._lock:
            free, committed, slabs = self._bytes_free_committed()
            return PoolStats(
                bytes_reserved=self._reserved_bytes(),
                bytes_free=free,
                bytes_committed=committed,
                budget_limit=self.budget_limit,
                reservation_count=(
                    self._fresh_count + self._reuse_count + self._wait_count - self._release_count
                ),
                slab_count=slabs,
                reserve_count=(
                    self._fresh_count
                    + self._reuse_count
                    + self._wait_count
                    + self._exhausted_count
                    + self._over_budget_count
                ),
                release_count=self._release_count,
                reuse_count=self._reuse_count,
                reuse_miss_count=self._reuse_miss_count,
                fresh_count=self._fresh_count,
                exhausted_count=self._exhausted_count,
                over_budget_count=self._over_budget_count,
                wait_count=self._wait_count,
            )

    def wrap_reservation(
        self, reservation: Reservation, release_callback: Callable[[], None] | None = None
    ) -> Any:
        """Buffer storage over a live reservation (backend tier: queue_alloca commits it)."""
        if reservation._pool is not self:
            self._check_release(reservation, None)
        return self.provider.wrap(
            self._slab_for(reservation), reservation.offset, reservation.length, release_callback
        )

    def materialize_reservation(
        self,
        params: BufferParams | None,
        reservation: Reservation,
        size: int | None = None,
        *,
        transfer_ownership: bool = False,
        device: Any = None,
    ) -> Buffer:
        """A ``Buffer`` over ``reservation`` (``size`` bytes, default its whole length).

        With ``transfer_ownership`` the buffer owns the reservation: ``release_buffer``
        (or dropping the last reference) releases it with no death frontier. Otherwise
        the buffer borrows it and must not outlive ``release_reservation``.
        """
        params = params if params is not None else BufferParams()
        length = reservation.length if size is None else size
        if not 0 < length <= reservation.length:
            raise OutOfRangeError(
                f"materialize size {length} is outside the reservation of "
                f"{reservation.length} bytes"
            )
        storage = self.wrap_reservation(reservation)
        buffer = Buffer(
            storage,
            memory_type=self._memory_type,
            allowed_usage=params.usage | (self._usage & _MAPPING),
            allowed_access=params.access,
            allocation_size=length,
            device=device,
            queue_affinity=params.queue_affinity,
            _token=INTERNAL,
        )
        if transfer_ownership:
            # Safety net only: release_buffer is the explicit path.
            buffer.pool_state = _Owned(
                self, reservation, weakref.finalize(buffer, _release_quietly, self, reservation)
            )
        return buffer

    def close(self) -> None:
        """Give every slab back (live reservations become invalid). Idempotent."""
        if self._deferred:
            self._drain_deferred()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._close_slabs()

    @abc.abstractmethod
    def _close_slabs(self) -> None: ...

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.trace_name!r}>"


_MAPPING = BufferUsage.MAPPING_SCOPED | BufferUsage.MAPPING_PERSISTENT


class _Owned:
    __slots__ = ("pool", "reservation", "finalizer")

    def __init__(self, pool: Pool, reservation: Reservation, finalizer: Any) -> None:
        self.pool = pool
        self.reservation = reservation
        self.finalizer = finalizer


def _release_quietly(pool: Pool, reservation: Reservation) -> None:
    if reservation._pool is pool and not pool._closed:
        pool.release_dropped(reservation)


def release_buffer(buffer: Buffer, death_frontier: Frontier | None = None) -> None:
    """Release the reservation a ``transfer_ownership`` buffer (e.g. from
    ``allocate_buffer``) owns, with ``death_frontier``; the buffer is decommitted.
    FAILED_PRECONDITION when the buffer owns no reservation (or was released already)."""
    owned = buffer._root.pool_state
    if owned.__class__ is not _Owned:
        raise FailedPreconditionError(
            "buffer owns no pool reservation (it was released already, or it was not made "
            "by allocate_buffer / materialize_reservation(transfer_ownership=True))"
        )
    buffer._root.pool_state = None
    owned.finalizer.detach()
    decommit_buffer(buffer)
    owned.pool.release_reservation(owned.reservation, death_frontier)


def allocate_buffer(
    pool: Pool,
    params: BufferParams | None,
    size: int,
    requester_frontier: Frontier | None = None,
    timeout: float | None = None,
    *,
    device: Any = None,
) -> Buffer:
    """Synchronously reserve and materialize a buffer that owns its reservation.

    Blocks the calling thread on the pool's notification while the pool is EXHAUSTED or
    OVER_BUDGET, up to ``timeout`` seconds (None = forever): DEADLINE_EXCEEDED then. Never
    returns a block that needs a frontier wait. For host code, not for queues (queues park
    without blocking). Release with ``release_buffer``.
    """
    import time

    params = params if params is not None else BufferParams()
    alignment = params.min_alignment
    deadline = None if timeout is None else time.monotonic() + timeout
    notification = pool.notification
    token = notification.begin_observe()
    try:
        while True:
            result, reservation, _info = pool.acquire_reservation(
                size, alignment, requester_frontier, 0
            )
            if reservation is not None:  # OK or OK_FRESH
                return pool.materialize_reservation(
                    params, reservation, size, transfer_ownership=True, device=device
                )
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                if remaining is not None and remaining <= 0:
                    raise DeadlineExceededError("deadline passed")
                token = notification.wait_for_token(token, remaining)
            except DeadlineExceededError:
                raise DeadlineExceededError(
                    f"{pool.trace_name}: {size} bytes did not become available within "
                    f"{timeout} s (last result {result.name}); release reservations or "
                    "raise the timeout"
                ) from None
    finally:
        notification.end_observe()
