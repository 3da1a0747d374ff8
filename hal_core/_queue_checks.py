"""Argument checks shared by the queue operations and command buffers (the front door),
and the building of a ``QueueOp`` from a call's affinity, wait and signal lists.

``Device`` runs these before it builds a ``QueueOp``, and command-buffer recording and
submission run the buffer ones, so every backend answers the same misuse with the same
status code at the call and nothing is queued:

* semaphore lists: ``(Semaphore, value)`` pairs; wait values in ``0..MAX_VALUE``; signal
  values that advance their semaphore, at most ``MAX_VALUE``, and **each semaphore at most
  once per signal list** (as IREE: one op reaches one value per semaphore; a second entry
  for the same semaphore, equal, larger or smaller, is INVALID_ARGUMENT);
* buffers: a ``Buffer``, owned by the device the work runs on, by another member of its
  device group, or by no device (host memory); a buffer of any other device is
  INVALID_ARGUMENT;
* fill patterns: 1, 2 or 4 bytes;
* flag words: integers of 64 bits without bits the flag type does not define.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from ._buffer import Buffer
from ._memory import BufferUsage, MemoryAccess
from ._queue import QueueOp, QueueOpKind
from ._ranges import U64_MAX, as_flags, as_index, check_range
from ._semaphore import MAX_VALUE, Semaphore
from ._status import HalError, InvalidArgumentError, OutOfRangeError

__all__ = [
    "file_offset",
    "fill_op",
    "queue_op",
    "select_queue",
    "check_buffer",
    "check_distinct_signals",
    "check_known_flags",
    "check_owner",
    "check_signals",
    "fill_pattern_bytes",
    "owner_is_reachable",
    "semaphore_list",
]


def semaphore_list(items: Any, what: str) -> tuple:
    """Validate a list of ``(Semaphore, value)`` pairs into a private tuple of pairs with
    plain-int values (numpy integers normalised). INVALID_ARGUMENT for anything else,
    and for a wait value outside the payload range ``0..MAX_VALUE``."""
    if not items:
        return ()
    try:
        pairs = tuple(items)
    except TypeError:
        raise InvalidArgumentError(
            f"{what} list must be a sequence of (Semaphore, value) pairs, got "
            f"{type(items).__name__}"
        ) from None
    out = []
    for pair in pairs:
        try:
            sem, value = pair
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"{what} list must hold (Semaphore, value) pairs, got {items!r}"
            ) from None
        if sem.__class__ is not Semaphore and not isinstance(sem, Semaphore):
            raise InvalidArgumentError(
                f"{what} list holds a {type(sem).__name__}, expected a Semaphore"
            )
        if value.__class__ is not int:
            if isinstance(value, (bool, np.bool_)):
                raise InvalidArgumentError(f"{what} value must be an int, got {value!r}")
            try:
                value = operator.index(value)
            except TypeError:
                raise InvalidArgumentError(
                    f"{what} value must be an int, got {type(value).__name__}"
                ) from None
        if value < 0 or value > MAX_VALUE:
            # A payload past MAX_VALUE could never be reached (a signal past it is refused
            # in check_signals with its own message).
            if what == "wait" or value < 0:
                raise InvalidArgumentError(
                    f"{what} value {value} is outside the semaphore payload range 0..{MAX_VALUE}"
                )
        out.append((sem, value))
    return tuple(out)


def check_signals(signals: tuple) -> None:
    """Signal values must advance their semaphore (unless it failed already: the op then
    just fails too), stay within ``MAX_VALUE`` and name each semaphore once."""
    for sem, value in signals:
        if value > MAX_VALUE:
            raise InvalidArgumentError(
                f"signal value {value} exceeds the semaphore maximum {MAX_VALUE}"
            )
        if value <= sem._value and sem._failure is None:
            raise InvalidArgumentError(
                f"signal value {value} does not advance the semaphore (already at "
                f"{sem._value}); signal values must increase"
            )
    if len(signals) > 1:
        check_distinct_signals(signals)


def check_distinct_signals(signals: tuple) -> None:
    """INVALID_ARGUMENT when one semaphore appears twice in a signal list (whatever the
    values: one op reaches one value per semaphore)."""
    if len({id(sem) for sem, _value in signals}) == len(signals):
        return
    values: dict[int, list[int]] = {}
    for sem, value in signals:
        values.setdefault(id(sem), []).append(value)
    repeated = next(v for v in values.values() if len(v) > 1)
    raise InvalidArgumentError(
        f"a signal list names one semaphore {len(repeated)} times (values {repeated}); "
        "each semaphore may appear once per signal list: signal only the final value"
    )


def fill_pattern_bytes(pattern: Any, pattern_length: Any) -> bytes:
    """Normalise a fill pattern to 1, 2 or 4 little-endian bytes (INVALID_ARGUMENT else)."""
    if pattern.__class__ is bytes and pattern_length is None:
        # The common call (a bytes pattern) skips the isinstance ladder below.
        n = len(pattern)
        if n == 4 or n == 1 or n == 2:
            return pattern
    if pattern_length is not None and pattern_length.__class__ is not int:
        try:
            pattern_length = operator.index(pattern_length)
        except TypeError:
            raise InvalidArgumentError(
                f"pattern_length must be 1, 2 or 4, got {pattern_length!r}"
            ) from None
    if isinstance(pattern, (bytes, bytearray, memoryview)):
        data = bytes(pattern)
        if pattern_length is not None and pattern_length != len(data):
            raise InvalidArgumentError(
                f"pattern_length {pattern_length} does not match the {len(data)}-byte pattern"
            )
    elif isinstance(pattern, (int, np.integer)) and not isinstance(pattern, (bool, np.bool_)):
        if pattern_length not in (1, 2, 4):
            raise InvalidArgumentError(
                f"fill pattern length must be 1, 2 or 4 bytes, got {pattern_length}"
            )
        value = int(pattern)
        try:
            data = value.to_bytes(pattern_length, "little", signed=value < 0)
        except OverflowError:
            raise InvalidArgumentError(
                f"fill pattern {pattern} does not fit in {pattern_length} bytes"
            ) from None
    else:
        raise InvalidArgumentError(
            f"fill pattern must be bytes or an int, got {type(pattern).__name__}"
        )
    if len(data) not in (1, 2, 4):
        raise InvalidArgumentError(f"fill pattern length must be 1, 2 or 4 bytes, got {len(data)}")
    return data


# Usage and access bits as plain ints: ``IntFlag & IntFlag`` builds a flag member (about
# half a microsecond each), and a transfer checks two or three per buffer.
_USAGE_TARGET = int(BufferUsage.TRANSFER_TARGET)
_USAGE_SOURCE = int(BufferUsage.TRANSFER_SOURCE)
_ACCESS_ANY = int(MemoryAccess.ANY)
_ACCESS_WRITE = int(MemoryAccess.WRITE)
_ACCESS_READ = int(MemoryAccess.READ)


def check_transfer_target(buffer: Buffer, what: str) -> None:
    """PERMISSION_DENIED unless ``buffer`` allows TRANSFER_TARGET usage and WRITE access
    (``Buffer.require_usage`` / ``require_access``, tested on the plain int values; the
    Buffer methods raise with their messages)."""
    access = buffer.allowed_access._value_
    if (buffer.allowed_usage._value_ & _USAGE_TARGET) != _USAGE_TARGET or (
        not access & _ACCESS_ANY and (access & _ACCESS_WRITE) != _ACCESS_WRITE
    ):
        buffer.require_usage(BufferUsage.TRANSFER_TARGET, what)
        buffer.require_access(MemoryAccess.WRITE, what)


def check_transfer_source(buffer: Buffer, what: str) -> None:
    """PERMISSION_DENIED unless ``buffer`` allows TRANSFER_SOURCE usage and READ access
    (as ``check_transfer_target``)."""
    access = buffer.allowed_access._value_
    if (buffer.allowed_usage._value_ & _USAGE_SOURCE) != _USAGE_SOURCE or (
        not access & _ACCESS_ANY and (access & _ACCESS_READ) != _ACCESS_READ
    ):
        buffer.require_usage(BufferUsage.TRANSFER_SOURCE, what)
        buffer.require_access(MemoryAccess.READ, what)


def check_buffer(buffer: Any, what: str) -> None:
    """INVALID_ARGUMENT unless ``buffer`` is a ``Buffer``."""
    if not isinstance(buffer, Buffer):
        raise InvalidArgumentError(f"{what} must be a Buffer, got {type(buffer).__name__}")


def owner_is_reachable(device: Any, owner: Any) -> bool:
    """Whether work of ``device`` may use a buffer owned by ``owner``: its own, one of no
    device (host memory), or one of another member of the same device group (the group
    routes the access)."""
    if owner is device or owner is None:
        return True
    info = device.topology_info
    if info is None:
        return False
    other = getattr(owner, "topology_info", None)
    return other is not None and other.group is info.group


def check_owner(device: Any, buffer: Buffer, what: str) -> None:
    """INVALID_ARGUMENT when ``buffer`` belongs to a device ``device`` cannot reach (see
    ``owner_is_reachable``): another device's memory may not even be mapped for it."""
    owner = buffer.device
    if owner is device or owner is None or owner_is_reachable(device, owner):
        return
    raise InvalidArgumentError(
        f"{what} belongs to another device ({getattr(owner, 'uri', owner)!r}) than the "
        f"{device.uri!r} device running the work, and the two share no device group; use "
        "a buffer of this device, put both devices in one DeviceGroup, or copy through "
        "host memory"
    )


