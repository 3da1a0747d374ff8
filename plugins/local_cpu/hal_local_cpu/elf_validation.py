"""Structural validation of ELF shared objects before the dynamic loader sees them.

The system loader trusts its input: a truncated file makes it touch pages past the end of
the file (SIGBUS), a corrupt dynamic table or relocation makes it read or write outside the
image (SIGSEGV), a corrupt constructor entry makes it jump anywhere. ``validate_elf``
checks everything the loader reads or acts on while loading (headers, program and section
headers, segments, the dynamic table and what it points to: string, symbol and hash
tables, version tables, relocations, constructors and destructors), so that bytes which
pass can be loaded without crashing the process. It does not judge machine code: a library
whose code is wrong still runs wrong code, as any library does.

``ElfImage`` (the result) keeps what the loaders need afterwards: the segments, to check
that pointers a library hands back lie inside its image, and the dynamic symbols.
"""

from __future__ import annotations

import platform
import struct
from typing import Callable, Iterator

from hal_core import IncompatibleError, InvalidArgumentError

__all__ = ["EM_AARCH64", "EM_X86_64", "ElfImage", "host_machine", "validate_elf"]

EM_X86_64 = 62
EM_AARCH64 = 183

_MACHINE_NAMES = {EM_X86_64: "x86-64", EM_AARCH64: "aarch64"}

_PT_LOAD, _PT_DYNAMIC, _PT_NOTE, _PT_PHDR, _PT_TLS = 1, 2, 4, 6, 7
_PT_GNU_RELRO = 0x6474E552
_PT_GNU_PROPERTY = 0x6474E553
_PF_X, _PF_W, _PF_R = 1, 2, 4

# Dynamic tags read here (see the System V gABI and the GNU extensions).
_DT_NULL, _DT_NEEDED, _DT_PLTRELSZ, _DT_HASH, _DT_STRTAB, _DT_SYMTAB = 0, 1, 2, 4, 5, 6
_DT_RELA, _DT_RELASZ, _DT_RELAENT, _DT_STRSZ, _DT_SYMENT = 7, 8, 9, 10, 11
_DT_INIT, _DT_FINI, _DT_SONAME, _DT_RPATH, _DT_REL, _DT_RELSZ = 12, 13, 14, 15, 17, 18
_DT_PLTREL, _DT_TEXTREL, _DT_JMPREL = 20, 22, 23
_DT_INIT_ARRAY, _DT_FINI_ARRAY, _DT_INIT_ARRAYSZ, _DT_FINI_ARRAYSZ = 25, 26, 27, 28
_DT_RUNPATH, _DT_PREINIT_ARRAY, _DT_PREINIT_ARRAYSZ = 29, 32, 33
_DT_RELRSZ, _DT_RELR, _DT_RELRENT = 35, 36, 37
_DT_GNU_HASH = 0x6FFFFEF5
_DT_VERSYM, _DT_VERDEF, _DT_VERDEFNUM = 0x6FFFFFF0, 0x6FFFFFFC, 0x6FFFFFFD
_DT_VERNEED, _DT_VERNEEDNUM = 0x6FFFFFFE, 0x6FFFFFFF
_DT_RELACOUNT = 0x6FFFFFF9
_DT_STRING_TAGS = (_DT_NEEDED, _DT_SONAME, _DT_RPATH, _DT_RUNPATH)

# x86-64 relocation types the loader applies for position-independent libraries.
_R_NONE, _R_64, _R_GLOB_DAT, _R_JUMP_SLOT, _R_RELATIVE = 0, 1, 6, 7, 8
_R_DTPMOD64, _R_DTPOFF64, _R_TPOFF64, _R_TLSDESC, _R_IRELATIVE = 16, 17, 18, 36, 37
_R_X86_64_ALLOWED = frozenset(
    (
        _R_NONE,
        _R_64,
        _R_GLOB_DAT,
        _R_JUMP_SLOT,
        _R_RELATIVE,
        _R_DTPMOD64,
        _R_DTPOFF64,
        _R_TPOFF64,
        _R_TLSDESC,
        _R_IRELATIVE,
    )
)

_SHN_UNDEF, _SHN_ABS = 0, 0xFFF1
_STT_FUNC = 2
_SHT_SYMTAB = 2

