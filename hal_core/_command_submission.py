"""Turning command buffers and single dispatches into queue operations.

``Device.queue_execute`` and ``Device.queue_dispatch`` call these to validate at call time
and to build what the backend's ``QueueOp`` carries: the replay program, the binding table
captured as an immutable tuple, and the ``retained`` references that keep resources alive
until the op's signals publish (dropped by the backend on completion).
"""

from __future__ import annotations

from operator import is_ as _is
from typing import TYPE_CHECKING, Any
from weakref import ref as _weak

from ._buffer import Buffer, resolve_range
from ._buffer_ref import BufferRef
from ._command_buffer import (
    CMD_DISPATCH,
    BindingTable,
    CommandBuffer,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    DispatchFlags,
    ExecuteFlags,
    bindings_tuple,
    check_queue_affinity,
    constants_bytes,
    function_ordinal,
)
from ._command_buffer_validation import (
    ValidationState,
    check_buffer,
    validate_dispatch_args,
    validate_submission,
)
from ._construction import INTERNAL
from ._executable import Executable
from ._memory import WHOLE_BUFFER, BufferUsage, MemoryAccess, MemoryType
from ._queue_checks import check_owner
from ._ranges import as_flags, as_index
from ._status import FailedPreconditionError, InvalidArgumentError, UnimplementedError

__all__ = [
    "execute_affinity",
    "new_command_buffer",
    "prepare_dispatch",
    "prepare_dispatch_reference",
    "prepare_execute",
]

_MODES = (
    CommandBufferMode.ONE_SHOT
    | CommandBufferMode.ALLOW_INLINE_EXECUTION
    | CommandBufferMode.UNVALIDATED
    | CommandBufferMode.UNRETAINED
)
# Plain ints for the per-call tests (an IntFlag operator is a Python-level call that
# builds a new flag), and every valid mode and category word mapped to its flag member
# once (constructing a flag costs about a microsecond).
_ONE_SHOT = int(CommandBufferMode.ONE_SHOT)
_INLINE = int(CommandBufferMode.ALLOW_INLINE_EXECUTION)
_UNVALIDATED = int(CommandBufferMode.UNVALIDATED)
_ONE_SHOT_OR_INLINE = _ONE_SHOT | _INLINE
_BORROW_TABLE = int(ExecuteFlags.BORROW_BINDING_TABLE_LIFETIME)
_MODE_OF: dict[int, CommandBufferMode] = {
    bits: CommandBufferMode(bits) for bits in range(int(_MODES) + 1) if not bits & ~int(_MODES)
}
_ANY_CATEGORY = int(CommandCategory.ANY)
_CATEGORY_OF: dict[int, CommandCategory] = {
    bits: CommandCategory(bits or _ANY_CATEGORY) for bits in range(_ANY_CATEGORY + 1)
}
_MAX_CAPACITY = 1 << 24
_new = object.__new__
_set_ref_buffer = BufferRef.__dict__["buffer"].__set__
_set_ref_offset = BufferRef.__dict__["offset"].__set__
_set_ref_length = BufferRef.__dict__["length"].__set__
_set_ref_slot = BufferRef.__dict__["slot"].__set__
_ONE_SHOT_UNRETAINED = _ONE_SHOT | int(CommandBufferMode.UNRETAINED)
_BORROW_RESOURCES = int(DispatchFlags.BORROW_RESOURCE_LIFETIMES)
_UNIMPLEMENTED_DISPATCH_FLAGS = int(
    DispatchFlags.CUSTOM_DIRECT_ARGUMENTS
    | DispatchFlags.DYNAMIC_INDIRECT_ARGUMENTS
    | DispatchFlags.STATIC_INDIRECT_ARGUMENTS
)
_DEVICE_VISIBLE = int(MemoryType.DEVICE_VISIBLE)
_DISPATCH_STORAGE = int(BufferUsage.DISPATCH_STORAGE)


