"""``queue_alloca`` / ``queue_dealloca``: the Python reference and the alloca lane.

``alloca_reference`` and ``dealloca_reference`` are ``Device.queue_alloca`` /
``queue_dealloca``'s checks and submission, the behaviour the native fast path
(``_native_alloca.c``, ``alloca_op`` / ``dealloca_op``) reproduces for the common case and
falls back to for everything else; a differential property test checks both agree.

An ``AllocaLane`` is what the native path needs to skip the reference for one device and
one ``(params, size)`` call shape (params compared by value: ``BufferParams`` is frozen);
a device keeps up to ``MAX_ALLOCA_LANES`` of them, newest first (``Device._alloca_lanes``),
so a program alternating a few shapes (an MLP's 128- and 512-byte allocas) stays native:
the canonical params and size the reference resolved for them (front door; a valid lane
also means the device is open: ``Device.close`` clears it), and, when the backend binds
it (``bind_alloca_lane``), the straight path through its pool machine: the default pool,
the queues' ``QueueTimeline``s and axes. The reference builds a lane after a call with
``pool=None`` and no flags and no valid lane of that shape, so the next call of that shape
goes native; a dealloca takes the lane whose pool the buffer came from. The native
straight path runs only while the lane is ``valid`` (the pool machine clears it when the
device joins or leaves a group, or closes), the pool set's entries are the ones the lane
was built for and the pool is within budget, and the backend's instance dict (``gate``)
has no ``submit`` (profiling taps and recorders shadow it there), ``_closing`` False and no
active ``profiler``; then a ready alloca reserves, commits and completes in one call, and a
ready dealloca releases and completes in one call, with every other case handed to the
backend (``submit_alloca`` / ``submit``) as the reference does.
"""

from __future__ import annotations

from typing import Any

from ._allocator import _as_params, check_size
from ._buffer import Buffer
from ._construction import INTERNAL
from ._memory import BufferParams, BufferUsage, PlacementFlags
from ._queue import AllocaFlags, DeallocaFlags, QueueOpKind
from ._queue_checks import check_buffer, check_known_flags, check_owner
from ._semaphore import SemaphoreList
from ._status import InvalidArgumentError
from .pool import Pool

__all__ = ["MAX_ALLOCA_LANES", "AllocaLane", "alloca_reference", "dealloca_reference"]

# Lanes a device keeps (one per call shape; the native path scans them in order).
MAX_ALLOCA_LANES = 4

_ALLOCA_FLAGS = int(AllocaFlags.INDETERMINATE_LIFETIME | AllocaFlags.ALLOW_POOL_WAIT_FRONTIER)
# Flag tests on ints: ``enum & enum`` builds a new flag member (about a microsecond each).
_ALLOCA_USAGE = BufferUsage.TRANSFER | BufferUsage.DISPATCH_STORAGE
_PLACE_ASYNC = PlacementFlags.ASYNCHRONOUS
_PLACE_ASYNC_INDETERMINATE = PlacementFlags.ASYNCHRONOUS | PlacementFlags.INDETERMINATE_LIFETIME
_ASYNC = int(PlacementFlags.ASYNCHRONOUS)
_INDETERMINATE = int(PlacementFlags.INDETERMINATE_LIFETIME)
_ALLOCA_INDETERMINATE = int(AllocaFlags.INDETERMINATE_LIFETIME)
_PREFER_ORIGIN = int(DeallocaFlags.PREFER_ORIGIN)
_NO_ALLOCA_FLAGS = AllocaFlags(0)
_NO_DEALLOCA_FLAGS = DeallocaFlags(0)
_ALLOCA = QueueOpKind.ALLOCA
_DEALLOCA = QueueOpKind.DEALLOCA


class AllocaLane:
    """The native alloca path's facts for one device and one ``(key_params, key_size)``
    call shape (see the module docstring). Built by ``alloca_reference``; the straight-path
    fields are set by the backend's ``bind_alloca_lane`` (``QueueAllocaMachine.bind_lane``)
    and left empty (``timelines == ()``) when it has none. Read by C through its slots;
    written only while it is being built, except ``valid``."""

    __slots__ = (
        "valid",
        "key_params",
        "key_size",
        "params",
        "size",
        "memory_type",
        "usage",
        "access",
        "placement",
        "alloca_flags",
        "dealloca_flags",
        "machine",
        "pool",
        "acquire",
        "release",
        "wrap",
        "alignment",
        "pool_set",
        "entries",
        "timelines",
        "axes",
        "gate",
        "resume",
        "on_error",
        "state_type",
        "slabs",
        "storage_cache",
        "single_queue",
        "requesters",
        "spare",
        "death",
        "__weakref__",  # the pool machine holds its bound lanes weakly
    )

    def __init__(
        self, key_params: Any, key_size: int, params: Any, size: int, single_queue: Any
    ) -> None:
        self.valid = True
        # The device's affinity -> queue index dict (``Device._single_queue``).
        self.single_queue = single_queue
        self.key_params = key_params
        self.key_size = key_size
        self.params = params
        self.size = size
        self.memory_type = params.type
        self.usage = params.usage
        self.access = params.access
        self.placement = _PLACE_ASYNC
        self.alloca_flags = _NO_ALLOCA_FLAGS
        self.dealloca_flags = _NO_DEALLOCA_FLAGS
        # The straight path: none until the backend binds one.
        self.machine: Any = None
        self.pool: Any = None
        self.acquire: Any = None
        self.release: Any = None
        self.wrap: Any = None
        self.alignment = 0
        self.pool_set: Any = None
        self.entries: Any = None
        self.timelines: tuple[Any, ...] = ()
        self.axes: tuple[int, ...] = ()
        self.gate: dict[str, Any] = {}
        self.resume: Any = None
        self.on_error: Any = None
        self.state_type: Any = None
        # A pool whose provider's wraps are reusable: its slab list, and block handle ->
        # (offset, length, slab index, slab, slab storage, wrapped storage) of recent
        # commits, so a recycled block commits to the storage it had (both None otherwise).
        self.slabs: list[Any] | None = None
        self.storage_cache: dict[int, tuple[Any, ...]] | None = None
        # For pools that only read the requester frontier during the call: one reusable
        # requester per queue (None while a call holds it), else None.
        self.requesters: list[Any] | None = None
        # A ``TransientAllocation`` the native straight dealloca let go of (no reservation,
        # referenced by nothing else), for the next straight alloca to reuse; else None.
        self.spare: Any = None
        # The death frontier the native straight dealloca last released a block with; the
        # next one reuses it (its epoch updated in place) once nothing else holds it (the
        # pool let it go when it handed the block out again); else None.
        self.death: Any = None


