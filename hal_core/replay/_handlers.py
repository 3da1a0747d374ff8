"""The record handlers of the player: one method per replayable operation.

``RecordHandlers`` is the half of ``Player`` that turns one decoded record into hal-core
calls; ``HANDLERS`` maps each operation code to its handler (``skip`` for operations with
nothing to re-execute). See ``_player.py`` for the replay contract.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable

from .._buffer import Buffer
from .._command_buffer import BindingTable, BufferBinding, BufferRef, DispatchConfig
from .._memory import BufferParams, BufferUsage, MemoryAccess, MemoryType
from .._status import DataLossError, InvalidArgumentError, NotFoundError, UnimplementedError
from . import _format as F
from ._format import ObjectType, OperationCode, PayloadType
from ._reader import Record
from ._substitution import Substitution, WorkgroupCount, pick_substitution

__all__ = ["HANDLERS", "WHY_NOT", "RecordHandlers", "skip"]

_ANY = (1 << 64) - 1
# Command-buffer mode bits hal-core knows (ONE_SHOT, ALLOW_INLINE_EXECUTION, UNVALIDATED,
# UNRETAINED); other IREE bits are driver hints with no meaning here.
_MODE_MASK = 0x1 | 0x10 | 0x20 | 0x40
# Dispatch flags that make the workgroup-count reference meaningful.
_INDIRECT_PARAMETERS = 0x1 | 0x2


class RecordHandlers:
    """Object tables and per-record handlers; the caller holds no lock (one thread)."""

    devices: tuple[Any, ...]
    objects: dict[int, Any]
    functions: dict[int, list[int]]
    substitutions: tuple[Substitution, ...]
    file_remap: tuple[tuple[str, str], ...]
    wait_timeout: float
    _file_images: dict[int, bytearray]
    _device_order: list[int]
    _executable_cache: dict[tuple[int, int], tuple[Any, list[int]]]
    _on_scope: Callable[[str, bool], None] | None

    @cached_property
    def workgroup_counts(self) -> dict[int, list[WorkgroupCount | None]]:
        """Executable id -> per captured function, the substitute build's workgroup count
        (None: the captured count); only executables whose substitution gives counts have
        an entry. Prepared executables are cached across runs, and so are their counts."""
        return {}

    # -- object lookup ---------------------------------------------------------------------

    def _get(self, object_id: int, kind: type | tuple[type, ...], what: str) -> Any:
        obj = self.objects.get(object_id)
        if obj is None or not isinstance(obj, kind):
            raise DataLossError(f"{what} object {object_id} was never created by the capture")
        return obj

    def _device(self, object_id: int) -> Any:
        obj = self.objects.get(object_id)
        if obj is None or not hasattr(obj, "queue_execute"):
            raise DataLossError(f"device object {object_id} was never created by the capture")
        return obj

    def _command_buffer(self, object_id: int) -> Any:
        obj = self.objects.get(object_id)
        if obj is None or not hasattr(obj, "dispatch"):
            raise DataLossError(
                f"command buffer object {object_id} was never created by the capture"
            )
        return obj

    def _buffer_id(self, buffer_id: int) -> Buffer:
        return self._get(buffer_id, Buffer, "buffer")

    def _ref(self, ref: dict[str, Any]) -> BufferRef:
        if ref["buffer_id"] == F.OBJECT_ID_NONE:
            return BufferRef.indirect(ref["buffer_slot"], ref["offset"], ref["length"])
        return BufferRef(self._buffer_id(ref["buffer_id"]), ref["offset"], ref["length"])

    def _direct(self, ref: dict[str, Any], what: str) -> tuple[Buffer, int, int]:
        if ref["buffer_id"] == F.OBJECT_ID_NONE:
            raise DataLossError(
                f"{what} names binding slot {ref['buffer_slot']} outside a command buffer"
            )
        buf = self._buffer_id(ref["buffer_id"])
        return buf, ref["offset"], ref["length"]

    def _semaphores(self, items: list[dict[str, Any]]) -> list[tuple[Any, int]]:
        objs = self.objects
        out = []
        for tp in items:
            sem = objs.get(tp["semaphore_id"])
            if sem is None or not hasattr(sem, "signal"):
                raise DataLossError(
                    f"semaphore object {tp['semaphore_id']} was never created by the capture"
                )
            out.append((sem, tp["value"]))
        return out

    def _finish(self, device: Any, affinity: int, signal: list[tuple[Any, int]]) -> None:
        """Flush and wait for the signals, as IREE's executor does after each queue op."""
        device.queue_flush(affinity & _ANY or _ANY)
        timeout = self.wait_timeout
        for sem, value in signal:
            sem.wait(value, timeout=timeout)

    # -- handlers: objects -----------------------------------------------------------------

    def _object(self, rec: Record, p: dict[str, Any]) -> None:
        if rec.object_type == ObjectType.DEVICE:
            index = len(self._device_order)
            if index >= len(self.devices):
                raise InvalidArgumentError(
                    f"the capture uses more than {len(self.devices)} device(s); replay it on a "
                    "device group with as many devices"
                )
            self._device_order.append(rec.object_id)
            self.objects[rec.object_id] = self.devices[index]
        else:
            self.objects[rec.object_id] = self._device(rec.device_id).allocator

    def _scope(self, rec: Record, p: dict[str, Any]) -> None:
        cb = self._on_scope
        if cb is not None:
            cb(p["name"], rec.operation_code == OperationCode.REPLAY_SCOPE_BEGIN)

    def _create_executable_cache(self, rec: Record, p: dict[str, Any]) -> None:
        self.objects[rec.related_object_id] = self._device(rec.object_id).create_executable_cache(
            p["identifier"]
        )

    def _prepare_executable(self, rec: Record, p: dict[str, Any]) -> None:
        cache = self.objects.get(rec.object_id)
        if cache is None or not hasattr(cache, "prepare"):
            raise DataLossError(
                f"executable cache object {rec.object_id} was never created by the capture"
            )
        key = (rec.offset, id(cache.device))
        hit = self._executable_cache.get(key)
        if hit is None:
            hit = self._load_executable(rec, p, cache)
            self._executable_cache[key] = hit
        exe_id = rec.related_object_id
        self.objects[exe_id], self.functions[exe_id] = hit
        counts = self._substitute_counts(exe_id, p)
        if counts is not None:
            self.workgroup_counts[exe_id] = counts
        else:
            self.workgroup_counts.pop(exe_id, None)

    def _substitute_counts(
        self, exe_id: int, p: dict[str, Any]
    ) -> list[WorkgroupCount | None] | None:
        sub = pick_substitution(self.substitutions, exe_id)
        if sub is None:
            return None
        return sub.dispatch_counts([fn["name"] for fn in p["functions"]])

    def _load_executable(self, rec: Record, p: dict[str, Any], cache: Any) -> tuple[Any, list[int]]:
        sub = pick_substitution(self.substitutions, rec.related_object_id)
        fmt = p["format"]
        data: Any = bytes(p["data"])
        origin = "captured"
        if sub is not None:
            fmt = sub.format or fmt
            data = sub.data
            origin = f"substitute {sub.source or type(sub.data).__name__!s} for"
        if not cache.can_prepare(fmt):
            raise UnimplementedError(
                f"{origin} executable {rec.related_object_id} has format {fmt!r}, which "
                f"{cache.device.uri} cannot load (it loads {list(cache.formats())}); substitute "
                "an executable in one of those formats (--substitute ID@FORMAT=PATH)"
            )
        exe = cache.prepare(fmt, data, caching_mode=0, constants=p["constants"])
        ordinals = []
        for i, fn in enumerate(p["functions"]):
            try:
                ordinal = exe.lookup_function(fn["name"])
            except NotFoundError:
                raise NotFoundError(
                    f"{origin} executable {rec.related_object_id} has no function "
                    f"{fn['name']!r} (captured function {i})"
                ) from None
            info = exe.function_info(ordinal)
            if (
                info.binding_count != fn["binding_count"]
                or info.constant_count != fn["constant_count"]
            ):
                raise InvalidArgumentError(
                    f"{origin} executable {rec.related_object_id}: function {fn['name']!r} takes "
                    f"{info.binding_count} bindings and {info.constant_count} constants, the "
                    f"capture dispatches it with {fn['binding_count']} and {fn['constant_count']}"
                )
            ordinals.append(ordinal)
        return exe, ordinals

    def _create_command_buffer(self, rec: Record, p: dict[str, Any]) -> None:
        device = self._device(rec.object_id)
        self.objects[rec.related_object_id] = device.create_command_buffer(
            p["mode"] & _MODE_MASK,
            p["command_categories"],
            p["queue_affinity"],
            p["binding_capacity"],
        )

    def _create_semaphore(self, rec: Record, p: dict[str, Any]) -> None:
        self.objects[rec.related_object_id] = self._device(rec.object_id).create_semaphore(
            p["initial_value"], flags=p["flags"]
        )

    def _create_event(self, rec: Record, p: dict[str, Any]) -> None:
        self.objects[rec.related_object_id] = _Event(p["flags"])

    def _import_file(self, rec: Record, p: dict[str, Any]) -> None:
        device = self._device(rec.object_id)
        kind = p["reference_type"]
        length = p["file_length"]
        access = MemoryAccess(p["access"] & 0x7 or MemoryAccess.READ)
        if kind == F.FileReferenceType.INLINE_BYTES:
            if len(p["reference"]) != length:
                raise DataLossError(
                    f"inline file holds {len(p['reference'])} bytes, expected {length}"
                )
            image = bytearray(p["reference"])
        elif kind == F.FileReferenceType.CAPTURED_RANGES:
            image = bytearray(length)  # filled by the captured bytes of each queue_read
        elif kind == F.FileReferenceType.EXTERNAL_PATH:
            image = bytearray(self._external_file(p))
        else:
            raise UnimplementedError(f"file reference type {kind} is not known to this reader")
        self._file_images[rec.related_object_id] = image
        self.objects[rec.related_object_id] = device.import_file(image, access)

    def _external_file(self, p: dict[str, Any]) -> bytes:
        path = bytes(p["reference"]).decode("utf-8", "replace")
        for old, new in self.file_remap:
            if path.startswith(old):
                path = new + path[len(old) :]
                break
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise NotFoundError(
                f"external file {path!r} referenced by the capture cannot be read ({exc}); "
                "remap its directory with --file-remap CAPTURED=LOCAL"
            ) from None
        if len(data) < p["file_length"]:
            raise DataLossError(
                f"external file {path!r} has {len(data)} bytes, the capture saw {p['file_length']}"
            )
        if p["validation_type"] == F.FileValidationType.CONTENT_DIGEST:
            want = int.from_bytes(p["digest"][:8], "little")
            if _fnv1a64(data[: p["file_length"]]) != want:
                raise DataLossError(f"external file {path!r} does not match the captured digest")
        return data[: p["file_length"]]

    def _allocate_buffer(self, rec: Record, p: dict[str, Any]) -> None:
        allocator = self._get(rec.object_id, object, "allocator")
        self.objects[rec.related_object_id] = allocator.allocate_buffer(
            _params(p), p["allocation_size"]
        )

    def _import_buffer(self, rec: Record, p: dict[str, Any]) -> None:
        if p["external_type"] != F.EXTERNAL_BUFFER_TYPE_HOST_ALLOCATION:
            raise UnimplementedError(
                f"imported buffers of external type {p['external_type']} cannot be replayed "
                "(only host allocations carry their bytes)"
            )
        allocator = self._get(rec.object_id, object, "allocator")
        alloc = p["allocation"]
        params = BufferParams(
            usage=alloc["usage"] | BufferUsage.MAPPING_SCOPED,
            access=alloc["access"] | MemoryAccess.WRITE,
            type=alloc["type"] | MemoryType.HOST_VISIBLE,
            queue_affinity=alloc["queue_affinity"],
            min_alignment=alloc["min_alignment"],
        )
        buf = allocator.allocate_buffer(params, alloc["allocation_size"])
        if len(p["data"]):
            buf.write(p["data"], 0)
        self.objects[rec.related_object_id] = buf

    def _range_data(self, rec: Record, p: dict[str, Any]) -> None:
        if rec.payload_type != PayloadType.BUFFER_RANGE_DATA or not p["data_length"]:
            return  # a read-only unmap carries no bytes
        self._buffer_id(rec.object_id).write(p["data"], p["byte_offset"])

    # -- handlers: queue operations --------------------------------------------------------

    def _queue_alloca(self, rec: Record, p: dict[str, Any]) -> None:
        device = self._device(rec.object_id)
        wait, signal = (
            self._semaphores(p["wait_semaphores"]),
            self._semaphores(p["signal_semaphores"]),
        )
        alloc = p["allocation"]
        buf = device.queue_alloca(
            p["queue_affinity"],
            wait,
            signal,
            _params(alloc),
            alloc["allocation_size"],
            flags=p["flags"],
        )
        self.objects[rec.related_object_id] = buf
        self._finish(device, p["queue_affinity"], signal)

    def _queue_dealloca(self, rec: Record, p: dict[str, Any]) -> None:
        device = self._device(rec.object_id)
        wait, signal = (
            self._semaphores(p["wait_semaphores"]),
            self._semaphores(p["signal_semaphores"]),
        )
        buf, _, _ = self._direct(p["buffer_ref"], "queue_dealloca")
        device.queue_dealloca(p["queue_affinity"], wait, signal, buf, flags=p["flags"])
        self._finish(device, p["queue_affinity"], signal)

    def _queue_fill(self, rec: Record, p: dict[str, Any]) -> None:
        device = self._device(rec.object_id)
        wait, signal = (
            self._semaphores(p["wait_semaphores"]),
            self._semaphores(p["signal_semaphores"]),
        )
        buf, off, length = self._direct(p["target_ref"], "queue_fill")
        device.queue_fill(
            p["queue_affinity"],
            wait,
            signal,
            buf,
            off,
            length,
            bytes(p["pattern"]),
            flags=p["flags"],
        )
        self._finish(device, p["queue_affinity"], signal)

    def _queue_update(self, rec: Record, p: dict[str, Any]) -> None:
        device = self._device(rec.object_id)
        wait, signal = (
            self._semaphores(p["wait_semaphores"]),
            self._semaphores(p["signal_semaphores"]),
        )
        buf, off, length = self._direct(p["target_ref"], "queue_update")
        data = bytes(p["data"])
        if length == F_WHOLE:
            length = len(data)
        device.queue_update(
            p["queue_affinity"], wait, signal, data, 0, buf, off, length, flags=p["flags"]
        )
        self._finish(device, p["queue_affinity"], signal)

    def _queue_copy(self, rec: Record, p: dict[str, Any]) -> None:
        device = self._device(rec.object_id)
        wait, signal = (
            self._semaphores(p["wait_semaphores"]),
            self._semaphores(p["signal_semaphores"]),
        )
        src, soff, slen = self._direct(p["source_ref"], "queue_copy source")
        dst, doff, _ = self._direct(p["target_ref"], "queue_copy target")
        device.queue_copy(
            p["queue_affinity"], wait, signal, src, soff, dst, doff, slen, flags=p["flags"]
        )
        self._finish(device, p["queue_affinity"], signal)

    def _queue_read(self, rec: Record, p: dict[str, Any]) -> None:
        device = self._device(rec.object_id)
        wait, signal = (
            self._semaphores(p["wait_semaphores"]),
            self._semaphores(p["signal_semaphores"]),
        )
        file = self._get(p["source_file_id"], object, "file")
        captured = p["data"]
        if len(captured):
            image = self._file_images.get(p["source_file_id"])
            start = p["source_offset"]
            if image is None or start + len(captured) > len(image):
                raise DataLossError("captured read bytes lie outside the captured file")
            image[start : start + len(captured)] = captured
        buf, off, length = self._direct(p["target_ref"], "queue_read")
        device.queue_read(
            p["queue_affinity"],
            wait,
            signal,
            file,
            p["source_offset"],
            buf,
            off,
            length,
            flags=p["flags"],
        )
        self._finish(device, p["queue_affinity"], signal)

    def _queue_write(self, rec: Record, p: dict[str, Any]) -> None:
        device = self._device(rec.object_id)
        wait, signal = (
            self._semaphores(p["wait_semaphores"]),
            self._semaphores(p["signal_semaphores"]),
        )
        file = self._get(p["target_file_id"], object, "file")
        buf, off, length = self._direct(p["source_ref"], "queue_write")
        device.queue_write(
            p["queue_affinity"],
            wait,
            signal,
            buf,
            off,
            file,
            p["target_offset"],
            length,
            flags=p["flags"],
        )
        self._finish(device, p["queue_affinity"], signal)

    def _queue_dispatch(self, rec: Record, p: dict[str, Any]) -> None:
        device = self._device(rec.object_id)
        wait, signal = (
            self._semaphores(p["wait_semaphores"]),
            self._semaphores(p["signal_semaphores"]),
        )
        exe, function, config = self._dispatch_target(p)
        bindings = [self._ref(b) for b in p["bindings"]]
        device.queue_dispatch(
            p["queue_affinity"],
            wait,
            signal,
            exe,
            function,
            config,
            bytes(p["constants"]),
            bindings,
            p["flags"],
        )
        self._finish(device, p["queue_affinity"], signal)

    def _queue_execute(self, rec: Record, p: dict[str, Any]) -> None:
        device = self._device(rec.object_id)
        wait, signal = (
            self._semaphores(p["wait_semaphores"]),
            self._semaphores(p["signal_semaphores"]),
        )
        cb_id = p["command_buffer_id"]
        if cb_id == F.OBJECT_ID_NONE:
            if p["bindings"]:
                raise DataLossError(
                    "a queue barrier (execute without command buffer) carries bindings"
                )
            device.queue_barrier(p["queue_affinity"], wait, signal, p["flags"])
        else:
            cb = self._command_buffer(cb_id)
            table = BindingTable(
                None
                if b["buffer_id"] == F.OBJECT_ID_NONE
                else BufferBinding(self._buffer_id(b["buffer_id"]), b["offset"], b["length"])
                for b in p["bindings"]
            )
            device.queue_execute(p["queue_affinity"], wait, signal, cb, table, p["flags"])
        self._finish(device, p["queue_affinity"], signal)

    def _queue_flush(self, rec: Record, p: dict[str, Any]) -> None:
        self._device(rec.object_id).queue_flush(_ANY)

    # -- handlers: command buffers ---------------------------------------------------------

    def _cb(self, rec: Record) -> Any:
        return self._command_buffer(rec.object_id)

    def _cb_begin(self, rec: Record, p: dict[str, Any]) -> None:
        self._cb(rec).begin()

    def _cb_end(self, rec: Record, p: dict[str, Any]) -> None:
        self._cb(rec).end()

    def _cb_barrier(self, rec: Record, p: dict[str, Any]) -> None:
        cb = self._cb(rec)
        for b in p.get("buffer_barriers", ()):
            self._ref(b["buffer_ref"])  # a barrier naming an unknown buffer is corrupt
        cb.execution_barrier(p["source_stage_mask"], p["target_stage_mask"], p["flags"])

    def _cb_event(self, rec: Record, p: dict[str, Any]) -> None:
        self._get(p["event_id"], _Event, "event")
        self._cb(rec)  # signal/reset: the matching wait_events carries the ordering

    def _cb_wait_events(self, rec: Record, p: dict[str, Any]) -> None:
        for event_id in p["event_ids"]:
            self._get(event_id, _Event, "event")
        self._cb(rec).execution_barrier(p["source_stage_mask"], p["target_stage_mask"], 0)

    def _cb_fill(self, rec: Record, p: dict[str, Any]) -> None:
        self._cb(rec).fill_buffer(self._ref(p["target_ref"]), bytes(p["pattern"]), flags=p["flags"])

    def _cb_update(self, rec: Record, p: dict[str, Any]) -> None:
        ref = self._ref(p["target_ref"])
        self._cb(rec).update_buffer(bytes(p["data"]), 0, ref, flags=p["flags"])

    def _cb_copy(self, rec: Record, p: dict[str, Any]) -> None:
        self._cb(rec).copy_buffer(
            self._ref(p["source_ref"]), self._ref(p["target_ref"]), flags=p["flags"]
        )

    def _cb_dispatch(self, rec: Record, p: dict[str, Any]) -> None:
        if p["wait_semaphores"] or p["signal_semaphores"]:
            raise UnimplementedError("a command-buffer dispatch cannot carry semaphore lists")
        exe, function, config = self._dispatch_target(p)
        self._cb(rec).dispatch(
            exe,
            function,
            config,
            bytes(p["constants"]),
            tuple(self._ref(b) for b in p["bindings"]),
            p["flags"],
        )

    def _dispatch_target(self, p: dict[str, Any]) -> tuple[Any, int, DispatchConfig]:
        exe_id = p["executable_id"]
        ordinals = self.functions.get(exe_id)
        if ordinals is None:
            raise DataLossError(f"executable object {exe_id} was never created by the capture")
        ordinal = p["function_ordinal"]
        if ordinal >= len(ordinals):
            raise DataLossError(
                f"dispatch of function {ordinal} of executable {exe_id}, which has {len(ordinals)}"
            )
        count_ref = None
        if p["flags"] & _INDIRECT_PARAMETERS:
            count_ref = self._ref(p["workgroup_count_ref"])
        workgroups = tuple(p["workgroup_count"])
        counts = self.workgroup_counts.get(exe_id)
        if counts is not None and counts[ordinal] is not None:
            workgroups = counts[ordinal]
        config = DispatchConfig(
            workgroups,
            count_ref,
            tuple(p["workgroup_size"]),
            p["dynamic_workgroup_local_memory"],
        )
        return self.objects[exe_id], ordinals[ordinal], config


