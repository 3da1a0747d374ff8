"""Begin/flush/end of a device's profiling session (behind ``Device.profiling_*``).

Backend contract: ``hal_core.backend.ProfilingSupport``, bound once per device (a backend
without it supports no family of its own; hal_core still records QUEUE_EVENTS for it):

* ``profiling_families``: the ``ProfilingDataFamily`` flags it can produce.
* ``profiling_clock``: ``(ClockDomain, tick_frequency_hz)`` of its ``*_tick`` fields
  (default: host nanoseconds).
* ``profiling_begin(session)``: attach taps (set its ``profiler`` attribute); may raise
  UNAVAILABLE when a library or device the requested families need is missing.
* ``profiling_flush(session)``: move device-side records into the session.
* ``profiling_end(session)``: detach taps; must not fail to detach.

One session per device at a time. begin/flush/end hold the device's profiling lock, never
a queue lock; sinks run on the calling thread.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from .._status import FailedPreconditionError, InvalidArgumentError, UnimplementedError
from ._clock import host_time_ns
from ._options import ProfilingDataFamily, ProfilingOptions
from ._records import ClockDomain
from ._session import ProfilingSession

__all__ = ["profiling_begin", "profiling_flush", "profiling_end", "supported_families"]

_session_ids = itertools.count(1).__next__
_locks_guard = threading.Lock()


def _lock(device: Any) -> threading.Lock:
    lock = device.__dict__.get("_profiling_lock")
    if lock is None:
        with _locks_guard:
            lock = device.__dict__.setdefault("_profiling_lock", threading.Lock())
    return lock


def _backend_families(device: Any) -> ProfilingDataFamily:
    """The families the backend produces itself (its ``ProfilingSupport``)."""
    profiling = device._contract.profiling
    return ProfilingDataFamily(int(profiling.profiling_families) if profiling else 0)


def _can_tap_submit(device: Any) -> bool:
    """Whether hal_core's generic tap can shadow the backend's ``submit`` (an instance
    attribute needs an instance ``__dict__``)."""
    return bool(device._contract.instance_dict)


def supported_families(device: Any) -> ProfilingDataFamily:
    """The data families ``device`` can produce: its backend's, plus QUEUE_EVENTS, which
    hal_core records itself at submit for any backend that does not (see
    ``_GenericQueueTap``). NONE when it profiles nothing."""
    families = _backend_families(device)
    if not families & ProfilingDataFamily.QUEUE_EVENTS and _can_tap_submit(device):
        families |= ProfilingDataFamily.QUEUE_EVENTS
    return families


class _GenericQueueTap:
    """QUEUE_EVENTS for a backend without its own taps: an instance attribute shadowing
    the backend's ``submit`` for the session (removed at the end), recording each op at
    submit. Submission ids are per-session sequence numbers (the backend's own epochs are
    not visible here); the record's ``dependency_strategy`` is INLINE as nothing more is
    known."""

    __slots__ = ("backend", "inner", "record", "next_id")

    def __init__(self, backend: Any, session: ProfilingSession) -> None:
        self.backend = backend
        self.inner = backend.submit
        self.record = session.record_queue_event
        self.next_id = itertools.count(1).__next__

    def __call__(self, op: Any) -> None:
        t = host_time_ns()
        self.inner(op)
        self.record(
            op.kind,
            op.queue,
            self.next_id(),
            len(op.waits),
            len(op.signals),
            getattr(op, "length", 0) or 0,
            submit_host_time_ns=t,
        )

    def install(self) -> None:
        self.backend.submit = self

    def remove(self) -> None:
        if self.backend.__dict__.get("submit") is self:
            del self.backend.__dict__["submit"]


def _names(flags: ProfilingDataFamily) -> str:
    return ", ".join(m.name for m in ProfilingDataFamily if m and m.name and flags & m)


def profiling_begin(device: Any, options: ProfilingOptions) -> ProfilingSession | None:
    if not isinstance(options, ProfilingOptions):
        raise InvalidArgumentError(
            "profiling_begin needs hal_core.profiling.ProfilingOptions, got "
            f"{type(options).__name__}"
        )
    device._check_open()
    families = options.effective_families
    with _lock(device):
        if device.__dict__.get("_profiling_session") is not None:
            raise FailedPreconditionError(
                f"device {device.uri!r} already has a profiling session; call profiling_end() "
                "before beginning another"
            )
        if not families:
            return None  # IREE: no data requested -> no session, silently
        if not options.sinks:
            raise InvalidArgumentError(
                f"profiling_begin requests {_names(families)} but gives no sink; pass "
                "sinks=[...] (e.g. StatisticsSink(), ProfileBundleSink(path), PerfettoSink(path))"
            )
        supported = supported_families(device)
        missing = families & ~supported
        if missing:
            raise UnimplementedError(
                f"device {device.uri!r} cannot produce profiling data {_names(missing)}; it "
                f"supports {_names(supported) or 'no profiling data'}. Drop those families"
            )
        backend = device.backend
        contract = device._contract
        domain, freq = (
            contract.profiling.profiling_clock
            if contract.has_profiling_clock
            else (ClockDomain.HOST_NS, 1_000_000_000)
        )
        session = ProfilingSession(
            options,
            families,
            session_id=_session_ids(),
            device_name=device.uri,
            queue_count=device.queue_count,
            clock_domain=domain,
            tick_frequency_hz=freq,
        )
        attach = contract.profiling_begin
        if attach is not None:
            attach(session)  # UNAVAILABLE etc. propagate; nothing was started
        tap = None
        if families & ProfilingDataFamily.QUEUE_EVENTS and not (
            _backend_families(device) & ProfilingDataFamily.QUEUE_EVENTS
        ):
            tap = _GenericQueueTap(backend, session)
            tap.install()
            session.add_end_callback(tap.remove)
        try:
            if domain == ClockDomain.HOST_NS:
                t = host_time_ns()
                session.record_clock_correlation(t, t, t)
            session.start()
        except BaseException:
            if tap is not None:
                tap.remove()
            detach = contract.profiling_end
            if detach is not None:
                detach(session)
            raise
        session.bind_device(device)  # so that leaving ``with session:`` ends it
        device.__dict__["_profiling_session"] = session
        return session


def _active(device: Any, what: str) -> ProfilingSession:
    session = device.__dict__.get("_profiling_session")
    if session is None:
        raise FailedPreconditionError(
            f"{what} on device {device.uri!r} without an active profiling session; call "
            "profiling_begin(options) first"
        )
    return session


def profiling_flush(device: Any) -> None:
    with _lock(device):
        session = _active(device, "profiling_flush")
        hook = device._contract.profiling_flush
        if hook is not None:
            hook(session)
        session.flush()


def profiling_end(device: Any) -> None:
    """Ends the session even when the backend or a sink fails (the error is re-raised
    after everything was released)."""
    with _lock(device):
        session = _active(device, "profiling_end")
        device.__dict__["_profiling_session"] = None
        first: BaseException | None = None
        contract = device._contract
        try:
            hook = contract.profiling_flush
            if hook is not None:
                hook(session)
        except BaseException as exc:
            first = exc
        detach = contract.profiling_end
        if detach is not None:
            try:
                detach(session)
            except BaseException as exc:
                first = first or exc
        # (a generic queue tap is removed by the session's end callbacks, in session.end)
        if session.clock_domain == ClockDomain.HOST_NS:
            t = host_time_ns()
            session.record_clock_correlation(t, t, t)
        try:
            session.end()
        except BaseException as exc:
            first = first or exc
        if first is not None:
            raise first
