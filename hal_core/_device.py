"""The public ``Device``: object factories, queue operations and host waits.

``Device`` is a thin final class. Every queue operation validates its arguments here, at
the front door (semaphore lists, integers and ranges, buffer owners, usage and access bits,
fill patterns, flags; the shared checks are in ``_queue_checks`` and ``_ranges``), so all
backends answer the same misuse with the same status code, then hands one ``QueueOp`` to
the backend. Errors found at call time raise and queue nothing; errors found while
executing fail the signal semaphores.
"""

from __future__ import annotations

import fnmatch
import operator
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence, final

import numpy as np

from ._allocator import Allocator
from ._backend_contract import bind_device
from ._buffer import Buffer
from ._construction import INTERNAL, require_internal, sealed
from ._device_commands import DeviceCommands
from ._file import File
from ._memory import (
    WHOLE_BUFFER,
    BufferParams,
    BufferUsage,
    MemoryAccess,
    QueueAffinity,
)
from ._queue import (
    HostCallFlags,
    QueueOp,
    QueueOpKind,
)
from ._queue_checks import (
    check_buffer,
    check_known_flags,
    check_owner,
    check_transfer_source,
    check_transfer_target,
    file_offset,
    select_queue,
)
from ._queue_fast_paths import alloca_method, dealloca_method, fill_op_method, queue_op_method
from ._ranges import U64_MAX, as_flags, as_index, check_range
from ._semaphore import Semaphore, SemaphoreList, WaitMode, wait_all, wait_any
from ._status import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from .pool import QueuePoolBackend

__all__ = ["Device", "device_from_backend"]

_ANY = QueueAffinity.ANY
_HOST_CALL_FLAGS = int(
    HostCallFlags.NON_BLOCKING | HostCallFlags.WAIT_ACTIVE | HostCallFlags.RELAXED
)
_BARRIER = QueueOpKind.BARRIER


