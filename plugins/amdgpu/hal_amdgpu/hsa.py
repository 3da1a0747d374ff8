"""The one native boundary of the amdgpu driver: HSA/ROCr through cffi (ABI mode).

Everything the driver asks of HSA goes through an ``HsaLibrary``: ``hsa.lib.<hsa function>``
with cffi arguments built from ``hsa.ffi``, and ``hsa.check(status, what)`` turning a status
into a ``HalError``. The object behind ``lib`` is either the real ``libhsa-runtime64`` opened
with ``ffi.dlopen`` or the software HSA agent (``hal_amdgpu.soft_hsa``), which exposes the same
function names taking the same cffi arguments; so the code above this module is identical on
real ROCr and on the soft agent.

Loader order (IREE's): explicit search paths, ``HAL_AMDGPU_LIBHSA_PATH`` (a file or a
directory), then ``libhsa-runtime64.so.1`` and ``libhsa-runtime64.so`` on the system search
path. A path that names a shared library is loaded as is; a directory is searched for the two
names. Failure lists every path tried.

Thread-safety: an ``HsaLibrary`` is immutable after ``open``; HSA itself is thread-safe.
"""

from __future__ import annotations

import enum
import os
import threading
from typing import Any, Sequence

import cffi

from hal_core import (
    HalError,
    StatusCode,
    UnavailableError,
    error_for,
)

__all__ = [
    "CDEF",
    "ffi",
    "HsaStatus",
    "HsaLibrary",
    "LIBHSA_ENV",
    "LIBHSA_NAMES",
    "status_to_code",
    "load_libhsa",
    "candidate_paths",
]

LIBHSA_ENV = "HAL_AMDGPU_LIBHSA_PATH"
LIBHSA_NAMES = ("libhsa-runtime64.so.1", "libhsa-runtime64.so")

