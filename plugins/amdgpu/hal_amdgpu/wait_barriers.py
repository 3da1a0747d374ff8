"""Device-side wait barriers: which tier a host queue uses, and the PM4 tier's buffers.

Tiers, as IREE's host queue chooses them for a wait on a peer queue's epoch signal:

1. ``WAIT_TIER_BARRIER_VALUE``: an AMD barrier-value AQL packet (``value < epoch bound``)
   where every GPU of the set has them (gfx90a, gfx94x steppings 0-2) or the
   ``wait_barrier=barrier_value`` strategy forces them;
2. ``WAIT_TIER_PM4``: a PM4-IB AQL packet jumping to an indirect buffer holding
   ``WAIT_REG_MEM64`` on the epoch signal's value and ``ACQUIRE_MEM`` (``pm4_packets``),
   on gfx11 and gfx12, whose AQL queues take PM4-IB packets;
3. ``WAIT_TIER_DEFER``: software deferral (semaphore timepoints), on every other target
   and under ``wait_barrier=defer``.

The PM4 tier's indirect buffers (``Pm4WaitBuffers``) hold ``IB_SLOT_DWORDS`` per AQL slot,
indexed by packet id: a slot is rewritten only once its AQL slot is reserved again, which
the ring allows only after the packet processor consumed the packet that used it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .aql_packets import emit_pm4_ib
from .pm4_packets import IB_SLOT_DWORDS, WAIT_IB_DWORDS, encode_epoch_wait
from .queue_completion import EPOCH_INITIAL_VALUE
from .queue_options import HostQueueOptions, WaitBarrierStrategy

if TYPE_CHECKING:
    from .queue_set import HostQueueSet

__all__ = [
    "WAIT_TIER_DEFER",
    "WAIT_TIER_BARRIER_VALUE",
    "WAIT_TIER_PM4",
    "Pm4WaitBuffers",
    "wait_tier",
]

WAIT_TIER_DEFER, WAIT_TIER_BARRIER_VALUE, WAIT_TIER_PM4 = 0, 1, 2
_IB_SLOT_BYTES = IB_SLOT_DWORDS * 4


def wait_tier(qset: "HostQueueSet", target: Any, options: HostQueueOptions) -> int:
    """The tier of a queue on a GPU of ``target`` (see the module docstring)."""
    strategy = options.wait_barrier
    if strategy == WaitBarrierStrategy.DEFER:
        return WAIT_TIER_DEFER
    if qset.barrier_value_supported:
        return WAIT_TIER_BARRIER_VALUE
    if strategy == WaitBarrierStrategy.AUTO and target.major in (11, 12):
        return WAIT_TIER_PM4
    return WAIT_TIER_DEFER


class Pm4WaitBuffers:
    """One queue's PM4 wait indirect buffers, in the GPU-readable host kernarg pool,
    allocated on the first wait. Not thread-safe: the owning queue calls ``emit`` under
    its submission lock and ``free`` once its completion thread has ended."""

    __slots__ = ("_qset", "_capacity", "_mask", "_ptr", "_ibs", "_address")

    def __init__(self, qset: "HostQueueSet", capacity: int) -> None:
        self._qset = qset
        self._capacity = capacity
        self._mask = capacity - 1
        self._ptr: Any = None
        self._ibs: np.ndarray | None = None
        self._address = 0

    def emit(self, staging: np.ndarray, first: int, barriers: list) -> None:
        """PM4-IB bodies for ``barriers`` (``(producer queue, epoch)`` pairs) into
        ``staging``: packet ``first + i`` jumps to its slot's indirect buffer, which waits
        for the producer's epoch, then acquires. The caller holds the queue's submission
        lock with the packet slots reserved."""
        ibs = self._ibs
        if ibs is None:
            ibs = self._allocate()
        mask = self._mask
        base = self._address
        for i, (producer, epoch) in enumerate(barriers):
            slot = (first + i) & mask
            encode_epoch_wait(
                ibs, slot * IB_SLOT_DWORDS, producer.epoch_handle, EPOCH_INITIAL_VALUE - epoch
            )
            emit_pm4_ib(
                staging[i : i + 1],
                ib_address=base + slot * _IB_SLOT_BYTES,
                dword_count=WAIT_IB_DWORDS,
            )

    def _allocate(self) -> np.ndarray:
        qset = self._qset
        hsa = qset.hsa
        ffi = hsa.ffi
        lib = hsa.lib
        pool = qset.kernarg_pool
        nbytes = pool.round_up(self._capacity * _IB_SLOT_BYTES)
        out = ffi.new("void**")
        hsa.check(
            lib.hsa_amd_memory_pool_allocate(
                ffi.new("hsa_amd_memory_pool_t*", [pool.handle])[0], nbytes, 0, out
            ),
            f"hsa_amd_memory_pool_allocate(PM4 wait buffers, {nbytes} bytes)",
        )
        self._ptr = out[0]
        lib.hsa_amd_agents_allow_access(qset.access_count, qset.access_agents, ffi.NULL, out[0])
        self._address = int(ffi.cast("uintptr_t", out[0]))
        ibs = np.frombuffer(ffi.buffer(ffi.cast("uint8_t*", out[0]), nbytes), np.uint32)
        self._ibs = ibs
        return ibs

    def free(self) -> None:
        """Release the buffers (idempotent)."""
        ptr, self._ptr = self._ptr, None
        self._ibs = None
        if ptr is not None:
            self._qset.hsa.lib.hsa_amd_memory_pool_free(ptr)
