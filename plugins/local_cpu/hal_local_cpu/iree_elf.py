"""IREE's CPU executables (formats ``embedded-elf-x86_64`` and ``system-elf-x86_64``):
the shared objects IREE's llvm-cpu backend emits, with IREE's executable library ABI
(library version 6; ``hal_iree_abi.h`` declares the structures).

Loading validates the ELF (``elf_validation``), loads it from a private copy, builds the
*environment* every call receives (executable-level constants, the import thunk and the
resolved import table, processor data), queries the library with it and reflects each
export: name, binding and constant counts, workgroup size, flags, local memory and, when
the library carries them, named parameters. Every pointer the library returns is checked
to lie inside its image before it is read.

Dispatches record as ``OP_IREE_DISPATCH`` records and run in the native replay loop
(``replay.c``) like ``local-cpu-native`` ones: the loop builds IREE's dispatch state and
workgroup state, requires 64-byte-aligned bindings (IREE's code uses aligned vector moves
on them), supplies local memory, and maps a non-zero return to INTERNAL. Without a C
compiler, ``call_workgroups`` does the same through cffi.

Imports: the library names the functions it imports (``?name`` marks an optional one).
``IMPORTS`` maps names this backend provides to C function pointers; a missing optional
import is NULL, a missing required one is NOT_FOUND at preparation.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from hal_core import (
    FunctionFlags,
    FunctionInfo,
    FunctionParameter,
    IncompatibleError,
    InvalidArgumentError,
    NotFoundError,
    ParameterType,
    StatusCode,
    UnavailableError,
    error_for,
)
from hal_core.backend import default_parameters

from .abi_cdefs import ffi
from .elf_loader import LoadedLibrary, load_library, read_executable_bytes
from .elf_validation import EM_X86_64, host_machine
from .executable_native import replay_library

__all__ = [
    "EMBEDDED_FORMAT",
    "IMPORTS",
    "IreeExecutable",
    "SYSTEM_FORMAT",
    "call_workgroups",
    "load_embedded_elf",
    "load_system_elf",
    "processor_data",
]

EMBEDDED_FORMAT = "embedded-elf-x86_64"
SYSTEM_FORMAT = "system-elf-x86_64"
LIBRARY_VERSION = 6
LOCAL_MEMORY_PAGE_SIZE = 4096
MAX_BINDINGS = 64
MAX_CONSTANTS = 64
MAX_EXPORTS = 1 << 16
BINDING_ALIGNMENT = 64
_QUERY = "iree_hal_executable_library_query"

IMPORTS: dict[str, int] = {}
"""Import name -> C function pointer (``int fn(void* params, void* context, void*
reserved)``) this backend provides to IREE executables. Empty: IREE's llvm-cpu output
links what it needs into the library; a library that imports a function nobody provides
fails to prepare with NOT_FOUND (or gets NULL for an optional import)."""

# IREE's x86-64 processor feature bits (word 0 of the processor data), keyed by the
# names Linux reports in /proc/cpuinfo.
_X86_64_FEATURE_BITS = {
    "pni": 0,  # sse3
    "ssse3": 1,
    "sse4_1": 2,
    "sse4_2": 3,
    "sse4a": 4,
    "avx": 10,
    "fma": 11,
    "fma4": 12,
    "xop": 13,
    "f16c": 14,
    "avx2": 15,
    "avx512f": 20,
    "avx512cd": 21,
    "avx512vl": 22,
    "avx512dq": 23,
    "avx512bw": 24,
    "avx512ifma": 25,
    "avx512vbmi": 26,
    "avx512_vpopcntdq": 27,
    "avx512_vnni": 28,
    "avx512_vbmi2": 29,
    "avx512_bitalg": 30,
    "avx512_bf16": 31,
    "avx512_fp16": 32,
    "amx_tile": 50,
    "amx_int8": 51,
    "amx_bf16": 52,
}

_processor: list[tuple[int, ...]] = []


def processor_data() -> tuple[int, ...]:
    """IREE's processor data for this host (8 words): on x86-64, word 0 holds the
    feature bits of the features every core reports. All zeros where unknown, which
    IREE's code reads as "baseline only"."""
    if not _processor:
        word0 = 0
        if host_machine() == EM_X86_64:
            common: set[str] | None = None
            try:
                with open("/proc/cpuinfo") as f:
                    for line in f:
                        if line.startswith("flags"):
                            flags = set(line.split(":", 1)[1].split())
                            common = flags if common is None else common & flags
            except OSError:
                common = None
            for name in common or ():
                bit = _X86_64_FEATURE_BITS.get(name)
                if bit is not None:
                    word0 |= 1 << bit
        _processor.append((word0, 0, 0, 0, 0, 0, 0, 0))
    return _processor[0]