F_WHOLE = (1 << 64) - 1


class _Event:
    """A captured event: hal-core lowers event waits to execution barriers."""

    __slots__ = ("flags",)

    def __init__(self, flags: int) -> None:
        self.flags = flags


def skip(self: RecordHandlers, rec: Record, p: dict[str, Any]) -> None:
    """Operations with nothing to re-execute (queries, hints, markers)."""


def _params(p: dict[str, Any]) -> BufferParams:
    """The captured allocation params, built once per record (the plan's payload dicts
    live as long as the player, and every run asks again)."""
    params = p.get("_params")
    if params is None:
        params = p["_params"] = BufferParams(
            usage=p["usage"],
            access=p["access"],
            type=p["type"],
            queue_affinity=p["queue_affinity"],
            min_alignment=p["min_alignment"],
        )
    return params


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


WHY_NOT: dict[int, str] = {
    OperationCode.DEVICE_QUEUE_HOST_CALL: " (the host callback is not part of the capture)",
    OperationCode.COMMAND_BUFFER_COLLECTIVE: " (collectives are not implemented by hal-core)",
    OperationCode.DEVICE_CREATE_CHANNEL: " (collective channels are not implemented by hal-core)",
    OperationCode.ALLOCATOR_EXPORT_BUFFER: " (exported handles do not survive the capture)",
}

