"""Profiling taps of the amdgpu device: queue, host-execution, device-queue, dispatch and
memory events, executable metadata, counters and traces, and device-tick clock
correlations.

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
memory is the GPU's host-coherent fine memory pool; packets are deleted when the queue's
profiler is destroyed. The stocks live in ``profiling_packets``.

Device queue events (DEVICE_QUEUE_EVENTS) and counter ranges (COUNTER_RANGES) time each
submission (block). On gfx11/gfx12 (``PM4_TIMESTAMP_MAJORS``) a per-submission
``TickRecords`` entry gives a lead PM4-IB packet whose indirect buffer copies the GPU clock
(``COPY_DATA``) into the record's start tick and a PM4-IB trailer, carrying the epoch
signal, that copies it into the end tick. On other targets the first and last payload
packets carry profiling completion signals (a dispatch's own, else one taken for it) and
their ``start_ts``/``end_ts`` are the ticks. Ranges add the aqlprofile start packet after
the lead and read+stop before the trailer, and record one sample per counter set, scope
DEVICE_TIME_RANGE. An op published as several blocks is one device queue event, from its
first block's start to its final block's end (``open_starts``).

Thread traces (EXECUTABLE_TRACES): on the queues the capture filter selects, each dispatch
gets an aqlprofile ATT start packet before it (before the counter start) and a stop packet
after it (after the counter stop); when it retires, each chunk of
``aqlprofile_att_iterate_data`` becomes an ``executable-traces`` record linked to the
dispatch event.

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
from .profiling_packets import (
    ATT_TRACE_FORMAT,
    CounterPacketSets,
    TickRecords,
    TracePacketSets,
)

if TYPE_CHECKING:
    from .profiling_session import AmdgpuProfiling

__all__ = ["AMDGPU_PROFILING_FAMILIES", "QueueProfiler", "profiling_clock"]

# Counter families that go through aqlprofile: ``begin`` answers UNAVAILABLE (naming every
# path tried) when the library is missing. Only what is built is listed: a family listed
# here is one the device produces.
AQLPROFILE_FAMILIES = int(
    ProfilingDataFamily.COUNTER_SAMPLES
    | ProfilingDataFamily.COUNTER_RANGES
    | ProfilingDataFamily.EXECUTABLE_TRACES
)
AMDGPU_PROFILING_FAMILIES = (
    int(
        ProfilingDataFamily.QUEUE_EVENTS
        | ProfilingDataFamily.HOST_EXECUTION_EVENTS
        | ProfilingDataFamily.DEVICE_QUEUE_EVENTS
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
_RANGE_SCOPE = int(CounterSampleScope.DEVICE_TIME_RANGE)
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


class QueueProfiler:
    """Per-queue tap state: the profiling completion signals (a free list), the packet
    stocks of the requested families and the admissions awaiting their results.

    Layout of one profiled admission of ``span`` slots after the wait prefix (the host
    queue wrote the payload at its start, ``before_headers`` moves it into place):
    ``lead`` packets (the PM4 start timestamp, then the range counters' start), the payload
    with each dispatch between its ``pre`` packets (ATT start, PMC start) and ``post``
    packets (PMC read, PMC stop, ATT stop), the ``tail`` (the range counters' read and
    stop), NOPs for reserved slots left over, and the trailer that carries the epoch
    signal (a PM4-IB end timestamp on the PM4 path, else a NOP barrier)."""

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
        index = queue.index
        #: aqlprofile packet sets per family while it is on, else None
        self.pmc: CounterPacketSets | None = owner.counter_packets.get(index)
        self.att: TracePacketSets | None = owner.trace_packets.get(index)
        self.ranges: CounterPacketSets | None = owner.range_packets.get(index)
        #: PM4 timestamp records (gfx11/gfx12) while submissions are timed, else None
        self.ticks: TickRecords | None = owner.tick_records.get(index)
        #: submissions timed by their first/last packets' completion-signal timestamps
        self.signal_ticks = owner.times_submissions and self.ticks is None
        self.queue_events = owner.device_queue_events
        self.pre = (self.att is not None) + (self.pmc is not None)
        self.post = 2 * (self.pmc is not None) + (self.att is not None)
        self.lead = (self.ticks is not None) + (self.ranges is not None)
        self.tail = 2 if self.ranges is not None else 0
        self.mask = queue.ring.mask
        trailer = new_staging(1)
        emit_nops(trailer)
        trailer.view("<u8")[0, 7] = queue.epoch_handle  # completion_signal (byte 56)
        self.trailer = trailer
        #: (epoch, kind, submission_id, command_buffer_id, [(handle, signal, ko, counts, wg,
        #: index, pmc, att)], span or None) in publication order; span is (tick record,
        #: first signal, last signal, signals to give back, range set, final block).
        self.pending: collections.deque = collections.deque()
        #: submission id -> start tick of an op whose later blocks are still in flight
        self.open_starts: dict[int, int] = {}
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
        reserving): the trailer, the lead and tail packets, and ``pre + post`` per dispatch.
        Grows the packet stocks first, so a failing library or allocation raises before any
        state changes."""
        per = self.pre + self.post
        n = 0
        if per:
            if block is not None:
                n = int(np.count_nonzero((block.replay.header_words & 0xFF) == _DISPATCH_TYPE))
            else:
                n = 1 if blit is not None else 0
            if n:
                if self.pmc is not None:
                    self.pmc.grow(n)
                if self.att is not None:
                    self.att.grow(n)
        if self.ranges is not None:
            self.ranges.grow(1)
        if self.ticks is not None:
            self.ticks.grow(1)
        return 1 + self.lead + self.tail + per * n

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
        they are) or the header words of ``start..start+span-2`` after the payload was
        moved into the profiled layout (class docstring)."""
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
        pmc_free = self.pmc.free if self.pmc is not None else None
        att_free = self.att.free if self.att is not None else None
        for i in idx:
            slot = (start + i) & mask
            handle, sig = self._acquire()
            wg = tuple(max(1, int(v)) for v in packets["workgroup_size"][slot])
            grid = packets["grid_size"][slot]
            counts = tuple(-(-int(g) // w) for g, w in zip(grid, wg))
            pmc = pmc_free.popleft() if pmc_free is not None else None
            att = att_free.popleft() if att_free is not None else None
            ko = int(packets["kernel_object"][slot])
            items.append((handle, sig, ko, counts, wg, i, pmc, att))
            completion[slot] = handle
        last = (start + count - 1) & mask
        if not idx or idx[-1] != count - 1:
            completion[last] = 0  # a NOP/barrier last packet: the trailer carries the epoch
        span_info = None
        record = self.ticks.free.popleft() if self.ticks is not None else None
        range_set = self.ranges.free.popleft() if self.ranges is not None else None
        if record is not None or range_set is not None or self.signal_ticks:
            span_info = self._span(start, count, idx, items, record, range_set, final_block)
        words = None
        if span - 1 > count:
            words = self._layout(
                start, count, span - 1, headers, sub.blit is not None, items, record, range_set
            )
        ring = queue.ring
        if record is not None:
            ring.write_bodies(start + span - 1, record[2][None, :])
            ring.commit_header(start + span - 1, _PM4_IB_WORD)
        else:
            ring.write_bodies(start + span - 1, self.trailer)
            ring.commit_header(start + span - 1, _TRAILER_WORD)
        ids = self.owner.submission_ids
        submission_id = ids.pop(id(op), 0) if final_block else ids.get(id(op), 0)
        if final_block and sub.action is not None:
            sub.action = _TimedAction(sub.action, self.session, op, submission_id)
        if items or span_info is not None:
            kind = op.kind
            cb_id = id(op.program) if kind == _K.EXECUTE else 0
            self.pending.append((epoch, kind, submission_id, cb_id, items, span_info))
        return words

    def _span(
        self,
        start: int,
        count: int,
        idx: list,
        items: list,
        record: Any,
        range_set: Any,
        final_block: bool,
    ) -> tuple:
        """The admission's timing state (caller holds the queue's submission lock). Without
        PM4 timestamps the first and last payload packets carry profiling signals (a
        dispatch's own one, else one taken here) whose ``start_ts``/``end_ts`` bound the
        admission."""
        first = last = None
        extra: list = []
        if record is None and self.signal_ticks:
            by_index = {item[5]: item[1] for item in items}
            completion = self.packets["completion_signal"]
            mask = self.mask
            for i in (0, count - 1) if count > 1 else (0,):
                sig = by_index.get(i)
                if sig is None:
                    handle, sig = self._acquire()
                    extra.append((handle, sig))
                    completion[(start + i) & mask] = handle
                if i == 0:
                    first = sig
                last = sig
        return (record, first, last, extra, range_set, final_block)

    def _layout(
        self,
        start: int,
        count: int,
        body: int,
        headers: Any,
        blit: bool,
        items: list,
        record: Any,
        range_set: Any,
    ) -> np.ndarray:
        """Move the payload apart in place into the profiled layout (class docstring) and
        write the lead, per-dispatch and tail packets; reserved slots left over (an indirect
        dispatch that became a NOP) are NOPs. Walks from the back: a packet only moves to a
        higher id, so nothing unmoved is overwritten; lead packets are written last, over
        slots already vacated. Returns ``body`` header words. Caller holds the queue's
        submission lock with the slots reserved."""
        rows = self.rows
        mask = self.mask
        words = np.empty(body, np.uint32)
        if headers is None:
            # a blit (one dispatch) or the NOP barrier of a payload-free submission
            headers = (_BLIT_HEADER,) if blit else (_TRAILER_WORD,)
        lead = self.lead
        pre = self.pre
        per = pre + self.post
        extras = {item[5]: self._dispatch_rows(item[6], item[7]) for item in items} if per else {}
        k = len(extras)
        for i in range(count - 1, -1, -1):
            around = extras.get(i)
            if around is None:
                new = lead + i + per * k
                if new != i:
                    rows[(start + new) & mask] = rows[(start + i) & mask]
                words[new] = headers[i]
                continue
            k -= 1  # now the number of dispatches before packet i
            new = lead + i + per * k + pre
            rows[(start + new) & mask] = rows[(start + i) & mask]
            words[new] = int(headers[i]) | _BARRIER
            at = new - pre
            for row in around:
                if at == new:
                    at += 1
                rows[(start + at) & mask, 4:] = row[4:]
                words[at] = _PM4_IB_WORD
                at += 1
        at = 0
        if record is not None:
            rows[(start + at) & mask, 4:] = record[1][4:]
            words[at] = _PM4_IB_WORD
            at += 1
        end = lead + count + per * len(extras)
        if range_set is not None:
            range_rows = range_set[1]
            rows[(start + at) & mask, 4:] = range_rows[0, 4:]  # start
            words[at] = _PM4_IB_WORD
            for j, r in ((end, 1), (end + 1, 2)):  # read, stop
                rows[(start + j) & mask, 4:] = range_rows[r, 4:]
                words[j] = _PM4_IB_WORD
            end += 2
        for g in range(end, body):
            rows[(start + g) & mask, 4:] = 0
            words[g] = _TRAILER_WORD
        return words

    def _dispatch_rows(self, pmc: Any, att: Any) -> list:
        """The packets around one dispatch in publication order: ``pre`` (ATT start, PMC
        start) then ``post`` (PMC read, PMC stop, ATT stop)."""
        out = []
        if att is not None:
            out.append(att[1][0])
        if pmc is not None:
            out.append(pmc[1][0])
            out.append(pmc[1][1])
            out.append(pmc[1][2])
        if att is not None:
            out.append(att[1][1])
        return out

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
        free = self.free
        while pending and pending[0][0] <= completed:
            _epoch, kind, submission_id, cb_id, items, span_info = pending.popleft()
            for handle, sig, ko, counts, wg, index, pmc, att in items:
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
                                pmc[0],
                                _DISPATCH_SCOPE,
                                int(t.start),
                                int(t.end),
                                event_id=event_id,
                                cb_id=cb_id,
                                index=index,
                            )
                        if att is not None:
                            self._record_trace(att[0], exe_id, event_id)
                lib.hsa_signal_store_relaxed(sig, 1)
                free.append((handle, sig))
                # A dispatch carries counter/trace packets only when the queue has the stock.
                if pmc is not None:
                    self.pmc.free.append(pmc)  # type: ignore[union-attr]
                if att is not None:
                    self.att.free.append(att)  # type: ignore[union-attr]
            if span_info is not None:
                self._retire_span(session, keep, kind, submission_id, cb_id, span_info)
        if self.owner.ended and not pending:
            self.destroy()

    def _retire_span(
        self,
        session: Any,
        keep: bool,
        kind: int,
        submission_id: int,
        cb_id: int,
        span_info: tuple,
    ) -> None:
        """On the completion thread under ``retire_lock``: record the admission's device
        queue event (when ``session``, the session not ended) and counter range (also only
        when ``keep``: the capture filter selects the queue; it limits heavy artifacts, not
        queue events), then give its record, signals and range set back. An op published
        as several blocks is one event from its first block's start to its final block's
        end."""
        record, first, last, extra, range_set, final_block = span_info
        if record is not None:
            start_tick, end_tick = int(record[0][0]), int(record[0][1])
        else:
            lib = self.lib
            t = self.time
            lib.hsa_amd_profiling_get_dispatch_time(self.agent, first, t)
            start_tick = int(t.start)
            lib.hsa_amd_profiling_get_dispatch_time(self.agent, last, t)
            end_tick = int(t.end)
        opened = self.open_starts
        if not final_block:
            opened.setdefault(submission_id, start_tick)
        else:
            first_tick = opened.pop(submission_id, start_tick)
            if session is not None and self.queue_events:
                session.record_device_queue_event(
                    int(kind), self.queue.index, submission_id, first_tick, end_tick, cb_id
                )
        if range_set is not None:
            if keep:
                self._record_counters(range_set[0], _RANGE_SCOPE, start_tick, end_tick, cb_id=cb_id)
            self.ranges.free.append(range_set)  # type: ignore[union-attr]
        if record is not None:
            self.ticks.free.append(record)  # type: ignore[union-attr]
        for handle, sig in extra:
            self.lib.hsa_signal_store_relaxed(sig, 1)
            self.free.append((handle, sig))

    def _record_counters(
        self,
        packets: Any,
        scope: int,
        start_tick: int,
        end_tick: int,
        *,
        event_id: int = 0,
        cb_id: int = 0,
        index: int = 0,
    ) -> None:
        """One sample per counter set from a read packet's results (completion thread):
        a dispatch's (scope DISPATCH) or a submission range's (DEVICE_TIME_RANGE).
        Instances of a counter (per SE/XCC) are summed; a set the library reported
        incompletely gets no sample rather than an invented value."""
        try:
            values = self.owner.aqlprofile.read_pmc(packets)
        except HalError:
            return  # the event stands; its counters are lost with the library error
        sums: dict[tuple[int, int], int] = {}
        for block, event, value in values:
            key = (block, event)
            sums[key] = sums.get(key, 0) + value
        session = self.session
        queue_index = self.queue.index
        for set_id, keys in self.owner.counter_layout:
            if all(k in sums for k in keys):
                session.record_counter_sample(
                    scope,
                    set_id,
                    [sums[k] for k in keys],
                    queue=queue_index,
                    dispatch_event_id=event_id,
                    command_buffer_id=cb_id,
                    command_index=index,
                    start_tick=start_tick,
                    end_tick=end_tick,
                )

    def _record_trace(self, packets: Any, executable_id: int, event_id: int) -> None:
        """The dispatch's thread trace: one ``executable-traces`` record per chunk (shader
        engine) the library returns, all with one trace id (completion thread)."""
        try:
            chunks = self.owner.aqlprofile.read_att(packets)
        except HalError:
            return  # the dispatch event stands; its trace is lost with the library error
        trace_id = self.owner.next_trace_id()
        for _shader, data in chunks:
            self.session.record_executable_trace(
                trace_id, executable_id, event_id, data, ATT_TRACE_FORMAT
            )

    def destroy(self) -> None:
        """Destroy the signals and packet stocks once no published packet can still
        complete into them."""
        if self.retired:
            return
        self.retired = True
        for stock in (self.pmc, self.att, self.ranges, self.ticks):
            if stock is not None:
                stock.close()
        for _handle, sig in self.all_signals:
            self.lib.hsa_signal_destroy(sig)
        self.all_signals = []
        self.free.clear()
