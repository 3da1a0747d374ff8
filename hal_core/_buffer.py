"""Buffers, subspans, host mapping and buffer views.

A ``Buffer`` is metadata (type, usage, access, range, placement) over backend *storage*.
Storage is any object with ``nbytes``, ``host_array`` (a 1-D ``uint8`` numpy array over the
whole allocation, or None when the host cannot touch it), ``address`` (device address, 0 if
none) and ``release()``. Subspans share their root's storage.

Storage states: committed (usable), pending (a ``queue_alloca`` buffer whose memory is not
committed yet) and decommitted (deallocated). Work that reaches a buffer that is not
committed fails with FAILED_PRECONDITION.
"""

from __future__ import annotations

import ctypes
import enum
from typing import Any, final

import numpy as np

from ._construction import INTERNAL, require_internal, sealed
from ._memory import WHOLE_BUFFER, BufferUsage, MemoryAccess, MemoryType, PlacementFlags
from ._ranges import as_flags, as_index, check_range
from ._status import (
    FailedPreconditionError,
    InvalidArgumentError,
    OutOfRangeError,
    PermissionDeniedError,
)

__all__ = ["Buffer", "BufferMapping", "BufferView", "ElementType", "HostStorage", "new_buffer"]

_ACCESS_ANY = int(MemoryAccess.ANY)

_PENDING = 0
_COMMITTED = 1
_DECOMMITTED = 2


_c_char = ctypes.c_char
_addressof = ctypes.addressof


def host_address(array: np.ndarray) -> int:
    """The address of the first byte of ``array`` (0 when it is empty). Through ctypes'
    buffer export when the array is writable and contiguous: ``ndarray.ctypes.data`` and
    ``__array_interface__`` build objects and cost several times more."""
    if not array.nbytes:
        return 0
    try:
        # (numpy's stubs do not declare the buffer protocol that ndarray exports)
        return _addressof(_c_char.from_buffer(array))  # type: ignore[arg-type]
    except (TypeError, ValueError, BufferError):  # read-only or not contiguous
        return int(array.ctypes.data)


class HostStorage:
    """Storage over host memory: a numpy ``uint8`` array (owned, or a zero-copy wrap of
    imported memory)."""

    __slots__ = ("host_array", "nbytes", "address", "_release_callback")

    def __init__(
        self, array: np.ndarray, release_callback: Any = None, address: int | None = None
    ) -> None:
        """``address``: the array's first byte when the caller knows it (a view into
        storage whose address is known), saving the read."""
        self.host_array = array
        self.nbytes = int(array.nbytes)
        if address is None:
            address = host_address(array)
        self.address = address
        self._release_callback = release_callback

    @classmethod
    def allocate(cls, size: int, alignment: int = 64) -> "HostStorage":
        """Zero-filled host memory whose first byte is ``alignment``-aligned (a power of
        two). MemoryError propagates when the host has no memory for it."""
        raw = np.zeros(size + alignment, dtype=np.uint8)
        base = host_address(raw)
        start = (-base) % alignment
        return cls(raw[start : start + size], address=base + start if size else 0)

    def release(self) -> None:
        cb, self._release_callback = self._release_callback, None
        if cb is not None:
            cb()


