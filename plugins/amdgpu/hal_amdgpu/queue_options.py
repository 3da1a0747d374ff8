"""Host queue options: ring capacities, the wait-barrier strategy and the file staging
chunk, from device URIs.

``HostQueueOptions`` holds the capacities of each host queue's three rings, how a wait
on a peer queue is expressed and the chunk size file transfers stage through.
``HostQueueOptions.from_params`` reads them from device URI parameters
(``amdgpu://0?aql_capacity=4096&wait_barrier=defer``); the driver calls it at device
creation, so a bad value is INVALID_ARGUMENT there, naming the parameter as it is spelled
in the URI and its allowed range. Defaults are IREE's ring sizes. Frozen values;
thread-safe.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from hal_core import InvalidArgumentError

__all__ = [
    "DEFAULT_AQL_CAPACITY",
    "DEFAULT_FILE_CHUNK_SIZE",
    "DEFAULT_KERNARG_CAPACITY",
    "QUEUE_PARAMS",
    "HostQueueOptions",
    "fit_to_queue_limit",
    "WaitBarrierStrategy",
]

# IREE's host queue sizes: a 64 Ki-packet AQL ring (4 MiB) and a 16 MiB kernarg ring per
# queue, so deep pipelines of dispatches (each with its kernargs) never stall on ring
# space in the common case. The memory is committed lazily by the OS until the rings wrap.
DEFAULT_AQL_CAPACITY = 1 << 16
DEFAULT_KERNARG_CAPACITY = 16 << 20
DEFAULT_FILE_CHUNK_SIZE = 1 << 20


class WaitBarrierStrategy(enum.IntEnum):
    """How a wait on a peer queue's epoch is expressed."""

    AUTO = 0  # barrier-value where the target supports it (gfx90a, gfx94x), else DEFER
    BARRIER_VALUE = 1  # always an AMD barrier-value packet
    DEFER = 2  # always software deferral (IREE's force_wait_barrier_defer)


#: Capacity parameters: (smallest, largest) power of two, and the unit.
_RANGES: dict[str, tuple[int, int, str]] = {
    # ROCr queues hold at most 128 Ki packets (HSA_AGENT_INFO_QUEUE_MAX_SIZE on every
    # current GPU); below 16 a block program could not hold a dispatch and its barriers.
    "aql_capacity": (16, 1 << 17, "packets"),
    # At least one page of 64-byte blocks; at most 1 GiB of host kernarg memory.
    "kernarg_capacity": (4096, 1 << 30, "bytes"),
    "notification_capacity": (8, 1 << 20, "entries"),
    # One staging chunk of file reads/writes to memory the host cannot map.
    "file_chunk_size": (4096, 1 << 30, "bytes"),
}
#: Every URI parameter ``from_params`` reads.
QUEUE_PARAMS = frozenset(_RANGES) | {"wait_barrier"}


def _in_range(name: str) -> Any:
    low, high, unit = _RANGES[name]

    def check(_instance: Any, _attribute: Any, value: int) -> None:
        if value.__class__ is not int:
            raise InvalidArgumentError(
                f"amdgpu device parameter {name} must be an int, got {type(value).__name__}"
            )
        if not low <= value <= high or value & (value - 1):
            raise InvalidArgumentError(
                f"amdgpu device parameter {name}={value} ({unit}) must be a power of two "
                f"in {low}..{high}; e.g. amdgpu://0?{name}={low}"
            )

    return check


@attrs.frozen
class HostQueueOptions:
    """Ring capacities (powers of two, ranges in ``_RANGES``) and the wait strategy.

    ``aql_capacity`` in packets; ``kernarg_capacity`` in bytes (64-byte blocks);
    ``notification_capacity`` in signal entries and in epochs; ``file_chunk_size`` in
    bytes, the staging chunk of file reads and writes to memory the host cannot map.
    """

    aql_capacity: int = attrs.field(
        default=DEFAULT_AQL_CAPACITY, validator=_in_range("aql_capacity")
    )
    kernarg_capacity: int = attrs.field(
        default=DEFAULT_KERNARG_CAPACITY, validator=_in_range("kernarg_capacity")
    )
    notification_capacity: int = attrs.field(
        default=1024, validator=_in_range("notification_capacity")
    )
    wait_barrier: WaitBarrierStrategy = attrs.field(
        default=WaitBarrierStrategy.AUTO, converter=WaitBarrierStrategy
    )
    file_chunk_size: int = attrs.field(
        default=DEFAULT_FILE_CHUNK_SIZE, validator=_in_range("file_chunk_size")
    )

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "HostQueueOptions":
        """From device URI parameters ``aql_capacity``, ``kernarg_capacity``,
        ``notification_capacity``, ``file_chunk_size`` (integers, ``0x`` accepted) and
        ``wait_barrier``
        (``auto``, ``barrier_value`` or ``defer``); others are ignored here.
        INVALID_ARGUMENT naming the parameter for anything else or out of range."""
        kw: dict[str, Any] = {}
        for key in _RANGES:
            text = params.get(key)
            if text is None:
                continue
            try:
                kw[key] = int(text, 0)
            except ValueError:
                low, high, unit = _RANGES[key]
                raise InvalidArgumentError(
                    f"amdgpu device parameter {key}={text!r} is not an integer; give a power "
                    f"of two in {low}..{high} ({unit}), e.g. amdgpu://0?{key}={low}"
                ) from None
        text = params.get("wait_barrier")
        if text is not None:
            try:
                kw["wait_barrier"] = WaitBarrierStrategy[text.strip().upper()]
            except KeyError:
                raise InvalidArgumentError(
                    f"amdgpu device parameter wait_barrier={text!r}; use wait_barrier=auto, "
                    "wait_barrier=barrier_value or wait_barrier=defer"
                ) from None
        return cls(**kw)


def fit_to_queue_limit(options: HostQueueOptions, queue_max_size: int) -> HostQueueOptions:
    """``options`` for GPUs whose AQL queues hold at most ``queue_max_size`` packets (0:
    unknown, no limit): the default ring shrinks to the largest power of two that fits;
    a capacity given in the URI that does not fit is INVALID_ARGUMENT naming the limit."""
    if not queue_max_size or options.aql_capacity <= queue_max_size:
        return options
    if options.aql_capacity != DEFAULT_AQL_CAPACITY:
        raise InvalidArgumentError(
            f"amdgpu device parameter aql_capacity={options.aql_capacity} (packets) exceeds "
            f"the GPU's HSA queue maximum of {queue_max_size} packets; give at most "
            f"aql_capacity={1 << (queue_max_size.bit_length() - 1)}"
        )
    low = _RANGES["aql_capacity"][0]
    return attrs.evolve(options, aql_capacity=max(low, 1 << (queue_max_size.bit_length() - 1)))
