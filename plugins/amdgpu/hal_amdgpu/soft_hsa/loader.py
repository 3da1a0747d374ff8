"""Code objects and executables of the software agent over real HSACO files.

A code object reader holds the parsed HSACO (``hal_amdgpu.code_object``). Loading it for an
agent checks the agent's ISA (INVALID_ISA as ROCr would) and copies the ELF image into host
memory, so each kernel descriptor has a real address inside the loaded image: that address
is the ``KERNEL_OBJECT`` a dispatch packet carries, and the packet processor maps it back
to the kernel. Thread-safety: guarded by the runtime's lock.
"""

from __future__ import annotations

import attrs

from ..code_object import CodeObject, KernelInfo
from .memory import SoftAllocation

__all__ = ["SoftReader", "SoftLoadedCodeObject", "SoftExecutable", "SoftKernelObject"]


@attrs.define(eq=False)
class SoftReader:
    image: bytes
    code_object: CodeObject


@attrs.define(eq=False)
class SoftLoadedCodeObject:
    handle: int
    agent: int
    image: SoftAllocation
    code_object: CodeObject


@attrs.define(eq=False)
class SoftKernelObject:
    """What a ``KERNEL_OBJECT`` address resolves to."""

    kernel: KernelInfo
    agent: int
    executable: int


@attrs.define(eq=False)
class SoftExecutable:
    handle: int
    profile: int
    frozen: bool = False
    loaded: list[SoftLoadedCodeObject] = attrs.field(factory=list)
    # symbol handle -> (kernel, agent, kernel object address)
    symbols: dict[int, tuple[KernelInfo, int, int]] = attrs.field(factory=dict)
