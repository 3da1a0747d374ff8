"""An example third-party profiler for hal-core (see README.md)."""

from .sink import OpHistogramSink

__all__ = ["OpHistogramSink"]
