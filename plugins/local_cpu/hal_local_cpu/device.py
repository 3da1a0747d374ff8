"""The local CPU device backend behind ``local-task`` and ``local-sync``.

How an operation runs:

1. ``submit`` takes the next epoch of the op's queue and resolves its waits. Already
   reached waits cost nothing; otherwise a timepoint is registered on each pending
   semaphore and no thread waits (wait-before-signal across queues just works).
2. When the op is ready it runs *inline* on the thread that made it ready (the submitter,
   or the thread that signalled its last wait, through the semaphore trampoline) if it is
   cheap: barriers, transfers up to ``INLINE_TRANSFER_BYTES``, command buffers whose
   program allows it (``LocalProgram.inline``: one compiled-loop call, recorded with
   ALLOW_INLINE_EXECUTION, or only small transfers, or a few single-thread workgroups)
   while no earlier op of their queue is pending, and everything on local-sync. Other work
   goes to the worker threads (local-task).
3. Completion signals the op's semaphores (or fails them with the error), drops what the op
   retained, and retires its epoch on its queue in order.

Invariants: an op parked on semaphores is in ``_waiting`` and is decided exactly once, by
whoever pops it from there (``close`` cancels the rest); no lock is held while user callbacks or
semaphore callbacks run.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, cast

import attrs
import numpy as np

from hal_core import (
    CancelledError,
    HalError,
    HostCallFlags,
    StatusCode,
    error_for,
)
from hal_core.backend import (
    DeviceCapabilities,
    HostCallContext,
    InteropMode,
    QueueOp,
    QueueOpKind,
    QueueTimeline,
    TopologyCapability,
    TopologyEdge,
    buffer_host_bytes,
    buffer_storage,
    complete_op,
    fail_all,
    fill_host,
    op_error,
    report_callback_error,
    resolve_waits,
    run_host_call,
    run_on_trampoline,
    signal_all,
    wait_reached,
)
from hal_core.profiling import MemoryEventType
from hal_core.profiling import host_time_ns as _host_time_ns

from .allocator import HostAllocatorBackend
from .command_buffer import finalize as finalize_program
from .executable_formats import FORMATS as EXECUTABLE_FORMATS
from .executable_formats import prepare_executable
from .profiled_replay import run_program_profiled
from .program_execution import execute_program
from .program_records import INLINE_TRANSFER_BYTES
from .queue_pools import QueuePools
from .worker_threads import WorkerThreads

_INLINE_DONE = 0  # nothing to execute: complete on the readying thread
_INLINE = 1  # execute on the readying thread
_BY_SIZE = 2  # inline when small, else a worker
_WORKER = 3  # always a worker
_ALLOCA = 4  # reserve pool memory: commits now, after a frontier wait, or when parked work retries
_TRAMPOLINE = 5  # execute on the readying thread, through its trampoline (user code)
_PROGRAM = 6  # inline when the program allows it and its queue is idle, else a worker

_NON_BLOCKING_CALL = "a NON_BLOCKING host call"

_K = QueueOpKind

# Profiling tap constants, bound once (plain ints: no enum lookups in the taps).
_MEMORY_QUEUE_ALLOCA = int(MemoryEventType.QUEUE_ALLOCA)
_MEMORY_QUEUE_DEALLOCA = int(MemoryEventType.QUEUE_DEALLOCA)
_thread_id = threading.get_native_id
_PEER_CPU = (
    TopologyCapability.P2P_COPY
    | TopologyCapability.PEER_COHERENT
    | TopologyCapability.ATOMIC_DEVICE
    | TopologyCapability.ATOMIC_SYSTEM
)


class LocalDeviceBackend:
    """One local CPU device. ``worker_count`` 0 makes it synchronous (local-sync)."""

    def __init__(self, name: str, queue_count: int, worker_count: int) -> None:
        self.name = name
        self.queue_count = queue_count
        self.allocator = HostAllocatorBackend()
        self.queues = [QueueTimeline(i) for i in range(queue_count)]
        self.workers = WorkerThreads(worker_count, name) if worker_count else None
        self._epochs = [q.begin for q in self.queues]
        self._waiting: dict[QueueOp, bool] = {}
        self._closing = False
        # How each op kind runs once ready (indexed by QueueOpKind).
        route = [_INLINE] * len(QueueOpKind)
        route[_K.BARRIER] = _INLINE_DONE
        if self.workers is not None:
            for kind in (_K.HOST_CALL, _K.DISPATCH):
                route[kind] = _WORKER
            route[_K.EXECUTE] = _PROGRAM
            for kind in (_K.FILL, _K.UPDATE, _K.COPY, _K.READ, _K.WRITE):
                route[kind] = _BY_SIZE
        if self.workers is None:
            # A host call may submit the next one: running it through the trampoline
            # defers that submission until the running call returns, so chains of host
            # calls of any length never nest on the stack.
            route[_K.HOST_CALL] = _TRAMPOLINE
        self._route = route
        route[_K.ALLOCA] = _ALLOCA
        self._on_timepoint_cb = self._on_timepoint
        self._execute_cb = self._execute_on_trampoline
        self._handlers = {
            _K.BARRIER: _run_barrier,
            _K.FILL: _run_fill,
            _K.UPDATE: _run_update,
            _K.COPY: _run_copy,
            _K.READ: _run_read,
            _K.WRITE: _run_write,
            _K.DEALLOCA: self._run_dealloca,
            _K.EXECUTE: self._run_program,
            _K.DISPATCH: self._run_program,
        }
        self.device: Any = None  # the public Device, set by the driver
        # Queue axes + frontier tracker + default pool set + the alloca state machine.
        self.pools = QueuePools(self)

    # -- queries -----------------------------------------------------------------------

    def query_i64(self, category: str, key: str) -> int:
        if category == "hal.dispatch" and key == "concurrency":
            return self.workers.count if self.workers else 1
        raise error_for(StatusCode.NOT_FOUND, f"unknown device query {category} :: {key}")

    # -- device groups (hal_core DeviceGroup) ------------------------------------------

    def query_capabilities(self) -> DeviceCapabilities:
        """Buffers are host memory of this process; semaphores are host timelines."""
        return DeviceCapabilities(
            memory_domain="host", host_memory_access=InteropMode.NATIVE, host_semaphores=True
        )

    def refine_topology_edge(self, other: Any, edge: TopologyEdge) -> TopologyEdge:
        """Two CPU devices of one process: either side's threads reach the other's memory
        directly, coherently, with atomics at any scope."""
        return attrs.evolve(edge, capabilities=edge.capabilities | _PEER_CPU)

    def assign_topology_info(self, info: Any) -> None:
        """Joining a group binds each queue's timeline to its axis in the group's tracker
        as well (epochs published under the timeline lock, caught up to what already
        retired, so none is lost); ``None`` (leaving) unbinds. While a member, pool death
        frontiers name the group axes (see ``queue_pools``)."""
        self.pools.assign_topology_info(info)

    # -- submission --------------------------------------------------------------------

    def submit(self, op: QueueOp) -> None:
        if self._closing:
            raise error_for(StatusCode.FAILED_PRECONDITION, f"device {self.name} is closing")
        op.epoch = self._epochs[op.queue]()
        waits = op.waits
        if waits:
            if len(waits) == 1:
                sem, value = waits[0]
                if not wait_reached(sem, value):
                    # Park: the timepoint fires on the thread that signals (or fails) it.
                    self._waiting[op] = True
                    sem.add_timepoint(value, self._on_timepoint_cb, op)
                    return
            else:
                for sem, value in waits:
                    if not wait_reached(sem, value):
                        # Park until every wait is reached, or fail on the first failure.
                        self._waiting[op] = True
                        resolve_waits(op, waits, self._on_ready, self._on_wait_failed)
                        return
                # Every wait reached already: ready now, as resolve_waits would decide.
        if self.profiler is None:
            # Ready at submit, unprofiled: the inline routes of ``_dispatch`` and
            # ``_execute`` without their frames (the common case of a dependent chain).
            route = self._route[op.kind]
            if route == _INLINE_DONE:
                complete_op(op, self.queues[op.queue])
                return
            if (
                route == _INLINE
                or (route == _BY_SIZE and op.length <= INLINE_TRANSFER_BYTES)
                or (route == _PROGRAM and op.program.inline and self._queue_idle(op))
            ):
                handler = self._handlers.get(op.kind)  # None: host calls, unimplemented
                if handler is not None:
                    try:
                        handler(op)
                    except BaseException as exc:  # travels through the semaphores
                        self._finish(op, op_error(exc))
                        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                            raise  # after failing the op: its waiters must not hang
                        return
                    complete_op(op, self.queues[op.queue])
                    return
        self._dispatch(op)

    # An op is decided exactly once: whoever pops it from ``_waiting`` (a single atomic
    # dict operation under the GIL) owns it; ``close`` competes the same way.

    def _on_timepoint(self, op: QueueOp, error: HalError | None) -> None:
        if self._waiting.pop(op, None) is None:
            return
        if error is None:
            self._dispatch(op)
        else:
            self._finish(op, error.clone())

    def _on_ready(self, op: QueueOp) -> None:
        if self._waiting.pop(op, None) is None:
            return
        self._dispatch(op)

    def _on_wait_failed(self, op: QueueOp, error: HalError) -> None:
        if self._waiting.pop(op, None) is None:
            return
        self._finish(op, error.clone())

    def _dispatch(self, op: QueueOp) -> None:
        route = self._route[op.kind]
        if route == _INLINE_DONE:
            self._finish(op, None)
        elif (
            route == _INLINE
            or (route == _BY_SIZE and op.length <= INLINE_TRANSFER_BYTES)
            or (route == _PROGRAM and op.program.inline and self._queue_idle(op))
        ):
            self._execute(op)
        elif route == _ALLOCA:
            self.pools.start(op)
        elif route == _TRAMPOLINE:
            run_on_trampoline(self._execute_cb, op)
        else:  # _WORKER, large _BY_SIZE, other _PROGRAM: they exist only with workers
            cast(WorkerThreads, self.workers).submit(self._execute, op)

    def _queue_idle(self, op: QueueOp) -> bool:
        """Whether every earlier op of ``op``'s queue has retired, so running ``op`` now
        on this thread cannot overtake one of them (an inline command buffer waits its
        turn behind a pending op of its queue: it goes to a worker instead). A stale read
        of ``retired`` only sends the op to a worker. No lock needed."""
        return self.queues[op.queue].retired == op.epoch - 1

    def _execute_on_trampoline(self, op: QueueOp, _status: None) -> None:
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
            self._finish(op, op_error(exc))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise  # after failing the op: its waiters must not hang
            return
        self._finish(op, None)

    def _finish(self, op: QueueOp, error: HalError | None) -> None:
        if error is None:
            # Signal, drop what the op retained, retire its epoch: one native call when
            # the extension is built (``hal_core.backend.complete_op``).
            complete_op(op, self.queues[op.queue])
            return
        fail_all(op.signals, error)
        op.retained = None
        self.queues[op.queue].retire(op.epoch)

    # -- operations that need the device -----------------------------------------------

    def submit_alloca(self, op: QueueOp) -> None:
        """``submit`` for ALLOCA: pick the pool and, when nothing is waited on, reserve
        now (RESOURCE_EXHAUSTED raises with nothing queued); see ``queue_pools``."""
        self._submit_prepared(op, self.pools.prepare(op))

    def submit_acquired(self, op: QueueOp) -> None:
        """``submit_alloca`` for an op whose reservation the native alloca path tried
        (``op.alloca_state`` holds the result); see ``bind_alloca_lane``."""
        self._submit_prepared(op, self.pools.acquired(op, op.alloca_state))

    def bind_alloca_lane(self, lane: Any) -> None:
        """Give hal_core's native alloca path this device's straight path (the default
        pools and the queue timelines; it runs while this instance's dict has no
        ``submit``, ``_closing`` is False and no ``profiler`` is set)."""
        self.pools.bind_lane(lane, self.__dict__, self.submit_acquired)

    def _submit_prepared(self, op: QueueOp, ready: bool) -> None:
        pools = self.pools
        if ready and not self._closing and "submit" not in self.__dict__:
            # Reserved with nothing to wait on: commit and complete now, which is what
            # submit + dispatch + start would do on this thread. Unless ``submit`` is
            # shadowed on this instance (profiling taps, a recorder): it then sees the op.
            op.epoch = self._epochs[op.queue]()
            pools.commit_prepared(op)
            return
        try:
            self.submit(op)
        except BaseException:
            pools.abandon(op)
            raise

    def _run_dealloca(self, op: QueueOp) -> None:
        self.pools.dealloca(op)

    def query_queue_pool_backend(self, queue_index: int) -> Any:
        return self.pools.query_queue_pool_backend(queue_index)

    def _run_host_call(self, op: QueueOp) -> None:
        """Run a host call on this thread (a worker, or the readying thread on
        local-sync). Nothing the callback does escapes: NON_BLOCKING errors are reported,
        blocking ones fail the signals (``run_host_call``). No lock is held."""
        # Both are set for every HOST_CALL op (None only once the call is done).
        fn = cast(Callable[[tuple, HostCallContext], Any], op.callback)
        args = cast(tuple, op.args)
        affinity = 1 << op.queue
        if op.flags & HostCallFlags.NON_BLOCKING:
            signal_all(op.signals)
            try:
                fn(args, HostCallContext(self.device, affinity, ()))
            except BaseException as exc:  # NON_BLOCKING errors are ignored by contract
                report_callback_error(exc, _NON_BLOCKING_CALL, fn)
            op.callback = op.args = None  # drop what the closure holds before retiring
            self.queues[op.queue].retire(op.epoch)
            return
        outcome = run_host_call(fn, args, HostCallContext(self.device, affinity, op.signals))
        if outcome is StatusCode.DEFERRED:
            # The callback owns the signals now; the queue's part is done.
            op.retained = op.callback = None
            self.queues[op.queue].retire(op.epoch)
        else:
            self._finish(op, outcome)

    # -- profiling taps ----------------------------------------------------------------
    # ``profiling_begin`` shadows ``submit``, ``_execute`` and ``_finish`` with the
    # ``*_profiled`` variants as instance attributes and ``profiling_end`` removes them, so
    # with profiling off the queue path is the plain class code (no checks at all). The
    # variants tolerate a session ending while work is in flight (``profiler`` None).

    profiler: Any = None  # the active hal_core.profiling.ProfilingSession

    @property
    def profiling_families(self) -> int:
        from hal_core.profiling import ProfilingDataFamily as F

        return (
            F.QUEUE_EVENTS
            | F.HOST_EXECUTION_EVENTS
            | F.DISPATCH_EVENTS
            | F.MEMORY_EVENTS
            | F.EXECUTABLE_METADATA
        )

    def profiling_begin(self, session: Any) -> None:
        self._profiled_ops = threading.local()
        self._profiled_views: dict = {}
        self.profiler = session
        if session.dispatch_events is not None:
            # Programs run record by record so each dispatch is timed (profiled_replay).
            self._handlers[_K.EXECUTE] = self._run_program_profiled
            self._handlers[_K.DISPATCH] = self._run_program_profiled
        if session.memory_events is not None:
            # Pool reserve/release events of the default pools (taps removed at session
            # end); pools passed to queue_alloca explicitly use record_pool_events too.
            from hal_core.profiling import record_pool_events

            for _priority, pool in self.pools.default_pools.pools:
                record_pool_events(session, pool)
        # Instance attributes shadow the methods for the session (deleted at its end):
        # deliberate method assignment, which mypy reports.
        self.submit = self._submit_profiled  # type: ignore[method-assign]
        self._execute = self._execute_profiled  # type: ignore[method-assign]
        self._finish = self._finish_profiled  # type: ignore[method-assign]

    def profiling_end(self, session: Any) -> None:
        for name in ("submit", "_execute", "_finish"):
            self.__dict__.pop(name, None)
        self._handlers[_K.EXECUTE] = self._run_program
        self._handlers[_K.DISPATCH] = self._run_program
        self.profiler = None
        self._profiled_views = {}

    def _run_program_profiled(self, op: QueueOp) -> None:
        """``_run_program`` with one dispatch event per dispatch (host clock)."""
        p = self.profiler
        if p is None:
            LocalDeviceBackend._run_program(self, op)
            return
        program = op.program
        cb_id = id(program) if op.kind == _K.EXECUTE else 0
        try:
            run_program_profiled(
                p,
                program,
                op.bindings,
                self.workers,
                op.queue,
                op.epoch,
                cb_id,
                self._profiled_views,
            )
        except HalError as exc:
            raise exc.with_traceback(None) from exc.__cause__
        finally:
            op.retained = op.program = None
            op.bindings = ()

    def _submit_profiled(self, op: QueueOp) -> None:
        t = _host_time_ns()
        LocalDeviceBackend.submit(self, op)
        p = self.profiler
        if p is not None:
            p.record_queue_event(
                op.kind,
                op.queue,
                op.epoch,
                len(op.waits),
                len(op.signals),
                getattr(op, "length", 0) or 0,
                submit_host_time_ns=t,
            )

    def _execute_profiled(self, op: QueueOp) -> None:
        p = self.profiler
        if p is None:
            LocalDeviceBackend._execute(self, op)
            return
        running = self._profiled_ops
        running.op = op  # tells _finish_profiled this op's host execution is timed here
        running.start = _host_time_ns()
        try:
            LocalDeviceBackend._execute(self, op)
        finally:
            if running.op is op:
                # Not finished on this thread (a host call that deferred its signals):
                # its host execution ends here.
                running.op = None
                p.record_host_execution(
                    op.kind,
                    op.queue,
                    op.epoch,
                    running.start,
                    _host_time_ns(),
                    0,
                    getattr(op, "length", 0) or 0,
                    _thread_id(),
                )

    def _finish_profiled(self, op: QueueOp, error: HalError | None) -> None:
        p = self.profiler
        if p is not None:
            kind = op.kind
            status = 0 if error is None else int(error.code)
            running = self._profiled_ops
            if getattr(running, "op", None) is op:
                # The host execution is recorded before the signals publish, so a waiter
                # that ends the session after its wait finds it.
                running.op = None
                p.record_host_execution(
                    kind,
                    op.queue,
                    op.epoch,
                    running.start,
                    _host_time_ns(),
                    status,
                    getattr(op, "length", 0) or 0,
                    _thread_id(),
                )
            else:
                # Completed without executing on a host thread (barriers, pool allocas,
                # ops failed by their waits): a zero-length slice at completion.
                t = _host_time_ns()
                p.record_host_execution(kind, op.queue, op.epoch, t, t, status, 0, _thread_id())
            if error is None and (kind == _K.ALLOCA or kind == _K.DEALLOCA):
                target = op.target
                if kind == _K.ALLOCA:
                    p.record_memory_event(
                        _MEMORY_QUEUE_ALLOCA,
                        op.queue,
                        id(target),
                        op.length,
                        submission_id=op.epoch,
                    )
                else:
                    p.record_memory_event(
                        _MEMORY_QUEUE_DEALLOCA,
                        op.queue,
                        id(target),
                        target.allocation_size,
                        submission_id=op.epoch,
                    )
        LocalDeviceBackend._finish(self, op, error)

    # -- executables and command buffers ---------------------------------------------------

    def executable_formats(self) -> tuple[str, ...]:
        return tuple(EXECUTABLE_FORMATS)

    def prepare_executable(self, format: str, data: Any, params: dict) -> Any:
        return prepare_executable(format, data, params)

    def finalize_command_buffer(self, commands: list, mode: int, binding_capacity: int) -> Any:
        return finalize_program(commands, mode, binding_capacity, self.workers is not None)

    def _run_program(self, op: QueueOp) -> None:
        """EXECUTE and DISPATCH: replay ``op.program`` against binding table ``op.bindings``."""
        try:
            execute_program(op.program, op.bindings, self.workers)
        except HalError as exc:
            # Failed semaphores keep their error: drop its frames (and their buffers); a
            # Python kernel's exception stays chained (it holds no frames).
            raise exc.with_traceback(None) from exc.__cause__
        finally:
            # The work is done: release what the submission retained *before* its
            # signals publish, so a waiter that wakes observes the release.
            op.retained = op.program = None
            op.bindings = ()

    # -- lifetime ----------------------------------------------------------------------

    def close(self, timeout: float | None) -> None:
        self._closing = True
        for op in list(self._waiting):
            if self._waiting.pop(op, None) is not None:
                self._finish(op, CancelledError("device closed while the operation was waiting"))
        if self.workers is not None:
            self.workers.shutdown(timeout)
        self.pools.close()  # parked allocas fail CANCELLED; default pools give slabs back


# -- transfer handlers (host memory) -------------------------------------------------------


def _run_barrier(op: QueueOp) -> None:
    return None


_FILL_DTYPES = {2: np.uint16, 4: np.uint32}


def _run_fill(op: QueueOp) -> None:
    length = op.length
    if not length:
        return
    data = op.pattern
    target = op.target
    host = buffer_storage(target).host_array
    if host is not None:
        # One native store of the repeated pattern (hal_core.backend.fill_host).
        fill_host(host, target.byte_offset + op.target_offset, length, data)
        return
    dst = buffer_host_bytes(target, op.target_offset, length)
    if len(data) == 1:
        dst.fill(data[0])
    else:
        dst.view(_FILL_DTYPES[len(data)]).fill(int.from_bytes(data, "little"))


def _run_update(op: QueueOp) -> None:
    if op.length:
        buffer_host_bytes(op.target, op.target_offset, op.length)[:] = op.payload


def _run_copy(op: QueueOp) -> None:
    if op.length:
        src = buffer_host_bytes(op.source, op.source_offset, op.length)
        buffer_host_bytes(op.target, op.target_offset, op.length)[:] = src


def _run_read(op: QueueOp) -> None:
    if op.length:
        view = buffer_host_bytes(op.target, op.target_offset, op.length)
        op.source.read_into(op.source_offset, view)


def _run_write(op: QueueOp) -> None:
    if op.length:
        view = buffer_host_bytes(op.source, op.source_offset, op.length)
        op.target.write_from(op.target_offset, view)
