"""Async frontiers: vector clocks over causal axes.

An *axis* is a 64-bit name for one participant that completes work in order (a queue, a
collective channel, a host thread). Its bit layout is IREE's:

    [63:56] session epoch | [55:48] machine index | [47:40] causal domain | [39:0] ordinal

and for the QUEUE domain the ordinal is ``device_index[39:32] | queue_index[31:24]``.
An *epoch* is the participant's completion counter: "axis at epoch N" means every piece of
its work up to N has completed.

A ``Frontier`` is a vector clock: ``(axis, epoch)`` entries sorted strictly ascending by axis
with no zero epochs (a missing axis reads as epoch 0). Frontiers are small (usually one or two
entries), so they are kept as two parallel Python lists and every operation is a linear
merge-walk; nothing here allocates per entry.

Thread-safety: a ``Frontier`` is a plain mutable value. Owners (semaphores, pools, the
tracker) guard the ones they share with their own locks.
"""

from __future__ import annotations

import enum
from typing import Callable, Iterable, Iterator, Mapping

from ._status import InvalidArgumentError, OutOfRangeError

__all__ = [
    "AxisDomain",
    "Frontier",
    "FrontierComparison",
    "DEFAULT_FRONTIER_CAPACITY",
    "MAX_FRONTIER_CAPACITY",
    "axis_make",
    "axis_make_queue",
    "axis_session",
    "axis_machine",
    "axis_domain",
    "axis_ordinal",
    "axis_device_index",
    "axis_queue_index",
]

DEFAULT_FRONTIER_CAPACITY = 16
"""Entries a semaphore or pool frontier holds before a merge reports overflow (IREE's)."""
MAX_FRONTIER_CAPACITY = 255
"""The entry count is a uint8 in IREE's layout; no frontier may hold more."""

_U8 = 0xFF
_ORDINAL_MASK = (1 << 40) - 1


class AxisDomain(enum.IntEnum):
    """Causal domain of an axis (bits 47:40)."""

    QUEUE = 0
    COLLECTIVE = 1
    EPILOGUE = 2
    HOST = 3


class FrontierComparison(enum.IntEnum):
    """Result of ``Frontier.compare(a, b)``: how ``a`` relates to ``b`` causally."""

    EQUAL = 0
    BEFORE = 1  # a happens-before b (b dominates a, a != b)
    AFTER = 2  # b happens-before a
    CONCURRENT = 3  # neither dominates


def _check_field(name: str, value: int, limit: int) -> None:
    if value.__class__ is not int or not 0 <= value <= limit:
        raise InvalidArgumentError(f"axis {name} must be an int in 0..{limit}, got {value!r}")


def axis_make(session: int, machine: int, domain: int, ordinal: int) -> int:
    """Build an axis from its fields. INVALID_ARGUMENT when a field does not fit its bits
    (session, machine and domain are 8 bits, ordinal 40 bits)."""
    _check_field("session", session, _U8)
    _check_field("machine", machine, _U8)
    _check_field("domain", int(domain), _U8)
    _check_field("ordinal", ordinal, _ORDINAL_MASK)
    return (session << 56) | (machine << 48) | (int(domain) << 40) | ordinal


def axis_make_queue(session: int, machine: int, device_index: int, queue_index: int) -> int:
    """The axis of queue ``queue_index`` of device ``device_index`` (domain QUEUE)."""
    _check_field("device_index", device_index, _U8)
    _check_field("queue_index", queue_index, _U8)
    return axis_make(session, machine, AxisDomain.QUEUE, (device_index << 32) | (queue_index << 24))


def axis_session(axis: int) -> int:
    return (axis >> 56) & _U8


def axis_machine(axis: int) -> int:
    return (axis >> 48) & _U8


def axis_domain(axis: int) -> AxisDomain | int:
    """The domain as an ``AxisDomain`` when known, else the raw 8-bit value."""
    raw = (axis >> 40) & _U8
    try:
        return AxisDomain(raw)
    except ValueError:
        return raw


def axis_ordinal(axis: int) -> int:
    return axis & _ORDINAL_MASK


def axis_device_index(axis: int) -> int:
    """Device index of a QUEUE-domain axis (bits 39:32)."""
    return (axis >> 32) & _U8


def axis_queue_index(axis: int) -> int:
    """Queue index of a QUEUE-domain axis (bits 31:24)."""
    return (axis >> 24) & _U8


