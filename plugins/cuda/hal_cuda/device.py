"""``CudaDeviceBackend``: one GPU, its queues as CUDA streams.

How a queue operation runs:

1. ``submit`` receives one validated ``QueueOp``. A wait on a value that this device's
   stream work in flight will signal becomes a device-side wait when the op's own work
   is stream work: ``cuStreamWaitEvent`` on that work's event when it runs on another
   stream, nothing at all when it runs on the op's own stream (stream order already puts
   the op after it); the op then fails at completion if that semaphore failed. Other
   waits not yet reached park the op in ``_waiting``; ``resolve_waits`` calls back on
   whichever thread signals its last wait (or fails one): host deferral. No thread
   blocks on a semaphore.
2. A ready op whose work is stream work (fill, update, copy, dispatch, execute) is put
   on its queue's stream at once, on the readying thread (enqueueing never blocks), an
   event is recorded after it, and the completion thread (``completion.py``) completes
   it when the event is reached. Barriers complete at once. Host calls, file reads and
   writes and programs that read a workgroup count from a buffer go to the queue's
   worker thread, which may block. Alloca and dealloca run through the pools
   (``queue_pools.py``) on the readying thread: reserving never blocks.
   With the native lane built (``native_lane.py``, ``_native_lane*.c``; off with
   ``HAL_CUDA_NATIVE=0``), ``submit`` is one C call that does steps 1 and 2 itself for
   stream work with no waits or waits on this device's in-flight work, with the same
   driver calls, hand-over and outcomes, and calls ``_submit_python`` for every other op
   before doing anything; the completion thread's plain completions run in C too.
3. Completing drops what the op holds, then signals its semaphores or fails them.
   Nothing escapes a HAL thread: errors become the op's failure, and a user callback's
   exception is reported through ``sys.unraisablehook``.

Invariants: a parked op is decided exactly once, by whoever pops it from ``_waiting``;
``close`` competes for them the same way. No lock is held while semaphores are signalled,
user code runs, or a thread waits on the GPU.
"""

from __future__ import annotations

from typing import Any, Callable, cast

from hal_core import (
    CancelledError,
    CommandBufferMode,
    FailedPreconditionError,
    HalError,
    HostCallFlags,
    QueueOpKind,
    StatusCode,
    UnimplementedError,
)
from hal_core.backend import (
    DeviceCapabilities,
    HostCallContext,
    InteropMode,
    QueueOp,
    fail_all,
    op_error,
    report_callback_error,
    resolve_waits,
    run_host_call,
    signal_all,
    wait_reached,
)
from hal_core.profiling import MemoryEventType, record_pool_events

from . import executable as executables
from . import graphs
from .completion import CompletionThread, EventPool
from .cuda_api import CudaContext, check, cuda_error, hot_calls, thread_context
from .dispatch_programs import DispatchPrograms, is_single_dispatch
from .host_spans import HostTaps
from .host_work import FileTransfers, QueueWorker
from .memory import CudaAllocatorBackend
from .native_lane import discarder, make_lane
from .profiling import CUDA_PROFILING_FAMILIES, CudaProfiling, profiling_clock
from .queue_pools import CudaQueuePools
from .stream_alloca import (
    ALLOCA_POOLS,
    ALLOCA_STREAM,
    StreamOrderedAllocas,
    create_pool,
    parse_alloca_mode,
)
from .stream_ops import (
    CudaProgram,
    enqueue_copy,
    enqueue_fill,
    enqueue_program,
    enqueue_update,
)
from .stream_waits import StreamWaits
from .topology import contexts_of, refine_edge

CU_STREAM_NON_BLOCKING = 0x1

_BARRIER = QueueOpKind.BARRIER
_HOST_CALL = QueueOpKind.HOST_CALL
_ALLOCA = QueueOpKind.ALLOCA
_DEALLOCA = QueueOpKind.DEALLOCA
_EXECUTE = QueueOpKind.EXECUTE
_DISPATCH = QueueOpKind.DISPATCH
_NON_BLOCKING = int(HostCallFlags.NON_BLOCKING)
_ONE_SHOT = int(CommandBufferMode.ONE_SHOT)
_UNRETAINED = int(CommandBufferMode.UNRETAINED)
_DIRECT_DISPATCH = _ONE_SHOT | _UNRETAINED  # the mode of queue_dispatch's recording
_MEMORY_QUEUE_ALLOCA = int(MemoryEventType.QUEUE_ALLOCA)
_MEMORY_QUEUE_DEALLOCA = int(MemoryEventType.QUEUE_DEALLOCA)


