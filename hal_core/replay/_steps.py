"""Prebound plan steps: the per-record work of the operations an execute region repeats.

``StepBinder`` turns each planned record into a zero-argument step. For the operations a
captured program issues on every invocation (buffer allocation and uploads, semaphores,
``queue_alloca`` / ``queue_dealloca`` / ``queue_execute``, command-buffer creation and
transfer commands, scope markers) every payload field is read once, when the plan is
built: the step holds plain ints, prebuilt ``BufferParams`` and upload arrays, and finds
the objects of this run by their captured ids in the player's object table. Everything
else runs the generic handler of ``_handlers`` with its record and payload.

Object kinds are checked at plan time instead of on every call: the binder follows the
records that create objects (in capture order, which is the run order), and a record
whose ids name an object of the kind it needs gets a step that indexes the table
directly. A record naming an object the capture never made (or one of another kind) gets
the generic handler, which raises DATA_LOSS naming the id when it runs, as before.

Reusable recordings: a command buffer created without ONE_SHOT and recorded once (one
begin, commands, one end), whose commands name buffers only through binding-table slots,
holds nothing of a run but executables (prepared once per player: the same objects every
run) and slot numbers. In a run that times a scope (``run(scope)``, as ``hal bench`` and
``iree-benchmark-replay --replay_scope`` do) such a recording made outside that scope is
taken from the player's previous run instead of being recorded again, and re-executed with
this run's binding table: exactly what a fresh recording would execute. Everything inside
the timed scope, and every record of a run that times nothing (where the whole stream is
the measure), is replayed in full.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np

from .._buffer import buffer_host_bytes
from .._buffer_ref import BufferRef, checked_binding, checked_table
from .._memory import BufferParams, BufferUsage, MemoryAccess, MemoryType
from .._status import HalError
from . import _format as F
from ._format import ObjectType, OperationCode, PayloadType, RecordType
from ._reader import Record

__all__ = ["Step", "StepBinder"]

Step = Callable[[], None]

_ANY = (1 << 64) - 1
_MODE_MASK = 0x1 | 0x10 | 0x20 | 0x40  # as in _handlers: the mode bits hal-core knows
_WRITE = MemoryAccess.WRITE
_HOST_VISIBLE = int(MemoryType.HOST_VISIBLE)
_MAPPING = int(BufferUsage.MAPPING_SCOPED | BufferUsage.MAPPING_PERSISTENT)
_WRITE_OR_ANY = int(MemoryAccess.WRITE | MemoryAccess.ANY)
O = OperationCode  # noqa: E741

# What each creating operation leaves under its related object id.
_CREATES: dict[int, str] = {
    O.DEVICE_CREATE_EXECUTABLE_CACHE: "executable_cache",
    O.EXECUTABLE_CACHE_PREPARE_EXECUTABLE: "executable",
    O.DEVICE_CREATE_COMMAND_BUFFER: "command_buffer",
    O.DEVICE_CREATE_SEMAPHORE: "semaphore",
    O.DEVICE_CREATE_EVENT: "event",
    O.DEVICE_IMPORT_FILE: "file",
    O.ALLOCATOR_ALLOCATE_BUFFER: "buffer",
    O.ALLOCATOR_IMPORT_BUFFER: "buffer",
    O.DEVICE_QUEUE_ALLOCA: "buffer",
}


_ONE_SHOT = 0x1
_INDIRECT_PARAMETERS = 0x1 | 0x2  # dispatch flags that make workgroup_count_ref meaningful
_CB_COMMANDS = frozenset(
    {
        O.COMMAND_BUFFER_BEGIN,
        O.COMMAND_BUFFER_END,
        O.COMMAND_BUFFER_EXECUTION_BARRIER,
        O.COMMAND_BUFFER_SIGNAL_EVENT,
        O.COMMAND_BUFFER_RESET_EVENT,
        O.COMMAND_BUFFER_WAIT_EVENTS,
        O.COMMAND_BUFFER_FILL_BUFFER,
        O.COMMAND_BUFFER_UPDATE_BUFFER,
        O.COMMAND_BUFFER_COPY_BUFFER,
        O.COMMAND_BUFFER_DISPATCH,
        O.COMMAND_BUFFER_COLLECTIVE,
        O.COMMAND_BUFFER_BEGIN_DEBUG_GROUP,
        O.COMMAND_BUFFER_END_DEBUG_GROUP,
        O.COMMAND_BUFFER_ADVISE_BUFFER,
    }
)
# Commands a reused recording may hold (events name objects of the run: not these).
_SLOT_ONLY_COMMANDS = frozenset(
    {
        O.COMMAND_BUFFER_EXECUTION_BARRIER,
        O.COMMAND_BUFFER_FILL_BUFFER,
        O.COMMAND_BUFFER_UPDATE_BUFFER,
        O.COMMAND_BUFFER_COPY_BUFFER,
        O.COMMAND_BUFFER_DISPATCH,
    }
)


def _nothing() -> None:
    """A record with no work this run (a read-only unmap)."""


class StepBinder:
    """Binds the records of one player's plan, in capture order; used while the plan is
    built (one thread)."""

    def __init__(self, player: Any) -> None:
        self.player = player
        self.objects: dict[int, Any] = player.objects
        self.kinds: dict[int, str] = {}
        # The reused recordings' holders (``close`` empties them).
        self.recordings: list[list[Any]] = []
        self._binders: dict[int, Callable[[Record, dict[str, Any]], Step | None]] = {
            O.REPLAY_SCOPE_BEGIN: self._scope,
            O.REPLAY_SCOPE_END: self._scope,
            O.ALLOCATOR_ALLOCATE_BUFFER: self._allocate_buffer,
            O.BUFFER_UNMAP_RANGE: self._range_data,
            O.BUFFER_FLUSH_RANGE: self._range_data,
            O.DEVICE_CREATE_SEMAPHORE: self._create_semaphore,
            O.DEVICE_CREATE_COMMAND_BUFFER: self._create_command_buffer,
            O.DEVICE_QUEUE_ALLOCA: self._queue_alloca,
            O.DEVICE_QUEUE_DEALLOCA: self._queue_dealloca,
            O.DEVICE_QUEUE_EXECUTE: self._queue_execute,
            O.COMMAND_BUFFER_BEGIN: self._cb_begin,
            O.COMMAND_BUFFER_END: self._cb_end,
            O.COMMAND_BUFFER_COPY_BUFFER: self._cb_copy,
            O.COMMAND_BUFFER_FILL_BUFFER: self._cb_fill,
        }

    def bind(self, handler: Callable[[Record, dict[str, Any]], None], rec: Record, p: Any) -> Step:
        """The step that replays ``rec`` (``handler`` is its generic handler)."""
        step: Step | None = None
        if rec.record_type == RecordType.OPERATION:
            binder = self._binders.get(rec.operation_code)
            if binder is not None:
                step = binder(rec, p)
            kind = _CREATES.get(rec.operation_code)
            if kind is not None:
                self.kinds[rec.related_object_id] = kind
        elif rec.object_type == ObjectType.DEVICE:
            self.kinds[rec.object_id] = "device"
        elif rec.object_type == ObjectType.ALLOCATOR:
            self.kinds[rec.object_id] = "allocator"
        return step if step is not None else partial(handler, rec, p)

    # -- plan-time checks ------------------------------------------------------------------

    def _is(self, object_id: int, kind: str) -> bool:
        return self.kinds.get(object_id) == kind

    def _timepoints(self, items: list[dict[str, Any]]) -> tuple[tuple[int, int], ...] | None:
        out = tuple((tp["semaphore_id"], tp["value"]) for tp in items)
        if all(self.kinds.get(s) == "semaphore" for s, _ in out):
            return out
        return None

    def _queue_common(
        self, rec: Record, p: dict[str, Any]
    ) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]] | None:
        if not self._is(rec.object_id, "device"):
            return None
        waits = self._timepoints(p["wait_semaphores"])
        signals = self._timepoints(p["signal_semaphores"])
        if waits is None or signals is None:
            return None
        return waits, signals

    def _ref(self, ref: dict[str, Any]) -> tuple[int, int, int, int] | None:
        """``(buffer id or 0, slot, offset, length)`` of a valid reference, else None."""
        bid = ref["buffer_id"]
        if bid != F.OBJECT_ID_NONE and not self._is(bid, "buffer"):
            return None
        return bid, ref["buffer_slot"], ref["offset"], ref["length"]

    # -- binders ---------------------------------------------------------------------------

    def _scope(self, rec: Record, p: dict[str, Any]) -> Step:
        player = self.player
        name: str = p["name"]
        begin = rec.operation_code == O.REPLAY_SCOPE_BEGIN

        def scope() -> None:
            cb = player._on_scope
            if cb is not None:
                cb(name, begin)

        return scope

    def _allocate_buffer(self, rec: Record, p: dict[str, Any]) -> Step | None:
        aid, bid = rec.object_id, rec.related_object_id
        if not self._is(aid, "allocator"):
            return None
        objs = self.objects
        params = _params(p)
        size: int = p["allocation_size"]

        def allocate_buffer() -> None:
            objs[bid] = objs[aid].allocate_buffer(params, size)

        return allocate_buffer

    def _range_data(self, rec: Record, p: dict[str, Any]) -> Step | None:
        if rec.payload_type != PayloadType.BUFFER_RANGE_DATA or not p["data_length"]:
            return _nothing
        bid = rec.object_id
        if not self._is(bid, "buffer"):
            return None
        objs = self.objects
        # The bytes live in the capture for the player's lifetime; one array over them,
        # copied in through a scoped write mapping (as IREE's map_write) each run.
        src = np.frombuffer(p["data"], dtype=np.uint8)
        offset: int = p["byte_offset"]
        length = int(src.nbytes)

        end = offset + length

        def write_mapped() -> None:
            buf = objs[bid]
            # What ``Buffer.map(WRITE)`` checks, on plain ints; anything it would refuse
            # (or a non-host storage) goes through it, to raise its error.
            if (
                int(buf.memory_type) & _HOST_VISIBLE
                and int(buf.allowed_usage) & _MAPPING
                and (int(buf.allowed_access) & _WRITE_OR_ANY)
                and end <= buf.byte_length
            ):
                try:
                    buffer_host_bytes(buf, offset, length)[:] = src
                    return
                except HalError:
                    pass
            with buf.map(_WRITE, offset, length) as m:
                m.contents[:] = src

        return write_mapped

    def _create_semaphore(self, rec: Record, p: dict[str, Any]) -> Step | None:
        did, sid = rec.object_id, rec.related_object_id
        if not self._is(did, "device"):
            return None
        objs = self.objects
        initial: int = p["initial_value"]
        flags: int = p["flags"]

        def create_semaphore() -> None:
            objs[sid] = objs[did].create_semaphore(initial, flags=flags)

        return create_semaphore

    def _create_command_buffer(self, rec: Record, p: dict[str, Any]) -> Step | None:
        did, cid = rec.object_id, rec.related_object_id
        if not self._is(did, "device"):
            return None
        objs = self.objects
        args = (p["mode"] & _MODE_MASK, p["command_categories"], p["queue_affinity"])
        capacity: int = p["binding_capacity"]

        def create_command_buffer() -> None:
            objs[cid] = objs[did].create_command_buffer(*args, capacity)

        return create_command_buffer

    def _queue_alloca(self, rec: Record, p: dict[str, Any]) -> Step | None:
        lists = self._queue_common(rec, p)
        if lists is None:
            return None
        waits, signals = lists
        player, objs = self.player, self.objects
        did, bid = rec.object_id, rec.related_object_id
        alloc = p["allocation"]
        params = _params(alloc)
        size: int = alloc["allocation_size"]
        affinity: int = p["queue_affinity"]
        flush = affinity & _ANY or _ANY
        flags: int = p["flags"]

        def queue_alloca() -> None:
            device = objs[did]
            signal = [(objs[s], v) for s, v in signals]
            objs[bid] = device.queue_alloca(
                affinity, [(objs[s], v) for s, v in waits], signal, params, size, flags=flags
            )
            _finish(device, flush, signal, player.wait_timeout)

        return queue_alloca

    def _queue_dealloca(self, rec: Record, p: dict[str, Any]) -> Step | None:
        lists = self._queue_common(rec, p)
        ref = p["buffer_ref"]
        if lists is None or not self._is(ref["buffer_id"], "buffer"):
            return None
        waits, signals = lists
        player, objs = self.player, self.objects
        did, bid = rec.object_id, ref["buffer_id"]
        affinity: int = p["queue_affinity"]
        flush = affinity & _ANY or _ANY
        flags: int = p["flags"]

        def queue_dealloca() -> None:
            device = objs[did]
            signal = [(objs[s], v) for s, v in signals]
            device.queue_dealloca(
                affinity, [(objs[s], v) for s, v in waits], signal, objs[bid], flags=flags
            )
            _finish(device, flush, signal, player.wait_timeout)

        return queue_dealloca

    def _queue_execute(self, rec: Record, p: dict[str, Any]) -> Step | None:
        lists = self._queue_common(rec, p)
        cid = p["command_buffer_id"]
        if lists is None or cid == F.OBJECT_ID_NONE or not self._is(cid, "command_buffer"):
            return None  # barriers and bad ids: the generic handler
        slots: list[tuple[int | None, int, int]] = []
        for b in p["bindings"]:
            bid = b["buffer_id"]
            if bid == F.OBJECT_ID_NONE:
                slots.append((None, 0, 0))
                continue
            if not self._is(bid, "buffer"):
                return None
            offset, length = b["offset"], b["length"]
            if not (0 <= offset <= _ANY and 0 <= length <= _ANY):
                return None  # (u64 fields: never) BufferBinding's converter says why
            slots.append((bid, offset, length))
        bindings = tuple(slots)
        waits, signals = lists
        player, objs = self.player, self.objects
        did = rec.object_id
        affinity: int = p["queue_affinity"]
        flush = affinity & _ANY or _ANY
        flags: int = p["flags"]

        def queue_execute() -> None:
            # Each slot's buffer is the object its captured id names in this run (a
            # Buffer: the binder saw the record that made it), so its binding is built
            # without the converters; the device validates the table as for any caller.
            table = checked_table(
                tuple(
                    [None if b is None else checked_binding(objs[b], o, n) for b, o, n in bindings]
                )
            )
            device = objs[did]
            signal = [(objs[s], v) for s, v in signals]
            device.queue_execute(
                affinity, [(objs[s], v) for s, v in waits], signal, objs[cid], table, flags
            )
            _finish(device, flush, signal, player.wait_timeout)

        return queue_execute

    def _cb_begin(self, rec: Record, p: dict[str, Any]) -> Step | None:
        cid = rec.object_id
        if not self._is(cid, "command_buffer"):
            return None
        objs = self.objects

        def begin() -> None:
            objs[cid].begin()

        return begin

    def _cb_end(self, rec: Record, p: dict[str, Any]) -> Step | None:
        cid = rec.object_id
        if not self._is(cid, "command_buffer"):
            return None
        objs = self.objects

        def end() -> None:
            objs[cid].end()

        return end

    def _cb_copy(self, rec: Record, p: dict[str, Any]) -> Step | None:
        cid = rec.object_id
        src, dst = self._ref(p["source_ref"]), self._ref(p["target_ref"])
        if not self._is(cid, "command_buffer") or src is None or dst is None:
            return None
        objs = self.objects
        flags: int = p["flags"]

        def copy_buffer() -> None:
            objs[cid].copy_buffer(_buffer_ref(objs, src), _buffer_ref(objs, dst), flags=flags)

        return copy_buffer

    def _cb_fill(self, rec: Record, p: dict[str, Any]) -> Step | None:
        cid = rec.object_id
        dst = self._ref(p["target_ref"])
        if not self._is(cid, "command_buffer") or dst is None:
            return None
        objs = self.objects
        pattern = bytes(p["pattern"])
        flags: int = p["flags"]

        def fill_buffer() -> None:
            objs[cid].fill_buffer(_buffer_ref(objs, dst), pattern, flags=flags)

        return fill_buffer

    # -- reusable recordings ---------------------------------------------------------------

    def reuse_recordings(self, plan: list[tuple[Step, Record, dict[str, Any]]]) -> None:
        """Rebind, in ``plan``, the records of every reusable recording (see the module
        docstring) so that later runs take the first run's command buffer."""
        scopes = self._scopes_at(plan)
        by_cb: dict[int, list[int]] = {}
        for i, (_, rec, _) in enumerate(plan):
            if rec.record_type == RecordType.OPERATION and (
                rec.operation_code in _CB_COMMANDS
                or rec.operation_code == O.DEVICE_CREATE_COMMAND_BUFFER
            ):
                cid = (
                    rec.related_object_id
                    if rec.operation_code == O.DEVICE_CREATE_COMMAND_BUFFER
                    else rec.object_id
                )
                by_cb.setdefault(cid, []).append(i)
        for cid, rows in by_cb.items():
            if self._reusable(plan, rows):
                enclosing = frozenset(name for i in rows for name in scopes[i])
                self._rebind(plan, cid, rows, enclosing)

    def _scopes_at(self, plan: list[tuple[Step, Record, dict[str, Any]]]) -> list[list[str]]:
        """The names of the scopes open at each plan entry."""
        open_scopes: list[str] = []
        out = []
        for _, rec, p in plan:
            if rec.record_type == RecordType.OPERATION:
                if rec.operation_code == O.REPLAY_SCOPE_BEGIN:
                    open_scopes.append(p["name"])
                elif rec.operation_code == O.REPLAY_SCOPE_END and p["name"] in open_scopes:
                    # The innermost scope of that name ends (as ScopeTimer counts them).
                    last = len(open_scopes) - 1 - open_scopes[::-1].index(p["name"])
                    del open_scopes[last]
            out.append(list(open_scopes))
        return out

    @staticmethod
    def _reusable(plan: list[tuple[Step, Record, dict[str, Any]]], rows: list[int]) -> bool:
        ops = [plan[i][1].operation_code for i in rows]
        if (
            len(ops) < 3
            or ops[0] != O.DEVICE_CREATE_COMMAND_BUFFER
            or ops[1] != O.COMMAND_BUFFER_BEGIN
            or ops[-1] != O.COMMAND_BUFFER_END
            or ops.count(O.COMMAND_BUFFER_BEGIN) != 1
            or ops.count(O.COMMAND_BUFFER_END) != 1
            or plan[rows[0]][2]["mode"] & _ONE_SHOT
        ):
            return False
        # (A record with a bad id still raises on the first run, which then keeps nothing.)
        for i in rows[2:-1]:  # the commands between begin and end
            rec, p = plan[i][1], plan[i][2]
            if rec.operation_code not in _SLOT_ONLY_COMMANDS or not _slots_only(p):
                return False
        return True

    def _rebind(
        self,
        plan: list[tuple[Step, Record, dict[str, Any]]],
        cid: int,
        rows: list[int],
        enclosing: frozenset[str],
    ) -> None:
        """``enclosing``: the scopes around the recording; a run timing one of them (or
        timing nothing) records it afresh."""
        player, objs = self.player, self.objects
        did = plan[rows[0]][1].object_id
        recorded: list[Any] = [None]  # the command buffer the first run recorded
        reused = [False]  # this run took it: its begin, commands and end do nothing
        create = plan[rows[0]][0]

        def create_or_reuse() -> None:
            cb = recorded[0]
            timed = player._timed_scope
            if (
                cb is not None
                and timed is not None
                and timed not in enclosing
                and cb.device is objs[did]
            ):
                objs[cid] = cb
                reused[0] = True
                return
            reused[0] = False
            create()

        def skipped_when_reused(step: Step) -> Step:
            def record() -> None:
                if not reused[0]:
                    step()

            return record

        end = plan[rows[-1]][0]

        def end_and_keep() -> None:
            if reused[0]:
                return
            end()
            recorded[0] = objs[cid]

        for k, i in enumerate(rows):
            _, rec, p = plan[i]
            if k == 0:
                step: Step = create_or_reuse
            elif k == len(rows) - 1:
                step = end_and_keep
            else:
                step = skipped_when_reused(plan[i][0])
            plan[i] = (step, rec, p)
        self.recordings.append(recorded)


