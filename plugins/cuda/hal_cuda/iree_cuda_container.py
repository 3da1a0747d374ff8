"""IREE's executable container for NVIDIA GPUs (format ``cuda-nvptx-fb``, identifier ``CDA1``).

``iree-compile --iree-hal-target-device=cuda --iree-cuda-target=sm_80`` stores each
executable in the ``.vmfb`` (a zip) as ``<name>_cuda_nvptx_fb.fb``: IREE's 64-byte file
header (magic ``CDA1``, ``uint32`` version 0, ``uint64`` content size, 48 reserved bytes)
followed by a FlatBuffer of ``runtime/src/iree/schemas/cuda_executable_def.fbs``
(iree-org/iree)::

    table ExecutableDef { exports:[ExportDef]; modules:[ModuleDef];
                          source_files:[iree.hal.debug.SourceFileDef]; }
    table ExportDef { module_ordinal:uint32; kernel_name:string; block_dims:BlockDims;
                      block_shared_memory_size:uint32; constant_count:uint32;
                      binding_flags:[uint64 BindingBits]; debug_info:iree.hal.debug.ExportDef; }
    struct BlockDims { x:uint32; y:uint32; z:uint32; }
    table ModuleDef { ptx_image:string; }
    table iree.hal.debug.ExportDef { name:string; location:FileLineLocDef; ... }
    table iree.hal.debug.FileLineLocDef { filename:string; line:int32; }
    table iree.hal.debug.SourceFileDef { path:string; content:[uint8]; }

A bare FlatBuffer (identifier ``CDA1`` at bytes 4..8, no file header) is accepted too.

``parse_container(data)`` returns a ``CudaExecutableDef``: the exports in canonical
entry-point order (what IREE's function ordinals index) and each module's PTX text.
Everything IREE's runtime verifies before loading is checked here too (except the limits
only a device can tell: its block-dimension and shared-memory maxima); every offset is
bounds-checked, so any malformed input is INVALID_ARGUMENT naming what was wrong and at
which byte, never another exception, and parsing is linear in the input. Pure functions
over bytes; thread-safe.

How IREE launches these kernels (``runtime/src/iree/hal/drivers/cuda/native_executable.c``
and ``stream_command_buffer.c``/``graph_command_buffer.c``), which a driver must match for
IREE-compiled code to run:

* Loading: each module's ``ptx_image`` goes to ``cuModuleLoadDataEx`` (PTX text; the
  FlatBuffer string is NUL-terminated in the buffer, and ``CudaExecutableDef.modules``
  holds the text without the NUL, so append one when handing it to CUDA). Each export is
  ``cuModuleGetFunction(module[module_ordinal], kernel_name)``, and IREE sets
  ``CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`` to ``block_shared_memory_size``.
* Kernel parameters (``cuLaunchKernel``'s ``kernelParams``): ``binding_count +
  constant_count`` entries, the bindings first, in order, each a 64-bit ``CUdeviceptr``
  (the buffer's device address + the buffer's byte offset + the binding's offset; 0 for a
  null binding), then the constants, in order, each one 32-bit word. This is the HAL kernel
  ABI of hal-cuda's own kernels too (bindings as pointers, then 32-bit constants). The PTX
  declares the bindings ``.param .u64 .ptr .global .align 16`` and the constants
  ``.param .u32``.
* Launch: grid = the dispatch's workgroup count; block = the dispatch's workgroup size
  where given, else the export's ``block_dims``; dynamic shared memory =
  ``block_shared_memory_size``; no extra arguments. IREE's CUDA streams refuse indirect
  parameters and custom arguments (UNIMPLEMENTED).
* Binding flags: ``BINDING_READ_ONLY`` (the kernel only reads it), ``BINDING_INDIRECT``
  (reached through a binding table); the count of ``binding_flags`` is the binding count.
"""

from __future__ import annotations

import struct

import attrs

from hal_core import HalError, InvalidArgumentError

__all__ = [
    "BINDING_INDIRECT",
    "BINDING_READ_ONLY",
    "FORMAT_CUDA_NVPTX_FB",
    "IDENTIFIER",
    "CudaExecutableDef",
    "CudaExport",
    "is_container",
    "parse_container",
]

#: IREE's executable format name for CUDA PTX containers.
FORMAT_CUDA_NVPTX_FB = "cuda-nvptx-fb"
#: The FlatBuffer file identifier (and IREE file-header magic) of the container.
IDENTIFIER = b"CDA1"
#: ``BindingBits``: the binding is only read / is reached through an indirect table.
BINDING_READ_ONLY = 1 << 0
BINDING_INDIRECT = 1 << 1

# CUDA's block limits on every GPU since compute capability 2.0: x and y up to 1024, z up to
# 64, and at most 1024 threads per block. The device's own maxima are checked at load.
_MAX_BLOCK = (1024, 1024, 64)
_MAX_THREADS = 1024
_FILE_HEADER_SIZE = 64
_SUPPORTED_HEADER_VERSION = 0


