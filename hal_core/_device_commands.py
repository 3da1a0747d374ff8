"""The command-buffer, executable and dispatch methods of ``hal_core.Device``.

``Device`` inherits them from ``DeviceCommands`` so that ``_device.py`` stays readable;
they rely on the device's ``_check_open``, ``_op``, ``queue_barrier`` and ``_backend``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ._command_buffer import DISPATCH_FLAG_BITS, CommandBuffer, DispatchConfig, ExecuteFlags
from ._command_submission import (
    execute_affinity,
    new_command_buffer,
    prepare_dispatch,
    prepare_execute,
)
from ._construction import INTERNAL
from ._executable import Executable, ExecutableCache
from ._memory import QueueAffinity
from ._queue import QueueOpKind
from ._queue_checks import check_known_flags
from ._semaphore import SemaphoreList

__all__ = ["DeviceCommands"]

_ANY = QueueAffinity.ANY
_EXECUTE_FLAGS = int(ExecuteFlags.BORROW_BINDING_TABLE_LIFETIME)


class DeviceCommands:
    """Mixin of ``Device`` (its only subclass): command buffers, executables, dispatch."""

    __slots__ = ()

    if TYPE_CHECKING:  # provided by Device
        _backend: Any
        _check_open: Any
        _op: Any
        queue_barrier: Any

    def create_command_buffer(
        self,
        mode: int = 0,
        categories: int = 3,
        affinity: int = _ANY,
        binding_capacity: int = 0,
    ) -> CommandBuffer:
        """A command buffer to record into (``begin()`` ... ``end()``), then submit with
        ``queue_execute``. ``mode``: ``CommandBufferMode`` bits; ``categories``:
        ``CommandCategory`` bits; ``binding_capacity``: binding-table slots indirect
        references may use. INVALID_ARGUMENT for inconsistent arguments (e.g.
        ALLOW_INLINE_EXECUTION without ONE_SHOT or with binding slots)."""
        self._check_open()
        return new_command_buffer(self, mode, categories, affinity, binding_capacity)

    def create_executable_cache(self, identifier: str = "") -> ExecutableCache:
        """An executable cache preparing executables for this device."""
        self._check_open()
        return ExecutableCache(self, str(identifier), _token=INTERNAL)

    def queue_execute(
        self,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        command_buffer: CommandBuffer | None,
        binding_table: Any = None,
        flags: int = 0,
    ) -> None:
        """Run ``command_buffer`` (None: a barrier) once the waits are reached.

        The binding table (a ``BindingTable`` or a sequence ``BindingTable`` accepts) is
        copied now: the caller may change or drop its list at once. Unless
        ``ExecuteFlags.BORROW_BINDING_TABLE_LIFETIME``, the submission retains the command
        buffer and the table's buffers until its signals publish. FAILED_PRECONDITION for a
        command buffer not ended or a ONE_SHOT one submitted twice; OUT_OF_RANGE /
        INVALID_ARGUMENT / PERMISSION_DENIED when the table does not satisfy the recording.
        """
        if command_buffer is None:
            self.queue_barrier(affinity, wait, signal, flags)
            return
        if flags:
            flags = check_known_flags(flags, _EXECUTE_FLAGS, "execute flags")
        affinity = execute_affinity(affinity, command_buffer)
        op = self._op(QueueOpKind.EXECUTE, affinity, wait, signal)
        op.program, op.bindings, op.retained = prepare_execute(
            self, op, command_buffer, binding_table, flags
        )
        op.flags = flags
        self._backend.submit(op)

    def queue_dispatch(
        self,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        executable: Executable,
        function: int | str,
        config: DispatchConfig,
        constants: Any = b"",
        bindings: Sequence[Any] = (),
        flags: int = 0,
    ) -> None:
        """One dispatch without a command buffer. Bindings must be direct (buffers or
        direct ``BufferRef`` s); constants are copied now. Unless
        ``DispatchFlags.BORROW_RESOURCE_LIFETIMES``, the executable and buffers are
        retained until the signals publish. Same validation as ``CommandBuffer.dispatch``.
        """
        op = self._op(QueueOpKind.DISPATCH, affinity, wait, signal)
        if flags:
            flags = check_known_flags(flags, DISPATCH_FLAG_BITS, "dispatch flags")
        op.program, op.retained = prepare_dispatch(
            self, executable, function, config, constants, bindings, flags
        )
        op.bindings = ()
        op.flags = flags
        self._backend.submit(op)
