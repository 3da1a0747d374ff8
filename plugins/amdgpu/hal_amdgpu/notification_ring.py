"""The notification ring: which semaphore values and retained resources each queue epoch
publishes or releases when it completes.

Two preallocated rings, both indexed by unwrapped counters:

* the *signal* ring holds one entry per signal semaphore of a submission:
  ``(semaphore, value, epoch)``;
* the *reclaim* ring holds one entry per epoch (every submission uses exactly one epoch,
  even with no signals): the retained resources, the kernarg ring end position and an
  optional pre-signal action.

``drain(completed_epoch)`` pops every entry of epochs ``<= completed_epoch`` in order and
returns them *coalesced*: one ``(semaphore, highest value)`` per semaphore, in order of
first appearance, so the caller makes one signal call per semaphore however many epochs
retired at once. Signalling, running actions and dropping resources is the caller's job,
outside its locks (semaphore callbacks may submit more work to this queue).

``fail_all()`` empties both rings and returns each unique pending semaphore once, for the
queue error path.

Thread-safety: not thread-safe. ``push`` runs under the host queue's submission lock and
``drain`` under its drain lock; the host queue holds both where they could race (the
counters are only advanced by their own side: ``push`` moves tails, ``drain`` heads).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from hal_core import InvalidArgumentError, OutOfRangeError

__all__ = ["NotificationRing", "DrainResult"]


class DrainResult:
    """What retired epochs hand back (plain lists, owned by the caller)."""

    __slots__ = ("signals", "resources", "actions", "kernarg_position", "epoch_count")

    def __init__(self) -> None:
        self.signals: list[tuple[Any, int]] = []
        self.resources: list[Any] = []
        self.actions: list[Callable[[], None]] = []
        self.kernarg_position = -1
        self.epoch_count = 0


class NotificationRing:
    """Epoch -> signals + retained resources (see module docstring)."""

    __slots__ = (
        "signal_capacity",
        "epoch_capacity",
        "_smask",
        "_emask",
        "_sems",
        "_values",
        "_epochs",
        "_shead",
        "_stail",
        "_resources",
        "_kernarg",
        "_actions",
        "last_pushed_epoch",
        "last_drained_epoch",
    )

    def __init__(self, signal_capacity: int = 1024, epoch_capacity: int = 1024) -> None:
        for name, cap in (("signal", signal_capacity), ("epoch", epoch_capacity)):
            if cap <= 0 or cap & (cap - 1):
                raise InvalidArgumentError(
                    f"notification ring {name} capacity must be a power of two, got {cap}"
                )
        self.signal_capacity = signal_capacity
        self.epoch_capacity = epoch_capacity
        self._smask = signal_capacity - 1
        self._emask = epoch_capacity - 1
        self._sems: list[Any] = [None] * signal_capacity
        self._values = [0] * signal_capacity
        self._epochs = [0] * signal_capacity
        self._shead = 0
        self._stail = 0
        self._resources: list[Any] = [None] * epoch_capacity
        self._kernarg = [-1] * epoch_capacity
        self._actions: list[Any] = [None] * epoch_capacity
        self.last_pushed_epoch = 0
        self.last_drained_epoch = 0

    # -- admission -----------------------------------------------------------------------

    def check_fits(self, signal_count: int) -> None:
        if signal_count > self.signal_capacity:
            raise OutOfRangeError(
                f"a submission signals {signal_count} semaphores but the notification ring "
                f"holds {self.signal_capacity} entries; signal fewer semaphores per "
                "submission or create the device with a larger notification ring"
            )

    def can_admit(self, signal_count: int) -> bool:
        return (
            self._stail - self._shead + signal_count <= self.signal_capacity
            and self.last_pushed_epoch - self.last_drained_epoch < self.epoch_capacity
        )

    @property
    def pending_epochs(self) -> int:
        return self.last_pushed_epoch - self.last_drained_epoch

    # -- producer ------------------------------------------------------------------------

    def push(
        self,
        epoch: int,
        signals: Sequence[tuple[Any, int]],
        resources: Any = None,
        kernarg_position: int = -1,
        action: Callable[[], None] | None = None,
    ) -> None:
        """Record epoch ``epoch`` (must be the next one). Caller checked ``can_admit``."""
        if epoch != self.last_pushed_epoch + 1:
            raise InvalidArgumentError(
                f"notification epochs must be pushed in order: expected "
                f"{self.last_pushed_epoch + 1}, got {epoch}"
            )
        tail = self._stail
        smask = self._smask
        sems, values, epochs = self._sems, self._values, self._epochs
        for sem, value in signals:
            i = tail & smask
            sems[i] = sem
            values[i] = value
            epochs[i] = epoch
            tail += 1
        self._stail = tail
        e = epoch & self._emask
        self._resources[e] = resources
        self._kernarg[e] = kernarg_position
        self._actions[e] = action
        self.last_pushed_epoch = epoch

    # -- consumer ------------------------------------------------------------------------

    def drain(self, completed_epoch: int, out: DrainResult | None = None) -> DrainResult:
        """Pop every epoch ``<= completed_epoch`` (in order); see module docstring."""
        result = out if out is not None else DrainResult()
        last = min(completed_epoch, self.last_pushed_epoch)
        first = self.last_drained_epoch + 1
        if last < first:
            return result
        emask = self._emask
        res, kern, acts = self._resources, self._kernarg, self._actions
        for epoch in range(first, last + 1):
            e = epoch & emask
            r = res[e]
            if r is not None:
                if isinstance(r, list):
                    result.resources.extend(r)
                else:
                    result.resources.append(r)
                res[e] = None
            if kern[e] >= 0:
                result.kernarg_position = kern[e]
            a = acts[e]
            if a is not None:
                result.actions.append(a)
                acts[e] = None
        result.epoch_count += last - first + 1
        # Signals: coalesce per semaphore, keeping the highest value.
        head, tail, smask = self._shead, self._stail, self._smask
        sems, values, epochs = self._sems, self._values, self._epochs
        if head < tail:
            order: dict[int, int] = {}
            sigs = result.signals
            while head < tail:
                i = head & smask
                if epochs[i] > last:
                    break
                sem = sems[i]
                slot = order.get(id(sem))
                if slot is None:
                    order[id(sem)] = len(sigs)
                    sigs.append((sem, values[i]))
                elif values[i] > sigs[slot][1]:
                    sigs[slot] = (sem, values[i])
                sems[i] = None
                head += 1
            self._shead = head
        self.last_drained_epoch = last
        return result

    def fail_all(self) -> DrainResult:
        """Empty the rings: every unique pending semaphore once (value = its highest
        pending value), every retained resource, every action dropped (not run)."""
        result = DrainResult()
        seen: set[int] = set()
        head, tail, smask = self._shead, self._stail, self._smask
        while head < tail:
            i = head & smask
            sem = self._sems[i]
            if id(sem) not in seen:
                seen.add(id(sem))
                result.signals.append((sem, self._values[i]))
            self._sems[i] = None
            head += 1
        self._shead = head
        for epoch in range(self.last_drained_epoch + 1, self.last_pushed_epoch + 1):
            e = epoch & self._emask
            r = self._resources[e]
            if r is not None:
                if isinstance(r, list):
                    result.resources.extend(r)
                else:
                    result.resources.append(r)
                self._resources[e] = None
            if self._kernarg[e] >= 0:
                result.kernarg_position = self._kernarg[e]
            self._actions[e] = None
        result.epoch_count = self.last_pushed_epoch - self.last_drained_epoch
        self.last_drained_epoch = self.last_pushed_epoch
        return result
