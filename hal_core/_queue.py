"""Queue operation records, their flags, and the host-call context.

A public ``Device.queue_*`` call validates its arguments and builds one ``QueueOp``; the
backend receives it through ``DeviceBackend.submit``. Each op records its facts once (the
kind, the queue, the wait and signal lists, the resolved ranges, retained resources) so the
backend never re-validates.
"""

from __future__ import annotations

import enum
from typing import Any, Callable

from ._reprs import affinity as affinity_text
from ._reprs import device_name, safe_repr
from ._semaphore import Semaphore
from ._status import HalError, StatusCode, error_for

__all__ = [
    "QueueOpKind",
    "QueueOp",
    "AllocaFlags",
    "DeallocaFlags",
    "HostCallFlags",
    "HostCallContext",
    "TransferFlags",
    "host_call_error",
    "host_call_outcome",
    "run_host_call",
]


class QueueOpKind(enum.IntEnum):
    """Matches IREE's queue-event types (also used by profiling)."""

    BARRIER = 0
    DISPATCH = 1
    EXECUTE = 2
    COPY = 3
    FILL = 4
    UPDATE = 5
    READ = 6
    WRITE = 7
    ALLOCA = 8
    DEALLOCA = 9
    HOST_CALL = 10


class AllocaFlags(enum.IntFlag):
    NONE = 0
    INDETERMINATE_LIFETIME = 1 << 0
    ALLOW_POOL_WAIT_FRONTIER = 1 << 1


class DeallocaFlags(enum.IntFlag):
    NONE = 0
    PREFER_ORIGIN = 1 << 0


class TransferFlags(enum.IntFlag):
    """Flags of fill/update/copy/read/write (none defined yet; reserved as IREE's are)."""

    NONE = 0


class HostCallFlags(enum.IntFlag):
    NONE = 0
    NON_BLOCKING = 1 << 0
    WAIT_ACTIVE = 1 << 1
    RELAXED = 1 << 2


class HostCallContext:
    """What a host-call callback receives besides its four arguments.

    ``signals`` is the op's signal list for blocking calls (empty for NON_BLOCKING). A
    callback that returns ``StatusCode.DEFERRED`` owns it and must signal or fail every
    entry later (``context.signal()`` / ``context.fail(error)`` do that, from any thread
    holding no HAL lock).
    """

    __slots__ = ("device", "queue_affinity", "signals")

    def __init__(self, device: Any, queue_affinity: int, signals: tuple) -> None:
        self.device = device
        self.queue_affinity = queue_affinity
        self.signals = signals

    @safe_repr
    def __repr__(self) -> str:
        return (
            f"<hal_core.HostCallContext {affinity_text(self.queue_affinity)} on "
            f"{device_name(self.device)} signals={len(self.signals)}>"
        )

    def signal(self) -> None:
        for sem, value in self.signals:
            sem._signal_from_queue(value)

    def fail(self, error: Any) -> None:
        """Fail every signal with ``error`` (a HalError or an error StatusCode; anything
        else is INVALID_ARGUMENT, raised with no semaphore changed)."""
        for sem, _value in self.signals:
            sem.fail(error)


HostCallFn = Callable[[tuple, HostCallContext], Any]

_RETURNS = (
    "a host call returns None or StatusCode.OK (success), StatusCode.DEFERRED (it signals "
    "later through its context), or a HalError / error StatusCode (failure)"
)


def _describe(result: Any) -> str:
    """The returned object's type and a short, safe repr (repr may raise or be huge)."""
    try:
        text = repr(result)
    except Exception:
        text = "<unrepresentable>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"a {type(result).__qualname__} ({text})"


def host_call_outcome(result: Any) -> Any:
    """What a blocking host call's return value means, the same on every backend.

    * ``None`` or ``StatusCode.OK``: success, the signals are signalled (returns None).
    * ``StatusCode.DEFERRED``: the callback owns the signals now (returns DEFERRED).
    * a ``HalError`` or any other ``StatusCode``: the signals fail with it (returns the
      HalError to fail them with).
    * anything else (``True``, ``0``, a numpy array, an object whose ``==`` raises):
      the signals fail INVALID_ARGUMENT naming what was returned.

    Never compares ``result`` with ``==`` (only identity and exact types), so it cannot
    raise or be fooled by the returned object. Never raises."""
    if result is None:
        return None
    cls = result.__class__
    if cls is StatusCode:
        if result is StatusCode.OK:
            return None
        if result is StatusCode.DEFERRED:
            return StatusCode.DEFERRED
        return error_for(result, f"host call returned {result.name}")
    if isinstance(result, HalError):
        if result.code is StatusCode.OK:
            return error_for(
                StatusCode.INVALID_ARGUMENT,
                f"host call returned a HalError with code OK ({result.message!r}); {_RETURNS}",
            )
        return result
    return error_for(
        StatusCode.INVALID_ARGUMENT, f"host call returned {_describe(result)}; {_RETURNS}"
    )


