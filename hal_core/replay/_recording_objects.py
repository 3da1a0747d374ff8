"""The recorder's stand-ins for a device and its allocator: each call is written to the
capture, then made on the real object (caches and command buffers: ``_recording_parts``).

Arguments are those of the real objects (see ``hal_core.Device`` and friends); anything
not listed here passes through unrecorded (queries, properties). Objects handed back are
the real ones (buffers, semaphores, executables) except command buffers and caches, whose
stand-ins record what is done to them.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Sequence

from .._buffer import Buffer
from .._command_buffer import BindingTable, BufferRef, DispatchConfig
from .._memory import WHOLE_BUFFER, BufferParams, MemoryAccess
from . import _format as F
from ._format import ObjectType as OT
from ._format import OperationCode as OC
from ._format import PayloadType as PT
from ._format import RecordType as RT
from ._recording_parts import (
    RecordingCommandBuffer,
    RecordingExecutableCache,
    buffers_of,
    dispatch_payload,
)

__all__ = ["RecordingAllocator", "RecordingDevice"]

_ANY = (1 << 64) - 1
_PAIR = Sequence[tuple[Any, int]]


def _pack(ptype: int, *values: Any) -> bytes:
    return F.PAYLOAD_LAYOUTS[ptype].struct.pack(*values)


def _alloc_fields(params: BufferParams | None, size: int) -> tuple[int, ...]:
    p = params if params is not None else BufferParams()
    return (
        size,
        int(p.queue_affinity),
        p.min_alignment,
        int(p.usage),
        int(p.type),
        int(p.access),
        0,
        0,
    )


def _buffer_object(buf: Buffer) -> bytes:
    return _pack(
        PT.BUFFER_OBJECT,
        buf.allocation_size,
        buf.byte_offset,
        buf.byte_length,
        int(buf.queue_affinity),
        int(buf.placement_flags),
        int(buf.memory_type),
        int(buf.allowed_usage),
        int(buf.allowed_access),
        0,
        0,
    )


class RecordingDevice:
    """Stands in for one device of a ``Recorder``."""

    def __init__(self, rec: Any, real: Any) -> None:
        self.rec = rec
        self.real = real
        self.device_id = rec._new_id()
        rec.writer.record(RT.OBJECT, object_type=OT.DEVICE, object_id=self.device_id)
        self.allocator = RecordingAllocator(self, real.allocator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _op(
        self,
        code: int,
        body: bytes = b"",
        ptype: int = 0,
        rel: int = 0,
        obj: int = 0,
        otype: int = OT.DEVICE,
    ) -> None:
        self.rec.writer.record(
            RT.OPERATION,
            body,
            payload_type=ptype,
            object_type=otype,
            operation_code=code,
            device_id=self.device_id,
            object_id=obj or self.device_id,
            related_object_id=rel,
        )

    def _object(self, otype: int, oid: int, body: bytes = b"", ptype: int = 0) -> None:
        self.rec.writer.record(
            RT.OBJECT,
            body,
            payload_type=ptype,
            object_type=otype,
            device_id=self.device_id,
            object_id=oid,
        )

    def _lists(self, wait: _PAIR, signal: _PAIR) -> tuple[int, int, bytes]:
        return len(wait), len(signal), self.rec._timepoints(wait) + self.rec._timepoints(signal)

    # -- factories -------------------------------------------------------------------------

    def create_semaphore(self, initial_value: int = 0, *, flags: int = 0) -> Any:
        sem = self.real.create_semaphore(initial_value, flags=flags)
        sid = self.rec._name(sem)
        body = _pack(PT.SEMAPHORE_OBJECT, _ANY, initial_value, int(flags), 0)
        self._op(OC.DEVICE_CREATE_SEMAPHORE, body, PT.SEMAPHORE_OBJECT, rel=sid)
        self._object(OT.SEMAPHORE, sid, body, PT.SEMAPHORE_OBJECT)
        return sem

    def create_command_buffer(
        self, mode: int = 0, categories: int = 3, affinity: int = _ANY, binding_capacity: int = 0
    ) -> "RecordingCommandBuffer":
        real = self.real.create_command_buffer(mode, categories, affinity, binding_capacity)
        return RecordingCommandBuffer(
            self, real, (int(mode), int(categories), int(affinity), binding_capacity)
        )

    def create_executable_cache(self, identifier: str = "") -> "RecordingExecutableCache":
        return RecordingExecutableCache(
            self, self.real.create_executable_cache(identifier), identifier
        )

    def import_file(self, source: Any, access: MemoryAccess = MemoryAccess.READ) -> Any:
        """Files are captured inline: host memory as given, a descriptor read whole."""
        if isinstance(source, int) or hasattr(source, "fileno"):
            fd = source if isinstance(source, int) else source.fileno()
            data = os.pread(fd, os.fstat(fd).st_size, 0)
        else:
            data = bytes(memoryview(source).cast("B"))
        file = self.real.import_file(source, access)
        fid = self.rec._name(file)
        body = (
            _pack(
                PT.FILE_OBJECT,
                _ANY,
                len(data),
                0,
                0,
                0,
                len(data),
                int(access),
                0,
                0,
                F.FileReferenceType.INLINE_BYTES,
                F.FileValidationType.NONE,
                0,
                0,
                0,
                b"",
            )
            + data
        )
        self._op(OC.DEVICE_IMPORT_FILE, body, PT.FILE_OBJECT, rel=fid)
        self._object(OT.FILE, fid, body, PT.FILE_OBJECT)
        return file

    # -- queue operations ------------------------------------------------------------------

    def queue_alloca(
        self,
        affinity: int,
        wait: _PAIR,
        signal: _PAIR,
        params: Any,
        allocation_size: int,
        *,
        pool: Any = None,
        flags: int = 0,
    ) -> Buffer:
        buf = self.real.queue_alloca(
            affinity, wait, signal, params, allocation_size, pool=pool, flags=flags
        )
        oid = self.rec._new_id()
        self.rec._buffers[buf] = oid
        wc, sc, lists = self._lists(wait, signal)
        body = (
            _pack(
                PT.DEVICE_QUEUE_ALLOCA,
                *_alloc_fields(params, allocation_size),
                int(affinity),
                int(flags),
                wc,
                sc,
            )
            + lists
        )
        self._op(OC.DEVICE_QUEUE_ALLOCA, body, PT.DEVICE_QUEUE_ALLOCA, rel=oid)
        self._object(OT.BUFFER, oid, _buffer_object(buf), PT.BUFFER_OBJECT)
        return buf

    def queue_dealloca(
        self, affinity: int, wait: _PAIR, signal: _PAIR, buffer: Buffer, *, flags: int = 0
    ) -> None:
        wc, sc, lists = self._lists(wait, signal)
        body = (
            _pack(
                PT.DEVICE_QUEUE_DEALLOCA,
                *self._ref_values(buffer),
                int(affinity),
                int(flags),
                wc,
                sc,
            )
            + lists
        )
        self._op(
            OC.DEVICE_QUEUE_DEALLOCA,
            body,
            PT.DEVICE_QUEUE_DEALLOCA,
            rel=self.rec._buffer_id(buffer)[0],
        )
        self.real.queue_dealloca(affinity, wait, signal, buffer, flags=flags)

    def _ref_values(
        self, buffer: Buffer, offset: int = 0, length: int = WHOLE_BUFFER
    ) -> tuple[int, ...]:
        return struct.unpack("<QQQII", self.rec._range_ref(buffer, offset, length))

    def queue_fill(
        self,
        affinity: int,
        wait: _PAIR,
        signal: _PAIR,
        target: Buffer,
        target_offset: int,
        length: int,
        pattern: Any,
        *,
        pattern_length: int | None = None,
        flags: int = 0,
    ) -> None:
        from .._queue_checks import fill_pattern_bytes

        self.rec._capture_contents((target,))
        data = fill_pattern_bytes(pattern, pattern_length)
        wc, sc, lists = self._lists(wait, signal)
        ref = self._ref_values(target, target_offset, length)
        body = (
            _pack(PT.DEVICE_QUEUE_FILL, *ref, int(affinity), int(flags), wc, sc, len(data))
            + lists
            + data
        )
        self._op(OC.DEVICE_QUEUE_FILL, body, PT.DEVICE_QUEUE_FILL)
        self.real.queue_fill(
            affinity,
            wait,
            signal,
            target,
            target_offset,
            length,
            pattern,
            pattern_length=pattern_length,
            flags=flags,
        )

    def queue_update(
        self,
        affinity: int,
        wait: _PAIR,
        signal: _PAIR,
        source: Any,
        source_offset: int,
        target: Buffer,
        target_offset: int,
        length: int,
        *,
        flags: int = 0,
    ) -> None:
        self.rec._capture_contents((target,))
        src = memoryview(source).cast("B")
        n = len(src) - source_offset if length == WHOLE_BUFFER else length
        data = bytes(src[source_offset : source_offset + n])
        wc, sc, lists = self._lists(wait, signal)
        ref = self._ref_values(target, target_offset, n)
        body = (
            _pack(
                PT.DEVICE_QUEUE_UPDATE,
                *ref,
                int(affinity),
                int(flags),
                source_offset,
                len(data),
                wc,
                sc,
            )
            + lists
            + data
        )
        self._op(OC.DEVICE_QUEUE_UPDATE, body, PT.DEVICE_QUEUE_UPDATE)
        self.real.queue_update(
            affinity,
            wait,
            signal,
            source,
            source_offset,
            target,
            target_offset,
            length,
            flags=flags,
        )

    def queue_copy(
        self,
        affinity: int,
        wait: _PAIR,
        signal: _PAIR,
        source: Buffer,
        source_offset: int,
        target: Buffer,
        target_offset: int,
        length: int,
        *,
        flags: int = 0,
    ) -> None:
        self.rec._capture_contents((source, target))
        wc, sc, lists = self._lists(wait, signal)
        n = source.byte_length - source_offset if length == WHOLE_BUFFER else length
        body = (
            _pack(
                PT.DEVICE_QUEUE_COPY,
                *self._ref_values(source, source_offset, n),
                *self._ref_values(target, target_offset, n),
                int(affinity),
                int(flags),
                wc,
                sc,
            )
            + lists
        )
        self._op(OC.DEVICE_QUEUE_COPY, body, PT.DEVICE_QUEUE_COPY)
        self.real.queue_copy(
            affinity,
            wait,
            signal,
            source,
            source_offset,
            target,
            target_offset,
            length,
            flags=flags,
        )

    def queue_read(
        self,
        affinity: int,
        wait: _PAIR,
        signal: _PAIR,
        source_file: Any,
        source_offset: int,
        target: Buffer,
        target_offset: int,
        length: int,
        *,
        flags: int = 0,
    ) -> None:
        self.rec._capture_contents((target,))
        wc, sc, lists = self._lists(wait, signal)
        fid = self.rec._id_of(source_file, "file")
        ref = self._ref_values(target, target_offset, length)
        body = (
            _pack(
                PT.DEVICE_QUEUE_READ, fid, source_offset, *ref, int(affinity), int(flags), 0, wc, sc
            )
            + lists
        )
        self._op(OC.DEVICE_QUEUE_READ, body, PT.DEVICE_QUEUE_READ)
        self.real.queue_read(
            affinity,
            wait,
            signal,
            source_file,
            source_offset,
            target,
            target_offset,
            length,
            flags=flags,
        )

    def queue_write(
        self,
        affinity: int,
        wait: _PAIR,
        signal: _PAIR,
        source: Buffer,
        source_offset: int,
        target_file: Any,
        target_offset: int,
        length: int,
        *,
        flags: int = 0,
    ) -> None:
        self.rec._capture_contents((source,))
        wc, sc, lists = self._lists(wait, signal)
        fid = self.rec._id_of(target_file, "file")
        ref = self._ref_values(source, source_offset, length)
        body = (
            _pack(
                PT.DEVICE_QUEUE_WRITE, *ref, fid, target_offset, int(affinity), int(flags), wc, sc
            )
            + lists
        )
        self._op(OC.DEVICE_QUEUE_WRITE, body, PT.DEVICE_QUEUE_WRITE)
        self.real.queue_write(
            affinity,
            wait,
            signal,
            source,
            source_offset,
            target_file,
            target_offset,
            length,
            flags=flags,
        )

    def queue_dispatch(
        self,
        affinity: int,
        wait: _PAIR,
        signal: _PAIR,
        executable: Any,
        function: int | str,
        config: DispatchConfig,
        constants: Any = b"",
        bindings: Sequence[Any] = (),
        flags: int = 0,
    ) -> None:
        self.rec._capture_contents(buffers_of(bindings))
        wc, sc, lists = self._lists(wait, signal)
        body = dispatch_payload(
            self.rec,
            executable,
            function,
            config,
            constants,
            bindings,
            flags,
            int(affinity),
            wc,
            sc,
            lists,
        )
        self._op(OC.DEVICE_QUEUE_DISPATCH, body, PT.DISPATCH)
        self.real.queue_dispatch(
            affinity, wait, signal, executable, function, config, constants, bindings, flags
        )

    def queue_execute(
        self,
        affinity: int,
        wait: _PAIR,
        signal: _PAIR,
        command_buffer: Any,
        binding_table: Any = None,
        flags: int = 0,
    ) -> None:
        table = BindingTable(binding_table if binding_table is not None else ())
        refs = []
        for b in table.bindings:
            if b is None or b.buffer is None:
                refs.append(self.rec._ref(None))
            else:
                refs.append(self.rec._ref(BufferRef(b.buffer, b.offset, b.length)))
        real_cb = None
        cb_id = 0
        if command_buffer is not None:
            real_cb = getattr(command_buffer, "real", command_buffer)
            cb_id = self.rec._id_of(real_cb, "command buffer")
            self.rec._capture_contents(getattr(command_buffer, "direct_buffers", ()))
        self.rec._capture_contents(b.buffer for b in table.bindings if b is not None)
        wc, sc, lists = self._lists(wait, signal)
        body = (
            _pack(PT.DEVICE_QUEUE_EXECUTE, cb_id, int(affinity), int(flags), wc, sc, len(refs))
            + lists
            + b"".join(refs)
        )
        self._op(OC.DEVICE_QUEUE_EXECUTE, body, PT.DEVICE_QUEUE_EXECUTE, rel=cb_id)
        self.real.queue_execute(affinity, wait, signal, real_cb, table, flags)

    def queue_barrier(
        self, affinity: int = _ANY, wait: _PAIR = (), signal: _PAIR = (), flags: int = 0
    ) -> None:
        self.queue_execute(affinity, wait, signal, None, None, flags)

    def queue_flush(self, affinity: int = _ANY) -> None:
        self._op(OC.DEVICE_QUEUE_FLUSH)
        self.real.queue_flush(affinity)

    def queue_host_call(self, *args: Any, **kwargs: Any) -> Any:
        """Run, and say in the capture that it cannot be replayed (the callback is not
        data)."""
        self.rec.writer.record(
            RT.UNSUPPORTED,
            operation_code=OC.DEVICE_QUEUE_HOST_CALL,
            object_type=OT.DEVICE,
            device_id=self.device_id,
            object_id=self.device_id,
        )
        return self.real.queue_host_call(*args, **kwargs)


class RecordingAllocator:
    """Stands in for a device's allocator: allocations are recorded."""

    def __init__(self, device: RecordingDevice, real: Any) -> None:
        self.device = device
        self.real = real
        self.allocator_id = device.rec._new_id()
        device.rec.writer.record(
            RT.OBJECT,
            object_type=OT.ALLOCATOR,
            device_id=device.device_id,
            object_id=self.allocator_id,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def allocate_buffer(self, params: BufferParams | None, allocation_size: int) -> Buffer:
        buf = self.real.allocate_buffer(params, allocation_size)
        rec = self.device.rec
        oid = rec._new_id()
        rec._buffers[buf] = oid
        body = _pack(PT.ALLOCATOR_ALLOCATE_BUFFER, *_alloc_fields(params, allocation_size))
        self.device._op(
            OC.ALLOCATOR_ALLOCATE_BUFFER,
            body,
            PT.ALLOCATOR_ALLOCATE_BUFFER,
            rel=oid,
            obj=self.allocator_id,
            otype=OT.ALLOCATOR,
        )
        self.device._object(OT.BUFFER, oid, _buffer_object(buf), PT.BUFFER_OBJECT)
        return buf
