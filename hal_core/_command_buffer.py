"""Command buffers: recording, buffer references, binding tables and dispatch configs.

A ``CommandBuffer`` records commands between ``begin()`` and ``end()`` (once). Recording is
cheap and backend-neutral: each command becomes one tuple in ``commands`` (the tuple also
*is* the retention of what it references, unless the mode is UNRETAINED). At ``end()`` the
device backend turns the recording into its own replay form (``finalize_command_buffer``)
so that every later submission does as little as possible.

Concurrency: a command buffer is used by one thread at a time while recording. A second
thread entering a recording method while another is inside one raises
FAILED_PRECONDITION (a conflict detector, not a lock). Once ended, a command buffer is
immutable and may be submitted from any thread.

Command tuple layouts (``COMMAND_LAYOUTS`` names every field). One rule: a command tuple
is ``(kind, target, source, ...)`` -- element 1 is the range the command writes and element
2 what it writes there; commands without a single target (dispatch, barriers, debug groups)
follow the kind with their arguments in call order. Refs are ``BufferRef``:

* ``(CMD_BARRIER,)``
* ``(CMD_FILL, target_ref, pattern_bytes)``
* ``(CMD_UPDATE, target_ref, data_bytes)`` (host bytes copied at record time)
* ``(CMD_COPY, target_ref, source_ref)``
* ``(CMD_DISPATCH, executable, function_ordinal, config, constants_bytes, bindings, flags)``
  where ``bindings`` is a tuple of ``BufferRef`` or ``Buffer`` (a whole buffer)
* ``(CMD_DEBUG_BEGIN, label)`` / ``(CMD_DEBUG_END,)``
"""

from __future__ import annotations

import enum
from typing import Any, Sequence, final

import attrs
import numpy as np

from ._buffer import Buffer
from ._buffer_ref import (
    BindingTable,
    BufferBinding,
    BufferRef,
    as_buffer_ref,
)
from ._construction import INTERNAL, require_internal, sealed
from ._memory import WHOLE_BUFFER, QueueAffinity
from ._queue_checks import check_known_flags, fill_pattern_bytes
from ._ranges import as_flags, as_index
from ._status import FailedPreconditionError, InvalidArgumentError, OutOfRangeError

__all__ = [
    "BindingTable",
    "BufferBinding",
    "BufferRef",
    "CommandBuffer",
    "CommandBufferMode",
    "CommandCategory",
    "DispatchConfig",
    "DispatchFlags",
    "ExecuteFlags",
    "MAX_UPDATE_SIZE",
]

MAX_UPDATE_SIZE = 64 * 1024
"""Most bytes one ``update_buffer`` command may carry (IREE's limit)."""

CMD_BARRIER = 0
CMD_FILL = 1
CMD_UPDATE = 2
CMD_COPY = 3
CMD_DISPATCH = 4
CMD_DEBUG_BEGIN = 5
CMD_DEBUG_END = 6

COMMAND_LAYOUTS: dict[int, tuple[str, ...]] = {
    CMD_BARRIER: ("kind",),
    CMD_FILL: ("kind", "target", "pattern"),
    CMD_UPDATE: ("kind", "target", "data"),
    CMD_COPY: ("kind", "target", "source"),
    CMD_DISPATCH: ("kind", "executable", "function", "config", "constants", "bindings", "flags"),
    CMD_DEBUG_BEGIN: ("kind", "label"),
    CMD_DEBUG_END: ("kind",),
}
"""The field names of every command tuple, by kind (element 0): what a backend's
``finalize_command_buffer`` reads at each index."""

_NEW = 0
_RECORDING = 1
_ENDED = 2


class CommandBufferMode(enum.IntFlag):
    """IREE's ``iree_hal_command_buffer_mode_t`` bits."""

    DEFAULT = 0
    ONE_SHOT = 1 << 0
    ALLOW_INLINE_EXECUTION = 1 << 4
    UNVALIDATED = 1 << 5
    UNRETAINED = 1 << 6


class CommandCategory(enum.IntFlag):
    """Which kinds of commands a command buffer may hold."""

    NONE = 0
    TRANSFER = 1 << 0
    DISPATCH = 1 << 1
    ANY = TRANSFER | DISPATCH


