"""aqlprofile: hardware counters (PMC) and ATT/SQTT thread traces for AMD GPUs.

``libhsa-amd-aqlprofile64`` is loaded dynamically (cffi ABI mode) and only through this
module. Search order: explicit paths (files or directories), ``HAL_AMDGPU_LIBAQLPROFILE_PATH``
(a file or a directory), the directory of the loaded libhsa, then the system loader path;
in each directory ``libhsa-amd-aqlprofile64.so.1`` then ``.so``. When nothing loads,
``UNAVAILABLE`` names every place that was tried.

The declarations are the library's v2 SDK API (``aqlprofile_*``); the PM4 packets it
creates are 64-byte AQL vendor packets the amdgpu queue inserts around a dispatch: the
start packet before it, read and stop packets after it. ATT functions are optional
symbols: a library without them fails trace requests with UNAVAILABLE.
"""

from __future__ import annotations

import ctypes.util
import os
import threading
from typing import Any, Callable, Iterable, Mapping, Sequence, cast

import attrs
from cffi import FFI

from hal_core import (
    IncompatibleError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnimplementedError,
)
from hal_core.profiling import CounterSet, ProfilingDataFamily, ProfilingOptions

__all__ = [
    "ENV_PATH",
    "LIBRARY_NAMES",
    "SUPPORTED_MAJOR",
    "BUILTIN_COUNTERS",
    "CounterSpec",
    "AgentInfo",
    "PmcPackets",
    "AttPackets",
    "ATT_PARAMETER_COMPUTE_UNIT_TARGET",
    "ATT_PARAMETER_SE_MASK",
    "ATT_PARAMETER_SIMD_SELECTION",
    "ATT_PARAMETER_BUFFER_SIZE",
    "AqlProfileLibrary",
    "load_aqlprofile",
    "resolve_counter_sets",
    "check_profiling_options",
]

ENV_PATH = "HAL_AMDGPU_LIBAQLPROFILE_PATH"
LIBRARY_NAMES = ("libhsa-amd-aqlprofile64.so.1", "libhsa-amd-aqlprofile64.so")
SUPPORTED_MAJOR = 1  # the v2 SDK ABI this module declares; another major is INCOMPATIBLE
HSA_STATUS_SUCCESS = 0
AGENT_VERSION_V1 = 2
BLOCK_SQ = 6
#: ``hsa_ven_amd_aqlprofile_parameter_name_t`` values an ATT profile passes.
ATT_PARAMETER_COMPUTE_UNIT_TARGET = 0
ATT_PARAMETER_SE_MASK = 5
ATT_PARAMETER_SIMD_SELECTION = 8
ATT_PARAMETER_BUFFER_SIZE = 10

