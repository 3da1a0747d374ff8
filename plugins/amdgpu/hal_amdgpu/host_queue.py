"""Host queues: HAL queue operations turned directly into AQL packets on an HSA queue.

One ``HostQueue`` per HAL queue (``QUEUES_PER_GPU`` per GPU) owns: an HSA AQL queue (its
ring viewed through ``AqlRing``), a kernarg ring in the CPU kernarg pool, one *epoch
signal* that is the completion signal of every submission's last packet, a notification
ring mapping epochs to semaphore signals and retained resources, and a completion thread.
``queue_set.HostQueueSet`` owns a device's queues and what they share (the last-signal
table used for wait elision, the device library, the command-buffer finalizer) and turns
each ``QueueOp`` into a submission (``_Sub``) for ``HostQueue.submit``. This module is
the submission side; ``queue_completion`` is the completion side (draining, failure,
close) that ``HostQueue`` inherits.

Flow of one operation (``HostQueueSet.submit`` -> ``HostQueue.submit``):

1. Wait resolution by tiers (``wait_barriers.resolve_waits_by_tier``): a wait already
   reached costs nothing; a wait whose producer
   (recorded when the producing submission was published) is this queue is elided (every
   packet carries the BARRIER bit, so the queue is an in-order chain); a producer epoch the
   queue's frontier already covers, or that has retired, is elided; a producer epoch on a
   peer queue of this device (or of a group member's, below) becomes a *device barrier*
   on the peer's epoch signal: an AMD
   barrier-value packet where the target has them (gfx90a, gfx94x), else a PM4-IB packet
   whose indirect buffer (``pm4_packets``) holds ``WAIT_REG_MEM64`` and ``ACQUIRE_MEM``
   (gfx11, gfx12); anything else (host-signalled values, wait-before-signal, failed
   semaphores, targets with neither packet) is *deferred in software* with semaphore
   timepoints and resubmitted from the signalling thread, and counted in
   ``deferred_waits``. The peer-queue tiers apply only
   when the op signals no semaphore another queue still has to signal on the host:
   otherwise this queue's completion thread could signal a higher value before the peer's
   thread signals a lower one (which fails the semaphore), so the wait is deferred.
   Pointers are resolved at admission (``admission_pointers``).
2. Admission under the submission lock: the notification ring, the kernarg ring and the AQL
   ring (``try_reserve``, last because it changes state) must all have room; otherwise the
   submission is *parked* (FIFO) and retried after the next drain. Sizes that could never
   fit raise OUT_OF_RANGE at submit. Parked work never blocks the rings it waits on, so
   parking cannot deadlock.
3. Publication: kernargs, packet bodies, the epoch signal on the final packet, header words
   in packet order, one doorbell store (``aql_packets`` explains the order).
4. Completion (``queue_completion``): the thread drains retired epochs in order, runs host
   actions at their epoch, signals semaphores, reclaims kernarg space and retries parked
   submissions.

Payloads: a single fill/copy/update is one builtin blit packet encoded directly at
admission (the transfer fast path); dispatches and command buffers replay a block program
(``block_program``) block by block through the ``BlockProcessor``; barriers and host work
(host calls, file reads/writes, deallocas) publish one NOP barrier packet whose epoch runs
the host action on the completion thread before any later signal. A block opened by an
indirect dispatch is published only once the blocks before it retired, after the host
read its workgroup counts (no device-side patch kernel is shipped).

queue_alloca from an explicit pool goes through the device's pool layer like any other
alloca, and profiling taps record through ``profiler`` (set by ``hal_amdgpu.profiling`` for
a profiling session only). Between devices of one device group over one HSA system the
queue sets share a last-signal table (``group_waits``), so the same tiers apply to waits
on another member's queues.

Locks: ``_lock`` (submission: rings, epochs, parking, frontier) and the completion side's
locks (``queue_completion``). No lock is held while semaphores are signalled or user
callbacks run, so completions may submit more work to any queue (zero-hop chaining).
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from hal_core import (
    CancelledError,
    FailedPreconditionError,
    HalError,
    InternalError,
    OutOfRangeError,
    UnimplementedError,
    error_for,
)
from hal_core.backend import (
    QueueOpKind,
    axis_make_queue,
    resolve_waits,
)

from .admission_pointers import binding_pointers, read_indirect_counts, static_pointers
from .aql_packets import (
    DISPATCH_SETUP_3D,
    HOST_IS_TSO,
    AmdFormat,
    FenceScope,
    PacketType,
    SignalCondition,
    emit_barrier_value,
    emit_nops,
    header_setup_word,
    make_header,
    new_staging,
    vendor_header_word,
)
from .aql_ring import AqlRing
from .block_processor import BlockProcessor
from .device_library import (
    builtin_kernels_from_executable,
    kernel_descriptor,
    load_device_library,
)
from .group_waits import keep_epoch_signal
from .kernarg_ring import KERNARG_BLOCK_SIZE, KernargRing
from .notification_ring import DrainResult, NotificationRing
from .queue_completion import (
    CLOSE_DRAIN_TIMEOUT,
    EPOCH_INITIAL_VALUE,
    QueueCompletion,
    fail_signals,
)
from .queue_options import HostQueueOptions, WaitBarrierStrategy
from .queue_submission import _Blit, _Sub
from .wait_barriers import (
    WAIT_TIER_BARRIER_VALUE,
    WAIT_TIER_DEFER,
    WAIT_TIER_PM4,
    Pm4WaitBuffers,
    resolve_waits_by_tier,
    wait_tier,
)

if TYPE_CHECKING:
    from .queue_set import HostQueueSet

__all__ = [
    "CLOSE_DRAIN_TIMEOUT",
    "EPOCH_INITIAL_VALUE",
    "UPDATE_INLINE_LIMIT",
    "WAIT_TIER_BARRIER_VALUE",
    "WAIT_TIER_DEFER",
    "WAIT_TIER_PM4",
    "HostQueue",
    # Re-exported from the modules that define them, for existing callers.
    "HostQueueOptions",
    "WaitBarrierStrategy",
    "builtin_kernels_from_executable",
    "kernel_descriptor",
    "load_device_library",
]

_UINT32_MAX = (1 << 32) - 1
_INT64_MAX = (1 << 63) - 1
_QUEUE_TYPE_MULTI = 0
#: Largest queue_update carried inside kernargs; larger ones use a host staging buffer.
UPDATE_INLINE_LIMIT = 16 * 1024

_K = QueueOpKind
_NO_ROOM, _MORE, _DONE = 0, 1, 2


_NOP_WORD_SYSTEM = header_setup_word(
    make_header(PacketType.BARRIER_AND, True, FenceScope.SYSTEM, FenceScope.SYSTEM)
)
_BLIT_WORD = header_setup_word(
    make_header(PacketType.KERNEL_DISPATCH, True, FenceScope.SYSTEM, FenceScope.SYSTEM),
    DISPATCH_SETUP_3D,
)
_BARRIER_VALUE_WORD = vendor_header_word(
    make_header(PacketType.VENDOR_SPECIFIC, True, FenceScope.SYSTEM, FenceScope.NONE),
    AmdFormat.BARRIER_VALUE,
)
#: A PM4-IB wait: its indirect buffer ends with the acquire (ACQUIRE_MEM), so the AQL
#: header needs no fence of its own.
_PM4_IB_WAIT_WORD = vendor_header_word(
    make_header(PacketType.VENDOR_SPECIFIC, True, FenceScope.NONE, FenceScope.NONE),
    AmdFormat.PM4_IB,
)


class HostQueue(QueueCompletion):
    """One HAL queue over one HSA AQL queue (see module docstring). Thread-safe."""

    #: hal_amdgpu.profiling: set on the instance for a profiling session only.
    profiler: Any = None

    def __init__(
        self, qset: "HostQueueSet", gpu_index: int, queue_index: int, options: HostQueueOptions
    ) -> None:
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
        self._action_epochs: collections.deque[tuple[int, Callable[[], None]]] = collections.deque()
        #: Retired epochs not yet run by ``_drain`` (completion thread only).
        self._batches: collections.deque[tuple[DrainResult, Callable[[], None] | None]] = (
            collections.deque()
        )
        #: Teardown deferred to the completion thread's end; None once it ended.
        self._exit_lock = threading.Lock()
        self._exit_hooks: list[Callable[[], None]] | None = []
        #: producer queue (of this set or of a group wait domain's) -> the highest epoch
        #: of it this queue published a device barrier on.
        self.frontier: dict[Any, int] = {}
        self.published_epoch = 0
        self.completed_epoch = 0
        #: Epochs whose semaphores the completion thread has signalled on the host.
        self.signalled_epoch = 0
        self.axis = axis_make_queue(
            qset.tracker.session_epoch, qset.tracker.machine_index, gpu_index, queue_index
        )
        qset.tracker.register_axis(self.axis)
        agent = qset.gpus[gpu_index].hsa_handle(hsa)
        self._agent = agent
        #: Waits this queue deferred to the host (one per wait, not per op), for tests and
        #: diagnostics; added to under ``_lock``.
        self.deferred_waits = 0
        self.wait_tier = wait_tier(qset, qset.gpus[gpu_index].target, options)

        # Signals first so that every later failure path can destroy them.
        sig = ffi.new("hsa_signal_t*")
        hsa.check(
            lib.hsa_amd_signal_create(EPOCH_INITIAL_VALUE, 0, ffi.NULL, 0, sig),
            "hsa_amd_signal_create(epoch)",
        )
        self.epoch_signal = ffi.new("hsa_signal_t*", [sig[0].handle])[0]
        self.epoch_handle = int(sig[0].handle)
        stop = ffi.new("hsa_signal_t*")
        hsa.check(lib.hsa_amd_signal_create(0, 0, ffi.NULL, 0, stop), "hsa_amd_signal_create(stop)")
        self.stop_signal = ffi.new("hsa_signal_t*", [stop[0].handle])[0]

        # The HSA queue and its error callback (kept alive with the queue).
        self._error_callback = ffi.callback(
            "void(hsa_status_t, hsa_queue_t*, void*)", self._on_queue_error
        )
        queue_ptr = ffi.new("hsa_queue_t**")
        status = lib.hsa_queue_create(
            agent,
            options.aql_capacity,
            _QUEUE_TYPE_MULTI,
            self._error_callback,
            ffi.NULL,
            _UINT32_MAX,
            _UINT32_MAX,
            queue_ptr,
        )
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
        #: The PM4 tier's indirect buffers, one slot per packet slot (freed with the
        #: kernarg ring).
        self._pm4_waits = Pm4WaitBuffers(qset, self.ring.capacity)

        # Kernarg ring in the CPU kernarg pool, readable by the GPU.
        out = ffi.new("void**")
        pool = qset.kernarg_pool
        status = lib.hsa_amd_memory_pool_allocate(
            ffi.new("hsa_amd_memory_pool_t*", [pool.handle])[0],
            pool.round_up(options.kernarg_capacity),
            0,
            out,
        )
        if status != 0:
            self._destroy_hsa_queue()
            self._destroy_signals()
            hsa.check(
                status,
                f"hsa_amd_memory_pool_allocate(kernarg ring, {options.kernarg_capacity} bytes)",
            )
        self._kernarg_ptr = out[0]
        lib.hsa_amd_agents_allow_access(qset.access_count, qset.access_agents, ffi.NULL, out[0])
        address = int(ffi.cast("uintptr_t", out[0]))
        memory = np.frombuffer(
            ffi.buffer(ffi.cast("uint8_t*", out[0]), options.kernarg_capacity), np.uint8
        )
        self.kernargs = KernargRing(memory, address)
        self.processor = BlockProcessor(self.ring, self.kernargs)
        self.notifications = NotificationRing(
            options.notification_capacity, options.notification_capacity
        )
        self._drain_result = DrainResult()

        # Completion thread.
        self._wait_signals = ffi.new(
            "hsa_signal_t[2]", [[self.epoch_handle], [int(self.stop_signal.handle)]]
        )
        self._wait_conds = ffi.new("uint32_t[2]", [SignalCondition.NE, SignalCondition.NE])
        self._wait_values = ffi.new("int64_t[2]", [EPOCH_INITIAL_VALUE, 0])
        self._thread = threading.Thread(
            target=self._completion_main,
            name=f"hal-amdgpu-gpu{gpu_index}q{queue_index}-complete",
            daemon=True,
        )
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
                f"amdgpu queue {self.index} is closing; submit before closing the device"
            )
        deferred = resolve_waits_by_tier(self, sub)
        if deferred is None:
            return  # failed
        if deferred:
            self._deferred[sub] = True
            resolve_waits(sub, tuple(deferred), self._on_deferred_ready, self._on_deferred_failed)
            return
        self._admit(sub)

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
                    sub.binding_ptrs = binding_pointers(sub.table, program.slot_extents)
                if program.static_buffers:
                    sub.static_ptrs = static_pointers(program.static_buffers)
                indirect = program.blocks[0].replay.indirect
                if indirect is not None:
                    sub.counts = read_indirect_counts(
                        self.hsa, indirect, sub.binding_ptrs, sub.static_ptrs
                    )
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
        return (barriers + max(1, program.max_block_packets), program.max_block_kernarg_blocks)

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

    def _write_wait_prefix(self, first: int, barriers: list) -> None:
        """Write the wait-barrier prefix at ring slot ``first``: one barrier-value or PM4-IB
        packet per ``(producer queue, epoch)`` in ``barriers``, on the producers' epoch
        signals. Caller holds the submission lock (the slots are reserved)."""
        nbar = len(barriers)
        staging = new_staging(nbar)
        if self.wait_tier == WAIT_TIER_PM4:
            self._pm4_waits.emit(staging, first, barriers)
        else:
            handles = np.fromiter((p.epoch_handle for p, _ in barriers), np.uint64, nbar)
            values = np.fromiter((EPOCH_INITIAL_VALUE - e + 1 for _, e in barriers), np.int64, nbar)
            emit_barrier_value(
                staging, signal=handles, value=values, condition=SignalCondition.LT, mask=_INT64_MAX
            )
        self.ring.write_bodies(first, staging)

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
        if nbar:
            self._write_wait_prefix(first, sub.barriers)
        if block is not None and payload:
            headers = self.processor.process_block(
                block,
                first + nbar,
                kstart,
                sub.binding_ptrs,
                sub.static_ptrs,
                self.epoch_handle,
                FenceScope.SYSTEM,
                sub.acquire,
                bool(nbar),
                sub.counts,
            )
        else:
            self._write_transfer_body(blit, first + nbar, kstart, kblocks)
            headers = None
        if prof is not None:
            spread = prof.before_headers(
                self, sub, first + nbar, max(1, payload), total - nbar, headers, epoch, final_block
            )
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
        if sub.barriers:
            self._advance_frontier(sub.barriers)
        # Headers in packet order, then one doorbell.
        self._commit_headers(first, nbar, headers, blit)
        ring.ring_doorbell(first + total - 1)
        if not final_block and program is not None:  # (final_block when program is None)
            return self._chain_next_block(sub, program, epoch)
        return _DONE

    def _chain_next_block(self, sub: _Sub, program: Any, epoch: int) -> int:
        """Make the next block of ``sub`` its own submission (no waits, no signals): _MORE
        to publish it now, _DONE when it is gated on ``epoch``. Called under ``_lock``."""
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

    def _write_transfer_body(self, blit: Any, at: int, kstart: int, kblocks: int) -> None:
        """Write the packet body of a blit (its kernargs too) or, with no blit, of the NOP
        barrier packet that carries the epoch signal of a payload-free submission (barrier,
        host action, empty program). Called under ``_lock`` with the slots reserved."""
        ring = self.ring
        if blit is not None:
            kernargs = self.kernargs
            address = kernargs.address(kstart)
            image = blit.image
            if blit.self_offset >= 0:  # UPDATE: the payload follows the copy's kernargs
                image[:8].view("<u8")[0] = address + blit.self_offset
            kernargs.view(kstart, kblocks)[:] = image
            row = blit.row
            row.view("<u8")[0, 5] = address  # kernarg_address (byte 40)
            row.view("<u8")[0, 7] = self.epoch_handle  # completion_signal (byte 56)
            ring.write_bodies(at, row)
        else:
            nop = new_staging(1)
            emit_nops(nop)
            nop.view("<u8")[0, 7] = self.epoch_handle
            ring.write_bodies(at, nop)

    def _advance_frontier(self, barriers: list) -> None:
        """Note the peer epochs this queue now waits behind. Called under ``_lock``."""
        frontier = self.frontier
        for producer, e in barriers:
            if frontier.get(producer, 0) < e:
                frontier[producer] = e
            if producer.error is not None or producer._closed:
                self._behind_failed(producer, e)

    def _behind_failed(self, producer: "HostQueue", epoch: int) -> None:
        """``producer`` faulted or closed while this queue published a barrier on its
        ``epoch``: its scan for stuck peers (made after its error or close is set, reading
        frontiers) may have run before this frontier named it. Unless the device completed
        that epoch, this queue is stuck for good: fail it as the scan would have. The
        epoch signal is still valid (a closed producer's is kept by the group wait domain
        while this set is open). Called under ``_lock``."""
        if producer._closed and producer.qset is self.qset:
            return  # this device is closing: its close cancels what is left here too
        ffi = self.hsa.ffi
        signal = ffi.new("hsa_signal_t*", [producer.epoch_handle])[0]
        done = EPOCH_INITIAL_VALUE - self.hsa.lib.hsa_signal_load_scacquire(signal)
        if done >= epoch or self.error is not None:
            return
        error = producer.error or CancelledError(
            "a device of the group closed with the awaited work"
        )
        self.error = error_for(
            error.code,
            f"AMD GPU queue {self.index} waits on queue {producer.index}, which failed: {error}",
        )
        self.hsa.lib.hsa_signal_store_screlease(self.stop_signal, 1)

    def _commit_headers(self, first: int, nbar: int, headers: Any, blit: Any) -> None:
        """Publish the headers of one admission in packet order: the wait barriers, then
        the payload (a block's headers, a blit or the NOP). Called under ``_lock``."""
        ring = self.ring
        word = _PM4_IB_WAIT_WORD if self.wait_tier == WAIT_TIER_PM4 else _BARRIER_VALUE_WORD
        for i in range(nbar):
            ring.commit_header(first + i, word)
        if headers is not None:
            ring.commit_headers(first + nbar, headers)
        elif blit is not None:
            ring.commit_header(first + nbar, _BLIT_WORD)
        else:
            ring.commit_header(first + nbar, _NOP_WORD_SYSTEM)

    def _resume(self, sub: _Sub) -> None:
        """Continue a gated replay (its indirect counts are in ``sub.counts``)."""
        if self.error is not None or self._closing:
            self._fail_sub(
                sub, self.error or CancelledError("device closed during a command-buffer replay")
            )
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

    def _destroy_signals(self) -> None:
        # Another device of the group may still have a barrier on the epoch signal in
        # flight: a wait domain this set joined keeps it until its last set closes.
        sig = self.__dict__.get("epoch_signal")
        if sig is not None and self.qset.wait_domains and keep_epoch_signal(self.qset, sig):
            del self.__dict__["epoch_signal"]
        super()._destroy_signals()

    def _fail_sub(self, sub: _Sub, error: HalError) -> None:
        fail_signals(sub.op.signals, error)
        sub.op.retained = None
        sub.resources = None


class _IndirectGate:
    """Runs when the block before an indirect dispatch retired: read the counts, resume."""

    __slots__ = ("queue", "sub")

    def __init__(self, queue: HostQueue, sub: _Sub) -> None:
        self.queue = queue
        self.sub = sub

    def __call__(self) -> None:
        try:
            sub = self.sub
            program = sub.program
            indirect = None if program is None else program.blocks[sub.block].replay.indirect
            if indirect is None:
                raise InternalError("an indirect-dispatch gate ran for a block without one")
            sub.counts = read_indirect_counts(
                self.queue.hsa,
                indirect,
                sub.binding_ptrs,
                sub.static_ptrs,
            )
        except HalError as exc:
            self.queue._fail_sub(self.sub, exc)
            return
        self.queue._resume(self.sub)

    def fail(self, error: HalError) -> None:
        self.queue._fail_sub(self.sub, error.clone())
