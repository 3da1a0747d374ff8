"""Queue operation records, their flags, and the host-call context.

A public ``Device.queue_*`` call validates its arguments and builds one ``QueueOp``; the
backend receives it through ``DeviceBackend.submit``. Each op records its facts once (the
kind, the queue, the wait and signal lists, the resolved ranges, retained resources) so the
backend never re-validates.
"""

from __future__ import annotations

import enum
from typing import Any, Callable

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
    "host_call_outcome",
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
    entry later (``context.signal()`` / ``context.fail(error)`` do that).
    """

    __slots__ = ("device", "queue_affinity", "signals")

    def __init__(self, device: Any, queue_affinity: int, signals: tuple) -> None:
        self.device = device
        self.queue_affinity = queue_affinity
        self.signals = signals

    def signal(self) -> None:
        for sem, value in self.signals:
            sem._signal_from_queue(value)

    def fail(self, error: Any) -> None:
        for sem, _value in self.signals:
            sem.fail(error)


HostCallFn = Callable[[tuple, HostCallContext], Any]


def host_call_outcome(result: Any) -> Any:
    """What a blocking host call's return value means, for every backend: None (signal
    the semaphores), ``StatusCode.DEFERRED`` (the callback owns them now), or the
    ``HalError`` to fail them with (a returned HalError, an error ``StatusCode``, or
    INVALID_ARGUMENT for a value that is no status at all)."""
    if result is None or result == StatusCode.OK:
        return None
    if result == StatusCode.DEFERRED:
        return StatusCode.DEFERRED
    if isinstance(result, HalError):
        return result
    try:
        return error_for(StatusCode(result), "host call returned an error status")
    except ValueError:
        return error_for(
            StatusCode.INVALID_ARGUMENT, f"host call returned {result!r}, not a status"
        )


class QueueOp:
    """One validated queue operation. Fields beyond the first four are set per kind:

    * FILL: ``target, target_offset, length, data`` (pattern bytes)
    * UPDATE: ``target, target_offset, length, data`` (a private copy of the host bytes)
    * COPY: ``source, source_offset, target, target_offset, length``
    * READ: ``source`` (File), ``source_offset, target, target_offset, length``
    * WRITE: ``source, source_offset, target`` (File), ``target_offset, length``
    * HOST_CALL: ``data`` (callable), ``extra`` (4 args)
    * ALLOCA: ``target`` (the pending buffer), ``extra`` (pool, params, size)
    * DEALLOCA: ``target`` (the buffer)
    * DISPATCH / EXECUTE: ``data``/``extra`` defined by the command-buffer layer

    ``retained`` holds references kept alive until the op's signals publish; ``epoch`` belongs
    to the backend.
    """

    __slots__ = (
        "kind",
        "queue",
        "waits",
        "signals",
        "flags",
        "source",
        "source_offset",
        "target",
        "target_offset",
        "length",
        "data",
        "extra",
        "retained",
        "epoch",
        "__weakref__",
    )

    def __init__(
        self,
        kind: QueueOpKind,
        queue: int,
        waits: tuple[tuple[Semaphore, int], ...],
        signals: tuple[tuple[Semaphore, int], ...],
    ) -> None:
        self.kind = kind
        self.queue = queue
        self.waits = waits
        self.signals = signals
        self.flags = 0
        self.retained = None
