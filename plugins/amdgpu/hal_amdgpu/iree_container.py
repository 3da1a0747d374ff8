"""IREE's executable containers for AMD GPUs (format ``rocm-hsaco-fb``).

IREE's ROCm target wraps its HSACO code objects in a FlatBuffer, of one of two schemas
(``runtime/src/iree/schemas`` in iree-org/iree), told apart by the file identifier:

* ``HIP1`` (``hip_executable_def.fbs``, the HIP driver's): ``ExecutableDef{exports,
  modules, source_files}``; ``ExportDef{module_ordinal, kernel_name, block_dims{x,y,z},
  block_shared_memory_size, constant_count, binding_flags:[uint64], debug_info}``;
  ``ModuleDef{hsaco_image:string}``.
* ``AMD1`` (``amdgpu_executable_def.fbs``, the native AMDGPU driver's):
  ``ExecutableDef{isa, exports, modules, source_files}``; ``ExportDef{symbol_name (with
  its .kd suffix), workgroup_size{x,y,z}, constant_count, binding_flags:[uint64],
  debug_info}``; ``ModuleDef{image:string}``.

As IREE's tools write them (the zip entry of a ``.vmfb``, what the runtime is handed),
the FlatBuffer follows IREE's 64-byte file header: the identifier as ``magic``, a
``uint32`` version (0), a ``uint64`` content size, 48 reserved bytes. A bare FlatBuffer
(identifier at bytes 4..8) is accepted too.

``parse_container(data)`` reads either schema into one ``IreeExecutableDef``: the exports
in the executable's canonical entry-point order (what function ordinals index) and the
module images. ``is_container(data)`` says whether bytes are one. Every offset is
bounds-checked: any malformed input is INVALID_ARGUMENT naming what was wrong, never
another exception. Pure functions over bytes; thread-safe.
"""

from __future__ import annotations

import struct

import attrs

from hal_core import HalError, InvalidArgumentError

__all__ = [
    "BINDING_READ_ONLY",
    "BINDING_INDIRECT",
    "FORMAT_ROCM_HSACO_FB",
    "IreeExport",
    "IreeExecutableDef",
    "is_container",
    "parse_container",
]

#: IREE's executable format name for ROCm code objects (in a container or raw).
FORMAT_ROCM_HSACO_FB = "rocm-hsaco-fb"
#: ``BindingBits``: the binding is only read / is reached through an indirect table.
BINDING_READ_ONLY = 1 << 0
BINDING_INDIRECT = 1 << 1

_IDENTIFIERS = (b"HIP1", b"AMD1")
_MAX_DIM = 1024
_FILE_HEADER_SIZE = 64
_SUPPORTED_HEADER_VERSION = 0


@attrs.frozen
class IreeExport:
    """One exported function: ``symbol`` is the kernel's ``.kd`` symbol in its module."""

    name: str
    symbol: str
    module_ordinal: int
    workgroup_size: tuple[int, int, int]
    constant_count: int
    binding_flags: tuple[int, ...]
    shared_memory_size: int = 0

    @property
    def binding_count(self) -> int:
        return len(self.binding_flags)


@attrs.frozen
class IreeExecutableDef:
    """A parsed container: ``identifier`` (``HIP1`` or ``AMD1``), the ISA it names
    (``AMD1`` only; "" otherwise), exports in entry-point order and module images."""

    identifier: str
    isa: str
    exports: tuple[IreeExport, ...]
    modules: tuple[bytes, ...]


def _bad(msg: str) -> HalError:
    return InvalidArgumentError(f"malformed IREE rocm-hsaco-fb executable: {msg}")


def is_container(data: bytes) -> bool:
    """Whether ``data`` is an IREE ``HIP1`` / ``AMD1`` container (with IREE's file header
    or a bare FlatBuffer)."""
    return len(data) >= 8 and (bytes(data[:4]) in _IDENTIFIERS or bytes(data[4:8]) in _IDENTIFIERS)


