"""The soft HSA runtime's system, agent and ISA queries (``hsa_init``, ``hsa_system_*``,
``hsa_agent_*``, ``hsa_isa_*``) and the loader extension table; a base class of
``SoftHsaRuntime``, whose docstring describes the conventions.
"""

from __future__ import annotations

import tempfile
import threading
import time
from typing import Any, Callable

from ..agents import AGENT_INFO_QUEUE_MAX_SIZE
from ..hsa_cdef import ffi
from ..hsa_enums import (
    HSA_EXTENSION_AMD_LOADER,
    UINT64_MAX,
    AgentInfo,
    HsaStatus,
    IsaInfo,
    LoadedCodeObjectInfo,
    PoolGlobalFlag,
    SystemInfo,
)
from ..target_id import TargetId
from .config import SoftAgentConfig
from .loader import SoftExecutable, SoftLoadedCodeObject
from .memory import SoftMemory
from .packet_processor import SoftQueue
from .sysfs import SoftSysfs

__all__ = ["SoftSystemApi"]

_S = HsaStatus
_OK = int(HsaStatus.SUCCESS)
_UUID_BYTES = 21
_NAME_BYTES = 64


# Agent attributes answered from the agent's configuration: strings (getter, field bytes)
# and uint32 values.
_STRING_INFO: dict[int, tuple[Callable[[SoftAgentConfig], str], int]] = {
    AgentInfo.NAME: (lambda c: c.name, _NAME_BYTES),
    AgentInfo.VENDOR_NAME: (lambda c: "AMD" if c.is_gpu else "CPU", _NAME_BYTES),
    AgentInfo.AMD_PRODUCT_NAME: (lambda c: c.product_name or c.name, _NAME_BYTES),
    AgentInfo.AMD_UUID: (lambda c: c.uuid or "CPU-XX", _UUID_BYTES),
}
_U32_INFO: dict[int, Callable[[SoftAgentConfig], int]] = {
    AgentInfo.DEVICE: lambda c: 1 if c.is_gpu else 0,
    AgentInfo.NODE: lambda c: c.node,
    AgentInfo.PROFILE: lambda c: 0,
    AgentInfo.DEFAULT_FLOAT_ROUNDING_MODE: lambda c: 1,
    AgentInfo.WAVEFRONT_SIZE: lambda c: c.wavefront_size,
    AgentInfo.FEATURE: lambda c: 1 if c.is_gpu else 0,
    AgentInfo.AMD_CHIP_ID: lambda c: c.chip_id,
    AgentInfo.AMD_COMPUTE_UNIT_COUNT: lambda c: c.compute_units,
    AgentInfo.AMD_BDFID: lambda c: c.bdf_id,
    AgentInfo.AMD_DOMAIN: lambda c: 0,
    AgentInfo.AMD_NUM_SHADER_ENGINES: lambda c: 1,
    AgentInfo.AMD_NUM_XCC: lambda c: 1,
    AgentInfo.AMD_NUM_SHADER_ARRAYS_PER_SE: lambda c: 2,
    AgentInfo.AMD_DRIVER_UID: lambda c: 0x1000 + c.node,
    AGENT_INFO_QUEUE_MAX_SIZE: lambda c: c.queue_max_size if c.is_gpu else 0,
}