def new_command_buffer(
    device: Any, mode: int, categories: int, affinity: int, binding_capacity: int
) -> CommandBuffer:
    if mode.__class__ is not int:
        mode = as_flags(mode, "command buffer mode")
    flag_mode = _MODE_OF.get(mode)
    if flag_mode is None:
        mode = as_flags(mode, "command buffer mode")  # a malformed word says so first
        raise InvalidArgumentError(
            f"unknown command buffer mode bits {mode & ~int(_MODES):#x}; known: {_MODES!r}"
        )
    if categories.__class__ is not int:
        categories = as_flags(categories, "command categories")
    flag_categories = _CATEGORY_OF.get(categories)
    if flag_categories is None:
        categories = as_flags(categories, "command categories")
        raise InvalidArgumentError(f"categories must be CommandCategory bits, got {categories!r}")
    affinity = check_queue_affinity(affinity)
    if not affinity & device._queue_mask:
        raise InvalidArgumentError(
            f"queue affinity {affinity:#x} selects no queue of this device "
            f"({device.queue_count} queues)"
        )
    if binding_capacity.__class__ is not int:
        binding_capacity = as_index(binding_capacity, "binding_capacity")
    if not 0 <= binding_capacity < _MAX_CAPACITY:
        raise InvalidArgumentError(
            f"binding_capacity must be an int in 0..{_MAX_CAPACITY - 1}, got {binding_capacity!r}"
        )
    if mode & _INLINE:
        if not mode & _ONE_SHOT or binding_capacity:
            raise InvalidArgumentError(
                "ALLOW_INLINE_EXECUTION needs ONE_SHOT and binding_capacity 0 (inline "
                f"execution cannot wait for a binding table); got mode {flag_mode!r}, "
                f"binding_capacity {binding_capacity}"
            )
    validation = None if mode & _UNVALIDATED else ValidationState(flag_categories)
    return CommandBuffer(
        device,
        flag_mode,
        flag_categories,
        affinity,
        binding_capacity,
        validation,
        _token=INTERNAL,
    )


def execute_affinity(affinity: int, cb: Any) -> int:
    """The queues a submission of ``cb`` may use: the requested affinity narrowed to the
    command buffer's (IREE: a command buffer may be submitted on a subset of its
    affinity). INVALID_ARGUMENT when they do not meet."""
    if affinity.__class__ is not int:
        affinity = as_flags(affinity, "queue affinity")
    if cb.__class__ is not CommandBuffer:
        return affinity
    narrowed = affinity & cb.queue_affinity
    if not narrowed:
        raise InvalidArgumentError(
            f"queue affinity {affinity:#x} is outside the command buffer's affinity "
            f"{cb.queue_affinity:#x}"
        )
    return narrowed


def _capture_table(binding_table: Any) -> tuple:
    if binding_table is None:
        return ()
    if isinstance(binding_table, BindingTable):
        return binding_table.bindings
    try:
        return BindingTable(binding_table).bindings
    except TypeError:  # not iterable
        raise InvalidArgumentError(
            "binding table must be a BindingTable or a sequence of bindings, got "
            f"{type(binding_table).__name__}"
        ) from None


def prepare_execute(
    device: Any, op: Any, cb: Any, binding_table: Any, flags: int
) -> tuple[Any, tuple, Any]:
    """Validate a ``queue_execute``; returns ``(program, table, retained)``. ``flags`` is
    a plain int (``Device.queue_execute`` checked it). No lock."""
    if not isinstance(cb, CommandBuffer):
        raise InvalidArgumentError(
            f"queue_execute needs a CommandBuffer or None, got {type(cb).__name__}"
        )
    if cb.device is not device:
        raise InvalidArgumentError("the command buffer was created by another device")
    program = cb.program
    if program is None or not cb.is_ended:
        raise FailedPreconditionError(
            "queue_execute of a command buffer that was not recorded and ended (call "
            "begin(), record, end()) or that was closed"
        )
    mode = int(cb.mode)
    if mode & _ONE_SHOT_OR_INLINE:
        if mode & _ONE_SHOT and cb._submitted:
            raise FailedPreconditionError(
                "a ONE_SHOT command buffer may be submitted once; record a new one or "
                "create it without ONE_SHOT to reuse it"
            )
        if mode & _INLINE and op.waits:
            raise InvalidArgumentError(
                "a command buffer recorded with ALLOW_INLINE_EXECUTION cannot wait on "
                "semaphores; submit it with an empty wait list"
            )
    table = _capture_table(binding_table)
    for i, binding in enumerate(table):
        # Every mode, UNVALIDATED included: another device's memory may not be mapped
        # for this one, and its faults would take the whole queue down.
        if binding is not None and binding.buffer is not None:
            if binding.buffer.device is not device:
                check_owner(device, binding.buffer, f"binding-table slot {i}")
    validate_submission(cb, table)
    if mode & _ONE_SHOT:
        cb._submitted = True
    if flags & _BORROW_TABLE:
        return program, table, cb
    return program, table, (cb, table)


