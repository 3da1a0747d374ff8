"""Host-side profiling taps of a CUDA device: QUEUE_EVENTS at submit and
HOST_EXECUTION_EVENTS, the host's part of each queue operation timed where it runs.

A session that asks for them gets taps in the device's instance dict, shadowing its
methods for the session (``HostTaps.install`` / ``remove``); without a session the device
runs its methods untouched, so these paths cost nothing when profiling is off.

* QUEUE_EVENTS: ``submit`` records each op it accepts, with the op's epoch (its queue's
  submission number, the id dispatch events carry too) and the host time the call began.
* HOST_EXECUTION_EVENTS, one per operation, recorded when the op completes (before its
  signals publish, so a waiter that ends the session at once finds it):

  - stream work (fill, update, copy, dispatch, execute, and stream-ordered allocas and
    deallocas): the span of putting it on the stream (waits, launches or copies, the
    event record), ``_enqueue``;
  - worker ops (file reads and writes, programs that read a workgroup count from a
    buffer): the span on the queue's worker thread, ``_run_host_side``;
  - allocas and deallocas through hal_core's pools: the reservation or release on the
    readying thread, ``_run_pool_op``;
  - host calls: the callback. A NON_BLOCKING call completes before its callback runs, and
    a call whose callback defers its signals completes later through the user: their span
    is recorded when the callback returns.
  - ops with no host execution (barriers, ops failed by their waits or cancelled): a
    zero-length span at completion, as local_cpu records them.

  A span ends when the host's part ends, or at completion when the GPU finished first.

Thread-safe: the spans of ops in flight are kept under one lock (held for dictionary
steps only, never while user code or the driver runs).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from hal_core import HalError, HostCallFlags
from hal_core.profiling import ProfilingDataFamily, host_time_ns

HOST_TAP_FAMILIES = int(
    ProfilingDataFamily.QUEUE_EVENTS | ProfilingDataFamily.HOST_EXECUTION_EVENTS
)
"""The families these taps produce (all a logical device over several GPUs offers)."""

_NON_BLOCKING = int(HostCallFlags.NON_BLOCKING)
_BY_CALLBACK = -1
"""Span placeholder of a NON_BLOCKING host call: its completion records nothing, the
host-call tap records the callback."""


def _length(op: Any) -> int:
    return getattr(op, "length", 0) or 0  # profiling on only: kinds without a length


class HostTaps:
    """The taps of one session on one ``CudaDeviceBackend`` (``queue_events`` and/or
    ``host_execution`` of the session's families)."""

    def __init__(self, backend: Any, session: Any) -> None:
        self.backend = backend
        self.session = session
        self._spans: dict[Any, list[int]] = {}  # op -> [start, end or 0, thread id]
        self._lock = threading.Lock()
        self._saved: dict[str, Any] = {}

    # -- installation -------------------------------------------------------------------

    def install(self) -> None:
        """Shadow the device's methods for the families the session captures."""
        session = self.session
        taps: list[tuple[str, Callable[[Any], Any]]] = []
        if session.queue_events is not None:
            taps.append(("submit", self._tap_submit))
        if session.host_execution_events is not None:
            taps += [
                ("_enqueue", self._tap_host_part),
                ("_run_host_side", self._tap_host_part),
                ("_run_pool_op", self._tap_host_part),
                ("_run_host_call", self._tap_host_call),
                ("_complete", self._tap_complete),
            ]
        routes = vars(self.backend)
        for name, make in taps:
            self._saved[name] = routes.get(name)  # another route (alloca=stream) or None
            routes[name] = make(getattr(self.backend, name))

    def remove(self) -> None:
        """Give the device its methods (or earlier routes) back."""
        routes = vars(self.backend)
        for name, saved in self._saved.items():
            if saved is None:
                routes.pop(name, None)
            else:
                routes[name] = saved
        self._saved = {}

    # -- taps ---------------------------------------------------------------------------

    def _tap_submit(self, inner: Callable[[Any], None]) -> Callable[[Any], None]:
        record = self.session.record_queue_event

        def submit(op: Any) -> None:
            t = host_time_ns()
            inner(op)
            record(
                op.kind,
                op.queue,
                op.epoch,
                len(op.waits),
                len(op.signals),
                _length(op),
                submit_host_time_ns=t,
            )

        return submit

    def _tap_host_part(self, inner: Callable[..., None]) -> Callable[..., None]:
        spans = self._spans
        lock = self._lock

        def host_part(op: Any, *args: Any) -> None:
            with lock:
                if op not in spans:  # an outer tap's span (a pool op's enqueue) goes on
                    spans[op] = [host_time_ns(), 0, threading.get_native_id()]
            try:
                inner(op, *args)
            finally:
                t = host_time_ns()
                with lock:
                    span = spans.get(op)
                    if span is not None and span[0] != _BY_CALLBACK:
                        span[1] = t

        return host_part

    def _tap_host_call(self, inner: Callable[[Any], None]) -> Callable[[Any], None]:
        spans = self._spans
        lock = self._lock

        def host_call(op: Any) -> None:
            kind, queue, epoch = op.kind, op.queue, op.epoch
            by_callback = bool(op.flags & _NON_BLOCKING)
            start = host_time_ns()
            thread = threading.get_native_id()
            with lock:
                spans[op] = [_BY_CALLBACK if by_callback else start, 0, thread]
            status = 0
            try:
                inner(op)
            except HalError as exc:  # the device's host-call path reports, never raises
                status = int(exc.code)
                raise
            finally:
                with lock:
                    span = spans.pop(op, None)
                if by_callback or span is not None:
                    # Not completed through the device (a NON_BLOCKING call, or signals the
                    # callback deferred): the span ends with the callback.
                    self._record(kind, queue, epoch, start, host_time_ns(), status, 0, thread)

        return host_call

    def _tap_complete(self, inner: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        spans = self._spans
        lock = self._lock

        def complete(op: Any, error: HalError | None) -> None:
            with lock:
                span = spans.pop(op, None)
            if span is None:
                t = host_time_ns()
                status = 0 if error is None else int(error.code)
                thread = threading.get_native_id()
                self._record(op.kind, op.queue, op.epoch, t, t, status, 0, thread)
            elif span[0] != _BY_CALLBACK:
                end = span[1] or host_time_ns()
                status = 0 if error is None else int(error.code)
                self._record(
                    op.kind, op.queue, op.epoch, span[0], end, status, _length(op), span[2]
                )
            inner(op, error)

        return complete

    def _record(
        self,
        kind: int,
        queue: int,
        epoch: int,
        start: int,
        end: int,
        status: int,
        length: int,
        thread: int,
    ) -> None:
        session = self.session
        if not session.closed:
            session.record_host_execution(kind, queue, epoch, start, end, status, length, thread)
