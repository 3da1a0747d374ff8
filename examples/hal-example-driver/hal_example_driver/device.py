"""``ExampleDeviceBackend``: how a queue operation runs on the example driver.

1. ``submit`` receives one validated ``QueueOp`` (hal_core's ``Device`` has checked every
   argument). An op with waits not yet reached parks in ``_waiting``; ``resolve_waits``
   calls back on whichever thread signals its last wait (or fails one). No thread ever
   blocks on a semaphore.
2. A ready op goes to the worker thread of its queue (``op.queue``); barriers need no
   work and complete at once on the readying thread.
3. The worker runs the op's handler and completes it: drops what the op retained, then
   signals its semaphores, or fails them with the error. Nothing escapes the worker.

Invariants: a parked op is decided exactly once, by whoever pops it from ``_waiting``
(one atomic dict operation); ``close`` competes for them the same way. No lock is held
while semaphores are signalled or user code runs.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, cast

from hal_core import (
    CancelledError,
    FailedPreconditionError,
    HalError,
    HostCallFlags,
    QueueOpKind,
    StatusCode,
    UnimplementedError,
)
from hal_core.backend import (
    AllocatorBackend,
    HostCallContext,
    QueueOp,
    fail_all,
    op_error,
    report_callback_error,
    resolve_waits,
    run_host_call,
    signal_all,
)

from .allocator import ExampleAllocatorBackend
from .operations import HANDLERS

_BARRIER = QueueOpKind.BARRIER
_HOST_CALL = QueueOpKind.HOST_CALL
_ALLOCA = QueueOpKind.ALLOCA
_NON_BLOCKING = int(HostCallFlags.NON_BLOCKING)
_NON_BLOCKING_CALL = "a NON_BLOCKING host call on the example driver"


class QueueWorker:
    """One queue's thread: runs ready ops in the order they became ready.

    ``put`` is thread-safe; after ``stop`` it refuses (returns False) so no op is left
    behind in an inbox nobody drains."""

    def __init__(self, name: str, execute: Callable[[QueueOp], None]) -> None:
        self._inbox: queue.SimpleQueue[QueueOp | None] = queue.SimpleQueue()
        self._execute = execute
        self._lock = threading.Lock()
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def put(self, op: QueueOp) -> bool:
        with self._lock:
            if self._stopped:
                return False
            self._inbox.put(op)
        return True

    def _run(self) -> None:
        get = self._inbox.get
        execute = self._execute
        while True:
            op = get()
            if op is None:
                return
            execute(op)  # never raises
            del op  # hold nothing of a finished op while idle

    def stop(self, timeout: float | None) -> None:
        """Run what is queued, then end the thread (joined unless called from it)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._inbox.put(None)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)


class ExampleDeviceBackend:
    """``DeviceBackend`` of one example device with ``queue_count`` queues."""

    def __init__(self, queue_count: int) -> None:
        self.queue_count = queue_count
        self.allocator: AllocatorBackend = ExampleAllocatorBackend()
        # The public Device: hal_core sets this attribute when it exists. Host calls
        # hand it to the user's callback in their HostCallContext.
        self.device: Any = None
        self._waiting: dict[QueueOp, bool] = {}
        self._closing = False
        self._workers = [
            QueueWorker(f"example-queue-{i}", self._execute) for i in range(queue_count)
        ]

    # -- submission -------------------------------------------------------------------

    def submit(self, op: QueueOp) -> None:
        """Queue ``op``; raises (queuing nothing) only for what it refuses outright."""
        if self._closing:
            raise FailedPreconditionError("the example device is closed")
        if op.kind == _ALLOCA and op.pool is not None:
            raise UnimplementedError(
                "the example driver allocates from its own heap only; pass pool=None to "
                "queue_alloca"
            )
        if not op.waits:
            self._ready(op)
            return
        self._waiting[op] = True
        if self._closing and self._waiting.pop(op, None) is not None:
            # ``close`` started after the check above and may have missed this op.
            raise FailedPreconditionError("the example device is closed")
        resolve_waits(op, op.waits, self._on_ready, self._on_wait_failed)

    def _on_ready(self, op: QueueOp) -> None:
        if self._waiting.pop(op, None) is not None:
            self._ready(op)

    def _on_wait_failed(self, op: QueueOp, error: HalError) -> None:
        if self._waiting.pop(op, None) is not None:
            # A copy: each failed semaphore chain gets its own exception object.
            self._complete(op, error.clone())

    def _ready(self, op: QueueOp) -> None:
        if op.kind == _BARRIER:
            self._complete(op, None)
        elif not self._workers[op.queue].put(op):
            self._complete(op, CancelledError("the example device closed before the op ran"))

    # -- execution (on the queue's worker thread) -----------------------------------------

    def _execute(self, op: QueueOp) -> None:
        """Run ``op`` and complete it. Never raises."""
        if op.kind == _HOST_CALL:
            self._run_host_call(op)
            return
        try:
            handler = HANDLERS.get(op.kind)
            if handler is None:
                raise UnimplementedError(f"the example driver does not run {op.kind.name} ops")
            handler(op)
        except BaseException as exc:  # execution errors travel through the semaphores
            self._complete(op, op_error(exc))
            return
        self._complete(op, None)

    def _run_host_call(self, op: QueueOp) -> None:
        """``op.callback(op.args, context)`` on this worker.

        Blocking: ``run_host_call`` gives the outcome (signal, DEFERRED or the error) and
        never raises. NON_BLOCKING: nobody waits for the call, so the signals go first and
        whatever it raises is reported through ``sys.unraisablehook``, never re-raised."""
        # Both are set for every HOST_CALL op (None only once the call is done).
        fn = cast(Callable[[tuple, HostCallContext], Any], op.callback)
        args = cast(tuple, op.args)
        affinity = 1 << op.queue
        if op.flags & _NON_BLOCKING:
            self._complete(op, None)
            try:
                fn(args, HostCallContext(self.device, affinity, ()))
            except BaseException as exc:
                report_callback_error(exc, _NON_BLOCKING_CALL, fn)
            return
        outcome = run_host_call(fn, args, HostCallContext(self.device, affinity, op.signals))
        if outcome is StatusCode.DEFERRED:
            op.retained = op.callback = op.args = None  # the callback owns the signals now
        else:
            self._complete(op, outcome)

    def _complete(self, op: QueueOp, error: HalError | None) -> None:
        """Release what the op holds, then publish. The caller holds no lock."""
        # Dropped before the signals publish, so a waiter that wakes sees them released
        # (the command buffer, its binding table, a host call's callable, update bytes).
        op.retained = op.program = op.callback = op.args = op.payload = None
        op.bindings = ()
        if error is None:
            signal_all(op.signals)
        else:
            fail_all(op.signals, error)

    # -- lifetime -----------------------------------------------------------------------

    def close(self, timeout: float | None) -> None:
        """Fail parked ops with CANCELLED, let queued ones run, stop the workers."""
        self._closing = True
        for op in list(self._waiting):
            if self._waiting.pop(op, None) is not None:
                self._complete(op, CancelledError("the example device closed while the op waited"))
        for worker in self._workers:
            worker.stop(timeout)
