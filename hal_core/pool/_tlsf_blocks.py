"""The TLSF block table: blocks, their physical chains, and the segregated free lists.

Sizes are counted in *granules* (the pool alignment, a power of two >= 16). A free block
of ``g`` granules lives in size class ``(fl, sl)``:

* ``g < 16``: ``fl = 0, sl = g`` (exact small classes);
* otherwise with ``b = g.bit_length() - 1``: ``fl = b - 3`` and ``sl`` the next four bits
  below the leading one, so class ``(fl, sl)`` holds ``[(16 + sl) << (b-4), (17 + sl) << (b-4))``.

A first-level bitmap says which ``fl`` rows have any free block and one second-level
bitmap per row says which classes do; finding a class that is guaranteed to fit is two
masked lowest-set-bit operations (``x & -x``).

Blocks are indices into parallel preallocated lists (offset, size, slab, physical
neighbours, free-list links, class, death frontier, taint); free block indices are
recycled through a stack. ``TlsfPool`` (``_tlsf``) holds the reserve/release policy over
this table, and inlines some of these operations on its hot paths.

Invariants (checked by ``check_invariants``, quick-listed blocks counting as live): each
slab is covered exactly by its chain of physical blocks; no two physically adjacent blocks
are both free; every free block is in exactly the free list of its class and its class bit
is set iff that list is non-empty.
"""

from __future__ import annotations

from typing import Any

from .._frontier import Frontier
from .._status import InternalError

__all__ = ["TlsfBlockTable"]

SL_LOG2 = 4
SL_COUNT = 1 << SL_LOG2
NONE = -1


