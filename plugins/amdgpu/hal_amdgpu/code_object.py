"""HSACO code objects: ELF checks (pyelftools), the ``NT_AMDGPU_METADATA`` msgpack note,
kernel descriptors (``.kd`` symbols) and the HAL kernarg ABI reflected from each kernel.

``parse_hsaco(data)`` never raises anything but INVALID_ARGUMENT for malformed input,
whatever the bytes are: every failure of the ELF or msgpack readers is caught here and
reported with what was wrong. The HAL kernarg ABI is ``uint64_t
bindings[]`` then ``uint32_t constants[]``, padded to 8 bytes, optionally followed by the
implicit-argument block. Pure functions over bytes; thread-safe.
"""

from __future__ import annotations

import io
import re
from typing import Any

import attrs
import msgpack
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import NoteSegment

from hal_core import HalError, InvalidArgumentError

from .target_id import TargetId, target_from_e_flags

__all__ = [
    "KernelArg",
    "KernelInfo",
    "HalKernelLayout",
    "CodeObject",
    "parse_hsaco",
    "parse_metadata",
    "metadata_processor",
    "reflect_hal_layout",
    "EM_AMDGPU",
    "NT_AMDGPU_METADATA",
    "IMPLICIT_ARGS_SIZE",
]

EM_AMDGPU = 224
ELFOSABI_AMDGPU_HSA = 64
NT_AMDGPU_METADATA = 32
KERNEL_DESCRIPTOR_SIZE = 64
IMPLICIT_ARGS_SIZE = 256
"""Bytes reserved for the code-object-v5 implicit-argument block after explicit args."""
MAX_METADATA_BYTES = 16 << 20


@attrs.frozen
class KernelArg:
    name: str
    offset: int
    size: int
    value_kind: str
    address_space: str | None = None
    access: str | None = None
    type_name: str | None = None

    @property
    def hidden(self) -> bool:
        return self.value_kind.startswith("hidden_")


@attrs.frozen
class KernelInfo:
    """One kernel of a code object (``amdhsa.kernels`` entry plus its ``.kd`` symbol)."""

    name: str
    symbol: str
    kernarg_segment_size: int
    kernarg_segment_align: int
    group_segment_fixed_size: int
    private_segment_fixed_size: int
    reqd_workgroup_size: tuple[int, int, int] | None
    wavefront_size: int | None
    args: tuple[KernelArg, ...]
    descriptor_offset: int = 0
    """Virtual address (ELF ``st_value``) of the 64-byte kernel descriptor."""


@attrs.frozen
class HalKernelLayout:
    """How HAL bindings and constants sit in a kernel's kernargs.

    ``implicit_args_offset`` is None when the kernel takes no hidden arguments;
    ``kernarg_size`` is the bytes to reserve per dispatch."""

    binding_count: int
    constant_count: int
    explicit_size: int
    implicit_args_offset: int | None
    kernarg_size: int
    kernarg_alignment: int


@attrs.frozen
class CodeObject:
    """A parsed HSACO: its target (from ``e_flags``), the metadata's target string and
    kernels by name."""

    target: TargetId
    metadata_target: str
    abi_version: int
    kernels: dict[str, KernelInfo]

    def kernel(self, name: str) -> KernelInfo:
        from hal_core import NotFoundError

        info = self.kernels.get(name)
        if info is None:
            raise NotFoundError(
                f"code object for {self.target.hsa_isa_name} has no kernel {name!r}; it has "
                f"{sorted(self.kernels)}"
            )
        return info


def _bad(msg: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"malformed HSACO code object: {msg}")


def parse_hsaco(data: bytes | bytearray | memoryview) -> CodeObject:
    """Parse an AMDGPU HSA code object. INVALID_ARGUMENT (and only that) for bad input."""
    try:
        blob = bytes(data)
    except TypeError:
        raise InvalidArgumentError(
            f"code object must be bytes-like, got {type(data).__name__}"
        ) from None
    try:
        return _parse(blob)
    except HalError:
        raise
    except (ELFError, Exception) as exc:  # the ELF reader raises many kinds on bad bytes
        raise _bad(f"{type(exc).__name__}: {exc}") from None