# Declarations follow the HSA 1.x / ROCr headers (hsa.h, hsa_ext_amd.h, amd_hsa_queue.h,
# amd_hsa_signal.h, hsa_ven_amd_loader.h). Enum-typed parameters are declared as their
# 32-bit integer type so the Python enums below are the single source of values; the
# layout test compiles a probe against /usr/include/hsa to prove sizes and offsets agree.
CDEF = r"""
typedef uint32_t hsa_status_t;
typedef struct hsa_agent_s { uint64_t handle; } hsa_agent_t;
typedef struct hsa_signal_s { uint64_t handle; } hsa_signal_t;
typedef struct hsa_region_s { uint64_t handle; } hsa_region_t;
typedef struct hsa_isa_s { uint64_t handle; } hsa_isa_t;
typedef struct hsa_executable_s { uint64_t handle; } hsa_executable_t;
typedef struct hsa_executable_symbol_s { uint64_t handle; } hsa_executable_symbol_t;
typedef struct hsa_code_object_reader_s { uint64_t handle; } hsa_code_object_reader_t;
typedef struct hsa_loaded_code_object_s { uint64_t handle; } hsa_loaded_code_object_t;
typedef struct hsa_amd_memory_pool_s { uint64_t handle; } hsa_amd_memory_pool_t;
typedef int64_t hsa_signal_value_t;

typedef struct hsa_queue_s {
  uint32_t type;
  uint32_t features;
  void* base_address;
  hsa_signal_t doorbell_signal;
  uint32_t size;
  uint32_t reserved1;
  uint64_t id;
} hsa_queue_t;

typedef struct amd_queue_s {
  hsa_queue_t hsa_queue;
  uint32_t reserved1[4];
  uint64_t write_dispatch_id;
  uint32_t group_segment_aperture_base_hi;
  uint32_t private_segment_aperture_base_hi;
  uint32_t max_cu_id;
  uint32_t max_wave_id;
  uint64_t max_legacy_doorbell_dispatch_id_plus_1;
  uint32_t legacy_doorbell_lock;
  uint32_t reserved2[9];
  uint64_t read_dispatch_id;
  uint32_t read_dispatch_id_field_base_byte_offset;
  uint32_t compute_tmpring_size;
  uint32_t scratch_resource_descriptor[4];
  uint64_t scratch_backing_memory_location;
  uint64_t scratch_backing_memory_byte_size;
  uint32_t scratch_wave64_lane_byte_size;
  uint32_t queue_properties;
  uint32_t reserved3[2];
  hsa_signal_t queue_inactive_signal;
  uint32_t reserved4[14];
} amd_queue_t;

typedef struct amd_signal_s {
  int64_t kind;
  int64_t value;
  uint64_t event_mailbox_ptr;
  uint32_t event_id;
  uint32_t reserved1;
  uint64_t start_ts;
  uint64_t end_ts;
  uint64_t queue_ptr;
  uint32_t reserved3[2];
} amd_signal_t;

typedef struct hsa_kernel_dispatch_packet_s {
  uint16_t header;
  uint16_t setup;
  uint16_t workgroup_size_x;
  uint16_t workgroup_size_y;
  uint16_t workgroup_size_z;
  uint16_t reserved0;
  uint32_t grid_size_x;
  uint32_t grid_size_y;
  uint32_t grid_size_z;
  uint32_t private_segment_size;
  uint32_t group_segment_size;
  uint64_t kernel_object;
  void* kernarg_address;
  uint64_t reserved2;
  hsa_signal_t completion_signal;
} hsa_kernel_dispatch_packet_t;

typedef struct hsa_barrier_and_packet_s {
  uint16_t header;
  uint16_t reserved0;
  uint32_t reserved1;
  hsa_signal_t dep_signal[5];
  uint64_t reserved2;
  hsa_signal_t completion_signal;
} hsa_barrier_and_packet_t;

typedef struct hsa_barrier_or_packet_s {
  uint16_t header;
  uint16_t reserved0;
  uint32_t reserved1;
  hsa_signal_t dep_signal[5];
  uint64_t reserved2;
  hsa_signal_t completion_signal;
} hsa_barrier_or_packet_t;

typedef struct hsa_amd_vendor_packet_header_s {
  uint16_t header;
  uint8_t AmdFormat;
  uint8_t reserved;
} hsa_amd_vendor_packet_header_t;

typedef struct hsa_amd_barrier_value_packet_s {
  hsa_amd_vendor_packet_header_t header;
  uint32_t reserved0;
  hsa_signal_t signal;
  hsa_signal_value_t value;
  hsa_signal_value_t mask;
  uint32_t cond;
  uint32_t reserved1;
  uint64_t reserved2;
  uint64_t reserved3;
  hsa_signal_t completion_signal;
} hsa_amd_barrier_value_packet_t;

typedef struct hsa_amd_memory_pool_link_info_s {
  uint32_t min_latency;
  uint32_t max_latency;
  uint32_t min_bandwidth;
  uint32_t max_bandwidth;
  bool atomic_support_32bit;
  bool atomic_support_64bit;
  bool coherent_support;
  uint32_t link_type;
  uint32_t numa_distance;
} hsa_amd_memory_pool_link_info_t;

typedef struct hsa_amd_hdp_flush_s {
  uint32_t* HDP_MEM_FLUSH_CNTL;
  uint32_t* HDP_REG_FLUSH_CNTL;
} hsa_amd_hdp_flush_t;

typedef struct hsa_amd_pointer_info_s {
  uint32_t size;
  uint32_t type;
  void* agentBaseAddress;
  void* hostBaseAddress;
  size_t sizeInBytes;
  void* userData;
  hsa_agent_t agentOwner;
  uint32_t global_flags;
} hsa_amd_pointer_info_t;

typedef struct hsa_ven_amd_loader_1_03_pfn_s {
  hsa_status_t (*hsa_ven_amd_loader_query_host_address)(const void*, const void**);
  hsa_status_t (*hsa_ven_amd_loader_query_segment_descriptors)(void*, size_t*);
  hsa_status_t (*hsa_ven_amd_loader_query_executable)(const void*, hsa_executable_t*);
  hsa_status_t (*hsa_ven_amd_loader_executable_iterate_loaded_code_objects)(
      hsa_executable_t,
      hsa_status_t (*)(hsa_executable_t, hsa_loaded_code_object_t, void*), void*);
  hsa_status_t (*hsa_ven_amd_loader_loaded_code_object_get_info)(
      hsa_loaded_code_object_t, uint32_t, void*);
  void* hsa_ven_amd_loader_code_object_reader_create_from_file_with_offset_size;
  void* hsa_ven_amd_loader_iterate_executables;
} hsa_ven_amd_loader_1_03_pfn_t;

hsa_status_t hsa_status_string(hsa_status_t status, const char** status_string);
hsa_status_t hsa_init(void);
hsa_status_t hsa_shut_down(void);
hsa_status_t hsa_system_get_info(uint32_t attribute, void* value);
hsa_status_t hsa_system_major_extension_supported(uint16_t extension, uint16_t version_major,
                                                  uint16_t* version_minor, bool* result);
hsa_status_t hsa_system_get_major_extension_table(uint16_t extension, uint16_t version_major,
                                                  size_t table_length, void* table);

hsa_status_t hsa_iterate_agents(hsa_status_t (*callback)(hsa_agent_t, void*), void* data);
hsa_status_t hsa_agent_get_info(hsa_agent_t agent, uint32_t attribute, void* value);
hsa_status_t hsa_agent_iterate_isas(hsa_agent_t agent,
                                    hsa_status_t (*callback)(hsa_isa_t, void*), void* data);
hsa_status_t hsa_isa_get_info_alt(hsa_isa_t isa, uint32_t attribute, void* value);

hsa_status_t hsa_amd_agent_iterate_memory_pools(
    hsa_agent_t agent, hsa_status_t (*callback)(hsa_amd_memory_pool_t, void*), void* data);
hsa_status_t hsa_amd_memory_pool_get_info(hsa_amd_memory_pool_t pool, uint32_t attribute,
                                          void* value);
hsa_status_t hsa_amd_agent_memory_pool_get_info(hsa_agent_t agent, hsa_amd_memory_pool_t pool,
                                                uint32_t attribute, void* value);
hsa_status_t hsa_amd_memory_pool_allocate(hsa_amd_memory_pool_t pool, size_t size,
                                          uint32_t flags, void** ptr);
hsa_status_t hsa_amd_memory_pool_free(void* ptr);
hsa_status_t hsa_amd_agents_allow_access(uint32_t num_agents, const hsa_agent_t* agents,
                                         const uint32_t* flags, const void* ptr);
hsa_status_t hsa_memory_copy(void* dst, const void* src, size_t size);
hsa_status_t hsa_amd_memory_fill(void* ptr, uint32_t value, size_t count);
hsa_status_t hsa_amd_memory_lock(void* host_ptr, size_t size, hsa_agent_t* agents,
                                 int num_agent, void** agent_ptr);
hsa_status_t hsa_amd_memory_unlock(void* host_ptr);
hsa_status_t hsa_amd_pointer_info(const void* ptr, hsa_amd_pointer_info_t* info,
                                  void* (*alloc)(size_t), uint32_t* num_agents_accessible,
                                  hsa_agent_t** accessible);
hsa_status_t hsa_agent_iterate_regions(hsa_agent_t agent,
                                       hsa_status_t (*callback)(hsa_region_t, void*),
                                       void* data);
hsa_status_t hsa_region_get_info(hsa_region_t region, uint32_t attribute, void* value);

hsa_status_t hsa_amd_signal_create(hsa_signal_value_t initial_value, uint32_t num_consumers,
                                   const hsa_agent_t* consumers, uint64_t attributes,
                                   hsa_signal_t* signal);
hsa_status_t hsa_signal_destroy(hsa_signal_t signal);
hsa_signal_value_t hsa_signal_load_scacquire(hsa_signal_t signal);
void hsa_signal_store_relaxed(hsa_signal_t signal, hsa_signal_value_t value);
void hsa_signal_store_screlease(hsa_signal_t signal, hsa_signal_value_t value);
hsa_signal_value_t hsa_signal_wait_scacquire(hsa_signal_t signal, uint32_t condition,
                                             hsa_signal_value_t compare_value,
                                             uint64_t timeout_hint, uint32_t wait_state_hint);
uint32_t hsa_amd_signal_wait_any(uint32_t signal_count, hsa_signal_t* signals,
                                 uint32_t* conds, hsa_signal_value_t* values,
                                 uint64_t timeout_hint, uint32_t wait_hint,
                                 hsa_signal_value_t* satisfying_value);

hsa_status_t hsa_queue_create(hsa_agent_t agent, uint32_t size, uint32_t type,
                              void (*callback)(hsa_status_t, hsa_queue_t*, void*), void* data,
                              uint32_t private_segment_size, uint32_t group_segment_size,
                              hsa_queue_t** queue);
hsa_status_t hsa_queue_destroy(hsa_queue_t* queue);
uint64_t hsa_queue_add_write_index_scacq_screl(const hsa_queue_t* queue, uint64_t value);
uint64_t hsa_queue_load_read_index_scacquire(const hsa_queue_t* queue);
hsa_status_t hsa_amd_profiling_set_profiler_enabled(hsa_queue_t* queue, int enable);
typedef struct hsa_amd_profiling_dispatch_time_s {
  uint64_t start;
  uint64_t end;
} hsa_amd_profiling_dispatch_time_t;
hsa_status_t hsa_amd_profiling_get_dispatch_time(hsa_agent_t agent, hsa_signal_t signal,
                                                 hsa_amd_profiling_dispatch_time_t* time);

hsa_status_t hsa_code_object_reader_create_from_memory(const void* code_object, size_t size,
                                                       hsa_code_object_reader_t* reader);
hsa_status_t hsa_code_object_reader_destroy(hsa_code_object_reader_t reader);
hsa_status_t hsa_executable_create_alt(uint32_t profile, uint32_t rounding_mode,
                                       const char* options, hsa_executable_t* executable);
hsa_status_t hsa_executable_load_agent_code_object(hsa_executable_t executable,
                                                   hsa_agent_t agent,
                                                   hsa_code_object_reader_t reader,
                                                   const char* options,
                                                   hsa_loaded_code_object_t* loaded);
hsa_status_t hsa_executable_freeze(hsa_executable_t executable, const char* options);
hsa_status_t hsa_executable_destroy(hsa_executable_t executable);
hsa_status_t hsa_executable_get_symbol_by_name(hsa_executable_t executable,
                                               const char* symbol_name,
                                               const hsa_agent_t* agent,
                                               hsa_executable_symbol_t* symbol);
hsa_status_t hsa_executable_symbol_get_info(hsa_executable_symbol_t symbol, uint32_t attribute,
                                            void* value);
"""

