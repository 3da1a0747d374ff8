"""Recording hal-core programs into ``.ireereplay`` captures that IREE's tools read.

``Recorder(device, path)`` wraps a device (or several: a sequence or a ``DeviceGroup``'s
devices, all written to one stream) and hands out recording stand-ins: use
``recorder.device`` where the program used the device. Every call through the stand-ins
is written as IREE's recorder writes it (object ids, payloads, semaphore lists, binding
tables) and then made on the real device; the real device, and programs that are not
recorded, pay nothing for it.

What is captured so the capture replays hermetically:

* buffers from ``allocator.allocate_buffer`` / ``queue_alloca``; the bytes of a
  host-visible buffer are captured when a queue operation first names it, as source or
  target (the usual "upload, then use" order). Host writes to it after that are only seen
  when they go through ``recorder.write_buffer``; ``recorder.read_buffer`` reads results
  back and marks the buffer as a program output (a mapped read, as IREE records it).
* executables: format, bytes (``data`` given as bytes or a path; other objects, such as
  Python kernels, are recorded with no bytes: dumpable, not replayable without
  substitution) and the reflected functions (names, counts, workgroup size, parameters).
* command buffers with every command, semaphores, queue operations, files imported from
  host memory (inline bytes).

Not captured: host-side ``Semaphore.signal`` (the format has no such record, as in IREE);
``queue_host_call`` is written as an UNSUPPORTED record and still run.

Thread-safety: as thread-safe as the device; records are serialised by the writer.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import weakref
from typing import Any, Iterable, Iterator, Sequence

from .._buffer import Buffer
from .._command_buffer import BufferRef
from .._memory import WHOLE_BUFFER, BufferUsage, MemoryAccess, MemoryType
from .._status import InvalidArgumentError
from . import _format as F
from ._format import ObjectType as OT
from ._format import OperationCode as OC
from ._format import PayloadType as PT
from ._format import RecordType as RT
from ._recording_objects import RecordingDevice
from ._writer import CaptureWriter

__all__ = ["Recorder"]

_ANY = (1 << 64) - 1
_PLACEMENT_ASYNC = 1


def _pack(ptype: int, *values: Any) -> bytes:
    return F.PAYLOAD_LAYOUTS[ptype].struct.pack(*values)


class Recorder:
    """Records everything done through ``recorder.device`` / ``recorder.devices`` into
    ``path``. Close it (or leave its ``with`` block) to finish the file."""

    def __init__(self, devices: Any, path: str | os.PathLike[str]) -> None:
        if hasattr(devices, "devices") and not hasattr(devices, "queue_execute"):
            devices = devices.devices
        real = (devices,) if hasattr(devices, "queue_execute") else tuple(devices)
        if not real:
            raise InvalidArgumentError("a recorder needs at least one device")
        self.writer = CaptureWriter(path)
        self._ids = itertools.count(1)
        self._buffers: weakref.WeakKeyDictionary[Buffer, int] = weakref.WeakKeyDictionary()
        self._captured: weakref.WeakSet[Buffer] = weakref.WeakSet()
        self._objects: dict[int, int] = {}  # id(object) -> object id for non-buffers
        self._keep: list[Any] = []  # objects named by id(): kept alive so ids stay unique
        self.writer.record(RT.SESSION)
        self.devices = tuple(RecordingDevice(self, d) for d in real)
        self.device = self.devices[0]

    # -- ids -------------------------------------------------------------------------------

    def _new_id(self) -> int:
        return next(self._ids)

    def _name(self, obj: Any) -> int:
        """A new object id for ``obj`` (not a buffer)."""
        oid = self._new_id()
        self._objects[id(obj)] = oid
        self._keep.append(obj)
        return oid

    def _id_of(self, obj: Any, what: str) -> int:
        oid = self._objects.get(id(obj))
        if oid is None:
            raise InvalidArgumentError(
                f"{what} {obj!r} was not created through the recorder; create it with "
                "recorder.device so the capture can re-create it"
            )
        return oid

    def _buffer_id(self, buffer: Buffer) -> tuple[int, int]:
        """(object id of the root allocation, byte offset of ``buffer`` within it)."""
        root = buffer.allocated_buffer
        oid = self._buffers.get(root)
        if oid is None:
            raise InvalidArgumentError(
                f"buffer {buffer!r} was not allocated through the recorder; allocate it with "
                "recorder.device.allocator so the capture can re-create it"
            )
        return oid, buffer.byte_offset

    def _ref(self, ref: Any) -> bytes:
        if isinstance(ref, Buffer):
            ref = BufferRef(ref)
        if ref is None:
            return F.BUFFER_REF.struct.pack(0, 0, 0, 0, 0)
        if ref.buffer is None:
            return F.BUFFER_REF.struct.pack(0, ref.offset, ref.length, ref.slot, 0)
        oid, base = self._buffer_id(ref.buffer)
        length = ref.length
        if length == WHOLE_BUFFER:
            length = ref.buffer.byte_length - ref.offset
        return F.BUFFER_REF.struct.pack(oid, base + ref.offset, length, 0, 0)

    def _range_ref(self, buffer: Buffer, offset: int, length: int) -> bytes:
        if length == WHOLE_BUFFER:
            length = buffer.byte_length - offset
        return self._ref(BufferRef(buffer, offset, length))

    def _timepoints(self, pairs: Sequence[tuple[Any, int]]) -> bytes:
        return b"".join(F.TIMEPOINT.struct.pack(self._id_of(s, "semaphore"), v) for s, v in pairs)

    # -- host bytes ------------------------------------------------------------------------

    def _capture_contents(self, buffers: Iterable[Any]) -> None:
        """Record the bytes of each host-visible buffer that no queue operation has named
        yet, in any role. Called before each recorded queue operation with every buffer it
        names: until then only the host can have written the buffer, so its bytes now are
        the program's input. (Taken at a later first *read*, the snapshot could race with
        an earlier, still-running device write to it, and the replay would then write
        stale bytes over that result.)"""
        for buf in buffers:
            if not isinstance(buf, Buffer):
                continue
            root = buf.allocated_buffer
            if root in self._captured or root not in self._buffers:
                continue
            self._captured.add(root)
            if int(root.placement_flags) & _PLACEMENT_ASYNC:
                continue  # queue-ordered memory: only the device writes it
            if not (root.memory_type & MemoryType.HOST_VISIBLE) or not (
                root.allowed_usage & BufferUsage.MAPPING_SCOPED
            ):
                continue
            self._record_write(root, 0, bytes(root.read()))

    def _record_write(self, root: Buffer, offset: int, data: bytes) -> None:
        oid = self._buffers[root]
        dev = self._device_id(root.device)
        access = int(MemoryAccess.WRITE | MemoryAccess.DISCARD)
        self.writer.record(
            RT.OPERATION,
            _pack(PT.BUFFER_RANGE, offset, len(data), 1, access, 0, 0),
            payload_type=PT.BUFFER_RANGE,
            object_type=OT.BUFFER,
            operation_code=OC.BUFFER_MAP_RANGE,
            device_id=dev,
            object_id=oid,
        )
        body = _pack(PT.BUFFER_RANGE_DATA, offset, len(data), len(data), 0, access, 0, 0) + data
        self.writer.record(
            RT.OPERATION,
            body,
            payload_type=PT.BUFFER_RANGE_DATA,
            object_type=OT.BUFFER,
            operation_code=OC.BUFFER_UNMAP_RANGE,
            device_id=dev,
            object_id=oid,
        )

    def _device_id(self, device: Any) -> int:
        for d in self.devices:
            if d.real is device:
                return d.device_id
        return self.devices[0].device_id

    def write_buffer(self, buffer: Buffer, data: Any, offset: int = 0) -> None:
        """Write host bytes into ``buffer`` and record them (a mapped write)."""
        raw = bytes(memoryview(data).cast("B"))
        buffer.write(raw, offset)
        oid, base = self._buffer_id(buffer)
        self._captured.add(buffer.allocated_buffer)
        self._record_write(buffer.allocated_buffer, base + offset, raw)

    def read_buffer(self, buffer: Buffer) -> bytes:
        """Read ``buffer`` and record a mapped read: replays list it as an output."""
        oid, base = self._buffer_id(buffer)
        data = bytes(buffer.read())
        access = int(MemoryAccess.READ)
        payload = _pack(PT.BUFFER_RANGE, base, len(data), 1, access, 0, 0)
        for code in (OC.BUFFER_MAP_RANGE, OC.BUFFER_UNMAP_RANGE):
            self.writer.record(
                RT.OPERATION,
                payload,
                payload_type=PT.BUFFER_RANGE,
                object_type=OT.BUFFER,
                operation_code=code,
                device_id=self._device_id(buffer.device),
                object_id=oid,
            )
        return data

    # -- scopes and lifetime ---------------------------------------------------------------

    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Mark a named region (``iree-benchmark-replay --replay_scope=NAME`` times it)."""
        raw = name.encode()
        if not raw:
            raise InvalidArgumentError("a replay scope needs a name")
        body = _pack(PT.REPLAY_SCOPE, len(raw), 0, 0, 0) + raw
        self.writer.record(
            RT.OPERATION, body, payload_type=PT.REPLAY_SCOPE, operation_code=OC.REPLAY_SCOPE_BEGIN
        )
        try:
            yield
        finally:
            self.writer.record(
                RT.OPERATION, body, payload_type=PT.REPLAY_SCOPE, operation_code=OC.REPLAY_SCOPE_END
            )

    def close(self) -> None:
        """Finish the file (the devices stay open: they are the caller's). Idempotent."""
        self.writer.close()
        self._keep.clear()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
