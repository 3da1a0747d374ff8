"""Turning command buffers and single dispatches into queue operations.

``Device.queue_execute`` and ``Device.queue_dispatch`` call these to validate at call time
and to build what the backend's ``QueueOp`` carries: the replay program, the binding table
captured as an immutable tuple, and the ``retained`` references that keep resources alive
until the op's signals publish (dropped by the backend on completion).
"""

from __future__ import annotations

from typing import Any

from ._buffer import resolve_range
from ._command_buffer import (
    CMD_DISPATCH,
    BindingTable,
    CommandBuffer,
    CommandBufferMode,
    CommandCategory,
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
from ._memory import BufferUsage, MemoryAccess
from ._queue_checks import check_owner
from ._ranges import as_flags, as_index
from ._status import FailedPreconditionError, InvalidArgumentError, UnimplementedError

__all__ = ["execute_affinity", "new_command_buffer", "prepare_dispatch", "prepare_execute"]

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


def prepare_dispatch(
    device: Any,
    executable: Any,
    function: Any,
    config: Any,
    constants: Any,
    bindings: Any,
    flags: int,
) -> tuple[Any, Any]:
    """Validate a ``queue_dispatch``; returns ``(program, retained)``."""
    if function.__class__ is not int:
        function = function_ordinal(executable, function)
    if constants.__class__ is not bytes:
        constants = constants_bytes(constants)
    if bindings.__class__ is not tuple:
        bindings = bindings_tuple(bindings)
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
    program = finalize([command], CommandBufferMode.ONE_SHOT | CommandBufferMode.UNRETAINED, 0)
    if flags & DispatchFlags.BORROW_RESOURCE_LIFETIMES:
        return program, executable
    return program, (executable, refs, config)