def _slots_only(p: dict[str, Any]) -> bool:
    """True when no buffer reference of a command payload names a buffer directly."""
    for key in ("target_ref", "source_ref"):
        ref = p.get(key)
        if ref is not None and ref["buffer_id"] != F.OBJECT_ID_NONE:
            return False
    for b in p.get("bindings", ()):
        if b["buffer_id"] != F.OBJECT_ID_NONE:
            return False
    if p.get("flags", 0) & _INDIRECT_PARAMETERS and "workgroup_count_ref" in p:
        if p["workgroup_count_ref"]["buffer_id"] != F.OBJECT_ID_NONE:
            return False
    return not p.get("buffer_barriers")


def _buffer_ref(objs: dict[int, Any], ref: tuple[int, int, int, int]) -> BufferRef:
    bid, slot, offset, length = ref
    if bid == F.OBJECT_ID_NONE:
        return BufferRef.indirect(slot, offset, length)
    return BufferRef(objs[bid], offset, length)


def _finish(device: Any, flush: int, signal: list[tuple[Any, int]], timeout: float) -> None:
    """Flush and wait for the signals, as IREE's executor does after each queue op."""
    device.queue_flush(flush)
    for sem, value in signal:
        sem.wait(value, timeout=timeout)


def _params(p: dict[str, Any]) -> BufferParams:
    return BufferParams(
        usage=p["usage"],
        access=p["access"],
        type=p["type"],
        queue_affinity=p["queue_affinity"],
        min_alignment=p["min_alignment"],
    )
