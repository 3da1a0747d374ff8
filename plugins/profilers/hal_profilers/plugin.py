"""Entry point of ``hal-profilers``: the profilers it provides to ``hal profile``."""

from __future__ import annotations

from hal_core import hookimpl
from hal_core.profiling import ProfilerFactory, ProfilingDataFamily


@hookimpl
def hal_profilers() -> list[ProfilerFactory]:
    from .metrics_log import create_metrics_log

    return [
        ProfilerFactory(
            name="metrics-log",
            create=create_metrics_log,
            data_families=ProfilingDataFamily.DEVICE_METRICS,
            description="device metrics (sysfs clocks, temperatures, power, activity, VRAM) as CSV",
        )
    ]
