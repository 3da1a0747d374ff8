"""Host clock and the device-tick -> host-ns mapping built from clock correlations.

The host clock of every record is ``time.perf_counter_ns`` (monotonic). Device ticks are
mapped to it only here, by a least-squares line through the correlation samples of that
device (the midpoint of each host bracket against the device tick).
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["host_time_ns", "ClockMap"]

host_time_ns = time.perf_counter_ns


class ClockMap:
    """Per-device linear maps ``host_ns = a * tick + b``. Devices whose clock domain is
    HOST_NS map with ``a=1, b=0``. A device with a tick clock and fewer than two
    correlations uses its tick frequency and the one sample it has."""

    def __init__(self) -> None:
        self._lines: dict[int, tuple[float, float]] = {}
        self._samples: dict[int, list[tuple[float, float]]] = {}
        self._freq: dict[int, float] = {}
        self._host_domain: set[int] = set()

    def add_device(self, ordinal: int, clock_domain: int, tick_frequency_hz: int) -> None:
        if clock_domain == 0:
            self._host_domain.add(ordinal)
        self._freq[ordinal] = float(tick_frequency_hz or 1e9)
        self._lines.pop(ordinal, None)

    def add_correlations(self, records: np.ndarray) -> None:
        for r in records:
            d = int(r["physical_device_ordinal"])
            mid = (int(r["host_time_begin_ns"]) + int(r["host_time_end_ns"])) / 2.0
            self._samples.setdefault(d, []).append((float(r["device_tick"]), mid))
            self._lines.pop(d, None)

    def _line(self, ordinal: int) -> tuple[float, float]:
        line = self._lines.get(ordinal)
        if line is not None:
            return line
        if (
            ordinal in self._host_domain
            or ordinal not in self._freq
            and not self._samples.get(ordinal)
        ):
            line = (1.0, 0.0)
        else:
            pts = self._samples.get(ordinal, [])
            a = 1e9 / self._freq.get(ordinal, 1e9)
            if len(pts) >= 2 and len({p[0] for p in pts}) >= 2:
                x = np.array([p[0] for p in pts])
                y = np.array([p[1] for p in pts])
                a, b = np.polyfit(x - x[0], y, 1)
                b = b - a * x[0]
            elif pts:
                b = pts[0][1] - a * pts[0][0]
            else:
                b = 0.0
            line = (float(a), float(b))
        self._lines[ordinal] = line
        return line

    def to_host_ns(self, ordinal: int, ticks: np.ndarray | int) -> np.ndarray | float:
        a, b = self._line(ordinal)
        if a == 1.0 and b == 0.0:
            return (
                np.asarray(ticks, dtype=np.float64)
                if isinstance(ticks, np.ndarray)
                else float(ticks)
            )
        return np.asarray(ticks, dtype=np.float64) * a + b

    def ticks_to_ns(self, ordinal: int, ticks: np.ndarray | int) -> np.ndarray | float:
        """A tick *duration* in ns."""
        a, _b = self._line(ordinal)
        return np.asarray(ticks, dtype=np.float64) * a