def _parse(blob: bytes) -> CodeObject:
    if len(blob) < 64 or blob[:4] != b"\x7fELF":
        raise _bad(f"not an ELF file (first bytes {blob[:4]!r}, {len(blob)} bytes)")
    if blob[4] != 2 or blob[5] != 1:
        raise _bad("expected a 64-bit little-endian ELF (ELFCLASS64, ELFDATA2LSB)")
    elf = ELFFile(io.BytesIO(blob))
    header = elf.header
    if header["e_machine"] not in ("EM_AMDGPU", EM_AMDGPU):
        raise _bad(f"e_machine is {header['e_machine']}, expected EM_AMDGPU (224)")
    osabi = blob[7]
    if osabi != ELFOSABI_AMDGPU_HSA:
        raise _bad(f"EI_OSABI is {osabi}, expected ELFOSABI_AMDGPU_HSA (64)")
    abi_version = blob[8]
    if not 1 <= abi_version <= 4:
        raise _bad(f"EI_ABIVERSION {abi_version} is not a code object v3..v6 (1..4)")
    target = target_from_e_flags(int(header["e_flags"]), abi_version)
    raw = _metadata_note(elf)
    if raw is None:
        raise _bad("no NT_AMDGPU_METADATA note named 'AMDGPU' in any PT_NOTE segment")
    metadata_target, kernels = parse_metadata(raw)
    meta_processor = metadata_processor(metadata_target)
    if meta_processor != target.processor:
        raise _bad(
            f"metadata target {metadata_target!r} disagrees with e_flags ({target.processor})"
        )
    symbols = _kernel_descriptors(elf)
    resolved: dict[str, KernelInfo] = {}
    for info in kernels:
        sym = symbols.get(info.symbol)
        if sym is None:
            raise _bad(f"kernel {info.name!r}: symbol {info.symbol!r} is not in the symbol table")
        value, size = sym
        if size != KERNEL_DESCRIPTOR_SIZE:
            raise _bad(f"kernel descriptor {info.symbol!r} is {size} bytes, expected 64")
        if info.name in resolved:
            raise _bad(f"kernel {info.name!r} is listed twice")
        resolved[info.name] = attrs.evolve(info, descriptor_offset=value)
    return CodeObject(target, metadata_target, abi_version, resolved)


_ARCH_VERSION = re.compile(r"^amdgpu([0-9]+)\.[0-9a-z]+$")


def metadata_processor(target: str) -> str:
    """The processor an ``amdhsa.target`` string names, in either LLVM spelling:
    ``amdgcn-amd-amdhsa--gfx1100[:features]`` (older LLVM) or
    ``amdgpu11.00-amd-amdhsa-unknown-gfx1100[:features]`` (current LLVM: the arch carries
    the ISA version, the environment is spelled out). INVALID_ARGUMENT for anything else,
    or for an arch version whose major disagrees with the processor's."""
    parts = target.split("-", 4)  # generic processors (gfx11-generic) keep their dashes
    if (
        len(parts) != 5
        or parts[1] != "amd"
        or parts[2] != "amdhsa"
        or not parts[0].startswith(("amdgcn", "amdgpu"))
    ):
        raise _bad(f"metadata target {target!r} is not an AMDGPU HSA target triple")
    processor = parts[4].split(":")[0].lower()
    version = _ARCH_VERSION.match(parts[0])
    if version is not None:
        exact = re.match(r"^gfx([0-9]{1,2})[0-9][0-9a-f]$", processor)
        generic = re.match(r"^gfx([0-9]{1,2})(?:-[0-9])?-generic$", processor)
        named = exact or generic
        if named is not None and int(named.group(1)) != int(version.group(1)):
            raise _bad(
                f"metadata target {target!r}: arch version {parts[0]!r} is not that of {processor}"
            )
    return processor