@final
@sealed
class Buffer:
    """A range of device-accessible memory. Created by an allocator, ``queue_alloca``,
    ``import_buffer`` or ``subspan``; never constructed by users (backends that make
    buffers of their own storage use ``hal_core.backend.new_buffer``).

    Thread-safe for reads of metadata; contents are ordered only by semaphores.
    """

    __slots__ = (
        "_parent",
        "_storage",
        "_state",
        "byte_offset",
        "byte_length",
        "allocation_size",
        "memory_type",
        "allowed_usage",
        "allowed_access",
        "device",
        "queue_affinity",
        "placement_flags",
        "pool_state",
        "__weakref__",
    )

    def __init__(
        self,
        storage: Any,
        *,
        memory_type: MemoryType,
        allowed_usage: BufferUsage,
        allowed_access: MemoryAccess,
        allocation_size: int,
        device: Any = None,
        queue_affinity: int = (1 << 64) - 1,
        placement_flags: PlacementFlags = PlacementFlags.NONE,
        _token: object = None,
    ) -> None:
        """Internal: hal_core passes ``_token=INTERNAL`` (``new_buffer`` for backends)."""
        if _token is not INTERNAL:
            require_internal(_token, "Buffer", _BUFFER_FACTORIES)
        # A root holds no reference to itself (``_root`` is a property): a self-cycle
        # would leave every dropped buffer, and its memory, to the cyclic collector.
        self._parent: Buffer | None = None
        self._storage = storage
        self._state = _PENDING if storage is None else _COMMITTED
        self.byte_offset = 0
        self.byte_length = allocation_size
        self.allocation_size = allocation_size
        # Already-typed flags are kept as they are (a flag enum call costs ~1 us).
        self.memory_type = (
            memory_type if memory_type.__class__ is MemoryType else MemoryType(memory_type)
        )
        self.allowed_usage = (
            allowed_usage if allowed_usage.__class__ is BufferUsage else BufferUsage(allowed_usage)
        )
        self.allowed_access = (
            allowed_access
            if allowed_access.__class__ is MemoryAccess
            else MemoryAccess(allowed_access)
        )
        self.device = device
        self.queue_affinity = queue_affinity
        self.placement_flags = (
            placement_flags
            if placement_flags.__class__ is PlacementFlags
            else PlacementFlags(placement_flags)
        )
        self.pool_state: Any = None

    # -- identity ----------------------------------------------------------------------

    @property
    def _root(self) -> "Buffer":
        """The root allocation (self for roots); backends read it through ``buffer_root``."""
        parent = self._parent
        return self if parent is None else parent

    @property
    def allocated_buffer(self) -> "Buffer":
        """The root allocation (self for roots)."""
        return self._root

    @property
    def is_committed(self) -> bool:
        return self._root._state == _COMMITTED

    @property
    def is_decommitted(self) -> bool:
        return self._root._state == _DECOMMITTED

    def __len__(self) -> int:
        return self.byte_length

    def __repr__(self) -> str:
        """``<hal_core.Buffer 256 B DEVICE_LOCAL|HOST_VISIBLE on local-task://>``; a subspan
        shows its offset, a buffer not committed its state."""
        from . import _reprs as R  # (not a hot path)

        try:
            state = ("pending", "committed", "decommitted")[self._root._state]
            at = f" @{self.byte_offset}" if self.byte_offset else ""
            tail = "" if state == "committed" else f" {state}"
            return (
                f"<hal_core.Buffer {R.size(self.byte_length)}{at} "
                f"{R.memory_type(self.memory_type)} on {R.device_name(self.device)}{tail}>"
            )
        except Exception:
            return "<hal_core.Buffer>"

    # -- backend tier ------------------------------------------------------------------

    # -- validation helpers (shared by every backend through hal_core) ------------------

    def require_usage(self, usage: BufferUsage, what: str) -> None:
        """PERMISSION_DENIED unless every bit of ``usage`` is allowed. (Plain-int masks:
        an ``IntFlag`` operator is a Python-level call building a new flag.)"""
        need = int(usage)
        if int(self.allowed_usage) & need != need:
            raise PermissionDeniedError(
                f"{what} needs buffer usage {BufferUsage(usage)!r}; the buffer allows "
                f"{self.allowed_usage!r}"
            )

    def require_access(self, access: MemoryAccess, what: str) -> None:
        """PERMISSION_DENIED unless the buffer allows ANY access or every bit of
        ``access``."""
        allowed = int(self.allowed_access)
        if allowed & _ACCESS_ANY:
            return
        need = int(access)
        if allowed & need != need:
            raise PermissionDeniedError(
                f"{what} needs memory access {MemoryAccess(access)!r}; the buffer allows "
                f"{self.allowed_access!r}"
            )

    # -- subspans and mapping ------------------------------------------------------------

    def subspan(self, offset: int, length: int = WHOLE_BUFFER) -> "Buffer":
        """A buffer over ``[offset, offset+length)`` of this one, sharing its storage."""
        if offset.__class__ is not int:
            offset = as_index(offset, "subspan offset")
        length = check_range(offset, length, self.byte_length, "buffer")
        sub = Buffer.__new__(Buffer)
        sub._parent = self._root
        sub._storage = None
        sub._state = _COMMITTED
        sub.byte_offset = self.byte_offset + offset
        sub.byte_length = length
        sub.allocation_size = self.allocation_size
        sub.memory_type = self.memory_type
        sub.allowed_usage = self.allowed_usage
        sub.allowed_access = self.allowed_access
        sub.device = self.device
        sub.queue_affinity = self.queue_affinity
        sub.placement_flags = self.placement_flags
        sub.pool_state = None
        return sub

    def map(
        self,
        access: MemoryAccess = MemoryAccess.ALL,
        offset: int = 0,
        length: int = WHOLE_BUFFER,
    ) -> "BufferMapping":
        """Map a range for host access (``with buffer.map() as m: m.asarray(...)``).

        Needs HOST_VISIBLE memory and MAPPING_SCOPED or MAPPING_PERSISTENT usage
        (PERMISSION_DENIED otherwise); OUT_OF_RANGE for bad ranges.
        """
        if not self.memory_type.has(MemoryType.HOST_VISIBLE):
            raise PermissionDeniedError(
                f"buffer memory {self.memory_type!r} is not HOST_VISIBLE; copy it to a "
                "host-visible buffer or a file with queue_copy/queue_write"
            )
        if not self.allowed_usage & (BufferUsage.MAPPING_SCOPED | BufferUsage.MAPPING_PERSISTENT):
            raise PermissionDeniedError(
                f"mapping needs MAPPING_SCOPED or MAPPING_PERSISTENT usage; the buffer "
                f"allows {self.allowed_usage!r}"
            )
        if access.__class__ is not MemoryAccess:
            access = MemoryAccess(as_flags(access, "mapping access"))
        self.require_access(access, "mapping")
        if offset.__class__ is not int:
            offset = as_index(offset, "mapping offset")
        length = check_range(offset, length, self.byte_length, "buffer")
        return BufferMapping(self, access, buffer_host_bytes(self, offset, length))

    def read(self, offset: int = 0, length: int = WHOLE_BUFFER) -> bytes:
        """Copy a range out through a scoped mapping (``iree_hal_buffer_map_read``)."""
        with self.map(MemoryAccess.READ, offset, length) as m:
            return m.contents.tobytes()

    def write(self, data: Any, offset: int = 0) -> None:
        """Copy host bytes in through a scoped mapping (``iree_hal_buffer_map_write``)."""
        try:
            src = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        except TypeError:
            raise InvalidArgumentError(
                f"buffer write needs a buffer-protocol object, got {type(data).__name__}"
            ) from None
        with self.map(MemoryAccess.WRITE, offset, src.nbytes) as m:
            m.contents[:] = src