def host_call_error(exc: BaseException) -> HalError:
    """The error a blocking host call's signals fail with when the call raised ``exc``.

    A HalError keeps its code; any other exception (KeyboardInterrupt and SystemExit
    included: they must not unwind a HAL thread) becomes UNKNOWN naming it, with ``exc``
    as ``__cause__``. Never raises."""
    if isinstance(exc, HalError) and exc.code is not StatusCode.OK:
        return exc
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable>"
    error = error_for(StatusCode.UNKNOWN, f"host call raised {type(exc).__qualname__}: {text}")
    error.__cause__ = exc
    return error


def run_host_call(fn: HostCallFn, args: tuple, context: HostCallContext) -> Any:
    """Call a blocking host call and interpret it: None (signal the signals),
    ``StatusCode.DEFERRED`` (the callback owns them) or the ``HalError`` to fail them
    with. Never raises, whatever ``fn`` does. The caller must hold no lock."""
    try:
        result = fn(args, context)
    except BaseException as exc:
        return host_call_error(exc)
    return host_call_outcome(result)


class QueueOp:
    """One validated queue operation, as ``Device.queue_*`` hands it to ``submit``.

    Every op has ``kind`` (always a ``QueueOpKind``), ``queue`` (the queue index),
    ``waits`` and ``signals`` (tuples of ``(Semaphore, value)``), ``flags`` (a plain int or
    the kind's flag enum), ``retained`` (references kept alive until the signals publish,
    or None) and ``epoch`` (the backend's: set by its ``submit``). The other fields are set
    only for the kinds that use them; reading one another kind does not set raises
    ``AttributeError``:

    * FILL: ``target, target_offset, length``, ``pattern`` (1, 2 or 4 bytes)
    * UPDATE: ``target, target_offset, length``, ``payload`` (a private uint8 copy of the
      host bytes, taken at the call)
    * COPY: ``source, source_offset, target, target_offset, length`` (buffers)
    * READ: ``source`` (a ``File``), ``source_offset, target, target_offset, length``
    * WRITE: ``source, source_offset``, ``target`` (a ``File``), ``target_offset, length``
    * HOST_CALL: ``callback`` (called as ``callback(args, context)``), ``args`` (4 ints)
    * ALLOCA: ``target`` (the pending buffer, placement ASYNCHRONOUS), ``length`` (its
      allocation size), ``pool`` (the ``Pool`` asked for, or None for the device's default
      pool set), ``params`` (the resolved ``BufferParams``), ``alloca_state`` (the pool
      machine's per-op progress while it is in flight, else None)
    * DEALLOCA: ``target`` (the root buffer to release)
    * EXECUTE / DISPATCH: ``program`` (what the backend's ``finalize_command_buffer``
      returned, or the raw command list without one), ``bindings`` (the binding table
      captured at submit: a tuple of ``BufferBinding`` or None entries; empty for DISPATCH)
    * BARRIER: nothing more
    """

    __slots__ = (
        "kind",
        "queue",
        "waits",
        "signals",
        "flags",
        "retained",
        "epoch",
        "source",
        "source_offset",
        "target",
        "target_offset",
        "length",
        "pattern",
        "payload",
        "callback",
        "args",
        "pool",
        "params",
        "alloca_state",
        "program",
        "bindings",
        "__weakref__",
    )

    kind: QueueOpKind
    queue: int
    waits: tuple[tuple[Semaphore, int], ...]
    signals: tuple[tuple[Semaphore, int], ...]
    flags: int
    retained: Any
    epoch: int
    source: Any  # Buffer (COPY, WRITE) or File (READ)
    source_offset: int
    target: Any  # Buffer (FILL, UPDATE, COPY, READ, ALLOCA, DEALLOCA) or File (WRITE)
    target_offset: int
    length: int
    pattern: bytes
    payload: Any  # numpy.ndarray of uint8
    callback: HostCallFn | None  # None once the queue's part of the call is done
    args: tuple[int, int, int, int] | None
    pool: Any  # hal_core.pool.Pool or None
    params: Any  # BufferParams
    alloca_state: Any  # hal_core.pool.AllocaState or None
    program: Any
    bindings: tuple[Any, ...]

    def __init__(
        self,
        kind: QueueOpKind,
        queue: int,
        waits: tuple[tuple[Semaphore, int], ...],
        signals: tuple[tuple[Semaphore, int], ...],
    ) -> None:
        # One identity test keeps ``kind`` an enum member for every reader (profilers
        # print its name) at no cost to the front door, which passes members.
        self.kind = kind if kind.__class__ is QueueOpKind else QueueOpKind(kind)
        self.queue = queue
        self.waits = waits
        self.signals = signals
        self.flags = 0
        self.retained = None
