"""What a device hands out for building pools that serve one of its queues."""

from __future__ import annotations

from typing import Any, Callable

import attrs

from .._notification import Notification

__all__ = ["QueuePoolBackend"]


@attrs.frozen
class QueuePoolBackend:
    """Ingredients for a user-built pool serving queue ``queue_index`` of a device
    (``Device.query_queue_pool_backend``): the device's ``slab_provider`` (real memory of
    the queue's memory domain), the ``notification`` the queue parks exhausted
    ``queue_alloca`` work on (pass it to the pool so its releases wake that work), and the
    ``epoch_query`` of the device's frontier tracker (pass it, or None to rely on
    dominance and frontier waits only). ``axis`` is the queue's frontier axis."""

    slab_provider: Any
    notification: Notification
    epoch_query: Callable[[int, int], bool]
    axis: int
    queue_index: int
