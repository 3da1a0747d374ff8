"""Host twins: Python functions standing in for device kernels on the software agent.

A twin is registered per kernel name (the ``.name`` of the code-object metadata, i.e. the
``.kd`` symbol without its suffix) and receives a ``HostTwinContext``: the decoded kernargs
by argument name (pointers and integers exactly as the driver wrote them), the dispatch
geometry from the AQL packet, and ``array()`` to get numpy views of memory the dispatching
agent may access. Twins compute the whole grid at once (vectorised), so one call is one
dispatch. ``BUILTIN_TWINS`` covers every kernel shipped in ``hal_amdgpu/kernels``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..code_object import KernelInfo
from .memory import SoftMemory

__all__ = ["HostTwinContext", "HostTwin", "BUILTIN_TWINS"]


class HostTwinContext:
    """What a twin sees of one dispatch. ``args`` maps argument names (explicit and
    hidden) to ints; ``grid_size``/``workgroup_size`` are the packet's, in work-items."""

    __slots__ = ("kernel", "args", "grid_size", "workgroup_size", "agent", "_memory",
                 "kernarg_address")

    def __init__(self, kernel: KernelInfo, args: dict[str, Any], grid_size: tuple[int, ...],
                 workgroup_size: tuple[int, ...], agent: int, memory: SoftMemory,
                 kernarg_address: int) -> None:
        self.kernel = kernel
        self.args = args
        self.grid_size = grid_size
        self.workgroup_size = workgroup_size
        self.agent = agent
        self._memory = memory
        self.kernarg_address = kernarg_address

    @property
    def workgroup_count(self) -> tuple[int, ...]:
        return tuple(-(-g // w) for g, w in zip(self.grid_size, self.workgroup_size))

    def array(self, address: int, count: int, dtype: Any) -> np.ndarray:
        """A numpy view of ``count`` elements at ``address``; raises SoftMemoryFault when
        the memory is not an allocation this agent may access."""
        dt = np.dtype(dtype)
        return self._memory.view(int(address), int(count) * dt.itemsize, self.agent).view(dt)


HostTwin = Callable[[HostTwinContext], None]


def _f32(bits: int) -> np.float32:
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


def _scale_and_offset(ctx: HostTwinContext) -> None:
    a = ctx.args
    n = min(int(a["count"]), ctx.grid_size[0])
    src = ctx.array(a["in"], n, np.float32)
    ctx.array(a["out"], n, np.float32)[:] = src * _f32(a["scale"]) + _f32(a["offset"])


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> HostTwin:
    def twin(ctx: HostTwinContext) -> None:
        a = ctx.args
        n = min(int(a["count"]), ctx.grid_size[0])
        ctx.array(a["out"], n, np.float32)[:] = fn(ctx.array(a["in"], n, np.float32))

    return twin


def _write_workgroup_ids(ctx: HostTwinContext) -> None:
    groups = ctx.workgroup_count[0]
    ctx.array(ctx.args["out"], groups, np.uint32)[:] = np.arange(groups, dtype=np.uint32)


def _indirect_iota(ctx: HostTwinContext) -> None:
    a = ctx.args
    # The kernel sizes itself from the implicit arguments the driver filled in.
    total = int(a["hidden_block_count_x"]) * int(a["hidden_group_size_x"])
    ctx.array(a["out"], total, np.uint32)[:] = (
        np.arange(total, dtype=np.uint64) + int(a["base"])
    ).astype(np.uint32)


def _fill(dtype: Any) -> HostTwin:
    def twin(ctx: HostTwinContext) -> None:
        a = ctx.args
        n = int(a["element_length"])
        pattern = np.array(int(a["pattern"]), dtype=np.uint64).astype(dtype)
        ctx.array(a["target"], n, dtype)[:] = pattern

    return twin


def _copy(dtype: Any, width: int = 1) -> HostTwin:
    def twin(ctx: HostTwinContext) -> None:
        a = ctx.args
        n = int(a["element_length"]) * width
        ctx.array(a["target"], n, dtype)[:] = ctx.array(a["source"], n, dtype)

    return twin


BUILTIN_TWINS: dict[str, HostTwin] = {
    "scale_and_offset": _scale_and_offset,
    "negate": _unary(np.negative),
    "double_values": _unary(lambda x: x * np.float32(2)),
    "write_workgroup_ids": _write_workgroup_ids,
    "indirect_iota": _indirect_iota,
    "hal_amdgpu_buffer_fill_x1": _fill(np.uint8),
    "hal_amdgpu_buffer_fill_x2": _fill(np.uint16),
    "hal_amdgpu_buffer_fill_x4": _fill(np.uint32),
    "hal_amdgpu_buffer_fill_x8": _fill(np.uint64),
    "hal_amdgpu_buffer_copy_x1": _copy(np.uint8),
    "hal_amdgpu_buffer_copy_x4": _copy(np.uint32),
    "hal_amdgpu_buffer_copy_x16": _copy(np.uint32, 4),
}
