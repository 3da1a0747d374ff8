"""Entry point: provides the ``op-histogram`` profiler through the ``hal_profilers`` hook."""

from __future__ import annotations

from typing import Mapping

from hal_core import InvalidArgumentError, hookimpl
from hal_core.profiling import ProfilerFactory, ProfilingDataFamily

from .sink import OpHistogramSink


def _create(options: Mapping[str, str]) -> OpHistogramSink:
    path = options.get("output")
    if not path:
        raise InvalidArgumentError(
            "profiler 'op-histogram' needs an output file: --profiler-option output=ops.json"
        )
    return OpHistogramSink(path)


@hookimpl
def hal_profilers() -> list[ProfilerFactory]:
    return [
        ProfilerFactory(
            name="op-histogram",
            create=_create,
            data_families=ProfilingDataFamily.QUEUE_EVENTS
            | ProfilingDataFamily.HOST_EXECUTION_EVENTS,
            description="example: queue operations per queue/type and host time, as JSON",
        )
    ]