class DispatchFlags(enum.IntFlag):
    """Dispatch flags. The indirect-*arguments* and custom-argument forms are not
    implemented by any backend yet and are rejected with UNIMPLEMENTED."""

    NONE = 0
    DYNAMIC_INDIRECT_PARAMETERS = 1 << 0
    STATIC_INDIRECT_PARAMETERS = 1 << 1
    CUSTOM_DIRECT_ARGUMENTS = 1 << 2
    DYNAMIC_INDIRECT_ARGUMENTS = 1 << 3
    STATIC_INDIRECT_ARGUMENTS = 1 << 4
    ALLOW_INLINE_EXECUTION = 1 << 5
    BORROW_RESOURCE_LIFETIMES = 1 << 6


class ExecuteFlags(enum.IntFlag):
    NONE = 0
    BORROW_BINDING_TABLE_LIFETIME = 1 << 0


def _u32x3(value: Any, name: str) -> tuple[int, int, int]:
    """Three plain ints in 0..2**32-1 (numpy integers normalised), INVALID_ARGUMENT
    otherwise."""
    try:
        out = tuple(v if v.__class__ is int else as_index(v, name) for v in value)
    except (TypeError, InvalidArgumentError):
        out = ()
    if len(out) != 3 or not all(0 <= v < (1 << 32) for v in out):
        raise InvalidArgumentError(f"{name} must be three ints in 0..2**32-1, got {value!r}")
    return out


def _workgroup_count(value: Any) -> tuple[int, int, int]:
    """attrs converter of ``DispatchConfig.workgroup_count``."""
    return _u32x3(value, "workgroup_count")


def _workgroup_size(value: Any) -> tuple[int, int, int]:
    """attrs converter of ``DispatchConfig.workgroup_size``."""
    return _u32x3(value, "workgroup_size")


@attrs.frozen(slots=True)
class DispatchConfig:
    """How many workgroups a dispatch runs, statically or from a parameter buffer.

    ``workgroup_count``: (x, y, z), used when ``workgroup_count_ref`` is None.
    ``workgroup_count_ref``: a reference to three little-endian uint32 counts read at
    execution time (DYNAMIC_INDIRECT_PARAMETERS) or at submit (STATIC_...); it needs
    DISPATCH_INDIRECT_PARAMETERS usage, 4-byte alignment and at least 12 bytes.
    ``workgroup_size``: (0, 0, 0) means the function's own size.
    """

    workgroup_count: tuple[int, int, int] = attrs.field(
        default=(1, 1, 1), converter=_workgroup_count
    )
    workgroup_count_ref: BufferRef | None = None
    workgroup_size: tuple[int, int, int] = attrs.field(default=(0, 0, 0), converter=_workgroup_size)
    dynamic_workgroup_local_memory: int = 0

    @classmethod
    def static(cls, x: int = 1, y: int = 1, z: int = 1) -> "DispatchConfig":
        return cls((x, y, z))

    @classmethod
    def indirect(cls, ref: BufferRef | Buffer, offset: int = 0) -> "DispatchConfig":
        if isinstance(ref, Buffer):
            ref = BufferRef(ref, offset, 12)
        return cls((0, 0, 0), ref)