@final
@sealed
class Device(DeviceCommands):
    """A HAL device: queues, memory and object factories over a backend.

    Created by ``hal_core.create_device(uri)`` or a ``Driver`` (no public constructor;
    ``hal_core.backend.device_from_backend`` wraps a bare backend for tests and tools).
    Final. Thread-safe. Use as a
    context manager or call ``close()`` (idempotent): closing fails work still waiting on
    semaphores with CANCELLED, lets running work finish, and releases the backend.
    """

    def __init__(
        self,
        backend: Any,
        *,
        driver_name: str,
        uri: str,
        info: Any = None,
        _token: object = None,
    ) -> None:
        """Internal: hal_core passes ``_token=INTERNAL``."""
        require_internal(_token, "Device", "hal_core.create_device(uri) or a Driver")
        self._backend = backend
        self.driver_name = driver_name
        self.uri = uri
        self.info = info
        # The backend contract, resolved once (queue calls must not probe the backend).
        contract = self._contract = bind_device(backend, f"driver {driver_name!r}")
        self.queue_count: int = contract.queue_count
        self._queue_mask = (1 << self.queue_count) - 1
        # Affinity -> queue for the common exact cases (ANY, one bit); others hash below.
        self._single_queue = {1 << i: i for i in range(self.queue_count)}
        self._single_queue[_ANY] = 0
        self.allocator = Allocator(contract.allocator, self, _token=INTERNAL)
        self._submit = contract.submit
        self._submit_alloca = contract.submit_alloca
        # The backend's straight alloca path, bound into each AllocaLane (optional).
        self._bind_alloca_lane: Callable[[Any], None] | None = contract.bind_alloca_lane
        # Alloca lanes, newest first (``_queue_alloca_paths``); replaced, never mutated.
        self._alloca_lanes: list[Any] = []
        self._finalize = contract.finalize_command_buffer
        self._flush = contract.flush
        self._closed = False
        self._close_lock = threading.Lock()
        self.topology_info: Any = None
        contract.attach(self)

    # -- identity ----------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The driver-level identifier, e.g. ``local-task``."""
        return self.driver_name

    @property
    def backend(self) -> Any:
        """The backend object (second API tier, for plugin authors and tests)."""
        return self._backend

    def __repr__(self) -> str:
        try:
            state = " closed" if self._closed else ""
            return f"<hal_core.Device {self.uri!r} queues={self.queue_count}{state}>"
        except Exception:  # a repr never raises (a half-built or broken device)
            return "<hal_core.Device>"

    def query_i64(self, category: str, key: str) -> int:
        """``sysconf``-like queries; NOT_FOUND for unknown keys. Stable for the device's
        lifetime. Known to every backend: ``hal.device :: concurrency`` (queue count),
        ``hal.device.id :: <glob>`` (1 if the device id matches)."""
        if category.__class__ is not str or key.__class__ is not str:
            raise InvalidArgumentError(
                f"query_i64 takes a category and a key as str, got {category!r}, {key!r}"
            )
        if category == "hal.device.id":
            return int(fnmatch.fnmatchcase(self.driver_name, key))
        if category == "hal.device" and key == "concurrency":
            return self.queue_count
        query = self._contract.query_i64
        if query is not None:
            return query(category, key)
        raise NotFoundError(f"unknown device query {category} :: {key}")

    # -- factories -----------------------------------------------------------------------

    def create_semaphore(self, initial_value: int = 0, *, flags: int = 0) -> Semaphore:
        """A timeline semaphore starting at ``initial_value``."""
        self._check_open()
        return Semaphore(initial_value, device=self, flags=flags, _token=INTERNAL)

    def import_file(self, source: Any, access: MemoryAccess = MemoryAccess.READ) -> File:
        """A file over host memory (a buffer-protocol object, used without copying) or an
        open file descriptor / file object (duplicated)."""
        self._check_open()
        if isinstance(source, int) or hasattr(source, "fileno"):
            return File.from_fd(source, access)
        return File.from_memory(source, access)

    # -- queue helpers -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPreconditionError(f"device {self.uri!r} is closed")

    # Argument checking and op building live in _queue_checks (one place for every
    # backend); bound here as methods so the hot path pays no extra call.
    _select_queue = select_queue
    # The front door builds each QueueOp: natively for the common shape when the
    # extension is built (``_queue_fast_paths``), else the Python reference.
    _op = queue_op_method
    # queue_fill's checks and op (natively for the common case, as ``_op``).
    _fill_op = fill_op_method

    def _reachable(self, buffer: Buffer, what: str) -> bool:
        """For a buffer of a device other than this one: True when it is another member
        of this device's group (the caller routes through the group), False for a buffer
        of no device (host memory: this device runs the op); INVALID_ARGUMENT for any
        other device's buffer."""
        check_owner(self, buffer, what)
        return buffer.device is not None

    # -- queue operations ----------------------------------------------------------------

    def queue_barrier(
        self,
        affinity: int = _ANY,
        wait: SemaphoreList = (),
        signal: SemaphoreList = (),
        flags: int = 0,
    ) -> None:
        """Signal ``signal`` once every ``wait`` is reached (no work)."""
        op = self._op(_BARRIER, affinity, wait, signal)
        if flags:
            op.flags = as_flags(flags, "barrier flags")
        self._submit(op)

    def queue_fill(
        self,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        target: Buffer,
        target_offset: int,
        length: int,
        pattern: bytes | int,
        *,
        pattern_length: int | None = None,
        flags: int = 0,
    ) -> None:
        """Fill ``[target_offset, +length)`` of ``target`` with a 1-, 2- or 4-byte pattern.

        ``pattern`` is bytes, or an int with ``pattern_length``. INVALID_ARGUMENT for other
        pattern sizes, an offset/length not a multiple of it or a buffer of another device;
        OUT_OF_RANGE for ranges past the buffer; PERMISSION_DENIED without TRANSFER_TARGET
        usage.
        """
        op = self._fill_op(
            affinity, wait, signal, target, target_offset, length, pattern, pattern_length, flags
        )
        if target.device is not self and self._reachable(target, "fill target"):
            self._submit_in_group(op, target, True)
            return
        self._submit(op)

    def queue_update(
        self,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        source: Any,
        source_offset: int,
        target: Buffer,
        target_offset: int,
        length: int,
        *,
        flags: int = 0,
    ) -> None:
        """Copy host bytes into ``target``. The bytes are captured now: the caller may
        change ``source`` as soon as this returns. Any length works."""
        op = self._op(QueueOpKind.UPDATE, affinity, wait, signal)
        check_buffer(target, "update target")
        try:
            src = memoryview(source).cast("B")
        except TypeError:
            raise InvalidArgumentError(
                f"update source must be a buffer-protocol object, got {type(source).__name__}"
            ) from None
        if source_offset.__class__ is not int:
            source_offset = as_index(source_offset, "update source offset")
        length = check_range(source_offset, length, len(src), "update source (host bytes)")
        check_transfer_target(target, "queue_update")
        if target_offset.__class__ is not int:
            target_offset = as_index(target_offset, "update target offset")
        check_range(target_offset, length, target.byte_length, "buffer")
        op.target = target
        op.target_offset = target_offset
        op.length = length
        op.payload = np.frombuffer(bytes(src[source_offset : source_offset + length]), np.uint8)
        op.flags = as_flags(flags, "update flags") if flags else 0
        if target.device is not self and self._reachable(target, "update target"):
            self._submit_in_group(op, target, True)
            return
        self._submit(op)

    def queue_copy(
        self,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        source: Buffer,
        source_offset: int,
        target: Buffer,
        target_offset: int,
        length: int,
        *,
        flags: int = 0,
    ) -> None:
        """Copy between buffers. INVALID_ARGUMENT for overlapping ranges of one
        allocation or a buffer of another device; OUT_OF_RANGE past either end;
        PERMISSION_DENIED for missing usage."""
        op = self._op(QueueOpKind.COPY, affinity, wait, signal)
        check_buffer(source, "copy source")
        check_buffer(target, "copy target")
        check_transfer_source(source, "queue_copy source")
        check_transfer_target(target, "queue_copy target")
        if source_offset.__class__ is not int:
            source_offset = as_index(source_offset, "copy source offset")
        if target_offset.__class__ is not int:
            target_offset = as_index(target_offset, "copy target offset")
        if length.__class__ is not int:
            length = as_index(length, "copy length")
        if length == WHOLE_BUFFER:
            length = min(source.byte_length - source_offset, target.byte_length - target_offset)
        check_range(source_offset, length, source.byte_length, "source buffer")
        check_range(target_offset, length, target.byte_length, "target buffer")
        if source._root is target._root and length:
            s = source.byte_offset + source_offset
            t = target.byte_offset + target_offset
            if s < t + length and t < s + length:
                raise InvalidArgumentError(
                    f"copy ranges overlap within one allocation: source [{s}, {s + length}) "
                    f"and target [{t}, {t + length})"
                )
        flags = as_flags(flags, "copy flags") if flags else 0
        if (source.device is not self and self._reachable(source, "copy source")) | (
            target.device is not self and self._reachable(target, "copy target")
        ):
            # A buffer of another member: the group picks native access, a peer copy or
            # a copy staged through host memory from the topology (device groups).
            if self.topology_info.group.route_queue_copy(
                self,
                affinity,
                wait,
                signal,
                source,
                source_offset,
                target,
                target_offset,
                length,
            ):
                return
        op.source = source
        op.source_offset = source_offset
        op.target = target
        op.target_offset = target_offset
        op.length = length
        op.flags = flags
        self._submit(op)

    def queue_read(
        self,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        source_file: File,
        source_offset: int,
        target: Buffer,
        target_offset: int,
        length: int,
        *,
        flags: int = 0,
    ) -> None:
        """Read ``length`` file bytes at ``source_offset`` into ``target``.
        FAILED_PRECONDITION for a closed file; a range past the end of the file fails
        the signals with OUT_OF_RANGE when the read runs (a file may grow until then)."""
        op = self._op(QueueOpKind.READ, affinity, wait, signal)
        if not isinstance(source_file, File):
            raise InvalidArgumentError(f"expected a File, got {type(source_file).__name__}")
        source_file.check_open()
        source_file.check_access(MemoryAccess.READ, "queue_read")
        check_buffer(target, "read target")
        target.require_usage(BufferUsage.TRANSFER_TARGET, "queue_read")
        if target_offset.__class__ is not int:
            target_offset = as_index(target_offset, "read target offset")
        length = check_range(target_offset, length, target.byte_length, "buffer")
        source_offset = file_offset(source_offset, length)
        op.source = source_file
        op.source_offset = source_offset
        op.target = target
        op.target_offset = target_offset
        op.length = length
        op.flags = as_flags(flags, "read flags") if flags else 0
        if target.device is not self and self._reachable(target, "read target"):
            self._submit_in_group(op, target, True)
            return
        self._submit(op)

    def queue_write(
        self,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        source: Buffer,
        source_offset: int,
        target_file: File,
        target_offset: int,
        length: int,
        *,
        flags: int = 0,
    ) -> None:
        """Write ``length`` bytes of ``source`` into the file at ``target_offset``.
        FAILED_PRECONDITION for a closed file."""
        op = self._op(QueueOpKind.WRITE, affinity, wait, signal)
        if not isinstance(target_file, File):
            raise InvalidArgumentError(f"expected a File, got {type(target_file).__name__}")
        target_file.check_open()
        target_file.check_access(MemoryAccess.WRITE, "queue_write")
        check_buffer(source, "write source")
        source.require_usage(BufferUsage.TRANSFER_SOURCE, "queue_write")
        if source_offset.__class__ is not int:
            source_offset = as_index(source_offset, "write source offset")
        length = check_range(source_offset, length, source.byte_length, "buffer")
        target_offset = file_offset(target_offset, length)
        op.source = source
        op.source_offset = source_offset
        op.target = target_file
        op.target_offset = target_offset
        op.length = length
        op.flags = as_flags(flags, "write flags") if flags else 0
        if source.device is not self and self._reachable(source, "write source"):
            self._submit_in_group(op, source, False)
            return
        self._submit(op)

    def queue_host_call(
        self,
        affinity: int,
        wait: SemaphoreList,
        signal: SemaphoreList,
        fn: Callable[..., Any],
        args: Sequence[int] = (0, 0, 0, 0),
        *,
        flags: int = 0,
    ) -> None:
        """Call ``fn(args, context)`` on a host thread once the waits are reached.

        Blocking (default): returning None signals ``signal``; raising (or returning a
        HalError / error StatusCode) fails every signal with that code; returning
        ``StatusCode.DEFERRED`` hands the signals to the callback (``context.signal()``).
        NON_BLOCKING: the signals are reached first, the callback gets an empty signal
        list and its errors are only reported. Callbacks must not block on the queue.
        """
        op = self._op(QueueOpKind.HOST_CALL, affinity, wait, signal)
        if not callable(fn):
            raise InvalidArgumentError(f"host call needs a callable, got {type(fn).__name__}")
        try:
            args = tuple(operator.index(a) for a in args)
        except TypeError:
            raise InvalidArgumentError(f"host call args must be 4 integers, got {args!r}") from None
        if len(args) != 4 or not all(0 <= a <= U64_MAX for a in args):
            raise InvalidArgumentError(
                f"host call args must be exactly 4 integers in 0..2**64-1, got {args!r}"
            )
        op.callback = fn
        op.args = args
        op.flags = HostCallFlags(
            check_known_flags(flags, _HOST_CALL_FLAGS, "host call flags") if flags else 0
        )
        self._submit(op)

    if TYPE_CHECKING:

        def queue_alloca(
            self,
            affinity: int,
            wait: SemaphoreList,
            signal: SemaphoreList,
            params: BufferParams | None,
            allocation_size: int,
            *,
            pool: Any = None,
            flags: int = 0,
        ) -> Buffer:
            """Return a buffer at once (metadata valid, placement ASYNCHRONOUS on exactly one
            queue); its memory is committed when the waits resolve and ``signal`` publishes.
            Use it only after ``signal``; release it with ``queue_dealloca``."""
            ...

        def queue_dealloca(
            self,
            affinity: int,
            wait: SemaphoreList,
            signal: SemaphoreList,
            buffer: Buffer,
            *,
            flags: int = 0,
        ) -> None:
            """Release a ``queue_alloca`` buffer once the waits resolve. A buffer that is
            not ASYNCHRONOUS (or has INDETERMINATE_LIFETIME) makes this a barrier, as in
            IREE. PREFER_ORIGIN runs it on the queue the buffer was allocated on."""
            ...

    else:
        # Native for the common case (one C call; the straight path through the backend's
        # pool machine when it binds an alloca lane), else the Python references
        # (``_queue_alloca_paths``: ``alloca_reference``, ``dealloca_reference``).
        queue_alloca = alloca_method
        queue_dealloca = dealloca_method

    def query_queue_pool_backend(self, affinity: int) -> QueuePoolBackend:
        """The slab provider, notification and epoch query for building a pool that
        serves queue ``affinity`` (its first selected queue) with ``queue_alloca``.
        INVALID_ARGUMENT for an affinity selecting no queue; UNIMPLEMENTED when the backend
        has no pool substrate; FAILED_PRECONDITION outside a device group."""
        self._check_open()
        queue = self._select_queue(affinity)
        query = self._contract.query_queue_pool_backend
        if query is None:
            raise UnimplementedError(
                f"{self.driver_name} does not expose queue pool backends; pass pool=None "
                "to queue_alloca to use its default allocation"
            )
        if self.topology_info is None:
            # As IREE: a device is topology complete (knows its frontier axes) only
            # inside a device group, and pools name those axes.
            raise FailedPreconditionError(
                f"device {self.uri!r} is in no device group, so query_queue_pool_backend "
                "cannot name its queue axes; build one first, e.g. "
                "hal_core.DeviceGroup.from_devices([device], owns_devices=False)"
            )
        return query(queue)

    def _submit_in_group(self, op: QueueOp, buffer: Buffer, write: bool) -> None:
        """Submit a validated op touching ``buffer`` of another device-group member: here
        when the topology lets this device reach it natively, else on the buffer's own
        device (same waits and signals; its queue of the same index, or its last)."""
        runner = self.topology_info.group.runner_for(self, buffer, write=write)
        if runner is not self:
            runner._check_open()
            if op.queue >= runner.queue_count:
                op.queue = runner.queue_count - 1
            runner._submit(op)
            return
        self._submit(op)

    def queue_flush(self, affinity: int = _ANY) -> None:
        """Push out any locally batched work (a no-op for backends that do not batch)."""
        self._check_open()
        affinity = as_flags(affinity, "queue affinity")
        flush = self._flush
        if flush is not None:
            flush(affinity & self._queue_mask)

    # -- host waits ------------------------------------------------------------------------

    def wait_semaphores(
        self, mode: int, semaphores: SemaphoreList, timeout: float | None = None
    ) -> int:
        """Wait for all (``WaitMode.ALL``) or any (``WaitMode.ANY``) of the pairs. Returns
        the satisfied index for ANY (-1 for ALL or an empty list)."""
        if mode == WaitMode.ANY:
            return wait_any(semaphores, timeout)
        if mode != WaitMode.ALL:
            raise InvalidArgumentError(
                f"wait mode must be WaitMode.ALL (0) or WaitMode.ANY (1), got {mode!r}"
            )
        wait_all(semaphores, timeout)
        return -1

    # -- profiling ------------------------------------------------------------------------

    def profiling_begin(self, options: Any) -> Any:
        """Start this device's profiling session (``hal_core.profiling.ProfilingOptions``)
        and return it (None when no data family is requested: nothing starts).

        One session at a time: FAILED_PRECONDITION while one is active. Families the
        backend cannot produce are UNIMPLEMENTED (named); a library or device they need
        that is missing is UNAVAILABLE; families without a sink are INVALID_ARGUMENT.
        Calls each sink's ``begin_session`` on this thread. Thread-safe.
        """
        from .profiling._control import profiling_begin

        try:
            return profiling_begin(self, options)
        finally:
            self._submit = self._backend.submit  # the backend may have installed taps

    def profiling_flush(self) -> None:
        """Hand everything captured so far to the sinks, on this thread, without holding
        queue locks. FAILED_PRECONDITION without a session; RESOURCE_EXHAUSTED when a
        precise stream overflowed (after writing what was captured)."""
        from .profiling._control import profiling_flush

        profiling_flush(self)

    def profiling_end(self) -> None:
        """Flush and end the session. Always releases it and ends every sink, then raises
        the first error (if any). FAILED_PRECONDITION without a session. Records of work
        still in flight after this returns are not captured."""
        from .profiling._control import profiling_end

        try:
            profiling_end(self)
        finally:
            self._submit = self._backend.submit  # taps removed: back to the plain path

    def create_stream(self, affinity: int = _ANY) -> Any:
        """An in-order ``hal_core.Stream`` over a new timeline semaphore, on the first
        queue ``affinity`` selects (INVALID_ARGUMENT when it selects none)."""
        from ._stream import Stream  # deferred: streams are a layer above Device

        self._check_open()
        if affinity.__class__ is not int and not isinstance(affinity, int):
            raise InvalidArgumentError(f"stream affinity must be an int, got {affinity!r}")
        return Stream(self, 1 << self._select_queue(affinity))

    # -- lifetime --------------------------------------------------------------------------

    def close(self, timeout: float | None = 30.0) -> None:
        """End a profiling session still open, fail queued work that is still waiting
        (CANCELLED), let running work finish (up to ``timeout`` seconds), then release the
        backend. Idempotent.

        The session ends first because a backend's profiling end reads device state
        (dispatch timestamps, counter buffers) that the backend's close releases; work that
        completes while the device closes is therefore not in the session."""
        with self._close_lock:
            if self._closed:
                return
            for lane in self._alloca_lanes:
                lane.valid = False  # the native alloca path takes a valid lane as open
            self._closed = True
        self.allocator.close()
        if self.__dict__.get("_profiling_session") is not None:
            self.profiling_end()
        self._backend.close(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def device_from_backend(backend: Any, *, driver_name: str, uri: str, info: Any = None) -> Device:
    """A public ``Device`` over ``backend`` (a ``hal_core.backend.DeviceBackend``) made
    outside any driver: for backend tests and tools. INVALID_ARGUMENT naming what is
    missing when ``backend`` lacks a mandatory member."""
    return Device(backend, driver_name=driver_name, uri=uri, info=info, _token=INTERNAL)