class DispatchUse:
    """One accepted ``queue_dispatch``: what it was called with and the command built for
    it. Its op retains it until the signals publish (it holds the executable, config,
    bindings and references), and ``prepare_dispatch`` remembers the latest one weakly so
    that the next call with the same objects reuses its command. Immutable once built."""

    __slots__ = (
        "device",
        "executable",
        "function",
        "config",
        "constants",
        "flags",
        "bindings",
        "command",
        "__weakref__",
    )

    if TYPE_CHECKING:
        device: Any
        executable: Executable
        function: int
        config: DispatchConfig
        constants: bytes
        flags: int
        bindings: tuple
        command: tuple


def _nothing() -> None:
    return None


# The latest ``DispatchUse`` built, weakly (a dead reference once its op completed and
# nothing else holds it). Module-wide: a loop on one device is what it serves, and a
# replaced or stale entry only costs a miss. Reads and writes of one global are atomic.
_last_use: Any = _nothing


def prepare_dispatch(
    device: Any,
    executable: Any,
    function: Any,
    config: Any,
    constants: Any,
    bindings: Any,
    flags: int,
) -> tuple[Any, Any]:
    """Validate a ``queue_dispatch``; returns ``(program, retained)``. ``flags`` is a
    plain int when set (``Device.queue_dispatch`` checked its bits). No lock.

    Three paths, one outcome. A call repeating the latest accepted one (the same
    executable, bindings and config objects, equal function, constants and flags) while
    that one's ``DispatchUse`` is alive (its op in flight) reuses its command: its
    buffers' usage, memory type, owner and size never change and were checked then; only
    what can change, the executable being closed, is tested again. Otherwise the common
    call (an open executable, an in-range ordinal, a static config, the function's
    constant bytes, direct bindings of this device's own buffers) is checked by plain
    tests inline. Anything else (an error, another device's or host buffers, an indirect
    config) goes through ``prepare_dispatch_reference``, which raises the error or accepts
    the call the slow way."""
    global _last_use
    if function.__class__ is not int:
        function = function_ordinal(executable, function)
    if constants.__class__ is not bytes:
        constants = constants_bytes(constants)
    if bindings.__class__ is not tuple:
        bindings = bindings_tuple(bindings)
    use = _last_use()
    if use is not None:
        held = use.bindings
        if (
            use.executable is executable
            and use.device is device
            and use.config is config
            and use.function == function
            and use.flags == flags
            and use.constants == constants
            and len(held) == len(bindings)
            and (held is bindings or all(map(_is, held, bindings)))
            and not executable._closed
        ):
            return device._finalize([use.command], _ONE_SHOT_UNRETAINED, 0), use
    if executable.__class__ is not Executable or executable._closed:
        return prepare_dispatch_reference(
            device, executable, function, config, constants, bindings, flags
        )
    functions = executable.functions
    finalize = device._finalize
    if (
        not 0 <= function < len(functions)
        or config.__class__ is not DispatchConfig
        or config.workgroup_count_ref is not None
        or (flags and flags & _UNIMPLEMENTED_DISPATCH_FLAGS)
        or finalize is None
    ):
        return prepare_dispatch_reference(
            device, executable, function, config, constants, bindings, flags
        )
    info = functions[function]
    if len(constants) != info.constant_count << 2 or len(bindings) < info.binding_count:
        return prepare_dispatch_reference(
            device, executable, function, config, constants, bindings, flags
        )
    refs: list[BufferRef] = []
    buffer: Any
    for b in bindings:
        if b.__class__ is Buffer:
            buffer = b
            # ``BufferRef(b)`` without its converters (each a Python-level call).
            b = _new(BufferRef)
            _set_ref_buffer(b, buffer)
            _set_ref_offset(b, 0)
            _set_ref_length(b, WHOLE_BUFFER)
            _set_ref_slot(b, 0)
        elif b.__class__ is BufferRef:
            buffer = b.buffer
            # The converters made offset and length ints in 0..2**64-1: only the fit
            # against the buffer is left (``resolve_range``'s test).
            if buffer.__class__ is not Buffer or (
                b.offset + b.length > buffer.byte_length
                if b.length != WHOLE_BUFFER
                else b.offset > buffer.byte_length
            ):
                break
        else:
            break
        # ``check_buffer`` (DISPATCH_STORAGE, no access) and ``check_owner`` for this
        # device's own buffers, on plain ints.
        if (
            buffer.device is not device
            or not int(buffer.memory_type) & _DEVICE_VISIBLE
            or int(buffer.allowed_usage) & _DISPATCH_STORAGE != _DISPATCH_STORAGE
        ):
            break
        refs.append(b)
    else:
        command = (CMD_DISPATCH, executable, function, config, constants, tuple(refs), flags)
        program = finalize([command], _ONE_SHOT_UNRETAINED, 0)
        if flags and flags & _BORROW_RESOURCES:
            # Nothing retained: nothing to remember either (a use is alive only while
            # an op holds it).
            return program, executable
        # Built field by field: a Python ``__init__`` call costs more than the stores.
        use = _new(DispatchUse)
        use.device = device
        use.executable = executable
        use.function = function
        use.config = config
        use.constants = constants
        use.flags = flags
        use.bindings = bindings
        use.command = command
        _last_use = _weak(use)
        return program, use
    return prepare_dispatch_reference(
        device, executable, function, config, constants, bindings, flags
    )