_CDEF = """
typedef int hsa_status_t;
typedef struct { uint64_t handle; } aqlprofile_handle_t;
typedef struct { uint64_t handle; } aqlprofile_agent_handle_t;
typedef struct { uint64_t handle; } hsa_agent_t;
typedef struct { uint32_t major; uint32_t minor; uint32_t patch; } aqlprofile_version_t;
typedef struct {
  const char* agent_gfxip; uint32_t xcc_num; uint32_t se_num; uint32_t cu_num;
  uint32_t shader_arrays_per_se; uint32_t domain; uint32_t location_id;
} aqlprofile_agent_info_v1_t;
typedef struct {
  uint32_t block_index; uint32_t event_id; uint32_t flags; int block_name;
} aqlprofile_pmc_event_t;
typedef struct {
  aqlprofile_agent_handle_t agent; const aqlprofile_pmc_event_t* events; uint32_t event_count;
} aqlprofile_pmc_profile_t;
typedef struct { uint8_t bytes[64]; } hsa_ext_amd_aql_pm4_packet_t;
typedef struct {
  hsa_ext_amd_aql_pm4_packet_t start_packet;
  hsa_ext_amd_aql_pm4_packet_t stop_packet;
  hsa_ext_amd_aql_pm4_packet_t read_packet;
} aqlprofile_pmc_aql_packets_t;
typedef struct { int parameter_name; uint32_t value; } aqlprofile_att_parameter_t;
typedef struct {
  hsa_agent_t agent; const aqlprofile_att_parameter_t* parameters; uint32_t parameter_count;
} aqlprofile_att_profile_t;
typedef struct {
  hsa_ext_amd_aql_pm4_packet_t start_packet;
  hsa_ext_amd_aql_pm4_packet_t stop_packet;
} aqlprofile_att_control_aql_packets_t;
typedef hsa_status_t (*aqlprofile_memory_alloc_callback_t)(
    void** ptr,
    uint64_t size,
    uint32_t flags,
    void* userdata);
typedef void (*aqlprofile_memory_dealloc_callback_t)(void* ptr, void* userdata);
typedef hsa_status_t (*aqlprofile_memory_copy_t)(
    void* dst,
    const void* src,
    size_t size,
    void* userdata);
typedef hsa_status_t (*aqlprofile_pmc_data_callback_t)(
    aqlprofile_pmc_event_t event,
    uint64_t counter_id,
    uint64_t counter_value,
    void* userdata);
typedef hsa_status_t (*aqlprofile_att_data_callback_t)(
    uint32_t shader,
    void* buffer,
    uint64_t size,
    void* callback_data);

hsa_status_t aqlprofile_get_version(aqlprofile_version_t* version);
hsa_status_t aqlprofile_register_agent_info(
    aqlprofile_agent_handle_t* agent_id,
    const void* agent_info,
    int version);
hsa_status_t aqlprofile_validate_pmc_event(
    aqlprofile_agent_handle_t agent,
    const aqlprofile_pmc_event_t* event,
    bool* result);
hsa_status_t aqlprofile_pmc_create_packets(
    aqlprofile_handle_t* handle,
    aqlprofile_pmc_aql_packets_t* packets,
    aqlprofile_pmc_profile_t profile,
    aqlprofile_memory_alloc_callback_t alloc_cb,
    aqlprofile_memory_dealloc_callback_t dealloc_cb,
    aqlprofile_memory_copy_t memcpy_cb,
    void* userdata);
void aqlprofile_pmc_delete_packets(aqlprofile_handle_t handle);
hsa_status_t aqlprofile_pmc_iterate_data(
    aqlprofile_handle_t handle,
    aqlprofile_pmc_data_callback_t callback,
    void* userdata);
hsa_status_t aqlprofile_att_create_packets(
    aqlprofile_handle_t* handle,
    aqlprofile_att_control_aql_packets_t* packets,
    aqlprofile_att_profile_t profile,
    aqlprofile_memory_alloc_callback_t alloc_cb,
    aqlprofile_memory_dealloc_callback_t dealloc_cb,
    aqlprofile_memory_copy_t memcpy_cb,
    void* userdata);
hsa_status_t aqlprofile_att_iterate_data(
    aqlprofile_handle_t handle,
    aqlprofile_att_data_callback_t callback,
    void* userdata);
void aqlprofile_att_delete_packets(aqlprofile_handle_t handle);
hsa_status_t hsa_ven_amd_aqlprofile_error_string(const char** str);
"""

_ffi = FFI()
_ffi.cdef(_CDEF)

_REQUIRED = (
    "aqlprofile_get_version",
    "aqlprofile_register_agent_info",
    "aqlprofile_validate_pmc_event",
    "aqlprofile_pmc_create_packets",
    "aqlprofile_pmc_delete_packets",
    "aqlprofile_pmc_iterate_data",
)
_ATT = (
    "aqlprofile_att_create_packets",
    "aqlprofile_att_iterate_data",
    "aqlprofile_att_delete_packets",
)


@attrs.frozen
class CounterSpec:
    """A counter the HAL knows by name: its aqlprofile block and event, and the oldest
    gfx major version that has it."""

    name: str
    block: int
    event: int
    min_gfx_major: int = 9


