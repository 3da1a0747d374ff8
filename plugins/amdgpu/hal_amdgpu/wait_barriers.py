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

from hal_core.backend import wait_reached

from .aql_packets import FenceScope, emit_pm4_ib
from .pm4_packets import IB_SLOT_DWORDS, WAIT_IB_DWORDS, encode_epoch_wait
from .queue_completion import EPOCH_INITIAL_VALUE
from .queue_options import HostQueueOptions, WaitBarrierStrategy

if TYPE_CHECKING:
    from .host_queue import HostQueue
    from .queue_set import HostQueueSet
    from .queue_submission import _Sub

__all__ = [
    "WAIT_TIER_DEFER",
    "WAIT_TIER_BARRIER_VALUE",
    "WAIT_TIER_PM4",
    "Pm4WaitBuffers",
    "barrier_value_for",
    "device_waits_supported",
    "resolve_waits_by_tier",
    "supports_barrier_value",
    "target_wait_tier",
    "wait_tier",
]

WAIT_TIER_DEFER, WAIT_TIER_BARRIER_VALUE, WAIT_TIER_PM4 = 0, 1, 2
_IB_SLOT_BYTES = IB_SLOT_DWORDS * 4


def supports_barrier_value(target: Any) -> bool:
    """AMD barrier-value packets are validated on gfx90a and gfx94x (steppings 0-2)."""
    major, minor, stepping = target.major, target.minor, target.stepping
    return (major, minor, stepping) == (9, 0, 10) or (major == 9 and minor == 4 and stepping <= 2)


def barrier_value_for(gpus: Any, options: HostQueueOptions) -> bool:
    """Whether the queues over ``gpus`` use barrier-value packets: every GPU has them
    (``auto``), or the strategy forces them (``barrier_value``)."""
    strategy = options.wait_barrier
    if strategy == WaitBarrierStrategy.AUTO:
        return all(supports_barrier_value(g.target) for g in gpus)
    return strategy == WaitBarrierStrategy.BARRIER_VALUE


def target_wait_tier(barrier_value: bool, target: Any, options: HostQueueOptions) -> int:
    """The tier of a queue on a GPU of ``target`` in a set whose GPUs all take
    barrier-value packets (``barrier_value``) or not (see the module docstring)."""
    strategy = options.wait_barrier
    if strategy == WaitBarrierStrategy.DEFER:
        return WAIT_TIER_DEFER
    if barrier_value:
        return WAIT_TIER_BARRIER_VALUE
    if strategy == WaitBarrierStrategy.AUTO and target.major in (11, 12):
        return WAIT_TIER_PM4
    return WAIT_TIER_DEFER


def wait_tier(qset: "HostQueueSet", target: Any, options: HostQueueOptions) -> int:
    """The tier of a queue of ``qset`` on a GPU of ``target``."""
    return target_wait_tier(qset.barrier_value_supported, target, options)


def device_waits_supported(gpus: Any, options: HostQueueOptions) -> bool:
    """Whether every queue of a device over ``gpus`` waits on another queue's epoch on the
    device (no GPU of it is left to software deferral)."""
    barrier_value = barrier_value_for(gpus, options)
    return all(target_wait_tier(barrier_value, g.target, options) != WAIT_TIER_DEFER for g in gpus)


def resolve_waits_by_tier(queue: "HostQueue", sub: "_Sub") -> list | None:
    """The waits of ``sub`` left to software deferral on ``queue`` (device barriers go
    into ``sub.barriers``), or None when it failed. A wait is elided when reached, when
    its producer is ``queue`` (an in-order chain), when a previous device barrier or the
    producer's retirement covers it; it becomes a device barrier when the producer is a
    live queue of ``queue``'s set or of a set of its group wait domain (``wait_peers``:
    the same HSA system, so the epoch signal is readable) and ``queue`` has a tier.
    Called without the queue's lock (taken only to count deferrals)."""
    deferred: list = []
    qset = queue.qset
    last_signal = qset.last_signal
    frontier = queue.frontier
    barrier_ok = queue.wait_tier != WAIT_TIER_DEFER
    racy: bool | None = None  # computed on the first wait a peer queue produces
    for sem, value in sub.op.waits:
        failure = sem.failure
        if failure is not None:
            queue._fail_sub(sub, failure.clone())
            return None
        if wait_reached(sem, value):
            sub.acquire = FenceScope.SYSTEM
            continue
        entry = last_signal.get(sem)
        if entry is not None and entry[2] >= value:
            producer, epoch = entry[0], entry[1]
            if producer is queue:
                continue  # in-order queue: already behind the producer
            if racy is None:
                racy = _signals_race_peers(queue, sub)
            # Elided or device-ordered, this op could finish and be signalled by this
            # queue's thread before the producer's thread signalled a semaphore both
            # signal (a lower value after a higher one fails the semaphore): wait in
            # software for the producer's host signal instead.
            if not racy:
                if frontier.get(producer, 0) >= epoch:
                    continue  # a previous device barrier covers it
                if producer.completed_epoch >= epoch:
                    sub.acquire = FenceScope.SYSTEM
                    continue
                if (
                    barrier_ok
                    and producer.error is None
                    and (producer.qset is qset or producer.qset in qset.wait_peers)
                    and not producer._closing
                ):
                    sub.barriers.append((producer, epoch))
                    continue
        deferred.append((sem, value))
    if deferred:
        with queue._lock:  # submitters race here; the deferral path is not hot
            queue.deferred_waits += len(deferred)
    return deferred


def _signals_race_peers(queue: "HostQueue", sub: "_Sub") -> bool:
    """Whether a semaphore ``sub`` signals was last published by another queue whose
    completion thread has not signalled it yet (its host-side order is not settled)."""
    last_signal = queue.qset.last_signal
    for sem, _value in sub.op.signals:
        entry = last_signal.get(sem)
        if entry is not None and entry[0] is not queue and entry[0].signalled_epoch < entry[1]:
            return True
    return False


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