#: Function names every HSA implementation must provide (resolved eagerly, as IREE does).
REQUIRED_FUNCTIONS: tuple[str, ...] = tuple(
    line.split("(")[0].split()[-1].lstrip("*")
    for line in CDEF.replace("\n    ", " ").splitlines()
    if line.startswith(("hsa_status_t hsa", "hsa_signal_value_t hsa", "void hsa",
                        "uint32_t hsa", "uint64_t hsa"))
)

ffi = cffi.FFI()
ffi.cdef(CDEF)


class HsaStatus(enum.IntEnum):
    SUCCESS = 0x0
    INFO_BREAK = 0x1
    ERROR = 0x1000
    ERROR_INVALID_ARGUMENT = 0x1001
    ERROR_INVALID_QUEUE_CREATION = 0x1002
    ERROR_INVALID_ALLOCATION = 0x1003
    ERROR_INVALID_AGENT = 0x1004
    ERROR_INVALID_REGION = 0x1005
    ERROR_INVALID_SIGNAL = 0x1006
    ERROR_INVALID_QUEUE = 0x1007
    ERROR_OUT_OF_RESOURCES = 0x1008
    ERROR_INVALID_PACKET_FORMAT = 0x1009
    ERROR_RESOURCE_FREE = 0x100A
    ERROR_NOT_INITIALIZED = 0x100B
    ERROR_REFCOUNT_OVERFLOW = 0x100C
    ERROR_INCOMPATIBLE_ARGUMENTS = 0x100D
    ERROR_INVALID_INDEX = 0x100E
    ERROR_INVALID_ISA = 0x100F
    ERROR_INVALID_CODE_OBJECT = 0x1010
    ERROR_INVALID_EXECUTABLE = 0x1011
    ERROR_FROZEN_EXECUTABLE = 0x1012
    ERROR_INVALID_SYMBOL_NAME = 0x1013
    ERROR_VARIABLE_ALREADY_DEFINED = 0x1014
    ERROR_VARIABLE_UNDEFINED = 0x1015
    ERROR_EXCEPTION = 0x1016
    ERROR_INVALID_CODE_SYMBOL = 0x1017
    ERROR_INVALID_EXECUTABLE_SYMBOL = 0x1018
    ERROR_INVALID_FILE = 0x1020
    ERROR_INVALID_CODE_OBJECT_READER = 0x1021
    ERROR_INVALID_CACHE = 0x1022
    ERROR_INVALID_WAVEFRONT = 0x1023
    ERROR_INVALID_SIGNAL_GROUP = 0x1024
    ERROR_INVALID_RUNTIME_STATE = 0x1025
    ERROR_FATAL = 0x1026
    # AMD extension statuses (hsa_ext_amd.h).
    AMD_ERROR_MEMORY_APERTURE_VIOLATION = 0x2001
    AMD_ERROR_ILLEGAL_INSTRUCTION = 0x2002
    AMD_ERROR_MEMORY_FAULT = 0x2003