# -- backend tier: storage, commit state and ranges (``hal_core.backend``) ----------------


def buffer_storage(buffer: Buffer) -> Any:
    """The committed storage of ``buffer``'s root allocation, or FAILED_PRECONDITION."""
    root = buffer._parent
    if root is None:
        root = buffer
    if root._state != _COMMITTED:
        raise FailedPreconditionError(
            "buffer was deallocated (queue_dealloca completed)"
            if root._state == _DECOMMITTED
            else "buffer memory is not committed yet: wait for its queue_alloca signal"
        )
    return root._storage


def buffer_host_bytes(buffer: Buffer, offset: int = 0, length: int = WHOLE_BUFFER) -> np.ndarray:
    """A uint8 numpy view of ``[offset, offset+length)`` of ``buffer`` (no usage checks);
    PERMISSION_DENIED when its storage is not host accessible."""
    arr = buffer_storage(buffer).host_array
    if arr is None:
        raise PermissionDeniedError("buffer storage is not host accessible")
    if length == WHOLE_BUFFER:
        length = buffer.byte_length - offset
    start = buffer.byte_offset + offset
    return arr[start : start + length]


def commit_buffer(buffer: Buffer, storage: Any) -> None:
    """Attach ``storage`` to a pending root (queue_alloca completing)."""
    root = buffer._root
    root._storage = storage
    root._state = _COMMITTED


def decommit_buffer(buffer: Buffer) -> Any:
    """Detach and return the root's storage; later use is FAILED_PRECONDITION."""
    root = buffer._root
    storage, root._storage = root._storage, None
    root._state = _DECOMMITTED
    return storage


def resolve_range(buffer: Buffer, offset: int, length: int) -> int:
    """Validate ``[offset, offset+length)`` against ``buffer``; resolves WHOLE_BUFFER and
    returns the length. OUT_OF_RANGE when it does not fit; INVALID_ARGUMENT when either is
    not an integer (numpy integers are normalised, never wrapped)."""
    return check_range(offset, length, buffer.byte_length, "buffer")


