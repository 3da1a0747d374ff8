"""Memory types, buffer usage and access bits, queue affinity, and buffer parameters.

Bit values are IREE's (``iree_hal_memory_type_t`` and friends), composite members included:
``DEVICE_LOCAL`` contains ``DEVICE_VISIBLE``, so "is device local" is an all-bits test
(``(t & MemoryType.DEVICE_LOCAL) == MemoryType.DEVICE_LOCAL``); ``MemoryType.has`` does it.
"""

from __future__ import annotations

import enum
import operator
from typing import Any

import attrs

from ._status import InvalidArgumentError

__all__ = [
    "MemoryType",
    "BufferUsage",
    "MemoryAccess",
    "BufferCompatibility",
    "PlacementFlags",
    "QueueAffinity",
    "BufferParams",
    "MemoryHeap",
    "WHOLE_BUFFER",
]

WHOLE_BUFFER = (1 << 64) - 1
"""``IREE_HAL_WHOLE_BUFFER``: a length meaning "to the end of the buffer"."""


class _Flags(enum.IntFlag):
    def has(self, bits: int) -> bool:
        """True when every bit of ``bits`` is set (use for composite members)."""
        need = int(bits)
        return int(self) & need == need


class MemoryType(_Flags):
    NONE = 0
    OPTIMAL = 1 << 0
    HOST_VISIBLE = 1 << 1
    HOST_COHERENT = 1 << 2
    HOST_CACHED = 1 << 3
    HOST_LOCAL = HOST_VISIBLE | HOST_COHERENT | (1 << 6)
    DEVICE_VISIBLE = 1 << 4
    DEVICE_LOCAL = DEVICE_VISIBLE | (1 << 5)
    OPTIMAL_FOR_HOST = OPTIMAL | HOST_LOCAL
    OPTIMAL_FOR_DEVICE = OPTIMAL | DEVICE_LOCAL


class BufferUsage(_Flags):
    NONE = 0
    TRANSFER_SOURCE = 1 << 0
    TRANSFER_TARGET = 1 << 1
    TRANSFER = TRANSFER_SOURCE | TRANSFER_TARGET
    DISPATCH_INDIRECT_PARAMETERS = 1 << 8
    DISPATCH_UNIFORM_READ = 1 << 9
    DISPATCH_STORAGE_READ = 1 << 10
    DISPATCH_STORAGE_WRITE = 1 << 11
    DISPATCH_STORAGE = DISPATCH_STORAGE_READ | DISPATCH_STORAGE_WRITE
    DISPATCH_IMAGE_READ = 1 << 12
    DISPATCH_IMAGE_WRITE = 1 << 13
    DISPATCH_IMAGE = DISPATCH_IMAGE_READ | DISPATCH_IMAGE_WRITE
    DISPATCH = (
        DISPATCH_INDIRECT_PARAMETERS | DISPATCH_UNIFORM_READ | DISPATCH_STORAGE | DISPATCH_IMAGE
    )
    SHARING_EXPORT = 1 << 16
    SHARING_REPLICATE = 1 << 17
    SHARING_CONCURRENT = 1 << 18
    SHARING_IMMUTABLE = 1 << 19
    MAPPING_SCOPED = 1 << 24
    MAPPING_PERSISTENT = 1 << 25
    MAPPING_OPTIONAL = 1 << 26
    MAPPING_ACCESS_RANDOM = 1 << 27
    MAPPING_ACCESS_SEQUENTIAL_WRITE = 1 << 28
    MAPPING = MAPPING_SCOPED | MAPPING_ACCESS_RANDOM
    DEFAULT = TRANSFER | DISPATCH_STORAGE


class MemoryAccess(_Flags):
    NONE = 0
    READ = 1 << 0
    WRITE = 1 << 1
    DISCARD = 1 << 2
    DISCARD_WRITE = DISCARD | WRITE
    MAY_ALIAS = 1 << 3
    UNALIGNED = 1 << 4
    ANY = 1 << 5
    ALL = READ | WRITE | DISCARD


class BufferCompatibility(_Flags):
    NONE = 0
    ALLOCATABLE = 1 << 0
    IMPORTABLE = 1 << 1
    EXPORTABLE = 1 << 2
    QUEUE_TRANSFER = 1 << 10
    QUEUE_DISPATCH = 1 << 11
    LOW_PERFORMANCE = 1 << 20


class PlacementFlags(_Flags):
    NONE = 0
    ASYNCHRONOUS = 1 << 0
    INDETERMINATE_LIFETIME = 1 << 1