_STATUS_CODES: dict[int, StatusCode] = {
    HsaStatus.INFO_BREAK: StatusCode.CANCELLED,
    HsaStatus.ERROR_INVALID_ARGUMENT: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_QUEUE_CREATION: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_ALLOCATION: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_AGENT: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_REGION: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_SIGNAL: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_QUEUE: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_OUT_OF_RESOURCES: StatusCode.RESOURCE_EXHAUSTED,
    HsaStatus.ERROR_INVALID_PACKET_FORMAT: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_RESOURCE_FREE: StatusCode.FAILED_PRECONDITION,
    HsaStatus.ERROR_NOT_INITIALIZED: StatusCode.FAILED_PRECONDITION,
    HsaStatus.ERROR_REFCOUNT_OVERFLOW: StatusCode.RESOURCE_EXHAUSTED,
    HsaStatus.ERROR_INCOMPATIBLE_ARGUMENTS: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_INDEX: StatusCode.OUT_OF_RANGE,
    HsaStatus.ERROR_INVALID_ISA: StatusCode.INCOMPATIBLE,
    HsaStatus.ERROR_INVALID_CODE_OBJECT: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_EXECUTABLE: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_FROZEN_EXECUTABLE: StatusCode.FAILED_PRECONDITION,
    HsaStatus.ERROR_INVALID_SYMBOL_NAME: StatusCode.NOT_FOUND,
    HsaStatus.ERROR_VARIABLE_ALREADY_DEFINED: StatusCode.ALREADY_EXISTS,
    HsaStatus.ERROR_VARIABLE_UNDEFINED: StatusCode.NOT_FOUND,
    HsaStatus.ERROR_EXCEPTION: StatusCode.DATA_LOSS,
    HsaStatus.ERROR_INVALID_CODE_SYMBOL: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_EXECUTABLE_SYMBOL: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_FILE: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_CODE_OBJECT_READER: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_CACHE: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_WAVEFRONT: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_SIGNAL_GROUP: StatusCode.INVALID_ARGUMENT,
    HsaStatus.ERROR_INVALID_RUNTIME_STATE: StatusCode.FAILED_PRECONDITION,
    HsaStatus.ERROR_FATAL: StatusCode.DATA_LOSS,
    HsaStatus.AMD_ERROR_MEMORY_APERTURE_VIOLATION: StatusCode.DATA_LOSS,
    HsaStatus.AMD_ERROR_ILLEGAL_INSTRUCTION: StatusCode.DATA_LOSS,
    HsaStatus.AMD_ERROR_MEMORY_FAULT: StatusCode.DATA_LOSS,
}


