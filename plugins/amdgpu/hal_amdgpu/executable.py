"""Loading HSACO code objects onto the GPUs of a logical device.

``load_executable(hsa, gpus, data)`` takes a raw HSACO (ELF) or one of IREE's
``rocm-hsaco-fb`` containers (``iree_container``: ``HIP1`` / ``AMD1`` FlatBuffers holding
one or more HSACO modules and the exports' symbols, workgroup sizes, constant counts and
binding flags), and follows the HSA sequence: target preflight of every module against
every GPU (INCOMPATIBLE naming both targets), ``hsa_executable_create_alt`` with the
agents' profile and rounding mode, per module a code object reader and
``hsa_executable_load_agent_code_object`` per GPU, ``hsa_executable_freeze``, readers
destroyed, then per function and GPU ``hsa_executable_get_symbol_by_name("<name>.kd")``
and its ``KERNEL_OBJECT`` and segment sizes.

Functions are the metadata's kernels in order for a raw HSACO, and the container's exports
in order (IREE's entry-point ordinals) for a container, whose counts must agree with each
kernel's kernarg layout (INVALID_ARGUMENT otherwise: the HAL kernarg ABI would not
match). Arguments without names (IREE emits none) reflect as ``b<ordinal>`` /
``c<index>``. The result, ``AmdgpuExecutable``, is the backend object ``hal_core``'s
``Executable`` wraps (``functions`` is its reflection). ``close()`` is idempotent and
destroys the HSA executable; it is a context manager. Thread-safe after loading.
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
from .code_object import (
    CodeObject,
    HalKernelLayout,
    KernelInfo,
    metadata_processor,
    parse_hsaco,
    reflect_hal_layout,
)
from .hsa import HsaLibrary
from .hsa_enums import SymbolInfo
from .iree_container import IreeExecutableDef, is_container, parse_container
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


def _function_info(
    kernel: KernelInfo, layout: HalKernelLayout, binding_flags: Sequence[int] = ()
) -> FunctionInfo:
    params: list[FunctionParameter] = []
    constant = 0
    for arg in kernel.args:
        if arg.hidden:
            continue
        if arg.value_kind == "global_buffer":
            ordinal = arg.offset // 8
            flags = binding_flags[ordinal] if ordinal < len(binding_flags) else 0
            params.append(
                FunctionParameter(
                    ParameterType.BINDING, arg.name or f"b{ordinal}", 8, ordinal, int(flags)
                )
            )
        else:
            params.append(
                FunctionParameter(
                    ParameterType.CONSTANT, arg.name or f"c{constant}", arg.size, 4 * constant
                )
            )
            constant += arg.size // 4
    return FunctionInfo(
        name=kernel.name,
        binding_count=layout.binding_count,
        constant_count=layout.constant_count,
        workgroup_size=kernel.reqd_workgroup_size or (1, 1, 1),
        flags=FunctionFlags.NONE
        if kernel.reqd_workgroup_size
        else FunctionFlags.WORKGROUP_SIZE_DYNAMIC,
        parameters=tuple(params),
    )


def _destroy(hsa: HsaLibrary, handle: int) -> None:
    hsa.lib.hsa_executable_destroy(hsa.ffi.new("hsa_executable_t*", [handle])[0])


class AmdgpuExecutable:
    """A loaded executable: ``code_object``, ``functions`` (HAL reflection, in metadata
    order), ``layouts`` (HAL kernarg layout per function), ``dispatch_info[gpu][function]``.
    """

    def __init__(
        self,
        hsa: HsaLibrary,
        handle: int,
        code_object: CodeObject,
        kernels: list[KernelInfo],
        dispatch_info: list[list[KernelDispatchInfo]],
        layouts: list[HalKernelLayout],
        binding_flags: Sequence[Sequence[int]] = (),
        code_objects: Sequence[CodeObject] = (),
    ) -> None:
        self.hsa = hsa
        self.handle = handle
        self.code_object = code_object
        #: Every module's code object (one for a raw HSACO).
        self.code_objects = tuple(code_objects) or (code_object,)
        self.kernels = tuple(kernels)
        self.layouts = tuple(layouts)
        flags = list(binding_flags) or [()] * len(kernels)
        self.functions = tuple(
            _function_info(k, lay, f) for k, lay, f in zip(kernels, layouts, flags)
        )
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


def load_executable(
    hsa: HsaLibrary, gpus: Sequence[AgentDescription], data: Any, constants: Sequence[int] = ()
) -> AmdgpuExecutable:
    if constants:
        raise UnimplementedError(
            "executable-level constants are not implemented by the amdgpu driver; pass "
            "values as dispatch constants instead"
        )
    blob = read_executable_data(data)
    container = parse_container(blob) if is_container(blob) else None
    images = list(container.modules) if container is not None else [blob]
    code_objects = [parse_hsaco(image) for image in images]
    for i, code_object in enumerate(code_objects):
        what = "code object" if container is None else f"module {i} of the executable"
        for gpu in gpus:
            check_compatible(
                code_object.target, gpu.target, f"{what} (GPU {gpu.name}, node {gpu.node})"
            )
    profiles = {(g.profile, g.rounding_mode) for g in gpus}
    if len(profiles) != 1:
        raise IncompatibleError(
            f"the selected GPUs disagree on profile/rounding mode {sorted(profiles)}"
        )
    if container is None:
        kernels = list(code_objects[0].kernels.values())
        layouts = [reflect_hal_layout(k) for k in kernels]
        binding_flags: list[tuple[int, ...]] = []
    else:
        kernels, layouts, binding_flags = _exports(container, code_objects)
    ffi = hsa.ffi
    lib = hsa.lib
    executable = ffi.new("hsa_executable_t*")
    profile, _rounding = profiles.pop()
    hsa.check(
        lib.hsa_executable_create_alt(profile, 0, ffi.NULL, executable), "hsa_executable_create_alt"
    )
    try:
        for image in images:
            _load_module(hsa, executable[0], gpus, image)
        hsa.check(lib.hsa_executable_freeze(executable[0], ffi.NULL), "hsa_executable_freeze")
        info = [[_dispatch_info(hsa, executable[0], gpu, k) for k in kernels] for gpu in gpus]
    except BaseException:
        lib.hsa_executable_destroy(executable[0])
        raise
    return AmdgpuExecutable(
        hsa,
        int(executable[0].handle),
        code_objects[0],
        kernels,
        info,
        layouts,
        binding_flags,
        code_objects,
    )


def _load_module(
    hsa: HsaLibrary, executable: Any, gpus: Sequence[AgentDescription], image: bytes
) -> None:
    """Load one code object image into ``executable`` on every GPU."""
    ffi = hsa.ffi
    lib = hsa.lib
    source = ffi.from_buffer(image)
    reader = ffi.new("hsa_code_object_reader_t*")
    hsa.check(
        lib.hsa_code_object_reader_create_from_memory(source, len(image), reader),
        "hsa_code_object_reader_create_from_memory",
    )
    try:
        for gpu in gpus:
            status = lib.hsa_executable_load_agent_code_object(
                executable, gpu.hsa_handle(hsa), reader[0], ffi.NULL, ffi.NULL
            )
            hsa.check(status, f"hsa_executable_load_agent_code_object({gpu.name})")
    finally:
        lib.hsa_code_object_reader_destroy(reader[0])


def _exports(
    container: IreeExecutableDef, code_objects: list[CodeObject]
) -> tuple[list[KernelInfo], list[HalKernelLayout], list[tuple[int, ...]]]:
    """The container's exports as kernels (in entry-point order), checked against the
    metadata of the module holding each symbol. INVALID_ARGUMENT on any disagreement."""
    if container.isa:
        named = metadata_processor(container.isa) if "-" in container.isa else container.isa
        for i, co in enumerate(code_objects):
            if named.lower() != co.target.processor:
                raise InvalidArgumentError(
                    f"the executable says it is for {container.isa!r} but module {i} is "
                    f"a {co.target.processor} code object"
                )
    kernels: list[KernelInfo] = []
    layouts: list[HalKernelLayout] = []
    flags: list[tuple[int, ...]] = []
    for i, export in enumerate(container.exports):
        candidates = (
            code_objects if export.module_ordinal < 0 else [code_objects[export.module_ordinal]]
        )
        found = [k for co in candidates for k in co.kernels.values() if k.symbol == export.symbol]
        if not found:
            raise InvalidArgumentError(
                f"export {i} ({export.name}) names kernel symbol {export.symbol!r}, which no "
                "module of the executable defines"
            )
        kernel = attrs.evolve(found[0], name=export.name, reqd_workgroup_size=export.workgroup_size)
        layout = reflect_hal_layout(kernel)
        if (layout.binding_count, layout.constant_count) != (
            export.binding_count,
            export.constant_count,
        ):
            raise InvalidArgumentError(
                f"export {i} ({export.name}) declares {export.binding_count} bindings and "
                f"{export.constant_count} constants but its kernel takes "
                f"{layout.binding_count} and {layout.constant_count}"
            )
        kernels.append(kernel)
        layouts.append(layout)
        flags.append(export.binding_flags)
    return kernels, layouts, flags


def _dispatch_info(
    hsa: HsaLibrary, executable: Any, gpu: AgentDescription, kernel: KernelInfo
) -> KernelDispatchInfo:
    ffi = hsa.ffi
    symbol = ffi.new("hsa_executable_symbol_t*")
    agent = ffi.new("hsa_agent_t*", [gpu.handle])
    hsa.check(
        hsa.lib.hsa_executable_get_symbol_by_name(
            executable, kernel.symbol.encode(), agent, symbol
        ),
        f"hsa_executable_get_symbol_by_name({kernel.symbol!r})",
    )
    s = symbol[0]
    return KernelDispatchInfo(
        kernel_object=int(hsa.symbol_info(s, SymbolInfo.KERNEL_OBJECT, "uint64_t")),
        kernarg_segment_size=int(
            hsa.symbol_info(s, SymbolInfo.KERNEL_KERNARG_SEGMENT_SIZE, "uint32_t")
        ),
        kernarg_segment_alignment=int(
            hsa.symbol_info(s, SymbolInfo.KERNEL_KERNARG_SEGMENT_ALIGNMENT, "uint32_t")
        ),
        group_segment_size=int(
            hsa.symbol_info(s, SymbolInfo.KERNEL_GROUP_SEGMENT_SIZE, "uint32_t")
        ),
        private_segment_size=int(
            hsa.symbol_info(s, SymbolInfo.KERNEL_PRIVATE_SEGMENT_SIZE, "uint32_t")
        ),
    )