_thunk: list[Any] = []


def _import_thunk() -> Any:
    """The C import thunk: the replay library's when a compiler exists, else a cffi
    callback (which takes the GIL per import call: correct, slower)."""
    if not _thunk:
        try:
            _thunk.append(
                ffi.cast("hal_iree_import_thunk_t", replay_library().hal_iree_import_thunk)
            )
        except UnavailableError:

            @ffi.callback("int(hal_iree_import_fn_t, void*, void*, void*)")
            def thunk(fn: Any, params: Any, context: Any, reserved: Any) -> int:
                return int(fn(params, context, reserved))

            _thunk.append(thunk)
    return _thunk[0]


class IreeExecutable:
    """The backend side of an IREE CPU executable: function infos, dispatch function
    pointers (``fn_ptrs``) and one ``hal_iree_export_t`` per export (``export_ptrs``,
    record word 14). Immutable after loading; the library is released with it."""

    __slots__ = (
        "functions",
        "fn_ptrs",
        "export_ptrs",
        "library",
        "library_name",
        "constants",
        "_keep",
        "__weakref__",
    )

    is_native = True
    record_op = 6  # command_buffer.OP_IREE_DISPATCH

    def __init__(self, library: LoadedLibrary, what: str, constants: tuple) -> None:
        self.library = library
        keep: list[Any] = []
        # cffi's stubs give cdata no fields: the structs below are annotated Any.
        env: Any = ffi.new("hal_iree_environment_t*")
        keep.append(env)
        env.import_thunk = _import_thunk()
        env.processor.data = list(processor_data())
        header_pp = library.lib.iree_hal_executable_library_query(LIBRARY_VERSION, env)
        if header_pp == ffi.NULL:
            raise IncompatibleError(
                f"{what}: the library does not serve IREE executable library version "
                f"{LIBRARY_VERSION} (IREE 3.x llvm-cpu output)"
            )
        lib_t: Any = ffi.cast("hal_iree_library_t*", header_pp)
        self._check(lib_t, ffi.sizeof("hal_iree_library_t"), what, "the library structure")
        header = lib_t.header
        self._check(header, ffi.sizeof("hal_iree_library_header_t"), what, "the library header")
        if header.version != LIBRARY_VERSION:
            raise IncompatibleError(
                f"{what}: library version {header.version}; this backend loads {LIBRARY_VERSION}"
            )
        if header.sanitizer != 0:
            raise IncompatibleError(
                f"{what}: built for sanitizer kind {header.sanitizer}; this process runs none"
            )
        if header.features != 0:
            raise IncompatibleError(f"{what}: requires library features {header.features:#x}")
        self.library_name = (
            library.string(_addr(header.name), f"{what}: library name")
            if header.name != ffi.NULL
            else ""
        )

        # Executable-level (specialization) constants: exactly as many as declared.
        want = int(lib_t.constant_count)
        if want > 1 << 16:
            raise InvalidArgumentError(f"{what}: declares {want} executable constants")
        if len(constants) != want:
            raise InvalidArgumentError(
                f"{what} declares {want} executable-level constants; {len(constants)} given"
            )
        values = _uint32s(constants, what)
        self.constants = values
        if want:
            cbuf = ffi.new("uint32_t[]", list(values))
            keep.append(cbuf)
            env.constants = cbuf

        # Imports, resolved against IMPORTS (sorted by the library; order kept).
        n_imports = int(lib_t.imports.count)
        if n_imports:
            if n_imports > MAX_EXPORTS:
                raise InvalidArgumentError(f"{what}: {n_imports} imports")
            self._check(lib_t.imports.symbols, 8 * n_imports, what, "the import table")
            funcs = ffi.new("hal_iree_import_fn_t[]", n_imports)
            contexts = ffi.new("void*[]", n_imports)
            keep += [funcs, contexts]
            for i in range(n_imports):
                sym = library.string(_addr(lib_t.imports.symbols[i]), f"{what}: import {i}")
                optional = sym.startswith("?")
                name = sym[1:] if optional else sym
                ptr = IMPORTS.get(name)
                if ptr is None and not optional:
                    raise NotFoundError(
                        f"{what} imports {name!r}, which this backend does not provide "
                        f"(it provides {sorted(IMPORTS)})"
                    )
                funcs[i] = ffi.cast("hal_iree_import_fn_t", ptr or 0)
            env.import_funcs = funcs
            env.import_contexts = ffi.cast("const void**", contexts)

        exports = lib_t.exports
        count = int(exports.count)
        if count > MAX_EXPORTS:
            raise InvalidArgumentError(f"{what}: {count} exports")
        if count:
            self._check(exports.ptrs, 8 * count, what, "the export function table")
            self._check(
                exports.attrs, ffi.sizeof("hal_iree_dispatch_attrs_t") * count, what, "attributes"
            )
            self._check(exports.names, 8 * count, what, "the export name table")
        has_params = exports.params != ffi.NULL
        if has_params and count:
            self._check(exports.params, 8 * count, what, "the parameter table")
        concurrency = max(1, min(255, os.cpu_count() or 1))
        functions = []
        fn_ptrs = []
        export_ptrs = []
        for i in range(count):
            name = library.string(_addr(exports.names[i]), f"{what}: export {i} name")
            fn = _addr(exports.ptrs[i])
            if not library.is_code(fn):
                raise InvalidArgumentError(f"{what}: export {name!r} does not point into code")
            a = exports.attrs[i]
            nb, nc = int(a.binding_count), int(a.constant_count)
            if nb > MAX_BINDINGS or nc > MAX_CONSTANTS:
                raise InvalidArgumentError(
                    f"{what}: export {name!r} takes {nb} bindings and {nc} constants; at most "
                    f"{MAX_BINDINGS} and {MAX_CONSTANTS}"
                )
            local_bytes = int(a.local_memory_pages) * LOCAL_MEMORY_PAGE_SIZE
            params = None
            if has_params and exports.params[i] != ffi.NULL:
                params = self._parameters(exports, i, int(a.parameter_count), what, name)
            if params is None:
                params = default_parameters(nb, nc)
            functions.append(
                FunctionInfo(
                    name=name,
                    binding_count=nb,
                    constant_count=nc,
                    workgroup_size=(
                        max(1, int(a.workgroup_size_x)),
                        max(1, int(a.workgroup_size_y)),
                        max(1, int(a.workgroup_size_z)),
                    ),
                    flags=FunctionFlags(int(a.flags) & 3),
                    parameters=params,
                    local_memory_size=local_bytes,
                )
            )
            ex: Any = ffi.new("hal_iree_export_t*")
            ex.environment = env
            ex.local_memory_size = local_bytes
            ex.max_concurrency = concurrency
            keep.append(ex)
            fn_ptrs.append(fn)
            export_ptrs.append(_addr(ex))
        names = [f.name for f in functions]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"{what}: duplicate export names {names}")
        self.functions = tuple(functions)
        self.fn_ptrs = tuple(fn_ptrs)
        self.export_ptrs = tuple(export_ptrs)
        self._keep = keep
        weakref.finalize(self, library.release).atexit = False

    def _check(self, ptr: Any, size: int, what: str, part: str) -> None:
        if ptr == ffi.NULL or not self.library.contains(_addr(ptr), size):
            raise InvalidArgumentError(f"{what}: {part} lies outside the library's image")

    def _parameters(
        self, exports: Any, i: int, count: int, what: str, name: str
    ) -> tuple[FunctionParameter, ...]:
        table = exports.params[i]
        self._check(table, count * ffi.sizeof("hal_iree_dispatch_parameter_t"), what, "params")
        names = exports.parameter_names
        out = []
        for k in range(count):
            p = table[k]
            if p.type > ParameterType.BUFFER_PTR:
                raise InvalidArgumentError(
                    f"{what}: export {name!r} parameter {k} has unknown type {p.type}"
                )
            pname = f"p{k}"
            if names != ffi.NULL and p.name != 0xFFFF:
                slot = _addr(names) + 8 * int(p.name)
                if not self.library.contains(slot, 8):
                    raise InvalidArgumentError(f"{what}: parameter name {p.name} is outside")
                pname = self.library.string(
                    _addr(names[p.name]), f"{what}: export {name!r} parameter {k} name"
                )
            out.append(
                FunctionParameter(
                    ParameterType(p.type), pname, int(p.size), int(p.offset), int(p.flags)
                )
            )
        return tuple(out)

    def function_name(self, export_ptr: int) -> str | None:
        """The name of the export whose ``hal_iree_export_t`` is at ``export_ptr``."""
        for i, p in enumerate(self.export_ptrs):
            if p == export_ptr:
                return self.functions[i].name
        return None


