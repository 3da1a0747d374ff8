"""Types of the C extension built from ``_native_queue.c`` (type checkers cannot read a
compiled module). ``_queue_fast_paths`` loads and binds it."""

from typing import Any, Callable

def init(
    queue_op_type: type,
    semaphore_type: type,
    kind_type: type,
    reference: Callable[..., Any],
    max_value: int,
    /,
) -> None: ...
def queue_op(device: Any, kind: Any, affinity: int, wait: Any, signal: Any, /) -> Any: ...
def init_completion(
    queue_op_type: type,
    semaphore_type: type,
    timeline_type: type,
    axis_state_type: type,
    signal_all: Callable[..., Any],
    /,
) -> None: ...
def complete_op(op: Any, timeline: Any, /) -> None: ...
def init_timepoints(
    reference: Callable[..., Any], heappush: Callable[..., Any], next_seq: Callable[[], int], /
) -> None: ...
def add_timepoint(sem: Any, value: Any, fn: Any, arg: Any, /) -> Any: ...
def init_fill(
    buffer_type: type,
    reference: Callable[..., Any],
    fill_kind: Any,
    usage_transfer_target: int,
    access_any: int,
    access_write: int,
    /,
) -> None: ...
def fill_op(
    device: Any,
    affinity: Any,
    wait: Any,
    signal: Any,
    target: Any,
    target_offset: Any,
    length: Any,
    pattern: Any,
    pattern_length: Any,
    flags: Any,
    /,
) -> Any: ...
def init_fill_host(reference: Callable[..., Any], /) -> None: ...
def fill_host(host: Any, start: int, length: int, pattern: bytes, /) -> None: ...
def init_wait_reached(reference: Callable[..., Any], /) -> None: ...
def wait_reached(sem: Any, value: Any, /) -> bool: ...
def instance_method(fn: Callable[..., Any], /) -> Any: ...
def init_alloca(
    buffer_type: type,
    lane_type: type,
    transient_type: type,
    frontier_type: type,
    queue_op_type: type,
    timeline_type: type,
    alloca_reference: Callable[..., Any],
    dealloca_reference: Callable[..., Any],
    alloca_kind: Any,
    dealloca_kind: Any,
    buffer_states: tuple[int, int, int],
    frontier_capacity: int,
    allow_wait_frontier: int,
    placement_async: int,
    placement_mask: int,
    reservation_type: type | None,
    /,
) -> None: ...
def alloca_op(
    device: Any,
    affinity: Any,
    wait: Any,
    signal: Any,
    params: Any,
    allocation_size: Any,
    *,
    pool: Any = None,
    flags: Any = 0,
) -> Any: ...
def dealloca_op(
    device: Any, affinity: Any, wait: Any, signal: Any, buffer: Any, *, flags: Any = 0
) -> None: ...

class EpochCounter:
    """A queue timeline's ``begin``: calling it returns start, start + 1, ..."""

    next_epoch: int
    def __init__(self, start: int = 1) -> None: ...
    def __call__(self) -> int: ...
