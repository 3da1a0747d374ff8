"""Host queues: HAL queue operations turned directly into AQL packets on an HSA queue.

One ``HostQueue`` per HAL queue (``QUEUES_PER_GPU`` per GPU) owns: an HSA AQL queue (its
ring viewed through ``AqlRing``), a kernarg ring in the CPU kernarg pool, one *epoch
signal* that is the completion signal of every submission's last packet, a notification
ring mapping epochs to semaphore signals and retained resources, and a completion thread.
``HostQueueSet`` owns a device's queues, the shared last-signal table used for wait
elision, the builtin blit kernels and the command-buffer finalizer (block programs).

Flow of one operation (``HostQueueSet.submit`` -> ``HostQueue.submit``):

1. Wait resolution by tiers: a wait already reached costs nothing; a wait whose producer
   (recorded when the producing submission was published) is this queue is elided (every
   packet carries the BARRIER bit, so the queue is an in-order chain); a producer epoch the
   queue's frontier already covers, or that has retired, is elided; a producer epoch on a
   peer queue becomes a *device barrier* (an AMD barrier-value packet on the peer's epoch
   signal) where the target supports it; anything else (host-signalled values,
   wait-before-signal, failed semaphores) is *deferred in software* with semaphore
   timepoints and resubmitted from the signalling thread.
2. Admission under the submission lock: the notification ring, the kernarg ring and the AQL
   ring (``try_reserve``, last because it changes state) must all have room; otherwise the
   submission is *parked* (FIFO) and retried after the next drain. Sizes that could never
   fit raise OUT_OF_RANGE at submit. Parked work never blocks the rings it waits on, so
   parking cannot deadlock.
3. Publication: kernargs, packet bodies, the epoch signal on the final packet, header words
   in packet order, one doorbell store (``aql_packets`` explains the order).
4. Completion: the thread waits (``hsa_amd_signal_wait_any``) on the epoch signal and a
   stop signal, drains retired epochs in order, runs host actions (host calls, file I/O,
   deallocas) at their epoch, signals semaphores coalesced per semaphore, drops retained
   resources, reclaims kernarg space and retries parked submissions.

Payloads: a single fill/copy/update is one builtin blit packet encoded directly at
admission (the transfer fast path); dispatches and command buffers replay a block program
(``block_program``) block by block through the ``BlockProcessor``; barriers and host work
(host calls, file reads/writes, deallocas) publish one NOP barrier packet whose epoch runs
the host action on the completion thread before any later signal. A block opened by an
indirect dispatch is published only once the blocks before it retired, after the host
read its workgroup counts (no device-side patch kernel is shipped).

A queue error (the HSA queue's error callback) is sticky: the completion thread drains
what had completed, fails every pending signal with the HSA error (mapped code, HSA text),
fails the queue's frontier axis, fails peer queues stuck behind a device barrier on it,
and every later submission fails its signals with it. ``close`` never hangs: it waits a
bounded time for in-flight work, then cancels (CANCELLED).

Not implemented (absent or UNIMPLEMENTED, never faked): the PM4 ``WAIT_REG_MEM64`` wait
barrier (targets without barrier-value packets defer in software), queue_alloca from an
explicit pool (the pool substrate), profiling taps.

Locks: ``_lock`` (submission: rings, epochs, parking, frontier) and ``_drain_lock``
(completion draining). No lock is held while semaphores are signalled or user callbacks
run, so completions may submit more work to any queue (zero-hop chaining).
"""

from __future__ import annotations

import collections
import enum
import threading
import weakref
from typing import Any, Callable

import attrs
import numpy as np

from hal_core import (
    BufferUsage,
    CancelledError,
    FailedPreconditionError,
    FrontierTracker,
    HalError,
    HostCallFlags,
    InvalidArgumentError,
    MemoryAccess,
    MemoryType,
    OutOfRangeError,
    StatusCode,
    UnimplementedError,
    axis_make_queue,
)
from hal_core._command_buffer import (
    CMD_COPY,
    BufferRef,
    CommandBufferMode,
)
from hal_core._semaphore import _report_callback_error
from hal_core._status import as_hal_error, error_for
from hal_core.backend import (
    HostCallContext,
    QueueOp,
    QueueOpKind,
    host_call_outcome,
    resolve_waits,
)

from .aql_packets import (
    DISPATCH_SETUP_3D,
    HOST_IS_TSO,
    AmdFormat,
    FenceScope,
    PacketType,
    SignalCondition,
    emit_barrier_value,
    emit_dispatches,
    emit_nops,
    header_setup_word,
    make_header,
    new_staging,
    vendor_header_word,
)
from .aql_ring import AqlRing
from .block_processor import BlockProcessor
from .block_program import (
    BlockProgram,
    BuiltinKernels,
    KernelDescriptor,
    build_programs,
    hal_kernarg_image,
)
from .kernarg_ring import KERNARG_BLOCK_SIZE, KernargRing
from .notification_ring import DrainResult, NotificationRing
from .queue_pools import AmdgpuQueuePools

__all__ = [
    "load_device_library",
    "EPOCH_INITIAL_VALUE",
    "WaitBarrierStrategy",
    "HostQueueOptions",
    "HostQueue",
    "HostQueueSet",
    "GpuPrograms",
    "builtin_kernels_from_executable",
    "kernel_descriptor",
]

#: Initial value of every epoch signal; the completed epoch is ``INITIAL - load(signal)``.
EPOCH_INITIAL_VALUE = 4611686018427387903
_UINT64_MAX = (1 << 64) - 1
_UINT32_MAX = (1 << 32) - 1
_INT64_MAX = (1 << 63) - 1
_QUEUE_TYPE_MULTI = 0
_WAIT_BLOCKED = 0
#: Largest queue_update carried inside kernargs; larger ones use a host staging buffer.
UPDATE_INLINE_LIMIT = 16 * 1024
#: Seconds ``close`` waits for in-flight work before cancelling it.
CLOSE_DRAIN_TIMEOUT = 10.0

_K = QueueOpKind
_NO_ROOM, _MORE, _DONE = 0, 1, 2


class WaitBarrierStrategy(enum.IntEnum):
    """How a wait on a peer queue's epoch is expressed."""

    AUTO = 0  # barrier-value where the target supports it (gfx90a, gfx94x), else DEFER
    BARRIER_VALUE = 1  # always an AMD barrier-value packet
    DEFER = 2  # always software deferral (IREE's force_wait_barrier_defer)


def _power_of_two(name: str) -> Callable[[Any, Any, int], None]:
    def check(_i: Any, _a: Any, value: int) -> None:
        if value <= 0 or value & (value - 1):
            raise InvalidArgumentError(f"{name} must be a power of two, got {value}")
    return check


