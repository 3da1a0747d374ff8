"""Re-executing an ``.ireereplay`` capture on hal-core devices.

A ``Player`` decodes the capture once into a plan (one handler per record) and runs it on
the devices it is given: captured device k runs on ``devices[k]`` (a single ``Device``
takes every captured device). Objects are rebuilt as the records create them and looked up
by their captured object ids; ``buffer_contents(id)`` reads any buffer after the run.

Execution follows the capture's host order, as IREE's executor does: each queue operation
is submitted, flushed, and its signal semaphores waited on before the next record, so the
device-side order is what the captured semaphores say and host-side effects (mapped
writes, reads) see finished work. Waits have a deadline (``wait_timeout``): a capture
whose semaphores are never signalled fails with DEADLINE_EXCEEDED instead of hanging.

What does not replay: host calls (the callback is not in the capture), collectives,
channels, external buffer export and virtual-memory operations are UNIMPLEMENTED naming
the operation; records of calls that failed at capture time are skipped (the program's
later calls are what it did next). Events inside a command buffer are lowered to full
execution barriers (a stronger order than a split barrier, so results are the same).
Queries, trims, topology, profiling markers and debug groups are skipped, as in IREE.

Thread-safety: a Player is used by one thread at a time.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

from .._buffer import Buffer
from .._memory import BufferParams, BufferUsage, MemoryAccess, MemoryType
from .._status import (
    DataLossError,
    HalError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
    error_for,
)
from . import _format as F
from ._format import ObjectType, OperationCode, RecordType
from ._handlers import HANDLERS, WHY_NOT, RecordHandlers, skip
from ._reader import Record, ReplayFile, check_known
from ._steps import Step, StepBinder
from ._substitution import Substitution

__all__ = ["Player", "ScopeTimer"]

_ANY = (1 << 64) - 1
# Command-buffer mode bits hal-core knows (ONE_SHOT, ALLOW_INLINE_EXECUTION, UNVALIDATED,
# UNRETAINED); other IREE bits are driver hints with no meaning here.
_MODE_MASK = 0x1 | 0x10 | 0x20 | 0x40
# Dispatch flags that make the workgroup-count reference meaningful.
_INDIRECT_PARAMETERS = 0x1 | 0x2

Handler = Callable[[Record, dict[str, Any]], None]


class ScopeTimer:
    """Accumulates the wall time spent inside scopes named ``name`` (outermost only)."""

    __slots__ = ("name", "depth", "start", "elapsed_ns", "seen")

    def __init__(self, name: str) -> None:
        self.name = name
        self.depth = 0
        self.start = 0
        self.elapsed_ns = 0
        self.seen = False

    def __call__(self, name: str, begin: bool) -> None:
        if name != self.name:
            return
        if begin:
            self.seen = True
            if self.depth == 0:
                self.start = time.perf_counter_ns()
            self.depth += 1
        else:
            if self.depth == 0:
                raise DataLossError(f"replay scope {name!r} ends before it begins")
            self.depth -= 1
            if self.depth == 0:
                self.elapsed_ns += time.perf_counter_ns() - self.start


class Player(RecordHandlers):
    """Plays one capture on ``devices`` (a ``Device``, a ``DeviceGroup`` or a sequence of
    devices).

    ``substitutions``: ``Substitution`` s replacing captured executables.
    ``file_remap``: ``(captured_prefix, replay_prefix)`` pairs for external file paths.
    ``progress``: called as ``progress(records_done, records_total)`` every few hundred
    records and at the end. ``wait_timeout``: seconds any one wait may take.

    The plan is built at construction: a capture that does not decode raises there
    (DATA_LOSS / INVALID_ARGUMENT / UNIMPLEMENTED with the byte offset), before anything
    runs on a device.
    """

    def __init__(
        self,
        replay: ReplayFile | str | os.PathLike[str],
        devices: Any,
        *,
        substitutions: Sequence[Substitution] = (),
        file_remap: Sequence[tuple[str, str]] = (),
        progress: Callable[[int, int], None] | None = None,
        wait_timeout: float = 60.0,
    ) -> None:
        self.file = replay if isinstance(replay, ReplayFile) else ReplayFile.open(replay)
        if hasattr(devices, "devices") and not hasattr(devices, "queue_execute"):
            devices = devices.devices
        self.devices = (devices,) if hasattr(devices, "queue_execute") else tuple(devices)
        if not self.devices:
            raise InvalidArgumentError("a replay needs at least one device")
        self.substitutions = tuple(substitutions)
        self.file_remap = tuple(file_remap)
        self.progress = progress
        self.wait_timeout = wait_timeout
        self.scope_callback: Callable[[str, bool], None] | None = None
        self.objects: dict[int, Any] = {}
        self.functions: dict[int, list[int]] = {}  # executable id -> captured ordinal map
        self._file_images: dict[int, bytearray] = {}
        self._device_order: list[int] = []
        self._executable_cache: dict[tuple[int, int], tuple[Any, list[int]]] = {}
        # Buffers the captured program mapped for reading: where its results came from.
        self.output_buffer_ids: list[int] = []
        self._timed_scope: str | None = None  # the scope the current run times
        self.plan: list[tuple[Step, Record, dict[str, Any]]] = self._build_plan()

    # -- public ----------------------------------------------------------------------------

    def run(self, scope: str | None = None) -> int:
        """Play the whole capture once. Returns the nanoseconds spent inside scopes named
        ``scope`` (0 without one); NOT_FOUND when ``scope`` names no scope in the capture.
        Errors raised while replaying name the record (sequence, operation, byte offset).
        """
        self.objects.clear()
        self.functions.clear()
        self._file_images.clear()
        self._device_order.clear()
        timer = ScopeTimer(scope) if scope else None
        self._timed_scope = scope or None
        user_cb = self.scope_callback
        if timer is not None and user_cb is not None:

            def both(name: str, begin: bool) -> None:
                timer(name, begin)
                user_cb(name, begin)

            self._on_scope: Callable[[str, bool], None] | None = both
        else:
            self._on_scope = timer or user_cb
        total = len(self.plan)
        progress = self.progress
        done = 0
        try:
            if progress is None:
                for step, _rec, _payload in self.plan:
                    step()
                    done += 1
            else:
                for step, _rec, _payload in self.plan:
                    step()
                    done += 1
                    if done % 256 == 0:
                        progress(done, total)
        except HalError as exc:
            rec = self.plan[done][1]
            raise error_for(
                exc.code,
                f"replaying record #{rec.sequence_ordinal} ({_describe(rec)}) at byte offset "
                f"{rec.offset}: {exc.message}",
            ) from exc
        except Exception as exc:
            # A backend that raised something other than a HalError has a bug; say where
            # the capture took it (the original stays chained as the cause).
            rec = self.plan[done][1]
            raise InternalError(
                f"replaying record #{rec.sequence_ordinal} ({_describe(rec)}) at byte offset "
                f"{rec.offset}: the device raised {type(exc).__name__}: {exc}"
            ) from exc
        if progress is not None:
            progress(total, total)
        if timer is None:
            return 0
        if not timer.seen:
            raise NotFoundError(f"replay scope {scope!r} does not occur in the capture")
        return timer.elapsed_ns

    def buffer(self, object_id: int) -> Buffer:
        """The replayed buffer with captured object id ``object_id``; NOT_FOUND if the
        capture created none."""
        obj = self.objects.get(object_id)
        if not isinstance(obj, Buffer):
            raise NotFoundError(
                f"captured object {object_id} is not a buffer of this replay; buffers: "
                f"{self.buffer_ids()}"
            )
        return obj

    def buffer_ids(self) -> list[int]:
        return sorted(k for k, v in self.objects.items() if isinstance(v, Buffer))

    def buffer_contents(self, object_id: int) -> bytes:
        """The bytes of buffer ``object_id`` now (through a host-visible staging copy when
        the buffer is not mappable). FAILED_PRECONDITION for a buffer already released by
        a queue_dealloca."""
        buf = self.buffer(object_id)
        if (
            buf.memory_type & MemoryType.HOST_VISIBLE
            and buf.allowed_usage & BufferUsage.MAPPING_SCOPED
        ):
            return bytes(buf.read())
        device = buf.device
        staging = device.allocator.allocate_buffer(
            BufferParams(
                usage=BufferUsage.TRANSFER_TARGET | BufferUsage.MAPPING_SCOPED,
                type=MemoryType.HOST_LOCAL,
            ),
            buf.byte_length,
        )
        done = device.create_semaphore()
        device.queue_copy(_ANY, [], [(done, 1)], buf, 0, staging, 0, buf.byte_length)
        done.wait(1, timeout=self.wait_timeout)
        return bytes(staging.read())

    def close(self) -> None:
        """Drop every replayed object (devices are the caller's)."""
        self.objects.clear()
        self._executable_cache.clear()
        for recorded in self._recordings:
            recorded[0] = None

    # -- plan ------------------------------------------------------------------------------

    def _build_plan(self) -> list[tuple[Step, Record, dict[str, Any]]]:
        records: list[tuple[Handler, Record, dict[str, Any]]] = []
        for rec in self.file.records():
            try:
                self._plan_record(rec, records)
            except UnimplementedError:
                if not rec.optional:
                    raise
                # An optional record this reader cannot use: the format lets it be skipped.
        # Each record becomes a zero-argument step with its payload read now, so a run
        # (and every benchmark iteration) pays only for the calls it replays.
        binder = StepBinder(self)
        plan = [(binder.bind(h, rec, payload), rec, payload) for h, rec, payload in records]
        binder.reuse_recordings(plan)
        self._recordings = binder.recordings
        return plan

    def _plan_record(self, rec: Record, plan: list[tuple[Handler, Record, dict[str, Any]]]) -> None:
        """Validate ``rec`` and append its handler to ``plan`` (if it has work to do)."""
        decode = self.file.decode
        rtype = rec.record_type
        if rtype == RecordType.OBJECT:
            check_known(rec)
            if rec.object_type in (ObjectType.DEVICE, ObjectType.ALLOCATOR):
                plan.append((self._object, rec, decode(rec)))
            else:
                decode(rec)  # validated now, used by the operation that made it
        elif rtype == RecordType.OPERATION:
            check_known(rec)
            payload = decode(rec)
            if rec.status_code != 0:
                return  # the call failed at capture time: nothing to re-create
            if (
                rec.operation_code == OperationCode.BUFFER_MAP_RANGE
                and payload["memory_access"] & MemoryAccess.READ
                and rec.object_id not in self.output_buffer_ids
            ):
                self.output_buffer_ids.append(rec.object_id)
            handler = HANDLERS.get(rec.operation_code)
            if handler is None:
                raise UnimplementedError(
                    f"replay record #{rec.sequence_ordinal} at byte offset {rec.offset}: "
                    f"operation {rec.operation_name} cannot be replayed by hal-core"
                    + WHY_NOT.get(rec.operation_code, "")
                )
            if handler is not skip:
                plan.append((handler.__get__(self), rec, payload))
        elif rtype == RecordType.UNSUPPORTED:
            if rec.status_code == 0:
                raise UnimplementedError(
                    f"replay record #{rec.sequence_ordinal} at byte offset {rec.offset}: the "
                    f"capture could not record {rec.operation_name} faithfully (an "
                    "'unsupported' record), so it cannot be replayed"
                )
        elif rtype in (RecordType.SESSION, RecordType.BLOB) and rec.payload_type:
            decode(rec)
        # Optional records of unknown types never reach here (the reader skips them).


def _describe(rec: Record) -> str:
    if rec.record_type == RecordType.OPERATION:
        return rec.operation_name
    return f"{F.record_type_name(rec.record_type)} {F.object_type_name(rec.object_type)}"