@attrs.frozen
class CudaExport:
    """One exported kernel: ``name`` is its symbol in module ``module_ordinal``;
    ``debug_name`` and ``source`` (file, line) come from the optional debug info."""

    name: str
    module_ordinal: int
    workgroup_size: tuple[int, int, int]
    constant_count: int
    binding_flags: tuple[int, ...]
    shared_memory_size: int = 0
    debug_name: str = ""
    source: tuple[str, int] | None = None

    @property
    def binding_count(self) -> int:
        return len(self.binding_flags)


@attrs.frozen
class CudaExecutableDef:
    """A parsed ``CDA1`` container: exports in entry-point order, each module's PTX text
    (without the trailing NUL) and the paths of any embedded source files."""

    exports: tuple[CudaExport, ...]
    modules: tuple[bytes, ...]
    source_files: tuple[str, ...] = ()

    def export(self, name: str) -> CudaExport:
        """The export ``name``; ``KeyError`` when there is none of that name."""
        for export in self.exports:
            if export.name == name:
                return export
        raise KeyError(name)


def _bad(msg: str) -> HalError:
    return InvalidArgumentError(f"malformed IREE cuda-nvptx-fb executable: {msg}")


def is_container(data: bytes) -> bool:
    """Whether ``data`` is an IREE ``CDA1`` container (with IREE's file header or a bare
    FlatBuffer)."""
    return len(data) >= 8 and (bytes(data[:4]) == IDENTIFIER or bytes(data[4:8]) == IDENTIFIER)


def _flatbuffer(buf: bytes) -> tuple[bytes, int]:
    """``(FlatBuffer, its offset in buf)``: the content after IREE's file header, or
    ``buf`` itself when it is a bare FlatBuffer."""
    if buf[:4] != IDENTIFIER:
        return buf, 0
    if len(buf) < _FILE_HEADER_SIZE:
        raise _bad(
            f"{len(buf)} bytes is shorter than IREE's {_FILE_HEADER_SIZE}-byte "
            "executable file header"
        )
    version, content_size = struct.unpack_from("<IQ", buf, 4)
    if version != _SUPPORTED_HEADER_VERSION:
        raise _bad(
            f"file header version {version} at byte 4 is not supported "
            f"(only {_SUPPORTED_HEADER_VERSION})"
        )
    if content_size > len(buf) - _FILE_HEADER_SIZE:
        raise _bad(
            f"file header (byte 8) says {content_size} content bytes but "
            f"{len(buf) - _FILE_HEADER_SIZE} follow it"
        )
    body = buf[_FILE_HEADER_SIZE : _FILE_HEADER_SIZE + content_size]
    if body[4:8] != IDENTIFIER:
        raise _bad(
            f"the FlatBuffer identifier at byte {_FILE_HEADER_SIZE + 4} is {body[4:8]!r}, "
            f"not {IDENTIFIER!r}"
        )
    return body, _FILE_HEADER_SIZE