def alloca_reference(
    device: Any,
    affinity: int,
    wait: SemaphoreList,
    signal: SemaphoreList,
    params: Any,
    allocation_size: int,
    *,
    pool: Any = None,
    flags: int = 0,
) -> Buffer:
    """``Device.queue_alloca`` (the reference; see ``Device.queue_alloca``)."""
    op = device._op(_ALLOCA, affinity, wait, signal)
    key_params = params
    params = _as_params(params)
    if pool is not None and not isinstance(pool, Pool):
        raise InvalidArgumentError(
            "queue_alloca pool must be a hal_core.pool.Pool (None selects the device's "
            f"default pool set), got {type(pool).__name__}"
        )
    size = check_size(allocation_size)
    flags = check_known_flags(flags, _ALLOCA_FLAGS, "alloca flags") if flags else 0
    key_size = size
    # RESOURCE_EXHAUSTED now for a size no heap can ever hold: parking it on a pool
    # would wait forever.
    params, size = device.allocator.allocatable(params.with_usage(_ALLOCA_USAGE), size)
    buffer = Buffer(
        None,
        memory_type=params.type,
        allowed_usage=params.usage,
        allowed_access=params.access,
        allocation_size=size,
        device=device,
        queue_affinity=1 << op.queue,
        placement_flags=(
            _PLACE_ASYNC_INDETERMINATE if flags & _ALLOCA_INDETERMINATE else _PLACE_ASYNC
        ),
        _token=INTERNAL,
    )
    op.target = buffer
    op.length = size
    op.pool = pool
    op.params = params
    op.alloca_state = None
    op.flags = AllocaFlags(flags) if flags else _NO_ALLOCA_FLAGS
    if (
        pool is None
        and not flags
        and allocation_size.__class__ is int
        and (key_params is None or key_params.__class__ is BufferParams)  # frozen: a safe key
    ):
        lanes = device._alloca_lanes
        for lane in lanes:
            if lane.valid and (lane.key_params is key_params or lane.key_params == key_params):
                if lane.key_size == key_size:
                    break
        else:
            # The next call of this shape takes the native path (when it is built). A
            # program alternating a few shapes keeps one lane each; the oldest built goes
            # (marked invalid, so its machine drops it) beyond ``MAX_ALLOCA_LANES``.
            lane = AllocaLane(key_params, key_size, params, size, device._single_queue)
            kept = [old for old in lanes if old.valid]
            for old in kept[MAX_ALLOCA_LANES - 1 :]:
                old.valid = False
            del kept[MAX_ALLOCA_LANES - 1 :]
            bind = device._bind_alloca_lane
            if bind is not None:
                bind(lane)
            kept.insert(0, lane)
            device._alloca_lanes = kept
            if device._closed:  # closed meanwhile: a valid lane means an open device
                lane.valid = False
    # Backends with pools reserve memory here (and may refuse with RESOURCE_EXHAUSTED).
    (device._submit_alloca or device._submit)(op)
    return buffer


def dealloca_reference(
    device: Any,
    affinity: int,
    wait: SemaphoreList,
    signal: SemaphoreList,
    buffer: Buffer,
    *,
    flags: int = 0,
) -> None:
    """``Device.queue_dealloca`` (the reference; see ``Device.queue_dealloca``)."""
    check_buffer(buffer, "dealloca buffer")
    if buffer.device is not device:
        check_owner(device, buffer, "dealloca buffer")
    flags = check_known_flags(flags, _PREFER_ORIGIN, "dealloca flags") if flags else 0
    if flags & _PREFER_ORIGIN and buffer.device is device:
        affinity = buffer.queue_affinity
    root = buffer._root
    if int(root.placement_flags) & (_ASYNC | _INDETERMINATE) != _ASYNC:
        device.queue_barrier(affinity, wait, signal)
        return
    op = device._op(_DEALLOCA, affinity, wait, signal)
    op.target = root
    op.flags = DeallocaFlags(flags) if flags else _NO_DEALLOCA_FLAGS
    device._submit(op)