def _flatbuffer(buf: bytes) -> bytes:
    """The FlatBuffer inside IREE's file header (or ``buf`` itself when bare)."""
    if buf[:4] not in _IDENTIFIERS:
        return buf
    if len(buf) < _FILE_HEADER_SIZE:
        raise _bad(
            f"{len(buf)} bytes is shorter than IREE's {_FILE_HEADER_SIZE}-byte "
            "executable file header"
        )
    version, content_size = struct.unpack_from("<IQ", buf, 4)
    if version != _SUPPORTED_HEADER_VERSION:
        raise _bad(
            f"file header version {version} is not supported (only {_SUPPORTED_HEADER_VERSION})"
        )
    if content_size > len(buf) - _FILE_HEADER_SIZE:
        raise _bad(
            f"file header says {content_size} content bytes but "
            f"{len(buf) - _FILE_HEADER_SIZE} follow it"
        )
    body = buf[_FILE_HEADER_SIZE : _FILE_HEADER_SIZE + content_size]
    if body[4:8] != buf[:4]:
        raise _bad(f"header magic {buf[:4]!r} but the FlatBuffer identifier is {body[4:8]!r}")
    return body


class _Reader:
    """Bounds-checked FlatBuffer access over one buffer (little endian)."""

    __slots__ = ("buf", "size")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.size = len(buf)

    def _need(self, pos: int, n: int, what: str) -> None:
        if pos < 0 or pos + n > self.size:
            raise _bad(f"{what} at byte {pos} (+{n}) is outside the {self.size}-byte buffer")

    def u16(self, pos: int, what: str) -> int:
        self._need(pos, 2, what)
        return struct.unpack_from("<H", self.buf, pos)[0]

    def u32(self, pos: int, what: str) -> int:
        self._need(pos, 4, what)
        return struct.unpack_from("<I", self.buf, pos)[0]

    def i32(self, pos: int, what: str) -> int:
        self._need(pos, 4, what)
        return struct.unpack_from("<i", self.buf, pos)[0]

    def u64(self, pos: int, what: str) -> int:
        self._need(pos, 8, what)
        return struct.unpack_from("<Q", self.buf, pos)[0]

    def table(self, pos: int, what: str) -> "_Table":
        vtable = pos - self.i32(pos, f"{what} vtable offset")
        size = self.u16(vtable, f"{what} vtable")
        if size < 4 or size & 1:
            raise _bad(f"{what}: vtable at byte {vtable} has size {size}")
        self._need(vtable, size, f"{what} vtable")
        return _Table(self, pos, vtable, (size - 4) // 2, what)

    def indirect(self, pos: int, what: str) -> int:
        return pos + self.u32(pos, what)

    def string(self, pos: int, what: str) -> bytes:
        length = self.u32(pos, f"{what} length")
        self._need(pos + 4, length, what)
        return self.buf[pos + 4 : pos + 4 + length]

    def vector(self, pos: int, elem_size: int, what: str) -> tuple[int, int]:
        """``(first element position, count)``."""
        count = self.u32(pos, f"{what} length")
        self._need(pos + 4, count * elem_size, what)
        return pos + 4, count


class _Table:
    __slots__ = ("r", "pos", "vtable", "fields", "what")

    def __init__(self, r: _Reader, pos: int, vtable: int, fields: int, what: str) -> None:
        self.r = r
        self.pos = pos
        self.vtable = vtable
        self.fields = fields
        self.what = what

    def field(self, index: int) -> int | None:
        """Byte position of field ``index``, or None when absent."""
        if index >= self.fields:
            return None
        off = self.r.u16(self.vtable + 4 + 2 * index, f"{self.what} field {index}")
        return None if off == 0 else self.pos + off

    def u32(self, index: int, name: str, default: int = 0) -> int:
        pos = self.field(index)
        return default if pos is None else self.r.u32(pos, f"{self.what}.{name}")

    def string(self, index: int, name: str) -> str | None:
        pos = self.field(index)
        if pos is None:
            return None
        raw = self.r.string(self.r.indirect(pos, f"{self.what}.{name}"), f"{self.what}.{name}")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(f"{self.what}.{name} is not UTF-8") from None

    def blob(self, index: int, name: str) -> bytes | None:
        pos = self.field(index)
        if pos is None:
            return None
        return self.r.string(self.r.indirect(pos, f"{self.what}.{name}"), f"{self.what}.{name}")

    def dims(self, index: int, name: str) -> tuple[int, int, int] | None:
        pos = self.field(index)
        if pos is None:
            return None
        r = self.r
        what = f"{self.what}.{name}"
        return (r.u32(pos, what), r.u32(pos + 4, what), r.u32(pos + 8, what))

    def u64_vector(self, index: int, name: str) -> tuple[int, ...]:
        pos = self.field(index)
        if pos is None:
            return ()
        r = self.r
        first, count = r.vector(r.indirect(pos, f"{self.what}.{name}"), 8, f"{self.what}.{name}")
        return tuple(r.u64(first + 8 * i, f"{self.what}.{name}") for i in range(count))

    def tables(self, index: int, name: str) -> list[_Table]:
        pos = self.field(index)
        if pos is None:
            return []
        r = self.r
        first, count = r.vector(r.indirect(pos, f"{self.what}.{name}"), 4, f"{self.what}.{name}")
        return [
            r.table(
                r.indirect(first + 4 * i, f"{self.what}.{name}[{i}]"), f"{self.what}.{name}[{i}]"
            )
            for i in range(count)
        ]


def parse_container(data: bytes) -> IreeExecutableDef:
    """Parse a ``HIP1`` or ``AMD1`` container. INVALID_ARGUMENT for anything malformed:
    bad offsets, missing kernel names or modules, an export naming a module that does not
    exist, workgroup sizes outside 1..1024, no exports."""
    buf = bytes(data)
    if not is_container(buf):
        raise _bad(f"no HIP1/AMD1 identifier (bytes 0..8 are {buf[:8]!r})")
    buf = _flatbuffer(buf)
    ident = buf[4:8].decode()
    r = _Reader(buf)
    root = r.table(r.u32(0, "root offset"), "ExecutableDef")
    if ident == "HIP1":
        export_field, module_field, isa = 0, 1, ""
    else:
        export_field, module_field = 1, 2
        isa = root.string(0, "isa") or ""
    modules: list[bytes] = []
    for i, m in enumerate(root.tables(module_field, "modules")):
        image = m.blob(0, "hsaco_image" if ident == "HIP1" else "image")
        if not image:
            raise _bad(f"module {i} has no code object image")
        modules.append(image)
    if not modules:
        raise _bad("the executable has no modules")
    exports: list[IreeExport] = []
    for i, e in enumerate(root.tables(export_field, "exports")):
        where = f"export {i}"
        if ident == "HIP1":
            name = e.string(1, "kernel_name")
            if not name:
                raise _bad(f"{where} has no kernel_name")
            symbol = name + ".kd"
            module = e.u32(0, "module_ordinal")
            dims = e.dims(2, "block_dims")
            shared = e.u32(3, "block_shared_memory_size")
            constants = e.u32(4, "constant_count")
            flags = e.u64_vector(5, "binding_flags")
        else:
            symbol = e.string(0, "symbol_name") or ""
            if not symbol:
                raise _bad(f"{where} has no symbol_name")
            name = symbol.removesuffix(".kd")
            module = 0 if len(modules) == 1 else -1  # found by symbol at load
            dims = e.dims(1, "workgroup_size")
            shared = 0
            constants = e.u32(2, "constant_count")
            flags = e.u64_vector(3, "binding_flags")
        if module >= len(modules):
            raise _bad(f"{where} ({name}) names module {module}; there are {len(modules)}")
        if dims is None or not all(1 <= d <= _MAX_DIM for d in dims):
            raise _bad(f"{where} ({name}) has workgroup size {dims}, expected 1..1024 each")
        exports.append(IreeExport(name, symbol, module, dims, constants, flags, shared))
    if not exports:
        raise _bad("the executable exports no functions")
    return IreeExecutableDef(ident, isa, tuple(exports), tuple(modules))
