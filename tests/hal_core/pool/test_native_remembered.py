"""What the pools' native fast paths remember between calls, and what makes them look again.

A TLSF core remembers the recycle list it last found (by the recycle dict's version), and
a release remembers where the notification's ``_observers`` slot lies (by the type's
version). Each test changes what was remembered, as the Python path or a user may, and
checks that the next native call sees the change.
"""

from __future__ import annotations

from typing import Any

import pytest

from hal_core._notification import Notification
from hal_core.backend import Frontier
from hal_core.pool import CpuSlabProvider, TlsfPool, _fast_paths

native = _fast_paths.native
pytestmark = pytest.mark.skipif(native is None, reason=f"{_fast_paths.unavailable_reason}")

_AXIS = 1 << 40


def _recycling_pool() -> tuple[Any, int, Any]:
    """A pool that has recycled one 4 KiB block natively (so its list is remembered), the
    block back on its recycle list; with the list's granule count and the block."""
    pool = TlsfPool(CpuSlabProvider(), range_length=1 << 16, frontier_capacity=4)
    death, later = Frontier([(_AXIS, 1)]), Frontier([(_AXIS, 2)])
    first = pool.acquire_reservation(4096)[1]
    pool.release_reservation(first, death)
    again = pool.acquire_reservation(4096, 0, later)[1]
    assert again.offset == first.offset  # taken back from the recycle list
    pool.release_reservation(again, death)
    (g,) = [g for g, blocks in pool._recycle.items() if blocks]
    return pool, g, pool._recycle[g][-1]


def test_a_replaced_recycle_list_is_looked_up_again() -> None:
    pool, g, block = _recycling_pool()
    old = pool._recycle[g]
    new = list(old)
    pool._recycle[g] = new  # what the Python path may do; the old list keeps its blocks
    taken = pool.acquire_reservation(4096, 0, Frontier([(_AXIS, 3)]))[1]
    assert taken.block_handle == block
    assert new == [] and old == [block]  # popped from the list the dict holds now
    pool.release_reservation(taken, Frontier([(_AXIS, 3)]))
    assert new == [block] and old == [block]
    pool._recycle[g] = new  # a store of the same list is still a change of the dict
    pool.check_invariants()


def test_a_notification_of_another_type_is_read_through_its_type() -> None:
    pool = TlsfPool(CpuSlabProvider(), range_length=1 << 16)
    for _ in range(3):  # native releases, the observers' slot remembered
        pool.release_reservation(pool.acquire_reservation(256)[1])
    signalled: list = []

    class Watched(Notification):
        """Reports one observer through a property named like the base's slot."""

        # Always one observer; the base's stores (its __init__, observe scopes) go nowhere.
        _observers = property(lambda self: 1, lambda self, value: None)

        def signal_if_observed(self) -> bool:
            signalled.append(True)
            return True

    pool.notification = Watched()
    pool.release_reservation(pool.acquire_reservation(256)[1])
    assert signalled == [True]
    pool.notification = Notification()
    pool.release_reservation(pool.acquire_reservation(256)[1])
    assert signalled == [True]