def _addr(ptr: Any) -> int:
    return int(ffi.cast("intptr_t", ptr))


def _uint32s(constants: tuple, what: str) -> tuple[int, ...]:
    out = []
    for i, v in enumerate(constants):
        if v.__class__ is not int:
            try:
                v = v.__index__()
            except (AttributeError, TypeError):
                raise InvalidArgumentError(
                    f"{what}: executable constant {i} must be an int, got {type(v).__name__}"
                ) from None
        if not 0 <= v < 1 << 32:
            raise InvalidArgumentError(f"{what}: executable constant {i} = {v} is not a uint32")
        out.append(int(v))
    return tuple(out)


def _load(data: Any, constants: tuple, format: str) -> IreeExecutable:
    blob, what = read_executable_bytes(data, f"{format} executable")
    library = load_library(blob, what, _QUERY, EM_X86_64)
    try:
        return IreeExecutable(library, what, tuple(constants))
    except BaseException:
        library.release()
        raise


def load_embedded_elf(data: Any, constants: tuple = ()) -> IreeExecutable:
    """Load IREE's ``embedded-elf-x86_64`` output (an ELF shared object without
    dependencies; bytes or a path). INVALID_ARGUMENT for malformed bytes; INCOMPATIBLE
    for another library version or machine; NOT_FOUND for an import nobody provides."""
    return _load(data, constants, EMBEDDED_FORMAT)


