"""``hal bench`` entry comparing CUDA's stream-ordered allocator with hal_core's pools.

* ``alloca.e2e.stream_ordered``: ``alloca.e2e``'s shape (a chain of 256 queue_alloca of
  4 KiB + queue_dealloca pairs on one queue, each waiting on the previous op's timeline
  value, from the first submit until the host wait on the last returns; us per pair) on
  the GPU under test opened a second time with ``alloca=stream`` (``stream_alloca.py``).
  ``alloca.e2e`` in the same run is the pools' figure (``alloca=pools``, the default,
  unless the device under test was opened with the option).

Runs on a ``cuda://`` device only (skipped otherwise, with the reason). Each sample is
the median over ``--repeats`` after one untimed warm-up, as the generic entries.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import hal_core
from hal_core.bench import BenchContext, BenchmarkSkipped, benchmark
from hal_core.bench.pools import alloca_chain


def stream_ordered_uri(uri: str) -> str:
    """``uri`` (a ``cuda://`` URI) with ``alloca=stream`` among its parameters."""
    base, _, query = uri.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    params["alloca"] = "stream"
    return f"{base}?{urlencode(params)}"


@benchmark("alloca.e2e.stream_ordered", "us/pair")
def alloca_e2e_stream_ordered(ctx: BenchContext) -> float:
    """alloca.e2e through CUDA's stream-ordered allocator (alloca=stream), us per pair."""
    if ctx.device is None or ctx.device.driver_name != "cuda":
        raise BenchmarkSkipped(f"runs on a cuda:// device only, not {ctx.uri!r}")
    uri = stream_ordered_uri(ctx.uri)
    device = hal_core.create_device(uri)
    try:
        inner = BenchContext(device, uri, ctx.repeats)
        return inner.median(lambda: alloca_chain(inner))
    finally:
        device.close()
