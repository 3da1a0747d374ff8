"""Per-queue epochs that retire in order.

Each operation takes the next epoch of its queue at submit. Operations may complete out of
order (ordering is only what semaphores say), but the queue's ``retired`` epoch advances
only over a contiguous prefix: "retired = N" means every operation of this queue up to N is
done. That is the property frontier axes rely on.
"""

from __future__ import annotations

import itertools
import threading
from typing import Callable


class QueueTimeline:
    __slots__ = ("index", "retired", "_next", "_done", "_lock", "on_retire")

    def __init__(self, index: int) -> None:
        self.index = index
        self.retired = 0
        self._next = itertools.count(1)
        self._done: set[int] = set()
        self._lock = threading.Lock()
        self.on_retire: Callable[[int], None] | None = None

    def begin(self) -> int:
        """Reserve the next epoch (atomic under the GIL)."""
        return next(self._next)

    def retire(self, epoch: int) -> None:
        """Mark ``epoch`` complete and advance the in-order watermark."""
        lock = self._lock
        lock.acquire()  # explicit acquire/release: cheaper than ``with`` on this hot path
        if epoch != self.retired + 1:
            self._done.add(epoch)
            lock.release()
            return
        done = self._done
        while epoch + 1 in done:
            epoch += 1
            done.discard(epoch)
        self.retired = epoch
        notify = self.on_retire
        lock.release()
        if notify is not None:
            notify(epoch)