# Tags the loader reads whenever the first is present (it dereferences or asserts on
# them without checking that they exist).
_COMPANIONS = {
    _DT_RELA: (_DT_RELASZ, _DT_RELAENT),
    _DT_JMPREL: (_DT_PLTRELSZ, _DT_PLTREL),
    _DT_RELR: (_DT_RELRSZ, _DT_RELRENT),
    _DT_INIT_ARRAY: (_DT_INIT_ARRAYSZ,),
    _DT_FINI_ARRAY: (_DT_FINI_ARRAYSZ,),
    _DT_PREINIT_ARRAY: (_DT_PREINIT_ARRAYSZ,),
    _DT_VERNEED: (_DT_VERNEEDNUM,),
    _DT_VERDEF: (_DT_VERDEFNUM,),
    _DT_STRTAB: (_DT_STRSZ,),
    _DT_SYMTAB: (_DT_SYMENT,),
}
_STT_TLS = 6

_MAX_IMAGE = 1 << 30
"""Largest address span accepted: executables are kernels, not applications."""

_MAX_WALK = 1 << 16
"""Bound on linked-list walks (version tables), so a cycle cannot loop forever."""


def host_machine() -> int | None:
    """The ELF machine code of this process's architecture (None when unknown)."""
    m = platform.machine().lower()
    if m in ("x86_64", "amd64"):
        return EM_X86_64
    if m in ("aarch64", "arm64"):
        return EM_AARCH64
    return None


class _Bad(Exception):
    """Internal: a validation failure (turned into INVALID_ARGUMENT with context)."""


class Segment:
    __slots__ = ("vaddr", "memsz", "offset", "filesz", "flags")

    def __init__(self, vaddr: int, memsz: int, offset: int, filesz: int, flags: int) -> None:
        self.vaddr = vaddr
        self.memsz = memsz
        self.offset = offset
        self.filesz = filesz
        self.flags = flags


class ElfImage:
    """A validated ELF shared object: its loadable segments and defined dynamic symbols.

    ``contains``/``is_code`` check pointers a loaded library returns, given the address
    the loader placed it at (``base``). Immutable.
    """

    __slots__ = ("segments", "symbols", "span", "functions")

    def __init__(
        self,
        segments: list[Segment],
        symbols: dict[str, int],
        span: int,
        functions: set[int] | None,
    ) -> None:
        self.segments = tuple(segments)
        self.symbols = symbols
        self.span = span
        # Function start addresses from the full symbol table (None when stripped).
        self.functions = frozenset(functions) if functions is not None else None

    def region(self, base: int, ptr: int) -> tuple[int, Segment] | None:
        """``(bytes left in its segment, segment)`` for an address inside the image."""
        rel = ptr - base
        for s in self.segments:
            if s.vaddr <= rel < s.vaddr + s.memsz:
                return s.vaddr + s.memsz - rel, s
        return None

    def contains(self, base: int, ptr: int, size: int) -> bool:
        """Whether ``[ptr, ptr + size)`` lies inside one segment of the image at ``base``."""
        r = self.region(base, ptr)
        return r is not None and size <= r[0]

    def is_code(self, base: int, ptr: int) -> bool:
        r = self.region(base, ptr)
        return r is not None and bool(r[1].flags & _PF_X)


def validate_elf(blob: bytes, what: str, machine: int | None = None) -> ElfImage:
    """Check that ``blob`` is a well-formed ELF64 little-endian shared object for
    ``machine`` (the host's by default). INVALID_ARGUMENT (naming ``what`` and the defect)
    for anything else; INCOMPATIBLE for a well-formed object built for another machine."""
    if machine is None:
        machine = host_machine()
    try:
        return _validate(blob, machine)
    except IncompatibleError as exc:
        raise IncompatibleError(f"{what}: {exc.message}") from None
    except (_Bad, struct.error) as exc:
        raise InvalidArgumentError(f"{what} is not a loadable ELF shared object: {exc}") from None