def status_to_code(status: int) -> StatusCode:
    """The HAL status code for an HSA status (unknown errors map to INTERNAL)."""
    if status == HsaStatus.SUCCESS:
        return StatusCode.OK
    return _STATUS_CODES.get(int(status), StatusCode.INTERNAL)


# --- attribute enums (values from hsa.h / hsa_ext_amd.h) --------------------------------


class SystemInfo(enum.IntEnum):
    VERSION_MAJOR = 0
    VERSION_MINOR = 1
    TIMESTAMP = 2
    TIMESTAMP_FREQUENCY = 3
    SIGNAL_MAX_WAIT = 4
    ENDIANNESS = 5
    MACHINE_MODEL = 6
    EXTENSIONS = 7
    AMD_SVM_SUPPORTED = 0x201
    AMD_SVM_ACCESSIBLE_BY_DEFAULT = 0x202
    AMD_DMABUF_SUPPORTED = 0x204
    AMD_VIRTUAL_MEM_API_SUPPORTED = 0x205
    AMD_XNACK_ENABLED = 0x206


class AgentInfo(enum.IntEnum):
    NAME = 0
    VENDOR_NAME = 1
    FEATURE = 2
    PROFILE = 4
    DEFAULT_FLOAT_ROUNDING_MODE = 5
    WAVEFRONT_SIZE = 6
    NODE = 16
    DEVICE = 17
    AMD_CHIP_ID = 0xA000
    AMD_COMPUTE_UNIT_COUNT = 0xA002
    AMD_BDFID = 0xA006
    AMD_PRODUCT_NAME = 0xA009
    AMD_NUM_SHADER_ENGINES = 0xA00C
    AMD_NUM_SHADER_ARRAYS_PER_SE = 0xA00D
    AMD_HDP_FLUSH = 0xA00E
    AMD_DOMAIN = 0xA00F
    AMD_UUID = 0xA011
    AMD_SVM_DIRECT_HOST_ACCESS = 0xA013
    AMD_NUM_XCC = 0xA111
    AMD_DRIVER_UID = 0xA112
    AMD_NEAREST_CPU = 0xA113


