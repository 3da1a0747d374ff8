"""Per-queue epochs that retire in order.

Each operation takes the next epoch of its queue at submit. Operations may complete out of
order (ordering is only what semaphores say), but the queue's ``retired`` epoch advances
only over a contiguous prefix: "retired = N" means every operation of this queue up to N is
done. That is the property frontier axes rely on.

A timeline bound to frontier-tracker axes (``bind_axis``) publishes each new watermark into
the trackers' ``published_epochs`` while holding its lock (so publications never go
backwards), then advances a tracker only when one of its waiters needs the epoch: a queue
nobody waits on pays one dict store per retire.

A backend tier type (``hal_core.backend.QueueTimeline``): ``complete_op`` (see
``_queue_fast_paths``) signals an op's semaphores and retires its epoch in one native call
when the extension is built, with ``retire`` below as its reference.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable


def _count_reference(start: int) -> Callable[[], int]:
    """``begin`` without the extension: ``itertools.count(start).__next__``."""
    return itertools.count(start).__next__


_new_counter: Callable[[int], Callable[[], int]] = _count_reference


def bind_native_epochs(counter_type: Callable[[int], Callable[[], int]] | None) -> None:
    """Timelines made from now on take their ``begin`` from ``counter_type(1)`` (the queue
    extension's ``EpochCounter``), or the ``itertools.count`` reference when None."""
    global _new_counter
    _new_counter = counter_type if counter_type is not None else _count_reference


class QueueTimeline:
    """The epochs of one queue: ``begin`` hands out the next, ``retire`` marks one done and
    advances ``retired`` over the contiguous prefix. Thread-safe."""

    __slots__ = (
        "index",
        "retired",
        "begin",
        "_done",
        "_lock",
        "on_retire",
        "_pub",
        "_axis",
        "_axis_state",
        "_tracker",
        "_more",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.retired = 0
        # ``begin()`` reserves the next epoch: one C call, atomic under the GIL, that
        # submitters may also keep and call directly; the native ``EpochCounter`` when the
        # queue extension is loaded (its alloca path takes epochs from it without a call),
        # else ``itertools.count``'s ``__next__`` (its reference).
        self.begin: Callable[[], int] = _new_counter(1)
        self._done: set[int] = set()
        self._lock = threading.Lock()
        self.on_retire: Callable[[int], None] | None = None
        # The primary bound axis (the device's own tracker) as flat fields, so the
        # common case costs one dict store and one comparison per retire; further
        # bindings (a device group's tracker) in ``_more``.
        self._pub: dict[int, int] | None = None
        self._axis = 0
        self._axis_state: Any = None
        self._tracker: Any = None
        self._more: tuple[tuple[Any, int, Any, Any], ...] = ()

    def bind_axis(self, tracker: Any, axis: int) -> None:
        """Publish this queue's retired epochs as ``axis`` of ``tracker`` (registered)."""
        entry = (tracker.published_epochs, axis, tracker.axis_state(axis), tracker)
        with self._lock:
            if self._pub is None:
                self._pub, self._axis, self._axis_state, self._tracker = entry
            else:
                self._more = self._more + (entry,)
            if self.retired and entry[0].get(axis, 0) < self.retired:
                entry[0][axis] = self.retired

    def unbind_axis(self, tracker: Any) -> None:
        """Stop publishing to ``tracker`` (a secondary binding)."""
        with self._lock:
            self._more = tuple(e for e in self._more if e[3] is not tracker)

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
        pub = self._pub
        if pub is not None:
            pub[self._axis] = epoch  # published under the lock: never goes backwards
            more = self._more
            if more:
                for entry in more:
                    entry[0][entry[1]] = epoch
        notify = self.on_retire
        lock.release()
        if pub is not None:
            if self._axis_state.min_pending <= epoch:
                self._tracker.advance(self._axis, epoch)
            if more:
                for _pub, axis, state, tracker in more:
                    if state.min_pending <= epoch:
                        tracker.advance(axis, epoch)
        if notify is not None:
            notify(epoch)