class QueueAffinity:
    """Helpers over the 64-bit queue-affinity bitmap (IREE ``iree_hal_queue_affinity_t``)."""

    ANY = (1 << 64) - 1

    @staticmethod
    def describe(affinity: int) -> str:
        """Short text for an affinity value (which is a plain int, so its repr is a
        number): ``ANY``, ``none``, ``queue 2``, ``queues 0,1,3``."""
        from ._reprs import affinity as text  # (_reprs imports this module)

        return text(affinity)

    @staticmethod
    def is_any(affinity: int) -> bool:
        return affinity == QueueAffinity.ANY

    @staticmethod
    def is_empty(affinity: int) -> bool:
        return affinity == 0

    @staticmethod
    def count(affinity: int) -> int:
        return bin(affinity & QueueAffinity.ANY).count("1")

    @staticmethod
    def find_first_set(affinity: int) -> int:
        """Index of the lowest set bit; -1 when empty."""
        if affinity == 0:
            return -1
        return (affinity & -affinity).bit_length() - 1

    @staticmethod
    def for_queue(index: int) -> int:
        if not 0 <= index < 64:
            raise InvalidArgumentError(f"queue index {index} is outside 0..63")
        return 1 << index

    @staticmethod
    def queues(affinity: int) -> list[int]:
        """The set bit indices in ascending order."""
        out = []
        a = affinity & QueueAffinity.ANY
        while a:
            low = a & -a
            out.append(low.bit_length() - 1)
            a ^= low
        return out


# The converters run for every BufferParams made (queue_alloca makes some per call): a
# value that is already a non-zero member of its enum is returned as is, because
# constructing a flag enum costs about a microsecond.


def _canon_usage(v: int) -> BufferUsage:
    if v.__class__ is BufferUsage and v:
        return v
    return _flag(BufferUsage, v, "usage") if v else BufferUsage.DEFAULT


def _canon_access(v: int) -> MemoryAccess:
    if v.__class__ is MemoryAccess and v:
        return v
    return _flag(MemoryAccess, v, "access") if v else MemoryAccess.ALL


def _canon_type(v: int) -> MemoryType:
    if v.__class__ is MemoryType and v:
        return v
    return _flag(MemoryType, v, "type") if v else MemoryType.OPTIMAL


def _canon_affinity(v: int) -> int:
    if not v:
        return QueueAffinity.ANY
    if v.__class__ is not int:
        v = _flag(int, v, "queue_affinity")
    if v < 0 or v > QueueAffinity.ANY:
        raise InvalidArgumentError(f"BufferParams queue_affinity {v} is not a 64-bit mask")
    return v


def _flag(kind: type, v: object, field: str) -> Any:
    """``kind(v)`` for a flag value given as a plain or numpy int; INVALID_ARGUMENT for
    anything else (a str, a float, a negative mask)."""
    try:
        # Any object: one without __index__ raises TypeError, caught below.
        bits = operator.index(v)  # type: ignore[arg-type]
        if bits < 0:
            raise ValueError(bits)
        return kind(bits)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"BufferParams {field} must be {getattr(kind, '__name__', kind)} bits, got {v!r}"
        ) from None


def _check_alignment(_inst: object, _attr: object, value: int) -> None:
    if value.__class__ is not int:
        value = _flag(int, value, "min_alignment")
    if value < 0 or (value & (value - 1)):
        raise InvalidArgumentError(f"min_alignment must be 0 or a power of two, got {value}")


@attrs.frozen(cache_hash=True)
class BufferParams:
    """How a buffer will be used; zero fields canonicalise as IREE does
    (usage DEFAULT, access ALL, type OPTIMAL, affinity ANY).

    The hash is computed once per instance: allocators key their per-params answers on
    it for every allocation, and a flag member hashes in Python (by name)."""

    usage: BufferUsage = attrs.field(default=BufferUsage.DEFAULT, converter=_canon_usage)
    access: MemoryAccess = attrs.field(default=MemoryAccess.ALL, converter=_canon_access)
    type: MemoryType = attrs.field(default=MemoryType.OPTIMAL, converter=_canon_type)
    queue_affinity: int = attrs.field(default=QueueAffinity.ANY, converter=_canon_affinity)
    min_alignment: int = attrs.field(default=0, validator=_check_alignment)

    def with_usage(self, usage: int) -> "BufferParams":
        """These params with ``usage`` bits added (``self`` when they are there already)."""
        merged = int(self.usage) | int(usage)
        if merged == self.usage:
            return self
        return attrs.evolve(self, usage=BufferUsage(merged))


@attrs.frozen
class MemoryHeap:
    """One memory heap an allocator can place buffers in, in preference order."""

    type: MemoryType
    allowed_usage: BufferUsage
    max_allocation_size: int
    min_alignment: int