def _metadata_note(elf: ELFFile) -> bytes | None:
    for segment in elf.iter_segments():
        if not isinstance(segment, NoteSegment):  # what pyelftools makes of each PT_NOTE
            continue
        for note in segment.iter_notes():
            if note["n_name"] == "AMDGPU" and note["n_type"] in (
                NT_AMDGPU_METADATA,
                "NT_AMDGPU_METADATA",
            ):
                desc = note.get("n_descdata", note.get("n_desc"))
                if not isinstance(desc, (bytes, bytearray)):
                    raise _bad("metadata note has no raw descriptor bytes")
                return bytes(desc)
    return None


def _kernel_descriptors(elf: ELFFile) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for name in (".dynsym", ".symtab"):
        section = elf.get_section_by_name(name)
        if section is None or not hasattr(section, "iter_symbols"):
            continue
        for sym in section.iter_symbols():
            if sym.name.endswith(".kd"):
                out.setdefault(sym.name, (int(sym["st_value"]), int(sym["st_size"])))
    return out


# -- msgpack metadata ------------------------------------------------------------------


def _pairs_no_duplicates(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _bad(f"metadata map has key {key!r} twice")
        out[key] = value
    return out


def parse_metadata(raw: bytes) -> tuple[str, list[KernelInfo]]:
    """Decode the ``NT_AMDGPU_METADATA`` msgpack document: ``(amdhsa.target, kernels)``.
    INVALID_ARGUMENT for anything malformed (bad msgpack, wrong types, duplicate keys)."""
    if len(raw) > MAX_METADATA_BYTES:
        raise _bad(f"metadata note is {len(raw)} bytes; at most {MAX_METADATA_BYTES}")
    try:
        doc = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=False,
            object_pairs_hook=_pairs_no_duplicates,
        )
    except HalError:
        raise
    except Exception as exc:  # msgpack raises ExtraData, FormatError, ValueError, ...
        raise _bad(f"metadata is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict):
        raise _bad(f"metadata root is a {type(doc).__name__}, expected a map")
    target = _get(doc, "amdhsa.target", str, "metadata")
    kernels_raw = _get(doc, "amdhsa.kernels", list, "metadata")
    return target, [_kernel(k, i) for i, k in enumerate(kernels_raw)]


_MISSING = object()


def _get(
    doc: dict, key: str, kind: type | tuple[type, ...], where: str, default: Any = _MISSING
) -> Any:
    value = doc.get(key, _MISSING)
    if value is _MISSING:
        if default is not _MISSING:
            return default
        raise _bad(f"{where} lacks {key!r}")
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise _bad(
            f"{where}: {key!r} is a {type(value).__name__} ({value!r:.40}), "
            f"expected {getattr(kind, '__name__', kind)}"
        )
    return value


def _uint(doc: dict, key: str, where: str, default: Any = _MISSING, limit: int = 1 << 32) -> Any:
    value = _get(doc, key, int, where, default)
    if value is not None and not 0 <= value < limit:
        raise _bad(f"{where}: {key!r} = {value} is outside 0..{limit - 1}")
    return value


def _kernel(doc: Any, index: int) -> KernelInfo:
    if not isinstance(doc, dict):
        raise _bad(f"amdhsa.kernels[{index}] is a {type(doc).__name__}, expected a map")
    name = _get(doc, ".name", str, f"amdhsa.kernels[{index}]")
    where = f"kernel {name!r}"
    symbol = _get(doc, ".symbol", str, where)
    if not symbol.endswith(".kd"):
        raise _bad(f"{where}: symbol {symbol!r} does not end in '.kd'")
    size = _uint(doc, ".kernarg_segment_size", where)
    align = _uint(doc, ".kernarg_segment_align", where)
    if align == 0 or align & (align - 1):
        raise _bad(f"{where}: .kernarg_segment_align {align} is not a power of two")
    reqd = _get(doc, ".reqd_workgroup_size", list, where, None)
    if reqd is not None:
        if len(reqd) != 3 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024 for v in reqd
        ):
            raise _bad(f"{where}: .reqd_workgroup_size {reqd!r} is not three ints in 1..1024")
        reqd = (reqd[0], reqd[1], reqd[2])
    wavefront = _uint(doc, ".wavefront_size", where, None)
    args_raw = _get(doc, ".args", list, where, [])
    args = tuple(_arg(a, f"{where} arg {i}", size) for i, a in enumerate(args_raw))
    return KernelInfo(
        name=name,
        symbol=symbol,
        kernarg_segment_size=size,
        kernarg_segment_align=align,
        group_segment_fixed_size=_uint(doc, ".group_segment_fixed_size", where, 0),
        private_segment_fixed_size=_uint(doc, ".private_segment_fixed_size", where, 0),
        reqd_workgroup_size=reqd,
        wavefront_size=wavefront,
        args=args,
    )