def check_known_flags(flags: Any, known: int, what: str) -> int:
    """A flag word as a plain int (``as_flags``) with no bits outside ``known``."""
    flags = as_flags(flags, what)
    unknown = flags & ~known
    if unknown:
        raise InvalidArgumentError(f"{what} has unknown bits {unknown:#x}")
    return flags


def select_queue(device: Any, affinity: Any) -> int:
    """The first queue ``affinity`` selects; INVALID_ARGUMENT for an affinity that is
    not a 64-bit mask or selects no queue of this device."""
    if affinity.__class__ is not int:
        affinity = as_flags(affinity, "queue affinity")
    elif affinity < 0 or affinity > U64_MAX:
        raise InvalidArgumentError(f"queue affinity {affinity} is not a 64-bit mask")
    a = affinity & device._queue_mask
    if not a:
        raise InvalidArgumentError(
            f"queue affinity {affinity:#x} selects no queue of this device "
            f"({device.queue_count} queues, mask {device._queue_mask:#x})"
        )
    return (a & -a).bit_length() - 1


def _as_tuple(items: Any, what: str) -> tuple[Any, ...]:
    """``items`` (a wait or signal list that is not a tuple) as a tuple; kept out of
    ``queue_op`` so the common tuple case pays nothing for it."""
    try:
        return tuple(items)
    except TypeError:
        return semaphore_list(items, what)  # raises with a clear message


