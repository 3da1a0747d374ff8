"""The one native boundary of the amdgpu driver: HSA/ROCr through cffi (ABI mode).

Everything the driver asks of HSA goes through an ``HsaLibrary``: ``hsa.lib.<hsa function>``
with cffi arguments built from ``hsa.ffi``, and ``hsa.check(status, what)`` turning a status
into a ``HalError``. The object behind ``lib`` is either the real ``libhsa-runtime64`` opened
with ``ffi.dlopen`` or the software HSA agent (``hal_amdgpu.soft_hsa``), which exposes the same
function names taking the same cffi arguments; so the code above this module is identical on
real ROCr and on the soft agent. The C declarations behind ``ffi`` are in ``hsa_cdef``; the
status codes and attribute enums in ``hsa_enums``.

Loader order (IREE's): explicit search paths, ``HAL_AMDGPU_LIBHSA_PATH`` (a file or a
directory), then ``libhsa-runtime64.so.1`` and ``libhsa-runtime64.so`` on the system search
path. A path that names a shared library is loaded as is; a directory is searched for the two
names. Failure lists every path tried.

Thread-safety: an ``HsaLibrary`` is immutable after ``open``; HSA itself is thread-safe.
"""

from __future__ import annotations

import enum
import os
import threading
from typing import Any, Sequence, cast

from hal_core import (
    HalError,
    StatusCode,
    UnavailableError,
    error_for,
)

from .hsa_cdef import REQUIRED_FUNCTIONS, ffi
from .hsa_enums import (
    AgentInfo,
    AgentPoolInfo,
    HsaStatus,
    PoolInfo,
    SymbolInfo,
    status_to_code,
)

__all__ = [
    "ffi",
    "HsaLibrary",
    "LIBHSA_ENV",
    "LIBHSA_NAMES",
    "load_libhsa",
    "candidate_paths",
]

LIBHSA_ENV = "HAL_AMDGPU_LIBHSA_PATH"
LIBHSA_NAMES = ("libhsa-runtime64.so.1", "libhsa-runtime64.so")


def _looks_like_library(path: str) -> bool:
    base = os.path.basename(path)
    return ".so" in base or base.endswith((".dll", ".dylib"))


def candidate_paths(search_paths: Sequence[str] = ()) -> list[str]:
    """The dlopen candidates in the order they are tried (see the module docstring)."""
    out: list[str] = []

    def add(entry: str) -> None:
        if not entry:
            return
        if _looks_like_library(entry) and not os.path.isdir(entry):
            out.append(entry)
        else:
            out.extend(os.path.join(entry, name) for name in LIBHSA_NAMES)

    for entry in search_paths:
        add(os.fspath(entry))
    env = os.environ.get(LIBHSA_ENV, "")
    for entry in env.split(os.pathsep) if env else ():
        add(entry)
    out.extend(LIBHSA_NAMES)
    return out


def load_libhsa(search_paths: Sequence[str] = ()) -> tuple[Any, str]:
    """``(lib, path)`` for the first candidate that opens and has every required symbol.
    UNAVAILABLE listing each path tried and why it failed."""
    failures: list[str] = []
    for path in candidate_paths(search_paths):
        try:
            lib = ffi.dlopen(path)
        except OSError as exc:
            failures.append(f"{path}: {exc}")
            continue
        missing = [name for name in REQUIRED_FUNCTIONS if not _has_symbol(lib, name)]
        if missing:
            failures.append(f"{path}: missing symbols {', '.join(missing[:8])}")
            continue
        return lib, _resolved_path(path)
    raise UnavailableError(
        "the HSA runtime library (libhsa-runtime64) could not be loaded; tried: "
        + "; ".join(failures)
        + f". Install ROCr (Debian/Ubuntu: apt-get install libhsa-runtime64-1) or point "
        f"{LIBHSA_ENV} at the library file or its directory"
    )


def _has_symbol(lib: Any, name: str) -> bool:
    try:
        getattr(lib, name)
    except AttributeError:
        return False
    return True


def _resolved_path(path: str) -> str:
    """The file the dynamic loader actually mapped for ``path`` (from /proc/self/maps)."""
    if os.path.isabs(path):
        return os.path.realpath(path)
    base = path
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                parts = line.split()
                if parts and "libhsa-runtime64" in parts[-1]:
                    return f"{parts[-1]} (as {base})"
    except OSError:
        pass  # no /proc (not Linux): the name as given is the best we can report
    return path