def _validate(blob: bytes, machine: int | None) -> ElfImage:
    n = len(blob)
    if n < 64 or blob[:4] != b"\x7fELF":
        raise _Bad(f"{n} bytes starting {blob[:8]!r} do not begin with an ELF header")
    if blob[4] != 2 or blob[5] != 1:
        raise _Bad(f"class {blob[4]} / data encoding {blob[5]}: only ELF64 little-endian is loaded")
    if blob[6] != 1:
        raise _Bad(f"ELF identification version {blob[6]} (expected 1)")
    (e_type, e_machine, e_version, _entry, phoff, shoff, _flags, ehsize, phentsize, phnum) = (
        struct.unpack_from("<HHIQQQIHHH", blob, 16)
    )
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 58)
    if e_type != 3:
        raise _Bad(f"type {e_type} is not a shared object (ET_DYN); link with -shared")
    if machine is not None and e_machine != machine:
        raise IncompatibleError(
            f"built for ELF machine {e_machine} ({_MACHINE_NAMES.get(e_machine, 'unknown')}); "
            f"this host runs {machine} ({_MACHINE_NAMES.get(machine, 'unknown')})"
        )
    if e_version != 1 or ehsize != 64:
        raise _Bad(f"header version {e_version} / size {ehsize} (expected 1 / 64)")
    if phnum == 0 or phentsize != 56 or phnum == 0xFFFF:
        raise _Bad(f"{phnum} program headers of {phentsize} bytes (expected 56-byte headers)")
    _within(n, phoff, phnum * 56, "the program headers")
    functions: set[int] | None = None  # from the full symbol table, when not stripped
    if shoff:
        if shentsize != 64:
            raise _Bad(f"section headers of {shentsize} bytes (expected 64)")
        _within(n, shoff, shnum * 64, "the section headers")
        if shstrndx >= shnum and shstrndx != 0:
            raise _Bad(f"section name table index {shstrndx} is past {shnum} sections")
        for i in range(shnum):
            _n, sh_type, _f, _a, sh_off, sh_size = struct.unpack_from(
                "<IIQQQQ", blob, shoff + 64 * i
            )
            if sh_type not in (0, 8):  # SHT_NULL, SHT_NOBITS occupy no file bytes
                _within(n, sh_off, sh_size, f"section {i}")
            if sh_type == _SHT_SYMTAB:
                functions = (functions or set()) | _function_starts(blob, sh_off, sh_size)
    elif shnum:
        raise _Bad(f"{shnum} section headers at offset 0")

    loads: list[Segment] = []
    others: list[tuple[int, int, int, int, int, int]] = []
    for i in range(phnum):
        p_type, p_flags, off, vaddr, _pa, filesz, memsz, align = struct.unpack_from(
            "<IIQQQQQQ", blob, phoff + 56 * i
        )
        if filesz:
            _within(n, off, filesz, f"segment {i} (type {p_type:#x})")
        if filesz > memsz and p_type in (_PT_LOAD, _PT_TLS):
            raise _Bad(f"segment {i} has {filesz} file bytes but only {memsz} in memory")
        if vaddr + memsz > _MAX_IMAGE:
            raise _Bad(f"segment {i} ends at address {vaddr + memsz:#x}, past {_MAX_IMAGE:#x}")
        if p_type == _PT_LOAD:
            if not p_flags & _PF_R:
                # The loader (and export reflection) reads every loadable segment.
                raise _Bad(f"loadable segment {i} is not readable")
            if align > 1 and (align & (align - 1) or (off - vaddr) % align):
                raise _Bad(f"segment {i} alignment {align:#x} does not fit offset/address")
            if loads and vaddr < loads[-1].vaddr + loads[-1].memsz:
                raise _Bad(f"loadable segment {i} overlaps or precedes the one before it")
            loads.append(Segment(vaddr, memsz, off, filesz, p_flags))
        else:
            others.append((i, p_type, off, vaddr, filesz, memsz))
    if not loads:
        raise _Bad("no loadable segment")
    span = loads[-1].vaddr + loads[-1].memsz
    mem = _Memory(blob, loads)
    dynamic = None
    for i, p_type, off, vaddr, filesz, memsz in others:
        if p_type in (_PT_DYNAMIC, _PT_PHDR, _PT_GNU_RELRO, _PT_TLS, _PT_NOTE, _PT_GNU_PROPERTY):
            what = f"segment {i} (type {p_type:#x})"
            mem.mapped(vaddr, memsz, what)
            # The loader reads these at their address, validation reads them at their
            # file offset: the two must be the same bytes.
            if filesz and mem.file_range(vaddr, filesz, what) != off:
                raise _Bad(f"{what} has address {vaddr:#x} but file offset {off:#x}")
        if p_type == _PT_PHDR and off != phoff:
            raise _Bad("the program header segment does not describe the program headers")
        if p_type in (_PT_NOTE, _PT_GNU_PROPERTY):
            _check_notes(blob, off, filesz, i)
        if p_type == _PT_DYNAMIC:
            if dynamic is not None:
                raise _Bad("two dynamic segments")
            dynamic = (off, filesz)
            # The loader keeps pointing into the dynamic table after relocating (it
            # reads destructors from it at close): no relocation may write there.
            mem.protected = (vaddr, vaddr + memsz)
    if dynamic is None:
        raise _Bad("no dynamic segment (PT_DYNAMIC)")
    symbols = _check_dynamic(blob, mem, *dynamic, functions)
    return ElfImage(loads, symbols, span, functions)


