"""``SoftHsaRuntime``: the HSA functions the amdgpu driver calls, implemented in Python
over host memory (a test and development tool, never chosen silently).

Each method has the name and argument list of the C function it stands for and takes the
same cffi objects the driver passes to real ROCr (struct handles by value, out-pointers,
``ffi.callback`` functions), returning the same status values. So ``HsaLibrary.lib`` can be
this object or the dlopened library and the driver code above the boundary does not change.

This module holds the runtime's state, its test hooks, signals and queues; the other
functions come from its base classes: ``SoftSystemApi`` (``system_api``: system, agents,
ISAs), ``SoftMemoryApi`` (``memory_api``: memory pools, regions, copies) and
``SoftExecutableApi`` (``executable_api``: code objects and executables).

Thread-safety: one ``threading.Condition`` guards signals, queues and the object tables;
callbacks into the caller (iteration callbacks, queue error callbacks) run without it held.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from ..hsa_cdef import ffi
from ..hsa_enums import (
    UINT64_MAX,
    HsaStatus,
)
from ..target_id import TargetId
from .config import SoftAgentConfig, SoftSystemConfig
from .executable_api import SoftExecutableApi
from .host_twins import TWINS_ENV, HostTwin, HostTwinTable, initial_host_twins
from .loader import SoftExecutable, SoftKernelObject, SoftLoadedCodeObject, SoftReader
from .memory import SoftMemory
from .memory_api import SoftMemoryApi, SoftMemoryPool
from .packet_processor import SoftQueue
from .signals import SoftSignals
from .system_api import SoftSystemApi

__all__ = ["SoftHsaRuntime"]

_S = HsaStatus
_OK = int(HsaStatus.SUCCESS)


class SoftHsaRuntime(SoftSystemApi, SoftMemoryApi, SoftExecutableApi):
    """A software HSA system built from a ``SoftSystemConfig``.

    Extras beyond HSA (for tests): ``register_host_twin(name, fn)``,
    ``inject_fault(status)`` (the next kernel dispatch on any queue fails with ``status``
    through the queue error callback), ``memory`` (allocation table), ``init_count``.
    """

    implementation = "soft"

    def __init__(self, config: SoftSystemConfig | None = None) -> None:
        self.config = config or SoftSystemConfig.default()
        self.memory = SoftMemory()
        self._cond = threading.Condition()
        self.signals = SoftSignals(self.memory, self._cond)
        self.host_twins: HostTwinTable = initial_host_twins()
        self.kernel_objects: dict[int, SoftKernelObject] = {}
        self.init_count = 0
        self._ids = itertools.count(1)
        self._agents: dict[int, SoftAgentConfig] = {}
        self._agent_order: list[int] = []
        self._pools: dict[int, SoftMemoryPool] = {}
        self._agent_pools: dict[int, list[int]] = {}
        self._isas: dict[int, tuple[int, TargetId, str]] = {}
        self._agent_isa: dict[int, int] = {}
        self._allocations: dict[int, int] = {}  # address -> pool handle
        self._queues: dict[int, SoftQueue] = {}
        self._readers: dict[int, SoftReader] = {}
        self._executables: dict[int, SoftExecutable] = {}
        self._loaded: dict[int, SoftLoadedCodeObject] = {}
        self._faults: list[int] = []
        self._loader_callbacks: list[Any] = []
        self._status_strings: dict[int, Any] = {}
        for agent in self.config.agents:
            handle = next(self._ids)
            self._agents[handle] = agent
            self._agent_order.append(handle)
            pools = []
            for pool_cfg in agent.pools:
                ph = next(self._ids)
                self._pools[ph] = SoftMemoryPool(ph, handle, pool_cfg)
                pools.append(ph)
            self._agent_pools[handle] = pools
            if agent.is_gpu:
                isa = next(self._ids)
                self._isas[isa] = (handle, TargetId.parse(agent.isa), agent.isa)
                self._agent_isa[handle] = isa

    # -- test hooks ---------------------------------------------------------------------

    def register_host_twin(self, name: str, fn: HostTwin) -> None:
        with self._cond:
            self.host_twins[name] = fn

    def inject_fault(self, status: int = HsaStatus.AMD_ERROR_MEMORY_FAULT) -> None:
        with self._cond:
            self._faults.append(int(status))

    def take_injected_fault(self) -> int | None:
        with self._cond:
            return self._faults.pop(0) if self._faults else None

    def take_fault_detail(self) -> str | None:
        """What the fault this thread just raised was about, once: a dispatch of a kernel
        with no host twin (the queue error callback runs on the faulting packet processor's
        thread, so ``HsaLibrary.error`` asks from there)."""
        name = self.host_twins.take_missing()
        if name is None:
            return None
        return (
            f"kernel {name!r} has no host twin (register one with register_host_twin or "
            f"{TWINS_ENV})"
        )

    def _require_init(self) -> bool:
        return self.init_count > 0

    # -- signals ----------------------------------------------------------------------

    def hsa_amd_signal_create(
        self, initial: int, num_consumers: int, consumers: Any, attributes: int, signal: Any
    ) -> int:
        signal[0].handle = self.signals.create(int(initial))
        return _OK

    def hsa_signal_destroy(self, signal: Any) -> int:
        return _OK if self.signals.destroy(int(signal.handle)) else int(_S.ERROR_INVALID_SIGNAL)

    def hsa_signal_load_scacquire(self, signal: Any) -> int:
        return self.signals.load(int(signal.handle))

    def hsa_signal_store_relaxed(self, signal: Any, value: int) -> None:
        self.signals.store(int(signal.handle), int(value))

    def hsa_signal_store_screlease(self, signal: Any, value: int) -> None:
        self.signals.store(int(signal.handle), int(value))

    def hsa_signal_wait_scacquire(
        self, signal: Any, condition: int, compare: int, timeout_hint: int, wait_state: int
    ) -> int:
        timeout = None if timeout_hint == UINT64_MAX else int(timeout_hint)
        _, value = self.signals.wait_any(
            [int(signal.handle)], [int(condition)], [int(compare)], timeout
        )
        return value

    def hsa_amd_signal_wait_any(
        self,
        count: int,
        signals: Any,
        conds: Any,
        values: Any,
        timeout_hint: int,
        wait_hint: int,
        satisfying: Any,
    ) -> int:
        handles = [int(signals[i].handle) for i in range(count)]
        timeout = None if timeout_hint == UINT64_MAX else int(timeout_hint)
        index, value = self.signals.wait_any(
            handles,
            [int(conds[i]) for i in range(count)],
            [int(values[i]) for i in range(count)],
            timeout,
        )
        if satisfying != ffi.NULL:
            satisfying[0] = value
        return 0xFFFFFFFF if index < 0 else index

    # -- queues -----------------------------------------------------------------------

    def hsa_queue_create(
        self,
        agent: Any,
        size: int,
        queue_type: int,
        callback: Any,
        data: Any,
        private_segment_size: int,
        group_segment_size: int,
        queue: Any,
    ) -> int:
        handle = self._agent_handle(agent)
        cfg = self._agents.get(handle)
        if cfg is None or not cfg.is_gpu:
            return int(_S.ERROR_INVALID_AGENT)
        if size < 2 or size & (size - 1) or size > (1 << 17):
            return int(_S.ERROR_INVALID_ARGUMENT)
        if queue_type not in (0, 1):
            return int(_S.ERROR_INVALID_QUEUE_CREATION)
        q = SoftQueue(self, handle, int(size), callback, data, next(self._ids))
        with self._cond:
            self._queues[q.address] = q
        queue[0] = ffi.cast("hsa_queue_t*", q.address)
        return _OK

    def queue_for(self, queue: Any) -> SoftQueue | None:
        return self._queues.get(int(ffi.cast("uintptr_t", queue)))

    def hsa_queue_destroy(self, queue: Any) -> int:
        with self._cond:
            q = self._queues.pop(int(ffi.cast("uintptr_t", queue)), None)
        if q is None:
            return int(_S.ERROR_INVALID_QUEUE)
        q.destroy()
        return _OK

    def _known_queue(self, queue: Any) -> SoftQueue:
        """The queue behind an ``hsa_queue_t*`` for the calls that return no status (HSA
        leaves an unknown queue undefined; here it raises KeyError)."""
        return self._queues[int(ffi.cast("uintptr_t", queue))]

    def hsa_queue_add_write_index_scacq_screl(self, queue: Any, value: int) -> int:
        q = self._known_queue(queue)
        with self._cond:
            amd: Any = ffi.cast("amd_queue_t*", q.address)  # cffi's stubs: cdata has no fields
            old = int(amd.write_dispatch_id)
            amd.write_dispatch_id = old + int(value)
        return old

    def hsa_queue_load_read_index_scacquire(self, queue: Any) -> int:
        return self._known_queue(queue).read_index

    def hsa_amd_profiling_set_profiler_enabled(self, queue: Any, enable: int) -> int:
        q = self.queue_for(queue)
        if q is None:
            return int(_S.ERROR_INVALID_QUEUE)
        q.profiling_enabled = bool(enable)
        return _OK

    def hsa_amd_profiling_get_dispatch_time(self, agent: Any, signal: Any, time: Any) -> int:
        # The soft agent's ticks already are system-clock ticks (TIMESTAMP_FREQUENCY 1 GHz),
        # so the conversion ROCr does here is the identity.
        words = self.signals.words(int(signal.handle))
        if words is None:
            return int(_S.ERROR_INVALID_SIGNAL)
        time.start = int(words[4])
        time.end = int(words[5])
        return _OK
