"""TLSF: a two-level segregated-fit suballocator over growable slabs.

Sizes are counted in *granules* (the pool alignment, a power of two >= 16). Free blocks
sit in segregated size classes with two levels of bitmaps (``_tlsf_blocks`` holds the block
table, the class lists and the invariants), so reserve and release are O(1) whatever the
number of live reservations; steady-state reserve/release allocates only the returned
``Reservation``.

Death frontiers: a released block keeps its frontier; neighbours coalesce at once and the
merged block carries the merged frontier (an overflowing merge marks it *tainted*: the
frontier is then only a lower bound and the block is never proven reusable until trimmed
slabs reset it). A block whose frontier the requester does not dominate is *skipped*: the
search walks at most ``_SKIP_BUDGET`` candidates, then the pool grows by a slab instead of
handing out a block that needs a wait.

Quick lists (deferred coalescing, the idea behind tcache/fastbins): a block of fewer than
64 granules released with no death frontier is parked, still marked live, in a short list
for its exact size; an exact-size reserve takes it back without touching the bitmaps. The
lists are bounded (4 blocks each) and flushed - freed and coalesced - before the pool
would grow or report EXHAUSTED, and on ``trim``; so they never cause growth or failure.

Recycle lists do the same for blocks released *with* a death frontier (what every
``queue_dealloca`` releases): up to ``_RECYCLE_LIMIT`` such blocks, of any size, wait still
marked live and keep their frontier; a reserve of exactly that size whose requester
dominates the frontier (a queue reusing what it released itself) takes one back without
splitting, searching or coalescing. They are flushed with the quick lists, so they never
cause growth or failure either, and count as free bytes in the statistics.
With the native extension the quick-list and recycle-list reserve and release run in C
(the recycle hit with its frontier dominance check); the methods below are then the slow
paths it falls back to, and the reference for what the C paths do (see ``_fast_paths``).
"""

from __future__ import annotations

from typing import Any

from .._frontier import Frontier
from .._status import HalError, InternalError, InvalidArgumentError, StatusCode
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
from ._tlsf_blocks import NONE as _NONE
from ._tlsf_blocks import TlsfBlockTable

__all__ = ["TlsfPool"]

_SKIP_BUDGET = 8
_QUICK_CLASSES = 64  # exact granule counts 1..63 get a quick list
_QUICK_DEPTH = 4  # blocks each quick list may hold
_RECYCLE_LIMIT = 8  # blocks the recycle lists may hold, all sizes together
_DISALLOW_GROWTH = int(ReserveFlags.DISALLOW_GROWTH)
_GROWTH_INFO = AcquireInfo(None, AcquireFlags.GROWTH_REQUIRED)
_OK = AcquireResult.OK
_OK_FRESH = AcquireResult.OK_FRESH


