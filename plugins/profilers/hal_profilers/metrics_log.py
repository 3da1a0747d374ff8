"""``metrics-log``: a profiler (sink) writing device-metric samples as CSV.

Columns: ``host_time_ns, source, metric, unit, value``. Needs DEVICE_METRICS, so it works
on devices with a metric source (amdgpu with sysfs); elsewhere ``profiling_begin`` fails
with UNIMPLEMENTED naming the family.
"""

from __future__ import annotations

import csv
import os
from typing import Mapping

from hal_core import InvalidArgumentError
from hal_core.profiling import CaptureSink, ChunkMetadata, MetricUnit

__all__ = ["MetricsLogSink", "create_metrics_log"]


class MetricsLogSink(CaptureSink):
    """Collects the session and writes the CSV at ``end_session``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = os.fspath(path)

    def end_session(self, metadata: ChunkMetadata, status_code: int) -> None:
        super().end_session(metadata, status_code)
        cap = self.capture
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["host_time_ns", "metric", "unit", "value"])
            for t, values in cap.metric_samples:
                for mid, value in zip(values["metric_id"], values["value"]):
                    unit = cap.metric_units.get(int(mid))
                    w.writerow(
                        [
                            t,
                            cap.metric_names.get(int(mid), int(mid)),
                            MetricUnit(unit).name if unit is not None else "",
                            int(value),
                        ]
                    )


def create_metrics_log(options: Mapping[str, str]) -> MetricsLogSink:
    path = options.get("output")
    if not path:
        raise InvalidArgumentError(
            "profiler 'metrics-log' needs an output file: --profiler-option output=metrics.csv"
        )
    return MetricsLogSink(path)
