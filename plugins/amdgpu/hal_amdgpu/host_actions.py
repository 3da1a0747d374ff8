"""Host actions of the amdgpu host queues, and how user-code failures are reported there.

A host action (host call, file read/write, dealloca) publishes one NOP packet; when its
epoch retires the queue's completion thread calls the action, which runs the host work and
then signals (``signal()``) or fails (``fail(error)``) the op's semaphores. ``fail`` alone is
also how queue errors and teardown cancel an action that never ran.

Everything here runs on a HAL thread (the completion thread), so nothing a user callback
does may escape it: failures that have no signal to fail go to hal_core's
``report_callback_error`` (``sys.unraisablehook``; it never raises). No locks are held by
callers of these functions.
"""

from __future__ import annotations

from typing import Any, Callable, cast

import numpy as np

from hal_core import HalError, HostCallFlags, StatusCode, UnimplementedError
from hal_core.backend import (
    HostCallContext,
    QueueOp,
    QueueOpKind,
    buffer_host_bytes,
    buffer_storage,
    fail_all,
    op_error,
    report_callback_error,
    run_host_call,
    signal_all,
)

__all__ = [
    "Action",
    "DeallocaAction",
    "FileAction",
    "HostCallAction",
    "RunAction",
    "as_error",
]

_K = QueueOpKind


def as_error(exc: BaseException) -> HalError:
    """The ``HalError`` an op fails with when its host work raised ``exc`` (any other
    exception becomes UNKNOWN with ``exc`` as ``__cause__``: ``hal_core.backend.op_error``)."""
    return op_error(exc)


class Action:
    """Base of the host actions (called on the completion thread): ``signal()`` /
    ``fail(error)`` complete the op's semaphores. Each semaphore is completed on its own
    so that a callback failing on one still lets the others complete."""

    __slots__ = ("qset", "op")

    def __init__(self, qset: Any, op: QueueOp) -> None:
        self.qset = qset
        self.op = op

    def signal(self) -> None:
        signal_all(self.op.signals, "signalling a semaphore on an amdgpu queue")
        self.op.retained = None

    def fail(self, error: HalError) -> None:
        fail_all(self.op.signals, error, "failing a semaphore on an amdgpu queue")
        self.op.retained = None


class RunAction(Action):
    """An action whose host work is ``run()``: signal when it returns, fail when it raises."""

    __slots__ = ()

    def run(self) -> None:
        raise NotImplementedError

    def __call__(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self.fail(as_error(exc))
            return
        self.signal()


class HostCallAction(Action):
    """``queue_host_call``: NON_BLOCKING signals first and reports what the call raises;
    blocking calls complete by what they return (``host_call_outcome``) or raise."""

    __slots__ = ()

    def __call__(self) -> None:
        op = self.op
        # Both are set for every HOST_CALL op (None only once the call is done).
        fn = cast(Callable[[tuple, HostCallContext], Any], op.callback)
        args = cast(tuple, op.args)
        device = getattr(self.qset, "device", None)
        affinity = 1 << op.queue
        if op.flags & HostCallFlags.NON_BLOCKING:
            self.signal()
            try:
                fn(args, HostCallContext(device, affinity, ()))
            except BaseException as exc:  # NON_BLOCKING errors are only reported
                report_callback_error(exc, "a NON_BLOCKING amdgpu host call", fn)
            return
        # The host-call semantics (outcomes, exceptions kept as ``__cause__``) are
        # hal_core's, the same on every backend.
        outcome = run_host_call(fn, args, HostCallContext(device, affinity, op.signals))
        if outcome is None:
            self.signal()
        elif outcome is StatusCode.DEFERRED:
            op.retained = None  # the callback owns the signals now
        else:
            self.fail(outcome)


class FileAction(RunAction):
    """queue_read / queue_write: file bytes to/from buffer memory through host memory
    (``hsa_memory_copy`` when the buffer is not host-visible)."""

    __slots__ = ()

    def run(self) -> None:
        op = self.op
        if not op.length:
            return
        hsa = self.qset.hsa
        ffi = hsa.ffi
        if op.kind == _K.READ:
            buf = op.target
            storage = buffer_storage(buf)
            if storage.host_array is not None:
                view = buffer_host_bytes(buf, op.target_offset, op.length)
                op.source.read_into(op.source_offset, view)
                return
            tmp = np.empty(op.length, np.uint8)
            op.source.read_into(op.source_offset, tmp)
            dst = storage.address + buf.byte_offset + op.target_offset
            hsa.check(
                hsa.lib.hsa_memory_copy(ffi.cast("void*", dst), ffi.from_buffer(tmp), op.length),
                "hsa_memory_copy(queue_read)",
            )
        else:
            buf = op.source
            storage = buffer_storage(buf)
            if storage.host_array is not None:
                view = buffer_host_bytes(buf, op.source_offset, op.length)
                op.target.write_from(op.target_offset, view)
                return
            tmp = np.empty(op.length, np.uint8)
            src = storage.address + buf.byte_offset + op.source_offset
            hsa.check(
                hsa.lib.hsa_memory_copy(ffi.from_buffer(tmp), ffi.cast("void*", src), op.length),
                "hsa_memory_copy(queue_write)",
            )
            op.target.write_from(op.target_offset, tmp)


class DeallocaAction(RunAction):
    __slots__ = ()

    def run(self) -> None:
        # FAILED_PRECONDITION for a buffer that is not committed; releases pool memory
        # with this queue's completion frontier.
        pools = self.qset.pools
        if pools is None:
            raise UnimplementedError("this amdgpu queue set has no pools for queue_dealloca")
        pools.dealloca(self.op, self.qset.queues[self.op.queue])
