"""Profiling taps of the amdgpu device: queue, host-execution, dispatch and memory
events, executable metadata, and device-tick clock correlations.

Lifecycle: ``AmdgpuProfiling.begin()`` (from the backend's ``profiling_begin(session)``)
enables HSA profiling on every AQL queue (``hsa_amd_profiling_set_profiler_enabled``),
shadows ``HostQueueSet.submit`` with an instance attribute and sets ``HostQueue.profiler``
on each queue; ``end()`` removes all of it, so with profiling off the submission path is
the plain class code plus the one ``profiler is None`` check in ``_publish_block``.

Dispatch timestamps: while profiled, every submission publishes one extra packet, a
trailing NOP barrier that carries the queue's epoch signal; every kernel-dispatch packet of
the submission gets its own *profiling completion signal* from a per-queue free list (the epoch
signal it may have carried moves to the trailer). The command processor writes the
packet's ``start_ts``/``end_ts`` into that signal (the 64-byte ``amd_signal_t``, bytes
32/40; the software agent from its own clock). When the epoch retires (the queue set's
retire listener, on the completion thread) the ticks are read with
``hsa_amd_profiling_get_dispatch_time`` (system-timestamp domain) and recorded; the
signal is reset and reused. Ticks are never converted here: the session's clock domain is
DEVICE_TICKS at ``hsa_system_get_info(TIMESTAMP_FREQUENCY)``, and clock-correlation
records (host ns bracketing a ``TIMESTAMP`` read; KFD clock counters as well where
``/dev/kfd`` and ``hal-profilers`` exist) let readers map ticks to host time.

Hardware counters (COUNTER_SAMPLES): ``begin`` resolves the requested counter sets,
has aqlprofile validate each counter for every GPU agent and creates one set of PM4-IB
packets per queue up front (so that a library that cannot create them fails ``begin``
before anything is installed); every counter set gets a counter-set record and its
counters. While profiled, each kernel-dispatch packet is surrounded by that queue's
aqlprofile packets: *start* before it, *read* then *stop* after it, all with the barrier bit
(and the dispatch too), so the counters cover exactly that dispatch. The host queue
reserves the extra slots in the same ring admission as the dispatch (``extra_slots``),
the payload is spread out in place and the counter packets are written between. Each
in-flight dispatch owns one packet set (its own result memory) from a per-queue stock that
grows under the submission lock, before any ring slot is reserved. When the epoch
retires, ``aqlprofile_pmc_iterate_data`` is read for every dispatch, instances of the
same counter are summed, and one counter sample per counter set is recorded (scope
DISPATCH, linked to the dispatch event id, ticks from the dispatch's signal); a set whose
counters the library did not report gets no sample (values are never invented). Packet
memory is the GPU's host-coherent fine memory pool; packets are deleted when the queue's profiler is
destroyed. COUNTER_RANGES and EXECUTABLE_TRACES are not produced: they are absent from
``AMDGPU_PROFILING_FAMILIES``, so ``profiling_begin`` answers UNIMPLEMENTED for them and
lists only what the device produces.

Device metrics (DEVICE_METRICS): one metric source per GPU over its PCI sysfs directory
(``device_metrics``), registered with the session at ``begin`` and sampled by the session
at begin, flush and end.

Threading: ``before_headers`` runs under the queue's submission lock; ``_on_retire`` on the
queue's completion thread; the per-queue pending deque and signal free list are only
appended/popped (thread-safe deque operations) from those two sides. Nothing here calls a
sink: records go into the session's rings, drained at flush/end.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from hal_core import HalError
from hal_core.backend import QueueOpKind
from hal_core.profiling import (
    ClockDomain,
    CounterSampleScope,
    MemoryEventType,
    ProfilingDataFamily,
    host_time_ns,
)

from .aql_packets import (
    DISPATCH_SETUP_3D,
    HEADER_BARRIER_BIT,
    AmdFormat,
    FenceScope,
    PacketType,
    as_dispatch,
    emit_nops,
    header_setup_word,
    make_header,
    new_staging,
    vendor_header_word,
)
from .hsa_enums import SystemInfo

if TYPE_CHECKING:
    from .profiling_session import AmdgpuProfiling

__all__ = ["AMDGPU_PROFILING_FAMILIES", "QueueProfiler", "profiling_clock"]

# Counter families that go through aqlprofile: ``begin`` answers UNAVAILABLE (naming every
# path tried) when the library is missing. Only what is built is listed: a family listed
# here is one the device produces.
AQLPROFILE_FAMILIES = int(ProfilingDataFamily.COUNTER_SAMPLES)
AMDGPU_PROFILING_FAMILIES = (
    int(
        ProfilingDataFamily.QUEUE_EVENTS
        | ProfilingDataFamily.HOST_EXECUTION_EVENTS
        | ProfilingDataFamily.DISPATCH_EVENTS
        | ProfilingDataFamily.MEMORY_EVENTS
        | ProfilingDataFamily.EXECUTABLE_METADATA
        | ProfilingDataFamily.DEVICE_METRICS
    )
    | AQLPROFILE_FAMILIES
)

_K = QueueOpKind
_DISPATCH_TYPE = int(PacketType.KERNEL_DISPATCH)
_TRAILER_WORD = header_setup_word(
    make_header(PacketType.BARRIER_AND, True, FenceScope.SYSTEM, FenceScope.SYSTEM)
)
#: aqlprofile's start/read/stop packets: PM4-IB vendor packets ordered with their neighbours
_PM4_IB_WORD = vendor_header_word(
    make_header(PacketType.VENDOR_SPECIFIC, True, FenceScope.SYSTEM, FenceScope.SYSTEM),
    AmdFormat.PM4_IB,
)
#: the blit dispatch's header word (host_queue._BLIT_WORD): a barrier kernel dispatch
_BLIT_HEADER = header_setup_word(
    make_header(PacketType.KERNEL_DISPATCH, True, FenceScope.SYSTEM, FenceScope.SYSTEM),
    DISPATCH_SETUP_3D,
)
_BARRIER = HEADER_BARRIER_BIT
_DISPATCH_SCOPE = int(CounterSampleScope.DISPATCH)
_QUEUE_ALLOCA = int(MemoryEventType.QUEUE_ALLOCA)
_QUEUE_DEALLOCA = int(MemoryEventType.QUEUE_DEALLOCA)
# (executable id, ordinal, name) of a kernel object no executable of the session owns
_UNKNOWN_KERNEL = (0, 0xFFFFFFFF, "unknown")


def _system_u64(hsa: Any, attribute: int) -> int:
    out = hsa.ffi.new("uint64_t*")
    hsa.check(
        hsa.lib.hsa_system_get_info(attribute, out),
        f"hsa_system_get_info({SystemInfo(attribute).name})",
    )
    return int(out[0])


def profiling_clock(hsa: Any) -> tuple[ClockDomain, int]:
    """The amdgpu session clock: DEVICE_TICKS at the HSA system timestamp frequency (the
    domain ``hsa_amd_profiling_get_dispatch_time`` returns)."""
    return ClockDomain.DEVICE_TICKS, _system_u64(hsa, SystemInfo.TIMESTAMP_FREQUENCY)


class _TimedAction:
    """A host action (host call, file I/O, dealloca) timed as a host-execution event."""

    __slots__ = ("inner", "session", "kind", "queue", "submission_id", "length")

    def __init__(self, inner: Any, session: Any, op: Any, submission_id: int) -> None:
        self.inner = inner
        self.session = session
        self.kind = op.kind
        self.queue = op.queue
        self.submission_id = submission_id
        self.length = getattr(op, "length", 0) or 0

    def __call__(self) -> None:
        status = 0
        t0 = host_time_ns()
        try:
            self.inner()
        except HalError as exc:
            status = int(exc.code)
            raise
        finally:
            self.session.record_host_execution(
                self.kind,
                self.queue,
                self.submission_id,
                t0,
                host_time_ns(),
                status,
                self.length,
                threading.get_native_id(),
            )

    def fail(self, error: HalError) -> None:
        fail = getattr(self.inner, "fail", None)
        if fail is not None:
            fail(error)


class CounterPacketSets:
    """One queue's aqlprofile packet sets, one per in-flight profiled dispatch (each has its
    own counter result memory), and the memory aqlprofile allocated for them.

    ``grow`` runs under the queue's submission lock before ring slots are reserved (a
    library failure raises there, changing nothing); sets are popped by ``before_headers``
    and pushed back by the retire listener after their data was read. ``close`` deletes
    every set and frees the memory; call it only once no published packet uses them.
    """

    def __init__(self, lib: Any, agent: Any, specs: list, allocate: Any) -> None:
        self.lib = lib
        self.agent = agent
        self.specs = specs
        self._allocate = allocate  # (size) -> (host view, device address, storage)
        #: (PmcPackets, (3, 64) uint8 start/read/stop rows, completion signals zeroed)
        self.free: collections.deque = collections.deque()
        self._created: list[Any] = []
        self._memory: list[Any] = []

    def _alloc(self, size: int, _flags: int) -> tuple[int, Any]:
        # Every aqlprofile buffer goes to the host-coherent fine memory pool, which the GPU and
        # the host both reach, whatever the library's flags ask for.
        _host, address, storage = self._allocate(size)
        self._memory.append(storage)
        return address, storage

    def grow(self, count: int) -> None:
        free = self.free
        while len(free) < count:
            packets = self.lib.create_pmc_packets(self.agent, self.specs, self._alloc)
            self._created.append(packets)
            rows = (
                np.frombuffer(packets.start + packets.read + packets.stop, np.uint8)
                .reshape(3, 64)
                .copy()
            )
            rows[:, 56:] = 0  # the queue owns completion signals
            free.append((packets, rows))

    def close(self) -> None:
        for packets in self._created:
            self.lib.delete_pmc_packets(packets)
        self._created = []
        self.free.clear()
        for storage in self._memory:
            storage.release()
        self._memory = []


class QueueProfiler:
    """Per-queue tap state: the profiling completion signals (a free list) and the epochs
    awaiting ticks."""

    def __init__(self, owner: "AmdgpuProfiling", queue: Any) -> None:
        self.owner = owner
        self.queue = queue
        self.session = owner.session
        hsa = owner.hsa
        self.ffi = hsa.ffi
        self.lib = hsa.lib
        self.agent = hsa.ffi.new("hsa_agent_t*", [owner.backend.gpus[queue.gpu_index].handle])[0]
        self.packets = as_dispatch(queue.ring.rows)
        self.rows = queue.ring.rows
        #: aqlprofile packet sets while COUNTER_SAMPLES is on, else None
        self.pmc: CounterPacketSets | None = owner.counter_packets.get(queue.index)
        self.mask = queue.ring.mask
        trailer = new_staging(1)
        emit_nops(trailer)
        trailer.view("<u8")[0, 7] = queue.epoch_handle  # completion_signal (byte 56)
        self.trailer = trailer
        #: (epoch, kind, submission_id, command_buffer_id, [(handle, signal, ko, counts, wg,
        #: index)]) in publication order.
        self.pending: collections.deque = collections.deque()
        self.free: collections.deque = collections.deque()
        self.all_signals: list[Any] = []
        self.time = hsa.ffi.new("hsa_amd_profiling_dispatch_time_t*")
        # Serialises retiring (completion thread) against ``end`` destroying the signals:
        # an entry popped from ``pending`` is still being read until its signal is back in
        # ``free``, so "pending is empty" alone does not mean the signals are unused.
        self.retire_lock = threading.Lock()
        self.retired = False

    def _acquire(self) -> tuple[int, Any]:
        free = self.free
        if free:
            return free.popleft()
        out = self.ffi.new("hsa_signal_t*")
        self.owner.hsa.check(
            self.lib.hsa_amd_signal_create(1, 0, self.ffi.NULL, 0, out),
            "hsa_amd_signal_create(profiling completion signal)",
        )
        sig = self.ffi.new("hsa_signal_t*", [out[0].handle])[0]
        entry = (int(out[0].handle), sig)
        self.all_signals.append(entry)
        return entry

    def extra_slots(self, block: Any, blit: Any) -> int:
        """Slots ``_publish_block`` reserves beyond the payload (under the queue lock, before
        reserving): the trailer, plus start/read/stop per dispatch while counting. Grows
        the counter packet sets first, so a failing library raises before any state changes."""
        sets = self.pmc
        if sets is None:
            return 1
        if block is not None:
            n = int(np.count_nonzero((block.replay.header_words & 0xFF) == _DISPATCH_TYPE))
        else:
            n = 1 if blit is not None else 0
        if n:
            sets.grow(n)
        return 1 + 3 * n

    def before_headers(
        self,
        queue: Any,
        sub: Any,
        start: int,
        count: int,
        span: int,
        headers: Any,
        epoch: int,
        final_block: bool,
    ) -> Any:
        """Called by ``HostQueue._publish_block`` under the queue lock after the payload
        bodies of ``sub`` were written at packet ids ``start..start+count-1`` and before
        any header is committed; ``span`` slots from ``start`` are reserved (``count`` +
        ``extra_slots``), the last for the trailer. Returns None (commit ``headers`` as
        they are) or, while counting, the header words of ``start..start+span-2`` after
        the payload was spread out around the counter packets."""
        op = sub.op
        packets = self.packets
        mask = self.mask
        if headers is not None:
            idx = np.flatnonzero((headers & 0xFF) == _DISPATCH_TYPE).tolist()
        elif sub.blit is not None:
            idx = [0]
        else:
            idx = []
        items = []
        completion = packets["completion_signal"]
        sets = self.pmc
        pmc_free = sets.free if sets is not None else None
        for i in idx:
            slot = (start + i) & mask
            handle, sig = self._acquire()
            wg = tuple(max(1, int(v)) for v in packets["workgroup_size"][slot])
            grid = packets["grid_size"][slot]
            counts = tuple(-(-int(g) // w) for g, w in zip(grid, wg))
            pmc = pmc_free.popleft() if pmc_free is not None else None
            items.append((handle, sig, int(packets["kernel_object"][slot]), counts, wg, i, pmc))
            completion[slot] = handle
        last = (start + count - 1) & mask
        if not idx or idx[-1] != count - 1:
            completion[last] = 0  # a NOP/barrier last packet: the trailer carries the epoch
        words = None
        if span - 1 > count:
            words = self._spread(start, count, span - 1, headers, items)
        ring = queue.ring
        ring.write_bodies(start + span - 1, self.trailer)
        ring.commit_header(start + span - 1, _TRAILER_WORD)
        ids = self.owner.submission_ids
        submission_id = ids.pop(id(op), 0) if final_block else ids.get(id(op), 0)
        if final_block and sub.action is not None:
            sub.action = _TimedAction(sub.action, self.session, op, submission_id)
        if items:
            kind = op.kind
            cb_id = id(op.program) if kind == _K.EXECUTE else 0
            self.pending.append((epoch, kind, submission_id, cb_id, items))
        return words

    def _spread(self, start: int, count: int, body: int, headers: Any, items: list) -> np.ndarray:
        """Move the payload apart in place so that each counted dispatch sits between its
        start packet and its read+stop packets; reserved slots left over (an indirect
        dispatch that became a NOP) are NOPs. Walks from the back: a packet only moves to
        a higher id, so nothing unmoved is overwritten. Returns ``body`` header words."""
        rows = self.rows
        mask = self.mask
        words = np.empty(body, np.uint32)
        if headers is None:
            headers = (_BLIT_HEADER,)  # a blit: one dispatch at packet 0
        by_index = {item[5]: item[6] for item in items}
        k = len(items)
        for i in range(count - 1, -1, -1):
            pmc = by_index.get(i)
            if pmc is None:
                new = i + 3 * k
                if new != i:
                    rows[(start + new) & mask] = rows[(start + i) & mask]
                words[new] = headers[i]
                continue
            k -= 1  # now the number of dispatches before packet i
            new = i + 3 * k + 1
            rows[(start + new) & mask] = rows[(start + i) & mask]
            words[new] = int(headers[i]) | _BARRIER
            bodies = pmc[1]
            for j, at in ((0, new - 1), (1, new + 1), (2, new + 2)):
                rows[(start + at) & mask, 4:] = bodies[j, 4:]
                words[at] = _PM4_IB_WORD
        for g in range(count + 3 * len(items), body):
            rows[(start + g) & mask, 4:] = 0
            words[g] = _TRAILER_WORD
        return words

    def on_retire(self, completed: int) -> None:
        with self.retire_lock:
            self._retire_locked(completed)

    def _retire_locked(self, completed: int) -> None:
        if self.retired:
            return
        pending = self.pending
        session = None if self.owner.ended else self.session
        kernels = self.owner.kernels
        queue_index = self.queue.index
        flt = self.session.capture_filter
        device_ordinal = self.session.device_ordinal
        keep = session is not None and flt.matches_queue(device_ordinal, queue_index)
        lib = self.lib
        t = self.time
        while pending and pending[0][0] <= completed:
            _epoch, _kind, submission_id, cb_id, items = pending.popleft()
            for handle, sig, ko, counts, wg, index, pmc in items:
                if keep and session is not None:  # (keep implies a session)
                    lib.hsa_amd_profiling_get_dispatch_time(self.agent, sig, t)
                    exe_id, ordinal, name = kernels.get(ko, _UNKNOWN_KERNEL)
                    if flt.matches_function(name) and flt.matches_command(cb_id, index):
                        event_id = session.record_dispatch(
                            queue_index,
                            submission_id,
                            cb_id,
                            exe_id,
                            index,
                            ordinal,
                            counts,
                            wg,
                            int(t.start),
                            int(t.end),
                        )
                        if pmc is not None:
                            self._record_counters(
                                pmc[0], event_id, cb_id, index, int(t.start), int(t.end)
                            )
                lib.hsa_signal_store_relaxed(sig, 1)
                self.free.append((handle, sig))
                if pmc is not None:
                    # A dispatch carries counter packets only when the queue has packet sets.
                    self.pmc.free.append(pmc)  # type: ignore[union-attr]
        if self.owner.ended and not pending:
            self.destroy()

    def _record_counters(
        self, packets: Any, event_id: int, cb_id: int, index: int, start_tick: int, end_tick: int
    ) -> None:
        """One sample per counter set from the dispatch's read packet (completion thread).
        Instances of a counter (per SE/XCC) are summed; a set the library reported
        incompletely gets no sample rather than an invented value."""
        try:
            # Called only for a dispatch with counter packets: the queue has packet sets.
            values = self.pmc.lib.read_pmc(packets)  # type: ignore[union-attr]
        except HalError:
            return  # the dispatch event stands; its counters are lost with the library error
        sums: dict[tuple[int, int], int] = {}
        for block, event, value in values:
            key = (block, event)
            sums[key] = sums.get(key, 0) + value
        session = self.session
        queue_index = self.queue.index
        for set_id, keys in self.owner.counter_layout:
            if all(k in sums for k in keys):
                session.record_counter_sample(
                    _DISPATCH_SCOPE,
                    set_id,
                    [sums[k] for k in keys],
                    queue=queue_index,
                    dispatch_event_id=event_id,
                    command_buffer_id=cb_id,
                    command_index=index,
                    start_tick=start_tick,
                    end_tick=end_tick,
                )

    def destroy(self) -> None:
        """Destroy the signals and packet sets once no published packet can still complete
        into them."""
        if self.retired:
            return
        self.retired = True
        if self.pmc is not None:
            self.pmc.close()
        for _handle, sig in self.all_signals:
            self.lib.hsa_signal_destroy(sig)
        self.all_signals = []
        self.free.clear()
