"""Buffer references and binding tables: how a command names the bytes it touches.

A ``BufferRef`` names a range of a buffer directly or through a binding-table slot; a
``BindingTable`` (captured at ``queue_execute`` as a tuple of ``BufferBinding`` or None)
supplies the slots. ``resolve_binding`` and ``bound_range`` turn them into
``(buffer, offset, length)`` with IREE's composition and range checks: the one
implementation every backend shares (``hal_core.backend`` publishes both).

Every object here is immutable and thread-safe; the functions take no lock.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import attrs

from ._buffer import Buffer
from ._memory import WHOLE_BUFFER
from ._ranges import as_index
from ._reprs import safe_repr
from ._status import InvalidArgumentError, OutOfRangeError

__all__ = [
    "MAX_RANGE_END",
    "BindingTable",
    "BufferBinding",
    "BufferRef",
    "as_buffer_ref",
    "bound_range",
    "resolve_binding",
]

MAX_RANGE_END = (1 << 63) - 1
"""The furthest byte any range may reach: device sizes are signed 64-bit on every backend,
so a reference past it can fit no buffer (OUT_OF_RANGE at record time)."""


def _u64(value: Any, name: str) -> int:
    """The value as a plain int in 0..2**64-1 (numpy integers normalised),
    INVALID_ARGUMENT otherwise."""
    if value.__class__ is not int:
        value = as_index(value, name)
    if value < 0 or value > WHOLE_BUFFER:
        raise InvalidArgumentError(f"{name} must be an int in 0..2**64-1, got {value!r}")
    return value


def _offset(value: Any) -> int:
    """attrs converter of ``offset`` fields."""
    return value if value.__class__ is int and 0 <= value <= WHOLE_BUFFER else _u64(value, "offset")


def _length(value: Any) -> int:
    """attrs converter of ``length`` fields."""
    return value if value.__class__ is int and 0 <= value <= WHOLE_BUFFER else _u64(value, "length")


def _slot(value: Any) -> int:
    if value.__class__ is not int:
        value = as_index(value, "binding-table slot")
    if not 0 <= value < (1 << 24):
        raise InvalidArgumentError(
            f"binding-table slot must be an int in 0..{(1 << 24) - 1}, got {value!r}"
        )
    return value


@attrs.frozen(slots=True)
class BufferRef:
    """A range of a buffer used by a command.

    Direct: ``BufferRef(buffer, offset, length)`` names the buffer now. Indirect:
    ``BufferRef.indirect(slot, offset, length)`` names a binding-table slot resolved at
    submit; its range composes with the binding's (``binding.offset + offset``, clamped by
    the binding's length). ``length`` WHOLE_BUFFER means "to the end".
    """

    buffer: Buffer | None
    offset: int = attrs.field(default=0, converter=_offset)
    length: int = attrs.field(default=WHOLE_BUFFER, converter=_length)
    slot: int = attrs.field(default=0, converter=_slot)

    @classmethod
    def indirect(cls, slot: int, offset: int = 0, length: int = WHOLE_BUFFER) -> "BufferRef":
        return cls(None, offset, length, slot)

    @property
    def is_indirect(self) -> bool:
        return self.buffer is None

    def resolved_length(self) -> int:
        """The length of a direct reference, WHOLE_BUFFER resolved."""
        if self.length == WHOLE_BUFFER:
            # Called for direct references only (``buffer`` set), which mypy cannot see.
            return self.buffer.byte_length - self.offset  # type: ignore[union-attr]
        return self.length


@attrs.frozen(slots=True)
class BufferBinding:
    """One binding-table entry: a buffer range bound to a slot at submit."""

    buffer: Buffer | None
    offset: int = attrs.field(default=0, converter=_offset)
    length: int = attrs.field(default=WHOLE_BUFFER, converter=_length)


class BindingTable:
    """The buffers indirect references resolve against, copied at ``queue_execute``.

    Built from a sequence whose items are ``BufferBinding``, ``Buffer`` (whole buffer),
    ``(buffer, offset, length)`` tuples or None (an unused slot). Immutable once built.
    """

    __slots__ = ("bindings",)

    def __init__(self, bindings: Iterable[Any] = ()) -> None:
        out: list[BufferBinding | None] = []
        append = out.append
        i = 0
        for item in bindings:
            if item.__class__ is BufferBinding:
                buffer = item.buffer
                if buffer is not None and buffer.__class__ is not Buffer:
                    _check_binding_buffer(buffer, i)
                append(item)
            elif item is None:
                append(None)
            elif isinstance(item, Buffer):
                append(BufferBinding(item))
            elif isinstance(item, tuple) and 1 <= len(item) <= 3:
                binding = BufferBinding(*item)
                _check_binding_buffer(binding.buffer, i)
                append(binding)
            else:
                raise InvalidArgumentError(
                    f"binding table entry {i} is a {type(item).__name__}; expected a "
                    "BufferBinding, a Buffer, a (buffer, offset, length) tuple or None"
                )
            i += 1
        self.bindings: tuple[BufferBinding | None, ...] = tuple(out)

    def __len__(self) -> int:
        return len(self.bindings)

    def __getitem__(self, i: int) -> BufferBinding | None:
        return self.bindings[i]

    def resolve(self, ref: BufferRef) -> tuple[Buffer, int, int]:
        """``(buffer, offset, length)`` of ``ref`` against this table: ``resolve_binding``."""
        return resolve_binding(ref, self.bindings)

    @safe_repr
    def __repr__(self) -> str:
        used = sum(b is not None for b in self.bindings)
        return f"<hal_core.BindingTable {len(self.bindings)} slots, {used} bound>"


def _check_binding_buffer(buffer: Any, i: int) -> None:
    if buffer is not None and not isinstance(buffer, Buffer):
        raise InvalidArgumentError(
            f"binding table entry {i} holds a {type(buffer).__name__}, expected a Buffer"
        )


_new = object.__new__
_set_buffer = BufferBinding.__dict__["buffer"].__set__
_set_offset = BufferBinding.__dict__["offset"].__set__
_set_length = BufferBinding.__dict__["length"].__set__


def checked_binding(buffer: Buffer, offset: int, length: int) -> BufferBinding:
    """``BufferBinding(buffer, offset, length)`` for a caller that has already checked
    every field (``buffer`` a ``Buffer``, ``offset`` and ``length`` plain ints in
    0..2**64-1): no converter runs. Internal (the replay player checks its captured
    fields once, when its plan is built)."""
    binding = _new(BufferBinding)
    _set_buffer(binding, buffer)
    _set_offset(binding, offset)
    _set_length(binding, length)
    return binding


def checked_table(bindings: tuple[BufferBinding | None, ...]) -> BindingTable:
    """A ``BindingTable`` over ``bindings``, a tuple whose entries the caller built with
    ``checked_binding`` (or None): nothing is converted or copied. Internal."""
    table = _new(BindingTable)
    table.bindings = bindings
    return table


def bound_range(bindings: Sequence[BufferBinding | None], slot: int) -> tuple[Buffer, int, int]:
    """``(buffer, offset, length)`` that binding-table slot ``slot`` binds, WHOLE_BUFFER
    resolved. OUT_OF_RANGE for a slot past the table or a binding past its buffer;
    INVALID_ARGUMENT for an empty slot. Pure; no lock."""
    if slot >= len(bindings):
        raise OutOfRangeError(
            f"binding-table slot {slot} is past the table of {len(bindings)} entries"
        )
    binding = bindings[slot]
    if binding is None or binding.buffer is None:
        raise InvalidArgumentError(f"binding-table slot {slot} holds no buffer")
    buffer = binding.buffer
    offset = binding.offset
    blen = binding.length
    if blen == WHOLE_BUFFER:
        blen = buffer.byte_length - offset
    if blen < 0 or offset + blen > buffer.byte_length:
        raise OutOfRangeError(
            f"binding-table slot {slot} range [{offset}, {offset + blen}) "
            f"exceeds its buffer of {buffer.byte_length} bytes"
        )
    return buffer, offset, blen


def resolve_binding(
    ref: BufferRef | Buffer, bindings: Sequence[BufferBinding | None] = ()
) -> tuple[Buffer, int, int]:
    """``(buffer, offset, length)`` of the bytes a command's reference names, offset and
    length within ``buffer`` (``Buffer.byte_offset`` not included) and WHOLE_BUFFER
    resolved.

    ``ref`` is a whole ``Buffer``, a direct ``BufferRef`` (checked against its buffer) or
    an indirect one, whose range composes with slot ``ref.slot`` of ``bindings`` as IREE
    does: ``binding.offset + ref.offset``, at most the bound length. OUT_OF_RANGE for a
    range past its buffer or binding, or a slot past the table; INVALID_ARGUMENT for an
    empty slot. Pure; no lock."""
    if isinstance(ref, Buffer):
        return ref, 0, ref.byte_length
    if ref.__class__ is not BufferRef:
        raise InvalidArgumentError(
            f"a command references a {type(ref).__name__}; expected a Buffer or BufferRef"
        )
    offset = ref.offset
    length = ref.length
    buffer = ref.buffer
    if buffer is not None:
        size = buffer.byte_length
        base = 0
        where = "its buffer"
    else:
        buffer, base, size = bound_range(bindings, ref.slot)
        where = f"binding-table slot {ref.slot}, which binds {size} bytes"
    if length == WHOLE_BUFFER:
        length = size - offset
    if offset > size or offset + length > size:
        raise OutOfRangeError(
            f"reference [{offset}, {offset + length}) exceeds {where}; shrink the "
            "reference or bind a larger range"
        )
    return buffer, base + offset, length


def as_buffer_ref(value: Any, what: str) -> BufferRef:
    """A ``BufferRef`` from a ref or a whole ``Buffer``; INVALID_ARGUMENT otherwise."""
    if value.__class__ is BufferRef:
        return value
    if isinstance(value, Buffer):
        return BufferRef(value)
    raise InvalidArgumentError(
        f"{what} must be a Buffer or a BufferRef, got {type(value).__name__}"
    )