def prepare_dispatch_reference(
    device: Any,
    executable: Any,
    function: int,
    config: Any,
    constants: bytes,
    bindings: tuple,
    flags: int,
) -> tuple[Any, Any]:
    """``prepare_dispatch`` checked step by step in IREE's order (what each error says
    depends on it), for ``function`` an int, ``constants`` bytes and ``bindings`` a tuple.
    The reference of the inline path, and the path of everything it does not accept."""
    refs = validate_dispatch_args(executable, function, config, constants, bindings, flags)
    for i, ref in enumerate(refs):
        if ref.buffer is None:
            raise InvalidArgumentError(
                f"queue_dispatch binding {i} is indirect (slot {ref.slot}); queue_dispatch "
                "takes direct references only (use a command buffer for binding tables)"
            )
        check_buffer(
            ref.buffer, BufferUsage.DISPATCH_STORAGE, MemoryAccess.NONE, f"dispatch binding {i}"
        )
        if ref.buffer.device is not device:
            check_owner(device, ref.buffer, f"dispatch binding {i}")
        resolve_range(ref.buffer, ref.offset, ref.length)
    ind = config.workgroup_count_ref
    if ind is not None:
        if ind.buffer is None:
            raise InvalidArgumentError(
                "queue_dispatch workgroup-count parameters must be a direct reference"
            )
        check_buffer(
            ind.buffer,
            BufferUsage.DISPATCH_INDIRECT_PARAMETERS,
            MemoryAccess.READ,
            "dispatch workgroup-count parameters",
        )
        if ind.buffer.device is not device:
            check_owner(device, ind.buffer, "dispatch workgroup-count parameters")
        resolve_range(ind.buffer, ind.offset, ind.length)
    finalize = device._finalize
    if finalize is None:
        raise UnimplementedError(f"{device.uri} does not implement dispatch")
    command = (CMD_DISPATCH, executable, function, config, constants, refs, flags)
    program = finalize([command], _ONE_SHOT_UNRETAINED, 0)
    if flags & _BORROW_RESOURCES:
        return program, executable
    return program, (executable, refs, config)