class _Reader:
    """Bounds-checked little-endian FlatBuffer access over one buffer. ``base`` is the
    buffer's offset in the caller's bytes, so messages give positions in what was passed."""

    __slots__ = ("buf", "size", "base")

    def __init__(self, buf: bytes, base: int) -> None:
        self.buf = buf
        self.size = len(buf)
        self.base = base

    def need(self, pos: int, n: int, what: str) -> None:
        if pos < 0 or pos + n > self.size:
            raise _bad(
                f"{what} at byte {self.base + pos} (+{n}) is outside the "
                f"{self.size}-byte FlatBuffer"
            )

    def u16(self, pos: int, what: str) -> int:
        self.need(pos, 2, what)
        return int(struct.unpack_from("<H", self.buf, pos)[0])

    def u32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        return int(struct.unpack_from("<I", self.buf, pos)[0])

    def i32(self, pos: int, what: str) -> int:
        self.need(pos, 4, what)
        return int(struct.unpack_from("<i", self.buf, pos)[0])

    def table(self, pos: int, what: str) -> _Table:
        vtable = pos - self.i32(pos, f"{what} vtable offset")
        size = self.u16(vtable, f"{what} vtable")
        if size < 4 or size & 1:
            raise _bad(f"{what}: the vtable at byte {self.base + vtable} has size {size}")
        self.need(vtable, size, f"{what} vtable")
        return _Table(self, pos, vtable, (size - 4) // 2, what)

    def indirect(self, pos: int, what: str) -> int:
        return pos + self.u32(pos, what)

    def string(self, pos: int, what: str) -> bytes:
        length = self.u32(pos, f"{what} length")
        self.need(pos + 4, length, what)
        return self.buf[pos + 4 : pos + 4 + length]

    def vector(self, pos: int, elem_size: int, what: str) -> tuple[int, int]:
        """``(first element position, count)``; the whole vector is inside the buffer,
        so a count can never exceed the buffer's size (no loop runs longer than that)."""
        count = self.u32(pos, f"{what} length")
        self.need(pos + 4, count * elem_size, what)
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

    def u32(self, index: int, name: str) -> int:
        pos = self.field(index)
        return 0 if pos is None else self.r.u32(pos, f"{self.what}.{name}")

    def i32(self, index: int, name: str) -> int:
        pos = self.field(index)
        return 0 if pos is None else self.r.i32(pos, f"{self.what}.{name}")

    def blob(self, index: int, name: str) -> bytes | None:
        pos = self.field(index)
        if pos is None:
            return None
        what = f"{self.what}.{name}"
        return self.r.string(self.r.indirect(pos, what), what)

    def string(self, index: int, name: str) -> str | None:
        raw = self.blob(index, name)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(f"{self.what}.{name} is not UTF-8") from None

    def dims(self, index: int, name: str) -> tuple[int, int, int] | None:
        pos = self.field(index)
        if pos is None:
            return None
        what = f"{self.what}.{name}"
        r = self.r
        return (r.u32(pos, what), r.u32(pos + 4, what), r.u32(pos + 8, what))

    def u64_vector(self, index: int, name: str) -> tuple[int, ...]:
        pos = self.field(index)
        if pos is None:
            return ()
        r = self.r
        what = f"{self.what}.{name}"
        first, count = r.vector(r.indirect(pos, what), 8, what)
        return struct.unpack_from(f"<{count}Q", r.buf, first)

    def child(self, index: int, name: str) -> _Table | None:
        pos = self.field(index)
        if pos is None:
            return None
        what = f"{self.what}.{name}"
        return self.r.table(self.r.indirect(pos, what), what)

    def tables(self, index: int, name: str) -> list[_Table]:
        pos = self.field(index)
        if pos is None:
            return []
        r = self.r
        what = f"{self.what}.{name}"
        first, count = r.vector(r.indirect(pos, what), 4, what)
        return [
            r.table(r.indirect(first + 4 * i, f"{what}[{i}]"), f"{what}[{i}]") for i in range(count)
        ]


def _export(e: _Table, i: int, module_count: int) -> CudaExport:
    where = f"exports[{i}]"
    name = e.string(1, "kernel_name")
    if not name:
        raise _bad(f"{where} has no kernel_name")
    module = e.u32(0, "module_ordinal")
    if module >= module_count:
        raise _bad(f"{where} ({name}) names module {module}; there are {module_count}")
    dims = e.dims(2, "block_dims")
    if dims is None:
        raise _bad(f"{where} ({name}) has no block_dims")
    if (
        min(dims) < 1
        or any(d > m for d, m in zip(dims, _MAX_BLOCK))
        or dims[0] * dims[1] * dims[2] > _MAX_THREADS
    ):
        raise _bad(
            f"{where} ({name}) has block dims {dims}; CUDA allows 1..{_MAX_BLOCK} with at "
            f"most {_MAX_THREADS} threads per block"
        )
    debug_name, source = "", None
    debug = e.child(6, "debug_info")
    if debug is not None:
        debug_name = debug.string(0, "name") or ""
        location = debug.child(1, "location")
        if location is not None:
            source = (location.string(0, "filename") or "", location.i32(1, "line"))
    return CudaExport(
        name=name,
        module_ordinal=module,
        workgroup_size=dims,
        constant_count=e.u32(4, "constant_count"),
        binding_flags=e.u64_vector(5, "binding_flags"),
        shared_memory_size=e.u32(3, "block_shared_memory_size"),
        debug_name=debug_name,
        source=source,
    )


def parse_container(data: bytes) -> CudaExecutableDef:
    """Parse a ``CDA1`` container (see the module docstring). INVALID_ARGUMENT, naming
    the byte, for anything malformed: bad offsets, no modules or exports, an empty PTX
    image, an export without a kernel name or block dims, a module ordinal out of range,
    block dims outside CUDA's limits, kernel names that repeat."""
    buf = bytes(data)
    if not is_container(buf):
        raise _bad(f"no CDA1 identifier (bytes 0..8 are {buf[:8]!r})")
    body, base = _flatbuffer(buf)
    r = _Reader(body, base)
    root = r.table(r.u32(0, "root offset"), "ExecutableDef")
    modules: list[bytes] = []
    for i, m in enumerate(root.tables(1, "modules")):
        image = m.blob(0, "ptx_image")
        if not image:
            raise _bad(f"modules[{i}] has no PTX image")
        modules.append(image)
    if not modules:
        raise _bad("the executable has no modules")
    exports = tuple(_export(e, i, len(modules)) for i, e in enumerate(root.tables(0, "exports")))
    if not exports:
        raise _bad("the executable exports no functions")
    seen: set[tuple[int, str]] = set()
    for export in exports:
        key = (export.module_ordinal, export.name)
        if key in seen:
            raise _bad(f"kernel {export.name!r} is exported twice from one module")
        seen.add(key)
    paths = []
    for i, f in enumerate(root.tables(2, "source_files")):
        paths.append(f.string(0, "path") or f"<source {i}>")
    return CudaExecutableDef(exports, tuple(modules), tuple(paths))