class TlsfBlockTable:
    """The block table and class lists of a ``TlsfPool`` (a base class of it; no state of
    its own beyond what ``_init_block_table`` sets). Every method is called with the pool's
    ``_lock`` held, except ``check_invariants``, which takes it."""

    # Set by the pool (or its native core) that this table belongs to.
    _lock: Any
    range_length: int
    _shift: int
    _bytes_committed: int
    _bytes_reserved: int
    _quick_bytes: int

    def _init_block_table(self, max_granules: int, initial_block_capacity: int) -> None:
        """Empty class lists and bitmaps for blocks of up to ``max_granules`` granules, and a
        block table of ``initial_block_capacity`` entries (at least 8)."""
        self._fl_count = max(1, max_granules.bit_length() - 3) + 1
        self._heads = [NONE] * (self._fl_count * SL_COUNT)
        self._fl_map = 0
        self._sl_maps = [0] * self._fl_count
        # Block table (parallel lists, grown by doubling).
        cap = max(8, initial_block_capacity)
        self._off = [0] * cap  # granules from the slab start
        self._size = [0] * cap  # granules
        self._slab_of = [0] * cap
        self._prev = [NONE] * cap  # physical neighbours
        self._next = [NONE] * cap
        self._fprev = [NONE] * cap  # free-list links
        self._fnext = [NONE] * cap
        self._cls = [NONE] * cap  # class index when free, -1 when live
        self._front: list[Frontier | None] = [None] * cap
        self._taint = [False] * cap
        self._spare = list(range(cap - 1, -1, -1))

    def _new_block(self) -> int:
        spare = self._spare
        if not spare:
            n = len(self._off)
            columns: tuple[tuple[list[Any], Any], ...] = (
                (self._off, 0),
                (self._size, 0),
                (self._slab_of, 0),
                (self._prev, NONE),
                (self._next, NONE),
                (self._fprev, NONE),
                (self._fnext, NONE),
                (self._cls, NONE),
                (self._front, None),
                (self._taint, False),
            )
            for lst, fill in columns:
                lst.extend([fill] * n)
            spare.extend(range(2 * n - 1, n - 1, -1))
        return spare.pop()

    def _insert_free(self, b: int) -> None:
        g = self._size[b]
        if g < SL_COUNT:
            fl = 0
            sl = g
        else:
            s = g.bit_length() - 5
            fl = s + 1
            sl = (g >> s) & 15
        c = fl * SL_COUNT + sl
        heads = self._heads
        head = heads[c]
        self._fnext[b] = head
        self._fprev[b] = NONE
        if head != NONE:
            self._fprev[head] = b
        heads[c] = b
        self._cls[b] = c
        self._sl_maps[fl] |= 1 << sl
        self._fl_map |= 1 << fl

    def _remove_free(self, b: int) -> None:
        c = self._cls[b]
        p = self._fprev[b]
        n = self._fnext[b]
        if p != NONE:
            self._fnext[p] = n
        else:
            self._heads[c] = n
            if n == NONE:
                fl = c >> SL_LOG2
                m = self._sl_maps[fl] & ~(1 << (c & 15))
                self._sl_maps[fl] = m
                if not m:
                    self._fl_map &= ~(1 << fl)
        if n != NONE:
            self._fprev[n] = p
        self._cls[b] = NONE

    def _first_class_at_least(self, g: int) -> int:
        """Class index of the first non-empty class whose blocks all hold >= g granules,
        or -1."""
        if g < SL_COUNT:
            fl = 0
            sl = g
        else:
            s = g.bit_length() - 5
            g += (1 << s) - 1  # round up so every block of the class fits
            s = g.bit_length() - 5
            fl = s + 1
            sl = (g >> s) & 15
            if fl >= self._fl_count:
                return NONE
        m = self._sl_maps[fl] & (-1 << sl)
        if not m:
            f = self._fl_map & (-1 << (fl + 1))
            if not f:
                return NONE
            fl = (f & -f).bit_length() - 1
            m = self._sl_maps[fl]
        return fl * SL_COUNT + (m & -m).bit_length() - 1

    def _next_class_after(self, c: int) -> int:
        fl = c >> SL_LOG2
        m = self._sl_maps[fl] & (-1 << ((c & 15) + 1))
        if not m:
            f = self._fl_map & (-1 << (fl + 1))
            if not f:
                return NONE
            fl = (f & -f).bit_length() - 1
            m = self._sl_maps[fl]
        return fl * SL_COUNT + (m & -m).bit_length() - 1

    def _split_tail(self, b: int, g: int, rest: int, death: Frontier | None) -> None:
        """Cut live block ``b`` to ``g`` granules and file its last ``rest`` granules as a
        free block after it; the remainder keeps ``death`` (untainted, like its parent)
        and ``b`` loses it."""
        off = self._off
        r = self._spare.pop() if self._spare else self._new_block()
        off[r] = off[b] + g
        self._size[r] = rest
        self._slab_of[r] = self._slab_of[b]
        nxt = self._next[b]
        self._next[r] = nxt
        self._prev[r] = b
        if nxt != NONE:
            self._prev[nxt] = r
        self._next[b] = r
        self._size[b] = g
        if death is not None:
            self._front[r] = death
            self._front[b] = None
        self._insert_free(r)

    def _link_before(self, p: int, b: int) -> None:
        prv = self._prev[b]
        self._prev[p] = prv
        self._next[p] = b
        if prv != NONE:
            self._next[prv] = p
        self._prev[b] = p

    # -- verification ------------------------------------------------------------------

    def check_invariants(self) -> None:
        """INTERNAL when the block structure is inconsistent (used by tests)."""
        with self._lock:
            shift = self._shift
            whole = self.range_length >> shift
            spare = set(self._spare)
            live_blocks = [b for b in range(len(self._off)) if b not in spare]
            firsts = [b for b in live_blocks if self._prev[b] == NONE]
            free_total = 0
            seen = set()
            for first in firsts:
                pos = 0
                b = first
                last_free = False
                while b != NONE:
                    if self._off[b] != pos:
                        raise InternalError(f"block {b} at {self._off[b]}, expected {pos}")
                    is_free = self._cls[b] != NONE
                    if is_free and last_free:
                        raise InternalError(f"adjacent free blocks ending at {b}")
                    if is_free:
                        free_total += self._size[b]
                    last_free = is_free
                    pos += self._size[b]
                    seen.add(b)
                    b = self._next[b]
                if pos != whole:
                    raise InternalError(f"slab chain covers {pos} of {whole} granules")
            if seen != set(live_blocks):
                raise InternalError("blocks outside any slab chain")
            accounted = self._bytes_committed - self._bytes_reserved - self._quick_bytes
            if free_total << shift != accounted:
                raise InternalError(f"free bytes {free_total << shift} != accounted {accounted}")
            for c, head in enumerate(self._heads):
                fl, sl = divmod(c, SL_COUNT)
                has_bit = bool(self._sl_maps[fl] >> sl & 1)
                if has_bit != (head != NONE):
                    raise InternalError(f"class {c} bitmap disagrees with its list")
                b = head
                while b != NONE:
                    if self._cls[b] != c:
                        raise InternalError(f"block {b} in list {c} but class {self._cls[b]}")
                    b = self._fnext[b]