@attrs.frozen
class HostQueueOptions:
    """Ring capacities (powers of two) and the wait-barrier strategy.

    ``aql_capacity`` in packets; ``kernarg_capacity`` in bytes (64-byte blocks);
    ``notification_capacity`` in signal entries and in epochs.
    """

    aql_capacity: int = attrs.field(default=1024, validator=_power_of_two("aql_capacity"))
    kernarg_capacity: int = attrs.field(default=1 << 20,
                                        validator=_power_of_two("kernarg_capacity"))
    notification_capacity: int = attrs.field(default=1024,
                                             validator=_power_of_two("notification_capacity"))
    wait_barrier: WaitBarrierStrategy = WaitBarrierStrategy.AUTO

    def __attrs_post_init__(self) -> None:
        if self.kernarg_capacity < 4 * KERNARG_BLOCK_SIZE:
            raise InvalidArgumentError(
                f"kernarg_capacity {self.kernarg_capacity} is below the minimum "
                f"{4 * KERNARG_BLOCK_SIZE} bytes"
            )

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "HostQueueOptions":
        """From device URI parameters ``aql_capacity``, ``kernarg_capacity``,
        ``notification_capacity``, ``wait_barrier`` (auto|barrier_value|defer)."""
        kw: dict[str, Any] = {}
        for key in ("aql_capacity", "kernarg_capacity", "notification_capacity"):
            if key in params:
                try:
                    kw[key] = int(params[key], 0)
                except ValueError:
                    raise InvalidArgumentError(
                        f"device parameter {key}={params[key]!r} is not an integer"
                    ) from None
        if "wait_barrier" in params:
            try:
                kw["wait_barrier"] = WaitBarrierStrategy[params["wait_barrier"].upper()]
            except KeyError:
                raise InvalidArgumentError(
                    f"wait_barrier={params['wait_barrier']!r}; use auto, barrier_value or defer"
                ) from None
        return cls(**kw)


def kernel_descriptor(executable: Any, gpu_index: int, ordinal: int) -> KernelDescriptor:
    """A ``KernelDescriptor`` for function ``ordinal`` of a loaded ``AmdgpuExecutable``."""
    info = executable.dispatch_info[gpu_index][ordinal]
    layout = executable.layouts[ordinal]
    kernel = executable.kernels[ordinal]
    hidden = tuple((a.value_kind, a.offset, a.size) for a in kernel.args if a.hidden)
    return KernelDescriptor(
        kernel_object=info.kernel_object,
        kernarg_size=max(layout.kernarg_size, info.kernarg_segment_size),
        binding_count=layout.binding_count,
        constant_count=layout.constant_count,
        workgroup_size=kernel.reqd_workgroup_size or (1, 1, 1),
        private_segment_size=info.private_segment_size,
        group_segment_size=info.group_segment_size,
        explicit_size=layout.explicit_size,
        hidden_args=hidden,
        name=kernel.name,
    )


_FILL_KERNELS = {1: "hal_amdgpu_buffer_fill_x1", 2: "hal_amdgpu_buffer_fill_x2",
                 4: "hal_amdgpu_buffer_fill_x4", 8: "hal_amdgpu_buffer_fill_x8"}
_COPY_KERNELS = {1: "hal_amdgpu_buffer_copy_x1", 4: "hal_amdgpu_buffer_copy_x4",
                 16: "hal_amdgpu_buffer_copy_x16"}


def builtin_kernels_from_executable(executable: Any, gpu_index: int, wavefront_size: int,
                                    compute_units: int) -> BuiltinKernels:
    """The blit kernels of the device library loaded as ``executable``; INCOMPATIBLE-free
    NOT_FOUND naming the missing kernel if the library lacks one."""
    names = {k.name: i for i, k in enumerate(executable.kernels)}

    def get(name: str) -> KernelDescriptor:
        if name not in names:
            raise error_for(StatusCode.NOT_FOUND,
                            f"the amdgpu device library has no builtin kernel {name!r}; "
                            f"it has {sorted(names)}")
        return kernel_descriptor(executable, gpu_index, names[name])

    return BuiltinKernels(
        fill={w: get(n) for w, n in _FILL_KERNELS.items()},
        copy={w: get(n) for w, n in _COPY_KERNELS.items()},
        workgroup_size=max(32, wavefront_size),
        max_workgroups=max(1, 4 * compute_units),
    )


def load_device_library(hsa: Any, gpus: tuple) -> list[BuiltinKernels]:
    """Load the builtin blit kernels for every GPU (one code object per distinct target,
    chosen by processor name from ``hal_amdgpu/kernels``). INCOMPATIBLE when a GPU has no
    matching code object, naming the targets that ship."""
    import pathlib

    from hal_core import IncompatibleError

    from .executable import load_executable

    root = pathlib.Path(__file__).parent / "kernels"
    shipped = sorted(p.name for p in root.glob("blit--*.hsaco"))
    by_processor: dict[str, list[int]] = {}
    for i, gpu in enumerate(gpus):
        by_processor.setdefault(gpu.target.processor, []).append(i)
    out: list[Any] = [None] * len(gpus)
    for proc, indices in by_processor.items():
        path = root / f"blit--amdgcn-amd-amdhsa--{proc}.hsaco"
        if not path.exists():
            raise IncompatibleError(
                f"no builtin blit kernels for {proc} (GPUs {indices}); the device library "
                f"ships {shipped}; rebuild it with plugins/amdgpu/tools/build_kernels.sh"
            )
        # One executable per target, loaded on every GPU of that target.
        members = tuple(gpus[i] for i in indices)
        exe = load_executable(hsa, members, path.read_bytes())
        _LIBRARIES.append(exe)
        for row, i in enumerate(indices):
            out[i] = builtin_kernels_from_executable(exe, row, gpus[i].wavefront_size,
                                                     gpus[i].compute_unit_count)
    return out


#: Device-library executables stay loaded for the process (like IREE's embedded library).
_LIBRARIES: list[Any] = []


class _Sub:
    """One submission in flight through resolution, parking and publication."""

    __slots__ = ("op", "program", "block", "binding_ptrs", "static_ptrs", "barriers",
                 "action", "resources", "signals", "acquire", "table", "counts", "blit")

    def __init__(self, op: QueueOp) -> None:
        self.op = op
        self.program: BlockProgram | None = None
        self.block = 0
        self.binding_ptrs: np.ndarray | None = None
        self.static_ptrs: np.ndarray | None = None
        self.barriers: list[tuple["HostQueue", int]] = []
        self.action: Callable[[], None] | None = None
        self.resources: Any = None
        self.signals: tuple = op.signals
        self.acquire = 0
        self.table: tuple = ()
        self.counts: tuple[int, int, int] | None = None
        #: Single transfer fast path: ``_Blit`` once pointers are resolved at admission.
        self.blit: Any = None


_NOP_WORD_SYSTEM = header_setup_word(
    make_header(PacketType.BARRIER_AND, True, FenceScope.SYSTEM, FenceScope.SYSTEM))
_BLIT_WORD = header_setup_word(
    make_header(PacketType.KERNEL_DISPATCH, True, FenceScope.SYSTEM, FenceScope.SYSTEM),
    DISPATCH_SETUP_3D)
_BARRIER_VALUE_WORD = vendor_header_word(
    make_header(PacketType.VENDOR_SPECIFIC, True, FenceScope.SYSTEM, FenceScope.NONE),
    AmdFormat.BARRIER_VALUE)


