"""One profiling session's taps on an amdgpu device (``AmdgpuProfiling``): begin and end
on every queue, executable metadata, memory events, clock correlations, and the counter
layout. The per-queue side (dispatch timestamps, host-execution and counter packets) is
``profiling.QueueProfiler``; the module doc of ``profiling`` describes the whole design.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np

from hal_core import Executable, HalError, OutOfRangeError, UnavailableError, UnimplementedError
from hal_core.profiling import (
    FunctionMetadata,
    ProfilingDataFamily,
    host_time_ns,
)

from .device_metrics import metric_sources
from .executable import AmdgpuExecutable
from .hsa_enums import AgentInfo, SystemInfo
from .pm4_packets import clock_copy_control
from .profiling import (
    _DISPATCH_TYPE,
    _K,
    _QUEUE_ALLOCA,
    _QUEUE_DEALLOCA,
    AQLPROFILE_FAMILIES,
    QueueProfiler,
    _system_u64,
)
from .profiling_packets import CounterPacketSets, TickRecords, TracePacketSets

__all__ = ["AmdgpuProfiling", "PM4_TIMESTAMP_MAJORS", "ATT_BUFFER_BYTES"]

_F = ProfilingDataFamily
#: gfx majors whose AQL queues take PM4-IB packets: submissions are timed by PM4
#: ``COPY_DATA`` of the GPU clock there, by completion-signal timestamps elsewhere.
PM4_TIMESTAMP_MAJORS = (11, 12)
#: Trace buffer per traced dispatch, and the shader engine, compute unit and SIMDs traced
#: (IREE's defaults).
ATT_BUFFER_BYTES = 16 * 1024 * 1024
_ATT_SE_MASK = 1
_ATT_TARGET_CU = 1
_ATT_SIMD_SELECT = 0xF


class AmdgpuProfiling:
    """One profiling session's taps on one ``AmdgpuDeviceBackend`` (see module doc)."""

    def __init__(self, backend: Any, session: Any) -> None:
        self.backend = backend
        self.session = session
        self.hsa = backend.hsa
        self.ended = False
        #: kernel object -> (executable id, function ordinal, function name)
        self.kernels: dict[int, tuple[int, int, str]] = {}
        self._executables: set[int] = set()
        self.qset: Any = None
        self.queues: list[QueueProfiler] = []
        self._previous_listener: Any = None
        self._kfd: Any = None
        #: Per-session submission ids (amdgpu ops carry none): id(op) -> id, from the submit
        #: tap until the op's final block is published.
        self.submission_ids: dict[int, int] = {}
        self._next_submission = itertools.count(1).__next__
        families = session.families
        #: DEVICE_QUEUE_EVENTS requested; submissions are timed for them or for ranges
        self.device_queue_events = bool(families & _F.DEVICE_QUEUE_EVENTS)
        self.times_submissions = bool(families & (_F.DEVICE_QUEUE_EVENTS | _F.COUNTER_RANGES))
        #: the aqlprofile library while a counter or trace family is on
        self.aqlprofile: Any = None
        #: queue index -> stock, per family while it is on (``profiling_packets``)
        self.counter_packets: dict[int, CounterPacketSets] = {}
        self.range_packets: dict[int, CounterPacketSets] = {}
        self.trace_packets: dict[int, TracePacketSets] = {}
        self.tick_records: dict[int, TickRecords] = {}
        self.next_trace_id = itertools.count(1).__next__
        #: (counter set id, name, [(name, block, event)]) to record once begin succeeded
        self._set_records: list[tuple[int, str, list]] = []
        #: (counter set id, [(block, event)] in sample-value order) per requested set
        self.counter_layout: list[tuple[int, list[tuple[int, int]]]] = []

    # -- lifecycle ----------------------------------------------------------------------

    def begin(self) -> None:
        backend = self.backend
        families = self.session.families
        if families & _F.COUNTER_SAMPLES and families & _F.COUNTER_RANGES:
            raise UnimplementedError(
                "amdgpu cannot capture COUNTER_SAMPLES and COUNTER_RANGES in one session: "
                "both program the same hardware counters (a dispatch's start packet would "
                "reset the range it sits in); request one of them"
            )
        counting = None
        if families & AQLPROFILE_FAMILIES:
            counting = self._check_aqlprofile()
        metrics: list[Any] = []
        if self.session.families & ProfilingDataFamily.DEVICE_METRICS:
            # Before anything is installed: a GPU without sysfs metrics fails begin here.
            metrics = metric_sources(backend)
        qset = backend._host_queue_set or backend._create_host_queues()
        self.qset = qset
        hsa = self.hsa
        enabled = []
        try:
            if counting is not None:
                self._create_library_packets(qset, *counting)
            if self.times_submissions:
                self._create_tick_records(qset)
            for q in qset.queues:
                hsa.check(
                    hsa.lib.hsa_amd_profiling_set_profiler_enabled(q._queue, 1),
                    f"hsa_amd_profiling_set_profiler_enabled(queue {q.index})",
                )
                enabled.append(q)
        except BaseException:
            for q in enabled:
                hsa.lib.hsa_amd_profiling_set_profiler_enabled(q._queue, 0)
            self._close_stocks()
            raise
        for set_id, name, counters in self._set_records:
            self.session.record_counter_set(set_id, name, counters)
        self._register_builtins(qset)
        self.queues = [QueueProfiler(self, q) for q in qset.queues]
        self._previous_listener = qset.retire_listener
        qset.retire_listener = self._on_retire
        self._inner_submit = qset.submit
        qset.submit = self._submit  # instance attribute: removed at end
        for q, qp in zip(qset.queues, self.queues):
            with q._lock:  # no publication is half-way when the tap appears
                q.profiler = qp
        self._open_kfd()
        self.correlate()
        for source in metrics:
            self.session.add_metric_source(source)

    def end(self) -> None:
        qset = self.qset
        self.correlate()
        if self._kfd is not None:
            self._kfd.close()
            self._kfd = None
        self.ended = True
        self.submission_ids.clear()
        if qset.__dict__.get("submit") == self._submit:
            del qset.__dict__["submit"]
        for q in qset.queues:
            with q._lock:
                q.__dict__.pop("profiler", None)
            self.hsa.lib.hsa_amd_profiling_set_profiler_enabled(q._queue, 0)
        # Epochs still in flight keep their signals (and the retire listener) until they
        # retire; a failed queue never retires them, so its signals go now.
        for q, qp in zip(qset.queues, self.queues):
            with qp.retire_lock:
                if not qp.pending or q.error is not None or q._closed:
                    qp.pending.clear()
                    qp.destroy()
        if all(qp.retired for qp in self.queues) and qset.retire_listener == self._on_retire:
            qset.retire_listener = self._previous_listener

    # -- taps ---------------------------------------------------------------------------

    def _submit(self, op: Any) -> None:
        t = host_time_ns()
        kind = op.kind
        if kind == _K.EXECUTE or kind == _K.DISPATCH:
            self._register_program(op.program)
            if self.counter_packets or self.trace_packets:
                self._check_counted_fit(op.program)
        submission_id = self._next_submission()
        self.submission_ids[id(op)] = submission_id
        try:
            self._inner_submit(op)
        except BaseException:
            self.submission_ids.pop(id(op), None)
            raise
        session = self.session
        length = getattr(op, "length", 0) or 0
        session.record_queue_event(
            kind,
            op.queue,
            submission_id,
            len(op.waits),
            len(op.signals),
            length,
            id(op.program) if kind == _K.EXECUTE else 0,
            submit_host_time_ns=t,
        )
        if kind == _K.ALLOCA:
            session.record_memory_event(
                _QUEUE_ALLOCA, op.queue, id(op.target), length, submission_id=submission_id
            )
        elif kind == _K.DEALLOCA:
            session.record_memory_event(
                _QUEUE_DEALLOCA,
                op.queue,
                id(op.target),
                getattr(op.target, "allocation_size", 0),
                submission_id=submission_id,
            )

    def _check_counted_fit(self, program: Any) -> None:
        """OUT_OF_RANGE before anything is submitted when a block, spread out around its
        counter and trace packets, could never fit the AQL ring (it would wait for room
        forever)."""
        capacity = min(q.ring.capacity for q in self.qset.queues)
        peers = len(self.qset.queues) - 1  # at most one wait barrier per other queue
        per = max(qp.pre + qp.post for qp in self.queues)
        fixed = max(1 + qp.lead + qp.tail for qp in self.queues)
        for p in getattr(program, "per_gpu", None) or (program,):
            for block in getattr(p, "blocks", ()):
                header_words = block.replay.header_words
                n = int(np.count_nonzero((header_words & 0xFF) == _DISPATCH_TYPE))
                need = max(1, header_words.shape[0]) + per * n + fixed + peers
                if need > capacity:
                    raise OutOfRangeError(
                        f"with per-dispatch counters or traces each of a block's {n} dispatches "
                        f"takes {per} more AQL packets: the block needs up to {need} packets but "
                        "the queue "
                        f"ring holds {capacity}; create the device with a larger AQL ring "
                        "(device URI parameter aql_capacity=N) or split the command buffer"
                    )

    def _on_retire(self, queue_index: int, completed: int) -> None:
        queues = self.queues
        if queue_index < len(queues) and not queues[queue_index].retired:
            queues[queue_index].on_retire(completed)
        previous = self._previous_listener
        if previous is not None:
            previous(queue_index, completed)

    # -- metadata -----------------------------------------------------------------------

    def _check_aqlprofile(self) -> tuple[Any, list, list]:
        """Counters and traces need aqlprofile (``hal-profilers`` loads it): fail loudly.
        Loads the library and validates every requested counter for every GPU agent;
        returns (library, aqlprofile agent per GPU, resolved counter sets). Nothing is
        installed yet, so a failure here leaves the device untouched."""
        try:
            from hal_profilers.aqlprofile import AgentInfo as AqlAgentInfo
            from hal_profilers.aqlprofile import check_profiling_options, resolve_counter_sets
        except ImportError:
            raise UnavailableError(
                "counter and trace profiling on amdgpu needs the hal-profilers plugin "
                "(not on PyPI: from a checkout, pip install ./plugins/profilers) and "
                "libhsa-amd-aqlprofile64"
            ) from None
        agents = [
            AqlAgentInfo(
                gfxip=gpu.target.processor,
                cu_num=max(1, gpu.compute_unit_count),
                domain=gpu.domain,
                location_id=gpu.bdf_id,
            )
            for gpu in self.backend.gpus
        ]
        libhsa = str(self.hsa.path)
        # "Beside libhsa" only means something for a real library file.
        libhsa_path = libhsa if os.path.isabs(libhsa) else None
        options = self.session.options
        lib = None
        for agent in agents:
            lib = check_profiling_options(options, agent, libhsa_path=libhsa_path)
        return lib, agents, resolve_counter_sets(options.counter_sets, agents[0])

    def _create_library_packets(self, qset: Any, lib: Any, agents: list, resolved: list) -> None:
        """One aqlprofile packet set per queue and family now (a library that cannot create
        them fails begin): counters per dispatch (COUNTER_SAMPLES) or per submission
        (COUNTER_RANGES), the union of all sets' counters in one profile; thread traces
        (EXECUTABLE_TRACES) on the queues the capture filter selects. The counter-set records
        are emitted by ``begin`` once everything was created."""
        self.aqlprofile = lib
        families = self.session.families
        specs: list[Any] = []
        for _cs, set_specs in resolved:
            for spec in set_specs:
                if spec not in specs:
                    specs.append(spec)
        counters = None
        if families & _F.COUNTER_SAMPLES:
            counters = self.counter_packets
        elif families & _F.COUNTER_RANGES:
            counters = self.range_packets
        tracing = bool(families & _F.EXECUTABLE_TRACES)
        flt = self.session.capture_filter
        ordinal = self.session.device_ordinal
        for q in qset.queues:
            gpu_index = q.gpu_index

            def allocate(size: int, g: int = gpu_index) -> Any:
                return qset.allocate_host_coherent(g, size)

            if counters is not None:
                sets = CounterPacketSets(lib, agents[gpu_index], specs, allocate)
                counters[q.index] = sets
                sets.grow(1)
            if tracing and flt.matches_queue(ordinal, q.index):
                traces = TracePacketSets(
                    lib, int(self.backend.gpus[gpu_index].handle), _att_parameters(), allocate
                )
                self.trace_packets[q.index] = traces
                traces.grow(1)
        layout = []
        for set_id, (cs, set_specs) in enumerate(resolved, 1):
            layout.append((set_id, cs.name, set_specs))
        self.counter_layout = [
            (set_id, [(sp.block, sp.event) for sp in set_specs]) for set_id, _n, set_specs in layout
        ]
        self._set_records = [
            (set_id, name, [(sp.name, sp.block, sp.event) for sp in set_specs])
            for set_id, name, set_specs in layout
        ]

    def _create_tick_records(self, qset: Any) -> None:
        """PM4 timestamp records for the queues of gfx11/gfx12 GPUs (one chunk each now, so
        an allocation failure fails begin); other targets time submissions by signals."""
        for q in qset.queues:
            target = self.backend.gpus[q.gpu_index].target
            if target.major not in PM4_TIMESTAMP_MAJORS:
                continue
            records = TickRecords(
                lambda size, g=q.gpu_index: qset.allocate_host_coherent(g, size),
                clock_copy_control(target.major),
                q.epoch_handle,
            )
            self.tick_records[q.index] = records
            records.grow(1)

    def _close_stocks(self) -> None:
        """Release every packet stock (begin failed before any packet was published)."""
        for stocks in (
            self.counter_packets,
            self.range_packets,
            self.trace_packets,
            self.tick_records,
        ):
            for stock in stocks.values():
                stock.close()
            stocks.clear()

    def _register_builtins(self, qset: Any) -> None:
        for ctx in qset.contexts:
            b = ctx.builtins
            descriptors = list(b.fill.values()) + list(b.copy.values())
            exe_id = id(b)
            for ordinal, d in enumerate(descriptors):
                self.kernels[int(d.kernel_object)] = (exe_id, ordinal, d.name or "builtin")
            self.session.record_executable(
                exe_id,
                "hal_amdgpu device library",
                [
                    FunctionMetadata(
                        i,
                        d.name or f"builtin{i}",
                        d.binding_count,
                        d.constant_count,
                        tuple(d.workgroup_size),
                    )
                    for i, d in enumerate(descriptors)
                ],
            )

    def _register_program(self, program: Any) -> None:
        programs = getattr(program, "per_gpu", None) or (program,)
        for p in programs:
            for r in getattr(p, "retained", ()):
                # A recording retains the user's Executable; its kernels are on the
                # backend executable behind it.
                if r.__class__ is not Executable or id(r) in self._executables:
                    continue
                backend = r.backend
                if backend.__class__ is not AmdgpuExecutable:
                    continue
                functions = backend.functions
                self._executables.add(id(r))
                for rows in backend.dispatch_info:
                    for ordinal, d in enumerate(rows):
                        self.kernels[int(d.kernel_object)] = (
                            id(r),
                            ordinal,
                            functions[ordinal].name,
                        )
                self.session.record_executable(
                    id(r),
                    backend.code_object.__class__.__name__,
                    [
                        FunctionMetadata(
                            i,
                            f.name,
                            f.binding_count,
                            f.constant_count,
                            (f.workgroup_size[0], f.workgroup_size[1], f.workgroup_size[2]),
                        )
                        for i, f in enumerate(functions)
                    ],
                )

    # -- clocks -------------------------------------------------------------------------

    def _open_kfd(self) -> None:
        """KFD clock counters (GPU counter with CPU/system clocks) on real hardware."""
        if self.hsa.implementation == "soft":
            return
        try:
            from hal_profilers.kfd import KfdClockCounters
        except ImportError:
            return
        try:
            self._kfd = KfdClockCounters()
        except HalError:
            self._kfd = None

    def correlate(self) -> None:
        """One clock-correlation record: host ns bracketing an HSA TIMESTAMP read (the
        dispatch-tick domain), plus a KFD sample per GPU where available."""
        hsa = self.hsa
        t0 = host_time_ns()
        tick = _system_u64(hsa, SystemInfo.TIMESTAMP)
        t1 = host_time_ns()
        self.session.record_clock_correlation(tick, t0, t1)
        if self._kfd is not None:
            from hal_profilers.kfd import record_clock_correlation

            for gpu in self.backend.gpus:
                agent = hsa.ffi.new("hsa_agent_t*", [gpu.handle])[0]
                uid = hsa.agent_info_optional(agent, AgentInfo.AMD_DRIVER_UID, "uint32_t")
                if uid is not None:
                    try:
                        record_clock_correlation(self.session, self._kfd, int(uid))
                    except HalError:
                        pass  # a GPU the KFD does not know: the HSA correlation stands


def _att_parameters() -> list[tuple[int, int]]:
    """The ATT profile's parameters: compute unit, shader engines, SIMDs and buffer size."""
    from hal_profilers.aqlprofile import (
        ATT_PARAMETER_BUFFER_SIZE,
        ATT_PARAMETER_COMPUTE_UNIT_TARGET,
        ATT_PARAMETER_SE_MASK,
        ATT_PARAMETER_SIMD_SELECTION,
    )

    return [
        (ATT_PARAMETER_COMPUTE_UNIT_TARGET, _ATT_TARGET_CU),
        (ATT_PARAMETER_SE_MASK, _ATT_SE_MASK),
        (ATT_PARAMETER_SIMD_SELECTION, _ATT_SIMD_SELECT),
        (ATT_PARAMETER_BUFFER_SIZE, ATT_BUFFER_BYTES),
    ]
