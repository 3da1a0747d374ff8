"""Native executables (format ``local-cpu-native``): shared libraries with the C ABI of
``hal_cpu_abi.h``, loaded with cffi in ABI mode.

Also owns the cffi declarations of that ABI and of the replay loop (``replay.c``, compiled
with the system C compiler at first use), and the slow but dependency-free per-workgroup
call path used when no compiler is available. cffi releases the GIL around every C call,
so workgroups run without it.

A loaded library stays loaded while any ``NativeExecutable`` or finalized program refers
to it (programs keep the executable's backend object): function pointers never dangle.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import cffi

from hal_core import (
    IncompatibleError,
    InvalidArgumentError,
    UnavailableError,
)
from hal_core._executable import FunctionInfo, default_parameters

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

ffi = cffi.FFI()
ffi.cdef(
    """
    typedef struct hal_cpu_dispatch_state_t {
      uint32_t workgroup_count[3];
      uint32_t workgroup_size[3];
      uint32_t constant_count;
      uint32_t binding_count;
      const uint32_t* constants;
      void* const* binding_ptrs;
      const uint64_t* binding_lengths;
    } hal_cpu_dispatch_state_t;
    typedef int (*hal_cpu_workgroup_fn_t)(const hal_cpu_dispatch_state_t*, uint32_t,
                                          uint32_t, uint32_t);
    typedef struct hal_cpu_export_t {
      const char* name;
      hal_cpu_workgroup_fn_t fn;
      uint32_t binding_count;
      uint32_t constant_count;
      uint32_t workgroup_size[3];
      uint32_t flags;
    } hal_cpu_export_t;
    typedef struct hal_cpu_library_t {
      uint32_t abi_version;
      uint32_t export_count;
      const hal_cpu_export_t* exports;
    } hal_cpu_library_t;
    const hal_cpu_library_t* hal_cpu_library_query(uint32_t abi_version);

    int hal_replay_run(const int64_t* recs, int64_t begin, int64_t end,
                       const int64_t* bases, const int64_t* base_lens,
                       const int64_t* bind_base, const int64_t* bind_off,
                       const int64_t* bind_len, int64_t* err);
    int hal_replay_counts(const int64_t* rec, const int64_t* bases,
                          const int64_t* base_lens, uint32_t* counts);
    int hal_replay_dispatch_range(const int64_t* rec, const int64_t* bases,
                                  const int64_t* base_lens, const int64_t* bind_base,
                                  const int64_t* bind_off, const int64_t* bind_len,
                                  const uint32_t* counts, int64_t begin, int64_t end);
    """
)

_ELF_MAGIC = b"\x7fELF"


class NativeExecutable:
    """The backend side of a native executable: function infos, raw function pointers
    (``fn_ptrs``, for the replay loop) and cffi function objects (``fns``)."""

    __slots__ = ("functions", "fn_ptrs", "fns", "_lib", "_table", "path", "__weakref__")

    is_native = True

    def __init__(self, lib: Any, path: str) -> None:
        self._lib = lib
        self.path = path
        try:
            query = lib.hal_cpu_library_query
        except AttributeError as exc:
            raise InvalidArgumentError(
                f"{path} is a shared library but does not export hal_cpu_library_query "
                f"(see hal_local_cpu/hal_cpu_abi.h): {exc}"
            ) from None
        table = query(ABI_VERSION)
        if table == ffi.NULL:
            raise IncompatibleError(
                f"{path}: hal_cpu_library_query({ABI_VERSION}) returned NULL; the library "
                f"does not serve ABI version {ABI_VERSION}"
            )
        if table.abi_version != ABI_VERSION:
            raise IncompatibleError(
                f"{path} reports ABI version {table.abi_version}; this backend speaks {ABI_VERSION}"
            )
        self._table = table
        functions = []
        fn_ptrs = []
        fns = []
        for i in range(table.export_count):
            e = table.exports[i]
            if e.name == ffi.NULL or e.fn == ffi.NULL:
                raise InvalidArgumentError(f"{path}: export {i} has a NULL name or function")
            name = ffi.string(e.name).decode("utf-8", "replace")
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
            fn_ptrs.append(int(ffi.cast("intptr_t", e.fn)))
            fns.append(e.fn)
        names = [f.name for f in functions]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"{path}: duplicate export names {names}")
        self.functions = tuple(functions)
        self.fn_ptrs = tuple(fn_ptrs)
        self.fns = tuple(fns)

    def workgroup_caller(
        self, ordinal: int, counts: tuple[int, int, int] = (1, 1, 1)
    ) -> tuple[Any, Any]:
        """``(fn, state)`` such that ``fn(state, x, y, z)`` calls one workgroup of export
        ``ordinal`` directly through cffi, with no bindings and no constants (what a user
        without a HAL would write; the ``direct.loop`` benchmark peer). ``fn`` returns
        the kernel's status."""
        state = ffi.new("hal_cpu_dispatch_state_t*")
        state.workgroup_count = list(counts)
        state.workgroup_size = list(self.functions[ordinal].workgroup_size)
        return self.fns[ordinal], state


def load_native_executable(data: Any) -> NativeExecutable:
    """Load ``data``: the bytes of a shared library, or a path to one.

    INVALID_ARGUMENT when it is not a loadable ELF shared library or lacks the query
    symbol; INCOMPATIBLE for another ABI version.
    """
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read executable file {path!r}: {exc}") from None
        if head != _ELF_MAGIC:
            raise InvalidArgumentError(
                f"{path!r} is not an ELF shared library (starts with {head!r}); build it "
                "with `cc -shared -fPIC`"
            )
        return NativeExecutable(_dlopen(path), path)
    try:
        blob = bytes(memoryview(data).cast("B"))
    except TypeError:
        raise InvalidArgumentError(
            f"native executable data must be bytes or a path, got {type(data).__name__}"
        ) from None
    if blob[:4] != _ELF_MAGIC:
        raise InvalidArgumentError(
            f"native executable data ({len(blob)} bytes starting {blob[:8]!r}) is not an ELF "
            "shared library; pass the bytes of a library built with `cc -shared -fPIC`"
        )
    # dlopen needs a file. Each load gets a fresh, uniquely named one: the dynamic
    # loader returns an already-loaded library for a name it has seen (a reused
    # /proc/self/fd/N path would hand back an earlier, different library).
    fd, path = tempfile.mkstemp(prefix="hal-local-cpu-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        return NativeExecutable(_dlopen(path), "<memory library>")
    finally:
        os.unlink(path)


def _dlopen(path: str) -> Any:
    try:
        return ffi.dlopen(path)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot load {path} as a shared library: {exc}") from None


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