class DeviceType(enum.IntEnum):
    CPU = 0
    GPU = 1
    DSP = 2


class IsaInfo(enum.IntEnum):
    NAME_LENGTH = 0
    NAME = 1
    WORKGROUP_MAX_DIM = 12
    WORKGROUP_MAX_SIZE = 13


class PoolInfo(enum.IntEnum):
    SEGMENT = 0
    GLOBAL_FLAGS = 1
    SIZE = 2
    RUNTIME_ALLOC_ALLOWED = 5
    RUNTIME_ALLOC_GRANULE = 6
    RUNTIME_ALLOC_ALIGNMENT = 7
    ACCESSIBLE_BY_ALL = 15
    ALLOC_MAX_SIZE = 16
    RUNTIME_ALLOC_REC_GRANULE = 18


class PoolSegment(enum.IntEnum):
    GLOBAL = 0
    READONLY = 1
    PRIVATE = 2
    GROUP = 3


class PoolGlobalFlag(enum.IntFlag):
    KERNARG_INIT = 1
    FINE_GRAINED = 2
    COARSE_GRAINED = 4
    EXTENDED_SCOPE_FINE_GRAINED = 8


class AgentPoolInfo(enum.IntEnum):
    ACCESS = 0
    NUM_LINK_HOPS = 1
    LINK_INFO = 2


class PoolAccess(enum.IntEnum):
    NEVER_ALLOWED = 0
    ALLOWED_BY_DEFAULT = 1
    DISALLOWED_BY_DEFAULT = 2


class LinkType(enum.IntEnum):
    HYPERTRANSPORT = 0
    QPI = 1
    PCIE = 2
    INFINBAND = 3
    XGMI = 4


class RegionInfo(enum.IntEnum):
    SEGMENT = 0
    GLOBAL_FLAGS = 1
    SIZE = 2
    RUNTIME_ALLOC_ALLOWED = 5


class SignalCondition(enum.IntEnum):
    EQ = 0
    NE = 1
    LT = 2
    GTE = 3


class WaitState(enum.IntEnum):
    BLOCKED = 0
    ACTIVE = 1


class QueueType(enum.IntEnum):
    MULTI = 0
    SINGLE = 1


class SymbolInfo(enum.IntEnum):
    TYPE = 0
    NAME_LENGTH = 1
    NAME = 2
    VARIABLE_SIZE = 9
    KERNEL_KERNARG_SEGMENT_SIZE = 11
    KERNEL_KERNARG_SEGMENT_ALIGNMENT = 12
    KERNEL_GROUP_SEGMENT_SIZE = 13
    KERNEL_PRIVATE_SEGMENT_SIZE = 14
    VARIABLE_ADDRESS = 21
    KERNEL_OBJECT = 22


class SymbolKind(enum.IntEnum):
    VARIABLE = 0
    KERNEL = 1
    INDIRECT_FUNCTION = 2


class Profile(enum.IntEnum):
    BASE = 0
    FULL = 1


class LoadedCodeObjectInfo(enum.IntEnum):
    AGENT = 3
    LOAD_DELTA = 8
    LOAD_BASE = 9
    LOAD_SIZE = 10


HSA_EXTENSION_AMD_LOADER = 0x201
HSA_AMD_MEMORY_POOL_STANDARD_FLAG = 0
HSA_AMD_MEMORY_POOL_EXECUTABLE_FLAG = 1 << 2
UINT32_MAX = 0xFFFFFFFF
UINT64_MAX = 0xFFFFFFFFFFFFFFFF


