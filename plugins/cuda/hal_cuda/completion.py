"""The completion thread of one GPU: waits for stream work and completes its ops.

Invariants: every op whose work was put on a stream is handed here exactly once, with
the event recorded after its work. The thread takes the events in hand-over order, asks
``cuEventQuery`` whether each is reached and, when it is not, blocks in
``cuEventSynchronize`` (events are created with ``CU_EVENT_BLOCKING_SYNC``, so the thread
sleeps in the driver instead of spinning; no sleep loop or poll exists). Querying first
means a burst of finished work costs one wake-up, not one per op. Waiting in hand-over
order never deadlocks: stream work never waits on the host, so every recorded event is
reached without help. An op's completion (``finish``) runs on this thread holding no
lock; it signals semaphores, which may run waiters' callbacks that queue more work (never
a blocking wait). A failing wait (a kernel fault, sticky in CUDA) fails that op with the
fault; later ops see the same sticky error from the driver and fail with it too.
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

Finish = Callable[[Any, Any, "HalError | None"], None]
"""``finish(op, payload, fault)``: ``fault`` is the error waiting for the event reported
(a kernel fault), else None."""


class EventPool:
    """Reusable events of one context, created with ``flags``: blocking-sync without timing
    for completion, 0 for the timing events of profiling. ``get``/``put`` are thread-safe
    (list ``pop``/``append`` are atomic; creation records the event under the lock)."""

    def __init__(
        self, ctx: CudaContext, flags: int = CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING
    ) -> None:
        self.ctx = ctx
        self.flags = flags
        self._free: list[Any] = []
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        try:
            return self._free.pop()
        except IndexError:
            pass
        event = check(self.ctx.api.cuEventCreate(self.flags), "cuEventCreate")
        with self._lock:
            self._all.append(event)
        return event

    def put(self, event: Any) -> None:
        self._free.append(event)

    def destroy(self) -> None:
        """Destroy every event (no op that holds one is still in flight)."""
        api = self.ctx.api
        with self._lock:
            events, self._all = self._all, []
        for event in events:
            api.cuEventDestroy(event)
        self._free.clear()


class CompletionThread:
    """Completes stream work in hand-over order. ``put`` is thread-safe; after ``stop``
    it refuses (returns False)."""

    def __init__(self, ctx: CudaContext, events: EventPool, name: str, api: Any = None) -> None:
        """``api``: what to query events through (``cuda_api.hot_calls``, which keeps the
        GIL for the query; ``ctx.api`` by default). Waiting always goes through ``ctx.api``,
        which releases the GIL while the thread sleeps in the driver."""
        self.ctx = ctx
        self.api = ctx.api if api is None else api
        self.events = events
        self._inbox: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def put(self, event: Any, op: Any, payload: Any, finish: Finish) -> bool:
        """Complete ``op`` with ``finish(op, payload, fault)`` once ``event`` is reached."""
        with self._lock:
            if self._stopped:
                return False
            self._inbox.put((event, op, payload, finish))
        return True

    def _run(self) -> None:
        get = self._inbox.get
        sync = self.ctx.api.cuEventSynchronize
        query = self.api.cuEventQuery
        put_event = self.events.put
        try:
            self.ctx.make_current()
        except BaseException as exc:  # the context is gone: fail whatever arrives
            report_callback_error(exc, "making the CUDA context current", self._run)
        while True:
            item = get()
            if item is None:
                return
            event, op, payload, finish = item
            item = None
            fault: HalError | None = None
            try:
                # Work that is already done costs no sleep: only block (in the driver,
                # woken by the GPU) on work still running.
                err = query(event)[0]
                if err == CUDA_ERROR_NOT_READY:
                    err = sync(event)[0]
                if err:
                    fault = cuda_error(err, "stream work (cuEventSynchronize)")
                else:
                    put_event(event)
            except BaseException as exc:
                fault = op_error(exc)
            try:
                finish(op, payload, fault)
            except BaseException as exc:  # finish never raises; never let it kill us
                report_callback_error(exc, "completing a CUDA queue operation", finish)
            del event, op, payload, finish, fault

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