BUILTIN_COUNTERS: dict[str, CounterSpec] = {
    c.name: c
    for c in (
        CounterSpec("SQ_WAVES", BLOCK_SQ, 4),
        CounterSpec("SQ_WAVES_32", BLOCK_SQ, 5, 10),
        CounterSpec("SQ_WAVES_64", BLOCK_SQ, 6, 10),
        CounterSpec("SQ_BUSY_CYCLES", BLOCK_SQ, 3),
    )
}


@attrs.frozen
class AgentInfo:
    """What aqlprofile needs to know of a GPU agent (``aqlprofile_agent_info_v1_t``)."""

    gfxip: str
    xcc_num: int = 1
    se_num: int = 1
    cu_num: int = 1
    shader_arrays_per_se: int = 1
    domain: int = 0
    location_id: int = 0

    @property
    def gfx_major(self) -> int:
        digits = self.gfxip.removeprefix("gfx")
        if len(digits) < 3 or not digits[:-2].isdigit():
            raise InvalidArgumentError(f"agent gfxip {self.gfxip!r} is not like 'gfx90a'/'gfx1100'")
        return int(digits[:-2])


@attrs.frozen
class PmcPackets:
    """Counter packets for one dispatch: 64 bytes each; ``handle`` reads results."""

    handle: int
    start: bytes
    stop: bytes
    read: bytes


@attrs.frozen
class AttPackets:
    """Thread-trace control packets (64 bytes each) for one traced dispatch; ``handle``
    reads the trace after the stop packet completed."""

    handle: int
    start: bytes
    stop: bytes


def _candidates(paths: Iterable[str], env: Mapping[str, str], libhsa_path: str | None) -> list[str]:
    out: list[str] = []

    def add(entry: str) -> None:
        if os.path.isdir(entry):
            out.extend(os.path.join(entry, n) for n in LIBRARY_NAMES)
        else:
            out.append(entry)

    for p in paths:
        add(os.fspath(p))
    if env.get(ENV_PATH):
        add(env[ENV_PATH])
    if libhsa_path:
        d = os.path.dirname(os.path.abspath(libhsa_path))
        out.extend(os.path.join(d, n) for n in LIBRARY_NAMES)
    out.extend(LIBRARY_NAMES)  # the system loader path
    found = ctypes.util.find_library("hsa-amd-aqlprofile64")
    if found and found not in out:
        out.append(found)
    return out


