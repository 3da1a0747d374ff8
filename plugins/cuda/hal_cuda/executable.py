"""CUDA executables: PTX, cubin and fatbin modules (``cuModuleLoadData``) and IREE's
``cuda-nvptx-fb`` container, with the HAL kernel ABI and its reflection.

The HAL kernel ABI on CUDA (documented in ``docs/cuda.md``): a kernel takes its bindings
as device pointers (64-bit parameters) in binding order, then its constants as 32-bit
parameters in order, and nothing else. The workgroup is the CUDA block and the workgroup
count the grid. Reflection reads each parameter's size with ``cuFuncGetParamInfo``: the
leading 8-byte parameters are bindings, the trailing 4-byte ones constants; any other
layout is INVALID_ARGUMENT at ``prepare``, so a dispatch with the wrong number of
bindings or constants is refused at the call by hal_core's validation. A function's
workgroup size comes from its PTX entry's ``.reqntid`` (or ``.maxntid``) directive, from
the IREE container's export metadata, or from the ``workgroup_size`` prepare parameter;
else the function is WORKGROUP_SIZE_DYNAMIC and each dispatch config names the size
((1, 1, 1) when it does not).
"""

from __future__ import annotations

import array
import ctypes
import struct
import weakref
from typing import Any

import numpy as np

from hal_core import FunctionFlags, InvalidArgumentError, OutOfRangeError, UnimplementedError
from hal_core.backend import FunctionInfo, default_parameters

from .cuda_api import CudaContext, check, cuda_error

FORMATS = ("ptx", "cubin", "fatbin", "cuda-nvptx-fb")
"""Executable formats this driver prepares."""

MAX_BLOCK_THREADS = 1024
MAX_GRID = (2**31 - 1, 65535, 65535)


def _unload(ctx: CudaContext, modules: list[Any]) -> None:
    try:
        ctx.make_current()
        for module in modules:
            ctx.api.cuModuleUnload(module)
    except Exception:
        pass


class CudaFunction:
    """One kernel: its ``CUfunction``, fixed block size (None: each dispatch names it,
    else (1, 1, 1)) and ABI shape. Immutable."""

    __slots__ = (
        "name",
        "handle",
        "binding_count",
        "constant_count",
        "block",
        "shared_memory",
        "key",
        "ptr",
    )

    def __init__(
        self,
        name: str,
        handle: Any,
        binding_count: int,
        constant_count: int,
        block: Any,
        shared_memory: int = 0,
    ) -> None:
        self.name = name
        self.shared_memory = shared_memory
        self.handle = handle
        # The handle as an int (identity in program shapes) and as the pointer argument
        # HotCalls.launch takes, made once per function instead of per launch.
        self.key = int(handle)
        self.ptr = ctypes.c_void_p(self.key)
        self.binding_count = binding_count
        self.constant_count = constant_count
        self.block = block


class CudaExecutable:
    """``ExecutableBackend``: one loaded module and its functions in ordinal order.

    The module is unloaded when this object is collected (``weakref.finalize``): command
    buffers and ops that dispatch it retain the public ``Executable``, which holds this."""

    def __init__(self, ctx: CudaContext, modules: Any, functions: list[CudaFunction]) -> None:
        self.ctx = ctx
        self.modules = modules if isinstance(modules, list) else [modules]
        self.kernels = tuple(functions)
        self.functions = tuple(
            FunctionInfo(
                name=f.name,
                binding_count=f.binding_count,
                constant_count=f.constant_count,
                workgroup_size=f.block or (1, 1, 1),
                flags=FunctionFlags.NONE if f.block else FunctionFlags.WORKGROUP_SIZE_DYNAMIC,
                parameters=default_parameters(f.binding_count, f.constant_count),
                local_memory_size=f.shared_memory,
            )
            for f in functions
        )
        self._finalizer = weakref.finalize(self, _unload, ctx, self.modules)

    def close(self) -> None:
        self._finalizer()


def _load_module(ctx: CudaContext, image: bytes, what: str) -> Any:
    api = ctx.api
    ctx.make_current()
    result = api.cuModuleLoadData(image)
    if result[0]:
        error = cuda_error(result[0], f"cuModuleLoadData({what})")
        if int(result[0]) in (200, 218, 209, 222):
            raise InvalidArgumentError(f"{what} does not load on this GPU: {error.message}")
        raise error
    return result[1]


