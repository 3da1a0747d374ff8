"""Semaphore is made by its device only, is final and has fixed state."""

from __future__ import annotations

import pytest

import hal_core as hal
from hal_core import InvalidArgumentError, Semaphore


def test_direct_construction_is_refused() -> None:
    for call in (
        lambda: Semaphore(),
        lambda: Semaphore(3),
        lambda: Semaphore(0, device=None, flags=0),
        lambda: Semaphore(0, _token=object()),
    ):
        with pytest.raises(
            InvalidArgumentError, match="hal_core.Semaphore has no public constructor"
        ):
            call()


def test_refusal_names_the_factory_and_the_device_still_makes_them() -> None:
    with pytest.raises(InvalidArgumentError, match=r"Device\.create_semaphore"):
        Semaphore(1)
    with hal.create_device("local-sync://") as device:
        sem = device.create_semaphore(4)
        assert isinstance(sem, Semaphore)
        assert sem.value == 4
        assert sem.device is device


def test_semaphore_is_final() -> None:
    with pytest.raises(TypeError, match="hal_core.Semaphore is final"):
        type("Sub", (Semaphore,), {})
    assert getattr(Semaphore, "__final__", False)  # typing.final, for type checkers


def test_semaphore_has_fixed_state() -> None:
    with hal.create_device("local-sync://") as device:
        sem = device.create_semaphore()
        with pytest.raises(AttributeError):
            sem.extra = 1  # type: ignore[attr-defined]