def load_system_elf(data: Any, constants: tuple = ()) -> IreeExecutable:
    """Load IREE's ``system-elf-x86_64`` output (``--iree-llvmcpu-link-embedded=false``:
    a platform shared object). Same contract as ``load_embedded_elf``."""
    return _load(data, constants, SYSTEM_FORMAT)


def call_workgroups(
    fn_ptr: int,
    export_ptr: int,
    counts: tuple[int, int, int],
    size: tuple[int, int, int],
    constants: Any,
    constant_count: int,
    ptrs: list[int],
    lens: list[int],
) -> None:
    """Run every workgroup of one dispatch through cffi (the path without the compiled
    replay loop; cffi releases the GIL around each call). Raises the HalError that
    fails the submission: INVALID_ARGUMENT for misaligned bindings or dimensions IREE
    cannot express, INTERNAL for a non-zero return."""
    if any(p % BINDING_ALIGNMENT for p in ptrs):
        raise error_for(
            StatusCode.INVALID_ARGUMENT,
            f"IREE executables need {BINDING_ALIGNMENT}-byte-aligned bindings; got addresses "
            f"{[hex(p) for p in ptrs]}",
        )
    if counts[2] > 0xFFFF or size[2] > 0xFFFF:
        raise error_for(StatusCode.INVALID_ARGUMENT, "workgroup z dimension exceeds 65535")
    ex: Any = ffi.cast("hal_iree_export_t*", export_ptr)  # (cffi's stubs: no fields)
    n = len(ptrs)
    bptrs = ffi.new("void*[]", max(1, n))
    blens = ffi.new("size_t[]", max(1, n))
    for k in range(n):
        bptrs[k] = ffi.cast("void*", ptrs[k])
        blens[k] = lens[k]
    ds: Any = ffi.new("hal_iree_dispatch_state_t*")
    ds.workgroup_size_x, ds.workgroup_size_y, ds.workgroup_size_z = size
    ds.constant_count = constant_count
    ds.workgroup_count_x, ds.workgroup_count_y, ds.workgroup_count_z = counts
    ds.max_concurrency = ex.max_concurrency
    ds.binding_count = n
    ds.constants = constants
    ds.binding_ptrs = bptrs
    ds.binding_lengths = blens
    ws: Any = ffi.new("hal_iree_workgroup_state_t*")
    local = None
    if ex.local_memory_size:
        local = ffi.new("char[]", ex.local_memory_size + 64)
        aligned = (_addr(local) + 63) & ~63
        ws.local_memory = ffi.cast("void*", aligned)
        ws.local_memory_size = ex.local_memory_size
    fn = ffi.cast("hal_iree_dispatch_fn_t", fn_ptr)
    env = ex.environment
    for z in range(counts[2]):
        for y in range(counts[1]):
            for x in range(counts[0]):
                ws.workgroup_id_x, ws.workgroup_id_y, ws.workgroup_id_z = x, y, z
                rc = fn(env, ds, ws)
                if rc:
                    raise error_for(
                        StatusCode.INTERNAL,
                        f"IREE dispatch returned {rc} at workgroup {(x, y, z)}",
                    )
    del local