class TlsfPool(TlsfBlockTable, Pool):
    """A TLSF pool (see ``Pool`` for the contract).

    ``range_length`` is the slab size and the largest reservation; ``alignment`` (a power
    of two >= 16) is the granule every reservation offset and length is a multiple of.
    ``max_slabs`` (0 = unlimited) bounds growth.
    """

    def __init__(
        self,
        provider: Any,
        *,
        range_length: int,
        alignment: int = 16,
        initial_block_capacity: int = 64,
        max_slabs: int = 0,
        **kwargs: Any,
    ) -> None:
        if alignment.__class__ is not int or alignment < 16 or alignment & (alignment - 1):
            raise InvalidArgumentError(
                f"TLSF alignment must be a power of two >= 16, got {alignment!r}"
            )
        if alignment > provider.slab_alignment:
            raise InvalidArgumentError(
                f"TLSF alignment {alignment} exceeds the slab alignment "
                f"{provider.slab_alignment} of its provider"
            )
        if (
            range_length.__class__ is not int
            or range_length < alignment
            or range_length % alignment
        ):
            raise InvalidArgumentError(
                f"TLSF range_length must be a positive multiple of the alignment {alignment}, "
                f"got {range_length!r}"
            )
        super().__init__(provider, **kwargs)
        self.range_length = range_length
        self.alignment = alignment
        self.max_slabs = max_slabs
        self._shift = alignment.bit_length() - 1
        self._granule_mask = alignment - 1
        self._init_block_table(range_length >> self._shift, initial_block_capacity)
        # Quick lists (deferred coalescing, as tcache/fastbins do): small blocks released
        # with no death frontier wait here, still marked live, for an exact-size reserve
        # to take back in O(1) without splitting; flushed (freed and coalesced) before the
        # pool would report EXHAUSTED or grow, and on trim/close.
        self._quick: list[list[int]] = [[] for _ in range(_QUICK_CLASSES)]
        self._quick_bytes = 0
        self._quick_depth = _QUICK_DEPTH
        # Recycle lists: granule count -> blocks released with a frontier (see the module
        # docstring); their bytes count in ``_quick_bytes`` as the quick lists' do.
        self._recycle: dict[int, list[int]] = {}
        self._recycle_count = 0
        self._recycle_limit = _RECYCLE_LIMIT
        self._slabs: list[Slab | None] = []
        self._spare_slabs: list[int] = []
        self._bytes_committed = 0

    # -- capabilities ------------------------------------------------------------------

    def query_capabilities(self) -> PoolCapabilities:
        caps = self._capabilities
        if caps is None:  # fixed at creation; made once (queue_alloca asks every call)
            caps = self._capabilities = PoolCapabilities(
                self._memory_type, self._usage, 1, self.range_length, self.provider.slab_alignment
            )
        return caps

    # -- reserve -----------------------------------------------------------------------

    def acquire_reservation(
        self,
        size: int,
        alignment: int = 0,
        requester_frontier: Frontier | None = None,
        flags: int = 0,
    ) -> tuple[AcquireResult, Reservation | None, AcquireInfo]:
        # The hot path without the extension, and its reference (with it, the native core
        # runs this logic and falls back here): a granule-aligned request, no budget, and a
        # quick-list block, a recycled block or the first fitting class's head block.
        # Everything else (validation errors, growth, big alignments) goes through
        # _acquire_general.
        if self._deferred:
            self._drain_deferred()
        if (
            size.__class__ is not int
            or not 0 < size <= self.range_length
            or alignment
            or self.budget_limit
            or self._closed
        ):
            return self._acquire_general(size, alignment, requester_frontier, flags)
        shift = self._shift
        g = (size + self._granule_mask) >> shift
        if g < 16:
            fl = 0
            sl = g
        else:
            s = g.bit_length() - 5
            g2 = g + (1 << s) - 1
            s = g2.bit_length() - 5
            fl = s + 1
            sl = (g2 >> s) & 15
        lock = self._lock
        lock.acquire()  # explicit acquire/release: about half the cost of ``with``
        try:
            if g < _QUICK_CLASSES and self._quick[g]:
                return self._take_quick_locked(g)
            if self._recycle_count and requester_frontier.__class__ is Frontier:
                hit = self._take_recycled_locked(g, requester_frontier)
                if hit is not None:
                    return hit
            if fl < self._fl_count:
                sl_maps = self._sl_maps
                m = sl_maps[fl] & (-1 << sl)
                if not m:
                    f = self._fl_map & (-1 << (fl + 1))
                    if f:
                        fl = (f & -f).bit_length() - 1
                        m = sl_maps[fl]
                if m:
                    c = (fl << 4) + (m & -m).bit_length() - 1
                    heads = self._heads
                    b = heads[c]
                    death = self._front[b]
                    # Fresh space, or a block whose death frontier the requester already
                    # dominates (the same-queue reuse every queue_alloca chain makes):
                    # both are what ``_find`` would pick first, split as ``_take`` does.
                    if death is None or (
                        requester_frontier is not None
                        and not self._taint[b]
                        and requester_frontier.__class__ is Frontier
                        and requester_frontier.dominates(death)
                    ):
                        self._pop_head_locked(b, c, fl)
                        cls = self._cls
                        cls[b] = _NONE
                        size_of = self._size
                        off = self._off
                        slab = self._slab_of[b]
                        rest = size_of[b] - g
                        if rest > 0:
                            self._split_tail(b, g, rest, death)
                        elif death is not None:
                            self._front[b] = None
                        length = g << shift
                        self._bytes_reserved += length
                        if death is None:
                            self._fresh_count += 1
                            result = _OK_FRESH
                        else:
                            self._reuse_count += 1
                            result = _OK
                        return (
                            result,
                            Reservation(self, off[b] << shift, length, b, slab),
                            NO_INFO,
                        )
        finally:
            lock.release()
        return self._acquire_general(size, alignment, requester_frontier, flags)

    def _pop_head_locked(self, b: int, c: int, fl: int) -> None:
        """Unlink block ``b``, the head of free class ``c`` (first level ``fl``), clearing
        the class's bitmap bits when it empties. Caller holds ``self._lock``."""
        n = self._fnext[b]
        self._heads[c] = n
        if n != _NONE:
            self._fprev[n] = _NONE
            return
        sl_maps = self._sl_maps
        m = sl_maps[fl] & ~(1 << (c & 15))
        sl_maps[fl] = m
        if not m:
            self._fl_map &= ~(1 << fl)

    def _take_quick_locked(self, g: int) -> tuple[AcquireResult, Reservation | None, AcquireInfo]:
        """Pop the newest block of the non-empty quick list for ``g`` granules (fresh
        space). Caller holds ``self._lock``."""
        b = self._quick[g].pop()
        length = g << self._shift
        self._quick_bytes -= length
        self._fresh_count += 1
        self._bytes_reserved += length
        return (
            _OK_FRESH,
            Reservation(self, self._off[b] << self._shift, length, b, self._slab_of[b]),
            NO_INFO,
        )

    def _take_recycled_locked(
        self, g: int, requester_frontier: Frontier
    ) -> tuple[AcquireResult, Reservation | None, AcquireInfo] | None:
        """The recycle-list hit of ``acquire_reservation``: the newest block parked for
        ``g`` granules, taken back when the requester dominates its death frontier; None
        otherwise. Caller holds ``self._lock``."""
        recycled = self._recycle.get(g)
        if not recycled:
            return None
        b = recycled[-1]
        death = self._front[b]  # set for every recycled block
        if death is None or not requester_frontier.dominates(death):
            return None
        recycled.pop()
        self._recycle_count -= 1
        self._front[b] = None
        length = g << self._shift
        self._quick_bytes -= length
        self._reuse_count += 1
        self._bytes_reserved += length
        return (
            _OK,
            Reservation(self, self._off[b] << self._shift, length, b, self._slab_of[b]),
            NO_INFO,
        )

    def _acquire_general(
        self, size: int, alignment: int, requester_frontier: Frontier | None, flags: int
    ) -> tuple[AcquireResult, Reservation | None, AcquireInfo]:
        if (
            size.__class__ is not int
            or not 0 < size <= self.range_length
            or alignment > self.alignment
            or self._closed
        ):
            self._check_request(size, alignment, self.range_length)
        elif alignment & (alignment - 1) or alignment < 0:
            self._check_request(size, alignment, self.range_length)
        shift = self._shift
        g = (size + self.alignment - 1) >> shift
        # Requests aligned beyond the granule search for enough slack to align inside.
        align_g = alignment >> shift if alignment > self.alignment else 1
        need = g + align_g - 1
        with self._lock:
            if self.budget_limit and self._over_budget(g << shift):
                return AcquireResult.OVER_BUDGET, None, NO_INFO
            b = self._find(need, requester_frontier)
            if b < 0 and self._quick_bytes:
                self._flush_quick_locked()
                b = self._find(need, requester_frontier)
            if b < 0:
                if b == -2:
                    self._reuse_miss_count += 1
                if int(flags) & _DISALLOW_GROWTH or (
                    self.max_slabs and len(self._slabs) - len(self._spare_slabs) >= self.max_slabs
                ):
                    self._exhausted_count += 1
                    return (
                        AcquireResult.EXHAUSTED,
                        None,
                        _GROWTH_INFO if int(flags) & _DISALLOW_GROWTH else NO_INFO,
                    )
        if b < 0:
            b = self._grow(need)
            if b < 0:
                with self._lock:
                    self._exhausted_count += 1
                return AcquireResult.EXHAUSTED, None, NO_INFO
        with self._lock:
            if self._cls[b] == _NONE or self._size[b] < g + (-self._off[b]) % align_g:
                # Raced: another reserve took (part of) the grown block.
                b = self._find(need, requester_frontier)
                if b < 0:
                    self._exhausted_count += 1
                    return AcquireResult.EXHAUSTED, None, NO_INFO
            return self._take(b, g, align_g)

    def _find(self, need: int, requester: Frontier | None) -> int:
        """A free block of >= need granules reusable by ``requester``; -1 when none exists,
        -2 when candidates existed but none was reusable. Called under ``_lock``."""
        c = self._first_class_at_least(need)
        if c < 0:
            return _NONE
        front = self._front
        b = self._heads[c]
        if front[b] is None:
            return b  # the common case: fresh space
        budget = _SKIP_BUDGET
        fnext = self._fnext
        size = self._size
        taint = self._taint
        while True:
            f = front[b]
            if f is None or (not taint[b] and size[b] >= need and self._usable(f, requester)):
                return b
            budget -= 1
            if budget == 0:
                return -2
            b = fnext[b]
            if b == _NONE:
                c = self._next_class_after(c)
                if c < 0:
                    return -2
                b = self._heads[c]

    def _take(self, b: int, g: int, align_g: int) -> tuple[AcquireResult, Reservation, AcquireInfo]:
        self._remove_free(b)
        off = self._off
        size = self._size
        f = self._front[b]
        taint = self._taint[b]
        if align_g > 1:
            pad = (-off[b]) % align_g
            if pad:
                # Split the leading padding off as a free block with the same frontier.
                p = self._new_block()
                off[p] = off[b]
                size[p] = pad
                self._slab_of[p] = self._slab_of[b]
                self._link_before(p, b)
                self._front[p] = f
                self._taint[p] = taint
                off[b] += pad
                size[b] -= pad
                self._insert_free(p)
        rest = size[b] - g
        if rest > 0:
            r = self._new_block()
            off[r] = off[b] + g
            size[r] = rest
            self._slab_of[r] = self._slab_of[b]
            nxt = self._next[b]
            self._next[r] = nxt
            self._prev[r] = b
            if nxt != _NONE:
                self._prev[nxt] = r
            self._next[b] = r
            self._front[r] = f
            self._taint[r] = taint
            size[b] = g
            self._insert_free(r)
        self._front[b] = None
        self._taint[b] = False
        shift = self._shift
        length = g << shift
        self._bytes_reserved += length
        if f is None:
            self._fresh_count += 1
            result = _OK_FRESH
        else:
            self._reuse_count += 1
            result = _OK
        return result, Reservation(self, off[b] << shift, length, b, self._slab_of[b]), NO_INFO

    def _grow(self, need: int) -> int:
        """Acquire one more slab (outside the lock) and file it as a free block."""
        try:
            slab = self.provider.acquire_slab(self.range_length)
        except HalError as exc:
            if exc.code != StatusCode.RESOURCE_EXHAUSTED:
                raise
            return _NONE
        with self._lock:
            if self._spare_slabs:
                index = self._spare_slabs.pop()
                self._slabs[index] = slab
            else:
                index = len(self._slabs)
                self._slabs.append(slab)
            b = self._new_block()
            self._off[b] = 0
            self._size[b] = self.range_length >> self._shift
            self._slab_of[b] = index
            self._prev[b] = _NONE
            self._next[b] = _NONE
            self._front[b] = None
            self._taint[b] = False
            self._insert_free(b)
            self._bytes_committed += self.range_length
            return b

    # -- release -----------------------------------------------------------------------

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
            b = reservation.block_handle
            reservation._pool = None
            length = reservation.length
            self._bytes_reserved -= length
            self._release_count += 1
            if death_frontier is None or not death_frontier._axes:
                g = self._size[b]
                quick = self._quick[g] if g < _QUICK_CLASSES else None
                if quick is not None and len(quick) < self._quick_depth:
                    quick.append(b)
                    self._quick_bytes += length
                else:
                    self._free_block_locked(b)
            else:
                self._front[b] = death_frontier
                taint = self._taint[b] = len(death_frontier._axes) > self.frontier_capacity
                if not taint and self._recycle_count < self._recycle_limit:
                    # Stays live with its frontier for an exact-size reserve to take back.
                    g = self._size[b]
                    recycled = self._recycle.get(g)
                    if recycled is None:
                        recycled = self._recycle[g] = []
                    recycled.append(b)
                    self._recycle_count += 1
                    self._quick_bytes += length
                else:
                    self._free_block_locked(b)
        finally:
            lock.release()
        if self.notification._observers:
            # Unobserved releases skip the notification entirely (see Notification).
            self.notification.signal_if_observed()

    def _flush_quick_locked(self) -> None:
        """Free and coalesce every block parked in the quick and recycle lists (recycled
        blocks keep their death frontiers)."""
        for quick in self._quick:
            while quick:
                self._free_block_locked(quick.pop())
        if self._recycle_count:
            for recycled in self._recycle.values():
                while recycled:
                    self._free_block_locked(recycled.pop())
            self._recycle.clear()
            self._recycle_count = 0
        self._quick_bytes = 0

    def _free_block_locked(self, b: int) -> None:
        """File block ``b`` (its frontier already set) as free, coalescing with free
        neighbours. Inlined for the frontier-free neighbour case (the release path)."""
        cls = self._cls
        # Coalesce with the physical neighbours that are free.
        p = self._prev[b]
        if p != _NONE and cls[p] != _NONE:
            self._remove_free(p)
            self._absorb(p, b)
            b = p
        nxt = self._next
        n = nxt[b]
        if n != _NONE and cls[n] != _NONE:
            # Inlined _remove_free(n) + _absorb(b, n) for the frontier-free case.
            front = self._front
            if front[n] is not None or front[b] is not None:
                self._remove_free(n)
                self._absorb(b, n)
            else:
                c = cls[n]
                fprev = self._fprev
                fnext = self._fnext
                fp = fprev[n]
                fn = fnext[n]
                if fp != _NONE:
                    fnext[fp] = fn
                else:
                    self._heads[c] = fn
                    if fn == _NONE:
                        fl = c >> 4
                        m = self._sl_maps[fl] & ~(1 << (c & 15))
                        self._sl_maps[fl] = m
                        if not m:
                            self._fl_map &= ~(1 << fl)
                if fn != _NONE:
                    fprev[fn] = fp
                cls[n] = _NONE
                size_of = self._size
                size_of[b] += size_of[n]
                nn = nxt[n]
                nxt[b] = nn
                if nn != _NONE:
                    self._prev[nn] = b
                self._spare.append(n)
        # Inlined _insert_free(b).
        g = self._size[b]
        if g < 16:
            fl = 0
            sl = g
        else:
            sh = g.bit_length() - 5
            fl = sh + 1
            sl = (g >> sh) & 15
        c = (fl << 4) + sl
        heads = self._heads
        head = heads[c]
        self._fnext[b] = head
        self._fprev[b] = _NONE
        if head != _NONE:
            self._fprev[head] = b
        heads[c] = b
        cls[b] = c
        self._sl_maps[fl] |= 1 << sl
        self._fl_map |= 1 << fl

    def _absorb(self, a: int, b: int) -> None:
        """Merge block ``b`` (physically after ``a``) into ``a``; recycle ``b``."""
        self._size[a] += self._size[b]
        nxt = self._next[b]
        self._next[a] = nxt
        if nxt != _NONE:
            self._prev[nxt] = a
        front = self._front
        fa = front[a]
        fb = front[b]
        if fb is None and fa is None:
            self._cls[b] = _NONE
            self._spare.append(b)
            return
        if fb is not None:
            if fa is None:
                self._front[a] = fb
            elif fa.dominates(fb):
                pass  # the merge is ``fa`` itself: no copy
            elif fb.dominates(fa):
                self._front[a] = fb  # stored frontiers are never changed in place
            else:
                merged = (
                    fa.copy(self.frontier_capacity) if len(fa) <= self.frontier_capacity else None
                )
                if merged is not None and merged.merge(fb):
                    self._front[a] = merged
                else:
                    self._taint[a] = True
        if self._taint[b]:
            self._taint[a] = True
        self._front[b] = None
        self._taint[b] = False
        self._cls[b] = _NONE
        self._spare.append(b)

    # -- slabs -------------------------------------------------------------------------

    def _slab_for(self, reservation: Reservation) -> Slab:
        slab = self._slabs[reservation.slab_index]
        if slab is None:
            raise InternalError(f"{self.trace_name}: reservation refers to a trimmed slab")
        return slab

    def _bytes_free_committed(self) -> tuple[int, int, int]:
        return (
            self._bytes_committed - self._bytes_reserved,
            self._bytes_committed,
            len(self._slabs) - len(self._spare_slabs),
        )

    def trim(self) -> None:
        """Give back every slab that is one free block (no reservation in it)."""
        if self._deferred:
            self._drain_deferred()
        released = []
        with self._lock:
            self._flush_quick_locked()
            whole = self.range_length >> self._shift
            cls = self._cls
            for b in range(len(self._off)):
                if cls[b] != _NONE and self._size[b] == whole:
                    index = self._slab_of[b]
                    self._remove_free(b)
                    self._front[b] = None
                    self._taint[b] = False
                    self._spare.append(b)
                    slab = self._slabs[index]
                    if slab is not None:  # always: a free block's slab is not trimmed yet
                        released.append(slab)
                    self._slabs[index] = None
                    self._spare_slabs.append(index)
                    self._bytes_committed -= self.range_length
        for slab in released:
            self.provider.release_slab(slab)

    def _close_slabs(self) -> None:
        with self._lock:
            slabs = [s for s in self._slabs if s is not None]
            self._slabs = []
        for slab in slabs:
            self.provider.release_slab(slab)


# Rebinding the class name to its fast-path subclass: mypy cannot type a class that
# becomes another class.
if native is not None:
    TlsfPool = with_fast_paths(TlsfPool, native.TlsfCore)  # type: ignore[misc]
    native.configure_recycle(AcquireResult.OK, Frontier)