_BUFFER_FACTORIES = (
    "Device.allocator.allocate_buffer(...), Device.queue_alloca(...), "
    "Device.allocator.import_host_buffer(...) or Buffer.subspan(...) "
    "(backends: hal_core.backend.new_buffer)"
)


def new_buffer(
    storage: Any,
    *,
    memory_type: MemoryType,
    allowed_usage: BufferUsage,
    allowed_access: MemoryAccess,
    allocation_size: int,
    device: Any = None,
    queue_affinity: int = (1 << 64) - 1,
    placement_flags: PlacementFlags = PlacementFlags.NONE,
) -> Buffer:
    """A root ``Buffer`` over backend ``storage`` (None: pending, committed later with
    ``commit_buffer``): how a backend wraps memory it allocated itself (staging buffers,
    test fixtures). Users get buffers from their device's allocator instead."""
    return Buffer(
        storage,
        memory_type=memory_type,
        allowed_usage=allowed_usage,
        allowed_access=allowed_access,
        allocation_size=allocation_size,
        device=device,
        queue_affinity=queue_affinity,
        placement_flags=placement_flags,
        _token=INTERNAL,
    )


class BufferMapping:
    """A host mapping of a buffer range. ``contents`` is a uint8 numpy array; use
    ``asarray(dtype)`` for typed views. Writes are visible at once (host-coherent)."""

    __slots__ = ("buffer", "access", "contents", "_open")

    def __init__(self, buffer: Buffer, access: MemoryAccess, contents: np.ndarray) -> None:
        self.buffer = buffer
        self.access = access
        if not access & (MemoryAccess.WRITE | MemoryAccess.DISCARD):
            contents = contents.view()
            contents.flags.writeable = False
        self.contents = contents
        self._open = True

    def asarray(self, dtype: Any = np.uint8, shape: Any = None) -> np.ndarray:
        arr = self.contents.view(dtype)
        return arr.reshape(shape) if shape is not None else arr

    @property
    def memoryview(self) -> memoryview:
        return self.contents.data  # the mapped array's memoryview

    def unmap(self) -> None:
        self._open = False

    def __repr__(self) -> str:
        from . import _reprs as R  # (not a hot path)

        try:
            state = "" if self._open else " unmapped"
            return (
                f"<hal_core.BufferMapping {R.size(len(self.contents))} "
                f"{self.access.name or int(self.access)} of a "
                f"{R.size(self.buffer.byte_length)} buffer{state}>"
            )
        except Exception:
            return "<hal_core.BufferMapping>"

    def __enter__(self) -> "BufferMapping":
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmap()


class NumericalType(enum.IntEnum):
    UNKNOWN = 0x00
    INTEGER = 0x10
    INTEGER_SIGNED = 0x11
    INTEGER_UNSIGNED = 0x12
    BOOLEAN = 0x13
    FLOAT_IEEE = 0x21
    FLOAT_BRAIN = 0x22
    FLOAT_COMPLEX = 0x23


def _element(numerical: NumericalType, bits: int) -> int:
    return (int(numerical) << 24) | bits


