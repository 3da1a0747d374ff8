"""The command-buffer validation layer: one ``validate_<op>`` per command, IREE's rules.

A validated command buffer owns one ``ValidationState``. Each recording method calls the
matching ``validate_*`` before appending its command; ``validate_submission`` runs at
``queue_execute`` and checks the binding table against what the recording requires
(``binding_requirements``, accumulated per slot while recording). Command buffers created
with ``CommandBufferMode.UNVALIDATED`` have no state and skip all of it except the
begin/end checks.

Codes: FAILED_PRECONDITION for state (begin/end, debug groups, categories, re-submitting a
ONE_SHOT), PERMISSION_DENIED for missing usage/access/memory-type bits, OUT_OF_RANGE for
ranges and slots, INVALID_ARGUMENT for malformed arguments (fill patterns, copy lengths and
overlaps, constants, binding counts, a missing binding table or an empty required slot).

Not thread-safe: used only by the recording thread (the command buffer's conflict detector
guarantees it) and, after ``end()``, read-only at submission.
"""

from __future__ import annotations

from typing import Any

from ._buffer import Buffer, resolve_range
from ._buffer_ref import MAX_RANGE_END, BufferBinding, BufferRef, as_buffer_ref, bound_range
from ._command_buffer import (
    MAX_UPDATE_SIZE,
    CommandBuffer,
    CommandCategory,
    DispatchConfig,
    DispatchFlags,
)
from ._executable import Executable
from ._memory import WHOLE_BUFFER, BufferUsage, MemoryAccess, MemoryType
from ._queue_checks import check_owner
from ._status import (
    FailedPreconditionError,
    InvalidArgumentError,
    OutOfRangeError,
    PermissionDeniedError,
    UnimplementedError,
)

__all__ = [
    "BindingRequirement",
    "ValidationState",
    "validate_submission",
]

_UNIMPLEMENTED_DISPATCH_FLAGS = (
    DispatchFlags.CUSTOM_DIRECT_ARGUMENTS
    | DispatchFlags.DYNAMIC_INDIRECT_ARGUMENTS
    | DispatchFlags.STATIC_INDIRECT_ARGUMENTS
)


class BindingRequirement:
    """What the recording needs from one binding-table slot."""

    __slots__ = ("usage", "access", "max_byte_end", "min_alignment", "first_use")

    def __init__(self) -> None:
        self.usage = BufferUsage.NONE
        self.access = MemoryAccess.NONE
        self.max_byte_end = 0
        self.min_alignment = 1
        self.first_use = ""