class AqlProfileLibrary:
    """A loaded aqlprofile library. Thread-safe for the calls below (the library is);
    keep it alive while packets it created are in use."""

    def __init__(self, lib: Any, path: str) -> None:
        self._lib = lib
        self.path = path
        missing = [name for name in _REQUIRED if not _has(lib, name)]
        if missing:
            raise UnavailableError(
                f"{path} lacks the aqlprofile v2 functions {', '.join(missing)}; install a "
                "ROCm release whose aqlprofile has the v2 SDK API (ROCm >= 6.2)"
            )
        v: Any = _ffi.new("aqlprofile_version_t*")  # cffi's stubs give cdata no fields
        self._check(lib.aqlprofile_get_version(v), "aqlprofile_get_version")
        self.version = (v.major, v.minor, v.patch)
        if v.major != SUPPORTED_MAJOR:
            raise IncompatibleError(
                f"{path} reports aqlprofile version {v.major}.{v.minor}.{v.patch}; this "
                f"plugin speaks major version {SUPPORTED_MAJOR}"
            )
        self.has_att = all(_has(lib, name) for name in _ATT)
        self._agents: dict[AgentInfo, int] = {}
        self._lock = threading.Lock()
        # cffi callbacks, event arrays and packet memory of live PMC handles
        self._keepalive: dict[int, tuple] = {}

    def _check(self, status: int, what: str) -> None:
        if status != HSA_STATUS_SUCCESS:
            detail = ""
            if _has(self._lib, "hsa_ven_amd_aqlprofile_error_string"):
                s = _ffi.new("const char**")
                if self._lib.hsa_ven_amd_aqlprofile_error_string(s) == 0 and s[0] != _ffi.NULL:
                    message = cast(bytes, _ffi.string(s[0]))  # a char* reads as bytes
                    detail = ": " + message.decode("utf-8", "replace")
            raise InternalError(f"{what} failed with HSA status {status:#x}{detail}")

    def register_agent(self, agent: AgentInfo) -> int:
        with self._lock:
            handle = self._agents.get(agent)
            if handle is not None:
                return handle
            gfxip = _ffi.new("char[]", agent.gfxip.encode())
            info = _ffi.new(
                "aqlprofile_agent_info_v1_t*",
                {
                    "agent_gfxip": gfxip,
                    "xcc_num": agent.xcc_num,
                    "se_num": agent.se_num,
                    "cu_num": agent.cu_num,
                    "shader_arrays_per_se": agent.shader_arrays_per_se,
                    "domain": agent.domain,
                    "location_id": agent.location_id,
                },
            )
            out: Any = _ffi.new("aqlprofile_agent_handle_t*")
            self._check(
                self._lib.aqlprofile_register_agent_info(out, info, AGENT_VERSION_V1),
                "aqlprofile_register_agent_info",
            )
            self._agents[agent] = out.handle
            return out.handle

    def validate_event(
        self, agent: AgentInfo, block: int, event: int, block_index: int = 0
    ) -> bool:
        handle = self.register_agent(agent)
        ev = _ffi.new(
            "aqlprofile_pmc_event_t*",
            {"block_index": block_index, "event_id": event, "flags": 0, "block_name": block},
        )
        ok = _ffi.new("bool*")
        self._check(
            self._lib.aqlprofile_validate_pmc_event({"handle": handle}, ev, ok),
            "aqlprofile_validate_pmc_event",
        )
        return bool(ok[0])

    def create_pmc_packets(
        self,
        agent: AgentInfo,
        counters: Sequence[CounterSpec],
        alloc: Callable[[int, int], tuple[int, Any]] | None = None,
    ) -> PmcPackets:
        """Create start/stop/read packets for ``counters``. ``alloc(size, flags)``
        returns ``(address, keepalive)`` of memory the GPU can reach (the amdgpu plugin
        passes its HSA allocator); the default is host memory, valid only for agents
        that can access host memory."""
        handle = self.register_agent(agent)
        events = _ffi.new(
            "aqlprofile_pmc_event_t[]",
            [
                {"block_index": 0, "event_id": c.event, "flags": 0, "block_name": c.block}
                for c in counters
            ],
        )
        profile = {"agent": {"handle": handle}, "events": events, "event_count": len(counters)}

        def default_alloc(size: int, flags: int) -> tuple[int, Any]:
            mem = _ffi.new("char[]", size)
            return int(_ffi.cast("uintptr_t", mem)), mem

        on_alloc, on_free, on_copy, keep = self._memory_callbacks(alloc or default_alloc)
        out_handle: Any = _ffi.new("aqlprofile_handle_t*")
        packets: Any = _ffi.new("aqlprofile_pmc_aql_packets_t*")
        self._check(
            self._lib.aqlprofile_pmc_create_packets(
                out_handle, packets, profile, on_alloc, on_free, on_copy, _ffi.NULL
            ),
            "aqlprofile_pmc_create_packets",
        )
        result = PmcPackets(
            out_handle.handle,
            bytes(_ffi.buffer(packets.start_packet.bytes)),
            bytes(_ffi.buffer(packets.stop_packet.bytes)),
            bytes(_ffi.buffer(packets.read_packet.bytes)),
        )
        self._keepalive[result.handle] = (keep, events, on_alloc, on_free, on_copy)
        return result

    def read_pmc(self, packets: PmcPackets) -> list[tuple[int, int, int]]:
        """(block, event, value) per counter instance after the read packet completed."""
        values: list[tuple[int, int, int]] = []

        @_ffi.callback("hsa_status_t(aqlprofile_pmc_event_t, uint64_t, uint64_t, void*)")
        def on_data(event: Any, _counter_id: int, value: int, _ud: Any) -> int:
            values.append((event.block_name, event.event_id, value))
            return 0

        self._check(
            self._lib.aqlprofile_pmc_iterate_data({"handle": packets.handle}, on_data, _ffi.NULL),
            "aqlprofile_pmc_iterate_data",
        )
        return values

    def delete_pmc_packets(self, packets: PmcPackets) -> None:
        self._lib.aqlprofile_pmc_delete_packets({"handle": packets.handle})
        self._keepalive.pop(packets.handle, None)

    def _memory_callbacks(self, alloc: Callable[[int, int], tuple[int, Any]]) -> tuple:
        """cffi (alloc, free, copy) callbacks over ``alloc`` and the list keeping what it
        returned alive."""
        keep: list[Any] = []

        @_ffi.callback("hsa_status_t(void**, uint64_t, uint32_t, void*)")
        def on_alloc(ptr: Any, size: int, flags: int, _ud: Any) -> int:
            try:
                address, keepalive = alloc(size, flags)
            except Exception:
                return 1
            keep.append(keepalive)
            ptr[0] = _ffi.cast("void*", address)
            return 0

        @_ffi.callback("void(void*, void*)")
        def on_free(_ptr: Any, _ud: Any) -> None:
            return None  # memory lives as long as the packets' keepalive list

        @_ffi.callback("hsa_status_t(void*, const void*, size_t, void*)")
        def on_copy(dst: Any, src: Any, size: int, _ud: Any) -> int:
            _ffi.memmove(dst, src, size)
            return 0

        return on_alloc, on_free, on_copy, keep

    def create_att_packets(
        self,
        hsa_agent: int,
        parameters: Sequence[tuple[int, int]],
        alloc: Callable[[int, int], tuple[int, Any]],
    ) -> AttPackets:
        """Thread-trace start/stop packets for the HSA agent handle ``hsa_agent`` (the v2
        ATT profile names the HSA agent, not a registered aqlprofile agent) with
        ``(parameter name, value)`` pairs; ``alloc`` as for ``create_pmc_packets``.
        UNAVAILABLE when the library has no ATT functions."""
        if not self.has_att:
            raise UnavailableError(
                f"{self.path} has no ATT thread-trace functions ({', '.join(_ATT)})"
            )
        params = _ffi.new(
            "aqlprofile_att_parameter_t[]",
            [{"parameter_name": name, "value": value} for name, value in parameters],
        )
        profile = {
            "agent": {"handle": hsa_agent},
            "parameters": params,
            "parameter_count": len(parameters),
        }
        on_alloc, on_free, on_copy, keep = self._memory_callbacks(alloc)
        out_handle: Any = _ffi.new("aqlprofile_handle_t*")
        packets: Any = _ffi.new("aqlprofile_att_control_aql_packets_t*")
        self._check(
            self._lib.aqlprofile_att_create_packets(
                out_handle, packets, profile, on_alloc, on_free, on_copy, _ffi.NULL
            ),
            "aqlprofile_att_create_packets",
        )
        result = AttPackets(
            out_handle.handle,
            bytes(_ffi.buffer(packets.start_packet.bytes)),
            bytes(_ffi.buffer(packets.stop_packet.bytes)),
        )
        self._keepalive[result.handle] = (keep, params, on_alloc, on_free, on_copy)
        return result

    def read_att(self, packets: AttPackets) -> list[tuple[int, bytes]]:
        """(shader engine, trace bytes) per chunk the library reports after the stop packet
        completed."""
        chunks: list[tuple[int, bytes]] = []

        @_ffi.callback("hsa_status_t(uint32_t, void*, uint64_t, void*)")
        def on_data(shader: int, buffer: Any, size: int, _ud: Any) -> int:
            chunks.append((int(shader), bytes(_ffi.buffer(buffer, size))))
            return 0

        self._check(
            self._lib.aqlprofile_att_iterate_data({"handle": packets.handle}, on_data, _ffi.NULL),
            "aqlprofile_att_iterate_data",
        )
        return chunks

    def delete_att_packets(self, packets: AttPackets) -> None:
        self._lib.aqlprofile_att_delete_packets({"handle": packets.handle})
        self._keepalive.pop(packets.handle, None)


