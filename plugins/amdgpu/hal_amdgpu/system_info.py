"""HSA system properties and the driver's requirements on them.

``query_system(hsa)`` reads the runtime version, timestamp frequency, endianness, machine
model, SVM/XNACK state and whether the AMD loader extension v1 is present, and raises
INCOMPATIBLE naming the unmet requirement (HSA 1.x, little endian, large machine model,
AMD loader extension). Blocking HSA queries; thread-safe.
"""

from __future__ import annotations

import attrs

from hal_core import IncompatibleError

from .hsa import HsaLibrary
from .hsa_enums import HSA_EXTENSION_AMD_LOADER, SystemInfo

__all__ = ["HsaSystemInfo", "query_system"]


@attrs.frozen
class HsaSystemInfo:
    version_major: int
    version_minor: int
    timestamp_frequency: int
    svm_supported: bool
    xnack_enabled: bool
    loader_minor_version: int


def _get(hsa: HsaLibrary, attribute: SystemInfo, ctype: str, default: int | None = None) -> int:
    out = hsa.ffi.new(ctype + "*")
    status = hsa.lib.hsa_system_get_info(attribute, out)
    if status != 0:
        if default is not None:
            return default  # an AMD key older ROCr does not know
        hsa.check(status, f"hsa_system_get_info({attribute.name})")
    return out[0]


def query_system(hsa: HsaLibrary) -> HsaSystemInfo:
    major = int(_get(hsa, SystemInfo.VERSION_MAJOR, "uint16_t"))
    if major != 1:
        raise IncompatibleError(f"HSA runtime {hsa.path} reports HSA {major}.x; 1.x is required")
    if int(_get(hsa, SystemInfo.ENDIANNESS, "uint32_t")) != 0:
        raise IncompatibleError(f"HSA runtime {hsa.path} is not little endian")
    if int(_get(hsa, SystemInfo.MACHINE_MODEL, "uint32_t")) != 1:
        raise IncompatibleError(f"HSA runtime {hsa.path} does not use the large machine model")
    minor = hsa.ffi.new("uint16_t*")
    supported = hsa.ffi.new("bool*")
    hsa.check(
        hsa.lib.hsa_system_major_extension_supported(HSA_EXTENSION_AMD_LOADER, 1, minor, supported),
        "hsa_system_major_extension_supported(AMD_LOADER)",
    )
    if not supported[0]:
        raise IncompatibleError(
            f"HSA runtime {hsa.path} lacks the AMD loader extension v1 the driver needs; "
            "install a ROCr build with hsa_ven_amd_loader"
        )
    return HsaSystemInfo(
        version_major=major,
        version_minor=int(_get(hsa, SystemInfo.VERSION_MINOR, "uint16_t")),
        timestamp_frequency=int(_get(hsa, SystemInfo.TIMESTAMP_FREQUENCY, "uint64_t")),
        svm_supported=bool(_get(hsa, SystemInfo.AMD_SVM_SUPPORTED, "bool", False)),
        xnack_enabled=bool(_get(hsa, SystemInfo.AMD_XNACK_ENABLED, "bool", False)),
        loader_minor_version=int(minor[0]),
    )