class ElementType(enum.IntEnum):
    """``(numerical_type << 24) | bit_count`` as IREE encodes element types."""

    NONE = 0
    OPAQUE_8 = _element(NumericalType.UNKNOWN, 8)
    BOOL_8 = _element(NumericalType.BOOLEAN, 8)
    INT_8 = _element(NumericalType.INTEGER, 8)
    SINT_8 = _element(NumericalType.INTEGER_SIGNED, 8)
    UINT_8 = _element(NumericalType.INTEGER_UNSIGNED, 8)
    INT_16 = _element(NumericalType.INTEGER, 16)
    SINT_16 = _element(NumericalType.INTEGER_SIGNED, 16)
    UINT_16 = _element(NumericalType.INTEGER_UNSIGNED, 16)
    INT_32 = _element(NumericalType.INTEGER, 32)
    SINT_32 = _element(NumericalType.INTEGER_SIGNED, 32)
    UINT_32 = _element(NumericalType.INTEGER_UNSIGNED, 32)
    INT_64 = _element(NumericalType.INTEGER, 64)
    SINT_64 = _element(NumericalType.INTEGER_SIGNED, 64)
    UINT_64 = _element(NumericalType.INTEGER_UNSIGNED, 64)
    FLOAT_16 = _element(NumericalType.FLOAT_IEEE, 16)
    FLOAT_32 = _element(NumericalType.FLOAT_IEEE, 32)
    FLOAT_64 = _element(NumericalType.FLOAT_IEEE, 64)
    BFLOAT_16 = _element(NumericalType.FLOAT_BRAIN, 16)

    # IREE's name for the element width; as a property it shadows int.bit_count(), which
    # mypy reports as an incompatible override.
    @property
    def bit_count(self) -> int:  # type: ignore[override]
        return int(self) & 0xFF

    @property
    def byte_size(self) -> int:
        return (self.bit_count + 7) // 8

    @property
    def numpy_dtype(self) -> np.dtype:
        numerical = int(self) >> 24
        bits = self.bit_count
        if numerical == NumericalType.FLOAT_IEEE:
            return np.dtype(f"float{bits}")
        if numerical == NumericalType.INTEGER_UNSIGNED:
            return np.dtype(f"uint{bits}")
        if numerical == NumericalType.BOOLEAN:
            return np.dtype(np.bool_)
        if numerical in (NumericalType.INTEGER, NumericalType.INTEGER_SIGNED):
            return np.dtype(f"int{bits}")
        return np.dtype(f"V{self.byte_size}")


class BufferView:
    """A buffer with a shape and an element type (``iree_hal_buffer_view_t``)."""

    __slots__ = ("buffer", "shape", "element_type", "encoding")

    def __init__(
        self, buffer: Buffer, shape: tuple[int, ...], element_type: ElementType, encoding: int = 0
    ) -> None:
        if not isinstance(buffer, Buffer):
            raise InvalidArgumentError(f"a buffer view needs a Buffer, got {type(buffer).__name__}")
        try:
            dims = tuple(shape)
        except TypeError:
            raise InvalidArgumentError(
                f"shape must be a sequence of integers, got {shape!r}"
            ) from None
        shape = tuple(as_index(d, "shape dimension") for d in dims)
        if any(d < 0 for d in shape):
            raise InvalidArgumentError(f"shape dimensions must be >= 0, got {shape}")
        try:
            element_type = ElementType(element_type)
        except ValueError:
            raise InvalidArgumentError(f"{element_type!r} is not an ElementType") from None
        need = int(np.prod(shape, dtype=np.int64)) * element_type.byte_size
        if need > buffer.byte_length:
            raise OutOfRangeError(
                f"shape {shape} of {element_type.name} needs {need} bytes; the buffer has "
                f"{buffer.byte_length}"
            )
        self.buffer = buffer
        self.shape = shape
        self.element_type = element_type
        self.encoding = encoding

    def __repr__(self) -> str:
        from . import _reprs as R  # (not a hot path)

        try:
            dims = "x".join(str(d) for d in self.shape) or "scalar"
            if len(dims) > 40:
                dims = f"rank {len(self.shape)}"
            return (
                f"<hal_core.BufferView {dims} {self.element_type.name} in "
                f"{R.size(self.buffer.byte_length)} on {R.device_name(self.buffer.device)}>"
            )
        except Exception:
            return "<hal_core.BufferView>"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def element_count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def byte_length(self) -> int:
        return self.element_count * self.element_type.byte_size

    def reshape(self, shape: tuple[int, ...]) -> "BufferView":
        if int(np.prod(shape, dtype=np.int64)) != self.element_count:
            raise InvalidArgumentError(
                f"reshape {self.shape} -> {tuple(shape)} changes the element count"
            )
        return BufferView(self.buffer, shape, self.element_type, self.encoding)

    def compute_offset(self, indices: tuple[int, ...]) -> int:
        if len(indices) != self.rank:
            raise InvalidArgumentError(f"expected {self.rank} indices, got {len(indices)}")
        offset = 0
        for index, dim in zip(indices, self.shape):
            if not 0 <= index < dim:
                raise OutOfRangeError(f"index {indices} is outside shape {self.shape}")
            offset = offset * dim + index
        return offset * self.element_type.byte_size

    def to_numpy(self) -> np.ndarray:
        """Copy the contents out through a mapping."""
        with self.buffer.map(MemoryAccess.READ, 0, self.byte_length) as m:
            return m.asarray(self.element_type.numpy_dtype, self.shape).copy()