def _has(lib: Any, name: str) -> bool:
    try:
        getattr(lib, name)
    except AttributeError:
        return False
    return True


_cache: dict[tuple, AqlProfileLibrary] = {}
_cache_lock = threading.Lock()


def load_aqlprofile(
    paths: Iterable[str] = (),
    *,
    libhsa_path: str | None = None,
    env: Mapping[str, str] | None = None,
) -> AqlProfileLibrary:
    """Load aqlprofile by the search order above (cached per search list). UNAVAILABLE
    lists every candidate and why it failed; INCOMPATIBLE for another API major."""
    env = os.environ if env is None else env
    candidates = _candidates(paths, env, libhsa_path)
    key = tuple(candidates)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        tried: list[str] = []
        for cand in candidates:
            if os.sep in cand and not os.path.exists(cand):
                tried.append(f"{cand} (no such file)")
                continue
            try:
                lib = _ffi.dlopen(cand)
            except OSError as exc:
                tried.append(f"{cand} ({str(exc).split(':')[-1].strip() or 'cannot load'})")
                continue
            loaded = AqlProfileLibrary(lib, cand)
            _cache[key] = loaded
            return loaded
        raise UnavailableError(
            "aqlprofile (libhsa-amd-aqlprofile64) was not found; hardware counters and "
            "thread traces need it. Looked for: "
            + "; ".join(tried)
            + f". Install ROCm's aqlprofile or set {ENV_PATH} to its file or directory"
        )