def _host_sync(op: QueueOp) -> bool:
    """Whether a DISPATCH or EXECUTE op's program must run on a worker (it reads a
    workgroup count from a buffer)."""
    return bool(op.program.needs_host_sync)


_STREAM_WORK: dict[int, Callable[[Any, QueueOp, Any], None]] = {
    QueueOpKind.FILL: enqueue_fill,
    QueueOpKind.UPDATE: enqueue_update,
    QueueOpKind.COPY: enqueue_copy,
    QueueOpKind.DISPATCH: enqueue_program,
    QueueOpKind.EXECUTE: enqueue_program,
}


_DEVICE_WAITABLE = frozenset(
    {
        QueueOpKind.FILL,
        QueueOpKind.UPDATE,
        QueueOpKind.COPY,
        QueueOpKind.DISPATCH,
        QueueOpKind.EXECUTE,
    }
)
"""Op kinds whose work is stream work, so their waits can be device-side. Barriers are
not: they have no work, and completing one on the host as soon as its waits are reached
is cheaper than a round trip through the GPU."""


class _Submit:
    """``CudaDeviceBackend.submit``: the device's native lane's ``submit`` (one C call)
    when it has one, else ``_submit_python``. A descriptor rather than an instance
    attribute, so the instance dict stays free for profiling taps (``host_spans.py``),
    which shadow ``submit`` there and give it back by removing their entry."""

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self
        lane_submit = obj._lane_submit
        return obj._submit_python if lane_submit is None else lane_submit