def _arg(doc: Any, where: str, kernarg_size: int) -> KernelArg:
    if not isinstance(doc, dict):
        raise _bad(f"{where} is a {type(doc).__name__}, expected a map")
    offset = _uint(doc, ".offset", where)
    size = _uint(doc, ".size", where)
    kind = _get(doc, ".value_kind", str, where)
    if offset + size > kernarg_size:
        raise _bad(
            f"{where}: [{offset}, {offset + size}) exceeds the kernarg segment of "
            f"{kernarg_size} bytes"
        )
    access = _get(doc, ".actual_access", str, where, None) or _get(doc, ".access", str, where, None)
    return KernelArg(
        name=_get(doc, ".name", str, where, ""),
        offset=offset,
        size=size,
        value_kind=kind,
        address_space=_get(doc, ".address_space", str, where, None),
        access=access,
        type_name=_get(doc, ".type_name", str, where, None),
    )


# -- HAL ABI reflection ----------------------------------------------------------------


def reflect_hal_layout(kernel: KernelInfo) -> HalKernelLayout:
    """Map a kernel's arguments to HAL bindings (``global_buffer``, 8 bytes each, first) and
    32-bit constants (``by_value``, sizes a multiple of 4, after the bindings); hidden
    arguments are the implicit suffix. INVALID_ARGUMENT when the kernel does not follow
    that ABI (naming the argument)."""
    bindings = constants = 0
    cursor = 0
    implicit: int | None = None
    for arg in kernel.args:
        label = f"kernel {kernel.name!r} argument {arg.name or arg.offset!r}"
        if arg.hidden:
            if implicit is None or arg.offset < implicit:
                implicit = arg.offset
            continue
        if implicit is not None and arg.offset > implicit:
            raise _bad(f"{label} follows the hidden arguments")
        if arg.value_kind == "global_buffer":
            if constants:
                raise InvalidArgumentError(
                    f"{label}: HAL kernels take all buffer bindings before constants"
                )
            if arg.size != 8 or arg.offset != 8 * bindings:
                raise InvalidArgumentError(
                    f"{label}: binding {bindings} must be an 8-byte pointer at offset "
                    f"{8 * bindings}, found {arg.size} bytes at {arg.offset}"
                )
            bindings += 1
            cursor = arg.offset + 8
        elif arg.value_kind == "by_value":
            if arg.size % 4 or arg.offset != 8 * bindings + 4 * constants:
                raise InvalidArgumentError(
                    f"{label}: constants must be packed 32-bit words after the bindings; found "
                    f"{arg.size} bytes at offset {arg.offset}, expected offset "
                    f"{8 * bindings + 4 * constants}"
                )
            constants += arg.size // 4
            cursor = arg.offset + arg.size
        else:
            raise InvalidArgumentError(
                f"{label} has value kind {arg.value_kind!r}; HAL kernels take only "
                "global_buffer bindings and by_value constants"
            )
    explicit = (cursor + 7) & ~7
    if implicit is not None:
        if implicit < cursor:
            raise _bad(f"kernel {kernel.name!r}: hidden arguments overlap explicit ones")
        explicit = implicit
        reserve = max(kernel.kernarg_segment_size, explicit + IMPLICIT_ARGS_SIZE)
    else:
        reserve = max(kernel.kernarg_segment_size, explicit)
    return HalKernelLayout(
        bindings, constants, explicit, implicit, reserve, max(16, kernel.kernarg_segment_align)
    )
