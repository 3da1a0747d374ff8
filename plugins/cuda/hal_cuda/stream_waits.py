"""Device-side waits on semaphore values another CUDA device's stream work will signal:
``cuStreamWaitValue64`` on a semaphore word in pinned host memory.

Which waits go where (``CudaDeviceBackend._split_waits`` asks, for stream work):

1. the value is signalled by this device's stream work in flight: a CUDA event
   (``cuStreamWaitEvent``), or nothing at all on the producer's own stream;
2. the value is signalled by stream work in flight on another CUDA device of this
   process (a known producer that needs nothing submitted later): a **word wait**. The
   device keeps one 64-bit word per semaphore in pinned, device-mapped host memory
   (``cuMemHostAlloc`` + ``cuMemHostGetDevicePointer``, slabs of ``SLAB_WORDS``); a
   semaphore timepoint callback writes the value into it when the semaphore reaches
   it (on whichever thread signals: no polling, no sleeping), and
   ``cuStreamWaitValue64(GEQ)`` on the op's stream holds the op until then;
3. everything else (host signals, other backends' devices, values nobody has enqueued
   yet): host deferral. A device-side wait blocks everything behind it on its stream
   (and, as streams share a few hardware queues, possibly other streams' later work), so
   it is only used when the producer is already on a GPU: a wait whose producer may be
   submitted later (on this very queue, say) must not hold the queue. With every
   producer enqueued before its waits, whatever a wait holds is behind work that needs
   nothing submitted later: delayed, never deadlocked.

A semaphore that fails writes ``FAILED_WORD`` into its word, which satisfies every
``GEQ`` wait (the comparison is cyclic, ``(int64)(word - value) >= 0``, and values are at
most 2**31), so a failure never leaves a stream blocked; the waiting op then fails with
the semaphore's failure through the host path (``_complete_stream``).

Word waits need 64-bit stream memory operations
(``CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS``); without them every such wait
is deferred to the host and ``reason`` says why (``hal info`` prints it).

Counters (``StreamWaits.counts()``): waits decided at submit as ``event`` (same-device
events or stream order), ``word`` (word waits) and ``host`` (deferred). A device with no
stream work of its own in flight resolves all its waits on the host without asking (the
producer's completion enqueues the op at once); those are not counted.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from hal_core import HalError

from .cuda_api import CudaContext, check
from .memory import CudaStorage, allocate_host

__all__ = [
    "ATTRIBUTE_64_BIT_MEMOPS",
    "ATTRIBUTE_WAIT_VALUE_NOR",
    "FAILED_WORD",
    "SLAB_WORDS",
    "StreamWaits",
    "memops_support",
]

ATTRIBUTE_64_BIT_MEMOPS = 122
"""``CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS``."""
ATTRIBUTE_WAIT_VALUE_NOR = 123
"""``CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR`` (reported; the waits use GEQ)."""
CU_STREAM_WAIT_VALUE_GEQ = 0
FAILED_WORD = 1 << 62
"""Written into a failed semaphore's word: satisfies every GEQ wait on a HAL value."""
SLAB_WORDS = 512
"""Words per pinned slab (one 4 KiB page)."""

_registry_lock = threading.Lock()
_registry: tuple[weakref.ref, ...] = ()
"""Every live device's ``StreamWaits`` (weakly): where a device looks for a wait's
producer among other devices' in-flight work. Replaced whole under the lock; read
without it."""


def memops_support(api: Any, device: Any) -> tuple[bool, str]:
    """Whether GPU ``device`` (a ``CUdevice``) runs ``cuStreamWaitValue64``, and the
    sentence saying how waits on other devices' work are done (or why they are deferred
    to the host)."""
    try:
        attribute = api.CUdevice_attribute(ATTRIBUTE_64_BIT_MEMOPS)
        value = int(check(api.cuDeviceGetAttribute(attribute, device), "cuDeviceGetAttribute"))
    except (HalError, ValueError) as exc:
        return False, (
            "host deferral: the driver does not answer "
            f"CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS ({exc})"
        )
    if not value:
        return False, (
            "host deferral: the GPU has no 64-bit stream memory operations "
            "(CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS is 0)"
        )
    return True, "cuStreamWaitValue64 (GEQ) on semaphore words in pinned host memory"


