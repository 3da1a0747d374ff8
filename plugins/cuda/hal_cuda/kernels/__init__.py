"""The PTX kernels shipped with hal-cuda (built by ``tools/build_kernels.sh``).

Each ``src/<name>.cu`` compiles to the committed ``<name>.ptx`` (``nvcc -ptx
-arch=compute_80``; the CUDA driver JIT-compiles PTX for the GPU it loads on, so one file
serves Ampere and newer). ``cts_kernels`` is the CTS dispatch library (the same exports,
bindings, constants and results as hal-local-cpu's and hal-amdgpu's); the others are the
driver's own test kernels, twins of hal-amdgpu's ``.cl`` files of the same names.

Every kernel follows the HAL kernel ABI: parameters are the bindings as 64-bit device
pointers, in order, then the 32-bit constants, in order, nothing else; a fixed workgroup
size is a PTX ``.reqntid`` (``ptx_reflection.reflect_ptx`` reads all of it).
"""

from __future__ import annotations

from pathlib import Path

from hal_core import NotFoundError

from .ptx_reflection import PtxEntry, PtxModule, reflect_ptx

__all__ = [
    "KERNEL_DIR",
    "CTS_LIBRARY",
    "NAMES",
    "PtxEntry",
    "PtxModule",
    "load_ptx",
    "ptx_path",
    "reflect_ptx",
]

KERNEL_DIR = Path(__file__).resolve().parent
#: The library the CTS dispatch suites load (``hal_core.cts.dispatch_support.KERNELS``).
CTS_LIBRARY = "cts_kernels"
#: Every shipped PTX module, by source name.
NAMES = ("cts_kernels", "scale_and_offset", "multi_entry", "workgroup_ids", "indirect")


def ptx_path(name: str) -> Path:
    """The path of the shipped PTX module ``name``; NOT_FOUND for any other name."""
    if name not in NAMES:
        raise NotFoundError(f"no PTX module named {name!r} ships with hal-cuda (have {NAMES})")
    return KERNEL_DIR / f"{name}.ptx"


def load_ptx(name: str) -> bytes:
    """The PTX text of the shipped module ``name`` (NUL-terminated, as
    ``cuModuleLoadData`` takes PTX); NOT_FOUND for any other name."""
    return ptx_path(name).read_bytes() + b"\x00"
