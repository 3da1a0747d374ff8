"""``SoftHsaRuntime``: the HSA functions the amdgpu driver calls, implemented in Python
over host memory (a test and development tool, never chosen silently).

Each method has the name and argument list of the C function it stands for and takes the
same cffi objects the driver passes to real ROCr (struct handles by value, out-pointers,
``ffi.callback`` functions), returning the same status values. So ``HsaLibrary.lib`` can be
this object or the dlopened library and the driver code above the boundary does not change.

Thread-safety: one ``threading.Condition`` guards signals, queues and the object tables;
callbacks into the caller (iteration callbacks, queue error callbacks) run without it held.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from ..code_object import HalError, parse_hsaco
from ..hsa_cdef import ffi
from ..hsa_enums import (
    HSA_EXTENSION_AMD_LOADER,
    UINT64_MAX,
    AgentInfo,
    AgentPoolInfo,
    HsaStatus,
    IsaInfo,
    LinkType,
    LoadedCodeObjectInfo,
    PoolAccess,
    PoolGlobalFlag,
    PoolInfo,
    PoolSegment,
    RegionInfo,
    SymbolInfo,
    SymbolKind,
    SystemInfo,
)
from ..target_id import TargetId, compatibility_problem
from .config import SoftAgentConfig, SoftPoolConfig, SoftSystemConfig
from .host_twins import BUILTIN_TWINS, HostTwin
from .loader import SoftExecutable, SoftKernelObject, SoftLoadedCodeObject, SoftReader
from .memory import SoftMemory
from .packet_processor import SoftQueue
from .signals import SoftSignals

__all__ = ["SoftHsaRuntime"]

_S = HsaStatus
_OK = int(HsaStatus.SUCCESS)
_UUID_BYTES = 21
_NAME_BYTES = 64


class _Pool:
    __slots__ = ("handle", "agent", "config")

    def __init__(self, handle: int, agent: int, config: SoftPoolConfig) -> None:
        self.handle = handle
        self.agent = agent
        self.config = config


class SoftHsaRuntime:
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
        self.host_twins: dict[str, HostTwin] = dict(BUILTIN_TWINS)
        self.kernel_objects: dict[int, SoftKernelObject] = {}
        self.init_count = 0
        self._ids = itertools.count(1)
        self._agents: dict[int, SoftAgentConfig] = {}
        self._agent_order: list[int] = []
        self._pools: dict[int, _Pool] = {}
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
                self._pools[ph] = _Pool(ph, handle, pool_cfg)
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

    def _require_init(self) -> bool:
        return self.init_count > 0

    # -- runtime --------------------------------------------------------------------------

    def hsa_status_string(self, status: int, out: Any) -> int:
        try:
            name = HsaStatus(status).name
        except ValueError:
            return int(_S.ERROR_INVALID_ARGUMENT)
        with self._cond:
            text = self._status_strings.get(status)
            if text is None:
                # One string per status, kept alive like ROCr's static table (a fresh
                # one per call would grow without bound on a long run of errors).
                text = ffi.new("char[]", f"HSA_STATUS_{name} (soft HSA agent)".encode())
                self._status_strings[status] = text
        out[0] = text
        return _OK

    def hsa_init(self) -> int:
        with self._cond:
            self.init_count += 1
        return _OK

    def hsa_shut_down(self) -> int:
        with self._cond:
            if self.init_count == 0:
                return int(_S.ERROR_NOT_INITIALIZED)
            self.init_count -= 1
            last = self.init_count == 0
        if last:
            for queue in list(self._queues.values()):
                queue.destroy()
            self._queues.clear()
        return _OK

    def hsa_system_get_info(self, attribute: int, value: Any) -> int:
        if not self._require_init():
            return int(_S.ERROR_NOT_INITIALIZED)
        table = {
            SystemInfo.VERSION_MAJOR: ("uint16_t*", 1),
            SystemInfo.VERSION_MINOR: ("uint16_t*", 1),
            SystemInfo.TIMESTAMP: ("uint64_t*", time.monotonic_ns()),
            SystemInfo.TIMESTAMP_FREQUENCY: ("uint64_t*", 1_000_000_000),
            SystemInfo.SIGNAL_MAX_WAIT: ("uint64_t*", UINT64_MAX),
            SystemInfo.ENDIANNESS: ("uint32_t*", 0),
            SystemInfo.MACHINE_MODEL: ("uint32_t*", 1),
            SystemInfo.AMD_SVM_SUPPORTED: ("bool*", True),
            SystemInfo.AMD_SVM_ACCESSIBLE_BY_DEFAULT: ("bool*", False),
            SystemInfo.AMD_DMABUF_SUPPORTED: ("bool*", False),
            SystemInfo.AMD_VIRTUAL_MEM_API_SUPPORTED: ("bool*", True),
            SystemInfo.AMD_XNACK_ENABLED: ("bool*", False),
        }
        entry = table.get(attribute)
        if entry is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        ffi.cast(entry[0], value)[0] = entry[1]
        return _OK

    def hsa_system_major_extension_supported(self, extension: int, major: int, minor: Any,
                                             result: Any) -> int:
        supported = extension == HSA_EXTENSION_AMD_LOADER and major == 1
        minor[0] = 3 if supported else 0
        result[0] = supported
        return _OK

    def hsa_system_get_major_extension_table(self, extension: int, major: int, length: int,
                                             table: Any) -> int:
        if extension != HSA_EXTENSION_AMD_LOADER or major != 1:
            return int(_S.ERROR_INVALID_ARGUMENT)
        pfn = ffi.new("hsa_ven_amd_loader_1_03_pfn_t*")

        @ffi.callback("hsa_status_t(hsa_executable_t, hsa_status_t(*)(hsa_executable_t, "
                      "hsa_loaded_code_object_t, void*), void*)")
        def iterate_loaded(executable: Any, callback: Any, data: Any) -> int:
            exe = self._executables.get(executable.handle)
            if exe is None:
                return int(_S.ERROR_INVALID_EXECUTABLE)
            for loaded in list(exe.loaded):
                handle = ffi.new("hsa_loaded_code_object_t*", [loaded.handle])[0]
                status = callback(executable, handle, data)
                if status != _OK:
                    return _OK if status == _S.INFO_BREAK else status
            return _OK

        @ffi.callback("hsa_status_t(hsa_loaded_code_object_t, uint32_t, void*)")
        def loaded_info(loaded: Any, attribute: int, value: Any) -> int:
            lco = self._loaded.get(loaded.handle)
            if lco is None:
                return int(_S.ERROR_INVALID_ARGUMENT)
            if attribute == LoadedCodeObjectInfo.AGENT:
                ffi.cast("hsa_agent_t*", value)[0].handle = lco.agent
            elif attribute == LoadedCodeObjectInfo.LOAD_DELTA:
                ffi.cast("int64_t*", value)[0] = lco.image.address
            elif attribute == LoadedCodeObjectInfo.LOAD_BASE:
                ffi.cast("uint64_t*", value)[0] = lco.image.address
            elif attribute == LoadedCodeObjectInfo.LOAD_SIZE:
                ffi.cast("uint64_t*", value)[0] = lco.image.size
            else:
                return int(_S.ERROR_INVALID_ARGUMENT)
            return _OK

        @ffi.callback("hsa_status_t(const void*, const void**)")
        def query_host_address(device_address: Any, host_address: Any) -> int:
            # Device and host addresses are the same memory on the soft agent.
            if self.memory.find(int(ffi.cast("uintptr_t", device_address))) is None:
                return int(_S.ERROR_INVALID_ARGUMENT)
            host_address[0] = device_address
            return _OK

        self._loader_callbacks.extend([iterate_loaded, loaded_info, query_host_address])
        pfn.hsa_ven_amd_loader_query_host_address = query_host_address
        pfn.hsa_ven_amd_loader_executable_iterate_loaded_code_objects = iterate_loaded
        pfn.hsa_ven_amd_loader_loaded_code_object_get_info = loaded_info
        ffi.memmove(table, pfn, min(int(length), ffi.sizeof(pfn[0])))
        return _OK

    # -- agents ---------------------------------------------------------------------------

    def _agent_handle(self, agent: Any) -> int:
        return int(agent.handle)

    def hsa_iterate_agents(self, callback: Any, data: Any) -> int:
        if not self._require_init():
            return int(_S.ERROR_NOT_INITIALIZED)
        for handle in self._agent_order:
            status = callback(ffi.new("hsa_agent_t*", [handle])[0], data)
            if status == _S.INFO_BREAK:
                return _OK
            if status != _OK:
                return status
        return _OK

    def hsa_agent_get_info(self, agent: Any, attribute: int, value: Any) -> int:
        cfg = self._agents.get(self._agent_handle(agent))
        if cfg is None:
            return int(_S.ERROR_INVALID_AGENT)

        def put(ctype: str, v: Any) -> int:
            ffi.cast(ctype, value)[0] = v
            return _OK

        def put_str(text: str, size: int) -> int:
            raw = text.encode()[: size - 1]
            ffi.memmove(value, raw + b"\0" * (size - len(raw)), size)
            return _OK

        a = AgentInfo
        if attribute == a.NAME:
            return put_str(cfg.name, _NAME_BYTES)
        if attribute == a.VENDOR_NAME:
            return put_str("AMD" if cfg.is_gpu else "CPU", _NAME_BYTES)
        if attribute == a.AMD_PRODUCT_NAME:
            return put_str(cfg.product_name or cfg.name, _NAME_BYTES)
        if attribute == a.AMD_UUID:
            return put_str(cfg.uuid or "CPU-XX", _UUID_BYTES)
        if attribute == a.DEVICE:
            return put("uint32_t*", 1 if cfg.is_gpu else 0)
        if attribute == a.NODE:
            return put("uint32_t*", cfg.node)
        if attribute == a.PROFILE:
            return put("uint32_t*", 0)
        if attribute == a.DEFAULT_FLOAT_ROUNDING_MODE:
            return put("uint32_t*", 1)
        if attribute == a.WAVEFRONT_SIZE:
            return put("uint32_t*", cfg.wavefront_size)
        if attribute == a.FEATURE:
            return put("uint32_t*", 1 if cfg.is_gpu else 0)
        if attribute == a.AMD_CHIP_ID:
            return put("uint32_t*", cfg.chip_id)
        if attribute == a.AMD_COMPUTE_UNIT_COUNT:
            return put("uint32_t*", cfg.compute_units)
        if attribute == a.AMD_BDFID:
            return put("uint32_t*", cfg.bdf_id)
        if attribute == a.AMD_DOMAIN:
            return put("uint32_t*", 0)
        if attribute in (a.AMD_NUM_SHADER_ENGINES, a.AMD_NUM_XCC):
            return put("uint32_t*", 1)
        if attribute == a.AMD_NUM_SHADER_ARRAYS_PER_SE:
            return put("uint32_t*", 2)
        if attribute == a.AMD_DRIVER_UID:
            return put("uint32_t*", 0x1000 + cfg.node)
        if attribute == a.AMD_SVM_DIRECT_HOST_ACCESS:
            return put("bool*", True)
        if attribute == a.AMD_HDP_FLUSH:
            flush = ffi.cast("hsa_amd_hdp_flush_t*", value)
            flush.HDP_MEM_FLUSH_CNTL = ffi.NULL
            flush.HDP_REG_FLUSH_CNTL = ffi.NULL
            return _OK
        if attribute == a.AMD_NEAREST_CPU:
            cpu = next(h for h in self._agent_order if not self._agents[h].is_gpu)
            ffi.cast("hsa_agent_t*", value)[0].handle = cpu
            return _OK
        return int(_S.ERROR_INVALID_ARGUMENT)

    def hsa_agent_iterate_isas(self, agent: Any, callback: Any, data: Any) -> int:
        handle = self._agent_handle(agent)
        if handle not in self._agents:
            return int(_S.ERROR_INVALID_AGENT)
        isa = self._agent_isa.get(handle)
        if isa is not None:
            status = callback(ffi.new("hsa_isa_t*", [isa])[0], data)
            if status not in (_OK, _S.INFO_BREAK):
                return status
        return _OK

    def hsa_isa_get_info_alt(self, isa: Any, attribute: int, value: Any) -> int:
        entry = self._isas.get(int(isa.handle))
        if entry is None:
            return int(_S.ERROR_INVALID_ISA)
        name = entry[2].encode()
        if attribute == IsaInfo.NAME_LENGTH:
            ffi.cast("uint32_t*", value)[0] = len(name) + 1
        elif attribute == IsaInfo.NAME:
            ffi.memmove(value, name + b"\0", len(name) + 1)
        elif attribute == IsaInfo.WORKGROUP_MAX_DIM:
            dims = ffi.cast("uint16_t*", value)
            dims[0], dims[1], dims[2] = 1024, 1024, 1024
        elif attribute == IsaInfo.WORKGROUP_MAX_SIZE:
            ffi.cast("uint32_t*", value)[0] = 1024
        else:
            return int(_S.ERROR_INVALID_ARGUMENT)
        return _OK

    # -- memory pools -------------------------------------------------------------------

    def hsa_amd_agent_iterate_memory_pools(self, agent: Any, callback: Any, data: Any) -> int:
        handle = self._agent_handle(agent)
        if handle not in self._agents:
            return int(_S.ERROR_INVALID_AGENT)
        for pool in self._agent_pools[handle]:
            status = callback(ffi.new("hsa_amd_memory_pool_t*", [pool])[0], data)
            if status == _S.INFO_BREAK:
                break
            if status != _OK:
                return status
        return _OK

    def hsa_amd_memory_pool_get_info(self, pool: Any, attribute: int, value: Any) -> int:
        p = self._pools.get(int(pool.handle))
        if p is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        c = p.config
        table = {
            PoolInfo.SEGMENT: ("uint32_t*", int(PoolSegment.GLOBAL)),
            PoolInfo.GLOBAL_FLAGS: ("uint32_t*", int(c.flags)),
            PoolInfo.SIZE: ("size_t*", c.size),
            PoolInfo.RUNTIME_ALLOC_ALLOWED: ("bool*", True),
            PoolInfo.RUNTIME_ALLOC_GRANULE: ("size_t*", c.granule),
            PoolInfo.RUNTIME_ALLOC_REC_GRANULE: ("size_t*", c.granule),
            PoolInfo.RUNTIME_ALLOC_ALIGNMENT: ("size_t*", c.alignment),
            PoolInfo.ACCESSIBLE_BY_ALL: ("bool*", c.accessible_by_all),
            PoolInfo.ALLOC_MAX_SIZE: ("size_t*", c.alloc_max_size),
        }
        entry = table.get(attribute)
        if entry is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        ffi.cast(entry[0], value)[0] = entry[1]
        return _OK

    def _access(self, agent: int, pool: _Pool) -> PoolAccess:
        if pool.agent == agent or pool.config.accessible_by_all:
            if (not self._agents[pool.agent].is_gpu and self._agents[agent].is_gpu
                    and pool.config.flags & PoolGlobalFlag.COARSE_GRAINED
                    and not pool.config.accessible_by_all):
                return PoolAccess.DISALLOWED_BY_DEFAULT
            return PoolAccess.ALLOWED_BY_DEFAULT
        return PoolAccess.DISALLOWED_BY_DEFAULT

    def _links(self, agent: int, pool: _Pool) -> list[tuple[int, int, bool]]:
        """(link type, numa distance, coherent) per hop from ``agent`` to ``pool``."""
        if pool.agent == agent:
            return []
        a_gpu = self._agents[agent].is_gpu
        p_gpu = self._agents[pool.agent].is_gpu
        if a_gpu and p_gpu:
            return [(int(self.config.gpu_link), self.config.gpu_numa_distance, True)]
        return [(int(LinkType.PCIE), 20, True)]

    def hsa_amd_agent_memory_pool_get_info(self, agent: Any, pool: Any, attribute: int,
                                           value: Any) -> int:
        handle = self._agent_handle(agent)
        p = self._pools.get(int(pool.handle))
        if handle not in self._agents or p is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        if attribute == AgentPoolInfo.ACCESS:
            ffi.cast("uint32_t*", value)[0] = int(self._access(handle, p))
        elif attribute == AgentPoolInfo.NUM_LINK_HOPS:
            ffi.cast("uint32_t*", value)[0] = len(self._links(handle, p))
        elif attribute == AgentPoolInfo.LINK_INFO:
            infos = ffi.cast("hsa_amd_memory_pool_link_info_t*", value)
            for i, (link, numa, coherent) in enumerate(self._links(handle, p)):
                info = infos[i]
                info.min_latency, info.max_latency = 1, 10
                info.min_bandwidth, info.max_bandwidth = 1000, 50000
                info.atomic_support_32bit = True
                info.atomic_support_64bit = link == LinkType.XGMI
                info.coherent_support = coherent
                info.link_type = link
                info.numa_distance = numa
        else:
            return int(_S.ERROR_INVALID_ARGUMENT)
        return _OK

    def hsa_amd_memory_pool_allocate(self, pool: Any, size: int, flags: int, ptr: Any) -> int:
        p = self._pools.get(int(pool.handle))
        if p is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        if size == 0 or size > p.config.alloc_max_size:
            return int(_S.ERROR_INVALID_ALLOCATION)
        size = -(-int(size) // p.config.granule) * p.config.granule
        alloc = self.memory.allocate(size, p.config.alignment, owner_agent=p.agent,
                                     pool=p.handle,
                                     accessible_by_all=p.config.accessible_by_all)
        for handle in self._agents:
            if self._access(handle, p) == PoolAccess.ALLOWED_BY_DEFAULT:
                alloc.allowed_agents.add(handle)
        ptr[0] = ffi.cast("void*", alloc.address)
        return _OK

    def hsa_amd_memory_pool_free(self, ptr: Any) -> int:
        address = int(ffi.cast("uintptr_t", ptr))
        alloc = self.memory.find(address)
        if alloc is None or alloc.address != address or not alloc.pool:
            return int(_S.ERROR_INVALID_ARGUMENT)
        self.memory.free(address)
        return _OK

    def hsa_amd_agents_allow_access(self, num_agents: int, agents: Any, flags: Any,
                                    ptr: Any) -> int:
        address = int(ffi.cast("uintptr_t", ptr))
        alloc = self.memory.find(address)
        if alloc is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        handles = [int(agents[i].handle) for i in range(num_agents)]
        if any(h not in self._agents for h in handles):
            return int(_S.ERROR_INVALID_AGENT)
        alloc.allowed_agents.update(handles)
        return _OK

    def hsa_memory_copy(self, dst: Any, src: Any, size: int) -> int:
        ffi.memmove(dst, src, size)
        return _OK

    def hsa_amd_memory_fill(self, ptr: Any, value: int, count: int) -> int:
        address = int(ffi.cast("uintptr_t", ptr))
        if address % 4 or self.memory.find(address, 4 * int(count)) is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        self.memory.view(address, 4 * int(count)).view("<u4")[:] = value
        return _OK

    def hsa_amd_memory_lock(self, host_ptr: Any, size: int, agents: Any, num_agent: int,
                            agent_ptr: Any) -> int:
        address = int(ffi.cast("uintptr_t", host_ptr))
        handles = {int(agents[i].handle) for i in range(num_agent)} if num_agent else set(
            self._agents)
        self.memory.register_host(address, int(size), handles)
        agent_ptr[0] = host_ptr
        return _OK

    def hsa_amd_memory_unlock(self, host_ptr: Any) -> int:
        address = int(ffi.cast("uintptr_t", host_ptr))
        alloc = self.memory.find(address)
        if alloc is None or not alloc.locked_host:
            return int(_S.ERROR_INVALID_ARGUMENT)
        self.memory.free(alloc.address)
        return _OK

    def hsa_amd_pointer_info(self, ptr: Any, info: Any, alloc_fn: Any, num_accessible: Any,
                             accessible: Any) -> int:
        address = int(ffi.cast("uintptr_t", ptr))
        alloc = self.memory.find(address)
        info.type = 0 if alloc is None else (2 if alloc.locked_host else 1)
        if alloc is not None:
            info.agentBaseAddress = ffi.cast("void*", alloc.address)
            info.hostBaseAddress = ffi.cast("void*", alloc.address)
            info.sizeInBytes = alloc.size
            info.agentOwner.handle = alloc.owner_agent
            pool = self._pools.get(alloc.pool)
            info.global_flags = int(pool.config.flags) if pool else 0
        if num_accessible != ffi.NULL:
            num_accessible[0] = 0
        return _OK

    def hsa_agent_iterate_regions(self, agent: Any, callback: Any, data: Any) -> int:
        handle = self._agent_handle(agent)
        if handle not in self._agents:
            return int(_S.ERROR_INVALID_AGENT)
        # Regions are the legacy view of the same pools (same handles).
        for pool in self._agent_pools[handle]:
            status = callback(ffi.new("hsa_region_t*", [pool])[0], data)
            if status == _S.INFO_BREAK:
                break
            if status != _OK:
                return status
        return _OK

    def hsa_region_get_info(self, region: Any, attribute: int, value: Any) -> int:
        p = self._pools.get(int(region.handle))
        if p is None:
            return int(_S.ERROR_INVALID_REGION)
        if attribute == RegionInfo.SEGMENT:
            ffi.cast("uint32_t*", value)[0] = int(PoolSegment.GLOBAL)
        elif attribute == RegionInfo.GLOBAL_FLAGS:
            ffi.cast("uint32_t*", value)[0] = int(p.config.flags)
        elif attribute == RegionInfo.SIZE:
            ffi.cast("size_t*", value)[0] = p.config.size
        elif attribute == RegionInfo.RUNTIME_ALLOC_ALLOWED:
            ffi.cast("bool*", value)[0] = True
        else:
            return int(_S.ERROR_INVALID_ARGUMENT)
        return _OK

    # -- signals ----------------------------------------------------------------------

    def hsa_amd_signal_create(self, initial: int, num_consumers: int, consumers: Any,
                              attributes: int, signal: Any) -> int:
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

    def hsa_signal_wait_scacquire(self, signal: Any, condition: int, compare: int,
                                  timeout_hint: int, wait_state: int) -> int:
        timeout = None if timeout_hint == UINT64_MAX else int(timeout_hint)
        _, value = self.signals.wait_any([int(signal.handle)], [int(condition)],
                                         [int(compare)], timeout)
        return value

    def hsa_amd_signal_wait_any(self, count: int, signals: Any, conds: Any, values: Any,
                                timeout_hint: int, wait_hint: int, satisfying: Any) -> int:
        handles = [int(signals[i].handle) for i in range(count)]
        timeout = None if timeout_hint == UINT64_MAX else int(timeout_hint)
        index, value = self.signals.wait_any(handles, [int(conds[i]) for i in range(count)],
                                             [int(values[i]) for i in range(count)], timeout)
        if satisfying != ffi.NULL:
            satisfying[0] = value
        return 0xFFFFFFFF if index < 0 else index

    # -- queues -----------------------------------------------------------------------

    def hsa_queue_create(self, agent: Any, size: int, queue_type: int, callback: Any,
                         data: Any, private_segment_size: int, group_segment_size: int,
                         queue: Any) -> int:
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

    def hsa_queue_add_write_index_scacq_screl(self, queue: Any, value: int) -> int:
        q = self.queue_for(queue)
        with self._cond:
            amd = ffi.cast("amd_queue_t*", q.address)
            old = int(amd.write_dispatch_id)
            amd.write_dispatch_id = old + int(value)
        return old

    def hsa_queue_load_read_index_scacquire(self, queue: Any) -> int:
        return self.queue_for(queue).read_index

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

    # -- code objects and executables ---------------------------------------------------

    def hsa_code_object_reader_create_from_memory(self, code_object: Any, size: int,
                                                  reader: Any) -> int:
        image = bytes(ffi.buffer(ffi.cast("char*", code_object), size))
        try:
            parsed = parse_hsaco(image)
        except HalError:
            return int(_S.ERROR_INVALID_CODE_OBJECT)
        handle = next(self._ids)
        with self._cond:
            self._readers[handle] = SoftReader(image, parsed)
        reader[0].handle = handle
        return _OK

    def hsa_code_object_reader_destroy(self, reader: Any) -> int:
        with self._cond:
            found = self._readers.pop(int(reader.handle), None)
        return _OK if found else int(_S.ERROR_INVALID_CODE_OBJECT_READER)

    def hsa_executable_create_alt(self, profile: int, rounding: int, options: Any,
                                  executable: Any) -> int:
        handle = next(self._ids)
        with self._cond:
            self._executables[handle] = SoftExecutable(handle, int(profile))
        executable[0].handle = handle
        return _OK

    def hsa_executable_load_agent_code_object(self, executable: Any, agent: Any, reader: Any,
                                              options: Any, loaded: Any) -> int:
        exe = self._executables.get(int(executable.handle))
        rd = self._readers.get(int(reader.handle))
        handle = self._agent_handle(agent)
        if exe is None:
            return int(_S.ERROR_INVALID_EXECUTABLE)
        if rd is None:
            return int(_S.ERROR_INVALID_CODE_OBJECT_READER)
        if exe.frozen:
            return int(_S.ERROR_FROZEN_EXECUTABLE)
        isa = self._agent_isa.get(handle)
        if isa is None:
            return int(_S.ERROR_INVALID_AGENT)
        if compatibility_problem(rd.code_object.target, self._isas[isa][1]) is not None:
            return int(_S.ERROR_INVALID_ISA)
        image = self.memory.allocate(len(rd.image), 4096, owner_agent=handle)
        image.array[:] = memoryview(rd.image)
        lco = SoftLoadedCodeObject(next(self._ids), handle, image, rd.code_object)
        with self._cond:
            exe.loaded.append(lco)
            self._loaded[lco.handle] = lco
            for kernel in rd.code_object.kernels.values():
                kobj = image.address + kernel.descriptor_offset
                self.kernel_objects[kobj] = SoftKernelObject(kernel, handle, exe.handle)
        if loaded != ffi.NULL:
            loaded[0].handle = lco.handle
        return _OK

    def hsa_executable_freeze(self, executable: Any, options: Any) -> int:
        exe = self._executables.get(int(executable.handle))
        if exe is None:
            return int(_S.ERROR_INVALID_EXECUTABLE)
        if exe.frozen:
            return int(_S.ERROR_FROZEN_EXECUTABLE)
        exe.frozen = True
        return _OK

    def hsa_executable_destroy(self, executable: Any) -> int:
        with self._cond:
            exe = self._executables.pop(int(executable.handle), None)
            if exe is None:
                return int(_S.ERROR_INVALID_EXECUTABLE)
            for lco in exe.loaded:
                self._loaded.pop(lco.handle, None)
                for kernel in lco.code_object.kernels.values():
                    self.kernel_objects.pop(lco.image.address + kernel.descriptor_offset, None)
        for lco in exe.loaded:
            self.memory.free(lco.image.address)
        return _OK

    def hsa_executable_get_symbol_by_name(self, executable: Any, name: Any, agent: Any,
                                          symbol: Any) -> int:
        exe = self._executables.get(int(executable.handle))
        if exe is None:
            return int(_S.ERROR_INVALID_EXECUTABLE)
        # cffi passes Python bytes for ``const char*`` straight to C; accept both forms.
        raw = name if isinstance(name, bytes) else ffi.string(name)
        text = raw.decode("utf-8", "replace")
        want_agent = int(agent[0].handle) if agent != ffi.NULL else 0
        for lco in exe.loaded:
            if want_agent and lco.agent != want_agent:
                continue
            for kernel in lco.code_object.kernels.values():
                if kernel.symbol == text:
                    handle = next(self._ids)
                    exe.symbols[handle] = (kernel, lco.agent,
                                           lco.image.address + kernel.descriptor_offset)
                    symbol[0].handle = handle
                    return _OK
        return int(_S.ERROR_INVALID_SYMBOL_NAME)

    def hsa_executable_symbol_get_info(self, symbol: Any, attribute: int, value: Any) -> int:
        for exe in list(self._executables.values()):
            entry = exe.symbols.get(int(symbol.handle))
            if entry is not None:
                break
        else:
            return int(_S.ERROR_INVALID_EXECUTABLE_SYMBOL)
        kernel, _agent, kobj = entry
        s = SymbolInfo
        ints = {
            s.TYPE: ("uint32_t*", int(SymbolKind.KERNEL)),
            s.NAME_LENGTH: ("uint32_t*", len(kernel.symbol)),
            s.KERNEL_KERNARG_SEGMENT_SIZE: ("uint32_t*", kernel.kernarg_segment_size),
            s.KERNEL_KERNARG_SEGMENT_ALIGNMENT: ("uint32_t*", kernel.kernarg_segment_align),
            s.KERNEL_GROUP_SEGMENT_SIZE: ("uint32_t*", kernel.group_segment_fixed_size),
            s.KERNEL_PRIVATE_SEGMENT_SIZE: ("uint32_t*", kernel.private_segment_fixed_size),
            s.KERNEL_OBJECT: ("uint64_t*", kobj),
        }
        if attribute == s.NAME:
            ffi.memmove(value, kernel.symbol.encode(), len(kernel.symbol))
            return _OK
        entry2 = ints.get(attribute)
        if entry2 is None:
            return int(_S.ERROR_INVALID_ARGUMENT)
        ffi.cast(entry2[0], value)[0] = entry2[1]
        return _OK
