"""Device-group benchmarks: the cost of a semaphore edge that crosses devices.

``group.edge.e2e`` runs the same 512-edge chain as ``edge.e2e`` (``hal_core.bench.edges``)
but edge i runs on device ``i % 2`` of a two-device group opened from the benchmark's URI,
so every edge is a cross-device wait. Compare it with ``edge.e2e`` (two queues of one
device) from the same ``hal bench`` run.
"""

from __future__ import annotations

from typing import Any

from .._device_group import DeviceGroup, create_device_group
from .._memory import QueueAffinity
from . import BenchContext, benchmark
from .edges import _chain


class _AlternatingDevices:
    """Looks like a two-queue device to ``edges._chain``: affinity bit 0 submits to member
    0 and bit 1 to member 1 of the group, so the chain alternates devices."""

    queue_count = 2

    def __init__(self, group: DeviceGroup) -> None:
        first, second = group.devices[0], group.devices[1]
        self.create_semaphore = first.create_semaphore
        self.allocator = first.allocator
        any_queue = QueueAffinity.ANY
        # Indexed by affinity bit: 1 -> member 0, 2 -> member 1 (0 is never passed).
        barriers: tuple[Any, ...] = (None, first.queue_barrier, second.queue_barrier)
        fills: tuple[Any, ...] = (None, first.queue_fill, second.queue_fill)

        def queue_barrier(affinity: int, wait: Any, signal: Any) -> None:
            barriers[affinity](any_queue, wait, signal)

        def queue_fill(affinity: int, wait: Any, signal: Any, *args: Any) -> None:
            fills[affinity](any_queue, wait, signal, *args)

        self.queue_barrier = queue_barrier
        self.queue_fill = queue_fill


@benchmark("group.edge.e2e", "us/edge")
def group_edge_e2e(ctx: BenchContext) -> float:
    """512 edges alternating between two devices of a group, submit to last host wait."""
    with create_device_group([ctx.uri, ctx.uri]) as group:
        pair = BenchContext(_AlternatingDevices(group), ctx.uri, ctx.repeats)
        return ctx.median(lambda: _chain(pair, signal_head_first=True, fill=False))