class HostQueue:
    """One HAL queue over one HSA AQL queue (see module docstring). Thread-safe."""

    #: hal_amdgpu.profiling: set on the instance for a profiling session only.
    profiler: Any = None

    def __init__(self, qset: "HostQueueSet", gpu_index: int, queue_index: int,
                 options: HostQueueOptions) -> None:
        hsa = qset.hsa
        ffi = hsa.ffi
        lib = hsa.lib
        self.qset = qset
        self.hsa = hsa
        self.index = queue_index
        self.gpu_index = gpu_index
        self.options = options
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._idle = threading.Condition(threading.Lock())
        self.error: HalError | None = None
        self._closing = False
        self._closed = False
        self._parked: collections.deque[_Sub] = collections.deque()
        self._deferred: dict[_Sub, bool] = {}
        self._action_epochs: collections.deque[tuple[int, Callable[[], None]]] = (
            collections.deque())
        self.frontier: dict[int, int] = {}
        self.published_epoch = 0
        self.completed_epoch = 0
        self.axis = axis_make_queue(qset.tracker.session_epoch, qset.tracker.machine_index,
                                    gpu_index, queue_index)
        qset.tracker.register_axis(self.axis)
        agent = qset.gpus[gpu_index].hsa_handle(hsa)
        self._agent = agent

        # Signals first so that every later failure path can destroy them.
        sig = ffi.new("hsa_signal_t*")
        hsa.check(lib.hsa_amd_signal_create(EPOCH_INITIAL_VALUE, 0, ffi.NULL, 0, sig),
                  "hsa_amd_signal_create(epoch)")
        self.epoch_signal = ffi.new("hsa_signal_t*", [sig[0].handle])[0]
        self.epoch_handle = int(sig[0].handle)
        stop = ffi.new("hsa_signal_t*")
        hsa.check(lib.hsa_amd_signal_create(0, 0, ffi.NULL, 0, stop),
                  "hsa_amd_signal_create(stop)")
        self.stop_signal = ffi.new("hsa_signal_t*", [stop[0].handle])[0]

        # The HSA queue and its error callback (kept alive with the queue).
        self._error_callback = ffi.callback("void(hsa_status_t, hsa_queue_t*, void*)",
                                            self._on_queue_error)
        queue_ptr = ffi.new("hsa_queue_t**")
        status = lib.hsa_queue_create(agent, options.aql_capacity, _QUEUE_TYPE_MULTI,
                                      self._error_callback, ffi.NULL, _UINT32_MAX, _UINT32_MAX,
                                      queue_ptr)
        if status != 0:
            self._destroy_signals()
            hsa.check(status, f"hsa_queue_create({options.aql_capacity} packets)")
        self._queue = queue_ptr[0]
        if hsa.implementation != "soft" and not HOST_IS_TSO:
            self._destroy_hsa_queue()
            self._destroy_signals()
            raise UnimplementedError(
                "driving a hardware AQL queue needs a release barrier between packet bodies "
                "and headers that Python cannot issue on this (weakly ordered) host; use an "
                "x86-64 host or the software agent (hsa=soft)"
            )
        q = self._queue
        size = int(q.size)
        ring_bytes = ffi.buffer(ffi.cast("uint8_t*", q.base_address), size * 64)
        rows = np.frombuffer(ring_bytes, np.uint8).reshape(size, 64)
        desc = np.frombuffer(ffi.buffer(ffi.cast("uint8_t*", q), 256), np.uint64)
        doorbell = q.doorbell_signal
        store = lib.hsa_signal_store_screlease
        self.ring = AqlRing(rows, desc, lambda pid: store(doorbell, pid))

        # Kernarg ring in the CPU kernarg pool, readable by the GPU.
        out = ffi.new("void**")
        pool = qset.kernarg_pool
        status = lib.hsa_amd_memory_pool_allocate(
            ffi.new("hsa_amd_memory_pool_t*", [pool.handle])[0],
            pool.round_up(options.kernarg_capacity), 0, out)
        if status != 0:
            self._destroy_hsa_queue()
            self._destroy_signals()
            hsa.check(status, f"hsa_amd_memory_pool_allocate(kernarg ring, "
                              f"{options.kernarg_capacity} bytes)")
        self._kernarg_ptr = out[0]
        lib.hsa_amd_agents_allow_access(qset.access_count, qset.access_agents, ffi.NULL, out[0])
        address = int(ffi.cast("uintptr_t", out[0]))
        memory = np.frombuffer(ffi.buffer(ffi.cast("uint8_t*", out[0]),
                                          options.kernarg_capacity), np.uint8)
        self.kernargs = KernargRing(memory, address)
        self.processor = BlockProcessor(self.ring, self.kernargs)
        self.notifications = NotificationRing(options.notification_capacity,
                                              options.notification_capacity)
        self._drain_result = DrainResult()

        # Completion thread.
        self._wait_signals = ffi.new("hsa_signal_t[2]", [[self.epoch_handle],
                                                         [int(self.stop_signal.handle)]])
        self._wait_conds = ffi.new("uint32_t[2]", [SignalCondition.NE, SignalCondition.NE])
        self._wait_values = ffi.new("int64_t[2]", [EPOCH_INITIAL_VALUE, 0])
        self._thread = threading.Thread(
            target=self._completion_main,
            name=f"hal-amdgpu-gpu{gpu_index}q{queue_index}-complete", daemon=True)
        self._thread.start()

    # -- submission ----------------------------------------------------------------------

    def submit(self, sub: _Sub) -> None:
        """Resolve waits, then publish or park. Raises only for errors known at submit
        (OUT_OF_RANGE sizes); execution errors fail the op's signals."""
        if self.error is not None:
            self._fail_sub(sub, self.error)
            return
        if self._closing:
            raise FailedPreconditionError(
                f"amdgpu queue {self.index} is closing; submit before closing the device")
        deferred = self._resolve_waits(sub)
        if deferred is None:
            return  # failed
        if deferred:
            self._deferred[sub] = True
            resolve_waits(sub, tuple(deferred), self._on_deferred_ready,
                          self._on_deferred_failed)
            return
        self._admit(sub)

    def _resolve_waits(self, sub: _Sub) -> list | None:
        deferred: list = []
        last_signal = self.qset.last_signal
        barrier_ok = self.qset.barrier_value_supported
        for sem, value in sub.op.waits:
            failure = sem._failure
            if failure is not None:
                self._fail_sub(sub, failure.clone())
                return None
            if sem._value >= value:
                sub.acquire = FenceScope.SYSTEM
                continue
            entry = last_signal.get(sem)
            if entry is not None and entry[2] >= value:
                producer, epoch = entry[0], entry[1]
                if producer is self:
                    continue  # in-order queue: already behind the producer
                if self.frontier.get(producer.index, 0) >= epoch:
                    continue  # a previous device barrier covers it
                if producer.completed_epoch >= epoch:
                    sub.acquire = FenceScope.SYSTEM
                    continue
                if barrier_ok and producer.qset is self.qset and producer.error is None:
                    sub.barriers.append((producer, epoch))
                    continue
            deferred.append((sem, value))
        return deferred

    def _on_deferred_ready(self, sub: _Sub) -> None:
        if self._deferred.pop(sub, None) is None:
            return
        if self.error is not None:
            self._fail_sub(sub, self.error)
            return
        try:
            self._admit(sub)
        except HalError as exc:
            self._fail_sub(sub, exc)

    def _on_deferred_failed(self, sub: _Sub, error: HalError) -> None:
        if self._deferred.pop(sub, None) is None:
            return
        self._fail_sub(sub, error.clone())

    def _admit(self, sub: _Sub) -> None:
        if sub.blit is not None:
            # Pointers resolve once waits are met (an alloca may have just committed).
            try:
                sub.blit = self.qset.encode_blit(sub.op, self.gpu_index)
            except HalError as exc:
                self._fail_sub(sub, exc)
                return
        self._check_structural(sub)
        if sub.op.kind == _K.ALLOCA:
            # Reserve pool memory once the waits are met, before publication (later work
            # elided behind this submission sees a committed buffer). The pools end in
            # alloca_done, now or once memory is available.
            self.qset.pools.start(sub, self)
            return
        try:
            program = sub.program
            if program is not None:
                # Pointers resolve once waits are met: buffers may be committed by an
                # alloca this op waited for (FAILED_PRECONDITION when decommitted).
                if program.range_error is not None:
                    raise OutOfRangeError(program.range_error)
                if program.slot_extents:
                    sub.binding_ptrs = _binding_pointers(sub.table, program.slot_extents)
                if program.static_buffers:
                    sub.static_ptrs = _static_pointers(program.static_buffers)
                indirect = program.blocks[0].replay.indirect
                if indirect is not None:
                    sub.counts = _read_counts(self.qset, indirect, sub)
        except HalError as exc:
            self._fail_sub(sub, exc)
            return
        with self._lock:
            if self._parked or not self._try_publish(sub):
                self._parked.append(sub)

    def _check_structural(self, sub: _Sub) -> None:
        packets, blocks = self._sizes(sub)
        self.ring.check_fits(packets)
        self.kernargs.check_fits(blocks)
        self.notifications.check_fits(len(sub.signals))

    def _sizes(self, sub: _Sub) -> tuple[int, int]:
        barriers = len(sub.barriers)
        if sub.blit is not None and sub.blit.__class__ is _Blit:
            return barriers + 1, sub.blit.image.shape[0] // KERNARG_BLOCK_SIZE
        program = sub.program
        if program is None:
            return barriers + 1, 0
        # Every block must fit, not only the first: a later block that could never be
        # admitted would park the replay forever.
        return (barriers + max(1, program.max_block_packets),
                program.max_block_kernarg_blocks)

    def _try_publish(self, sub: _Sub) -> bool:
        """Publish ``sub`` from its current block on, as far as the rings allow; under
        ``_lock``. False (nothing changed) when not even the current block fits; a replay
        that stops part-way parks itself at the front (it resumes before newer work).
        A loop, not recursion: programs may have any number of blocks."""
        published = False
        while True:
            step = self._publish_block(sub)
            if step == _NO_ROOM:
                if published:
                    self._parked.appendleft(sub)
                    return True
                return False
            published = True
            if step == _DONE:
                return True

    def _publish_block(self, sub: _Sub) -> int:
        """Publish the current block of ``sub``: _NO_ROOM (no state change), _MORE (next
        block is ready to publish) or _DONE (final block published, or the next block is
        gated on this one's completion)."""
        program = sub.program
        final_block = program is None or sub.block == len(program.blocks) - 1
        signals = sub.signals if final_block else ()
        nbar = len(sub.barriers)
        blit = sub.blit
        if program is not None:
            block = program.blocks[sub.block]
            rp = block.replay
            payload = rp.packet_count
            kblocks = rp.kernarg_block_count
        elif blit is not None:
            block = None
            payload = 1
            kblocks = blit.image.shape[0] // KERNARG_BLOCK_SIZE
        else:
            block = None
            payload = 0
            kblocks = 0
        prof = self.profiler  # hal_amdgpu.profiling.QueueProfiler while a session runs
        # (profiled: a trailing NOP that carries the epoch signal; counting: aqlprofile's
        # start/read/stop packets around each dispatch, in this same admission)
        total = nbar + max(1, payload) + (0 if prof is None else prof.extra_slots(block, blit))
        if not self.notifications.can_admit(len(signals)):
            return _NO_ROOM
        if not self.kernargs.can_allocate(kblocks):
            return _NO_ROOM
        first = self.ring.try_reserve(total)
        if first < 0:
            return _NO_ROOM
        kstart = self.kernargs.allocate(kblocks)
        epoch = self.published_epoch + 1
        ring = self.ring
        # Wait-barrier prefix: barrier-value packets on peer epoch signals.
        if nbar:
            staging = new_staging(nbar)
            handles = np.fromiter((p.epoch_handle for p, _ in sub.barriers), np.uint64, nbar)
            values = np.fromiter((EPOCH_INITIAL_VALUE - e + 1 for _, e in sub.barriers),
                                 np.int64, nbar)
            emit_barrier_value(staging, signal=handles, value=values,
                               condition=SignalCondition.LT, mask=_INT64_MAX)
            ring.write_bodies(first, staging)
        if block is not None and payload:
            headers = self.processor.process_block(
                block, first + nbar, kstart, sub.binding_ptrs, sub.static_ptrs,
                self.epoch_handle, FenceScope.SYSTEM, sub.acquire, bool(nbar), sub.counts)
        elif blit is not None:
            headers = None
            kernargs = self.kernargs
            address = kernargs.address(kstart)
            image = blit.image
            if blit.self_offset >= 0:  # UPDATE: the payload follows the copy's kernargs
                image[:8].view("<u8")[0] = address + blit.self_offset
            kernargs.view(kstart, kblocks)[:] = image
            row = blit.row
            row.view("<u8")[0, 5] = address  # kernarg_address (byte 40)
            row.view("<u8")[0, 7] = self.epoch_handle  # completion_signal (byte 56)
            ring.write_bodies(first + nbar, row)
        else:
            # A payload-free submission (barrier, host action, empty program): one NOP
            # barrier packet carries the epoch signal.
            nop = new_staging(1)
            emit_nops(nop)
            nop.view("<u8")[0, 7] = self.epoch_handle
            ring.write_bodies(first + nbar, nop)
            headers = None
        if prof is not None:
            spread = prof.before_headers(self, sub, first + nbar, max(1, payload),
                                         total - nbar, headers, epoch, final_block)
            if spread is not None:
                headers = spread
        # Commit signals and bookkeeping before the headers: the completion thread can
        # only see this epoch once the final header is published.
        kend = kstart + kblocks if kblocks else -1
        resources = sub.resources if final_block else None
        self.notifications.push(epoch, signals, resources, kend)
        if sub.action is not None and final_block:
            self._action_epochs.append((epoch, sub.action))
        self.published_epoch = epoch
        if signals:
            ls = self.qset.last_signal
            for sem, value in signals:
                ls[sem] = (self, epoch, value)
        for producer, e in sub.barriers:
            if self.frontier.get(producer.index, 0) < e:
                self.frontier[producer.index] = e
        # Headers in packet order, then one doorbell.
        if nbar:
            for i in range(nbar):
                ring.commit_header(first + i, _BARRIER_VALUE_WORD)
        if headers is not None:
            ring.commit_headers(first + nbar, headers)
        elif blit is not None:
            ring.commit_header(first + nbar, _BLIT_WORD)
        else:
            ring.commit_header(first + nbar, _NOP_WORD_SYSTEM)
        ring.ring_doorbell(first + total - 1)
        if not final_block:
            # Chain the next block as its own submission (no waits, no signals).
            sub.block += 1
            sub.barriers = []
            sub.acquire = 0
            sub.counts = None
            if program.blocks[sub.block].replay.indirect is not None:
                # An indirect dispatch reads its counts once everything before it is done:
                # resume from the completion thread when this epoch retires.
                self._action_epochs.append((epoch, _IndirectGate(self, sub)))
                return _DONE
            return _MORE
        return _DONE

    def _resume(self, sub: _Sub) -> None:
        """Continue a gated replay (its indirect counts are in ``sub.counts``)."""
        if self.error is not None or self._closing:
            self._fail_sub(sub, self.error or CancelledError(
                "device closed during a command-buffer replay"))
            return
        with self._lock:
            if self._parked or not self._try_publish(sub):
                self._parked.append(sub)

    def alloca_done(self, sub: _Sub, error: HalError | None) -> None:
        """An alloca's memory is committed (``error`` None: publish the NOP carrying its
        signals) or it failed (fail its signals). Called by ``AmdgpuQueuePools`` from the
        admitting thread or a release / frontier callback; takes ``_lock`` only here."""
        if error is None:
            error = self.error
            if error is None and self._closing:
                error = CancelledError("device closed while a queue_alloca was waiting")
        if error is not None:
            self._fail_sub(sub, error)
            return
        with self._lock:
            if self._parked or not self._try_publish(sub):
                self._parked.append(sub)

    def _retry_parked(self) -> None:
        with self._lock:
            parked = self._parked
            while parked:
                sub = parked[0]
                if self.error is not None:
                    break
                parked.popleft()
                if not self._try_publish(sub):
                    parked.appendleft(sub)
                    break

    def _fail_sub(self, sub: _Sub, error: HalError) -> None:
        for sem, _ in sub.op.signals:
            sem.fail(error.clone())
        sub.op.retained = None
        sub.resources = None

    # -- completion ----------------------------------------------------------------------

    def _completion_main(self) -> None:
        lib = self.hsa.lib
        sigs, conds, vals = self._wait_signals, self._wait_conds, self._wait_values
        stop = self.stop_signal
        while True:
            lib.hsa_amd_signal_wait_any(2, sigs, conds, vals, _UINT64_MAX, _WAIT_BLOCKED,
                                        self.hsa.ffi.NULL)
            try:
                self._drain()
            except BaseException as exc:  # never let the thread die silently
                _report_callback_error(exc)
            if lib.hsa_signal_load_scacquire(stop) != 0:
                if self.error is not None:
                    self._fail_pending(self.error)
                    self._fail_stuck_peers(self.error)
                return

    def _drain(self) -> None:
        lib = self.hsa.lib
        with self._drain_lock:
            completed = EPOCH_INITIAL_VALUE - lib.hsa_signal_load_scacquire(self.epoch_signal)
            if completed <= self.completed_epoch:
                return
            # Arm the next wait from what was drained (not a fresh load): no lost wakeup.
            self._wait_values[0] = EPOCH_INITIAL_VALUE - completed
            ring = self.notifications
            actions = self._action_epochs
            batches: list[tuple[DrainResult, Callable[[], None] | None]] = []
            while actions and actions[0][0] <= completed:
                epoch, action = actions.popleft()
                batches.append((ring.drain(epoch), action))
            batches.append((ring.drain(completed), None))
            self.completed_epoch = completed
        kernarg_position = -1
        for result, action in batches:
            for sem, value in result.signals:
                sem._signal_from_queue(value)
            if result.kernarg_position >= 0:
                kernarg_position = result.kernarg_position
            result.resources.clear()
            if action is not None:
                try:
                    action()
                except BaseException as exc:
                    _report_callback_error(exc)
        with self._lock:
            if kernarg_position >= 0:
                self.kernargs.reclaim(kernarg_position)
        self._retry_parked()
        # The queue's frontier axis: "axis at epoch N" = all of this queue's work up to N.
        self.qset.tracker.advance(self.axis, completed)
        listener = self.qset.retire_listener
        if listener is not None:
            listener(self.index, completed)
        with self._idle:
            self._idle.notify_all()

    def _on_queue_error(self, status: int, _queue: Any, _data: Any) -> None:
        # Runs on the packet processor's (or ROCr's) thread: record the first error and
        # wake the completion thread, which fails everything outside this callback.
        if self.error is None:
            self.error = self.hsa.error(int(status), f"AMD GPU queue {self.index}")
        self.hsa.lib.hsa_signal_store_screlease(self.stop_signal, 1)

    def _fail_stuck_peers(self, error: HalError) -> None:
        """Peers that published a device barrier on an epoch of this (failed) queue that
        never retired are stuck behind it for good: fail them too (their completion
        threads drain what finished before the barrier, then fail the rest), so failure
        propagates instead of hanging. Each peer's own thread continues the cascade."""
        for peer in self.qset.queues:
            if peer is self or peer.error is not None:
                continue
            if peer.frontier.get(self.index, 0) > self.completed_epoch:
                peer.error = error_for(
                    error.code,
                    f"AMD GPU queue {peer.index} waits on queue {self.index}, which failed: "
                    f"{error}")
                self.hsa.lib.hsa_signal_store_screlease(peer.stop_signal, 1)

    def _fail_pending(self, error: HalError) -> None:
        """Fail every pending signal (notifications, host actions, parked, deferred) and
        the queue's frontier axis."""
        self.qset.tracker.fail_axis(self.axis, error)
        with self._drain_lock:
            result = self.notifications.fail_all()
            actions = list(self._action_epochs)
            self._action_epochs.clear()
        with self._lock:
            parked = list(self._parked)
            self._parked.clear()
        seen: set[int] = set()
        for sem, _value in result.signals:
            if id(sem) not in seen:
                seen.add(id(sem))
                sem.fail(error.clone())
        for _epoch, action in actions:
            fail = getattr(action, "fail", None)
            if fail is not None:
                fail(error)
        for sub in parked:
            self._fail_sub(sub, error.clone())
        for sub in list(self._deferred):
            if self._deferred.pop(sub, None) is not None:
                self._fail_sub(sub, error.clone())
        with self._idle:
            self._idle.notify_all()

    # -- lifetime ------------------------------------------------------------------------

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until every published epoch retired (or the queue failed)."""
        with self._idle:
            return self._idle.wait_for(
                lambda: self.error is not None or (
                    self.completed_epoch >= self.published_epoch and not self._parked),
                timeout)

    def close(self, timeout: float | None = None) -> None:
        """Cancel deferred work, wait (bounded) for in-flight work, stop the thread,
        destroy the HSA queue, fail what remains with CANCELLED, free rings and signals.
        Idempotent; never hangs."""
        if self._closed:
            return
        self._closing = True
        cancelled = CancelledError("device closed while the operation was waiting")
        for sub in list(self._deferred):
            if self._deferred.pop(sub, None) is not None:
                self._fail_sub(sub, cancelled.clone())
        self.wait_idle(CLOSE_DRAIN_TIMEOUT if timeout is None else timeout)
        lib = self.hsa.lib
        lib.hsa_signal_store_screlease(self.stop_signal, 1)
        if threading.current_thread() is not self._thread:  # closed from a host call
            self._thread.join()
        self._destroy_hsa_queue()
        self._drain()
        self._fail_pending(self.error or CancelledError(
            "device closed with work in flight on the GPU queue"))
        self._closed = True
        lib.hsa_amd_memory_pool_free(self._kernarg_ptr)
        self._destroy_signals()

    def _destroy_hsa_queue(self) -> None:
        q, self._queue = getattr(self, "_queue", None), None
        if q is not None:
            self.hsa.lib.hsa_queue_destroy(q)

    def _destroy_signals(self) -> None:
        lib = self.hsa.lib
        for name in ("epoch_signal", "stop_signal"):
            sig = self.__dict__.pop(name, None)
            if sig is not None:
                lib.hsa_signal_destroy(sig)


@attrs.frozen(eq=False)
class GpuPrograms:
    """A recording finalized for every GPU of a multi-GPU device (index = GPU)."""

    per_gpu: tuple

    @property
    def packet_count(self) -> int:
        return self.per_gpu[0].packet_count


class _ProgramContext:
    """``ProgramContext`` for one GPU of a ``HostQueueSet``."""

    def __init__(self, qset: "HostQueueSet", gpu_index: int, builtins: BuiltinKernels) -> None:
        self.qset = qset
        self.gpu_index = gpu_index
        self.builtins = builtins

    def kernel_descriptor(self, executable: Any, ordinal: int) -> KernelDescriptor:
        backend = getattr(executable, "backend", executable)
        # Per executable (weakly: a collected executable's id may be reused), per GPU.
        per_exe = self.qset._descriptors.get(backend)
        if per_exe is None:
            if not hasattr(backend, "dispatch_info"):
                raise InvalidArgumentError(
                    f"executable {executable!r} was not prepared by the amdgpu driver")
            per_exe = self.qset._descriptors[backend] = {}
        key = (ordinal, self.gpu_index)
        desc = per_exe.get(key)
        if desc is None:
            desc = per_exe[key] = kernel_descriptor(backend, self.gpu_index, ordinal)
        return desc

    def buffer_address(self, buffer: Any) -> int | None:
        if not buffer.is_committed:
            return None
        return buffer.storage().address + buffer.byte_offset

    def allocate_prepublished(self, byte_length: int) -> tuple[np.ndarray, int, Any]:
        return self.qset.allocate_host_coherent(self.gpu_index, byte_length)


class HostQueueSet:
    """A device's host queues plus what they share (see module docstring).

    ``gpus``/``gpu_pools``/``cpu_pools`` come from the device backend; ``builtins`` per GPU
    from the device library. ``submit(op)`` routes a ``QueueOp`` to queue ``op.queue``.
    """

    def __init__(self, hsa: Any, gpus: tuple, gpu_pools: tuple, cpu_pools: tuple,
                 access_handles: list[int], builtins: list[BuiltinKernels],
                 options: HostQueueOptions, queues_per_gpu: int,
                 allocator: Any = None) -> None:
        self.hsa = hsa
        self.gpus = gpus
        self.gpu_pools = gpu_pools
        self.kernarg_pool = cpu_pools[0].kernarg
        self.access_agents = hsa.ffi.new("hsa_agent_t[]", [[h] for h in access_handles])
        self.access_count = len(access_handles)
        self.allocator = allocator
        self.options = options
        self.last_signal: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.retire_listener: Callable[[int, int], None] | None = None
        self._descriptors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: One frontier axis per queue (device index = GPU, queue index = HAL queue).
        self.tracker = FrontierTracker(axis_capacity=max(256, queues_per_gpu * len(gpus)))
        strategy = options.wait_barrier
        if strategy == WaitBarrierStrategy.AUTO:
            self.barrier_value_supported = all(_supports_barrier_value(g) for g in gpus)
        else:
            self.barrier_value_supported = strategy == WaitBarrierStrategy.BARRIER_VALUE
        self.contexts = [_ProgramContext(self, i, b) for i, b in enumerate(builtins)]
        self.queues: list[HostQueue] = []
        self.pools: AmdgpuQueuePools | None = None
        try:
            for g in range(len(gpus)):
                for _ in range(queues_per_gpu):
                    self.queues.append(HostQueue(self, g, len(self.queues), options))
            if allocator is not None:
                self.pools = AmdgpuQueuePools(self, allocator)
        except BaseException:
            self.close(0)
            raise

    # -- memory for programs ------------------------------------------------------------

    def allocate_host_coherent(self, gpu_index: int, byte_length: int
                               ) -> tuple[np.ndarray, int, Any]:
        """Device-local, host-visible, host-coherent bytes (the GPU fine pool)."""
        from .allocator import HsaStorage

        hsa = self.hsa
        ffi = hsa.ffi
        pool = self.gpu_pools[gpu_index].fine
        out = ffi.new("void**")
        hsa.check(hsa.lib.hsa_amd_memory_pool_allocate(
            ffi.new("hsa_amd_memory_pool_t*", [pool.handle])[0], pool.round_up(byte_length),
            0, out), f"hsa_amd_memory_pool_allocate(prepublished kernargs, {byte_length} bytes)")
        hsa.lib.hsa_amd_agents_allow_access(self.access_count, self.access_agents, ffi.NULL,
                                            out[0])
        address = int(ffi.cast("uintptr_t", out[0]))
        storage = HsaStorage(hsa, address, byte_length, 1, True)
        return storage.host_array, address, storage

    # -- command buffers ----------------------------------------------------------------

    def finalize_command_buffer(self, commands: list, mode: int, binding_capacity: int
                                ) -> Any:
        """Build the block program of a recording: one ``BlockProgram`` on a single-GPU
        device, a ``GpuPrograms`` (one per GPU: kernel objects and prepublished kernargs
        are per agent) otherwise."""
        # The recording is read once; GPUs share its facts and differ only in kernel
        # objects and prepublished storage (block_program.build_programs).
        programs = self._build(commands, mode, self.contexts)
        if len(programs) == 1:
            return programs[0]
        return GpuPrograms(programs)

    def _build(self, commands: list, mode: int, contexts: list) -> tuple:
        # Blocks are sized to a quarter of the rings so replay always fits and a few
        # blocks can be in flight at once.
        options = self.options
        return build_programs(commands, mode, contexts,
                              block_packet_capacity=max(1, options.aql_capacity // 4),
                              block_kernarg_capacity=options.kernarg_capacity // 4)

    # -- submission ---------------------------------------------------------------------

    def submit(self, op: QueueOp) -> None:
        queue = self.queues[op.queue]
        sub = _Sub(op)
        kind = op.kind
        sub.resources = op.retained
        if kind == _K.EXECUTE or kind == _K.DISPATCH:
            program = op.data
            if program.__class__ is GpuPrograms:
                program = program.per_gpu[queue.gpu_index]
            if not isinstance(program, BlockProgram):
                raise UnimplementedError(
                    f"amdgpu cannot replay a {type(program).__name__}; command buffers must "
                    "be finalized by the amdgpu device")
            sub.program = program
            if kind == _K.EXECUTE:
                sub.table = op.extra
        elif kind == _K.FILL or kind == _K.COPY:
            # Encoded at admission (encode_blit); with nothing to move, a NOP carries the
            # signals.
            if op.length:
                sub.blit = True
        elif kind == _K.UPDATE:
            if op.length > UPDATE_INLINE_LIMIT:
                # Large updates are staged in host memory the GPU reads (kept until retired).
                staging = self._staging_buffer(op.length)
                staging.host_bytes()[:] = op.data
                ref = BufferRef(op.target, op.target_offset, op.length)
                sub.program = self._one_shot(
                    (CMD_COPY, BufferRef(staging, 0, op.length), ref), queue)
                sub.resources = [op.retained, staging]
            elif op.length:
                sub.blit = True  # small ones ride inside the blit's kernargs
        elif kind == _K.HOST_CALL:
            sub.action = _HostCallAction(self, op)
            sub.signals = ()
        elif kind == _K.READ or kind == _K.WRITE:
            sub.action = _FileAction(self, op)
            sub.signals = ()
        elif kind == _K.ALLOCA:
            if self.pools is None:
                raise UnimplementedError(
                    "this amdgpu queue set has no allocator, so no pools for queue_alloca")
            # Pool, size and alignment checks (and, with no pending waits, the reservation)
            # happen now; the memory commits at admission (AmdgpuQueuePools.start) and a
            # NOP carries the signals.
            self.pools.prepare(op)
            try:
                queue.submit(sub)
            except BaseException:
                self.pools.abandon(op)
                raise
            return
        elif kind == _K.DEALLOCA:
            sub.action = _DeallocaAction(self, op)
            sub.signals = ()
        elif kind != _K.BARRIER:  # a barrier is a NOP that carries the signals
            raise UnimplementedError(
                f"amdgpu does not implement queue operation {QueueOpKind(kind).name}")
        if sub.program is not None and sub.program.packet_count == 0:
            sub.program = None
        queue.submit(sub)

    def encode_blit(self, op: QueueOp, gpu_index: int) -> "_Blit":
        """The packet body and kernargs of one queue_fill / queue_copy / small
        queue_update (the transfer fast path: no block program per operation).
        FAILED_PRECONDITION when a buffer is not (or no longer) committed."""
        builtins = self.contexts[gpu_index].builtins
        kind = op.kind
        length = op.length
        self_offset = -1
        payload = b""
        if kind == _K.FILL:
            width = len(op.data)
            desc = builtins.fill[width]
            target = op.target.storage().address + op.target.byte_offset + op.target_offset
            pointers = [target]
            elements = length // width
            scalars = [elements, int.from_bytes(op.data, "little")]
        elif kind == _K.COPY:
            src = op.source.storage().address + op.source.byte_offset + op.source_offset
            dst = op.target.storage().address + op.target.byte_offset + op.target_offset
            bits = src | dst | length
            width = 16 if bits % 16 == 0 else 4 if bits % 4 == 0 else 1
            desc = builtins.copy[width]
            pointers = [src, dst]
            elements = length // width
            scalars = [elements]
        else:  # UPDATE
            desc = builtins.copy[1]
            dst = op.target.storage().address + op.target.byte_offset + op.target_offset
            pointers = [0, dst]
            elements = length
            scalars = [length]
            payload = bytes(op.data)
        wg = builtins.workgroup_size
        groups = max(1, min(builtins.max_workgroups, -(-elements // wg)))
        image = hal_kernarg_image(desc, pointers, np.asarray(scalars, np.uint64).tobytes(),
                                  (groups, 1, 1), (wg, 1, 1))
        if payload:
            self_offset = image.shape[0]
            padded = -(-len(payload) // KERNARG_BLOCK_SIZE) * KERNARG_BLOCK_SIZE
            tail = np.zeros(padded, np.uint8)
            tail[: len(payload)] = np.frombuffer(payload, np.uint8)
            image = np.concatenate([image, tail])
        row = new_staging(1)
        emit_dispatches(row, kernel_object=desc.kernel_object, workgroup_size=(wg, 1, 1),
                        grid_size=(groups * wg, 1, 1), kernarg_address=0,
                        private_segment_size=desc.private_segment_size,
                        group_segment_size=desc.group_segment_size)
        return _Blit(image, row, self_offset)

    def _staging_buffer(self, length: int) -> Any:
        from hal_core._buffer import Buffer
        from hal_core._memory import BufferParams

        params = BufferParams(type=MemoryType.HOST_LOCAL | MemoryType.DEVICE_VISIBLE,
                              usage=BufferUsage.TRANSFER | BufferUsage.MAPPING)
        storage, memory_type = self.allocator.allocate(params, length)
        return Buffer(storage, memory_type=memory_type, allowed_usage=params.usage,
                      allowed_access=MemoryAccess.ALL, allocation_size=length)

    def _one_shot(self, command: tuple, queue: HostQueue) -> BlockProgram:
        return self._build([command], CommandBufferMode.ONE_SHOT,
                           [self.contexts[queue.gpu_index]])[0]

    def close(self, timeout: float | None = None) -> None:
        errors = []
        for q in self.queues:
            try:
                q.close(timeout)
            except BaseException as exc:  # close every queue even if one fails
                errors.append(exc)
        self.queues = []
        if self.pools is not None:
            # After the queues: in-flight deallocas have released; parked allocas cancel.
            self.pools.close()
        self.tracker.close()
        if errors:
            raise errors[0]


def _supports_barrier_value(gpu: Any) -> bool:
    """AMD barrier-value packets are validated on gfx90a and gfx94x (steppings 0-2)."""
    t = gpu.target
    major, minor, stepping = t.major, t.minor, t.stepping
    return (major, minor, stepping) == (9, 0, 10) or (major == 9 and minor == 4
                                                      and stepping <= 2)


def _binding_pointers(table: tuple, extents: dict) -> np.ndarray:
    """Device address of every binding-table slot (binding offset included), after checking
    that each slot the program uses exists and covers the bytes it reaches (the checks
    an UNVALIDATED recording skipped; failures fail the submission at execution)."""
    from hal_core._memory import WHOLE_BUFFER

    n = len(table)
    for slot, extent in extents.items():
        if slot >= n:
            raise OutOfRangeError(
                f"the command buffer uses binding-table slot {slot} but the table has {n} "
                "entries")
        binding = table[slot]
        if binding is None or binding.buffer is None:
            raise InvalidArgumentError(f"binding-table slot {slot} holds no buffer")
        length = binding.length
        if length == WHOLE_BUFFER:
            length = binding.buffer.byte_length - binding.offset
        if extent > length or binding.offset + length > binding.buffer.byte_length:
            raise OutOfRangeError(
                f"the command buffer reaches byte {extent} of binding-table slot {slot}, "
                f"which binds {length} bytes")
    ptrs = np.zeros(max(1, n), np.uint64)
    for slot, binding in enumerate(table):
        if binding is None or binding.buffer is None:
            continue
        buf = binding.buffer
        ptrs[slot] = buf.storage().address + buf.byte_offset + binding.offset
    return ptrs


def _static_pointers(buffers: tuple) -> np.ndarray:
    ptrs = np.zeros(len(buffers), np.uint64)
    for i, buf in enumerate(buffers):
        ptrs[i] = buf.storage().address + buf.byte_offset  # FAILED_PRECONDITION if decommitted
    return ptrs


class _Blit:
    """An encoded single-transfer packet: kernarg image, staged body, self-pointer slot."""

    __slots__ = ("image", "row", "self_offset")

    def __init__(self, image: np.ndarray, row: np.ndarray, self_offset: int) -> None:
        self.image = image
        self.row = row
        self.self_offset = self_offset


def _read_counts(qset: "HostQueueSet", indirect: tuple, sub: _Sub) -> tuple[int, int, int]:
    """Read the three uint32 workgroup counts of an indirect dispatch (any memory kind,
    through ``hsa_memory_copy``)."""
    from .block_program import BindingSourceFlags

    kind, slot, ptr = indirect[0], indirect[1], indirect[2]
    if kind == BindingSourceFlags.DYNAMIC:
        address = int(sub.binding_ptrs[slot]) + ptr  # type: ignore[index]
    elif kind == BindingSourceFlags.STATIC_BUFFER:
        address = int(sub.static_ptrs[slot]) + ptr  # type: ignore[index]
    else:
        address = ptr
    hsa = qset.hsa
    ffi = hsa.ffi
    out = np.zeros(3, np.uint32)
    hsa.check(hsa.lib.hsa_memory_copy(ffi.from_buffer(out), ffi.cast("void*", address), 12),
              "hsa_memory_copy(indirect dispatch parameters)")
    return int(out[0]), int(out[1]), int(out[2])


class _IndirectGate:
    """Runs when the block before an indirect dispatch retired: read the counts, resume."""

    __slots__ = ("queue", "sub")

    def __init__(self, queue: HostQueue, sub: _Sub) -> None:
        self.queue = queue
        self.sub = sub

    def __call__(self) -> None:
        try:
            self.sub.counts = _read_counts(self.queue.qset,
                                           self.sub.program.blocks[self.sub.block].replay.indirect,
                                           self.sub)
        except HalError as exc:
            self.queue._fail_sub(self.sub, exc)
            return
        self.queue._resume(self.sub)

    def fail(self, error: HalError) -> None:
        self.queue._fail_sub(self.sub, error.clone())


# -- host actions: run on the completion thread when their epoch retires ---------------------


class _Action:
    """Base of the host actions (called on the completion thread): ``signal()`` /
    ``fail(error)`` complete the op's semaphores; ``fail`` alone is also how queue errors
    and teardown cancel an action that never ran."""

    __slots__ = ("qset", "op")

    def __init__(self, qset: HostQueueSet, op: QueueOp) -> None:
        self.qset = qset
        self.op = op

    def signal(self) -> None:
        for sem, value in self.op.signals:
            sem._signal_from_queue(value)
        self.op.retained = None

    def fail(self, error: HalError) -> None:
        for sem, _value in self.op.signals:
            sem.fail(error.clone() if hasattr(error, "clone") else error)
        self.op.retained = None



class _RunAction(_Action):
    """An action whose host work is ``run()``: signal when it returns, fail when it raises."""

    __slots__ = ()

    def __call__(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self.fail(as_hal_error(exc))
            return
        self.signal()


class _HostCallAction(_Action):
    __slots__ = ()

    def __call__(self) -> None:
        op = self.op
        fn = op.data
        device = getattr(self.qset, "device", None)
        affinity = 1 << op.queue
        if op.flags & HostCallFlags.NON_BLOCKING:
            self.signal()
            try:
                fn(op.extra, HostCallContext(device, affinity, ()))
            except BaseException as exc:  # NON_BLOCKING errors are ignored by contract
                _report_callback_error(exc)
            return
        try:
            result = fn(op.extra, HostCallContext(device, affinity, op.signals))
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self.fail(as_hal_error(exc))
            return
        outcome = host_call_outcome(result)
        if outcome is None:
            self.signal()
        elif outcome is StatusCode.DEFERRED:
            op.retained = None  # the callback owns the signals now
        else:
            self.fail(outcome)


class _FileAction(_RunAction):
    """queue_read / queue_write: file bytes to/from buffer memory through host memory
    (``hsa_memory_copy`` when the buffer is not host-visible)."""

    __slots__ = ()

    def run(self) -> None:
        op = self.op
        if not op.length:
            return
        hsa = self.qset.hsa
        ffi = hsa.ffi
        if op.kind == _K.READ:
            buf = op.target
            storage = buf.storage()
            if storage.host_array is not None:
                op.source.read_into(op.source_offset, buf.host_bytes(op.target_offset, op.length))
                return
            tmp = np.empty(op.length, np.uint8)
            op.source.read_into(op.source_offset, tmp)
            dst = storage.address + buf.byte_offset + op.target_offset
            hsa.check(hsa.lib.hsa_memory_copy(ffi.cast("void*", dst), ffi.from_buffer(tmp),
                                              op.length), "hsa_memory_copy(queue_read)")
        else:
            buf = op.source
            storage = buf.storage()
            if storage.host_array is not None:
                op.target.write_from(op.target_offset, buf.host_bytes(op.source_offset, op.length))
                return
            tmp = np.empty(op.length, np.uint8)
            src = storage.address + buf.byte_offset + op.source_offset
            hsa.check(hsa.lib.hsa_memory_copy(ffi.from_buffer(tmp), ffi.cast("void*", src),
                                              op.length), "hsa_memory_copy(queue_write)")
            op.target.write_from(op.target_offset, tmp)


class _DeallocaAction(_RunAction):
    __slots__ = ()

    def run(self) -> None:
        # FAILED_PRECONDITION for a buffer that is not committed; releases pool memory
        # with this queue's completion frontier.
        pools = self.qset.pools
        if pools is None:
            raise UnimplementedError("this amdgpu queue set has no pools for queue_dealloca")
        pools.dealloca(self.op, self.qset.queues[self.op.queue])