def queue_op(device: Any, kind: Any, affinity: Any, wait: Any, signal: Any) -> QueueOp:
    """The ``QueueOp`` of one call of ``device``: the device is open, the wait and signal
    lists are valid (see the module docstring) and the affinity selects a queue."""
    # Hot path: the common shape (tuples of (Semaphore, int) pairs, values in range,
    # one entry per signalled semaphore) is checked in one pass; anything else takes
    # the slow path, which normalises or raises with a clear message.
    if device._closed:
        device._check_open()
    waits: tuple[Any, ...] = ()
    if wait:
        waits = wait if wait.__class__ is tuple else _as_tuple(wait, "wait")
        try:
            for sem, value in waits:
                if (
                    sem.__class__ is not Semaphore
                    or value.__class__ is not int
                    or not 0 <= value <= MAX_VALUE
                ):
                    waits = semaphore_list(waits, "wait")
                    break
        except HalError:
            raise
        except (TypeError, ValueError):
            waits = semaphore_list(waits, "wait")  # raises with a clear message
    signals: tuple[Any, ...] = ()
    if signal:
        signals = signal if signal.__class__ is tuple else _as_tuple(signal, "signal")
        try:
            for sem, value in signals:
                if (
                    sem.__class__ is not Semaphore
                    or value.__class__ is not int
                    or not sem._value < value <= MAX_VALUE
                ):
                    signals = semaphore_list(signals, "signal")
                    check_signals(signals)
                    break
            else:
                n = len(signals)
                if n > 1 and (n > 2 or signals[0][0] is signals[1][0]):
                    check_distinct_signals(signals)
        except HalError:
            raise
        except (TypeError, ValueError):
            signals = semaphore_list(signals, "signal")  # raises with a clear message
            check_signals(signals)
    q = device._single_queue.get(affinity) if affinity.__class__ is int else None
    if q is None:
        q = select_queue(device, affinity)
    return QueueOp(kind, q, waits, signals)


_FILL = QueueOpKind.FILL


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
) -> QueueOp:
    """The validated FILL ``QueueOp`` of ``Device.queue_fill`` (all but submitting it): the
    op of the call (``device._op``), a 1-, 2- or 4-byte pattern, a ``Buffer`` target with
    TRANSFER_TARGET usage and WRITE access, the range inside it and aligned to the pattern,
    a flag word. Each misuse raises as the queue front door does, in this order. The
    Python reference of the native ``fill_op`` (``_queue_fast_paths``)."""
    op: QueueOp = device._op(_FILL, affinity, wait, signal)
    data = fill_pattern_bytes(pattern, pattern_length)
    check_buffer(target, "fill target")
    check_transfer_target(target, "queue_fill")
    if target_offset.__class__ is not int:
        target_offset = as_index(target_offset, "fill target offset")
    length = check_range(target_offset, length, target.byte_length, "buffer")
    n = len(data)
    if target_offset % n or length % n:
        raise InvalidArgumentError(
            f"fill offset {target_offset} and length {length} must be multiples of the "
            f"{n}-byte pattern"
        )
    op.target = target
    op.target_offset = target_offset
    op.length = length
    op.pattern = data
    op.flags = as_flags(flags, "fill flags") if flags else 0
    return op


def file_offset(offset: Any, length: int) -> int:
    """A file offset as a plain int: INVALID_ARGUMENT when it is not an integer or is
    negative, OUT_OF_RANGE when the range passes the 64-bit file size limit."""
    if offset.__class__ is not int:
        offset = as_index(offset, "file offset")
    if offset < 0:
        raise InvalidArgumentError(f"file offset must be >= 0, got {offset}")
    if offset + length > U64_MAX:
        raise OutOfRangeError(
            f"file range [{offset}, {offset + length}) passes the 64-bit file size limit"
        )
    return offset
