"""Host twins: Python functions standing in for device kernels on the software agent.

A twin is registered per kernel name (the ``.name`` of the code-object metadata, i.e. the
``.kd`` symbol without its suffix) and receives a ``HostTwinContext``: the decoded kernargs
by argument name (pointers and integers exactly as the driver wrote them), the dispatch
geometry from the AQL packet, and ``array()`` to get numpy views of memory the dispatching
agent may access. Twins compute the whole grid at once (vectorised), so one call is one
dispatch. ``BUILTIN_TWINS`` covers every kernel shipped in ``hal_amdgpu/kernels``.

Twins of other kernels (a compiler's output, e.g. IREE's) come from the caller:
``SoftHsaRuntime.register_host_twin``, or ``HAL_AMDGPU_SOFT_TWINS`` naming modules (a
dotted name or a ``.py`` path, ``os.pathsep``-separated) whose ``HOST_TWINS`` dicts every
new soft runtime starts with, so a separate process (``hal replay run``) has them too.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hal_core import InvalidArgumentError

from ..code_object import KernelInfo
from .memory import SoftMemory

__all__ = [
    "HostTwinContext",
    "HostTwin",
    "KernelTrap",
    "BUILTIN_TWINS",
    "TWINS_ENV",
    "HostTwinTable",
    "initial_host_twins",
]

TWINS_ENV = "HAL_AMDGPU_SOFT_TWINS"


class HostTwinContext:
    """What a twin sees of one dispatch. ``args`` maps argument names to ints (hidden
    arguments without a name by their value kind); ``by_offset`` maps the kernarg offset
    of every argument, named or not, to its value: the only way to reach arguments a
    compiler left nameless (IREE's bindings and constants). ``grid_size`` /
    ``workgroup_size`` are the packet's, in work-items."""

    __slots__ = (
        "kernel",
        "args",
        "by_offset",
        "grid_size",
        "workgroup_size",
        "agent",
        "_memory",
        "kernarg_address",
    )

    def __init__(
        self,
        kernel: KernelInfo,
        args: dict[str, Any],
        grid_size: tuple[int, ...],
        workgroup_size: tuple[int, ...],
        agent: int,
        memory: SoftMemory,
        kernarg_address: int,
        by_offset: dict[int, Any] | None = None,
    ) -> None:
        self.kernel = kernel
        self.args = args
        self.by_offset = by_offset if by_offset is not None else {}
        self.grid_size = grid_size
        self.workgroup_size = workgroup_size
        self.agent = agent
        self._memory = memory
        self.kernarg_address = kernarg_address

    def explicit_args(self) -> list[Any]:
        """The explicit (non-hidden) argument values in kernarg order: for HAL-ABI
        kernels, the binding pointers then the 32-bit constants."""
        return [self.by_offset[a.offset] for a in self.kernel.args if not a.hidden]

    @property
    def workgroup_count(self) -> tuple[int, ...]:
        return tuple(-(-g // w) for g, w in zip(self.grid_size, self.workgroup_size))

    def array(self, address: int, count: int, dtype: Any) -> np.ndarray:
        """A numpy view of ``count`` elements at ``address``; raises SoftMemoryFault when
        the memory is not an allocation this agent may access."""
        dt = np.dtype(dtype)
        return self._memory.view(int(address), int(count) * dt.itemsize, self.agent).view(dt)


HostTwin = Callable[[HostTwinContext], None]


class KernelTrap(Exception):
    """Raised by a twin where its kernel executes ``s_trap``: the packet processor reports
    it through the queue error callback as ``HSA_STATUS_ERROR_EXCEPTION``, as hardware
    reports a trap."""


def _f32(bits: int) -> np.float32:
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


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


# -- the CTS kernels (kernels/src/cts_kernels.cl) -----------------------------------------------
# Element kernels: 64-element tiles per workgroup, bounded by the explicit ``count`` constant
# (the AMDGPU kernarg ABI carries no binding lengths).


def _cts_elementwise(fn: Callable[[np.ndarray, HostTwinContext], np.ndarray]) -> HostTwin:
    def twin(ctx: HostTwinContext) -> None:
        a = ctx.args
        n = min(int(a["count"]), ctx.grid_size[0])
        if n <= 0:
            return
        ctx.array(a["out"], n, np.float32)[:] = fn(ctx.array(a["in"], n, np.float32), ctx)

    return twin


def _cts_group_total(ctx: HostTwinContext) -> int:
    cx, cy, cz = (ctx.workgroup_count + (1, 1, 1))[:3]
    return cx * cy * cz


def _cts_write_workgroup_ids(ctx: HostTwinContext) -> None:
    total = _cts_group_total(ctx)
    if total:
        ctx.array(ctx.args["out"], total, np.uint32)[:] = np.arange(total, dtype=np.uint32)


def _cts_write_workgroup_count(ctx: HostTwinContext) -> None:
    a = ctx.args
    if _cts_group_total(ctx):
        ctx.array(a["out"], 3, np.uint32)[:] = (a["x"], a["y"], a["z"])


def _cts_noop(ctx: HostTwinContext) -> None:
    return None


def _cts_fail_status(ctx: HostTwinContext) -> None:
    at = int(ctx.args["at"])
    if at < _cts_group_total(ctx):
        raise KernelTrap(f"fail_status trapped at workgroup {at}")


CTS_TWINS: dict[str, HostTwin] = {
    "scale_and_offset": _cts_elementwise(
        lambda x, ctx: x * _f32(ctx.args["scale"]) + _f32(ctx.args["offset"])
    ),
    "negate": _cts_elementwise(lambda x, ctx: -x),
    "double": _cts_elementwise(lambda x, ctx: x * np.float32(2)),
    "write_workgroup_ids": _cts_write_workgroup_ids,
    "write_workgroup_count": _cts_write_workgroup_count,
    "noop": _cts_noop,
    "fail_status": _cts_fail_status,
}


BUILTIN_TWINS: dict[str, HostTwin] = {
    **CTS_TWINS,
    # multi_entry.cl's second entry point (the driver's own test kernels share the CTS
    # kernels' signatures, so the twins above serve both code objects).
    "double_values": CTS_TWINS["double"],
    "indirect_iota": _indirect_iota,
    "hal_amdgpu_buffer_fill_x1": _fill(np.uint8),
    "hal_amdgpu_buffer_fill_x2": _fill(np.uint16),
    "hal_amdgpu_buffer_fill_x4": _fill(np.uint32),
    "hal_amdgpu_buffer_fill_x8": _fill(np.uint64),
    "hal_amdgpu_buffer_copy_x1": _copy(np.uint8),
    "hal_amdgpu_buffer_copy_x4": _copy(np.uint32),
    "hal_amdgpu_buffer_copy_x16": _copy(np.uint32, 4),
}


def _twin_module(spec: str) -> Any:
    """Import ``spec``: a ``.py`` path (loaded once per process) or a dotted module name."""
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec).resolve()
        name = f"_hal_amdgpu_soft_twins_{abs(hash(str(path))):x}"
        module = sys.modules.get(name)
        if module is not None:
            return module
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None or not path.is_file():
            raise ImportError(f"no Python file at {str(path)!r}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    return importlib.import_module(spec)


class HostTwinTable(dict):
    """Kernel name -> host twin. A lookup that finds none is remembered for the looking
    thread (a queue's packet processor, which then faults the queue and runs its error
    callback on that same thread), so the error can name the kernel (``take_missing``)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._missing = threading.local()

    def get(self, name: Any, default: Any = None) -> Any:
        twin = super().get(name, default)
        if twin is None:
            self._missing.name = name
        return twin

    def take_missing(self) -> str | None:
        """The kernel this thread last found without a twin, once (then None)."""
        missing = self._missing
        name = getattr(missing, "name", None)
        missing.name = None
        return name


def initial_host_twins() -> HostTwinTable:
    """The twins a new soft runtime starts with: ``BUILTIN_TWINS`` plus the ``HOST_TWINS``
    of every module ``HAL_AMDGPU_SOFT_TWINS`` names (later entries win). INVALID_ARGUMENT
    naming the variable when a module does not import or has no ``HOST_TWINS`` dict of
    callables."""
    twins = HostTwinTable(BUILTIN_TWINS)
    for spec in filter(None, os.environ.get(TWINS_ENV, "").split(os.pathsep)):
        try:
            module = _twin_module(spec)
        except Exception as exc:
            raise InvalidArgumentError(
                f"{TWINS_ENV}: cannot import host twins from {spec!r}: {exc}"
            ) from exc
        extra = getattr(module, "HOST_TWINS", None)
        if not isinstance(extra, dict) or not all(
            isinstance(k, str) and callable(v) for k, v in extra.items()
        ):
            raise InvalidArgumentError(
                f"{TWINS_ENV}: {spec!r} has no HOST_TWINS dict of kernel name -> twin"
            )
        twins.update(extra)
    return twins