def _within(n: int, off: int, size: int, what: str) -> None:
    if off < 0 or size < 0 or off > n or size > n - off:
        raise _Bad(f"{what} [{off}, {off + size}) lies outside the {n}-byte file")


class _Memory:
    """Address -> file translation over the loadable segments."""

    def __init__(self, blob: bytes, loads: list[Segment]) -> None:
        self.blob = blob
        self.loads = loads
        self.protected = (0, 0)

    def writable(self, vaddr: int, what: str) -> None:
        """``[vaddr, vaddr + 8)`` may be written by a relocation."""
        seg = self.segment(vaddr, 8, what)
        if not seg.flags & _PF_W:
            raise _Bad(f"a relocation writes to read-only address {vaddr:#x}")
        lo, hi = self.protected
        if vaddr < hi and vaddr + 8 > lo:
            raise _Bad(f"a relocation writes into the dynamic table at {vaddr:#x}")

    def segment(self, vaddr: int, size: int, what: str) -> Segment:
        for s in self.loads:
            if s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.memsz:
                return s
        raise _Bad(f"{what} [{vaddr:#x}, {vaddr + size:#x}) is outside every loadable segment")

    def mapped(self, vaddr: int, size: int, what: str) -> Segment:
        return self.segment(vaddr, size, what)

    def file_range(self, vaddr: int, size: int, what: str) -> int:
        """The file offset of ``[vaddr, vaddr + size)``, which must be file-backed."""
        s = self.segment(vaddr, size, what)
        if vaddr + size > s.vaddr + s.filesz:
            raise _Bad(f"{what} [{vaddr:#x}, {vaddr + size:#x}) is not backed by file bytes")
        return s.offset + (vaddr - s.vaddr)

    def is_code(self, vaddr: int) -> bool:
        for s in self.loads:
            if s.vaddr <= vaddr < s.vaddr + s.memsz:
                return bool(s.flags & _PF_X)
        return False


def _check_notes(blob: bytes, off: int, size: int, index: int) -> None:
    end = off + size
    p = off
    while p + 12 <= end:
        namesz, descsz, _type = struct.unpack_from("<III", blob, p)
        if namesz > size or descsz > size:
            raise _Bad(f"a note in segment {index} is larger than the segment")
        p += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)