class ValidationState:
    """Per-command-buffer validation state (IREE's ``validation_state``)."""

    __slots__ = (
        "debug_depth",
        "binding_count",
        "requirements",
        "dispatch_allowed",
        "_last_exe",
        "_last_fn",
        "_last_info",
        "_last_config",
        "_checked_bindings",
        "_checked_buffers",
    )

    def __init__(self, categories: int = CommandCategory.ANY) -> None:
        self.debug_depth = 0
        self.binding_count = 0
        self.requirements: dict[int, BindingRequirement] = {}
        self.dispatch_allowed = bool(int(categories) & _DISPATCH)
        self._last_exe: Any = None
        self._last_fn = -1
        self._last_info: Any = None
        self._last_config: Any = None
        self._checked_bindings: dict[int, tuple] = {}
        # (id(buffer), use) -> buffer, for buffers whose usage, access, memory type and
        # device were checked for that use (``what`` names one usage/access pair). Those
        # facts never change, so a command over an already-checked buffer checks only its
        # range; holding the buffer keeps its id unique while the entry exists.
        self._checked_buffers: dict[tuple[int, str], Buffer] = {}

    # -- state ---------------------------------------------------------------------------

    def validate_end(self) -> None:
        if self.debug_depth:
            raise FailedPreconditionError(
                f"end() with {self.debug_depth} debug group(s) still open; call "
                "end_debug_group() for each begin_debug_group()"
            )
        # The memos serve recording only; dropping them here keeps the state from
        # retaining what an UNRETAINED recording must not keep alive.
        self._checked_bindings.clear()
        self._checked_buffers.clear()

    def validate_end_debug_group(self) -> None:
        if self.debug_depth <= 0:
            raise FailedPreconditionError(
                "end_debug_group() without a matching begin_debug_group()"
            )
        self.debug_depth -= 1

    # -- commands --------------------------------------------------------------------------

    def validate_fill(self, cb: CommandBuffer, ref: BufferRef, pattern: bytes) -> None:
        _require_category(cb, CommandCategory.TRANSFER, "fill_buffer")
        n = len(pattern)
        length = self._check_ref(
            cb, ref, BufferUsage.TRANSFER_TARGET, MemoryAccess.WRITE, "fill_buffer target", n
        )
        if ref.offset % n or (length != WHOLE_BUFFER and length % n):
            raise InvalidArgumentError(
                f"fill offset {ref.offset} and length {length} must be multiples of the "
                f"{n}-byte pattern"
            )

    def validate_update(self, cb: CommandBuffer, ref: BufferRef, length: int) -> None:
        _require_category(cb, CommandCategory.TRANSFER, "update_buffer")
        if length > MAX_UPDATE_SIZE:
            raise InvalidArgumentError(
                f"update_buffer carries {length} bytes; at most {MAX_UPDATE_SIZE} per "
                "command (split it, or use queue_update which takes any length)"
            )
        self._check_ref(
            cb, ref, BufferUsage.TRANSFER_TARGET, MemoryAccess.WRITE, "update_buffer target", 1
        )

    def validate_copy(self, cb: CommandBuffer, src: BufferRef, dst: BufferRef) -> None:
        _require_category(cb, CommandCategory.TRANSFER, "copy_buffer")
        slen = self._check_ref(
            cb, src, BufferUsage.TRANSFER_SOURCE, MemoryAccess.READ, "copy_buffer source", 1
        )
        dlen = self._check_ref(
            cb, dst, BufferUsage.TRANSFER_TARGET, MemoryAccess.WRITE, "copy_buffer target", 1
        )
        if slen != dlen:
            raise InvalidArgumentError(
                f"copy_buffer source length {_len_text(slen)} differs from target length "
                f"{_len_text(dlen)}; give both refs the same length"
            )
        if src.buffer is not None and dst.buffer is not None:
            if src.buffer._root is dst.buffer._root:
                s = src.buffer.byte_offset + src.offset
                t = dst.buffer.byte_offset + dst.offset
                if s < t + dlen and t < s + slen:
                    raise InvalidArgumentError(
                        f"copy_buffer ranges overlap within one allocation: source "
                        f"[{s}, {s + slen}) and target [{t}, {t + dlen})"
                    )

    def validate_dispatch(
        self,
        cb: CommandBuffer,
        executable: Any,
        function: int,
        config: DispatchConfig,
        constants: bytes,
        bindings: tuple,
        flags: int,
    ) -> None:
        """Checks of one recorded dispatch. Facts already checked for the same executable
        function, config object or bindings tuple (all immutable) are not checked again:
        a chain of dispatches over the same resources validates in O(1) each."""
        if not self.dispatch_allowed:
            _require_category(cb, CommandCategory.DISPATCH, "dispatch")
        if executable is not self._last_exe or function != self._last_fn or executable._closed:
            self._last_info = validate_function(executable, function)
            self._last_exe = executable
            self._last_fn = function
        info = self._last_info
        if len(constants) != 4 * info.constant_count:
            validate_constants(info, constants)
        if flags:
            validate_dispatch_flags(flags)
        if config is not self._last_config:
            validate_config(config)
            ind = config.workgroup_count_ref
            if ind is not None:
                self._check_ref(
                    cb,
                    ind,
                    BufferUsage.DISPATCH_INDIRECT_PARAMETERS,
                    MemoryAccess.READ,
                    "dispatch workgroup-count parameters",
                    4,
                )
            self._last_config = config
        if len(bindings) < info.binding_count:
            raise InvalidArgumentError(
                f"function {info.name!r} uses {info.binding_count} bindings; got {len(bindings)}"
            )
        seen = self._checked_bindings
        if seen.get(id(bindings)) is not bindings:
            for i, b in enumerate(bindings):
                what = _BINDING_NAMES[i] if i < _NAMED_BINDINGS else f"dispatch binding {i}"
                if b.__class__ is not BufferRef:
                    if b.__class__ is not Buffer:
                        raise InvalidArgumentError(
                            f"{what} must be a Buffer or a BufferRef, got {type(b).__name__}"
                        )
                    # ``check_buffer``'s tests for DISPATCH_STORAGE and no access inline.
                    if (
                        not int(b.memory_type) & _DEVICE_VISIBLE
                        or int(b.allowed_usage) & _DISPATCH_STORAGE != _DISPATCH_STORAGE
                    ):
                        check_buffer(b, BufferUsage.DISPATCH_STORAGE, MemoryAccess.NONE, what)
                    if b.device is not cb.device:
                        check_owner(cb.device, b, what)
                else:
                    self._check_ref(cb, b, BufferUsage.DISPATCH_STORAGE, MemoryAccess.NONE, what, 1)
            # Holding the tuple keeps its id unique while the entry exists.
            seen[id(bindings)] = bindings

    # -- shared ----------------------------------------------------------------------------

    def _check_ref(
        self,
        cb: CommandBuffer,
        ref: BufferRef,
        usage: BufferUsage,
        access: MemoryAccess,
        what: str,
        alignment: int,
    ) -> int:
        buffer = ref.buffer
        if buffer is None:
            slot = ref.slot
            if slot >= cb.binding_capacity:
                raise OutOfRangeError(
                    f"{what} uses binding-table slot {slot} but the command buffer was "
                    f"created with binding_capacity {cb.binding_capacity}"
                )
            req = self.requirements.get(slot)
            if req is None:
                req = self.requirements[slot] = BindingRequirement()
                req.first_use = what
            req.usage |= usage
            req.access |= access
            if ref.length != WHOLE_BUFFER:
                end = ref.offset + ref.length
            else:
                end = ref.offset
            if end > MAX_RANGE_END:
                # No buffer can be this large: refuse now, as a direct reference would be,
                # rather than let a backend's 64-bit program tables overflow at end().
                raise OutOfRangeError(
                    f"{what} range [{ref.offset}, {end}) of binding-table slot {slot} "
                    f"reaches past byte {MAX_RANGE_END}, beyond any buffer"
                )
            if end > req.max_byte_end:
                req.max_byte_end = end
            if alignment > req.min_alignment:
                req.min_alignment = alignment
            if slot + 1 > self.binding_count:
                self.binding_count = slot + 1
            return ref.length
        key = (id(buffer), what)
        checked = self._checked_buffers
        if checked.get(key) is not buffer:
            check_buffer(buffer, usage, access, what)
            if buffer.device is not cb.device:
                # Another device's buffer is checked every time: its group may close.
                check_owner(cb.device, buffer, what)
            else:
                checked[key] = buffer
        return resolve_range(buffer, ref.offset, ref.length)