@final
@sealed
class CommandBuffer:
    """A recorded sequence of transfer and dispatch commands.

    Created by ``Device.create_command_buffer`` (the constructor is internal). Record
    between ``begin()`` and ``end()`` once; submit with ``Device.queue_execute`` (once for
    ONE_SHOT, any number of times otherwise). Retains the buffers and executables it
    references until it is closed or collected, unless recorded UNRETAINED (the caller then
    keeps them alive until every submission completes). Errors known while recording raise
    at once with IREE's codes (FAILED_PRECONDITION, PERMISSION_DENIED, OUT_OF_RANGE,
    INVALID_ARGUMENT); UNVALIDATED skips those checks except the begin/end state. Not
    thread-safe while recording (concurrent use raises); immutable and shareable once ended.
    """

    __slots__ = (
        "device",
        "mode",
        "categories",
        "queue_affinity",
        "binding_capacity",
        "commands",
        "program",
        "_state",
        "_busy",
        "_validation",
        "_submitted",
        "_dispatch_count",
        "_unretained_binding_count",
        "__weakref__",
    )

    def __init__(
        self,
        device: Any,
        mode: CommandBufferMode,
        categories: CommandCategory,
        queue_affinity: int,
        binding_capacity: int,
        validation: Any,
        *,
        _token: object = None,
    ) -> None:
        """Internal: ``Device.create_command_buffer`` passes ``_token=INTERNAL``."""
        if _token is not INTERNAL:
            require_internal(_token, "CommandBuffer", "Device.create_command_buffer(...)")
        self.device = device
        self.mode = mode
        self.categories = categories
        self.queue_affinity = queue_affinity
        self.binding_capacity = binding_capacity
        self.commands: list[tuple] = []
        self.program: Any = None
        self._state = _NEW
        self._busy = False
        self._validation = validation
        self._submitted = False
        # -1 while ``commands`` holds the recording: ``dispatch_count`` counts it when asked,
        # so recording keeps no per-dispatch counter. Set when the commands are dropped.
        self._dispatch_count = -1
        self._unretained_binding_count = -1

    def __repr__(self) -> str:
        try:
            state = ("new", "recording", "ended")[self._state]
            mode = self.mode.name or "DEFAULT"
            return f"<hal_core.CommandBuffer {state} {mode} commands={len(self.commands)}>"
        except Exception:
            return "<hal_core.CommandBuffer>"

    # -- state ---------------------------------------------------------------------------

    @property
    def is_recording(self) -> bool:
        return self._state == _RECORDING

    @property
    def is_ended(self) -> bool:
        return self._state == _ENDED

    @property
    def dispatch_count(self) -> int:
        """Dispatches recorded so far (all of them once ended; kept after ``close()``)."""
        if self._dispatch_count >= 0:
            return self._dispatch_count
        return _count_dispatches(self.commands)

    def _drop_commands(self) -> None:
        """Release the recording, keeping its dispatch count."""
        if self._dispatch_count < 0:
            self._dispatch_count = _count_dispatches(self.commands)
        self.commands = []

    @property
    def binding_count(self) -> int:
        """Highest binding-table slot referenced + 1 (tracked when validated)."""
        v = self._validation
        if v is not None:
            return v.binding_count
        if self._unretained_binding_count >= 0:
            return self._unretained_binding_count
        return self._scan_binding_count()

    def _scan_binding_count(self) -> int:
        count = 0
        for cmd in self.commands:
            for ref in _refs_of(cmd):
                if ref.__class__ is BufferRef and ref.buffer is None and ref.slot + 1 > count:
                    count = ref.slot + 1
        return count

    def _not_recording(self, what: str) -> FailedPreconditionError:
        if self._state == _NEW:
            why = "before begin()"
        elif self._state == _ENDED:
            why = "after end(); command buffers are recorded once"
        else:
            why = "while another thread records it (recording is single-threaded)"
        return FailedPreconditionError(f"{what} called {why}")

    def begin(self) -> None:
        """Start recording. FAILED_PRECONDITION if already begun (recording is once)."""
        if self._state != _NEW:
            raise FailedPreconditionError(
                "begin() called twice: a command buffer is recorded once; create a new one"
            )
        self._state = _RECORDING

    def end(self) -> None:
        """Finish recording and let the backend build its replay form.
        FAILED_PRECONDITION outside recording or with open debug groups."""
        if self._state != _RECORDING or self._busy:
            raise self._not_recording("end()")
        v = self._validation
        if v is not None:
            v.validate_end()
        self._busy = True
        try:
            finalize = self.device._finalize
            if finalize is None:
                self.program = self.commands
            else:
                self.program = finalize(self.commands, self.mode, self.binding_capacity)
                if int(self.mode) & _UNRETAINED:
                    # The backend's program holds what execution needs; UNRETAINED means
                    # the recording must not keep the caller's resources alive.
                    if v is None:
                        self._unretained_binding_count = self._scan_binding_count()
                    self._drop_commands()
        finally:
            self._busy = False
        self._state = _ENDED

    # -- commands --------------------------------------------------------------------------

    def execution_barrier(
        self,
        source_stage_mask: int = 0,
        target_stage_mask: int = 0,
        flags: int = 0,
        memory_barriers: Sequence[Any] = (),
        buffer_barriers: Sequence[Any] = (),
    ) -> None:
        """Order everything before against everything after (local backends run commands
        in order, so barriers cost nothing there)."""
        if self._state != _RECORDING or self._busy:
            raise self._not_recording("execution_barrier()")
        self.commands.append(_BARRIER)

    def begin_debug_group(self, label: str, color: int = 0, location: Any = None) -> None:
        if self._state != _RECORDING or self._busy:
            raise self._not_recording("begin_debug_group()")
        if self._validation is not None:
            self._validation.debug_depth += 1
        self.commands.append((CMD_DEBUG_BEGIN, str(label)))

    def end_debug_group(self) -> None:
        if self._state != _RECORDING or self._busy:
            raise self._not_recording("end_debug_group()")
        v = self._validation
        if v is not None:
            v.validate_end_debug_group()
        self.commands.append(_DEBUG_END)

    def fill_buffer(
        self,
        target: BufferRef | Buffer,
        pattern: bytes | int,
        pattern_length: int | None = None,
        flags: int = 0,
    ) -> None:
        """Fill ``target`` with a 1-, 2- or 4-byte pattern (bytes, or an int with
        ``pattern_length``). Zero-length fills are dropped unvalidated, as in IREE."""
        if self._state != _RECORDING or self._busy:
            raise self._not_recording("fill_buffer()")
        self._busy = True
        try:
            ref = as_buffer_ref(target, "fill target")
            if ref.length == 0:
                return
            data = fill_pattern_bytes(pattern, pattern_length)
            v = self._validation
            if v is not None:
                v.validate_fill(self, ref, data)
            self.commands.append((CMD_FILL, ref, data))
        finally:
            self._busy = False

    def update_buffer(
        self, source: Any, source_offset: int, target: BufferRef | Buffer, flags: int = 0
    ) -> None:
        """Copy ``target.length`` host bytes from ``source[source_offset:]`` into the
        command buffer now (the caller may reuse ``source`` at once); at most
        ``MAX_UPDATE_SIZE`` bytes per command (use several commands or queue_update)."""
        if self._state != _RECORDING or self._busy:
            raise self._not_recording("update_buffer()")
        self._busy = True
        try:
            ref = as_buffer_ref(target, "update target")
            try:
                src = memoryview(source).cast("B")
            except TypeError:
                raise InvalidArgumentError(
                    f"update source must be a buffer-protocol object, got {type(source).__name__}"
                ) from None
            if source_offset.__class__ is not int:
                source_offset = as_index(source_offset, "update source offset")
            length = ref.length
            if length == WHOLE_BUFFER:
                if ref.buffer is None:
                    length = len(src) - source_offset
                else:
                    length = ref.resolved_length()
                ref = BufferRef(ref.buffer, ref.offset, length, ref.slot)
            if length == 0:
                return
            if source_offset < 0 or source_offset + length > len(src):
                raise OutOfRangeError(
                    f"update source range [{source_offset}, {source_offset + length}) "
                    f"exceeds the {len(src)} host bytes given"
                )
            v = self._validation
            if v is not None:
                v.validate_update(self, ref, length)
            data = bytes(src[source_offset : source_offset + length])
            self.commands.append((CMD_UPDATE, ref, data))
        finally:
            self._busy = False

    def copy_buffer(
        self, source: BufferRef | Buffer, target: BufferRef | Buffer, flags: int = 0
    ) -> None:
        """Copy ``source`` to ``target`` (equal lengths; no overlap within one
        allocation)."""
        if self._state != _RECORDING or self._busy:
            raise self._not_recording("copy_buffer()")
        self._busy = True
        try:
            src = as_buffer_ref(source, "copy source")
            dst = as_buffer_ref(target, "copy target")
            if src.length == WHOLE_BUFFER and src.buffer is not None:
                src = BufferRef(src.buffer, src.offset, src.resolved_length())
            if dst.length == WHOLE_BUFFER and dst.buffer is not None:
                dst = BufferRef(dst.buffer, dst.offset, dst.resolved_length())
            if src.length == 0 and dst.length == 0:
                return
            v = self._validation
            if v is not None:
                v.validate_copy(self, src, dst)
            self.commands.append((CMD_COPY, dst, src))
        finally:
            self._busy = False

    def dispatch(
        self,
        executable: Any,
        function: int | str,
        config: DispatchConfig,
        constants: Any = b"",
        bindings: Sequence[BufferRef | Buffer] = (),
        flags: int = 0,
    ) -> None:
        """Record one dispatch of ``executable``'s ``function`` (ordinal or name).

        ``constants``: bytes (a multiple of 4) or a sequence of uint32 values, copied now.
        ``bindings``: buffers (whole) or references, in the function's binding order.
        Pass the same tuple object for repeated dispatches over the same resources:
        validation then checks it once.
        """
        if self._state != _RECORDING or self._busy:
            raise self._not_recording("dispatch()")
        self._busy = True
        try:
            if function.__class__ is not int:
                function = function_ordinal(executable, function)
            if constants.__class__ is not bytes:
                constants = constants_bytes(constants)
            if bindings.__class__ is not tuple:
                bindings = bindings_tuple(bindings)
            if flags:
                flags = check_known_flags(flags, DISPATCH_FLAG_BITS, "dispatch flags")
            v = self._validation
            if v is not None:
                v.validate_dispatch(self, executable, function, config, constants, bindings, flags)
            self.commands.append(
                (CMD_DISPATCH, executable, function, config, constants, bindings, flags)
            )
        finally:
            self._busy = False

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the recording and the backend's replay form (and with them every retained
        resource). Submissions in flight keep what they need. Idempotent."""
        self._drop_commands()
        self.program = None
        self._state = _ENDED

    def __enter__(self) -> "CommandBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_BARRIER = (CMD_BARRIER,)
_UNRETAINED = int(CommandBufferMode.UNRETAINED)  # a plain int: end() calls no flag operator
_DEBUG_END = (CMD_DEBUG_END,)


DISPATCH_FLAG_BITS = sum(int(f) for f in DispatchFlags)
"""Every bit ``DispatchFlags`` defines (other bits are INVALID_ARGUMENT)."""


def function_ordinal(executable: Any, function: Any) -> int:
    """A dispatch's function as an ordinal: a name looked up in ``executable``, or an
    integer (numpy integers normalised); INVALID_ARGUMENT for anything else."""
    if isinstance(function, str):
        lookup = getattr(executable, "lookup_function", None)
        if lookup is None:
            raise InvalidArgumentError(
                f"dispatch needs an Executable, got {type(executable).__name__}"
            )
        return lookup(function)
    return as_index(function, "dispatch function ordinal")


def bindings_tuple(bindings: Any) -> tuple:
    try:
        return tuple(bindings)
    except TypeError:
        raise InvalidArgumentError(
            f"dispatch bindings must be a sequence of Buffers or BufferRefs, got "
            f"{type(bindings).__name__}"
        ) from None


def constants_bytes(constants: Any) -> bytes:
    """Dispatch constants as bytes: bytes-like objects are copied, int sequences become
    little-endian uint32 words (each in 0..2**32-1; INVALID_ARGUMENT otherwise)."""
    if isinstance(constants, (bytes, bytearray, memoryview)):
        return bytes(constants)
    if isinstance(constants, np.ndarray):
        return constants.tobytes()
    try:
        words = [as_index(c, "dispatch constant") for c in constants]
    except (TypeError, InvalidArgumentError):
        raise InvalidArgumentError(
            f"dispatch constants must be bytes or a sequence of uint32 values, got {constants!r}"
        ) from None
    if any(w < 0 or w >= (1 << 32) for w in words):
        raise InvalidArgumentError(
            f"dispatch constants must be uint32 values (0..2**32-1), got {words!r}"
        )
    return np.asarray(words, dtype=np.uint32).tobytes()


def _count_dispatches(commands: list[tuple]) -> int:
    return sum(1 for cmd in commands if cmd[0] == CMD_DISPATCH)


def _refs_of(cmd: tuple) -> tuple:
    op = cmd[0]
    if op == CMD_DISPATCH:
        cfg = cmd[3]
        if cfg.workgroup_count_ref is not None:
            return cmd[5] + (cfg.workgroup_count_ref,)
        return cmd[5]
    if op == CMD_FILL or op == CMD_UPDATE:
        return (cmd[1],)
    if op == CMD_COPY:
        return (cmd[1], cmd[2])
    return ()


def refs_of(cmd: tuple) -> tuple:
    """Every ``BufferRef`` a recorded command uses (backend tier)."""
    return _refs_of(cmd)


def check_queue_affinity(affinity: Any) -> int:
    """A queue affinity as a plain int 64-bit mask (0 means ANY); INVALID_ARGUMENT else."""
    return as_flags(affinity, "queue affinity") or QueueAffinity.ANY
