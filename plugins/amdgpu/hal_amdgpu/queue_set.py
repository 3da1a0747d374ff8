"""A device's host queues and what they share: ``HostQueueSet``.

``HostQueueSet`` owns a device's ``HostQueue``s (``host_queue``; ``queues_per_gpu`` per
GPU), the shared last-signal table used for wait elision, the frontier tracker with one
axis per queue, the device library (builtin blit kernels, closed with the set), the
command-buffer finalizer (block programs, one per GPU on a multi-GPU device) and the
queue pools of ``queue_alloca``. ``submit(op)`` turns a ``QueueOp`` into a submission for
queue ``op.queue``: a single fill/copy/small update is encoded at admission
(``encode_blit``: the transfer fast path; copies and fills touching another GPU's memory
go through ``peer_copies``), dispatches and command buffers replay a block program, host
work (host calls, file I/O, deallocas) is a host action run by the
queue's completion thread.

``close`` is idempotent and safe from any thread, a completion thread of the set
included (see ``HostQueue.close``). Thread-safe.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, cast

import attrs
import numpy as np

from hal_core import (
    BufferParams,
    BufferRef,
    BufferUsage,
    CancelledError,
    CommandBufferMode,
    InvalidArgumentError,
    MemoryAccess,
    MemoryType,
    UnimplementedError,
)
from hal_core.backend import (
    CMD_COPY,
    FrontierTracker,
    QueueOp,
    QueueOpKind,
    buffer_host_bytes,
    buffer_storage,
    new_buffer,
)

from .aql_packets import emit_dispatches, new_staging
from .block_format import BlockProgram
from .block_program import build_programs
from .device_library import DeviceLibrary, kernel_descriptor
from .group_waits import WaitDomain, consumer_queues
from .host_actions import DeallocaAction, FileAction, FileStaging, HostCallAction
from .host_queue import UPDATE_INLINE_LIMIT, HostQueue
from .kernarg_ring import KERNARG_BLOCK_SIZE
from .kernel_descriptors import BuiltinKernels, KernelDescriptor, hal_kernarg_image
from .peer_copies import PeerCopies, StagedCopyAction
from .queue_options import HostQueueOptions
from .queue_pools import AmdgpuQueuePools
from .queue_submission import _Blit, _Sub
from .wait_barriers import barrier_value_for

__all__ = ["GpuPrograms", "HostQueueSet"]

_K = QueueOpKind


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
                    f"executable {executable!r} was not prepared by the amdgpu driver"
                )
            per_exe = self.qset._descriptors[backend] = {}
        key = (ordinal, self.gpu_index)
        desc = per_exe.get(key)
        if desc is None:
            desc = per_exe[key] = kernel_descriptor(backend, self.gpu_index, ordinal)
        return desc

    def buffer_address(self, buffer: Any) -> int | None:
        if not buffer.is_committed:
            return None
        return buffer_storage(buffer).address + buffer.byte_offset

    def allocate_prepublished(self, byte_length: int) -> tuple[np.ndarray, int, Any]:
        return self.qset.allocate_host_coherent(self.gpu_index, byte_length)


class HostQueueSet:
    """A device's host queues plus what they share (see module docstring).

    ``gpus``/``gpu_pools``/``cpu_pools`` come from the device backend; ``library`` is the
    loaded device library (``load_device_library``), which the set owns from here on and
    closes with itself (a plain list of ``BuiltinKernels`` is borrowed). ``submit(op)``
    routes a ``QueueOp`` to queue ``op.queue``.
    """

    def __init__(
        self,
        hsa: Any,
        gpus: tuple,
        gpu_pools: tuple,
        cpu_pools: tuple,
        access_handles: list[int],
        library: DeviceLibrary | list[BuiltinKernels],
        options: HostQueueOptions,
        queues_per_gpu: int,
        allocator: Any = None,
    ) -> None:
        self.library = library if isinstance(library, DeviceLibrary) else None
        builtins = list(library)
        self.hsa = hsa
        self.gpus = gpus
        self.gpu_pools = gpu_pools
        self.kernarg_pool = cpu_pools[0].kernarg
        self.access_agents = hsa.ffi.new("hsa_agent_t[]", [[h] for h in access_handles])
        self.access_count = len(access_handles)
        self.allocator = allocator
        self.options = options
        self.file_staging = FileStaging(
            hsa, self.kernarg_pool, self.access_agents, self.access_count, options.file_chunk_size
        )
        #: semaphore -> (producer queue, epoch, value) of its last publication; shared
        #: with the other sets of a group wait domain (``group_waits``) while a member.
        self.last_signal: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: Sets whose queues this set's queues may wait on on the device besides its own
        #: (the group wait domain's members while in a group).
        self.wait_peers: set | frozenset = frozenset()
        #: The group wait domain this set is a member of, and every one it joined (they
        #: keep its epoch signals alive for the others' barriers once it closes).
        self.wait_domain: WaitDomain | None = None
        self.wait_domains: list[WaitDomain] = []
        self.retire_listener: Callable[[int, int], None] | None = None
        self._descriptors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: One frontier axis per queue (device index = GPU, queue index = HAL queue).
        self.tracker = FrontierTracker(axis_capacity=max(256, queues_per_gpu * len(gpus)))
        self.barrier_value_supported = barrier_value_for(gpus, options)
        self.contexts = [_ProgramContext(self, i, b) for i, b in enumerate(builtins)]
        #: Which memory each GPU reaches, peer grants, and the copy-path counters.
        self.peers = PeerCopies(hsa, gpus, gpu_pools)
        self._own_fast = self.peers.own_fast
        self.queues: list[HostQueue] = []
        self.pools: AmdgpuQueuePools | None = None
        self._deferred_queue: HostQueue | None = None
        #: The hal_core Device (set by the device backend; host calls receive it).
        self.device: Any = None
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

    def allocate_host_coherent(
        self, gpu_index: int, byte_length: int
    ) -> tuple[np.ndarray, int, Any]:
        """Device-local, host-visible, host-coherent bytes (the GPU fine pool)."""
        from .allocator import HsaStorage

        hsa = self.hsa
        ffi = hsa.ffi
        pool = self.gpu_pools[gpu_index].fine
        out = ffi.new("void**")
        hsa.check(
            hsa.lib.hsa_amd_memory_pool_allocate(
                ffi.new("hsa_amd_memory_pool_t*", [pool.handle])[0],
                pool.round_up(byte_length),
                0,
                out,
            ),
            f"hsa_amd_memory_pool_allocate(prepublished kernargs, {byte_length} bytes)",
        )
        hsa.lib.hsa_amd_agents_allow_access(self.access_count, self.access_agents, ffi.NULL, out[0])
        address = int(ffi.cast("uintptr_t", out[0]))
        storage = HsaStorage(hsa, address, byte_length, 1, True)
        # Host-visible memory of a nonzero length always has its host view.
        return cast(np.ndarray, storage.host_array), address, storage

    # -- command buffers ----------------------------------------------------------------

    def finalize_command_buffer(self, commands: list, mode: int, binding_capacity: int) -> Any:
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
        return build_programs(
            commands,
            mode,
            contexts,
            block_packet_capacity=max(1, options.aql_capacity // 4),
            block_kernarg_capacity=options.kernarg_capacity // 4,
        )

    # -- submission ---------------------------------------------------------------------

    def submit(self, op: QueueOp) -> None:
        queue = self.queues[op.queue]
        sub = _Sub(op)
        kind = op.kind
        # The op itself is what retirement drops: it holds a transfer's buffers (which
        # ``retained`` does not) as well as what ``retained`` keeps for an execute.
        sub.resources = op
        if kind == _K.EXECUTE or kind == _K.DISPATCH:
            self._attach_program(sub, op, queue)
        elif kind == _K.FILL or kind == _K.COPY:
            # Encoded at admission (encode_blit); with nothing to move, a NOP carries the
            # signals. Memory of another GPU takes the peer path (peer_copies): a blit
            # over peer memory, or a host-staged copy where the GPU cannot reach it.
            if op.length:
                dev = self.device
                if (
                    op.target.device is not dev
                    or (kind == _K.COPY and op.source.device is not dev)
                    or not self._own_fast[queue.gpu_index]
                ):
                    if kind == _K.FILL:
                        self.peers.check_target(op, queue.gpu_index, dev)
                    elif not self.peers.route_copy(op, queue.gpu_index, dev):
                        sub.action = StagedCopyAction(self, op)
                        sub.signals = ()
                        queue.submit(sub)
                        return
                sub.blit = True
        elif kind == _K.UPDATE:
            if op.target.device is not self.device or not self._own_fast[queue.gpu_index]:
                self.peers.check_target(op, queue.gpu_index, self.device)
            self._prepare_update(sub, op, queue)
        elif kind == _K.HOST_CALL:
            sub.action = HostCallAction(self, op)
            sub.signals = ()
        elif kind == _K.READ or kind == _K.WRITE:
            sub.action = FileAction(self, op)
            sub.signals = ()
        elif kind == _K.ALLOCA:
            self._submit_alloca(sub, op, queue)
            return
        elif kind == _K.DEALLOCA:
            sub.action = DeallocaAction(self, op)
            sub.signals = ()
        elif kind != _K.BARRIER:  # a barrier is a NOP that carries the signals
            raise UnimplementedError(
                f"amdgpu does not implement queue operation {QueueOpKind(kind).name}"
            )
        if sub.program is not None and sub.program.packet_count == 0:
            sub.program = None
        queue.submit(sub)

    def _attach_program(self, sub: "_Sub", op: QueueOp, queue: Any) -> None:
        """An EXECUTE or DISPATCH op's block program for ``queue``'s GPU (and, for EXECUTE,
        its binding table); UNIMPLEMENTED for a program another device finalized."""
        program = op.program
        if program.__class__ is GpuPrograms:
            program = program.per_gpu[queue.gpu_index]
        if not isinstance(program, BlockProgram):
            raise UnimplementedError(
                f"amdgpu cannot replay a {type(program).__name__}; command buffers must "
                "be finalized by the amdgpu device"
            )
        sub.program = program
        if op.kind == _K.EXECUTE:
            sub.table = op.bindings

    def _prepare_update(self, sub: "_Sub", op: QueueOp, queue: Any) -> None:
        if op.length > UPDATE_INLINE_LIMIT:
            # Large updates are staged in host memory the GPU reads (kept until retired).
            staging = self._staging_buffer(op.length)
            buffer_host_bytes(staging)[:] = op.payload
            ref = BufferRef(op.target, op.target_offset, op.length)
            sub.program = self._one_shot((CMD_COPY, ref, BufferRef(staging, 0, op.length)), queue)
            sub.resources = [op, staging]
        elif op.length:
            sub.blit = True  # small ones ride inside the blit's kernargs

    def _submit_alloca(self, sub: "_Sub", op: QueueOp, queue: Any) -> None:
        if self.pools is None:
            raise UnimplementedError(
                "this amdgpu queue set has no allocator, so no pools for queue_alloca"
            )
        # Pool, size and alignment checks (and, with no pending waits, the reservation)
        # happen now; the memory commits at admission (AmdgpuQueuePools.start) and a
        # NOP carries the signals.
        self.pools.prepare(op)
        try:
            queue.submit(sub)
        except BaseException:
            self.pools.abandon(op)
            raise

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
            width = len(op.pattern)
            desc = builtins.fill[width]
            target = buffer_storage(op.target).address + op.target.byte_offset + op.target_offset
            pointers = [target]
            elements = length // width
            scalars = [elements, int.from_bytes(op.pattern, "little")]
        elif kind == _K.COPY:
            src = buffer_storage(op.source).address + op.source.byte_offset + op.source_offset
            dst = buffer_storage(op.target).address + op.target.byte_offset + op.target_offset
            bits = src | dst | length
            width = 16 if bits % 16 == 0 else 4 if bits % 4 == 0 else 1
            desc = builtins.copy[width]
            pointers = [src, dst]
            elements = length // width
            scalars = [elements]
        else:  # UPDATE
            desc = builtins.copy[1]
            dst = buffer_storage(op.target).address + op.target.byte_offset + op.target_offset
            pointers = [0, dst]
            elements = length
            scalars = [length]
            payload = bytes(op.payload)
        wg = builtins.workgroup_size
        groups = max(1, min(builtins.max_workgroups, -(-elements // wg)))
        image = hal_kernarg_image(
            desc, pointers, np.asarray(scalars, np.uint64).tobytes(), (groups, 1, 1), (wg, 1, 1)
        )
        if payload:
            self_offset = image.shape[0]
            padded = -(-len(payload) // KERNARG_BLOCK_SIZE) * KERNARG_BLOCK_SIZE
            tail = np.zeros(padded, np.uint8)
            tail[: len(payload)] = np.frombuffer(payload, np.uint8)
            image = np.concatenate([image, tail])
        row = new_staging(1)
        emit_dispatches(
            row,
            kernel_object=desc.kernel_object,
            workgroup_size=(wg, 1, 1),
            grid_size=(groups * wg, 1, 1),
            kernarg_address=0,
            private_segment_size=desc.private_segment_size,
            group_segment_size=desc.group_segment_size,
        )
        return _Blit(image, row, self_offset)

    def _staging_buffer(self, length: int) -> Any:
        params = BufferParams(
            type=MemoryType.HOST_LOCAL | MemoryType.DEVICE_VISIBLE,
            usage=BufferUsage.TRANSFER | BufferUsage.MAPPING,
        )
        storage, memory_type = self.allocator.allocate(params, length)
        return new_buffer(
            storage,
            memory_type=memory_type,
            allowed_usage=params.usage,
            allowed_access=MemoryAccess.ALL,
            allocation_size=length,
        )

    def _one_shot(self, command: tuple, queue: HostQueue) -> BlockProgram:
        return self._build([command], CommandBufferMode.ONE_SHOT, [self.contexts[queue.gpu_index]])[
            0
        ]

    def close(self, timeout: float | None = None) -> bool:
        """Close every queue, then the pools, the tracker and the device library.
        Idempotent. True when called from one of the queues' own completion threads
        (a host call closing the device): that queue's last resources are freed when its
        thread ends, and the caller defers ``hsa_shut_down`` with ``at_thread_exit``."""
        errors = []
        deferred = None
        for q in self.queues:
            try:
                if q.close(timeout):
                    deferred = q
            except BaseException as exc:  # close every queue even if one fails
                errors.append(exc)
        if self.wait_domains:
            # Queues of other devices of the group behind a device barrier on work this
            # close cancelled would wait forever: fail them as a fault would.
            cancelled = CancelledError("a device of the group closed with the awaited work")
            for q in self.queues:
                try:
                    q._fail_stuck_peers(cancelled)
                except BaseException as exc:  # the rest of the close still runs
                    errors.append(exc)
        self.queues = []
        for domain in self.wait_domains:
            domain.closed(self)
        self._deferred_queue = deferred
        if self.pools is not None:
            # After the queues: in-flight deallocas have released; parked allocas cancel.
            self.pools.close()
        self.tracker.close()
        self.file_staging.close()  # a transfer still running frees its chunk at release
        library, self.library = self.library, None
        if library is not None:
            # No queue can run a builtin kernel any more.
            library.close()
        self._descriptors.clear()
        if errors:
            raise errors[0]
        return deferred is not None

    def consumer_queues(self) -> list[HostQueue]:
        """Queues that may hold a device barrier on one of this set's queues."""
        return consumer_queues(self)

    def at_thread_exit(self, fn: Callable[[], None]) -> None:
        """After ``close`` returned True: run ``fn`` once the closing completion thread
        ended (its queue's signals are destroyed first); otherwise run it now."""
        queue = self._deferred_queue
        if queue is None:
            fn()
        else:
            queue._at_thread_exit(fn)
