"""The local CPU device backend behind ``local-task`` and ``local-sync``.

How an operation runs:

1. ``submit`` takes the next epoch of the op's queue and resolves its waits. Already
   reached waits cost nothing; otherwise a timepoint is registered on each pending
   semaphore and no thread waits (wait-before-signal across queues just works).
2. When the op is ready it runs *inline* on the thread that made it ready (the submitter,
   or the thread that signalled its last wait, through the semaphore trampoline) if it is
   cheap: barriers, transfers up to ``INLINE_TRANSFER_BYTES``, and everything on
   local-sync. Other work goes to the worker pool (local-task).
3. Completion signals the op's semaphores (or fails them with the error), drops what the op
   retained, and retires its epoch on its queue in order.

Invariants: an op is decided exactly once (``state``); ``_waiting`` holds exactly the ops
parked on semaphores so ``close`` can cancel them; no lock is held while user callbacks or
semaphore callbacks run.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from hal_core import (
    CancelledError,
    HalError,
    HostCallFlags,
    StatusCode,
)
from hal_core._semaphore import _report_callback_error
from hal_core._status import as_hal_error, error_for
from hal_core.backend import HostCallContext, QueueOp, QueueOpKind, resolve_waits

from .allocator import HostAllocatorBackend
from .queue_timeline import QueueTimeline
from .worker_pool import WorkerPool

INLINE_TRANSFER_BYTES = 64 * 1024

_WAITING = None
_READY = 1
_DONE = 2

_K = QueueOpKind


class LocalDeviceBackend:
    """One local CPU device. ``worker_count`` 0 makes it synchronous (local-sync)."""

    def __init__(self, name: str, queue_count: int, worker_count: int) -> None:
        self.name = name
        self.queue_count = queue_count
        self.allocator = HostAllocatorBackend()
        self.queues = [QueueTimeline(i) for i in range(queue_count)]
        self.workers = WorkerPool(worker_count, name) if worker_count else None
        self._lock = threading.Lock()
        self._waiting: set[QueueOp] = set()
        self._closing = False
        self._handlers = {
            _K.BARRIER: _run_barrier,
            _K.FILL: _run_fill,
            _K.UPDATE: _run_update,
            _K.COPY: _run_copy,
            _K.READ: _run_read,
            _K.WRITE: _run_write,
            _K.ALLOCA: self._run_alloca,
            _K.DEALLOCA: self._run_dealloca,
        }
        self.device: Any = None  # the public Device, set by the driver

    # -- queries -----------------------------------------------------------------------

    def query_i64(self, category: str, key: str) -> int:
        if category == "hal.dispatch" and key == "concurrency":
            return self.workers.count if self.workers else 1
        raise error_for(StatusCode.NOT_FOUND, f"unknown device query {category} :: {key}")

    # -- submission --------------------------------------------------------------------

    def submit(self, op: QueueOp) -> None:
        if self._closing:
            raise error_for(StatusCode.FAILED_PRECONDITION, f"device {self.name} is closing")
        op.epoch = self.queues[op.queue].begin()
        waits = op.waits
        if not waits:
            op.state = _READY
            self._dispatch(op)
            return
        with self._lock:
            self._waiting.add(op)
        resolve_waits(op, waits, self._on_ready, self._on_wait_failed)

    def _on_ready(self, op: QueueOp) -> None:
        with self._lock:
            if op.state is not _WAITING:
                return
            op.state = _READY
            self._waiting.discard(op)
        self._dispatch(op)

    def _on_wait_failed(self, op: QueueOp, error: HalError) -> None:
        with self._lock:
            if op.state is not _WAITING:
                return
            op.state = _READY
            self._waiting.discard(op)
        self._finish(op, error.clone())

    def _dispatch(self, op: QueueOp) -> None:
        kind = op.kind
        if self.workers is not None and (
            kind == _K.HOST_CALL
            or kind == _K.DISPATCH
            or kind == _K.EXECUTE
            or (kind != _K.BARRIER and getattr(op, "length", 0) > INLINE_TRANSFER_BYTES)
        ):
            self.workers.submit(self._execute, op)
        else:
            self._execute(op)

    def _execute(self, op: QueueOp) -> None:
        kind = op.kind
        if kind == _K.HOST_CALL:
            self._run_host_call(op)
            return
        try:
            handler = self._handlers.get(kind)
            if handler is None:
                raise error_for(
                    StatusCode.UNIMPLEMENTED,
                    f"{self.name} does not implement queue operation {QueueOpKind(kind).name}",
                )
            handler(op)
        except BaseException as exc:  # execution errors travel through the semaphores
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self._finish(op, as_hal_error(exc))
            return
        self._finish(op, None)

    def _finish(self, op: QueueOp, error: HalError | None) -> None:
        op.state = _DONE
        if error is None:
            for sem, value in op.signals:
                sem._signal_from_queue(value)
        else:
            for sem, _value in op.signals:
                sem.fail(error)
        op.retained = None
        op.data = None
        self.queues[op.queue].retire(op.epoch)

    # -- operations that need the device -----------------------------------------------

    def _run_alloca(self, op: QueueOp) -> None:
        _pool, params = op.extra
        storage, _type = self.allocator.allocate(params, op.length)
        op.target.commit(storage)

    def _run_dealloca(self, op: QueueOp) -> None:
        buffer = op.target
        if not buffer.is_committed:
            raise error_for(
                StatusCode.FAILED_PRECONDITION,
                "queue_dealloca of a buffer that is not committed (never allocated, or "
                "already deallocated)",
            )
        storage = buffer.decommit()
        storage.release()

    def _run_host_call(self, op: QueueOp) -> None:
        fn = op.data
        args = op.extra
        affinity = 1 << op.queue
        if op.flags & HostCallFlags.NON_BLOCKING:
            self._finish_host_call_signals(op)
            try:
                fn(args, HostCallContext(self.device, affinity, ()))
            except BaseException as exc:  # NON_BLOCKING errors are ignored by contract
                _report_callback_error(exc)
            self.queues[op.queue].retire(op.epoch)
            return
        context = HostCallContext(self.device, affinity, op.signals)
        try:
            result = fn(args, context)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self._finish(op, as_hal_error(exc))
            return
        if result is None or result == StatusCode.OK:
            self._finish(op, None)
        elif result == StatusCode.DEFERRED:
            # The callback owns the signals now; the queue's part is done.
            op.state = _DONE
            op.retained = None
            self.queues[op.queue].retire(op.epoch)
        elif isinstance(result, HalError):
            self._finish(op, result)
        else:
            try:
                code = StatusCode(result)
            except ValueError:
                code = StatusCode.INVALID_ARGUMENT
                self._finish(
                    op, error_for(code, f"host call returned {result!r}, not a status")
                )
                return
            self._finish(op, error_for(code, "host call returned an error status"))

    def _finish_host_call_signals(self, op: QueueOp) -> None:
        for sem, value in op.signals:
            sem._signal_from_queue(value)

    # -- lifetime ----------------------------------------------------------------------

    def close(self, timeout: float | None) -> None:
        with self._lock:
            self._closing = True
            waiting = list(self._waiting)
            self._waiting.clear()
            for op in waiting:
                op.state = _READY
        for op in waiting:
            self._finish(op, CancelledError("device closed while the operation was waiting"))
        if self.workers is not None:
            self.workers.shutdown(timeout)


# -- transfer handlers (host memory) -------------------------------------------------------


def _run_barrier(op: QueueOp) -> None:
    return None


_FILL_DTYPES = {2: np.uint16, 4: np.uint32}


def _run_fill(op: QueueOp) -> None:
    if not op.length:
        return
    dst = op.target.host_bytes(op.target_offset, op.length)
    data = op.data
    if len(data) == 1:
        dst.fill(data[0])
    else:
        dst.view(_FILL_DTYPES[len(data)]).fill(int.from_bytes(data, "little"))


def _run_update(op: QueueOp) -> None:
    if op.length:
        op.target.host_bytes(op.target_offset, op.length)[:] = op.data


def _run_copy(op: QueueOp) -> None:
    if op.length:
        src = op.source.host_bytes(op.source_offset, op.length)
        op.target.host_bytes(op.target_offset, op.length)[:] = src


def _run_read(op: QueueOp) -> None:
    if op.length:
        op.source.read_into(op.source_offset, op.target.host_bytes(op.target_offset, op.length))


def _run_write(op: QueueOp) -> None:
    if op.length:
        op.target.write_from(op.target_offset, op.source.host_bytes(op.source_offset, op.length))