def _looks_like_library(path: str) -> bool:
    base = os.path.basename(path)
    return ".so" in base or base.endswith((".dll", ".dylib"))


def candidate_paths(search_paths: Sequence[str] = ()) -> list[str]:
    """The dlopen candidates in the order they are tried (see the module docstring)."""
    out: list[str] = []

    def add(entry: str) -> None:
        if not entry:
            return
        if _looks_like_library(entry) and not os.path.isdir(entry):
            out.append(entry)
        else:
            out.extend(os.path.join(entry, name) for name in LIBHSA_NAMES)

    for entry in search_paths:
        add(os.fspath(entry))
    env = os.environ.get(LIBHSA_ENV, "")
    for entry in env.split(os.pathsep) if env else ():
        add(entry)
    out.extend(LIBHSA_NAMES)
    return out


def load_libhsa(search_paths: Sequence[str] = ()) -> tuple[Any, str]:
    """``(lib, path)`` for the first candidate that opens and has every required symbol.
    UNAVAILABLE listing each path tried and why it failed."""
    failures: list[str] = []
    for path in candidate_paths(search_paths):
        try:
            lib = ffi.dlopen(path)
        except OSError as exc:
            failures.append(f"{path}: {exc}")
            continue
        missing = [name for name in REQUIRED_FUNCTIONS if not _has_symbol(lib, name)]
        if missing:
            failures.append(f"{path}: missing symbols {', '.join(missing[:8])}")
            continue
        return lib, _resolved_path(path)
    raise UnavailableError(
        "the HSA runtime library (libhsa-runtime64) could not be loaded; tried: "
        + "; ".join(failures)
        + f". Install ROCr (Debian/Ubuntu: apt-get install libhsa-runtime64-1) or point "
        f"{LIBHSA_ENV} at the library file or its directory"
    )


def _has_symbol(lib: Any, name: str) -> bool:
    try:
        getattr(lib, name)
    except AttributeError:
        return False
    return True


def _resolved_path(path: str) -> str:
    """The file the dynamic loader actually mapped for ``path`` (from /proc/self/maps)."""
    if os.path.isabs(path):
        return os.path.realpath(path)
    base = path
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                parts = line.split()
                if parts and "libhsa-runtime64" in parts[-1]:
                    return f"{parts[-1]} (as {base})"
    except OSError:
        pass  # no /proc (not Linux): the name as given is the best we can report
    return path