def resolve_counter_sets(
    counter_sets: Sequence[CounterSet], agent: AgentInfo
) -> list[tuple[CounterSet, list[CounterSpec]]]:
    """Map counter names to specs for ``agent`` without the library. NOT_FOUND for an
    unknown name (listing the known), UNIMPLEMENTED for a counter the target lacks."""
    out = []
    major = agent.gfx_major
    for cs in counter_sets:
        specs = []
        for name in cs.counters:
            spec = BUILTIN_COUNTERS.get(name)
            if spec is None:
                raise NotFoundError(
                    f"counter {name!r} in set {cs.name!r} is unknown; known counters: "
                    + ", ".join(sorted(BUILTIN_COUNTERS))
                )
            if major < spec.min_gfx_major:
                raise UnimplementedError(
                    f"counter {name!r} needs gfx{spec.min_gfx_major}+; {agent.gfxip} lacks it"
                )
            specs.append(spec)
        out.append((cs, specs))
    return out


_NEEDS_LIBRARY = (
    ProfilingDataFamily.COUNTER_SAMPLES
    | ProfilingDataFamily.COUNTER_RANGES
    | ProfilingDataFamily.EXECUTABLE_TRACES
)


def check_profiling_options(
    options: ProfilingOptions,
    agent: AgentInfo,
    *,
    paths: Iterable[str] = (),
    libhsa_path: str | None = None,
    env: Mapping[str, str] | None = None,
) -> AqlProfileLibrary | None:
    """What the amdgpu device calls from ``profiling_begin``: None when no counter/trace
    family is requested; otherwise the loaded library after every requested counter was
    resolved and validated by the library for ``agent``. UNAVAILABLE (library missing,
    naming what was looked for, or lacking ATT), NOT_FOUND/UNIMPLEMENTED per counter."""
    families = options.effective_families
    if not families & _NEEDS_LIBRARY:
        return None
    resolved = resolve_counter_sets(options.counter_sets, agent)
    lib = load_aqlprofile(paths, libhsa_path=libhsa_path, env=env)
    if families & ProfilingDataFamily.EXECUTABLE_TRACES and not lib.has_att:
        raise UnavailableError(
            f"{lib.path} has no ATT thread-trace functions ({', '.join(_ATT)}); "
            "EXECUTABLE_TRACES needs a newer aqlprofile"
        )
    for cs, specs in resolved:
        for spec in specs:
            if not lib.validate_event(agent, spec.block, spec.event):
                raise UnimplementedError(
                    f"aqlprofile rejects counter {spec.name!r} (set {cs.name!r}) on {agent.gfxip}"
                )
    return lib