O = OperationCode  # noqa: E741
HANDLERS: dict[int, Any] = {
    O.REPLAY_SCOPE_BEGIN: RecordHandlers._scope,
    O.REPLAY_SCOPE_END: RecordHandlers._scope,
    O.DEVICE_CREATE_EXECUTABLE_CACHE: RecordHandlers._create_executable_cache,
    O.EXECUTABLE_CACHE_PREPARE_EXECUTABLE: RecordHandlers._prepare_executable,
    O.DEVICE_CREATE_COMMAND_BUFFER: RecordHandlers._create_command_buffer,
    O.DEVICE_CREATE_SEMAPHORE: RecordHandlers._create_semaphore,
    O.DEVICE_CREATE_EVENT: RecordHandlers._create_event,
    O.DEVICE_IMPORT_FILE: RecordHandlers._import_file,
    O.ALLOCATOR_ALLOCATE_BUFFER: RecordHandlers._allocate_buffer,
    O.ALLOCATOR_IMPORT_BUFFER: RecordHandlers._import_buffer,
    O.BUFFER_UNMAP_RANGE: RecordHandlers._range_data,
    O.BUFFER_FLUSH_RANGE: RecordHandlers._range_data,
    O.DEVICE_QUEUE_ALLOCA: RecordHandlers._queue_alloca,
    O.DEVICE_QUEUE_DEALLOCA: RecordHandlers._queue_dealloca,
    O.DEVICE_QUEUE_FILL: RecordHandlers._queue_fill,
    O.DEVICE_QUEUE_UPDATE: RecordHandlers._queue_update,
    O.DEVICE_QUEUE_COPY: RecordHandlers._queue_copy,
    O.DEVICE_QUEUE_READ: RecordHandlers._queue_read,
    O.DEVICE_QUEUE_WRITE: RecordHandlers._queue_write,
    O.DEVICE_QUEUE_DISPATCH: RecordHandlers._queue_dispatch,
    O.DEVICE_QUEUE_EXECUTE: RecordHandlers._queue_execute,
    O.DEVICE_QUEUE_FLUSH: RecordHandlers._queue_flush,
    O.COMMAND_BUFFER_BEGIN: RecordHandlers._cb_begin,
    O.COMMAND_BUFFER_END: RecordHandlers._cb_end,
    O.COMMAND_BUFFER_EXECUTION_BARRIER: RecordHandlers._cb_barrier,
    O.COMMAND_BUFFER_SIGNAL_EVENT: RecordHandlers._cb_event,
    O.COMMAND_BUFFER_RESET_EVENT: RecordHandlers._cb_event,
    O.COMMAND_BUFFER_WAIT_EVENTS: RecordHandlers._cb_wait_events,
    O.COMMAND_BUFFER_FILL_BUFFER: RecordHandlers._cb_fill,
    O.COMMAND_BUFFER_UPDATE_BUFFER: RecordHandlers._cb_update,
    O.COMMAND_BUFFER_COPY_BUFFER: RecordHandlers._cb_copy,
    O.COMMAND_BUFFER_DISPATCH: RecordHandlers._cb_dispatch,
}
for _op in (
    O.DEVICE_TRIM,
    O.DEVICE_QUERY_I64,
    O.DEVICE_QUERY_CAPABILITIES,
    O.DEVICE_REFINE_TOPOLOGY_EDGE,
    O.DEVICE_ASSIGN_TOPOLOGY_INFO,
    O.DEVICE_QUERY_QUEUE_POOL_BACKEND,
    O.DEVICE_PROFILING_BEGIN,
    O.DEVICE_PROFILING_FLUSH,
    O.DEVICE_PROFILING_END,
    O.DEVICE_EXTERNAL_CAPTURE_BEGIN,
    O.DEVICE_EXTERNAL_CAPTURE_END,
    O.ALLOCATOR_TRIM,
    O.ALLOCATOR_QUERY_MEMORY_HEAPS,
    O.BUFFER_MAP_RANGE,
    O.BUFFER_INVALIDATE_RANGE,
    O.COMMAND_BUFFER_BEGIN_DEBUG_GROUP,
    O.COMMAND_BUFFER_END_DEBUG_GROUP,
    O.COMMAND_BUFFER_ADVISE_BUFFER,
    O.EXECUTABLE_CACHE_INFER_FORMAT,
    O.EXECUTABLE_CACHE_CAN_PREPARE_FORMAT,
    O.EXECUTABLE_FUNCTION_COUNT,
    O.EXECUTABLE_FUNCTION_INFO,
    O.EXECUTABLE_FUNCTION_PARAMETERS,
    O.EXECUTABLE_LOOKUP_FUNCTION_BY_NAME,
):
    HANDLERS[_op] = skip
del _op