class HsaLibrary:
    """An opened HSA implementation: ``lib`` (functions), ``ffi`` (types), ``path`` (what
    was loaded, for messages), ``implementation`` (``"rocr"`` or ``"soft"``).

    ``check(status, what)`` is the single place HSA statuses become ``HalError``s; the
    message carries HSA's own status text. Thread-safe.
    """

    __slots__ = ("lib", "ffi", "path", "implementation", "_initialized", "_lock")

    def __init__(self, lib: Any, path: str, implementation: str) -> None:
        self.lib = lib
        self.ffi = ffi
        self.path = path
        self.implementation = implementation
        self._initialized = 0
        self._lock = threading.Lock()

    @classmethod
    def open_rocr(cls, search_paths: Sequence[str] = ()) -> "HsaLibrary":
        lib, path = load_libhsa(search_paths)
        return cls(lib, path, "rocr")

    def status_text(self, status: int) -> str:
        out = ffi.new("const char**")
        try:
            rc = self.lib.hsa_status_string(status, out)
        except Exception:  # the status table itself failed: fall back to our names
            rc = 1
        if rc == 0 and out[0] != ffi.NULL:
            return ffi.string(out[0]).decode("utf-8", "replace")
        try:
            return f"HSA_STATUS_{HsaStatus(status).name}"
        except ValueError:
            return f"HSA status {status:#x}"

    def error(self, status: int, what: str) -> HalError:
        code = status_to_code(status)
        if code == StatusCode.OK:
            code = StatusCode.INTERNAL
        return error_for(code, f"{what} failed with {self.status_text(status)} "
                               f"[{self.implementation}: {self.path}]")

    def check(self, status: int, what: str) -> None:
        """Raise the HalError for a non-success ``status``; ``what`` names the call."""
        if status != 0:
            raise self.error(status, what)

    # -- runtime lifetime (hsa_init is refcounted by HSA itself) --------------------------

    def init(self) -> None:
        """``hsa_init``; on failure UNAVAILABLE naming the library, the HSA status text and
        the likely fix."""
        status = self.lib.hsa_init()
        if status != 0:
            raise UnavailableError(
                f"hsa_init failed with {self.status_text(status)} (library: {self.path}). "
                + _init_hint()
            )
        with self._lock:
            self._initialized += 1

    def shut_down(self) -> None:
        """Balance one successful ``init`` (idempotent once all are balanced)."""
        with self._lock:
            if self._initialized == 0:
                return
            self._initialized -= 1
        self.check(self.lib.hsa_shut_down(), "hsa_shut_down")

    # -- typed info getters ---------------------------------------------------------------

    def agent_info(self, agent: Any, attribute: int, ctype: str) -> Any:
        out = ffi.new(ctype + "*")
        self.check(self.lib.hsa_agent_get_info(agent, attribute, out),
                   f"hsa_agent_get_info({_attr_name(AgentInfo, attribute)})")
        return out[0]

    def agent_info_optional(self, agent: Any, attribute: int, ctype: str) -> Any:
        """None when the runtime does not know ``attribute`` (older ROCr)."""
        out = ffi.new(ctype + "*")
        if self.lib.hsa_agent_get_info(agent, attribute, out) != 0:
            return None
        return out[0]

    def agent_info_string(self, agent: Any, attribute: int, length: int = 64) -> str:
        buf = ffi.new(f"char[{length}]")
        self.check(self.lib.hsa_agent_get_info(agent, attribute, buf),
                   f"hsa_agent_get_info({_attr_name(AgentInfo, attribute)})")
        return ffi.string(buf).decode("utf-8", "replace").strip()

    def pool_info(self, pool: Any, attribute: int, ctype: str) -> Any:
        out = ffi.new(ctype + "*")
        self.check(self.lib.hsa_amd_memory_pool_get_info(pool, attribute, out),
                   f"hsa_amd_memory_pool_get_info({_attr_name(PoolInfo, attribute)})")
        return out[0]

    def agent_pool_info(self, agent: Any, pool: Any, attribute: int, ctype: str) -> Any:
        out = ffi.new(ctype + "*")
        self.check(self.lib.hsa_amd_agent_memory_pool_get_info(agent, pool, attribute, out),
                   f"hsa_amd_agent_memory_pool_get_info({_attr_name(AgentPoolInfo, attribute)})")
        return out[0]

    def symbol_info(self, symbol: Any, attribute: int, ctype: str) -> Any:
        out = ffi.new(ctype + "*")
        self.check(self.lib.hsa_executable_symbol_get_info(symbol, attribute, out),
                   f"hsa_executable_symbol_get_info({_attr_name(SymbolInfo, attribute)})")
        return out[0]

    def iterate(self, fn_name: str, handle_type: str, *leading: Any) -> list[Any]:
        """Collect the handles an ``hsa_*_iterate_*`` function reports, in order."""
        found: list[Any] = []

        @ffi.callback(f"hsa_status_t({handle_type}, void*)")
        def _collect(handle: Any, _data: Any) -> int:
            found.append(ffi.new(handle_type + "*", [handle.handle])[0])
            return 0

        self.check(getattr(self.lib, fn_name)(*leading, _collect, ffi.NULL), fn_name)
        return found


def _attr_name(enum_type: type[enum.IntEnum], value: int) -> str:
    try:
        return enum_type(value).name
    except ValueError:
        return hex(value)


def _init_hint() -> str:
    if not os.path.exists("/dev/kfd"):
        return (
            "There is no /dev/kfd: the amdgpu kernel driver is not loaded or no AMD GPU is "
            "present (load it with 'modprobe amdgpu', or pass /dev/kfd and /dev/dri into the "
            "container). To run without hardware, select the software HSA agent with the URI "
            "parameter hsa=soft (amdgpu://?hsa=soft) or HAL_AMDGPU_HSA=soft."
        )
    if not os.access("/dev/kfd", os.R_OK | os.W_OK):
        return (
            "/dev/kfd exists but is not readable and writable by this user: add the user to "
            "the 'render' and 'video' groups."
        )
    return ("Check that ROCR_VISIBLE_DEVICES does not hide every GPU and that dmesg shows no "
            "amdgpu errors.")
