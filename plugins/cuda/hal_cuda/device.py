"""``CudaDeviceBackend``: one GPU, its queues as CUDA streams.

How a queue operation runs:

1. ``submit`` receives one validated ``QueueOp``. An op with waits not yet reached parks
   in ``_waiting``; ``resolve_waits`` calls back on whichever thread signals its last
   wait (or fails one). No thread blocks on a semaphore: waits are resolved on the host
   (host deferral), and the op's work is put on the GPU once they are reached.
2. A ready op whose work is stream work (fill, update, copy, dispatch, execute) is put
   on its queue's stream at once, on the readying thread (enqueueing never blocks), an
   event is recorded after it, and the completion thread (``completion.py``) completes
   it when the event is reached. Barriers complete at once. Host calls, file reads and
   writes, alloca/dealloca and programs that read a workgroup count from a buffer go to
   the queue's worker thread, which may block.
3. Completing drops what the op holds, then signals its semaphores or fails them.
   Nothing escapes a HAL thread: errors become the op's failure, and a user callback's
   exception is reported through ``sys.unraisablehook``.

Invariants: a parked op is decided exactly once, by whoever pops it from ``_waiting``;
``close`` competes for them the same way. No lock is held while semaphores are signalled,
user code runs, or a thread waits on the GPU.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, cast

import numpy as np

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
    HostCallContext,
    QueueOp,
    buffer_storage,
    commit_buffer,
    decommit_buffer,
    fail_all,
    op_error,
    report_callback_error,
    resolve_waits,
    run_host_call,
    signal_all,
)

from . import executable as executables
from .completion import CompletionThread, EventPool
from .cuda_api import CudaContext, check, cuda_error
from .memory import CudaAllocatorBackend, CudaStorage, allocate_device, allocate_host
from .stream_ops import (
    CudaProgram,
    address_of,
    enqueue_copy,
    enqueue_fill,
    enqueue_program,
    enqueue_update,
)

CU_STREAM_NON_BLOCKING = 0x1
STAGING_BYTES = 8 << 20
"""Pinned host memory each worker stages file reads and writes through."""

_BARRIER = QueueOpKind.BARRIER
_HOST_CALL = QueueOpKind.HOST_CALL
_ALLOCA = QueueOpKind.ALLOCA
_EXECUTE = QueueOpKind.EXECUTE
_DISPATCH = QueueOpKind.DISPATCH
_NON_BLOCKING = int(HostCallFlags.NON_BLOCKING)

_STREAM_WORK: dict[int, Callable[[Any, QueueOp, Any], None]] = {
    QueueOpKind.FILL: enqueue_fill,
    QueueOpKind.UPDATE: enqueue_update,
    QueueOpKind.COPY: enqueue_copy,
    QueueOpKind.DISPATCH: enqueue_program,
    QueueOpKind.EXECUTE: enqueue_program,
}


class QueueWorker:
    """One queue's host thread: runs ready host-side ops in the order they became
    ready. ``put`` is thread-safe; after ``stop`` it refuses (returns False)."""

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
            del op

    def stop(self, timeout: float | None) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._inbox.put(None)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)


class CudaDeviceBackend:
    """``DeviceBackend`` of one GPU with ``queue_count`` streams."""

    def __init__(self, ctx: CudaContext, queue_count: int, device_memory: int, name: str) -> None:
        self.ctx = ctx
        self.api = ctx.api
        self.name = name
        self.queue_count = queue_count
        self.allocator = CudaAllocatorBackend(ctx, device_memory)
        # The public Device: hal_core sets it; host calls hand it to their callbacks.
        self.device: Any = None
        self._waiting: dict[QueueOp, bool] = {}
        self._closing = False
        self._closed = False
        ctx.make_current()
        self.streams = [
            check(self.api.cuStreamCreate(CU_STREAM_NON_BLOCKING), "cuStreamCreate")
            for _ in range(queue_count)
        ]
        self.events = EventPool(ctx)
        self.completion = CompletionThread(ctx, self.events, f"cuda{ctx.ordinal}-completion")
        self._staging: list[CudaStorage | None] = [None] * queue_count
        self._workers = [
            QueueWorker(f"cuda{ctx.ordinal}-queue{i}", self._execute_on_worker)
            for i in range(queue_count)
        ]

    # -- capabilities -------------------------------------------------------------------

    def executable_formats(self) -> tuple[str, ...]:
        return executables.FORMATS

    def prepare_executable(self, format: str, data: Any, params: dict[str, Any]) -> Any:
        return executables.prepare(self.ctx, format, data, params)

    def finalize_command_buffer(self, commands: list, mode: int, binding_capacity: int) -> Any:
        """The stream-replay program of a recording (launch limits checked here, at the
        call)."""
        return CudaProgram(commands)

    def flush(self, queue_mask: int) -> None:
        """Nothing is batched: stream work is submitted to the GPU when enqueued."""

    # -- submission -------------------------------------------------------------------

    def submit(self, op: QueueOp) -> None:
        """Queue ``op``; raises (queuing nothing) only for what it refuses outright."""
        if self._closing:
            raise FailedPreconditionError("the cuda device is closed")
        if op.kind == _ALLOCA and op.pool is not None:
            raise UnimplementedError(
                "the cuda driver allocates queue_alloca memory with cuMemAlloc only; "
                "allocation pools are not built yet: pass pool=None"
            )
        if not op.waits:
            self._ready(op)
            return
        self._waiting[op] = True
        if self._closing and self._waiting.pop(op, None) is not None:
            raise FailedPreconditionError("the cuda device is closed")
        resolve_waits(op, op.waits, self._on_ready, self._on_wait_failed)

    def _on_ready(self, op: QueueOp) -> None:
        if self._waiting.pop(op, None) is not None:
            self._ready(op)

    def _on_wait_failed(self, op: QueueOp, error: HalError) -> None:
        if self._waiting.pop(op, None) is not None:
            self._complete(op, error.clone())

    def _ready(self, op: QueueOp) -> None:
        kind = op.kind
        if kind == _BARRIER:
            self._complete(op, None)
            return
        work = _STREAM_WORK.get(kind)
        if work is not None and not (
            (kind == _EXECUTE or kind == _DISPATCH) and op.program.needs_host_sync
        ):
            self._enqueue(op, work)
        elif not self._workers[op.queue].put(op):
            self._complete(op, CancelledError("the cuda device closed before the op ran"))

    def _enqueue(self, op: QueueOp, work: Callable[[Any, QueueOp, Any], None]) -> None:
        """Put ``op``'s work on its stream and hand it to the completion thread. Never
        raises: an error fails the op (after the work already queued is done)."""
        error: HalError | None = None
        api = self.api
        try:
            self.ctx.make_current()
            stream = self.streams[op.queue]
            work(api, op, stream)
        except BaseException as exc:
            error = op_error(exc)
            stream = self.streams[op.queue]
        try:
            event = self.events.get()
            err = api.cuEventRecord(event, stream)[0]
        except BaseException as exc:
            self._complete(op, error or op_error(exc))
            return
        if err:
            self._complete(op, error or cuda_error(err, "cuEventRecord"))
        elif not self.completion.put(event, op, error, self._complete):
            self._complete(op, CancelledError("the cuda device closed before the op ran"))

    # -- host-side ops (on the queue's worker thread) ----------------------------------

    def _execute_on_worker(self, op: QueueOp) -> None:
        """Run a host-side op and complete it. Never raises."""
        if op.kind == _HOST_CALL:
            self._run_host_call(op)
            return
        try:
            self.ctx.make_current()
            self._run_host_side(op)
        except BaseException as exc:
            self._complete(op, op_error(exc))
            return
        self._complete(op, None)

    def _run_host_side(self, op: QueueOp) -> None:
        kind = op.kind
        if kind == QueueOpKind.READ:
            self._read_file(op)
        elif kind == QueueOpKind.WRITE:
            self._write_file(op)
        elif kind == _ALLOCA:
            params = op.params
            if self.allocator.wants_host(params):
                storage = allocate_host(self.ctx, op.length)
            else:
                storage = allocate_device(self.ctx, op.length, zero=False)
            commit_buffer(op.target, storage)
        elif kind == QueueOpKind.DEALLOCA:
            storage = decommit_buffer(op.target)
            if storage is not None:
                storage.release()
        elif kind == _EXECUTE or kind == _DISPATCH:
            stream = self.streams[op.queue]
            op.program.run(self.api, op.bindings or (), stream)
            check(self.api.cuStreamSynchronize(stream), "cuStreamSynchronize")
        else:
            raise UnimplementedError(f"the cuda driver does not run {op.kind.name} ops")

    def _staging_for(self, queue_index: int) -> tuple[int, np.ndarray]:
        """The worker's pinned staging memory: (host address, uint8 view)."""
        staging = self._staging[queue_index]
        if staging is None:
            staging = allocate_host(self.ctx, STAGING_BYTES)
            self._staging[queue_index] = staging
        return staging.host_address, cast(np.ndarray, staging.host_array)

    def _read_file(self, op: QueueOp) -> None:
        """File -> buffer, through the worker's pinned staging memory (or straight into
        a host-visible buffer)."""
        storage = buffer_storage(op.target)
        if storage.host_array is not None:
            start = op.target.byte_offset + op.target_offset
            op.source.read_into(op.source_offset, storage.host_array[start : start + op.length])
            return
        host, view = self._staging_for(op.queue)
        target = address_of(op.target, op.target_offset)
        done = 0
        while done < op.length:
            n = min(STAGING_BYTES, op.length - done)
            op.source.read_into(op.source_offset + done, view[:n])
            check(self.api.cuMemcpyHtoD(target + done, host, n), "cuMemcpyHtoD")
            done += n

    def _write_file(self, op: QueueOp) -> None:
        """Buffer -> file, through the worker's pinned staging memory."""
        storage = buffer_storage(op.source)
        if storage.host_array is not None:
            start = op.source.byte_offset + op.source_offset
            op.target.write_from(op.target_offset, storage.host_array[start : start + op.length])
            return
        host, view = self._staging_for(op.queue)
        source = address_of(op.source, op.source_offset)
        done = 0
        while done < op.length:
            n = min(STAGING_BYTES, op.length - done)
            check(self.api.cuMemcpyDtoH(host, source + done, n), "cuMemcpyDtoH")
            op.target.write_from(op.target_offset + done, view[:n])
            done += n

    def _run_host_call(self, op: QueueOp) -> None:
        """``op.callback(op.args, context)`` on this worker (see the example driver: the
        one set of host-call semantics of ``run_host_call``)."""
        fn = cast(Callable[[tuple, HostCallContext], Any], op.callback)
        args = cast(tuple, op.args)
        affinity = 1 << op.queue
        if op.flags & _NON_BLOCKING:
            self._complete(op, None)
            try:
                fn(args, HostCallContext(self.device, affinity, ()))
            except BaseException as exc:
                report_callback_error(exc, "a NON_BLOCKING host call on the cuda driver", fn)
            return
        outcome = run_host_call(fn, args, HostCallContext(self.device, affinity, op.signals))
        if outcome is StatusCode.DEFERRED:
            op.retained = op.callback = op.args = None
        else:
            self._complete(op, outcome)

    def _complete(self, op: QueueOp, error: HalError | None) -> None:
        """Release what the op holds, then publish. The caller holds no lock."""
        op.retained = op.program = op.callback = op.args = op.payload = None
        op.bindings = ()
        if error is None:
            signal_all(op.signals)
        else:
            fail_all(op.signals, error)

    # -- lifetime -----------------------------------------------------------------------

    def close(self, timeout: float | None) -> None:
        """Fail parked ops CANCELLED, let queued work finish, stop the threads, release
        the streams and events. The GPU's primary context stays retained by the driver
        (memory still referenced by live buffers is freed when they go)."""
        self._closing = True
        for op in list(self._waiting):
            if self._waiting.pop(op, None) is not None:
                self._complete(op, CancelledError("the cuda device closed while the op waited"))
        for worker in self._workers:
            worker.stop(timeout)
        self.completion.stop(timeout)
        if self._closed:
            return
        self._closed = True
        if self.completion.thread.is_alive() or any(w.thread.is_alive() for w in self._workers):
            return  # work still running past the timeout: leave the streams to it
        try:
            self.ctx.make_current()
            for stream in self.streams:
                self.api.cuStreamDestroy(stream)
            self.events.destroy()
        except HalError:
            pass
        for staging in self._staging:
            if staging is not None:
                staging.release()