class HsaLibrary:
    """An opened HSA implementation: ``lib`` (functions), ``ffi`` (types), ``path`` (what
    was loaded, for messages), ``implementation`` (``"rocr"`` or ``"soft"``).

    ``check(status, what)`` is the single place HSA statuses become ``HalError``s; the
    message carries HSA's own status text. Thread-safe.
    """

    __slots__ = ("lib", "ffi", "path", "implementation", "_initialized", "_lock")

    def __init__(self, lib: Any, path: str, implementation: str) -> None:
        self.lib = lib
        self.ffi = ffi
        self.path = path
        self.implementation = implementation
        self._initialized = 0
        self._lock = threading.Lock()

    @classmethod
    def open_rocr(cls, search_paths: Sequence[str] = ()) -> "HsaLibrary":
        lib, path = load_libhsa(search_paths)
        return cls(lib, path, "rocr")

    def status_text(self, status: int) -> str:
        out = ffi.new("const char**")
        try:
            rc = self.lib.hsa_status_string(status, out)
        except Exception:  # the status table itself failed: fall back to our names
            rc = 1
        if rc == 0 and out[0] != ffi.NULL:
            return cast(bytes, ffi.string(out[0])).decode("utf-8", "replace")  # a char*
        try:
            return f"HSA_STATUS_{HsaStatus(status).name}"
        except ValueError:
            return f"HSA status {status:#x}"

    def error(self, status: int, what: str) -> HalError:
        code = status_to_code(status)
        if code == StatusCode.OK:
            code = StatusCode.INTERNAL
        detail = ""
        if self.implementation == "soft":  # the software agent may say what faulted
            detail = self.lib.take_fault_detail() or ""
        return error_for(
            code,
            f"{what} failed with {self.status_text(status)}{': ' if detail else ''}{detail} "
            f"[{self.implementation}: {self.path}]",
        )

    def check(self, status: int, what: str) -> None:
        """Raise the HalError for a non-success ``status``; ``what`` names the call."""
        if status != 0:
            raise self.error(status, what)

    # -- runtime lifetime (hsa_init is refcounted by HSA itself) --------------------------

    def init(self) -> None:
        """``hsa_init``; on failure UNAVAILABLE naming the library, the HSA status text and
        the likely fix."""
        status = self.lib.hsa_init()
        if status != 0:
            raise UnavailableError(
                f"hsa_init failed with {self.status_text(status)} (library: {self.path}). "
                + _init_hint()
            )
        with self._lock:
            self._initialized += 1

    def shut_down(self) -> None:
        """Balance one successful ``init`` (idempotent once all are balanced)."""
        with self._lock:
            if self._initialized == 0:
                return
            self._initialized -= 1
        self.check(self.lib.hsa_shut_down(), "hsa_shut_down")

    # -- typed info getters ---------------------------------------------------------------

    def agent_info(self, agent: Any, attribute: int, ctype: str) -> Any:
        out = ffi.new(ctype + "*")
        self.check(
            self.lib.hsa_agent_get_info(agent, attribute, out),
            f"hsa_agent_get_info({_attr_name(AgentInfo, attribute)})",
        )
        return out[0]

    def agent_info_optional(self, agent: Any, attribute: int, ctype: str) -> Any:
        """None when the runtime does not know ``attribute`` (older ROCr)."""
        out = ffi.new(ctype + "*")
        if self.lib.hsa_agent_get_info(agent, attribute, out) != 0:
            return None
        return out[0]

    def agent_info_string(self, agent: Any, attribute: int, length: int = 64) -> str:
        buf = ffi.new(f"char[{length}]")
        self.check(
            self.lib.hsa_agent_get_info(agent, attribute, buf),
            f"hsa_agent_get_info({_attr_name(AgentInfo, attribute)})",
        )
        return cast(bytes, ffi.string(buf)).decode("utf-8", "replace").strip()

    def pool_info(self, pool: Any, attribute: int, ctype: str) -> Any:
        out = ffi.new(ctype + "*")
        self.check(
            self.lib.hsa_amd_memory_pool_get_info(pool, attribute, out),
            f"hsa_amd_memory_pool_get_info({_attr_name(PoolInfo, attribute)})",
        )
        return out[0]

    def agent_pool_info(self, agent: Any, pool: Any, attribute: int, ctype: str) -> Any:
        out = ffi.new(ctype + "*")
        self.check(
            self.lib.hsa_amd_agent_memory_pool_get_info(agent, pool, attribute, out),
            f"hsa_amd_agent_memory_pool_get_info({_attr_name(AgentPoolInfo, attribute)})",
        )
        return out[0]

    def symbol_info(self, symbol: Any, attribute: int, ctype: str) -> Any:
        out = ffi.new(ctype + "*")
        self.check(
            self.lib.hsa_executable_symbol_get_info(symbol, attribute, out),
            f"hsa_executable_symbol_get_info({_attr_name(SymbolInfo, attribute)})",
        )
        return out[0]

    def iterate(self, fn_name: str, handle_type: str, *leading: Any) -> list[Any]:
        """Collect the handles an ``hsa_*_iterate_*`` function reports, in order."""
        found: list[Any] = []

        @ffi.callback(f"hsa_status_t({handle_type}, void*)")
        def _collect(handle: Any, _data: Any) -> int:
            found.append(ffi.new(handle_type + "*", [handle.handle])[0])
            return 0

        self.check(getattr(self.lib, fn_name)(*leading, _collect, ffi.NULL), fn_name)
        return found


def _attr_name(enum_type: type[enum.IntEnum], value: int) -> str:
    try:
        return enum_type(value).name
    except ValueError:
        return hex(value)


def _init_hint() -> str:
    if not os.path.exists("/dev/kfd"):
        return (
            "There is no /dev/kfd: the amdgpu kernel driver is not loaded or no AMD GPU is "
            "present (load it with 'modprobe amdgpu', or pass /dev/kfd and /dev/dri into the "
            "container). To run without hardware, select the software HSA agent with the URI "
            "parameter hsa=soft (amdgpu://?hsa=soft) or HAL_AMDGPU_HSA=soft."
        )
    if not os.access("/dev/kfd", os.R_OK | os.W_OK):
        return (
            "/dev/kfd exists but is not readable and writable by this user: add the user to "
            "the 'render' and 'video' groups."
        )
    return (
        "Check that ROCR_VISIBLE_DEVICES does not hide every GPU and that dmesg shows no "
        "amdgpu errors."
    )
