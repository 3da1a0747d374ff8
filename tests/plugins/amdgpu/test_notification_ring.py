"""Notification ring: epochs -> coalesced semaphore signals and retained resources."""

from __future__ import annotations

import pytest
from hal_amdgpu.notification_ring import NotificationRing
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core as hal


class Sem:
    def __init__(self, name: str) -> None:
        self.name = name


def test_drain_coalesces_per_semaphore_in_order():
    ring = NotificationRing(8, 4)
    a, b = Sem("a"), Sem("b")
    ring.push(1, [(a, 1)], resources=["r1"], kernarg_position=3)
    ring.push(2, [(b, 5), (a, 2)], resources=None, kernarg_position=-1)
    ring.push(3, [(a, 3)], resources=["r3a", "r3b"], kernarg_position=9)
    res = ring.drain(2)
    assert [(s.name, v) for s, v in res.signals] == [("a", 2), ("b", 5)]
    assert res.resources == ["r1"] and res.kernarg_position == 3 and res.epoch_count == 2
    res = ring.drain(10)  # only what was pushed
    assert [(s.name, v) for s, v in res.signals] == [("a", 3)]
    assert res.resources == ["r3a", "r3b"] and res.kernarg_position == 9
    assert ring.pending_epochs == 0
    assert ring.drain(3).epoch_count == 0


def test_admission_and_capacity_errors():
    ring = NotificationRing(4, 2)
    s = Sem("s")
    with pytest.raises(hal.OutOfRangeError, match="notification ring holds 4"):
        ring.check_fits(5)
    assert ring.can_admit(4)
    ring.push(1, [(s, 1), (s, 2), (s, 3)])
    assert not ring.can_admit(2)  # signal entries
    ring.push(2, [])
    assert not ring.can_admit(0)  # epoch slots
    with pytest.raises(hal.InvalidArgumentError, match="in order"):
        ring.push(5, [])
    ring.drain(1)
    assert ring.can_admit(4)
    with pytest.raises(hal.InvalidArgumentError, match="power of two"):
        NotificationRing(3, 4)


def test_fail_all_reports_each_semaphore_once_and_empties():
    ring = NotificationRing(8, 8)
    a, b = Sem("a"), Sem("b")
    ring.push(1, [(a, 1), (b, 1)], resources=["x"], action=lambda: None)
    ring.push(2, [(a, 2)], resources=["y"])
    res = ring.fail_all()
    assert sorted(s.name for s, _ in res.signals) == ["a", "b"]
    assert res.resources == ["x", "y"] and res.actions == []
    assert ring.pending_epochs == 0 and ring.can_admit(8)
    ring.push(3, [(a, 3)])  # the ring keeps working afterwards
    assert ring.drain(3).signals[0][1] == 3


def test_thousands_of_epochs_wrap():
    ring = NotificationRing(16, 8)
    s = Sem("s")
    last = 0
    total = 0
    for epoch in range(1, 4001):
        if not ring.can_admit(2):
            res = ring.drain(epoch - 1)
            assert res.signals[0][1] == 2 * (epoch - 1)
            total += len(res.resources)
        ring.push(epoch, [(s, 2 * epoch - 1), (s, 2 * epoch)], resources=epoch)
        last = epoch
    total += len(ring.drain(last).resources)
    assert total == 4000


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 3), max_size=3), min_size=1, max_size=40), st.integers(1, 5)
)
def test_property_drained_values_equal_max_pushed(submissions, drain_every):
    ring = NotificationRing(64, 64)
    sems = [Sem(str(i)) for i in range(4)]
    counters = [0] * 4
    expected: dict[int, int] = {}
    got: dict[int, int] = {}
    for epoch, sigs in enumerate(submissions, start=1):
        pairs = []
        for i in sigs:
            counters[i] += 1
            pairs.append((sems[i], counters[i]))
            expected[i] = counters[i]
        ring.push(epoch, pairs)
        if epoch % drain_every == 0:
            for sem, v in ring.drain(epoch).signals:
                got[int(sem.name)] = v
    for sem, v in ring.drain(len(submissions)).signals:
        got[int(sem.name)] = v
    assert got == expected