class SoftSystemApi:
    """System, agent and ISA functions of ``SoftHsaRuntime``."""

    # Set by SoftHsaRuntime.__init__.
    memory: SoftMemory
    init_count: int
    _cond: threading.Condition
    _agents: dict[int, SoftAgentConfig]
    _agent_order: list[int]
    _isas: dict[int, tuple[int, TargetId, str]]
    _agent_isa: dict[int, int]
    _queues: dict[int, SoftQueue]
    _executables: dict[int, SoftExecutable]
    _loaded: dict[int, SoftLoadedCodeObject]
    _loader_callbacks: list[Any]
    _status_strings: dict[int, Any]
    _require_init: Callable[[], bool]
    _pools: dict[int, Any]
    _agent_pools: dict[int, list[int]]
    _sysfs: SoftSysfs | None = None

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
            with self._cond:
                sysfs, self._sysfs = self._sysfs, None
            if sysfs is not None:
                sysfs.remove()
        return _OK

    # -- sysfs (device metrics; not an HSA function) -------------------------------------

    def soft_sysfs_root(self) -> str:
        """The root of the sysfs tree standing in for ``/sys`` for this runtime's GPUs
        (``soft_hsa.sysfs``): a temporary directory made on first call, with current
        values, and removed at the last ``hsa_shut_down``."""
        with self._cond:
            if self._sysfs is None:
                gpus = []
                for handle in self._agent_order:
                    agent = self._agents[handle]
                    if agent.is_gpu:
                        total = sum(
                            self._pools[p].config.size
                            for p in self._agent_pools[handle]
                            if self._pools[p].config.flags & PoolGlobalFlag.COARSE_GRAINED
                        )
                        gpus.append((0, agent.bdf_id, total))
                self._sysfs = SoftSysfs(tempfile.mkdtemp(prefix="soft-hsa-sysfs-"), gpus)
            sysfs = self._sysfs
        self.refresh_soft_sysfs()
        return sysfs.root

    def refresh_soft_sysfs(self) -> None:
        """Rewrite the sysfs files from the runtime's state now (VRAM used: the bytes live
        in each GPU's pools). Nothing to do before ``soft_sysfs_root`` was called."""
        with self._cond:
            sysfs = self._sysfs
            if sysfs is None:
                return
            owners = {
                p: i
                for i, handle in enumerate(h for h in self._agent_order if self._agents[h].is_gpu)
                for p in self._agent_pools[handle]
            }
            used = [0] * len(sysfs.dirs)
            with self.memory._lock:
                for alloc in self.memory._by_start.values():
                    i = owners.get(alloc.pool)
                    if i is not None:
                        used[i] += alloc.size
        sysfs.refresh(used)  # file writes outside the runtime's lock (the tree has its own)

    def hsa_system_get_info(self, attribute: int, value: Any) -> int:
        if not self._require_init():
            return int(_S.ERROR_NOT_INITIALIZED)
        table: dict[int, tuple[str, Any]] = {
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

    def hsa_system_major_extension_supported(
        self, extension: int, major: int, minor: Any, result: Any
    ) -> int:
        supported = extension == HSA_EXTENSION_AMD_LOADER and major == 1
        minor[0] = 3 if supported else 0
        result[0] = supported
        return _OK

    def hsa_system_get_major_extension_table(
        self, extension: int, major: int, length: int, table: Any
    ) -> int:
        if extension != HSA_EXTENSION_AMD_LOADER or major != 1:
            return int(_S.ERROR_INVALID_ARGUMENT)
        pfn: Any = ffi.new("hsa_ven_amd_loader_1_03_pfn_t*")  # cffi's stubs: cdata has no fields

        @ffi.callback(
            "hsa_status_t(hsa_executable_t, hsa_status_t(*)(hsa_executable_t, "
            "hsa_loaded_code_object_t, void*), void*)"
        )
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

        text = _STRING_INFO.get(attribute)
        if text is not None:
            return put_str(text[0](cfg), text[1])
        number = _U32_INFO.get(attribute)
        if number is not None:
            return put("uint32_t*", number(cfg))
        if attribute == AgentInfo.AMD_SVM_DIRECT_HOST_ACCESS:
            return put("bool*", True)
        if attribute == AgentInfo.AMD_HDP_FLUSH:
            flush: Any = ffi.cast("hsa_amd_hdp_flush_t*", value)
            flush.HDP_MEM_FLUSH_CNTL = ffi.NULL
            flush.HDP_REG_FLUSH_CNTL = ffi.NULL
            return _OK
        if attribute == AgentInfo.AMD_NEAREST_CPU:
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