class CudaDeviceBackend:
    """``DeviceBackend`` of one GPU with ``queue_count`` streams. As a member of a logical
    device over several GPUs (``logical_device.py``) it is given the logical device's
    ``queue_count`` and runs only ``own_queues`` of them (ops keep their logical queue
    index); the other queues' streams exist unused and share one idle worker."""

    def __init__(
        self,
        ctx: CudaContext,
        queue_count: int,
        device_memory: int,
        name: str,
        own_queues: range | None = None,
        alloca: str = ALLOCA_POOLS,
    ) -> None:
        # Options first: a bad value or a GPU without memory pools fails before any
        # stream or thread exists.
        alloca = parse_alloca_mode(alloca)
        alloca_pool = create_pool(ctx) if alloca == ALLOCA_STREAM else None
        self.ctx = ctx
        self.api = ctx.api
        # The submitting and completion paths' driver calls (cuda_api.hot_calls: the
        # short stream-work calls keep the GIL).
        self.hot = hot_calls(ctx.api)
        self.name = name
        self.queue_count = queue_count
        self.allocator = CudaAllocatorBackend(ctx, device_memory)
        # The public Device: hal_core sets it; host calls hand it to their callbacks.
        self.device: Any = None
        self._waiting: dict[QueueOp, bool] = {}
        # Values stream work will signal when its event is reached: semaphore ->
        # (value, event, queue index, semaphore), the latest enqueued per semaphore;
        # published by the completion thread's hand-over, removed at completion.
        self._inflight: dict[Any, tuple[int, Any, int, Any]] = {}
        # Device-side waits of parked ops (they also wait on the host): op -> (the
        # (semaphore, value) pairs waited on the device, the events to wait on or None).
        self._device_waits: dict[QueueOp, tuple[list[tuple[Any, int]], list[Any] | None]] = {}
        self._closing = False
        self._closed = False
        # Bound once: every parked op hands them to resolve_waits.
        self._ready_callback = self._on_ready
        self._failed_callback = self._on_wait_failed
        ctx.make_current()
        self.streams = [
            check(self.api.cuStreamCreate(CU_STREAM_NON_BLOCKING), "cuStreamCreate")
            for _ in range(queue_count)
        ]
        # Word waits on values other CUDA devices' in-flight work will signal.
        self.stream_waits = StreamWaits(ctx, self._inflight)
        # Instantiated graphs of dropped programs, for re-recorded ones of the same shape.
        self.graph_cache = graphs.GraphCache(ctx)
        self.dispatch_programs = DispatchPrograms()
        self.events = EventPool(ctx)
        self._timing_events = EventPool(ctx, flags=0)  # timing enabled: profiling
        self._profiling: CudaProfiling | None = None
        self._host_taps: HostTaps | None = None
        self._free_events = self.events.free
        self.completion = CompletionThread(
            ctx, self.events, f"cuda{ctx.ordinal}-completion", self._finish_stream, self.hot
        )
        self.files = FileTransfers(ctx, queue_count)
        own = range(queue_count) if own_queues is None else own_queues
        workers = {
            i: QueueWorker(f"cuda{ctx.ordinal}-queue{i}", self._execute_on_worker) for i in own
        }
        self._workers = [workers.get(i, workers[own[0]]) for i in range(queue_count)]
        # Queue axes, retirement watermarks, default pools and the alloca state machine.
        self.pools = CudaQueuePools(ctx, queue_count, device_memory, name, self._complete_pool_op)
        self._watermarks = self.pools.watermarks
        # The submit lane in C (``native_lane.py``): ``submit`` becomes its one C call,
        # which takes the hot ops itself and hands the rest to the Python ``submit``.
        # Made before alloca=stream's routes, which wrap ``submit`` and ``_complete``.
        self._thread_context = thread_context
        lane, self.native = make_lane(self, self._submit_python)
        self._lane = lane
        self._lane_submit = None if lane is None else lane.submit
        if lane is not None:  # plain completions in C too, the rest through _finish_stream
            self.completion._finish = lane.finish
        self._discard = discarder(self.completion._lock, self._inflight, lane is not None)
        # alloca=stream: default-pool allocas of device memory through CUDA's
        # stream-ordered allocator (``stream_alloca.py``); its pool goes with the pools.
        self.alloca_mode = alloca
        self.stream_allocas: StreamOrderedAllocas | None = None
        if alloca_pool is not None:
            self.stream_allocas = StreamOrderedAllocas(self, alloca_pool)
            self.stream_allocas.install()
            self.pools.on_close.append(self.stream_allocas.close)

    # -- capabilities -------------------------------------------------------------------

    def executable_formats(self) -> tuple[str, ...]:
        return executables.FORMATS

    def prepare_executable(self, format: str, data: Any, params: dict[str, Any]) -> Any:
        return executables.prepare(self.ctx, format, data, params)

    def finalize_command_buffer(self, commands: list, mode: int, binding_capacity: int) -> Any:
        """The replay form of a recording (launch limits checked here, at the call): stream
        launches, and for a reusable command buffer that qualifies a CUDA graph
        (``graphs.py``), built now when its buffers are direct and committed, else at its
        first execution. A ``queue_dispatch``'s one-dispatch recording gets the program of
        an identical earlier dispatch when there is one (``dispatch_programs.py``)."""
        if mode == _DIRECT_DISPATCH and is_single_dispatch(commands):
            return self.dispatch_programs.get(commands[0])
        unretained = bool(mode & _UNRETAINED)
        program = CudaProgram(commands, unretained)
        if program.kernel_shape is not None:
            # Kernel-only: an instance shared by every recording of this shape.
            runner = self.graph_cache.kernel.runner(program, bool(mode & _ONE_SHOT))
            if runner is not None:
                program.graph = runner
                if not mode & _ONE_SHOT:
                    runner.prebuild(program)
        elif not mode & (_ONE_SHOT | _UNRETAINED) and graphs.qualifies(program):
            program.graph = graphs.ProgramGraphs(self.ctx, self.graph_cache)
            program.graph.prebuild(program)
        return program

    def flush(self, queue_mask: int) -> None:
        """Nothing is batched: stream work is submitted to the GPU when enqueued."""

    # -- submission -------------------------------------------------------------------

    submit = _Submit()
    _lane_submit: Any = None  # the native lane's submit, set at the end of __init__

    def _submit_python(self, op: QueueOp) -> None:
        """Queue ``op``; raises (queuing nothing) only for what it refuses outright.
        ``submit`` is this method, or the native lane's ``submit`` (which calls this one
        for the ops it does not take itself).

        A wait on a value that stream work of this device will signal (``_inflight``)
        becomes a device-side wait for ops whose work is stream work (``cuStreamWaitEvent``
        on that work's event, or nothing when that work is on the op's own stream); every
        other wait is resolved on the host. One such wait (a chain's) takes the short
        path: no lists, straight to ``_enqueue``."""
        if self._closing:
            raise FailedPreconditionError("the cuda device is closed")
        op.epoch = self._watermarks[op.queue].next_epoch()
        waits = op.waits
        if not waits:
            self._ready(op)
            return
        kind = op.kind
        inflight = self._inflight
        if inflight and kind in _DEVICE_WAITABLE:
            if len(waits) == 1:
                sem, value = waits[0]
                entry = inflight.get(sem)
                if (
                    entry is not None
                    and entry[0] >= value
                    and not wait_reached(sem, value)
                    and (
                        (kind is not _DISPATCH and kind is not _EXECUTE)
                        or not op.program.needs_host_sync
                    )
                ):
                    self.stream_waits.event += 1
                    lane = entry[2]
                    self._enqueue(
                        op, _STREAM_WORK[kind], waits, None if lane == op.queue else entry[1]
                    )
                    return
            waits, waited, events = self._split_waits(op, waits)
            if not waits:
                self._ready(op, waited, events)
                return
            if waited is not None:
                self._device_waits[op] = (waited, events)
        self._waiting[op] = True
        if self._closing and self._waiting.pop(op, None) is not None:
            self._device_waits.pop(op, None)
            raise FailedPreconditionError("the cuda device is closed")
        resolve_waits(op, waits, self._ready_callback, self._failed_callback)

    def _split_waits(self, op: QueueOp, waits: tuple) -> tuple[tuple, list | None, list | None]:
        """(the waits left for the host, the (semaphore, value) pairs waited on the device
        or None, the events to wait on or None). A wait this device's in-flight stream
        work will signal is waited on that work's event, or needs no driver call at all
        when that work is on the op's own stream: every op goes on its queue's stream
        after its producers were enqueued there, so stream order is the wait. A wait
        another CUDA device's in-flight work will signal becomes a word wait on the op's
        stream now (``stream_waits.py``)."""
        inflight = self._inflight
        host: list[tuple[Any, int]] = []
        device: list[tuple[Any, int]] = []
        events: list[Any] | None = None
        words: list[tuple[Any, int]] | None = None
        queue_index = op.queue
        stream_waits = self.stream_waits
        for sem, value in waits:
            if wait_reached(sem, value):
                continue
            entry = inflight.get(sem)
            if entry is not None and entry[0] >= value:
                device.append((sem, value))
                if entry[2] != queue_index:
                    if events is None:
                        events = []
                    events.append(entry[1])
            elif stream_waits.peer_signals(sem, value):
                if words is None:
                    words = []
                words.append((sem, value))
            else:
                host.append((sem, value))
        if not device and not words:
            if host:
                stream_waits.host += len(host)
            return tuple(host), None, None
        if (op.kind == _DISPATCH or op.kind == _EXECUTE) and _host_sync(op):
            stream_waits.host += len(waits)
            return waits, None, None  # runs on a worker: the host resolves every wait
        stream_waits.event += len(device)
        if words:
            done = stream_waits.enqueue(self.streams[queue_index], words)
            device.extend(words[:done])
            host.extend(words[done:])
            stream_waits.word += done
        if host:
            stream_waits.host += len(host)
        return tuple(host), device, events

    def submit_alloca(self, op: QueueOp) -> None:
        """``submit`` for ALLOCA: pick the pool and, when nothing is waited on, reserve
        now (RESOURCE_EXHAUSTED raises with nothing queued); see ``queue_pools``."""
        self.pools.prepare(op)
        try:
            self.submit(op)
        except BaseException:
            self.pools.abandon(op)
            raise

    def query_queue_pool_backend(self, queue_index: int) -> Any:
        return self.pools.query_queue_pool_backend(queue_index)

    # -- device groups ------------------------------------------------------------------

    def query_capabilities(self) -> DeviceCapabilities:
        """Buffers live in this GPU's memory (a domain of its own: other devices reach it
        by copies through the host); host timeline semaphores are waited on the host."""
        return DeviceCapabilities(
            memory_domain=f"cuda:{self.ctx.ordinal}",
            host_memory_access=InteropMode.COPY,
            host_semaphores=True,
        )

    def refine_topology_edge(self, other: Any, edge: Any) -> Any:
        """The edge with another CUDA device from the driver (``topology.refine_edge``:
        one GPU's memory, or peer access between GPUs by ``cuDeviceCanAccessPeer``)."""
        theirs = contexts_of(other)
        if theirs is None:
            return edge
        return refine_edge(theirs, [self.ctx], edge)

    def assign_topology_info(self, info: Any) -> None:
        """Join (or leave, ``None``) a device group: pool frontiers name its axes."""
        self.pools.assign_topology_info(info)

    def _on_ready(self, op: QueueOp) -> None:
        if self._waiting.pop(op, None) is not None:
            if op.kind is _BARRIER:  # a chain of barriers: one call fewer per edge
                self._complete(op, None)
                return
            parked = self._device_waits.pop(op, None) if self._device_waits else None
            if parked is None:
                self._ready(op)
            else:
                self._ready(op, parked[0], parked[1])

    def _on_wait_failed(self, op: QueueOp, error: HalError) -> None:
        if self._waiting.pop(op, None) is not None:
            self._device_waits.pop(op, None)
            self._complete(op, error.clone())

    def _ready(self, op: QueueOp, waited: Any = None, events: list | None = None) -> None:
        """Run or queue a ready op. ``waited`` and ``events``: its device-side waits
        (``_enqueue``)."""
        kind = op.kind
        if kind == _BARRIER:
            self._complete(op, None)
            return
        if kind == _ALLOCA or kind == _DEALLOCA:
            self._run_pool_op(op)
            return
        work = _STREAM_WORK.get(kind)
        if work is not None and not (
            (kind == _EXECUTE or kind == _DISPATCH) and op.program.needs_host_sync
        ):
            self._enqueue(op, work, waited, events)
        elif not self._workers[op.queue].put(op):
            self._complete(op, CancelledError("the cuda device closed before the op ran"))

    def _enqueue(
        self,
        op: QueueOp,
        work: Callable[[Any, QueueOp, Any], None],
        waited: Any = None,
        wait: Any = None,
    ) -> None:
        """Put ``op``'s work on its stream (after its device-side waits), record an event
        after it and hand it to the completion thread, which publishes its signals as in
        flight. Never raises: an error fails the op (after the work already queued is
        done).

        ``waited``: the (semaphore, value) pairs the op waits on the device (it fails at
        completion with the failure of any of them), or None. ``wait``: the event to
        ``cuStreamWaitEvent`` on first, a list of them, or None."""
        error: HalError | None = None
        api = self.hot
        lane = op.queue
        stream = self.streams[lane]
        timer = None
        ctx = self.ctx
        try:
            if thread_context.current is not ctx:
                ctx.make_current()
            if wait is not None:
                for event in wait if wait.__class__ is list else (wait,):
                    err = api.cuStreamWaitEvent(stream, event, 0)[0]
                    if err:
                        raise cuda_error(err, "cuStreamWaitEvent")
            profiling = self._profiling
            if profiling is not None and profiling.dispatch and work is enqueue_program:
                timer = profiling.timer()
                op.program.run(api, op.bindings or (), stream, timer)
            else:
                work(api, op, stream)
        except BaseException as exc:
            error = op_error(exc)
        signals = op.signals
        try:
            try:
                event = self._free_events.pop()
            except IndexError:
                event = self.events.get()
        except BaseException as exc:
            self._complete_waited(op, error or op_error(exc), waited)
            return
        entries: Any = None
        if len(signals) == 1:
            sem, value = signals[0]
            entries = (value, event, lane, sem)
        elif signals:
            entries = [(value, event, lane, sem) for sem, value in signals]
        item = (
            event,
            lane,
            entries,
            op,
            error,
            waited,
            None if timer is None else (timer, profiling),
        )
        try:
            err = self.completion.hand_over(stream, item, self._inflight)
        except BaseException as exc:
            self._complete_waited(op, error or op_error(exc), waited)
            return
        if err:
            self._complete_waited(op, error or cuda_error(err, "cuEventRecord"), waited)
        elif err is None:
            self._finish_stream(item, CancelledError("the cuda device closed"))

    def _finish_stream(self, item: tuple, fault: HalError | None) -> None:
        """Completion of stream work (completion thread): complete it (a fault the event
        wait reported fails it), then forget its in-flight signals. In that order, a
        submitter always finds either the value reached or the entry (a device-side wait
        on work already done costs nothing), never neither, which would send the new op
        through a host round trip."""
        _event, _lane, entries, op, error, waited, timer = item
        if fault is not None:
            error = fault
        elif waited is not None and error is None:
            for sem, _value in waited:
                failure = sem.failure
                if failure is not None:
                    error = failure.clone()
                    break
        if timer is not None:
            timer[1].record(op, timer[0], error is not None)
        self._complete(op, error)
        if entries is not None:
            # Only entries still published: a later op's newer entry for the same
            # semaphore stays (the check and the deletion are one step).
            self._discard(entries)

    def _complete_waited(self, op: QueueOp, error: HalError | None, waited: Any) -> None:
        """Complete an op that may have waited on the device (``waited``: those
        (semaphore, value) pairs, or None): if one of those semaphores failed, the op
        fails with that failure (its work ran regardless)."""
        if waited is not None and error is None:
            for sem, _value in waited:
                failure = sem.failure
                if failure is not None:
                    error = failure.clone()
                    break
        self._complete(op, error)

    def _run_pool_op(self, op: QueueOp) -> None:
        """ALLOCA / DEALLOCA through the pools, on the readying thread (reservations never
        block: an alloca that must wait parks on the pool's notification or tracker)."""
        try:
            self.ctx.make_current()  # a fresh slab is allocated on this thread
            if op.kind == _ALLOCA:
                self.pools.start(op)  # completes the op itself, now or later
                return
            size = op.target.allocation_size
            self.pools.dealloca(op)
        except BaseException as exc:
            self._complete(op, op_error(exc))
            return
        profiling = self._profiling
        if profiling is not None:
            profiling.memory_event(_MEMORY_QUEUE_DEALLOCA, op, size)
        self._complete(op, None)

    def _complete_pool_op(self, op: QueueOp, error: HalError | None) -> None:
        """An alloca's completion from the pools: a QUEUE_ALLOCA memory event while a
        session captures them, then the usual completion."""
        profiling = self._profiling
        if profiling is not None and error is None and op.kind == _ALLOCA:
            profiling.memory_event(_MEMORY_QUEUE_ALLOCA, op, op.length)
        self._complete(op, error)

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
            self.files.read(op)
        elif kind == QueueOpKind.WRITE:
            self.files.write(op)
        elif kind == _EXECUTE or kind == _DISPATCH:
            stream = self.streams[op.queue]
            op.program.run(self.api, op.bindings or (), stream)
            check(self.api.cuStreamSynchronize(stream), "cuStreamSynchronize")
        else:
            raise UnimplementedError(f"the cuda driver does not run {op.kind.name} ops")

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
            # The callback owns the signals now; the op's own part is done.
            op.retained = op.callback = op.args = None
            self._watermarks[op.queue].retire(op.epoch)
        else:
            self._complete(op, outcome)

    def _complete(self, op: QueueOp, error: HalError | None) -> None:
        """Release what the op holds, retire its epoch, then publish. The caller holds no
        lock."""
        op.retained = op.program = op.callback = op.args = op.payload = None
        op.bindings = ()
        self._watermarks[op.queue].retire(op.epoch)
        if error is None:
            signal_all(op.signals)
        else:
            fail_all(op.signals, error)

    # -- profiling ----------------------------------------------------------------------

    @property
    def profiling_families(self) -> int:
        return CUDA_PROFILING_FAMILIES

    @property
    def profiling_clock(self) -> tuple:
        return profiling_clock()

    def profiling_begin(self, session: Any) -> None:
        """Dispatch timing from now on (``profiling.py``); taps on the default pools; the
        host-side taps (queue events, host execution: ``host_spans.py``) in the instance
        dict for the session."""
        profiling = CudaProfiling(self.ctx, session, self._timing_events, self.streams[0])
        if session.memory_events is not None:
            for _priority, pool in self.pools.default_pools.pools:
                record_pool_events(session, pool)
        if session.queue_events is not None or session.host_execution_events is not None:
            taps = HostTaps(self, session)
            taps.install()
            self._host_taps = taps
        self._profiling = profiling

    def profiling_end(self, session: Any) -> None:
        """Stop timing and remove the host taps; ops in flight record nothing once the
        session has closed."""
        self._profiling = None
        taps, self._host_taps = self._host_taps, None
        if taps is not None:
            taps.remove()

    # -- lifetime -----------------------------------------------------------------------

    def close(self, timeout: float | None) -> None:
        """Fail parked ops CANCELLED, let queued work finish, stop the threads, release
        the streams and events. The GPU's primary context stays retained by the driver
        (memory still referenced by live buffers is freed when they go)."""
        self._closing = True
        for op in list(self._waiting):
            if self._waiting.pop(op, None) is not None:
                self._device_waits.pop(op, None)
                self._complete(op, CancelledError("the cuda device closed while the op waited"))
        for worker in self._workers:
            worker.stop(timeout)
        self.completion.stop(timeout)
        self.pools.close()  # parked allocas fail CANCELLED; default pools give slabs back
        if self._closed:
            return
        self._closed = True
        if self.completion.thread.is_alive() or any(w.thread.is_alive() for w in self._workers):
            return  # work still running past the timeout: leave the streams to it
        try:
            self.ctx.make_current()
            self.graph_cache.close()
            for stream in self.streams:
                self.api.cuStreamDestroy(stream)
            self.events.destroy()
            self._timing_events.destroy()
        except HalError:
            pass
        self.files.release()