def _write_word(arg: tuple[Any, CudaStorage, np.ndarray, int, int], error: HalError | None) -> None:
    """Timepoint callback: the semaphore reached ``value`` (``error`` None) or failed.
    Words only grow (two callbacks of one semaphore may run on two threads at once). The
    argument holds the slab, so the pinned memory outlives every armed timepoint."""
    lock, _slab, words, index, value = arg
    target = FAILED_WORD if error is not None else value
    with lock:
        if int(words[index]) < target:
            words[index] = target


class StreamWaits:
    """One device's semaphore words and word waits. ``inflight`` is the device's
    in-flight table (semaphore -> (value, event, queue)), read by the other devices.
    Thread-safe (slot assignment under ``_lock``, word writes under ``_write_lock``;
    neither is held across a driver call or a callback; the counters are approximate under
    concurrent submitters, as plain integer increments)."""

    def __init__(self, ctx: CudaContext, inflight: dict) -> None:
        self.ctx = ctx
        self.inflight = inflight
        self.supported, self.reason = memops_support(ctx.api, ctx.device)
        self.event = 0
        self.word = 0
        self.host = 0
        self._lock = threading.Lock()  # slot assignment
        self._write_lock = threading.Lock()  # words grow under it (timepoint callbacks)
        self._slabs: list[CudaStorage] = []
        self._words: list[np.ndarray] = []
        self._slots: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._next = 0
        global _registry
        with _registry_lock:
            live = tuple(ref for ref in _registry if ref() is not None)
            _registry = (*live, weakref.ref(self))

    def counts(self) -> dict[str, int]:
        """Waits decided at submit so far: ``event``, ``word`` and ``host``."""
        return {"event": self.event, "word": self.word, "host": self.host}

    def peer_signals(self, sem: Any, value: int) -> bool:
        """Whether stream work in flight on another CUDA device will signal ``sem`` to
        at least ``value`` (its producer is on a GPU already). Lock-free."""
        if not self.supported:
            return False
        for ref in _registry:
            other = ref()
            if other is None or other is self:
                continue
            entry = other.inflight.get(sem)
            if entry is not None and entry[0] >= value:
                return True
        return False

    def enqueue(self, stream: Any, waits: list[tuple[Any, int]]) -> int:
        """Put a ``cuStreamWaitValue64(word, value, GEQ)`` on ``stream`` per wait, in
        order, each word armed by a timepoint first; returns how many were enqueued (the
        rest, after a driver error, are the caller's to defer to the host). Any op
        enqueued on ``stream`` afterwards runs once the words are written."""
        api = self.ctx.api
        self.ctx.make_current()
        done = 0
        for sem, value in waits:
            try:
                words, index = self._slot(sem)
                slab = self._slabs[index // SLAB_WORDS]
                offset = index % SLAB_WORDS
                sem.add_timepoint(
                    value, _write_word, (self._write_lock, slab, words, offset, value)
                )
                address = slab.address + 8 * offset
                err = api.cuStreamWaitValue64(stream, address, value, CU_STREAM_WAIT_VALUE_GEQ)[0]
            except HalError:
                break
            if err:
                break
            done += 1
        return done

    def word_of(self, sem: Any) -> int | None:
        """The value in ``sem``'s word on this device (None when it has none): tests."""
        with self._lock:
            index = self._slots.get(sem)
            if index is None:
                return None
            return int(self._words[index // SLAB_WORDS][index % SLAB_WORDS])

    def _slot(self, sem: Any) -> tuple[np.ndarray, int]:
        """``sem``'s word (its slab's uint64 view and its global index), assigned on
        first use. Words are never reused: a collected semaphore's word may still be read
        by a wait the GPU has not reached yet, and a reused word starts again at 0 (8
        bytes per semaphore ever waited on this way, freed with the device). A new slab
        is allocated outside the lock (a driver call)."""
        while True:
            with self._lock:
                index = self._slots.get(sem)
                if index is None and self._next < len(self._slabs) * SLAB_WORDS:
                    index = self._next
                    self._next = index + 1
                    self._slots[sem] = index
                if index is not None:
                    return self._words[index // SLAB_WORDS], index
            slab: CudaStorage | None = allocate_host(self.ctx, 8 * SLAB_WORDS)  # zeroed
            with self._lock:
                if slab is not None and self._next >= len(self._slabs) * SLAB_WORDS:
                    self._slabs.append(slab)
                    self._words.append(np.asarray(slab.host_array).view(np.uint64))
                    slab = None
            if slab is not None:
                slab.release()  # another thread grew the words first
