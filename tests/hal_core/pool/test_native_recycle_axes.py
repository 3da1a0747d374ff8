"""The C recycle hit's dominance check takes an axis object shared by the requester and the
death frontier as equal without converting it (queue frontiers share their axis ints, which
are too large for the cheap conversion); it must decide as ``Frontier.dominates`` does
whether the two frontiers share their axis objects or hold equal ints of their own."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core.backend import Frontier
from hal_core.pool import AcquireResult, CpuSlabProvider, TlsfPool
from hal_core.pool._fast_paths import native

PYTHON_TLSF = getattr(TlsfPool, "_python_class", TlsfPool)

pytestmark = pytest.mark.skipif(native is None, reason="hal_core.pool._native is not built")

_axes = st.lists(st.integers(0, (1 << 64) - 1), min_size=1, max_size=3, unique=True)


def _copy_int(x: int) -> int:
    """An int equal to ``x`` that is not the same object (for ints beyond the small-int
    cache)."""
    return int(str(x))


@settings(max_examples=150, deadline=None)
@given(
    axes=_axes,
    death_epochs=st.lists(st.integers(1, 9), min_size=3, max_size=3),
    requester_epochs=st.lists(st.integers(1, 9), min_size=3, max_size=3),
    drop=st.integers(0, 3),
    shared=st.booleans(),
)
def test_shared_and_equal_axes_decide_alike(
    axes: list[int],
    death_epochs: list[int],
    requester_epochs: list[int],
    drop: int,
    shared: bool,
) -> None:
    axes = sorted(axes)
    death = Frontier(list(zip(axes, death_epochs)))
    requester_axes = axes if shared else [_copy_int(a) for a in axes]
    entries = list(zip(requester_axes, requester_epochs))
    if drop < len(entries):
        del entries[drop]  # a requester missing one of the axes never dominates
    requester = Frontier(entries)
    got = []
    for cls in (TlsfPool, PYTHON_TLSF):
        pool = cls(CpuSlabProvider(), range_length=1 << 16)
        _, res, _ = pool.acquire_reservation(4096)
        pool.release_reservation(res, death)
        got.append(pool.acquire_reservation(4096, 0, requester)[0])
    hit = AcquireResult.OK if requester.dominates(death) else AcquireResult.OK_FRESH
    assert got == [hit, hit]