def _len_text(n: int) -> str:
    return "WHOLE_BUFFER" if n == WHOLE_BUFFER else str(n)


# Plain ints: ``int & IntFlag`` would still call the flag's reflected operator.
_DISPATCH = int(CommandCategory.DISPATCH)
_DEVICE_VISIBLE = int(MemoryType.DEVICE_VISIBLE)
_ACCESS_ANY = int(MemoryAccess.ANY)
_DISPATCH_STORAGE = int(BufferUsage.DISPATCH_STORAGE)
# The names errors give the first bindings, made once (formatting one per binding of every
# new bindings tuple would cost more than its checks).
_NAMED_BINDINGS = 64
_BINDING_NAMES = tuple(f"dispatch binding {i}" for i in range(_NAMED_BINDINGS))


def _require_category(cb: CommandBuffer, category: CommandCategory, what: str) -> None:
    if not int(cb.categories) & int(category):
        raise FailedPreconditionError(
            f"{what} needs command category {category.name}; the command buffer was created "
            f"with categories {cb.categories!r}"
        )


def check_buffer(buffer: Any, usage: BufferUsage, access: MemoryAccess, what: str) -> None:
    """Usage, access and memory-type checks shared by commands and queue_dispatch: a
    buffer that passes is tested on plain ints (each ``IntFlag`` operator or ``has`` is a
    Python-level call); one that fails gets its error from ``_buffer_error``."""
    if buffer.__class__ is Buffer and int(buffer.memory_type) & _DEVICE_VISIBLE:
        need = int(usage)
        if int(buffer.allowed_usage) & need == need:
            need = int(access)
            if not need:
                return
            allowed = int(buffer.allowed_access)
            if allowed & _ACCESS_ANY or allowed & need == need:
                return
    _buffer_error(buffer, usage, access, what)


def _buffer_error(buffer: Any, usage: BufferUsage, access: MemoryAccess, what: str) -> None:
    """Raises the error of the first check of ``check_buffer`` that ``buffer`` fails."""
    if not isinstance(buffer, Buffer):
        raise InvalidArgumentError(f"{what} must be a Buffer, got {type(buffer).__name__}")
    if not buffer.memory_type.has(MemoryType.DEVICE_VISIBLE):
        raise PermissionDeniedError(
            f"{what}: buffer memory {buffer.memory_type!r} is not DEVICE_VISIBLE"
        )
    buffer.require_usage(usage, what)
    if access:
        buffer.require_access(access, what)


def validate_function(executable: Any, function: int) -> Any:
    """The ``FunctionInfo`` of a dispatchable function (INVALID_ARGUMENT, OUT_OF_RANGE,
    FAILED_PRECONDITION for a closed executable)."""
    if not isinstance(executable, Executable):
        raise InvalidArgumentError(f"dispatch needs an Executable, got {type(executable).__name__}")
    if executable.closed:
        raise FailedPreconditionError("dispatch of a closed executable")
    return executable.function_info(function)


