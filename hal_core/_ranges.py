"""Integer arguments and byte ranges: the one place every public operation checks them.

Offsets, lengths, sizes, affinities and flags arrive from users as Python ints, numpy
integers or anything else with ``__index__``. Each is normalised here to a plain Python
int (``operator.index``), so later arithmetic cannot wrap around in a fixed-width type,
and each range is checked here against what it indexes. Anything that is not an integer
is INVALID_ARGUMENT; a range that does not fit is OUT_OF_RANGE.

Every function takes the fast path (one class test) for a plain ``int`` in range: these
run on every queue operation and recorded command.
"""

from __future__ import annotations

import operator
from typing import Any

from ._memory import WHOLE_BUFFER
from ._status import InvalidArgumentError, OutOfRangeError

__all__ = ["U64_MAX", "as_u64", "as_index", "check_range", "as_flags"]

U64_MAX = (1 << 64) - 1
"""The largest 64-bit unsigned value (IREE's ``iree_device_size_t`` and affinity width)."""


def as_index(value: Any, what: str) -> int:
    """``value`` as a plain Python int (numpy integers included); INVALID_ARGUMENT for
    anything that is not an integer (str, float, None, ...)."""
    if value.__class__ is int:
        return value
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidArgumentError(
            f"{what} must be an integer, got {value!r} ({type(value).__name__})"
        ) from None


def as_u64(value: Any, what: str) -> int:
    """``value`` as a plain int in ``0..2**64-1``: INVALID_ARGUMENT when it is not an
    integer, OUT_OF_RANGE when it is negative or wider than 64 bits."""
    if value.__class__ is not int:
        value = as_index(value, what)
    if value < 0 or value > U64_MAX:
        raise OutOfRangeError(f"{what} {value} is outside 0..2**64-1")
    return value


def as_flags(value: Any, what: str) -> int:
    """A flag word as a plain int in ``0..2**64-1`` (INVALID_ARGUMENT otherwise: a flag
    word is never a range, so a negative or too-wide one is malformed, not out of
    range)."""
    if value.__class__ is not int:
        try:
            value = operator.index(value)
        except TypeError:
            raise InvalidArgumentError(
                f"{what} must be integer flag bits, got {value!r} ({type(value).__name__})"
            ) from None
    if value < 0 or value > U64_MAX:
        raise InvalidArgumentError(f"{what} {value} is not a 64-bit flag word")
    return value


def check_range(offset: int, length: int, size: int, what: str) -> int:
    """Validate ``[offset, offset + length)`` against the ``size`` bytes of ``what`` (a
    noun: "buffer", "file") and return the length (``WHOLE_BUFFER`` resolved to "to the
    end").

    ``offset`` and ``length`` may be any integers (normalised here); the caller stores
    ``as_index(offset)`` when it keeps the offset. INVALID_ARGUMENT when either is not
    an integer; OUT_OF_RANGE when the range does not fit in ``size``.
    """
    if offset.__class__ is not int:
        offset = as_index(offset, f"{what} offset")
    if length.__class__ is not int:
        length = as_index(length, f"{what} length")
    if offset < 0 or offset > size:
        raise OutOfRangeError(f"offset {offset} is outside the {what} of {size} bytes")
    if length == WHOLE_BUFFER:
        return size - offset
    if length < 0 or offset + length > size:
        raise OutOfRangeError(
            f"range [{offset}, {offset + length}) exceeds the {what} of {size} bytes"
        )
    return length
