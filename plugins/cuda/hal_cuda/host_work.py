"""Host-side work of a CUDA device's queues: the worker thread each queue runs its
host-side ops on (host calls, file reads and writes, programs that read a workgroup count
from a buffer), and the file transfers, staged through pinned host memory.

Invariants: a worker runs its ops one at a time in the order they became ready and never
lets an op's failure escape (``execute`` never raises). Each queue's staging memory is
used only by that queue's worker, so it needs no lock.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, cast

import numpy as np

from hal_core.backend import QueueOp, buffer_storage

from .cuda_api import CudaContext, check
from .memory import CudaStorage, allocate_host
from .stream_ops import address_of

__all__ = ["STAGING_BYTES", "FileTransfers", "QueueWorker"]

STAGING_BYTES = 8 << 20
"""Pinned host memory each worker stages file reads and writes through."""


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


class FileTransfers:
    """File reads and writes of one device's queues (on their workers), each queue with
    its own pinned staging memory, allocated at its first transfer."""

    def __init__(self, ctx: CudaContext, queue_count: int) -> None:
        self.ctx = ctx
        self._staging: list[CudaStorage | None] = [None] * queue_count

    def _staging_for(self, queue_index: int) -> tuple[int, np.ndarray]:
        """The worker's pinned staging memory: (host address, uint8 view)."""
        staging = self._staging[queue_index]
        if staging is None:
            staging = allocate_host(self.ctx, STAGING_BYTES)
            self._staging[queue_index] = staging
        return staging.host_address, cast(np.ndarray, staging.host_array)

    def read(self, op: QueueOp) -> None:
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
            check(self.ctx.api.cuMemcpyHtoD(target + done, host, n), "cuMemcpyHtoD")
            done += n

    def write(self, op: QueueOp) -> None:
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
            check(self.ctx.api.cuMemcpyDtoH(host, source + done, n), "cuMemcpyDtoH")
            op.target.write_from(op.target_offset + done, view[:n])
            done += n

    def release(self) -> None:
        """Free the staging memory (no transfer is running)."""
        for staging in self._staging:
            if staging is not None:
                staging.release()
        self._staging = [None] * len(self._staging)
