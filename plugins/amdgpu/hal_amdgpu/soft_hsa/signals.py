"""HSA signals of the software agent: 64-byte ``amd_signal_t`` records in host memory.

A signal handle is the address of its record; the value lives at byte 8. Stores and
read-modify-writes happen under the system's condition lock and wake every waiter, so a
waiter re-checks its condition under that lock and cannot miss a store (no polling, no
sleeps). Plain loads read the aligned int64 directly, as hardware would.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from .memory import SoftMemory

__all__ = ["SoftSignals", "SIGNAL_KIND_USER", "SIGNAL_KIND_DOORBELL"]

SIGNAL_KIND_USER = 1
SIGNAL_KIND_DOORBELL = -1
_VALUE_WORD = 1  # int64 index of ``value`` in the record


class SoftSignals:
    def __init__(self, memory: SoftMemory, cond: threading.Condition) -> None:
        self._memory = memory
        self.cond = cond
        self._records: dict[int, np.ndarray] = {}

    def create(self, initial: int, kind: int = SIGNAL_KIND_USER) -> int:
        # Signal records are visible to every agent (ROCr keeps them in system memory),
        # so a command processor can poll a value word (PM4 WAIT_REG_MEM64).
        alloc = self._memory.allocate(64, 64, accessible_by_all=True)
        words = alloc.array.view(np.int64)
        words[0] = kind
        words[_VALUE_WORD] = initial
        with self.cond:
            self._records[alloc.address] = words
        return alloc.address

    def destroy(self, handle: int) -> bool:
        with self.cond:
            words = self._records.pop(handle, None)
        if words is None:
            return False
        self._memory.free(handle)
        return True

    def words(self, handle: int) -> np.ndarray | None:
        return self._records.get(handle)

    def is_valid(self, handle: int) -> bool:
        return handle in self._records

    def load(self, handle: int) -> int:
        return int(self._records[handle][_VALUE_WORD])

    def store(self, handle: int, value: int) -> None:
        words = self._records[handle]
        with self.cond:
            words[_VALUE_WORD] = value
            self.cond.notify_all()

    def add(self, handle: int, delta: int) -> int:
        words = self._records[handle]
        with self.cond:
            value = int(words[_VALUE_WORD]) + delta
            words[_VALUE_WORD] = value
            self.cond.notify_all()
        return value

    @staticmethod
    def satisfied(value: int, condition: int, compare: int) -> bool:
        if condition == 0:
            return value == compare
        if condition == 1:
            return value != compare
        if condition == 2:
            return value < compare
        return value >= compare

    def wait_any(
        self, handles: list[int], conditions: list[int], compares: list[int], timeout_ns: int | None
    ) -> tuple[int, int]:
        """``(index, value)`` of the first satisfied signal, or ``(-1, value of the
        first)`` at timeout. Blocks on the condition variable."""
        deadline = None if timeout_ns is None else time.monotonic() + timeout_ns / 1e9
        records = [self._records[h] for h in handles]
        with self.cond:
            while True:
                for i, words in enumerate(records):
                    value = int(words[_VALUE_WORD])
                    if self.satisfied(value, conditions[i], compares[i]):
                        return i, value
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return -1, int(records[0][_VALUE_WORD])
                self.cond.wait(remaining)