class Frontier:
    """A vector clock of ``(axis, epoch)`` entries, sorted by axis, no zero epochs.

    ``Frontier(entries, capacity)`` validates: entries must be ``(axis, epoch)`` int pairs,
    strictly ascending by axis, epochs >= 1, at most ``capacity`` of them (INVALID_ARGUMENT
    otherwise, naming the offending entry). ``merge`` never raises on capacity: it returns
    False and leaves the frontier unchanged, which owners treat as "still a valid lower
    bound, but tainted".
    """

    __slots__ = ("_axes", "_epochs", "capacity")

    def __init__(
        self, entries: Iterable[tuple[int, int]] = (), capacity: int = DEFAULT_FRONTIER_CAPACITY
    ) -> None:
        if capacity.__class__ is not int or not 1 <= capacity <= MAX_FRONTIER_CAPACITY:
            raise InvalidArgumentError(
                f"frontier capacity must be an int in 1..{MAX_FRONTIER_CAPACITY}, got {capacity!r}"
            )
        axes: list[int] = []
        epochs: list[int] = []
        for item in entries:
            try:
                axis, epoch = item
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    f"frontier entries are (axis, epoch) pairs, got {item!r}"
                ) from None
            axes.append(axis)
            epochs.append(epoch)
        self._axes = axes
        self._epochs = epochs
        self.capacity = capacity
        self.validate()

    @classmethod
    def single(cls, axis: int, epoch: int, capacity: int = DEFAULT_FRONTIER_CAPACITY) -> "Frontier":
        """The one-entry frontier ``{axis: epoch}`` (the common queue case)."""
        if (
            axis.__class__ is int
            and 0 <= axis < (1 << 64)
            and epoch.__class__ is int
            and epoch >= 1
            and capacity.__class__ is int
            and 1 <= capacity <= MAX_FRONTIER_CAPACITY
        ):
            return cls._trusted([axis], [epoch], capacity)  # checked here, in one pass
        return cls(((axis, epoch),), capacity)  # explains what is wrong

    @classmethod
    def _trusted(cls, axes: list[int], epochs: list[int], capacity: int) -> "Frontier":
        # Internal fast path: the caller guarantees the invariants.
        f = cls.__new__(cls)
        f._axes = axes
        f._epochs = epochs
        f.capacity = capacity
        return f

    def validate(self) -> None:
        """INVALID_ARGUMENT unless entries are int pairs sorted strictly ascending by axis,
        epochs >= 1, axes 64-bit, and the count fits the capacity."""
        axes = self._axes
        epochs = self._epochs
        if len(axes) > self.capacity:
            raise InvalidArgumentError(
                f"frontier has {len(axes)} entries but capacity {self.capacity}; raise the "
                "capacity or merge fewer axes"
            )
        previous = -1
        for i, (axis, epoch) in enumerate(zip(axes, epochs)):
            if axis.__class__ is not int or not 0 <= axis < (1 << 64):
                raise InvalidArgumentError(
                    f"frontier entry {i}: axis must be a 64-bit int, got {axis!r}"
                )
            if epoch.__class__ is not int or epoch < 1:
                raise InvalidArgumentError(
                    f"frontier entry {i} (axis {axis:#x}): epoch must be an int >= 1, got "
                    f"{epoch!r}; drop zero-epoch entries"
                )
            if axis <= previous:
                raise InvalidArgumentError(
                    f"frontier entry {i}: axis {axis:#x} is not greater than the previous axis "
                    f"{previous:#x}; entries must be sorted strictly ascending by axis"
                )
            previous = axis

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._axes)

    def __bool__(self) -> bool:
        return bool(self._axes)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._axes, self._epochs)

    @property
    def entries(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(self._axes, self._epochs))

    def epoch(self, axis: int) -> int:
        """The epoch recorded for ``axis`` (0 when absent)."""
        axes = self._axes
        for i in range(len(axes)):
            if axes[i] == axis:
                return self._epochs[i]
        return 0

    def copy(self, capacity: int | None = None) -> "Frontier":
        cap = self.capacity if capacity is None else capacity
        if len(self._axes) > cap:
            raise OutOfRangeError(
                f"cannot copy a {len(self._axes)}-entry frontier into capacity {cap}"
            )
        return Frontier._trusted(list(self._axes), list(self._epochs), cap)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frontier):
            return NotImplemented
        return self._axes == other._axes and self._epochs == other._epochs

    __hash__ = None  # type: ignore[assignment]  # mutable value

    def __repr__(self) -> str:
        inner = ", ".join(f"{a:#x}:{e}" for a, e in zip(self._axes, self._epochs))
        return f"Frontier({{{inner}}})"

    # -- algebra ---------------------------------------------------------------------

    def compare(self, other: "Frontier") -> FrontierComparison:
        """How this frontier relates to ``other`` (missing axes count as epoch 0)."""
        a_axes, a_ep = self._axes, self._epochs
        b_axes, b_ep = other._axes, other._epochs
        i = j = 0
        na, nb = len(a_axes), len(b_axes)
        a_greater = b_greater = False
        while i < na and j < nb:
            x, y = a_axes[i], b_axes[j]
            if x == y:
                ea, eb = a_ep[i], b_ep[j]
                if ea > eb:
                    a_greater = True
                elif eb > ea:
                    b_greater = True
                i += 1
                j += 1
            elif x < y:
                a_greater = True  # a has an axis b lacks (epoch >= 1 > 0)
                i += 1
            else:
                b_greater = True
                j += 1
            if a_greater and b_greater:
                return FrontierComparison.CONCURRENT
        if i < na:
            a_greater = True
        if j < nb:
            b_greater = True
        if a_greater:
            return FrontierComparison.CONCURRENT if b_greater else FrontierComparison.AFTER
        return FrontierComparison.BEFORE if b_greater else FrontierComparison.EQUAL

    def dominates(self, other: "Frontier") -> bool:
        """True when every entry of ``other`` is covered (this >= other component-wise)."""
        b_axes = other._axes
        if not b_axes:
            return True
        a_axes, a_ep = self._axes, self._epochs
        b_ep = other._epochs
        na = len(a_axes)
        i = 0
        for j in range(len(b_axes)):
            y = b_axes[j]
            while i < na and a_axes[i] < y:
                i += 1
            if i == na or a_axes[i] != y or a_ep[i] < b_ep[j]:
                return False
        return True

    def _merged(self, source: "Frontier") -> tuple[list[int], list[int]]:
        a_axes, a_ep = self._axes, self._epochs
        b_axes, b_ep = source._axes, source._epochs
        axes: list[int] = []
        epochs: list[int] = []
        i = j = 0
        na, nb = len(a_axes), len(b_axes)
        while i < na and j < nb:
            x, y = a_axes[i], b_axes[j]
            if x == y:
                axes.append(x)
                epochs.append(a_ep[i] if a_ep[i] >= b_ep[j] else b_ep[j])
                i += 1
                j += 1
            elif x < y:
                axes.append(x)
                epochs.append(a_ep[i])
                i += 1
            else:
                axes.append(y)
                epochs.append(b_ep[j])
                j += 1
        if i < na:
            axes.extend(a_axes[i:])
            epochs.extend(a_ep[i:])
        if j < nb:
            axes.extend(b_axes[j:])
            epochs.extend(b_ep[j:])
        return axes, epochs

    def merge(self, source: "Frontier") -> bool:
        """Component-wise max of this and ``source``, in place. Returns False and leaves this
        frontier unchanged when the union would exceed ``capacity``."""
        a_axes = self._axes
        b_axes = source._axes
        if not b_axes:
            return True
        # Fast path for the common one-entry case on a shared axis.
        if len(b_axes) == 1 and len(a_axes) == 1 and a_axes[0] == b_axes[0]:
            if source._epochs[0] > self._epochs[0]:
                self._epochs[0] = source._epochs[0]
            return True
        axes, epochs = self._merged(source)
        if len(axes) > self.capacity:
            return False
        self._axes = axes
        self._epochs = epochs
        return True

    def merge_and_test_source_dominance(self, source: "Frontier") -> tuple[bool, bool]:
        """Merge ``source`` in; returns ``(merged, source_dominated)`` where
        ``source_dominated`` says ``source`` already covered the old value (so the result
        equals ``source``). On overflow returns ``(False, source_dominated)`` unchanged."""
        dominated = source.dominates(self)
        return self.merge(source), dominated

    def find_undominated(self, target: "Frontier") -> list[tuple[int, int]]:
        """Entries of ``target`` this frontier (the reference) does not cover: what a
        waiter must still wait for. Empty when this frontier dominates ``target``."""
        out: list[tuple[int, int]] = []
        a_axes, a_ep = self._axes, self._epochs
        na = len(a_axes)
        i = 0
        for axis, epoch in zip(target._axes, target._epochs):
            while i < na and a_axes[i] < axis:
                i += 1
            if i == na or a_axes[i] != axis or a_ep[i] < epoch:
                out.append((axis, epoch))
        return out

    def is_satisfied(self, current: Mapping[int, int] | Callable[[int, int], bool]) -> bool:
        """True when every entry has been reached: ``current`` maps axis -> epoch reached,
        or is an epoch query ``fn(axis, epoch) -> bool`` (a tracker's ``query_epoch``)."""
        if callable(current):
            for axis, epoch in zip(self._axes, self._epochs):
                if not current(axis, epoch):
                    return False
            return True
        get = current.get
        for axis, epoch in zip(self._axes, self._epochs):
            if get(axis, 0) < epoch:
                return False
        return True
