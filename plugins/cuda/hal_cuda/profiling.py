"""Profiling on the cuda driver: dispatch events with device timestamps, memory events of
the default pools, and the clock correlation between the two time domains.

* QUEUE_EVENTS and HOST_EXECUTION_EVENTS: the host-side taps of ``host_spans.py``
  (submission ids are the ops' epochs, as in dispatch events).
* DISPATCH_EVENTS: while a session captures them, programs replay as stream launches (not
  as graphs) and each launch is bracketed by two CUDA timing events on its stream; when
  the op completes, ``cuEventElapsedTime`` against the session's reference event gives
  the start and end in the session's device clock: nanoseconds since the reference event
  (``ClockDomain.DEVICE_TICKS`` at 1 GHz, CUDA's event resolution is about 0.5 us).
* Clock correlation: at ``profiling_begin`` the reference event is recorded and waited
  for; the host time around that wait is correlated with device tick 0.
* MEMORY_EVENTS: reserve/release events of the device's default pools
  (``record_pool_events``, removed when the session ends).

Work still in flight when the session ends records nothing (the taps see ``session``
closed). Timing events are recycled through a pool of their own and destroyed with the
device.
"""

from __future__ import annotations

from typing import Any

from hal_core.profiling import ClockDomain, ProfilingDataFamily, host_time_ns

from .completion import EventPool
from .cuda_api import CudaContext, check

CUDA_PROFILING_FAMILIES = int(
    ProfilingDataFamily.QUEUE_EVENTS
    | ProfilingDataFamily.HOST_EXECUTION_EVENTS
    | ProfilingDataFamily.DISPATCH_EVENTS
    | ProfilingDataFamily.MEMORY_EVENTS
)
DEVICE_TICKS_PER_SECOND = 1_000_000_000


class DispatchTimer:
    """The timing events of one op's launches: ``mark`` records an event on the stream;
    ``entries`` holds (command index, launch, start event, end event)."""

    __slots__ = ("events", "entries")

    def __init__(self, events: EventPool) -> None:
        self.events = events
        self.entries: list[tuple[int, Any, Any, Any]] = []

    def mark(self, api: Any, stream: Any) -> Any:
        event = self.events.get()
        check(api.cuEventRecord(event, stream), "cuEventRecord")
        return event


class CudaProfiling:
    """One session's state on one device."""

    def __init__(self, ctx: CudaContext, session: Any, events: EventPool, stream: Any) -> None:
        self.ctx = ctx
        self.session = session
        self.events = events
        self.dispatch = session.dispatch_events is not None
        api = ctx.api
        ctx.make_current()
        self.reference = events.get()
        check(api.cuEventRecord(self.reference, stream), "cuEventRecord")
        begin = host_time_ns()
        check(api.cuEventSynchronize(self.reference), "cuEventSynchronize")
        end = host_time_ns()
        session.record_clock_correlation(0, begin, end)

    def timer(self) -> DispatchTimer:
        return DispatchTimer(self.events)

    def memory_event(self, event_type: int, op: Any, length: int) -> None:
        """A QUEUE_ALLOCA / QUEUE_DEALLOCA memory event of ``op`` (MEMORY_EVENTS only)."""
        session = self.session
        if session.memory_events is not None and not session.closed:
            session.record_memory_event(
                event_type, op.queue, id(op.target), length, submission_id=op.epoch
            )

    def record(self, op: Any, timer: DispatchTimer, failed: bool) -> None:
        """Dispatch events of a completed op (completion thread); its events go back to
        the pool. A failed op records none (its timestamps may never have been written)."""
        api = self.ctx.api
        session = self.session
        reference = self.reference
        program_id = id(op.program)
        for index, launch, start, end in timer.entries:
            if not failed and not session.closed:
                t0 = api.cuEventElapsedTime(reference, start)
                t1 = api.cuEventElapsedTime(reference, end)
                if not t0[0] and not t1[0]:
                    session.record_dispatch(
                        op.queue,
                        op.epoch,
                        program_id,
                        launch.executable_id,
                        index,
                        launch.ordinal,
                        launch.grid,
                        launch.block,
                        int(t0[1] * 1e6),
                        int(t1[1] * 1e6),
                    )
            self.events.put(start)
            self.events.put(end)
        timer.entries = []


def profiling_clock() -> tuple[ClockDomain, int]:
    """Device ticks are nanoseconds since the session's reference event."""
    return ClockDomain.DEVICE_TICKS, DEVICE_TICKS_PER_SECOND
