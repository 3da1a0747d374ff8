"""The recorder's stand-ins for executable caches and command buffers, and the payload
builders they share with the device stand-in (``_recording_objects.py``).

Each call is written to the capture, then made on the real object; anything not listed
passes through unrecorded.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Iterable, Sequence

from .._buffer import Buffer
from .._command_buffer import BufferRef, DispatchConfig, constants_bytes
from .._executable import default_parameters
from .._memory import WHOLE_BUFFER
from . import _format as F
from ._format import ObjectType as OT
from ._format import OperationCode as OC
from ._format import PayloadType as PT

__all__ = ["RecordingCommandBuffer", "RecordingExecutableCache", "buffers_of", "dispatch_payload"]

_ANY = (1 << 64) - 1


def _pack(ptype: int, *values: Any) -> bytes:
    return F.PAYLOAD_LAYOUTS[ptype].struct.pack(*values)


class RecordingExecutableCache:
    """Stands in for an executable cache: preparations are recorded with their bytes and
    the reflected functions."""

    def __init__(self, device: Any, real: Any, identifier: str) -> None:
        self.device = device
        self.real = real
        self.cache_id = device.rec._name(real)
        raw = identifier.encode()
        body = _pack(PT.EXECUTABLE_CACHE_OBJECT, len(raw), 0) + raw
        device._op(
            OC.DEVICE_CREATE_EXECUTABLE_CACHE, body, PT.EXECUTABLE_CACHE_OBJECT, rel=self.cache_id
        )
        device._object(OT.EXECUTABLE_CACHE, self.cache_id, body, PT.EXECUTABLE_CACHE_OBJECT)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def prepare(self, format: str, data: Any, *, caching_mode: int = 0, constants: Any = ()) -> Any:
        exe = self.real.prepare(format, data, caching_mode=caching_mode, constants=constants)
        rec = self.device.rec
        eid = rec._name(exe)
        raw = _executable_bytes(data)
        fmt = format.encode()
        consts = struct.pack(f"<{len(tuple(constants))}I", *tuple(constants))
        meta = _function_metadata(exe)
        body = (
            _pack(
                PT.EXECUTABLE_PREPARE,
                _ANY,
                len(raw),
                len(consts) // 4,
                int(caching_mode),
                len(fmt),
                len(meta),
                0,
            )
            + fmt
            + raw
            + consts
            + meta
        )
        self.device._op(
            OC.EXECUTABLE_CACHE_PREPARE_EXECUTABLE,
            body,
            PT.EXECUTABLE_PREPARE,
            rel=eid,
            obj=self.cache_id,
            otype=OT.EXECUTABLE_CACHE,
        )
        self.device._object(OT.EXECUTABLE, eid)
        return exe


def _executable_bytes(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (str, os.PathLike)) and os.path.isfile(data):
        with open(data, "rb") as f:
            return f.read()
    return b""  # e.g. Python kernels: recorded by format only


def _shape(p: Any) -> tuple[int, int, int, int]:
    return (int(p.type), p.size, p.offset, int(p.flags))


def _function_metadata(exe: Any) -> bytes:
    functions, params, names = [], [], []
    for i in range(exe.function_count):
        info = exe.function_info(i)
        name = info.name.encode()
        ws = tuple(info.workgroup_size)
        parameters = info.parameters
        synthesised = default_parameters(info.binding_count, info.constant_count)
        if [_shape(p) for p in parameters] == [_shape(p) for p in synthesised]:
            # Parameters synthesised from the counts alone: the executable reflects none,
            # and IREE's replayer compares the captured count with what it loads.
            parameters = ()
        functions.append(
            F.FUNCTION_METADATA.struct.pack(
                int(info.flags),
                *ws,
                info.constant_count,
                info.binding_count,
                len(parameters),
                len(name),
            )
        )
        for p in parameters:
            params.append(
                F.PARAMETER_METADATA.struct.pack(
                    p.offset & 0xFFFF,
                    int(p.flags) & 0xFFFF,
                    int(p.type) & 0xFF,
                    min(p.size, 255),
                    0,
                )
            )
        names.append(name)
    storage = b"".join(names)
    head = F.EXECUTABLE_METADATA_HEADER.struct.pack(len(functions), len(params), len(storage), 0)
    return head + b"".join(functions) + b"".join(params) + storage


def buffers_of(refs: Iterable[Any]) -> Iterable[Any]:
    for r in refs:
        yield r if isinstance(r, Buffer) else getattr(r, "buffer", None)


def dispatch_payload(
    rec: Any,
    executable: Any,
    function: int | str,
    config: DispatchConfig,
    constants: Any,
    bindings: Sequence[Any],
    flags: int,
    affinity: int,
    wc: int,
    sc: int,
    lists: bytes,
) -> bytes:
    ordinal = function if isinstance(function, int) else executable.lookup_function(function)
    data = constants if isinstance(constants, bytes) else constants_bytes(constants)
    refs = b"".join(rec._ref(b) for b in bindings)
    count_ref = struct.unpack("<QQQII", rec._ref(config.workgroup_count_ref))
    return (
        _pack(
            PT.DISPATCH,
            rec._id_of(executable, "executable"),
            affinity,
            ordinal,
            int(flags),
            *config.workgroup_size,
            *config.workgroup_count,
            *count_ref,
            config.dynamic_workgroup_local_memory,
            0,
            wc,
            sc,
            len(data),
            len(bindings),
        )
        + lists
        + data
        + refs
    )


class RecordingCommandBuffer:
    """Stands in for a command buffer: every command is recorded, then recorded on the
    real one. ``direct_buffers``: buffers named directly (any role), whose host bytes are
    captured at the first submission naming them."""

    def __init__(self, device: Any, real: Any, args: tuple[int, int, int, int]) -> None:
        self.device = device
        self.real = real
        self.direct_buffers: list[Buffer] = []
        self.cb_id = device.rec._name(real)
        body = _pack(PT.COMMAND_BUFFER_OBJECT, *args)
        device._op(OC.DEVICE_CREATE_COMMAND_BUFFER, body, PT.COMMAND_BUFFER_OBJECT, rel=self.cb_id)
        device._object(OT.COMMAND_BUFFER, self.cb_id, body, PT.COMMAND_BUFFER_OBJECT)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _op(self, code: int, body: bytes = b"", ptype: int = 0) -> None:
        self.device._op(code, body, ptype, obj=self.cb_id, otype=OT.COMMAND_BUFFER)

    def _direct(self, *refs: Any) -> None:
        for r in buffers_of(refs):
            if r is not None:
                self.direct_buffers.append(r)

    def begin(self) -> None:
        self.real.begin()
        self._op(OC.COMMAND_BUFFER_BEGIN)

    def end(self) -> None:
        self.real.end()
        self._op(OC.COMMAND_BUFFER_END)

    def begin_debug_group(self, label: str, color: int = 0, location: Any = None) -> None:
        self.real.begin_debug_group(label, color, location)
        self._op(OC.COMMAND_BUFFER_BEGIN_DEBUG_GROUP)

    def end_debug_group(self) -> None:
        self.real.end_debug_group()
        self._op(OC.COMMAND_BUFFER_END_DEBUG_GROUP)

    def execution_barrier(
        self,
        source_stage_mask: int = 0,
        target_stage_mask: int = 0,
        flags: int = 0,
        memory_barriers: Sequence[Any] = (),
        buffer_barriers: Sequence[Any] = (),
    ) -> None:
        self.real.execution_barrier(
            source_stage_mask, target_stage_mask, flags, memory_barriers, buffer_barriers
        )
        body = _pack(
            PT.COMMAND_BUFFER_EXECUTION_BARRIER,
            int(source_stage_mask),
            int(target_stage_mask),
            int(flags),
            0,
            0,
        )
        self._op(OC.COMMAND_BUFFER_EXECUTION_BARRIER, body, PT.COMMAND_BUFFER_EXECUTION_BARRIER)

    def fill_buffer(
        self, target: Any, pattern: Any, pattern_length: int | None = None, flags: int = 0
    ) -> None:
        from .._queue_checks import fill_pattern_bytes

        self.real.fill_buffer(target, pattern, pattern_length, flags)
        self._direct(target)
        data = fill_pattern_bytes(pattern, pattern_length)
        ref = struct.unpack("<QQQII", self.device.rec._ref(target))
        self._op(
            OC.COMMAND_BUFFER_FILL_BUFFER,
            _pack(PT.COMMAND_BUFFER_FILL_BUFFER, *ref, int(flags), 0, len(data)) + data,
            PT.COMMAND_BUFFER_FILL_BUFFER,
        )

    def update_buffer(self, source: Any, source_offset: int, target: Any, flags: int = 0) -> None:
        self.real.update_buffer(source, source_offset, target, flags)
        self._direct(target)
        ref = target if isinstance(target, BufferRef) else BufferRef(target)
        src = memoryview(source).cast("B")
        n = ref.length
        if n == WHOLE_BUFFER:
            n = len(src) - source_offset if ref.buffer is None else ref.resolved_length()
        data = bytes(src[source_offset : source_offset + n])
        ref = BufferRef(ref.buffer, ref.offset, n, ref.slot)
        values = struct.unpack("<QQQII", self.device.rec._ref(ref))
        body = (
            _pack(PT.COMMAND_BUFFER_UPDATE_BUFFER, *values, int(flags), 0, source_offset, len(data))
            + data
        )
        self._op(OC.COMMAND_BUFFER_UPDATE_BUFFER, body, PT.COMMAND_BUFFER_UPDATE_BUFFER)

    def copy_buffer(self, source: Any, target: Any, flags: int = 0) -> None:
        self.real.copy_buffer(source, target, flags)
        self._direct(source, target)
        rec = self.device.rec
        src = struct.unpack("<QQQII", rec._ref(source))
        dst = struct.unpack("<QQQII", rec._ref(target))
        self._op(
            OC.COMMAND_BUFFER_COPY_BUFFER,
            _pack(PT.COMMAND_BUFFER_COPY_BUFFER, *src, *dst, int(flags), 0, 0),
            PT.COMMAND_BUFFER_COPY_BUFFER,
        )

    def dispatch(
        self,
        executable: Any,
        function: int | str,
        config: DispatchConfig,
        constants: Any = b"",
        bindings: Sequence[Any] = (),
        flags: int = 0,
    ) -> None:
        self.real.dispatch(executable, function, config, constants, bindings, flags)
        self._direct(*bindings)
        body = dispatch_payload(
            self.device.rec, executable, function, config, constants, bindings, flags, 0, 0, 0, b""
        )
        self._op(OC.COMMAND_BUFFER_DISPATCH, body, PT.DISPATCH)
