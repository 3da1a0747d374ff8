"""Streams: an in-order queue over one timeline semaphore, and awaitable timepoints.

A ``Stream`` (``Device.create_stream``) turns the explicit queue operations into the
in-order model of CUDA, CuPy or PyOpenCL streams. Op ``n`` of a stream waits on the
stream's semaphore at ``n - 1`` and signals it to ``n``, so every op runs after the one
before, on one queue, and the semaphore value says how far the stream got. There is no
second execution path: every op goes through the device's queue front door with the
validation of the public ``Device.queue_*`` method, and errors found at the call raise
there and leave the stream as it was.

Invariants:

* ``_value`` is the number of ops submitted. ``_last`` is the wait list that orders the
  next op after everything before it: the previous op's own signal list
  ``((semaphore, _value),)`` (``()`` before the first op), so each op builds one pair and
  one 1-tuple, as a raw call does; or another stream's ``_last`` that is known to come
  after ours (see ``_cover``).
* ``_next`` is the wait list the next op passes: ``_last`` itself (the same object) when
  no cross-stream wait is pending, else a new tuple ``_last + pending`` built by ``wait``,
  so an op reads one attribute instead of joining lists. The pending waits
  (``_next[len(_last):]``) are dropped only when an op (or a barrier, when
  ``record``/``synchronize`` come first) carrying them was accepted.
* ``_cover`` is the ``_last`` tuple of the stream this one last waited on: every op this
  stream submits from then on runs after it. When stream B waits on A and A's ``_cover``
  is B's current ``_next`` (A already waited on B's latest, and B has nothing pending:
  a ``_next`` with pending waits is a fresh tuple that no ``_cover`` can be), B's next op
  may wait on A's ``_last`` alone (compared by identity: a tuple object is one point in
  time).
* ``_kinds[n & _RING_MASK]`` is the kind of op ``n``, for naming the failing op at
  ``synchronize``. A failure is sticky on the semaphore and every later op waits on it, so
  the failing op is the first one not reached: ``semaphore._value + 1``.
* ``barrier`` does what ``Device.queue_barrier`` does without flags, inline: it builds
  its ``QueueOp`` with the device's front door (``queue_op``, the native builder when it
  is built) and hands it to ``Device._submit``, read per call so profiling taps see it.
  Same checks, same submit, one Python frame fewer on the op that carries ``wait`` s and
  ``record`` s. Every other op is one call of its public ``Device.queue_*`` method.
* A stream is used by one thread at a time, like a command buffer being recorded (two
  threads submitting at once would signal one value twice, which fails the stream).
  ``record``, ``wait`` on another stream's timepoint, ``synchronize`` and awaiting are
  the ways to coordinate.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Generator, Sequence

import numpy as np

from ._async_wait import wait_async
from ._buffer import Buffer, resolve_range
from ._command_buffer import DispatchConfig
from ._memory import WHOLE_BUFFER, BufferParams, BufferUsage, MemoryAccess, MemoryType
from ._queue import QueueOpKind
from ._queue_fast_paths import queue_op
from ._semaphore import Semaphore
from ._status import (
    DeadlineExceededError,
    HalError,
    InvalidArgumentError,
    StatusCode,
    error_for,
)
from ._timepoint import Timepoint
from ._typed_constants import pack_constants

__all__ = ["Stream", "Timepoint"]

# A list, not a bytearray: CPython specializes list item stores (a bytearray store costs
# several times more, on every op).
_RING_MASK = 1023
# Op kinds as the stream names them in errors (index = the entry in ``_kinds``).
_KIND_NAMES = (
    "?",
    "barrier",
    "fill",
    "update",
    "copy",
    "dispatch",
    "execute",
    "alloca",
    "dealloca",
    "host_call",
    "upload",
    "download",
    "read",
    "write",
)
(
    _K_BARRIER,
    _K_FILL,
    _K_UPDATE,
    _K_COPY,
    _K_DISPATCH,
    _K_EXECUTE,
    _K_ALLOCA,
    _K_DEALLOCA,
    _K_HOST_CALL,
    _K_UPLOAD,
    _K_DOWNLOAD,
    _K_READ,
    _K_WRITE,
) = range(1, 14)
_BARRIER_OP = QueueOpKind.BARRIER
_MAPPABLE = int(BufferUsage.MAPPING_SCOPED | BufferUsage.MAPPING_PERSISTENT)
_STAGING_PARAMS = BufferParams(
    usage=BufferUsage.TRANSFER | BufferUsage.MAPPING_SCOPED, type=MemoryType.HOST_LOCAL
)


@functools.lru_cache(maxsize=256)
def _static_config(x: int, y: int, z: int) -> DispatchConfig:
    return DispatchConfig((x, y, z))  # frozen: shared by every dispatch of that grid


def _as_config(workgroups: Any) -> DispatchConfig:
    if workgroups.__class__ is DispatchConfig:
        return workgroups
    if workgroups.__class__ is int:
        return _static_config(workgroups, 1, 1)
    if isinstance(workgroups, (tuple, list)) and 1 <= len(workgroups) <= 3:
        return _static_config(*workgroups, *(1,) * (3 - len(workgroups)))
    if isinstance(workgroups, DispatchConfig):
        return workgroups
    raise InvalidArgumentError(
        f"workgroups must be an int, a tuple of 1 to 3 ints or a DispatchConfig, got {workgroups!r}"
    )


class Stream:
    """An in-order queue over one timeline semaphore (``Device.create_stream``).

    Ops run one after another on one queue of the device; each op is one public
    ``Device.queue_*`` call (a barrier: the same front door and submit), validated there
    (errors raise at the call and the op is not queued). Errors found while executing
    fail the stream's semaphore, every later op fails with it, and ``synchronize`` raises
    the error naming the op that failed (``stream op 3 (fill) failed: ...``).
    ``with device.create_stream() as s:`` synchronizes on exit (unless the block raised:
    its exception propagates at once).

    Not thread-safe: use a stream from one thread at a time (other threads and streams
    coordinate through ``record()`` timepoints and ``wait``).
    """

    __slots__ = (
        "device",
        "affinity",
        "semaphore",
        "_value",
        "_last",
        "_next",
        "_kinds",
        "_cover",
        "_fill",
        "_update",
        "_copy",
        "_dispatch",
        "__weakref__",
    )

    def __init__(self, device: Any, affinity: int) -> None:
        """Called by ``Device.create_stream``, which validated ``affinity`` (one queue)."""
        self.device = device
        self.affinity = affinity
        self.semaphore: Semaphore = device.create_semaphore(0)
        self._value = 0
        self._last: tuple = ()
        self._next: tuple = self._last
        self._kinds = [0] * (_RING_MASK + 1)
        self._cover: tuple | None = None
        # Bound once: a bound-method lookup per op would cost as much as the stream does.
        self._fill = device.queue_fill
        self._update = device.queue_update
        self._copy = device.queue_copy
        self._dispatch = device.queue_dispatch

    def __repr__(self) -> str:
        return (
            f"<hal_core.Stream queue={(self.affinity & -self.affinity).bit_length() - 1} "
            f"ops={self._value} {self.semaphore!r}>"
        )

    # -- state -------------------------------------------------------------------------

    @property
    def value(self) -> int:
        """How many ops were submitted (the semaphore reaches it when all are done)."""
        return self._value

    @property
    def done(self) -> bool:
        """True when every op and every ``wait`` given so far completed (False after a
        failure)."""
        for sem, value in ((self.semaphore, self._value), *self._next):
            if sem._failure is not None or sem._value < value:
                return False
        return True

    def _pending(self) -> tuple:
        """The cross-stream waits no accepted op carried yet."""
        return self._next[len(self._last) :] if self._next is not self._last else ()

    def _advance(self, signal: tuple, kind: int) -> None:
        """Book-keeping after an op was accepted (its signal list is ``signal``)."""
        value = signal[0][1]
        self._value = value
        self._last = self._next = signal
        self._kinds[value & _RING_MASK] = kind

    # -- transfers -----------------------------------------------------------------------

    def fill(
        self,
        target: Buffer,
        pattern: bytes | int | np.generic,
        *,
        offset: int = 0,
        length: int = WHOLE_BUFFER,
        pattern_length: int | None = None,
        flags: int = 0,
    ) -> None:
        """Fill ``target`` (from ``offset``, ``length`` bytes: to the end by default) with
        a 1-, 2- or 4-byte pattern: bytes, a numpy scalar (its bytes, e.g.
        ``np.float32(1)``) or an int with ``pattern_length``."""
        value = self._value + 1
        signal = ((self.semaphore, value),)
        if pattern.__class__ is not bytes and isinstance(pattern, np.generic):
            pattern = pattern.tobytes()
        if pattern_length is None and not flags:
            # Positional only: passing default keywords costs a third of the layer.
            self._fill(self.affinity, self._next, signal, target, offset, length, pattern)
        else:
            self._fill(
                self.affinity,
                self._next,
                signal,
                target,
                offset,
                length,
                pattern,
                pattern_length=pattern_length,
                flags=flags,
            )
        self._value = value
        self._last = self._next = signal
        self._kinds[value & _RING_MASK] = _K_FILL

    def update(
        self,
        target: Buffer,
        data: Any,
        *,
        offset: int = 0,
        source_offset: int = 0,
        length: int = WHOLE_BUFFER,
        flags: int = 0,
    ) -> None:
        """Copy host bytes (any buffer-protocol object, e.g. a numpy array) into
        ``target`` at ``offset``. The bytes are captured now: change ``data`` freely
        afterwards. ``length`` defaults to all of ``data`` from ``source_offset``."""
        self._update_op(target, data, offset, source_offset, length, flags, _K_UPDATE)

    def _update_op(
        self,
        target: Buffer,
        data: Any,
        offset: int,
        source_offset: int,
        length: int,
        flags: int,
        kind: int,
    ) -> None:
        value = self._value + 1
        signal = ((self.semaphore, value),)
        if flags:
            self._update(
                self.affinity,
                self._next,
                signal,
                data,
                source_offset,
                target,
                offset,
                length,
                flags=flags,
            )
        else:
            self._update(
                self.affinity, self._next, signal, data, source_offset, target, offset, length
            )
        self._value = value
        self._last = self._next = signal
        self._kinds[value & _RING_MASK] = kind

    def copy(
        self,
        source: Buffer,
        target: Buffer,
        *,
        source_offset: int = 0,
        target_offset: int = 0,
        length: int = WHOLE_BUFFER,
        flags: int = 0,
    ) -> None:
        """Copy ``source`` into ``target``; ``length`` defaults to what fits in both from
        the offsets."""
        value = self._value + 1
        signal = ((self.semaphore, value),)
        if flags:
            self._copy(
                self.affinity,
                self._next,
                signal,
                source,
                source_offset,
                target,
                target_offset,
                length,
                flags=flags,
            )
        else:
            self._copy(
                self.affinity,
                self._next,
                signal,
                source,
                source_offset,
                target,
                target_offset,
                length,
            )
        self._value = value
        self._last = self._next = signal
        self._kinds[value & _RING_MASK] = _K_COPY

    def upload(
        self, array: Any, target: Buffer | None = None, *, params: BufferParams | None = None
    ) -> Buffer:
        """Copy a numpy array (or any buffer-protocol object) into a buffer, in stream
        order. Without ``target`` a new buffer of ``array.nbytes`` is allocated now (with
        ``params``; default ``BufferParams()``) and returned. The bytes are captured now."""
        try:
            if isinstance(array, (np.ndarray, np.generic)):
                data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            else:
                data = np.frombuffer(array, np.uint8)
        except (TypeError, ValueError, BufferError) as exc:
            raise InvalidArgumentError(
                "upload needs a numpy array or a contiguous buffer-protocol object, got "
                f"{type(array).__name__} ({exc})"
            ) from None
        if target is None:
            target = self.device.allocator.allocate_buffer(params, data.nbytes)
        elif not isinstance(target, Buffer):
            raise InvalidArgumentError(
                f"upload target must be a Buffer or None, got {type(target).__name__}"
            )
        self._update_op(target, data, 0, 0, data.nbytes, 0, _K_UPLOAD)
        return target

    def download(
        self,
        buffer: Buffer,
        dtype: Any = np.uint8,
        shape: Any = None,
        *,
        offset: int = 0,
        length: int = WHOLE_BUFFER,
        timeout: float | None = None,
    ) -> np.ndarray:
        """The contents of ``buffer`` (from ``offset``, ``length`` bytes) once every op
        submitted before has run, as a new numpy array of ``dtype`` (and ``shape``).

        Blocks like ``synchronize`` (and raises like it). A buffer the host cannot map
        is copied through a host staging buffer in stream order first."""
        if not isinstance(buffer, Buffer):
            raise InvalidArgumentError(f"download needs a Buffer, got {type(buffer).__name__}")
        length = resolve_range(buffer, offset, length)
        dtype = np.dtype(dtype)
        if length % dtype.itemsize:
            raise InvalidArgumentError(
                f"download of {length} bytes is not a whole number of {dtype} elements"
            )
        source, source_offset = buffer, offset
        if not (
            buffer.memory_type.has(MemoryType.HOST_VISIBLE)
            and int(buffer.allowed_usage) & _MAPPABLE
        ):
            source = self.device.allocator.allocate_buffer(_STAGING_PARAMS, length)
            source_offset = 0
            value = self._value + 1
            signal = ((self.semaphore, value),)
            self._copy(self.affinity, self._next, signal, buffer, offset, source, 0, length)
            self._advance(signal, _K_DOWNLOAD)
        self.synchronize(timeout)
        with source.map(MemoryAccess.READ, source_offset, length) as mapping:
            out = mapping.contents.copy()
        return out.view(dtype) if shape is None else out.view(dtype).reshape(shape)

    def read(
        self,
        file: Any,
        target: Buffer,
        *,
        file_offset: int = 0,
        offset: int = 0,
        length: int = WHOLE_BUFFER,
        flags: int = 0,
    ) -> None:
        """Read file bytes from ``file_offset`` into ``target`` at ``offset``
        (``queue_read``); ``length`` defaults to the rest of the buffer."""
        value = self._value + 1
        signal = ((self.semaphore, value),)
        self.device.queue_read(
            self.affinity,
            self._next,
            signal,
            file,
            file_offset,
            target,
            offset,
            length,
            flags=flags,
        )
        self._advance(signal, _K_READ)

    def write(
        self,
        source: Buffer,
        file: Any,
        *,
        offset: int = 0,
        file_offset: int = 0,
        length: int = WHOLE_BUFFER,
        flags: int = 0,
    ) -> None:
        """Write ``source`` bytes from ``offset`` into ``file`` at ``file_offset``
        (``queue_write``); ``length`` defaults to the rest of the buffer."""
        value = self._value + 1
        signal = ((self.semaphore, value),)
        self.device.queue_write(
            self.affinity,
            self._next,
            signal,
            source,
            offset,
            file,
            file_offset,
            length,
            flags=flags,
        )
        self._advance(signal, _K_WRITE)

    # -- work ----------------------------------------------------------------------------

    def dispatch(
        self,
        executable: Any,
        function: int | str,
        workgroups: int | tuple[int, ...] | DispatchConfig = 1,
        bindings: Sequence[Any] = (),
        constants: Any = b"",
        *,
        flags: int = 0,
    ) -> None:
        """Run ``function`` over ``workgroups`` (an int, an ``(x, y, z)`` tuple or a
        ``DispatchConfig``) with direct ``bindings`` (buffers or ``BufferRef`` s).

        ``constants``: bytes or uint32 values as ``queue_dispatch`` takes them, or typed
        values (numpy scalars and arrays, Python floats and ints) in parameter order, or a
        mapping ``{name: value}``; typed values are laid out by the function's reflected
        parameters (see ``FunctionInfo.parameters``)."""
        config = _as_config(workgroups)
        if constants.__class__ is not bytes:
            constants = pack_constants(executable, function, constants)
        value = self._value + 1
        signal = ((self.semaphore, value),)
        self._dispatch(
            self.affinity,
            self._next,
            signal,
            executable,
            function,
            config,
            constants,
            bindings,
            flags,
        )
        self._value = value
        self._last = self._next = signal
        self._kinds[value & _RING_MASK] = _K_DISPATCH

    def execute(self, command_buffer: Any, binding_table: Any = None, *, flags: int = 0) -> None:
        """Run a recorded command buffer (with its binding table) in stream order."""
        value = self._value + 1
        signal = ((self.semaphore, value),)
        self.device.queue_execute(
            self.affinity, self._next, signal, command_buffer, binding_table, flags
        )
        self._advance(signal, _K_EXECUTE)

    def barrier(self) -> None:
        """An op without work: it carries pending ``wait`` s into the stream's order."""
        value = self._value + 1
        signal = ((self.semaphore, value),)
        device = self.device
        # ``Device.queue_barrier`` without flags, inlined: its front door and its submit.
        device._submit(queue_op(device, _BARRIER_OP, self.affinity, self._next, signal))
        self._value = value
        self._last = self._next = signal
        self._kinds[value & _RING_MASK] = _K_BARRIER

    def host_call(
        self, fn: Callable[..., Any], args: Sequence[int] = (0, 0, 0, 0), *, flags: int = 0
    ) -> None:
        """Call ``fn(args, context)`` on a host thread in stream order (see
        ``Device.queue_host_call``: raising fails the stream, ``StatusCode.DEFERRED``
        hands the signal to the callback)."""
        value = self._value + 1
        signal = ((self.semaphore, value),)
        self.device.queue_host_call(self.affinity, self._next, signal, fn, args, flags=flags)
        self._advance(signal, _K_HOST_CALL)

    def alloca(
        self, size: int, params: BufferParams | None = None, *, pool: Any = None, flags: int = 0
    ) -> Buffer:
        """A buffer whose memory is committed in stream order (``queue_alloca``): use it
        in later ops of this stream (or after ``wait`` on this stream elsewhere)."""
        value = self._value + 1
        signal = ((self.semaphore, value),)
        buffer = self.device.queue_alloca(
            self.affinity, self._next, signal, params, size, pool=pool, flags=flags
        )
        self._advance(signal, _K_ALLOCA)
        return buffer

    def dealloca(self, buffer: Buffer, *, flags: int = 0) -> None:
        """Release an ``alloca`` buffer after the ops before it (``queue_dealloca``)."""
        value = self._value + 1
        signal = ((self.semaphore, value),)
        self.device.queue_dealloca(self.affinity, self._next, signal, buffer, flags=flags)
        self._advance(signal, _K_DEALLOCA)

    # -- ordering between streams ------------------------------------------------------

    def record(self) -> Timepoint:
        """The timepoint that is reached when every op submitted so far (and every
        ``wait`` so far) is done: hand it to another stream's ``wait``, a raw queue op's
        wait list, ``Timepoint.wait`` or ``await``."""
        self._flush()
        return Timepoint(self.semaphore, self._value)

    def wait(self, other: "Stream | Timepoint | tuple[Semaphore, int]") -> None:
        """Make the next ops of this stream wait for ``other``: a stream (everything it
        was given so far) or a timepoint / ``(semaphore, value)`` pair. Costs no op: the
        wait rides on the next op (or a barrier before ``record``/``synchronize``)."""
        if other.__class__ is Stream:
            last = other._last
            if other._cover is self._next and other._next is last and last:
                # Its latest op is ordered after our latest and neither has waits pending
                # (ping-pong between two streams): waiting on it alone keeps our own
                # order, one wait per op.
                self._cover = last
                self._last = self._next = last
                return
            if other is self:
                return  # our own order
            if other._next is not last:
                other.barrier()  # its pending waits become part of what we wait for
                last = other._last
            if not last:
                return  # nothing submitted there
            self._cover = last
            pair = last[0]
            sem = pair[0]
            if sem._value >= pair[1] and sem._failure is None:
                return
        else:
            try:
                # ``other`` is a (semaphore, value) pair or timepoint here; anything else
                # fails the unpacking below (mypy sees the Stream branch's type too).
                sem, value = other  # type: ignore[misc]
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    "stream wait needs a Stream, a Timepoint or a (Semaphore, value) pair, "
                    f"got {other!r}"
                ) from None
            if value.__class__ is not int:
                try:
                    value = operator.index(value)  # numpy integers
                except TypeError:
                    value = None
            if not isinstance(sem, Semaphore) or value is None:
                raise InvalidArgumentError(
                    f"stream wait needs a (Semaphore, int) pair, got {other!r}"
                )
            if sem is self.semaphore or (sem._failure is None and sem._value >= value):
                return  # already ordered (own timeline) or already reached
            pair = (sem, value)
        kept = []
        for entry in self._pending():
            if entry[0] is sem:
                if entry[1] >= pair[1]:
                    return
            else:
                kept.append(entry)
        kept.append(pair)
        self._next = self._last + tuple(kept)

    def _flush(self) -> None:
        """Carry pending waits into the stream's own timeline (a barrier), so its
        semaphore value covers them."""
        last = self._last
        if self._next is not last or (last and last[0][0] is not self.semaphore):
            self.barrier()

    # -- completion --------------------------------------------------------------------

    def synchronize(self, timeout: float | None = None) -> None:
        """Block until every op submitted so far is done.

        DEADLINE_EXCEEDED after ``timeout`` seconds (None: no limit); when an op failed,
        its error with the op named (``stream op 3 (fill) failed: ...``; ``__cause__``
        is the original failure). Releases nothing: the stream stays usable, and a
        failed stream keeps failing."""
        self._flush()
        try:
            self.semaphore.wait(self._value, timeout)
        except DeadlineExceededError:
            raise
        except HalError:
            raise self._named_failure() from self.semaphore.failure

    async def synchronize_async(self, timeout: float | None = None) -> None:
        """``synchronize`` for asyncio: waits without blocking the loop or a thread."""
        self._flush()
        try:
            await wait_async(self.semaphore, self._value, timeout)
        except DeadlineExceededError:
            raise
        except HalError:
            raise self._named_failure() from self.semaphore.failure

    def __await__(self) -> Generator[Any, None, None]:
        return self.synchronize_async().__await__()

    def _named_failure(self) -> HalError:
        sem = self.semaphore
        failure = sem.failure
        if failure is None:  # not reached through a failure: nothing to rename
            return error_for(StatusCode.INTERNAL, "stream wait ended without a result")
        n = sem._value + 1
        if n > self._value:
            return error_for(
                failure.code, f"stream semaphore failed after op {self._value}: {failure.message}"
            )
        name = _KIND_NAMES[self._kinds[n & _RING_MASK]] if self._value - n <= _RING_MASK else "?"
        what = f"stream op {n}" if name == "?" else f"stream op {n} ({name})"
        return error_for(failure.code, f"{what} failed: {failure.message}")

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # When the body raised, its exception propagates at once: waiting could block
        # forever on whatever went wrong, and the ops keep what they use alive anyway.
        if exc_type is None:
            self.synchronize()