def _reflect(ctx: CudaContext, handle: Any, name: str) -> tuple[int, int]:
    """(binding count, constant count) of a kernel under the HAL kernel ABI."""
    api = ctx.api
    sizes: list[int] = []
    while True:
        result = api.cuFuncGetParamInfo(handle, len(sizes))
        if result[0]:
            break  # CUDA_ERROR_INVALID_VALUE: past the last parameter
        sizes.append(int(result[2]))
    bindings = 0
    while bindings < len(sizes) and sizes[bindings] == 8:
        bindings += 1
    constants = sizes[bindings:]
    if any(s != 4 for s in constants):
        raise InvalidArgumentError(
            f"kernel {name!r} does not follow the HAL kernel ABI (bindings as 8-byte pointers, "
            f"then 4-byte constants): its parameter sizes are {sizes}"
        )
    return bindings, len(constants)


def _module_functions(ctx: CudaContext, module: Any) -> list[tuple[str, Any]]:
    api = ctx.api
    count = int(check(api.cuModuleGetFunctionCount(module), "cuModuleGetFunctionCount"))
    handles = check(api.cuModuleEnumerateFunctions(count, module), "cuModuleEnumerateFunctions")
    out = []
    for handle in handles:
        # Modules load lazily by default (CUDA_MODULE_LOADING=LAZY): load each function
        # now so reflection sees it and the first dispatch pays nothing.
        check(api.cuFuncLoad(handle), "cuFuncLoad")
        raw = check(api.cuFuncGetName(handle), "cuFuncGetName")
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        out.append((name, handle))
    out.sort(key=lambda item: item[0])
    return out


def _block_from_params(params: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    value = params.get("workgroup_size")
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): tuple(int(x) for x in v) for k, v in value.items()}  # type: ignore[misc]
    size = tuple(int(x) for x in value)
    return {"*": size}  # type: ignore[dict-item]


def prepare(ctx: CudaContext, format: str, data: Any, params: dict[str, Any]) -> CudaExecutable:
    """Load ``data`` in ``format`` on the GPU of ``ctx``. INVALID_ARGUMENT for data that
    is not a valid image for this GPU (PTX that does not compile, a cubin for another
    architecture) or kernels off the ABI; NOT_FOUND for an unknown format."""
    raw = bytes(memoryview(data).cast("B"))
    if format == "cuda-nvptx-fb":
        return _prepare_iree(ctx, raw)
    if format not in FORMATS:
        raise InvalidArgumentError(f"the cuda driver does not prepare format {format!r}")
    blocks = _block_from_params(params)
    if format == "ptx":
        return _prepare_ptx(ctx, raw, blocks)
    module = _load_module(ctx, raw, f"{format} image of {len(raw)} bytes")
    try:
        functions = []
        for name, handle in _module_functions(ctx, module):
            nb, nc = _reflect(ctx, handle, name)
            block = blocks.get(name) or blocks.get("*")
            functions.append(CudaFunction(name, handle, nb, nc, block))
    except BaseException:
        ctx.api.cuModuleUnload(module)
        raise
    return CudaExecutable(ctx, module, functions)


def _prepare_ptx(
    ctx: CudaContext, raw: bytes, blocks: dict[str, tuple[int, int, int]]
) -> CudaExecutable:
    """PTX text: entries in file order, reflected from their headers (the ABI checked
    there), then cross-checked against the loaded functions' parameter layout."""
    from .kernels import reflect_ptx

    text = raw.rstrip(b"\0")
    reflected = reflect_ptx(text)
    if not reflected.entries:
        raise InvalidArgumentError("the PTX module has no .entry (no kernel to dispatch)")
    module = _load_module(ctx, text + b"\0", f"PTX module of {len(text)} bytes")
    try:
        functions = []
        for entry in reflected.entries:
            handle = check(
                ctx.api.cuModuleGetFunction(module, entry.name.encode()),
                f"cuModuleGetFunction({entry.name})",
            )
            nb, nc = _reflect(ctx, handle, entry.name)
            block = blocks.get(entry.name) or entry.workgroup_size or blocks.get("*")
            functions.append(CudaFunction(entry.name, handle, nb, nc, block))
    except BaseException:
        ctx.api.cuModuleUnload(module)
        raise
    return CudaExecutable(ctx, module, functions)


