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

from hal_core import HalError, OutOfRangeError, UnavailableError
from hal_core.profiling import (
    FunctionMetadata,
    ProfilingDataFamily,
    host_time_ns,
)

from .device_metrics import metric_sources
from .hsa_enums import AgentInfo, SystemInfo

__all__ = ["AmdgpuProfiling"]

from .profiling import (
    _DISPATCH_TYPE,
    _K,
    _QUEUE_ALLOCA,
    _QUEUE_DEALLOCA,
    AQLPROFILE_FAMILIES,
    CounterPacketSets,
    QueueProfiler,
    _system_u64,
)


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
        #: queue index -> CounterPacketSets while COUNTER_SAMPLES is on
        self.counter_packets: dict[int, CounterPacketSets] = {}
        #: (counter set id, [(block, event)] in sample-value order) per requested set
        self.counter_layout: list[tuple[int, list[tuple[int, int]]]] = []

    # -- lifecycle ----------------------------------------------------------------------

    def begin(self) -> None:
        backend = self.backend
        counting = None
        if self.session.families & AQLPROFILE_FAMILIES:
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
                self._create_counter_packets(qset, *counting)
            for q in qset.queues:
                hsa.check(
                    hsa.lib.hsa_amd_profiling_set_profiler_enabled(q._queue, 1),
                    f"hsa_amd_profiling_set_profiler_enabled(queue {q.index})",
                )
                enabled.append(q)
        except BaseException:
            for q in enabled:
                hsa.lib.hsa_amd_profiling_set_profiler_enabled(q._queue, 0)
            for sets in self.counter_packets.values():
                sets.close()
            self.counter_packets = {}
            raise
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
            if self.counter_packets:
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
        counter packets, could never fit the AQL ring (it would wait for room forever)."""
        capacity = min(q.ring.capacity for q in self.qset.queues)
        peers = len(self.qset.queues) - 1  # at most one wait barrier per other queue
        for p in getattr(program, "per_gpu", None) or (program,):
            for block in getattr(p, "blocks", ()):
                header_words = block.replay.header_words
                n = int(np.count_nonzero((header_words & 0xFF) == _DISPATCH_TYPE))
                need = max(1, header_words.shape[0]) + 3 * n + 1 + peers
                if need > capacity:
                    raise OutOfRangeError(
                        f"with COUNTER_SAMPLES each of a block's {n} dispatches takes 3 more "
                        f"AQL packets: the block needs up to {need} packets but the queue "
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

    def _create_counter_packets(self, qset: Any, lib: Any, agents: list, resolved: list) -> None:
        """One packet set per queue now (a library that cannot create them fails begin),
        the union of all sets' counters in one aqlprofile profile, and the set records."""
        specs: list[Any] = []
        for _cs, set_specs in resolved:
            for spec in set_specs:
                if spec not in specs:
                    specs.append(spec)
        for q in qset.queues:
            gpu_index = q.gpu_index
            sets = CounterPacketSets(
                lib,
                agents[gpu_index],
                specs,
                lambda size, g=gpu_index: qset.allocate_host_coherent(g, size),
            )
            self.counter_packets[q.index] = sets
            sets.grow(1)
        layout = []
        for set_id, (cs, set_specs) in enumerate(resolved, 1):
            self.session.record_counter_set(
                set_id, cs.name, [(sp.name, sp.block, sp.event) for sp in set_specs]
            )
            layout.append((set_id, [(sp.block, sp.event) for sp in set_specs]))
        self.counter_layout = layout

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
                functions = getattr(r, "functions", None)
                info = getattr(r, "dispatch_info", None)
                if functions is None or info is None or id(r) in self._executables:
                    continue
                self._executables.add(id(r))
                for rows in info:
                    for ordinal, d in enumerate(rows):
                        self.kernels[int(d.kernel_object)] = (
                            id(r),
                            ordinal,
                            functions[ordinal].name,
                        )
                self.session.record_executable(
                    id(r),
                    r.code_object.__class__.__name__,
                    [
                        FunctionMetadata(
                            i, f.name, f.binding_count, f.constant_count, tuple(f.workgroup_size)
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
