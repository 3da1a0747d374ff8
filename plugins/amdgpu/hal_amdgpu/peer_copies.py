"""Copies between GPUs on the amdgpu host queues: ``PeerCopies``.

A queue runs its transfers with the builtin blit kernels on its own GPU. Memory of
another GPU (the first GPU's pools seen from a later GPU of a multi-GPU device, or a
buffer of another amdgpu device of the same HSA system) is reachable when HSA says the
GPU may access that pool (ACCESS not ``NEVER_ALLOWED``): the allocator granted every
such GPU of the system access (``hsa_amd_agents_allow_access``) when it allocated. A
copy the queue's GPU can reach runs device to device as one blit over peer memory; one
it cannot (no P2P path) runs as a host action staging through the queue set's pinned
host chunks (``StagedCopyAction``). A fill or update whose target the GPU cannot reach
is INCOMPATIBLE at the call.

Counters (``device_copies``, ``staged_copies``) say which path ran; they are updated
under the instance lock. Reachability is decided from where a buffer lives (its device
and memory type), so a queue allocation not yet committed is routed like any other. Thread-safe.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from hal_core import IncompatibleError, MemoryType
from hal_core.backend import QueueOp, buffer_storage

from .host_actions import RunAction
from .hsa_enums import AgentPoolInfo, PoolAccess

__all__ = ["PeerCopies", "StagedCopyAction"]


class StagedCopyAction(RunAction):
    """A queue_copy the queue's GPU cannot do over peer memory: source -> pinned host
    chunk -> target with ``hsa_memory_copy``, one staging chunk at a time, on the queue's
    completion thread (ordered after the op's waits like every host action). An HSA error
    fails the op's signals."""

    __slots__ = ()

    def run(self) -> None:
        op = self.op
        qset = self.qset
        hsa = qset.hsa
        ffi = hsa.ffi
        copy = hsa.lib.hsa_memory_copy
        src = buffer_storage(op.source).address + op.source.byte_offset + op.source_offset
        dst = buffer_storage(op.target).address + op.target.byte_offset + op.target_offset
        staging = qset.file_staging
        chunk = staging.acquire()
        try:
            host = ffi.cast("void*", chunk.address)
            step = staging.chunk_size
            for done in range(0, op.length, step):
                n = min(step, op.length - done)
                hsa.check(
                    copy(host, ffi.cast("void*", src + done), n),
                    "hsa_memory_copy(staged copy, source to host)",
                )
                hsa.check(
                    copy(ffi.cast("void*", dst + done), host, n),
                    "hsa_memory_copy(staged copy, host to target)",
                )
        finally:
            staging.release(chunk)


class PeerCopies:
    """Which memory each GPU of a ``HostQueueSet`` reaches (per peer device, cached).

    ``own_fast[g]``: a transfer on GPU ``g`` between buffers of the set's own device
    needs no check (``g`` owns their pools). ``route_copy`` / ``check_target`` are the
    slow path for everything else. Counters are read by tests and tools."""

    __slots__ = (
        "_hsa",
        "_gpu_agents",
        "_home_agent",
        "_home_reach",
        "_peers",
        "_lock",
        "own_fast",
        "device_copies",
        "staged_copies",
    )

    def __init__(self, hsa: Any, gpus: tuple, gpu_pools: tuple) -> None:
        self._hsa = hsa
        ffi = hsa.ffi
        self._gpu_agents = [ffi.new("hsa_agent_t[1]", [[g.handle]]) for g in gpus]
        # The device's allocations come from its first GPU's pools (allocator.py).
        home = gpu_pools[0]
        self._home_agent = gpus[0].handle
        self._home_reach = [
            i == 0 or _reaches(hsa, g.handle, (home.coarse.handle, home.fine.handle))
            for i, g in enumerate(gpus)
        ]
        self.own_fast = [i == 0 for i in range(len(gpus))]
        #: Per peer device backend (weakly): its first GPU and, per GPU here, whether
        #: that GPU reaches its pools.
        self._peers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        #: Copies between two GPUs' memories run as a blit over peer memory.
        self.device_copies = 0
        #: Copies staged through host memory because a GPU cannot reach the other's.
        self.staged_copies = 0

    def route_copy(self, op: QueueOp, gpu: int, own_device: Any) -> bool:
        """For a COPY on GPU ``gpu``: True when it runs as a blit, False when it must
        stage through host memory."""
        src_reach, src_owner = self._reach(op.source, gpu, own_device)
        dst_reach, dst_owner = self._reach(op.target, gpu, own_device)
        agent = self._gpu_agents[gpu][0].handle
        peer = (src_owner not in (0, agent)) or (dst_owner not in (0, agent))
        if src_reach and dst_reach:
            if peer:
                with self._lock:
                    self.device_copies += 1
            return True
        with self._lock:
            self.staged_copies += 1
        return False

    def check_target(self, op: QueueOp, gpu: int, own_device: Any) -> None:
        """For a FILL or UPDATE on GPU ``gpu``: INCOMPATIBLE when the GPU can never reach
        its target."""
        reach, _ = self._reach(op.target, gpu, own_device)
        if not reach:
            raise IncompatibleError(
                f"GPU {gpu} of this amdgpu device cannot reach the memory of the target "
                "buffer (HSA reports no peer access between the two GPUs); run the "
                "operation on the buffer's own device, or copy through host memory"
            )

    def _reach(self, buffer: Any, gpu: int, own_device: Any) -> tuple[bool, int]:
        """(reachable by GPU ``gpu``, owning GPU agent or 0 for host memory) of
        ``buffer``, from where it lives; its memory need not be committed yet."""
        if buffer.memory_type & MemoryType.HOST_LOCAL:
            return True, 0  # host memory: every agent of the system reaches it
        owner = buffer.device
        if owner is own_device:
            return self._home_reach[gpu], self._home_agent
        backend: Any = getattr(owner, "backend", None)
        if getattr(backend, "hsa", None) is not self._hsa:
            # Not this HSA system's memory: the blit sees its address as before.
            return True, 0
        with self._lock:
            entry = self._peers.get(backend)
            if entry is None:
                # A peer device's allocations come from its first GPU's pools and are
                # granted to every GPU that can reach them (allocator.py).
                home = backend.gpu_pools[0]
                pools = (home.coarse.handle, home.fine.handle)
                entry = self._peers[backend] = (
                    backend.gpus[0].handle,
                    [_reaches(self._hsa, a[0].handle, pools) for a in self._gpu_agents],
                )
        return entry[1][gpu], entry[0]


def _reaches(hsa: Any, agent: int, pools: tuple[int, ...]) -> bool:
    ffi = hsa.ffi
    a = ffi.new("hsa_agent_t*", [agent])[0]
    for pool in pools:
        p = ffi.new("hsa_amd_memory_pool_t*", [pool])[0]
        if hsa.agent_pool_info(a, p, AgentPoolInfo.ACCESS, "uint32_t") == PoolAccess.NEVER_ALLOWED:
            return False
    return True