def _prepare_iree(ctx: CudaContext, raw: bytes) -> CudaExecutable:
    """IREE's ``cuda-nvptx-fb`` container: PTX modules plus export metadata (the block
    size, binding and constant counts of each export, which IREE's kernels are compiled
    to: bindings as pointers, then 32-bit constants, the HAL kernel ABI)."""
    try:
        from .iree_cuda_container import parse_container
    except ImportError:
        raise UnimplementedError(
            "the cuda-nvptx-fb container parser (hal_cuda.iree_cuda_container) is not "
            "available in this build"
        ) from None
    parsed = parse_container(raw)
    modules = []
    try:
        for i, ptx in enumerate(parsed.modules):
            text = ptx.rstrip(b"\0") + b"\0"
            modules.append(_load_module(ctx, text, f"cuda-nvptx-fb PTX module {i}"))
        functions = []
        for export in parsed.exports:
            handle = check(
                ctx.api.cuModuleGetFunction(modules[export.module_ordinal], export.name.encode()),
                f"cuModuleGetFunction({export.name})",
            )
            functions.append(
                CudaFunction(
                    export.name,
                    handle,
                    len(export.binding_flags),
                    export.constant_count,
                    tuple(export.workgroup_size),
                    export.shared_memory_size,
                )
            )
    except BaseException:
        for module in modules:
            ctx.api.cuModuleUnload(module)
        raise
    return CudaExecutable(ctx, modules, functions)


def check_launch(block: tuple[int, int, int], grid: tuple[int, int, int], name: str) -> None:
    """OUT_OF_RANGE for a block or grid CUDA cannot launch (checked when recorded)."""
    if block[0] * block[1] * block[2] > MAX_BLOCK_THREADS or min(block) < 1:
        raise OutOfRangeError(
            f"kernel {name!r}: workgroup size {block} is outside CUDA's limits (at most "
            f"{MAX_BLOCK_THREADS} threads per block, each dimension at least 1)"
        )
    if grid[0] > MAX_GRID[0] or grid[1] > MAX_GRID[1] or grid[2] > MAX_GRID[2]:
        axis = next(i for i in range(3) if grid[i] > MAX_GRID[i])
        raise OutOfRangeError(
            f"kernel {name!r}: workgroup count {grid} exceeds CUDA's grid limit "
            f"{MAX_GRID} on axis {'xyz'[axis]}"
        )


class ParameterBlock:
    """The kernel-parameter storage of a whole program (every dispatch of a recording):
    8 bytes per parameter (a binding's address, or a constant in the low 4 bytes) and the
    array of pointers to them that ``cuLaunchKernel`` reads, one slice per launch.
    Constants are written once, here; each launch writes only its binding addresses.
    ``cuLaunchKernel`` copies the parameters during the call, so one block serves every
    launch; the caller serialises launches of one block (the program's lock). Two ctypes
    arrays per program, built at ``end()``, instead of two per dispatch."""

    __slots__ = ("values", "pointers", "address", "words")

    def __init__(self, words: list[int] | bytes) -> None:
        """``words``: every launch's initial parameter words, back to back (ints, or
        packed as native uint64 in bytes)."""
        # Filled from packed bytes: ctypes' own constructor converts each element in
        # Python and costs several times more for a long program.
        if words.__class__ is bytes:
            initial: Any = words + _ZERO_WORD
        else:
            initial = array.array("Q", words)
            initial.append(0)
        n = len(initial) // 8 if words.__class__ is bytes else len(initial)
        # n is never 0: a parameterless launch may point past the last word.
        kind = ctypes.c_uint64 * n
        values = kind.from_buffer_copy(initial)
        base = ctypes.addressof(values)
        self.values = values
        # The same memory as numpy words: graphs write and compare whole blocks at once.
        self.words = np.frombuffer(memoryview(values).cast("B"), np.uint64)
        # Word k's address at pointer k, computed in C.
        self.pointers = kind.from_buffer_copy(
            np.arange(base, base + 8 * n, 8, dtype=np.uint64).tobytes()
        )
        self.address = ctypes.addressof(self.pointers)


_ZERO_WORD = bytes(8)


def constant_words(constants: bytes) -> tuple[int, ...]:
    """32-bit little-endian constants as parameter words."""
    return struct.unpack(f"<{len(constants) // 4}I", constants) if constants else ()
