"""Frontiers: axis encoding, vector-clock algebra, validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core import InvalidArgumentError
from hal_core.backend import (
    AxisDomain,
    Frontier,
    FrontierComparison,
    axis_device_index,
    axis_domain,
    axis_machine,
    axis_make,
    axis_make_queue,
    axis_ordinal,
    axis_queue_index,
    axis_session,
)

C = FrontierComparison


def test_axis_layout_matches_iree_bits():
    a = axis_make_queue(1, 2, 3, 4)
    assert a == (1 << 56) | (2 << 48) | (0 << 40) | (3 << 32) | (4 << 24)
    assert (axis_session(a), axis_machine(a), axis_domain(a)) == (1, 2, AxisDomain.QUEUE)
    assert (axis_device_index(a), axis_queue_index(a)) == (3, 4)
    h = axis_make(7, 0, AxisDomain.HOST, 12345)
    assert axis_domain(h) is AxisDomain.HOST and axis_ordinal(h) == 12345
    assert axis_domain(axis_make(0, 0, 200, 0)) == 200  # unknown domains stay raw


@pytest.mark.parametrize(
    "args", [(256, 0, 0, 0), (0, -1, 0, 0), (0, 0, 0, 1 << 40), (0, 0, 0, 1.5)]
)
def test_axis_fields_out_of_range(args):
    with pytest.raises(InvalidArgumentError, match="axis"):
        axis_make(*args)
    with pytest.raises(InvalidArgumentError, match="queue_index"):
        axis_make_queue(0, 0, 0, 256)


def test_validate_rejects_unsorted_zero_duplicate_and_overflow():
    with pytest.raises(InvalidArgumentError, match="sorted strictly ascending"):
        Frontier([(5, 1), (3, 1)])
    with pytest.raises(InvalidArgumentError, match="sorted strictly ascending"):
        Frontier([(5, 1), (5, 2)])
    with pytest.raises(InvalidArgumentError, match="epoch must be an int >= 1"):
        Frontier([(5, 0)])
    with pytest.raises(InvalidArgumentError, match="capacity"):
        Frontier([(1, 1), (2, 1), (3, 1)], capacity=2)
    with pytest.raises(InvalidArgumentError, match=r"\(axis, epoch\) pairs"):
        Frontier([5])
    with pytest.raises(InvalidArgumentError, match="capacity must be"):
        Frontier([], capacity=0)


def test_compare_cases():
    a = Frontier([(1, 2), (3, 1)])
    assert a.compare(a.copy()) == C.EQUAL
    assert Frontier([(1, 1)]).compare(a) == C.BEFORE
    assert a.compare(Frontier([(1, 1)])) == C.AFTER
    assert a.compare(Frontier([(2, 1)])) == C.CONCURRENT
    assert Frontier().compare(Frontier()) == C.EQUAL
    assert Frontier().compare(a) == C.BEFORE


def test_merge_overflow_leaves_target_unchanged():
    target = Frontier([(1, 1), (2, 1)], capacity=2)
    before = target.entries
    assert target.merge(Frontier([(3, 1)])) is False
    assert target.entries == before
    assert target.merge(Frontier([(2, 5)])) is True
    assert target.entries == ((1, 1), (2, 5))


def test_merge_and_test_source_dominance_and_find_undominated():
    target = Frontier([(1, 1)])
    merged, dominated = target.merge_and_test_source_dominance(Frontier([(1, 2), (4, 1)]))
    assert merged and dominated and target.entries == ((1, 2), (4, 1))
    merged, dominated = target.merge_and_test_source_dominance(Frontier([(2, 1)]))
    assert merged and not dominated
    ref = Frontier([(1, 3), (2, 1)])
    assert ref.find_undominated(Frontier([(1, 2), (2, 2), (9, 1)])) == [(2, 2), (9, 1)]
    assert ref.find_undominated(Frontier([(1, 3)])) == []


def test_is_satisfied_with_mapping_and_query():
    f = Frontier([(1, 2), (7, 1)])
    assert f.is_satisfied({1: 2, 7: 4})
    assert not f.is_satisfied({1: 1, 7: 4})
    assert f.is_satisfied(lambda axis, epoch: True)
    assert not f.is_satisfied(lambda axis, epoch: axis != 7)


# -- property tests -----------------------------------------------------------------------

entries = st.dictionaries(st.integers(0, 12), st.integers(1, 6), max_size=6)


def _f(d: dict[int, int]) -> Frontier:
    return Frontier(sorted(d.items()), capacity=32)


def _join(a: Frontier, b: Frontier) -> Frontier:
    out = a.copy()
    assert out.merge(b)
    return out


@settings(max_examples=60, deadline=None)
@given(entries, entries, entries)
def test_merge_is_a_lattice_join(x, y, z):
    a, b, c = _f(x), _f(y), _f(z)
    assert _join(a, b) == _join(b, a)
    assert _join(_join(a, b), c) == _join(a, _join(b, c))
    assert _join(a, a) == a
    j = _join(a, b)
    j.validate()
    expected = {k: max(x.get(k, 0), y.get(k, 0)) for k in set(x) | set(y)}
    assert dict(j.entries) == expected


@settings(max_examples=60, deadline=None)
@given(entries, entries)
def test_compare_consistent_with_merge(x, y):
    a, b = _f(x), _f(y)
    j = _join(a, b)
    cmp = a.compare(b)
    assert (
        cmp
        == {C.EQUAL: C.EQUAL, C.BEFORE: C.AFTER, C.AFTER: C.BEFORE, C.CONCURRENT: C.CONCURRENT}[
            b.compare(a)
        ]
    )
    if cmp in (C.BEFORE, C.EQUAL):
        assert j == b and b.dominates(a)
    if cmp in (C.AFTER, C.EQUAL):
        assert j == a and a.dominates(b)
    if cmp == C.CONCURRENT:
        assert j != a and j != b
    assert (a.find_undominated(b) == []) == a.dominates(b)