def validate_constants(info: Any, constants: bytes) -> None:
    if len(constants) % 4:
        raise InvalidArgumentError(
            f"dispatch constants are {len(constants)} bytes; they must be a multiple of 4 "
            "(32-bit words)"
        )
    if len(constants) != 4 * info.constant_count:
        raise InvalidArgumentError(
            f"function {info.name!r} takes {info.constant_count} constants "
            f"({4 * info.constant_count} bytes); got {len(constants)} bytes"
        )


def validate_dispatch_flags(flags: int) -> None:
    if flags & _UNIMPLEMENTED_DISPATCH_FLAGS:
        raise UnimplementedError(
            f"dispatch flags {DispatchFlags(flags & _UNIMPLEMENTED_DISPATCH_FLAGS)!r} "
            "(custom/indirect arguments) are not implemented"
        )


def validate_config(config: Any) -> None:
    if config.__class__ is not DispatchConfig:
        raise InvalidArgumentError(
            f"dispatch config must be a DispatchConfig, got {type(config).__name__}"
        )
    ind = config.workgroup_count_ref
    if ind is not None:
        if ind.__class__ is not BufferRef:
            raise InvalidArgumentError(
                f"workgroup_count_ref must be a BufferRef, got {type(ind).__name__}"
            )
        if ind.offset % 4:
            raise InvalidArgumentError(
                f"workgroup-count parameters must be 4-byte aligned; offset {ind.offset}"
            )
        if ind.length != WHOLE_BUFFER and ind.length < 12:
            raise InvalidArgumentError(
                f"workgroup-count parameters need 12 bytes (3 x uint32); the ref has {ind.length}"
            )
        if ind.buffer is not None and ind.buffer.byte_length - ind.offset < 12:
            raise OutOfRangeError(
                f"workgroup-count parameters at offset {ind.offset} need 12 bytes; the "
                f"buffer has {ind.buffer.byte_length}"
            )


def validate_dispatch_args(
    executable: Any,
    function: int,
    config: Any,
    constants: bytes,
    bindings: tuple,
    flags: int,
) -> tuple:
    """Checks of ``Device.queue_dispatch`` (which takes direct references only); returns
    the bindings as ``BufferRef`` s."""
    info = validate_function(executable, function)
    validate_config(config)
    validate_dispatch_flags(flags)
    validate_constants(info, constants)
    refs = tuple(as_buffer_ref(b, f"dispatch binding {i}") for i, b in enumerate(bindings))
    if len(refs) < info.binding_count:
        raise InvalidArgumentError(
            f"function {info.name!r} uses {info.binding_count} bindings; got {len(refs)}"
        )
    return refs


def validate_submission(cb: CommandBuffer, table: tuple) -> None:
    """Checks at ``queue_execute``: the binding table covers every slot the recording
    uses, each with a buffer of the needed usage and a large enough range."""
    state = cb._validation
    if state is None:
        return
    count = state.binding_count
    if count and not table:
        raise InvalidArgumentError(
            f"the command buffer uses binding-table slots 0..{count - 1} but no binding "
            "table was given to queue_execute"
        )
    if len(table) < count:
        raise OutOfRangeError(
            f"binding table has {len(table)} entries; the command buffer uses {count} "
            f"(slots 0..{count - 1})"
        )
    for slot, req in state.requirements.items():
        binding: BufferBinding | None = table[slot]
        if binding is None or binding.buffer is None:
            raise InvalidArgumentError(
                f"binding-table slot {slot} is empty but the recording uses it ({req.first_use})"
            )
        buffer = binding.buffer
        # ``check_buffer`` and ``bound_range`` inline, as plain-int tests (this runs for
        # every slot of every submission); either is called only to raise its error.
        usage = int(req.usage)
        access = int(req.access)
        if not (
            isinstance(buffer, Buffer)
            and int(buffer.memory_type) & _DEVICE_VISIBLE
            and int(buffer.allowed_usage) & usage == usage
            and (
                not access
                or int(buffer.allowed_access) & _ACCESS_ANY
                or int(buffer.allowed_access) & access == access
            )
        ):
            check_buffer(buffer, req.usage, req.access, f"binding-table slot {slot}")
        offset = binding.offset
        length = binding.length
        size = buffer.byte_length
        if length == WHOLE_BUFFER:
            length = size - offset
        if length < 0 or offset + length > size:
            bound_range(table, slot)  # raises OUT_OF_RANGE naming the slot
        if req.max_byte_end > length:
            raise OutOfRangeError(
                f"binding-table slot {slot} binds {length} bytes but the recording uses "
                f"up to byte {req.max_byte_end} of it ({req.first_use})"
            )
        if offset % req.min_alignment:
            raise InvalidArgumentError(
                f"binding-table slot {slot} starts at offset {offset}, not a multiple of "
                f"{req.min_alignment} as {req.first_use} needs"
            )
