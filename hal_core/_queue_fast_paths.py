"""The native queue front door: loading ``hal_core._native_queue`` and binding it.

``_native_queue`` is a C extension built when ``hal-core`` is installed (``setup.py``;
optional, like the pool fast paths). Its ``queue_op`` builds the ``QueueOp`` of a call of
the common shape (see ``_native_queue.c``) and calls the Python reference,
``_queue_checks.queue_op``, for everything else, so behaviour is the same with or without
it; ``fill_op`` does the same for ``queue_fill`` (reference ``_queue_checks.fill_op``), and
``alloca_op`` / ``dealloca_op`` for ``queue_alloca`` / ``queue_dealloca`` (references in
``_queue_alloca_paths``).
Its ``complete_op`` finishes a successful op (signals, retained, retire) with
``_completion.complete_op`` as the reference in the same way, and its ``add_timepoint``
becomes ``Semaphore.add_timepoint`` (``Semaphore._add_timepoint`` is the reference).
``HAL_QUEUE_NATIVE=0`` turns it off; ``describe()`` says which is in use.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from ._buffer import _COMMITTED, _DECOMMITTED, _PENDING, Buffer
from ._completion import complete_op as complete_op_reference
from ._completion import signal_all
from ._completion import wait_reached as wait_reached_reference
from ._frontier import DEFAULT_FRONTIER_CAPACITY, Frontier
from ._frontier_tracker import _AxisState
from ._memory import BufferUsage, MemoryAccess, PlacementFlags
from ._queue import QueueOp, QueueOpKind
from ._queue_alloca_paths import AllocaLane, alloca_reference, dealloca_reference
from ._queue_checks import fill_op as fill_op_reference
from ._queue_checks import queue_op as queue_op_reference
from ._queue_timeline import QueueTimeline, bind_native_epochs
from ._semaphore import MAX_VALUE, Semaphore, bind_native_timepoints
from .pool import ReserveFlags
from .pool._fast_paths import native as pool_native
from .pool._queue_alloca import TransientAllocation

__all__ = [
    "alloca_method",
    "complete_op",
    "dealloca_method",
    "describe",
    "fill_host",
    "fill_host_reference",
    "fill_op_method",
    "native",
    "queue_op",
    "queue_op_method",
    "unavailable_reason",
    "wait_reached",
]


_FILL_DTYPES = {2: np.uint16, 4: np.uint32}
# Up to this many bytes the reference stores the repeated pattern with one memoryview
# slice assignment (a numpy view, a dtype reinterpretation and ``fill`` cost several times
# more for a few bytes); beyond, numpy fills without a repeated-bytes temporary.
_SMALL_FILL_BYTES = 256


def fill_host_reference(host: Any, start: int, length: int, pattern: bytes) -> None:
    """Store ``pattern`` (1, 2 or 4 bytes) repeated over ``host[start:start + length]`` (a
    uint8 numpy array; ``length`` a multiple of the pattern). The Python reference of the
    native ``fill_host``; raises ValueError for a range outside ``host``."""
    if start < 0 or length < 0 or start + length > len(host):
        raise ValueError(f"fill range [{start}, {start + length}) outside {len(host)} bytes")
    if not len(pattern):
        raise ValueError("a fill pattern has 1, 2 or 4 bytes, not none")
    if length <= _SMALL_FILL_BYTES:
        host.data[start : start + length] = pattern * (length // len(pattern))
        return
    dst = host[start : start + length]
    if len(pattern) == 1:
        dst.fill(pattern[0])
    else:
        dst.view(_FILL_DTYPES[len(pattern)]).fill(int.from_bytes(pattern, "little"))


def _load() -> tuple[Any, str | None]:
    if os.environ.get("HAL_QUEUE_NATIVE", "") == "0":
        return None, "turned off by HAL_QUEUE_NATIVE=0"
    try:
        from . import _native_queue
    except ImportError as exc:
        return None, (
            f"hal_core._native_queue is not built ({exc}); reinstall hal-core with a C "
            "compiler and the Python headers present"
        )
    _native_queue.init(QueueOp, Semaphore, QueueOpKind, queue_op_reference, MAX_VALUE)
    _native_queue.init_completion(QueueOp, Semaphore, QueueTimeline, _AxisState, signal_all)
    bind_native_timepoints(_native_queue)
    bind_native_epochs(_native_queue.EpochCounter)
    _native_queue.init_fill_host(fill_host_reference)
    _native_queue.init_wait_reached(wait_reached_reference)
    _native_queue.init_fill(
        Buffer,
        fill_op_reference,
        QueueOpKind.FILL,
        int(BufferUsage.TRANSFER_TARGET),
        int(MemoryAccess.ANY),
        int(MemoryAccess.WRITE),
    )
    _native_queue.init_alloca(
        Buffer,
        AllocaLane,
        TransientAllocation,
        Frontier,
        QueueOp,
        QueueTimeline,
        alloca_reference,
        dealloca_reference,
        QueueOpKind.ALLOCA,
        QueueOpKind.DEALLOCA,
        (_PENDING, _COMMITTED, _DECOMMITTED),
        DEFAULT_FRONTIER_CAPACITY,
        int(ReserveFlags.ALLOW_WAIT_FRONTIER),
        int(PlacementFlags.ASYNCHRONOUS),
        int(PlacementFlags.ASYNCHRONOUS | PlacementFlags.INDETERMINATE_LIFETIME),
        pool_native.Reservation if pool_native is not None else None,
    )
    return _native_queue, None


native, unavailable_reason = _load()

#: ``queue_op(device, kind, affinity, wait, signal)``: the native front door, or the
#: reference without the extension.
queue_op: Callable[..., QueueOp] = native.queue_op if native is not None else queue_op_reference
#: The same, as a class attribute that binds like a method (``Device._op``).
queue_op_method: Any = (
    native.instance_method(native.queue_op) if native is not None else queue_op_reference
)


#: ``Device._fill_op``: ``queue_fill``'s checks and op, native for the common case.
fill_op_method: Any = (
    native.instance_method(native.fill_op) if native is not None else fill_op_reference
)
#: ``Device.queue_alloca`` / ``Device.queue_dealloca``: native for the common case
#: (``_native_alloca.c``), else ``_queue_alloca_paths``' references.
alloca_method: Any = (
    native.instance_method(native.alloca_op) if native is not None else alloca_reference
)
dealloca_method: Any = (
    native.instance_method(native.dealloca_op) if native is not None else dealloca_reference
)
#: ``fill_host(host, start, length, pattern)``: native, or ``fill_host_reference``.
fill_host: Callable[[Any, int, int, bytes], None] = (
    native.fill_host if native is not None else fill_host_reference
)
#: ``wait_reached(sem, value)``: native, or ``_completion.wait_reached``.
wait_reached: Callable[[Any, int], bool] = (
    native.wait_reached if native is not None else wait_reached_reference
)
#: ``complete_op(op, timeline)``: native, or ``_completion.complete_op`` without it.
complete_op: Callable[[Any, Any], None] = (
    native.complete_op if native is not None else complete_op_reference
)


def describe() -> str:
    """One line: which queue front door is in use."""
    if native is not None:
        return "native (hal_core._native_queue)"
    return f"python ({unavailable_reason})"
