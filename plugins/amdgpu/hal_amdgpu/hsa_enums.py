"""HSA's status codes and attribute enums (values from hsa.h / hsa_ext_amd.h), and how a
status becomes a HAL ``StatusCode``.

The names are HSA's own (``PoolInfo`` is ``hsa_amd_memory_pool_info_t``, and so on): code
reading them side by side with the HSA headers finds each value under its header name.
"""

from __future__ import annotations

import enum

from hal_core import StatusCode

__all__ = [
    "HSA_AMD_MEMORY_POOL_EXECUTABLE_FLAG",
    "HSA_AMD_MEMORY_POOL_STANDARD_FLAG",
    "HSA_EXTENSION_AMD_LOADER",
    "UINT32_MAX",
    "UINT64_MAX",
    "AgentInfo",
    "AgentPoolInfo",
    "DeviceType",
    "HsaStatus",
    "IsaInfo",
    "LinkType",
    "LoadedCodeObjectInfo",
    "PoolAccess",
    "PoolGlobalFlag",
    "PoolInfo",
    "PoolSegment",
    "Profile",
    "QueueType",
    "RegionInfo",
    "SignalCondition",
    "SymbolInfo",
    "SymbolKind",
    "SystemInfo",
    "WaitState",
    "status_to_code",
]


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