def _function_starts(blob: bytes, off: int, size: int) -> set[int]:
    out = set()
    for k in range(size // 24):
        _name, info, _other, shndx, value, _size = struct.unpack_from("<IBBHQQ", blob, off + 24 * k)
        if info & 0xF == _STT_FUNC and shndx != _SHN_UNDEF:
            out.add(value)
    return out


def _check_dynamic(
    blob: bytes, mem: _Memory, off: int, size: int, functions: set[int] | None
) -> dict[str, int]:
    tags: dict[int, int] = {}
    strings: list[int] = []
    for k in range(size // 16):
        tag, val = struct.unpack_from("<qQ", blob, off + 16 * k)
        if tag == _DT_NULL:
            break
        if tag in _DT_STRING_TAGS:
            strings.append(val)
        elif tag in tags and tag not in (_DT_NEEDED,):
            raise _Bad(f"dynamic tag {tag:#x} appears twice")
        tags[tag] = val
    else:
        raise _Bad("the dynamic table has no terminating DT_NULL entry")
    if _DT_TEXTREL in tags:
        raise _Bad("it needs text relocations (DT_TEXTREL); build with -fPIC")
    for tag, companions in _COMPANIONS.items():
        if tag in tags and any(c not in tags for c in companions):
            raise _Bad(f"dynamic tag {tag:#x} comes without {[hex(c) for c in companions]}")
    if _DT_REL in tags:
        raise _Bad("REL relocations are not used on this machine (RELA is)")
    if tags.get(_DT_RELRENT, 8) != 8:
        raise _Bad("packed relative relocation entries are not 8 bytes")
    if _DT_STRTAB not in tags or _DT_SYMTAB not in tags:
        raise _Bad("the dynamic table lacks a string or symbol table")
    if tags.get(_DT_SYMENT, 24) != 24 or tags.get(_DT_RELAENT, 24) != 24:
        raise _Bad("symbol or relocation entries are not 24 bytes")
    if _DT_JMPREL in tags and tags.get(_DT_PLTREL, _DT_RELA) != _DT_RELA:
        raise _Bad("PLT relocations are not RELA")
    strsz = tags.get(_DT_STRSZ, 0)
    stroff = mem.file_range(tags[_DT_STRTAB], strsz, "the string table")
    strtab = blob[stroff : stroff + strsz]

    def string(i: int, what: str) -> str:
        end = strtab.find(b"\0", i) if 0 <= i < len(strtab) else -1
        if end < 0:
            raise _Bad(f"{what} (string {i}) is not a NUL-terminated string of the string table")
        return strtab[i:end].decode("utf-8", "replace")

    for s in strings:
        string(s, "a library name or path in the dynamic table")

    nsyms = _symbol_count(blob, mem, tags)
    symoff = mem.file_range(tags[_DT_SYMTAB], nsyms * 24, "the symbol table")
    symbols: dict[str, int] = {}
    values: list[int] = []
    for i in range(nsyms):
        st_name, st_info, _other, shndx, value, sym_size = struct.unpack_from(
            "<IBBHQQ", blob, symoff + 24 * i
        )
        name = string(st_name, f"the name of symbol {i}")
        values.append(value if shndx != _SHN_UNDEF else -1)
        if i and shndx == _SHN_UNDEF and _other & 3:
            # An undefined symbol that is not visible outside the library can only bind
            # to itself: the loader would resolve it to the library's base address.
            raise _Bad(f"undefined symbol {name!r} has non-default visibility")
        if shndx not in (_SHN_UNDEF, _SHN_ABS) and (st_info & 0xF) != _STT_TLS:
            mem.mapped(value, min(sym_size, 1 << 20), f"symbol {name!r}")
            # Plain symbols only: looking up an indirect function (STT_GNU_IFUNC) calls
            # its resolver, and the caller would then call whatever that returned.
            if name and (st_info & 0xF) <= _STT_FUNC:
                symbols[name] = value

    for table, size_tag in ((_DT_RELA, _DT_RELASZ), (_DT_JMPREL, _DT_PLTRELSZ)):
        if table in tags:
            _check_relocations(blob, mem, tags[table], tags.get(size_tag, 0), nsyms, values)
    if _DT_RELACOUNT in tags:
        # The loader applies the first DT_RELACOUNT entries as relative relocations
        # without looking at their type (it asserts, aborting the process).
        count = tags[_DT_RELACOUNT]
        relas = _relocations(blob, mem, tags.get(_DT_RELA, 0), tags.get(_DT_RELASZ, 0))
        types = [r_type for _o, r_type, _s, _a in relas]
        if count > len(types) or any(t != _R_RELATIVE for t in types[:count]):
            raise _Bad(f"DT_RELACOUNT {count} does not count leading relative relocations")

    for _slot, target in _relr_slots(blob, mem, tags):
        mem.mapped(target, 0, "a packed relative relocation's target")

    # Constructors and destructors are called by the loader: each must be code (a
    # function's first instruction, when the library keeps its symbol table), and no
    # relocation may write across an array slot.
    def callable_entry(addr: int) -> bool:
        return mem.is_code(addr) and (functions is None or addr in functions)

    for addr_tag in (_DT_INIT, _DT_FINI):
        if addr_tag in tags and not callable_entry(tags[addr_tag]):
            raise _Bad(f"constructor/destructor entry {tags[addr_tag]:#x} is not a function")
    relocs = None
    for arr_tag, size_tag in (
        (_DT_INIT_ARRAY, _DT_INIT_ARRAYSZ),
        (_DT_FINI_ARRAY, _DT_FINI_ARRAYSZ),
        (_DT_PREINIT_ARRAY, _DT_PREINIT_ARRAYSZ),
    ):
        if arr_tag not in tags:
            continue
        count = tags[size_tag]
        if count % 8:
            raise _Bad("a constructor/destructor array size is not a multiple of 8")
        base = tags[arr_tag]
        mem.file_range(base, count, "a constructor/destructor array")
        if relocs is None:
            relocs = _relocation_targets(blob, mem, tags, values)
        for where in relocs.writes:
            if base - 8 < where < base + count and (where - base) % 8:
                raise _Bad(f"a relocation at {where:#x} writes across a constructor slot")
        for slot in range(base, base + count, 8):
            entry = relocs.get(slot)
            if entry is None or not callable_entry(entry):
                raise _Bad(f"constructor/destructor slot {slot:#x} does not point to a function")
    _check_versions(blob, mem, tags, nsyms, string)
    return symbols


def _symbol_count(blob: bytes, mem: _Memory, tags: dict[int, int]) -> int:
    if _DT_HASH in tags:
        off = mem.file_range(tags[_DT_HASH], 8, "the symbol hash table")
        nbucket, nchain = struct.unpack_from("<II", blob, off)
        mem.file_range(tags[_DT_HASH], 8 + 4 * (nbucket + nchain), "the symbol hash table")
        if nchain > (1 << 20):
            raise _Bad(f"{nchain} symbols is more than a kernel library holds")
        entries = struct.unpack_from(f"<{nbucket + nchain}I", blob, off + 8)
        if any(e >= nchain for e in entries):
            raise _Bad("the symbol hash table names a symbol past the symbol table")
        count = nchain
    else:
        count = 0
    if _DT_GNU_HASH in tags:
        count = max(count, _gnu_hash_count(blob, mem, tags[_DT_GNU_HASH]))
    elif _DT_HASH not in tags:
        raise _Bad("no symbol hash table (DT_HASH or DT_GNU_HASH)")
    return count


def _gnu_hash_count(blob: bytes, mem: _Memory, vaddr: int) -> int:
    off = mem.file_range(vaddr, 16, "the GNU hash table")
    nbuckets, symoffset, bloom_size, bloom_shift = struct.unpack_from("<IIII", blob, off)
    if bloom_size == 0 or bloom_size & (bloom_size - 1) or bloom_shift >= 64:
        raise _Bad("the GNU hash table's bloom filter is malformed")
    if nbuckets == 0 or nbuckets > (1 << 20) or symoffset > (1 << 20):
        raise _Bad("the GNU hash table's bucket count is malformed")
    buckets_at = vaddr + 16 + 8 * bloom_size
    boff = mem.file_range(buckets_at, 4 * nbuckets, "the GNU hash buckets")
    buckets = struct.unpack_from(f"<{nbuckets}I", blob, boff)
    chains_at = buckets_at + 4 * nbuckets
    count = symoffset
    for b in buckets:
        if b == 0:
            continue
        if b < symoffset:
            raise _Bad("a GNU hash bucket names a symbol before the hashed ones")
        i = b
        while True:
            coff = mem.file_range(chains_at + 4 * (i - symoffset), 4, "a GNU hash chain")
            i += 1
            if struct.unpack_from("<I", blob, coff)[0] & 1:
                break
            if i - b > (1 << 20):
                raise _Bad("a GNU hash chain does not end")
        count = max(count, i)
    return count


def _relocations(
    blob: bytes, mem: _Memory, vaddr: int, size: int
) -> Iterator[tuple[int, int, int, int]]:
    if size % 24:
        raise _Bad("a relocation table size is not a multiple of 24")
    off = mem.file_range(vaddr, size, "a relocation table")
    for k in range(size // 24):
        r_offset, r_info, addend = struct.unpack_from("<QQq", blob, off + 24 * k)
        yield r_offset, r_info & 0xFFFFFFFF, r_info >> 32, addend


def _check_relocations(
    blob: bytes, mem: _Memory, vaddr: int, size: int, nsyms: int, values: list[int]
) -> None:
    for r_offset, r_type, sym, addend in _relocations(blob, mem, vaddr, size):
        if r_type not in _R_X86_64_ALLOWED:
            raise _Bad(f"relocation type {r_type} is not one a position-independent library uses")
        if r_type == _R_NONE:
            continue
        mem.writable(r_offset, "a relocation target")
        if sym >= nsyms:
            raise _Bad(f"a relocation names symbol {sym} of {nsyms}")
        if r_type == _R_RELATIVE:
            mem.mapped(addend, 0, "a relative relocation's target")
        elif r_type == _R_IRELATIVE and not mem.is_code(addend):
            raise _Bad("an indirect relocation's resolver is not in code")


def _relr_slots(blob: bytes, mem: _Memory, tags: dict[int, int]) -> Iterator[tuple[int, int]]:
    """``(slot, target)`` of every packed relative relocation (DT_RELR: an address word,
    then bitmap words each covering the next 63 slots); each slot must be writable and
    file-backed, as its target is read from the file."""
    if _DT_RELR not in tags:
        return
    size = tags.get(_DT_RELRSZ, 0)
    if size % 8:
        raise _Bad("the packed relative relocation table size is not a multiple of 8")
    off = mem.file_range(tags[_DT_RELR], size, "the packed relative relocation table")
    where = None
    for k in range(size // 8):
        (entry,) = struct.unpack_from("<Q", blob, off + 8 * k)
        if entry & 1 == 0:
            slots = [entry]
            where = entry + 8
        elif where is None:
            raise _Bad("a packed relative relocation bitmap comes before any address")
        else:
            slots = [where + 8 * i for i in range(63) if entry >> (i + 1) & 1]
            where += 63 * 8
        for slot in slots:
            mem.writable(slot, "a packed relative relocation")
            (target,) = struct.unpack_from(
                "<Q", blob, mem.file_range(slot, 8, "a packed relative relocation")
            )
            yield slot, target


class _Targets(dict):
    """slot address -> the address the loader stores there (RELATIVE and local 64-bit
    relocations), plus ``writes``: every address any relocation writes 8 bytes at."""

    writes: list[int]


def _relocation_targets(
    blob: bytes, mem: _Memory, tags: dict[int, int], values: list[int]
) -> _Targets:
    out = _Targets(_relr_slots(blob, mem, tags))
    out.writes = list(out)
    for table, size_tag in ((_DT_RELA, _DT_RELASZ), (_DT_JMPREL, _DT_PLTRELSZ)):
        if table not in tags:
            continue
        for r_offset, r_type, sym, addend in _relocations(
            blob, mem, tags[table], tags.get(size_tag, 0)
        ):
            if r_type == _R_NONE:
                continue
            out.writes.append(r_offset)
            if r_type == _R_RELATIVE:
                out[r_offset] = addend
            elif r_type == _R_64 and sym < len(values) and values[sym] >= 0:
                out[r_offset] = values[sym] + addend
            else:
                out.pop(r_offset, None)  # a later write the slot's value cannot be known
    return out


def _check_versions(
    blob: bytes,
    mem: _Memory,
    tags: dict[int, int],
    nsyms: int,
    string: Callable[[int, str], str],
) -> None:
    if _DT_VERSYM in tags:
        mem.file_range(tags[_DT_VERSYM], 2 * nsyms, "the symbol version table")
    if _DT_VERNEED in tags:
        at = tags[_DT_VERNEED]
        for _ in range(min(tags.get(_DT_VERNEEDNUM, 0), _MAX_WALK)):
            off = mem.file_range(at, 16, "a version requirement")
            _v, cnt, file_name, aux, nxt = struct.unpack_from("<HHIII", blob, off)
            string(file_name, "a version requirement's file")
            a = at + aux
            for _k in range(cnt):
                aoff = mem.file_range(a, 16, "a version requirement entry")
                _h, _f, _o, name, anext = struct.unpack_from("<IHHII", blob, aoff)
                string(name, "a required version's name")
                a += anext
            if nxt == 0:
                break
            at += nxt
    if _DT_VERDEF in tags:
        at = tags[_DT_VERDEF]
        for _ in range(min(tags.get(_DT_VERDEFNUM, 0), _MAX_WALK)):
            off = mem.file_range(at, 20, "a version definition")
            _v, _f, _ndx, cnt, _h, aux, nxt = struct.unpack_from("<HHHHIII", blob, off)
            a = at + aux
            for _k in range(cnt):
                aoff = mem.file_range(a, 8, "a version definition entry")
                name, anext = struct.unpack_from("<II", blob, aoff)
                string(name, "a defined version's name")
                a += anext
            if nxt == 0:
                break
            at += nxt
