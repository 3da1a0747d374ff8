"""The code objects shipped with hal-amdgpu (built by ``tools/build_kernels.sh``).

Files are named ``<source>--amdgcn-amd-amdhsa--<target>.hsaco``, where the target is an
exact processor or an LLVM generic family. ``code_object_path`` finds the file for a
source and an agent ISA, trying the full target ID, the processor, then its generic
family (``target_id.library_candidates``), as IREE's device-library selection does.
"""

from __future__ import annotations

from pathlib import Path

from hal_core import IncompatibleError, NotFoundError

from ..target_id import HSA_ISA_PREFIX, TargetId, library_candidates

__all__ = ["KERNEL_DIR", "CTS_SOURCES", "BUILTIN_SOURCE", "available_targets", "code_object_path"]

KERNEL_DIR = Path(__file__).resolve().parent
CTS_SOURCES = ("cts_kernels", "scale_and_offset", "multi_entry", "workgroup_ids", "indirect")
BUILTIN_SOURCE = "blit"


def available_targets(source: str) -> list[str]:
    prefix = f"{source}--{HSA_ISA_PREFIX}"
    return sorted(p.name[len(prefix) : -len(".hsaco")] for p in KERNEL_DIR.glob(f"{prefix}*.hsaco"))


def code_object_path(source: str, isa: str) -> Path:
    targets = available_targets(source)
    if not targets:
        raise NotFoundError(f"no code objects named {source!r} ship with hal-amdgpu")
    target = TargetId.parse(isa)
    for candidate in library_candidates(target):
        if candidate in targets:
            return KERNEL_DIR / f"{source}--{HSA_ISA_PREFIX}{candidate}.hsaco"
    raise IncompatibleError(
        f"hal-amdgpu ships {source!r} for {targets}, none of which runs on {isa}; add the "
        "target to tools/build_kernels.sh and rebuild"
    )
