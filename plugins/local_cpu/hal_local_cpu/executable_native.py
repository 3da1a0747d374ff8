"""Native executables (format ``local-cpu-native``): shared libraries with the C ABI of
``hal_cpu_abi.h``, validated and loaded by ``elf_loader`` and called through cffi.

Also owns the replay loop (``replay.c``, compiled with the system C compiler at first
use). cffi releases the GIL around every C call, so workgroups run without it.

A loaded library stays loaded while its ``NativeExecutable`` lives; finalized programs
keep the executables they use, so function pointers never dangle. The library is closed
(its mappings released) when the last reference goes.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from hal_core import (
    IncompatibleError,
    InvalidArgumentError,
    UnavailableError,
    UnimplementedError,
)
from hal_core.backend import FunctionInfo, default_parameters

from .abi_cdefs import ffi
from .elf_loader import LoadedLibrary, load_library, read_executable_bytes
from .native_build import build_shared_library, package_dir

__all__ = [
    "FORMAT",
    "NativeExecutable",
    "ffi",
    "load_native_executable",
    "replay_library",
]

FORMAT = "local-cpu-native"
ABI_VERSION = 1
MAX_BINDINGS = 64
MAX_EXPORTS = 1 << 16
_QUERY = "hal_cpu_library_query"


class NativeExecutable:
    """The backend side of a native executable: function infos, raw function pointers
    (``fn_ptrs``, for the replay loop) and cffi function objects (``fns``)."""

    __slots__ = ("functions", "fn_ptrs", "fns", "library", "path", "__weakref__")

    is_native = True
    record_op = 1  # command_buffer.OP_DISPATCH

    def __init__(self, library: LoadedLibrary, path: str) -> None:
        self.library = library
        self.path = path
        table = library.lib.hal_cpu_library_query(ABI_VERSION)
        if table == ffi.NULL:
            raise IncompatibleError(
                f"{path}: hal_cpu_library_query({ABI_VERSION}) returned NULL; the library "
                f"does not serve ABI version {ABI_VERSION}"
            )
        # Everything the library hands back is checked to lie inside its image before it
        # is read: a corrupt table must be an error, never a wild read.
        _inside(library, table, ffi.sizeof("hal_cpu_library_t"), path, "the export table")
        if table.abi_version != ABI_VERSION:
            raise IncompatibleError(
                f"{path} reports ABI version {table.abi_version}; this backend speaks {ABI_VERSION}"
            )
        count = int(table.export_count)
        if count > MAX_EXPORTS:
            raise InvalidArgumentError(f"{path}: {count} exports (at most {MAX_EXPORTS})")
        if count:
            _inside(library, table.exports, count * ffi.sizeof("hal_cpu_export_t"), path, "exports")
        functions = []
        fn_ptrs = []
        fns = []
        for i in range(count):
            e = table.exports[i]
            fn_addr = int(ffi.cast("intptr_t", e.fn))
            if e.name == ffi.NULL or e.fn == ffi.NULL:
                raise InvalidArgumentError(f"{path}: export {i} has a NULL name or function")
            name = library.string(int(ffi.cast("intptr_t", e.name)), f"{path}: export {i} name")
            if not library.is_code(fn_addr):
                raise InvalidArgumentError(f"{path}: export {name!r} does not point into code")
            if e.binding_count > MAX_BINDINGS:
                raise InvalidArgumentError(
                    f"{path}: export {name!r} declares {e.binding_count} bindings; at most "
                    f"{MAX_BINDINGS} are supported"
                )
            size = tuple(max(1, int(v)) for v in e.workgroup_size)
            functions.append(
                FunctionInfo(
                    name=name,
                    binding_count=int(e.binding_count),
                    constant_count=int(e.constant_count),
                    workgroup_size=size,
                    parameters=default_parameters(int(e.binding_count), int(e.constant_count)),
                )
            )
            fn_ptrs.append(fn_addr)
            fns.append(e.fn)
        names = [f.name for f in functions]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"{path}: duplicate export names {names}")
        self.functions = tuple(functions)
        self.fn_ptrs = tuple(fn_ptrs)
        self.fns = tuple(fns)
        # The library goes with its executable (the last program using it keeps it).
        weakref.finalize(self, library.release).atexit = False

    def workgroup_caller(
        self, ordinal: int, counts: tuple[int, int, int] = (1, 1, 1)
    ) -> tuple[Any, Any]:
        """``(fn, state)`` such that ``fn(state, x, y, z)`` calls one workgroup of export
        ``ordinal`` directly through cffi, with no bindings and no constants (what a user
        without a HAL would write; the ``direct.loop`` benchmark peer). ``fn`` returns
        the kernel's status; it is valid while this executable is alive."""
        state: Any = ffi.new("hal_cpu_dispatch_state_t*")  # cffi's stubs give cdata no fields
        state.workgroup_count = list(counts)
        state.workgroup_size = list(self.functions[ordinal].workgroup_size)
        return self.fns[ordinal], state


def _inside(library: LoadedLibrary, ptr: Any, size: int, path: str, what: str) -> None:
    if not library.contains(int(ffi.cast("intptr_t", ptr)), size):
        raise InvalidArgumentError(f"{path}: {what} lies outside the library's image")


def load_native_executable(data: Any, constants: tuple = ()) -> NativeExecutable:
    """Load ``data``: the bytes of a shared library, or a path to one (read once; the
    library is loaded from a private copy).

    INVALID_ARGUMENT when it is not a well-formed ELF shared library for this machine or
    lacks the query symbol; INCOMPATIBLE for another ABI version or machine;
    UNIMPLEMENTED for executable-level constants, which this ABI has no place for.
    """
    if constants:
        raise UnimplementedError(
            f"{FORMAT} executables take no executable-level constants (ABI version "
            f"{ABI_VERSION} has no place for them); pass them as dispatch constants"
        )
    blob, what = read_executable_bytes(data, "native executable")
    library = load_library(blob, what, _QUERY)
    try:
        return NativeExecutable(library, what)
    except BaseException:
        library.release()
        raise


_replay_lock = threading.Lock()
_replay: list[Any] = []


def replay_library() -> Any:
    """The compiled replay loop (built at first use). UNAVAILABLE without a compiler; the
    error is remembered so later calls answer at once."""
    if _replay:
        lib = _replay[0]
        if isinstance(lib, UnavailableError):
            raise lib.clone()
        return lib
    with _replay_lock:
        if not _replay:
            try:
                path = build_shared_library("replay", package_dir() / "replay.c")
                _replay.append(ffi.dlopen(str(path)))
            except UnavailableError as exc:
                _replay.append(exc)
            except OSError as exc:
                _replay.append(UnavailableError(f"cannot load the replay library: {exc}"))
    return replay_library()


def replay_available() -> bool:
    try:
        replay_library()
        return True
    except UnavailableError:
        return False


def kernel_source_path(name: str) -> Path:
    return package_dir() / "kernels" / name
