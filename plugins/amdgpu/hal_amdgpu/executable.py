"""Loading HSACO code objects onto the GPUs of a logical device.

``load_executable(hsa, gpus, data)`` follows the HSA sequence: target preflight against
every GPU (INCOMPATIBLE naming both targets), ``hsa_code_object_reader_create_from_memory``,
``hsa_executable_create_alt`` with the agents' profile and rounding mode,
``hsa_executable_load_agent_code_object`` per GPU, ``hsa_executable_freeze``, reader
destroy, then per kernel and GPU ``hsa_executable_get_symbol_by_name("<name>.kd")`` and its
``KERNEL_OBJECT`` and segment sizes. The result, ``AmdgpuExecutable``, is the backend object
``hal_core``'s ``Executable`` wraps (``functions`` is its reflection). ``close()`` is
idempotent and destroys the HSA executable; it is a context manager. Thread-safe after
loading.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Sequence

import attrs

from hal_core import (
    FunctionFlags,
    FunctionInfo,
    FunctionParameter,
    IncompatibleError,
    InvalidArgumentError,
    ParameterType,
    UnimplementedError,
)

from .agents import AgentDescription
from .code_object import CodeObject, HalKernelLayout, KernelInfo, parse_hsaco, reflect_hal_layout
from .hsa import HsaLibrary, SymbolInfo
from .target_id import check_compatible

__all__ = ["KernelDispatchInfo", "AmdgpuExecutable", "load_executable", "read_executable_data"]


@attrs.frozen
class KernelDispatchInfo:
    """Per-GPU facts a dispatch packet needs (host-resident, read on every dispatch)."""

    kernel_object: int
    kernarg_segment_size: int
    kernarg_segment_alignment: int
    group_segment_size: int
    private_segment_size: int


def read_executable_data(data: Any) -> bytes:
    """Bytes from bytes-like data or a filesystem path."""
    if isinstance(data, (str, os.PathLike)):
        try:
            with open(data, "rb") as f:
                return f.read()
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read code object {data!r}: {exc}") from None
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise InvalidArgumentError(
            f"executable data must be bytes-like or a path, got {type(data).__name__}"
        ) from None


def _function_info(kernel: KernelInfo, layout: HalKernelLayout) -> FunctionInfo:
    params: list[FunctionParameter] = []
    constant = 0
    for arg in kernel.args:
        if arg.hidden:
            continue
        if arg.value_kind == "global_buffer":
            params.append(FunctionParameter(ParameterType.BINDING, arg.name, 8, arg.offset // 8))
        else:
            params.append(FunctionParameter(ParameterType.CONSTANT, arg.name, arg.size,
                                            4 * constant))
            constant += arg.size // 4
    return FunctionInfo(
        name=kernel.name,
        binding_count=layout.binding_count,
        constant_count=layout.constant_count,
        workgroup_size=kernel.reqd_workgroup_size or (1, 1, 1),
        flags=FunctionFlags.NONE if kernel.reqd_workgroup_size
        else FunctionFlags.WORKGROUP_SIZE_DYNAMIC,
        parameters=tuple(params),
    )


def _destroy(hsa: HsaLibrary, handle: int) -> None:
    hsa.lib.hsa_executable_destroy(hsa.ffi.new("hsa_executable_t*", [handle])[0])


class AmdgpuExecutable:
    """A loaded executable: ``code_object``, ``functions`` (HAL reflection, in metadata
    order), ``layouts`` (HAL kernarg layout per function), ``dispatch_info[gpu][function]``.
    """

    def __init__(self, hsa: HsaLibrary, handle: int, code_object: CodeObject,
                 kernels: list[KernelInfo], dispatch_info: list[list[KernelDispatchInfo]],
                 layouts: list[HalKernelLayout]) -> None:
        self.hsa = hsa
        self.handle = handle
        self.code_object = code_object
        self.kernels = tuple(kernels)
        self.layouts = tuple(layouts)
        self.functions = tuple(_function_info(k, lay) for k, lay in zip(kernels, layouts))
        self.dispatch_info = tuple(tuple(row) for row in dispatch_info)
        self._finalizer = weakref.finalize(self, _destroy, hsa, handle)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "AmdgpuExecutable":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_executable(hsa: HsaLibrary, gpus: Sequence[AgentDescription], data: Any,
                    constants: Sequence[int] = ()) -> AmdgpuExecutable:
    if constants:
        raise UnimplementedError(
            "executable-level constants are not implemented by the amdgpu driver; pass "
            "values as dispatch constants instead"
        )
    blob = read_executable_data(data)
    code_object = parse_hsaco(blob)
    for gpu in gpus:
        check_compatible(code_object.target, gpu.target,
                         f"code object (GPU {gpu.name}, node {gpu.node})")
    profiles = {(g.profile, g.rounding_mode) for g in gpus}
    if len(profiles) != 1:
        raise IncompatibleError(
            f"the selected GPUs disagree on profile/rounding mode {sorted(profiles)}"
        )
    kernels = list(code_object.kernels.values())
    layouts = [reflect_hal_layout(k) for k in kernels]
    ffi = hsa.ffi
    lib = hsa.lib
    source = ffi.from_buffer(blob)
    reader = ffi.new("hsa_code_object_reader_t*")
    hsa.check(lib.hsa_code_object_reader_create_from_memory(source, len(blob), reader),
              "hsa_code_object_reader_create_from_memory")
    executable = ffi.new("hsa_executable_t*")
    try:
        profile, rounding = profiles.pop()
        hsa.check(lib.hsa_executable_create_alt(profile, 0, ffi.NULL, executable),
                  "hsa_executable_create_alt")
        try:
            for gpu in gpus:
                status = lib.hsa_executable_load_agent_code_object(
                    executable[0], gpu.hsa_handle(hsa), reader[0], ffi.NULL, ffi.NULL)
                hsa.check(status, f"hsa_executable_load_agent_code_object({gpu.name})")
            hsa.check(lib.hsa_executable_freeze(executable[0], ffi.NULL),
                      "hsa_executable_freeze")
            info = [[_dispatch_info(hsa, executable[0], gpu, k) for k in kernels] for gpu in gpus]
        except BaseException:
            lib.hsa_executable_destroy(executable[0])
            raise
    finally:
        lib.hsa_code_object_reader_destroy(reader[0])
    return AmdgpuExecutable(hsa, int(executable[0].handle), code_object, kernels, info, layouts)


def _dispatch_info(hsa: HsaLibrary, executable: Any, gpu: AgentDescription,
                   kernel: KernelInfo) -> KernelDispatchInfo:
    ffi = hsa.ffi
    symbol = ffi.new("hsa_executable_symbol_t*")
    agent = ffi.new("hsa_agent_t*", [gpu.handle])
    hsa.check(hsa.lib.hsa_executable_get_symbol_by_name(executable, kernel.symbol.encode(),
                                                        agent, symbol),
              f"hsa_executable_get_symbol_by_name({kernel.symbol!r})")
    s = symbol[0]
    return KernelDispatchInfo(
        kernel_object=int(hsa.symbol_info(s, SymbolInfo.KERNEL_OBJECT, "uint64_t")),
        kernarg_segment_size=int(hsa.symbol_info(s, SymbolInfo.KERNEL_KERNARG_SEGMENT_SIZE,
                                                 "uint32_t")),
        kernarg_segment_alignment=int(hsa.symbol_info(
            s, SymbolInfo.KERNEL_KERNARG_SEGMENT_ALIGNMENT, "uint32_t")),
        group_segment_size=int(hsa.symbol_info(s, SymbolInfo.KERNEL_GROUP_SEGMENT_SIZE,
                                               "uint32_t")),
        private_segment_size=int(hsa.symbol_info(s, SymbolInfo.KERNEL_PRIVATE_SEGMENT_SIZE,
                                                 "uint32_t")),
    )
