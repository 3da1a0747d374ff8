"""Host actions of the amdgpu host queues, and how user-code failures are reported there.

A host action (host call, file read/write, dealloca) publishes one NOP packet; when its
epoch retires the queue's completion thread calls the action, which runs the host work and
then signals (``signal()``) or fails (``fail(error)``) the op's semaphores. File transfers
to memory the host cannot map stage through ``FileStaging``, the queue set's pool of
fixed-size pinned host chunks. ``fail`` alone is
also how queue errors and teardown cancel an action that never ran.

Everything here runs on a HAL thread (the completion thread), so nothing a user callback
does may escape it: failures that have no signal to fail go to hal_core's
``report_callback_error`` (``sys.unraisablehook``; it never raises). No locks are held by
callers of these functions.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, cast

import numpy as np

from hal_core import CancelledError, HalError, HostCallFlags, StatusCode, UnimplementedError
from hal_core.backend import (
    HostCallContext,
    QueueOp,
    QueueOpKind,
    buffer_host_bytes,
    buffer_storage,
    fail_all,
    op_error,
    report_callback_error,
    run_host_call,
    signal_all,
)

__all__ = [
    "Action",
    "DeallocaAction",
    "FileAction",
    "FileStaging",
    "HostCallAction",
    "RunAction",
    "as_error",
]

_K = QueueOpKind


def as_error(exc: BaseException) -> HalError:
    """The ``HalError`` an op fails with when its host work raised ``exc`` (any other
    exception becomes UNKNOWN with ``exc`` as ``__cause__``: ``hal_core.backend.op_error``)."""
    return op_error(exc)


class Action:
    """Base of the host actions (called on the completion thread): ``signal()`` /
    ``fail(error)`` complete the op's semaphores. Each semaphore is completed on its own
    so that a callback failing on one still lets the others complete."""

    __slots__ = ("qset", "op")

    def __init__(self, qset: Any, op: QueueOp) -> None:
        self.qset = qset
        self.op = op

    def signal(self) -> None:
        signal_all(self.op.signals, "signalling a semaphore on an amdgpu queue")
        self.op.retained = None

    def fail(self, error: HalError) -> None:
        fail_all(self.op.signals, error, "failing a semaphore on an amdgpu queue")
        self.op.retained = None


class RunAction(Action):
    """An action whose host work is ``run()``: signal when it returns, fail when it raises."""

    __slots__ = ()

    def run(self) -> None:
        raise NotImplementedError

    def __call__(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self.fail(as_error(exc))
            return
        self.signal()


class HostCallAction(Action):
    """``queue_host_call``: NON_BLOCKING signals first and reports what the call raises;
    blocking calls complete by what they return (``host_call_outcome``) or raise."""

    __slots__ = ()

    def __call__(self) -> None:
        op = self.op
        # Both are set for every HOST_CALL op (None only once the call is done).
        fn = cast(Callable[[tuple, HostCallContext], Any], op.callback)
        args = cast(tuple, op.args)
        device = getattr(self.qset, "device", None)
        affinity = 1 << op.queue
        if op.flags & HostCallFlags.NON_BLOCKING:
            self.signal()
            try:
                fn(args, HostCallContext(device, affinity, ()))
            except BaseException as exc:  # NON_BLOCKING errors are only reported
                report_callback_error(exc, "a NON_BLOCKING amdgpu host call", fn)
            return
        # The host-call semantics (outcomes, exceptions kept as ``__cause__``) are
        # hal_core's, the same on every backend.
        outcome = run_host_call(fn, args, HostCallContext(device, affinity, op.signals))
        if outcome is None:
            self.signal()
        elif outcome is StatusCode.DEFERRED:
            op.retained = None  # the callback owns the signals now
        else:
            self.fail(outcome)


class StagingChunk:
    """One pinned host chunk of a ``FileStaging`` pool: ``address`` for HSA copies and
    ``view``, a uint8 numpy view of the same bytes, for the file."""

    __slots__ = ("address", "pointer", "view")

    def __init__(self, pointer: Any, address: int, view: np.ndarray) -> None:
        self.pointer = pointer
        self.address = address
        self.view = view


class FileStaging:
    """The staging pool of a queue set's file reads and writes to memory the host cannot
    map: chunks of ``chunk_size`` bytes from the CPU (kernarg) pool, readable by every
    agent of the device, reused across ops. A transfer goes through one chunk at a time,
    so no temporary as large as the transfer is ever made on a completion thread, and the
    pool holds at most one chunk per completion thread that did file I/O at once.

    Thread-safe (its own lock, never held across HSA calls that wait). ``close()`` frees
    the idle chunks; a chunk released afterwards is freed at its release, and ``acquire``
    after close is CANCELLED (the device is closing)."""

    __slots__ = (
        "_access_agents",
        "_access_count",
        "_closed",
        "_free",
        "_hsa",
        "_lock",
        "_pool",
        "chunk_size",
        "allocated",
    )

    def __init__(
        self, hsa: Any, pool: Any, access_agents: Any, access_count: int, chunk_size: int
    ) -> None:
        self._hsa = hsa
        self._pool = pool
        self._access_agents = access_agents
        self._access_count = access_count
        self.chunk_size = chunk_size
        #: Chunks allocated and not yet freed (idle or in use).
        self.allocated = 0
        self._free: list[StagingChunk] = []
        self._closed = False
        self._lock = threading.Lock()

    def acquire(self) -> StagingChunk:
        """An idle chunk, or a new one. CANCELLED once the pool is closed."""
        with self._lock:
            if self._closed:
                raise CancelledError("the amdgpu device closed before this file transfer ran")
            if self._free:
                return self._free.pop()
            self.allocated += 1
        try:
            return self._allocate()
        except BaseException:
            with self._lock:
                self.allocated -= 1
            raise

    def release(self, chunk: StagingChunk) -> None:
        with self._lock:
            if not self._closed:
                self._free.append(chunk)
                return
            self.allocated -= 1
        self._free_chunk(chunk)

    def close(self) -> None:
        """Free the idle chunks; idempotent."""
        with self._lock:
            self._closed = True
            idle, self._free = self._free, []
            self.allocated -= len(idle)
        for chunk in idle:
            self._free_chunk(chunk)

    def _allocate(self) -> StagingChunk:
        hsa = self._hsa
        ffi = hsa.ffi
        lib = hsa.lib
        out = ffi.new("void**")
        hsa.check(
            lib.hsa_amd_memory_pool_allocate(
                ffi.new("hsa_amd_memory_pool_t*", [self._pool.handle])[0],
                self._pool.round_up(self.chunk_size),
                0,
                out,
            ),
            f"hsa_amd_memory_pool_allocate(file staging chunk, {self.chunk_size} bytes)",
        )
        pointer = out[0]
        status = lib.hsa_amd_agents_allow_access(
            self._access_count, self._access_agents, ffi.NULL, pointer
        )
        if status != 0:
            lib.hsa_amd_memory_pool_free(pointer)
            hsa.check(status, "hsa_amd_agents_allow_access(file staging chunk)")
        view = np.frombuffer(ffi.buffer(ffi.cast("uint8_t*", pointer), self.chunk_size), np.uint8)
        return StagingChunk(pointer, int(ffi.cast("uintptr_t", pointer)), view)

    def _free_chunk(self, chunk: StagingChunk) -> None:
        chunk.view = _EMPTY
        self._hsa.lib.hsa_amd_memory_pool_free(chunk.pointer)


_EMPTY = np.empty(0, np.uint8)


class FileAction(RunAction):
    """queue_read / queue_write: file bytes to/from buffer memory. Host-visible memory
    is read or written in place; other memory goes through the queue set's staging pool
    (``FileStaging``) one chunk at a time, with ``hsa_memory_copy`` between the chunk and
    the buffer."""

    __slots__ = ()

    def run(self) -> None:
        op = self.op
        if not op.length:
            return
        if op.kind == _K.READ:
            buf = op.target
            storage = buffer_storage(buf)
            if storage.host_array is not None:
                view = buffer_host_bytes(buf, op.target_offset, op.length)
                op.source.read_into(op.source_offset, view)
                return
            self._staged(storage.address + buf.byte_offset + op.target_offset, True)
        else:
            buf = op.source
            storage = buffer_storage(buf)
            if storage.host_array is not None:
                view = buffer_host_bytes(buf, op.source_offset, op.length)
                op.target.write_from(op.target_offset, view)
                return
            self._staged(storage.address + buf.byte_offset + op.source_offset, False)

    def _staged(self, device_address: int, reading: bool) -> None:
        """Move ``op.length`` bytes between the file and ``device_address`` through one
        staging chunk (file -> chunk -> memory when ``reading``, else the reverse)."""
        op = self.op
        staging = self.qset.file_staging
        hsa = self.qset.hsa
        ffi = hsa.ffi
        copy = hsa.lib.hsa_memory_copy
        chunk = staging.acquire()
        try:
            step = staging.chunk_size
            for done in range(0, op.length, step):
                n = min(step, op.length - done)
                view = chunk.view[:n]
                device = ffi.cast("void*", device_address + done)
                host = ffi.cast("void*", chunk.address)
                if reading:
                    op.source.read_into(op.source_offset + done, view)
                    hsa.check(copy(device, host, n), "hsa_memory_copy(queue_read)")
                else:
                    hsa.check(copy(host, device, n), "hsa_memory_copy(queue_write)")
                    op.target.write_from(op.target_offset + done, view)
        finally:
            staging.release(chunk)


class DeallocaAction(RunAction):
    __slots__ = ()

    def run(self) -> None:
        # FAILED_PRECONDITION for a buffer that is not committed; releases pool memory
        # with this queue's completion frontier.
        pools = self.qset.pools
        if pools is None:
            raise UnimplementedError("this amdgpu queue set has no pools for queue_dealloca")
        pools.dealloca(self.op, self.qset.queues[self.op.queue])
