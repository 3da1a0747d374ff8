"""The completion thread of one GPU: waits for stream work and completes its ops.

Invariants: every op whose work was put on a stream is handed here exactly once
(``hand_over``), as an item whose first fields are the event recorded after its work, its
lane (the queue whose stream it ran on) and its in-flight entries. The event is recorded
under the hand-over lock, so on every stream the items arrive in the order their events
were recorded. The thread takes the items in hand-over order and completes each
(``finish``) in that order, once its event is known to be reached; it blocks in
``cuEventSynchronize`` only on the oldest item not yet known reached (events are created
with ``CU_EVENT_BLOCKING_SYNC``, so the thread sleeps in the driver instead of spinning; no
sleep loop or poll exists). Waiting in hand-over order never deadlocks: stream work never
waits on the host, so every recorded event is reached without help.

Coalescing: the thread drains its inbox in batches. A stream runs its work in order, so
when an event of a lane is reached, every event recorded before it on that lane is
reached too, and the ops before it complete without asking the driver about their own
events. So per batch and lane the thread asks ``cuEventQuery`` about the lane's latest
event, and when that is not reached yet, about the one before it (the GPU is usually at
most an op or two behind a submitting host), then completes everything up to the reached
one without a query. Anything else reports about the op's own event, as without
coalescing: a query answering an error (a kernel fault, sticky in CUDA) stops the
probing, and the remaining ops of that lane ask about their own events, so a fault fails
the same ops it fails one by one. After each blocking wait the lane may be probed once
more (the GPU has moved on). A burst of finished work therefore costs one wake-up and a
query or two per lane, not a query per op.

An op's completion (``finish``) runs on this thread holding no lock; it signals
semaphores, which may run waiters' callbacks that queue more work (never a blocking
wait). Events go back to the pool after ``finish``: a submitter that read an event from
the in-flight table before the op completed never finds it re-recorded by later work
while the value it waits for is still unpublished.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from hal_core import HalError
from hal_core.backend import op_error, report_callback_error

from .cuda_api import CudaContext, check, cuda_error

CU_EVENT_BLOCKING_SYNC = 0x1
CU_EVENT_DISABLE_TIMING = 0x2
CUDA_ERROR_NOT_READY = 600

PROBES = 2
"""Queries per lane and batch about later events before each op asks about its own."""

_COMPLETING = "completing a CUDA queue operation"

Finish = Callable[[tuple, "HalError | None"], None]
"""``finish(item, fault)``: ``item`` as handed over; ``fault`` is the error waiting for
its event reported (a kernel fault), else None. Never raises."""


class EventPool:
    """Reusable events of one context, created with ``flags``: blocking-sync without timing
    for completion, 0 for the timing events of profiling. ``get``/``put`` are thread-safe
    (list ``pop``/``append`` are atomic; creation records the event under the lock).
    ``free`` is the list of idle events: a hot path may ``free.pop()`` itself and call
    ``get`` only when it is empty."""

    def __init__(
        self, ctx: CudaContext, flags: int = CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING
    ) -> None:
        self.ctx = ctx
        self.flags = flags
        self.free: list[Any] = []
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        try:
            return self.free.pop()
        except IndexError:
            pass
        event = check(self.ctx.api.cuEventCreate(self.flags), "cuEventCreate")
        with self._lock:
            self._all.append(event)
        return event

    def put(self, event: Any) -> None:
        self.free.append(event)

    def destroy(self) -> None:
        """Destroy every event (no op that holds one is still in flight)."""
        api = self.ctx.api
        with self._lock:
            events, self._all = self._all, []
        for event in events:
            api.cuEventDestroy(event)
        self.free.clear()


class CompletionThread:
    """Completes stream work in hand-over order, coalescing per lane (module docstring).
    ``hand_over`` is thread-safe; after ``stop`` it refuses."""

    def __init__(
        self, ctx: CudaContext, events: EventPool, name: str, finish: Finish, api: Any = None
    ) -> None:
        """``finish``: completes one item. ``api``: what to record and query events
        through (``cuda_api.hot_calls``, which keeps the GIL for those calls; ``ctx.api``
        by default). Waiting always goes through ``ctx.api``, which releases the GIL while
        the thread sleeps in the driver."""
        self.ctx = ctx
        self.api = ctx.api if api is None else api
        self.events = events
        self._finish = finish
        self._record = self.api.cuEventRecord
        self._inbox: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._put = self._inbox.put
        self._lock = threading.Lock()
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def hand_over(self, stream: Any, item: tuple, inflight: dict) -> Any:
        """Record ``item``'s event on ``stream``, publish its in-flight entries in
        ``inflight`` and hand it over: ``finish(item, fault)`` runs once the event is
        reached. ``item`` is ``(event, lane, entries, ...)``: an event of ``events``, the
        stream's lane (any hashable naming that stream) and None, one in-flight entry
        ``(value, event, lane, semaphore)`` or a list of them, each published as
        ``inflight[semaphore]`` (after the record: a reader never finds an entry whose
        event is not recorded yet; before the hand-over: ``finish`` always finds it).

        Returns the record's CUresult: 0 when handed over, an error when the record
        failed (nothing published or handed over), or None when the thread has stopped
        (nothing recorded). Raises what the record call raises. The lock keeps each
        lane's hand-over order its record order; it is held only across the record
        (never blocking), the dictionary stores and the inbox put."""
        lock = self._lock
        lock.acquire()
        try:
            if self._stopped:
                return None
            err = self._record(item[0], stream)[0]
            if not err:
                entries = item[2]
                if entries is not None:
                    if entries.__class__ is tuple:
                        inflight[entries[3]] = entries
                    else:
                        for entry in entries:
                            inflight[entry[3]] = entry
                self._put(item)
            return err
        finally:
            lock.release()

    def stop(self, timeout: float | None) -> None:
        """Complete what was handed over, then end the thread (joined unless called from
        it)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._inbox.put(None)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _run(self) -> None:
        inbox = self._inbox
        get = inbox.get
        waiting = inbox.qsize
        take = inbox.get_nowait
        try:
            self.ctx.make_current()
        except BaseException as exc:  # the context is gone: fail whatever arrives
            report_callback_error(exc, "making the CUDA context current", self._run)
        while True:
            item = get()
            if item is None:
                return
            more = waiting()
            if not more:
                self._complete_one(item)
                item = None
                continue
            batch: list[tuple] = [item]
            item = None
            append = batch.append
            stopping = False
            for _ in range(more):
                taken = take()
                if taken is None:  # stop's marker is the last item ever put
                    stopping = True
                else:
                    append(taken)
            del taken
            self._complete_batch(batch)
            del batch, append
            if stopping:
                return

    def _reach(self, event: Any) -> tuple[HalError | None, bool]:
        """Wait for ``event`` itself: (the fault its wait reported or None, whether the
        thread slept in the driver). Never raises."""
        slept = False
        try:
            # Work that is already done costs no sleep: only block (in the driver,
            # woken by the GPU) on work still running.
            err = self.api.cuEventQuery(event)[0]
            if err == CUDA_ERROR_NOT_READY:
                slept = True
                err = self.ctx.api.cuEventSynchronize(event)[0]
            if err:
                return cuda_error(err, "stream work (cuEventSynchronize)"), slept
        except BaseException as exc:
            return op_error(exc), slept
        return None, slept

    def _finish_item(self, item: tuple, fault: HalError | None) -> None:
        try:
            self._finish(item, fault)
        except BaseException as exc:  # finish never raises; never let it kill us
            report_callback_error(exc, _COMPLETING, self._finish)
        if fault is None:
            self.events.free.append(item[0])

    def _complete_one(self, item: tuple) -> None:
        fault, _slept = self._reach(item[0])
        self._finish_item(item, fault)

    def _complete_batch(self, batch: list[tuple]) -> None:
        """Complete ``batch`` (hand-over order) with the fewest event queries: see the
        module docstring. Per lane: ``reached`` is the highest batch index known reached
        without a fault; ``positions`` the lane's batch indices, ascending; ``top`` how
        many of them are still candidates for a probe (those from it on answered not
        ready), -1 once a query reported a fault (no more probes); ``budget`` the probes
        left."""
        lanes: dict[Any, _Lane] = {}
        index = 0
        for item in batch:
            state = lanes.get(item[1])
            if state is None:
                lanes[item[1]] = _Lane(index)
            else:
                state.positions.append(index)
            index += 1
        query = self.api.cuEventQuery
        finish = self._finish
        pool = self.events.free.append
        index = 0
        for item in batch:
            state = lanes[item[1]]
            if state.reached < index and state.budget:
                positions = state.positions
                top = state.top
                if top < 0:
                    top = len(positions)
                while state.budget and top and positions[top - 1] > index:
                    state.budget -= 1
                    top -= 1
                    try:
                        err = query(batch[positions[top]][0])[0]
                    except BaseException:
                        err = -1  # let the op's own wait report it
                    if not err:
                        state.reached = positions[top]
                        break
                    if err != CUDA_ERROR_NOT_READY:
                        state.faulted()
                        break
                state.top = top
            if state.reached >= index:
                try:
                    finish(item, None)
                except BaseException as exc:  # finish never raises; never let it kill us
                    report_callback_error(exc, _COMPLETING, finish)
                pool(item[0])
            else:
                fault, slept = self._reach(item[0])
                if fault is not None:
                    state.faulted()
                elif slept and not state.budget and not state.fault:
                    # The GPU moved on while the thread slept: one more probe, from the
                    # lane's latest event again.
                    state.budget = 1
                    state.top = -1
                self._finish_item(item, fault)
            index += 1


class _Lane:
    """One lane's probing state within a batch (``_complete_batch``)."""

    __slots__ = ("positions", "reached", "top", "budget", "fault")

    def __init__(self, first: int) -> None:
        self.positions = [first]
        self.reached = -1
        self.top = -1  # -1: from the lane's latest event
        self.budget = PROBES
        self.fault = False

    def faulted(self) -> None:
        """A query reported an error: every later op of the lane asks about its own
        event (as it would without coalescing)."""
        self.fault = True
        self.budget = 0
