"""Targeted corruptions of real libraries, each of which once crashed or aborted the
process inside the system loader (found by fuzzing); each must now be INVALID_ARGUMENT
before the loader sees the bytes. Loads run in this process."""

from __future__ import annotations

import platform
import struct
from pathlib import Path
from typing import Callable

import pytest
from hal_local_cpu import iree_elf
from hal_local_cpu.executable_native import load_native_executable, replay_available
from hal_local_cpu.kernels import native_library

import hal_core as hal

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 layouts"
)
IREE_LIB = Path(__file__).resolve().parent / "iree_executables" / "mlp2.embedded.so"

DT_RELA, DT_RELAENT, DT_FINI_ARRAY, DT_RELACOUNT = 7, 9, 26, 0x6FFFFFF9


class Elf:
    """Offsets of the structures a mutation edits."""

    def __init__(self, blob: bytes) -> None:
        self.blob = bytearray(blob)
        self.phoff = struct.unpack_from("<Q", blob, 32)[0]
        phnum = struct.unpack_from("<H", blob, 56)[0]
        self.phdrs = []
        for i in range(phnum):
            at = self.phoff + 56 * i
            p_type, flags, off, vaddr = struct.unpack_from("<IIQQ", blob, at)
            self.phdrs.append((at, p_type, flags, off, vaddr))
        dyn = next(p for p in self.phdrs if p[1] == 2)
        self.dynamic_off, self.dynamic_vaddr = dyn[3], dyn[4]
        self.dyn: dict[int, tuple[int, int]] = {}  # tag -> (file offset of entry, value)
        at = self.dynamic_off
        while True:
            tag, val = struct.unpack_from("<qQ", blob, at)
            if tag == 0:
                break
            self.dyn.setdefault(tag, (at, val))
            at += 16

    def file_offset(self, vaddr: int) -> int:
        for _at, p_type, _f, off, va in self.phdrs:
            filesz = struct.unpack_from("<Q", self.blob, _at + 32)[0]
            if p_type == 1 and va <= vaddr < va + filesz:
                return off + vaddr - va
        raise AssertionError(f"{vaddr:#x} is not file-backed")

    def relas(self) -> list[tuple[int, int, int, int]]:
        """(file offset of entry, r_offset, type, addend) of DT_RELA."""
        start = self.file_offset(self.dyn[DT_RELA][1])
        size = self.dyn[8][1]
        out = []
        for k in range(size // 24):
            at = start + 24 * k
            r_offset, info, addend = struct.unpack_from("<QQq", self.blob, at)
            out.append((at, r_offset, info & 0xFFFFFFFF, addend))
        return out

    def put(self, fmt: str, at: int, *values: int) -> bytes:
        struct.pack_into(fmt, self.blob, at, *values)
        return bytes(self.blob)


def _native_bytes() -> bytes:
    if not replay_available():
        pytest.skip("no C compiler (cc)")
    return Path(native_library("cts_kernels")).read_bytes()


def relacount_too_large(e: Elf) -> bytes:
    at, _val = e.dyn[DT_RELACOUNT]
    return e.put("<Q", at + 8, len(e.relas()) + 5)


def relaent_missing(e: Elf) -> bytes:
    at, _val = e.dyn[DT_RELAENT]
    return e.put("<q", at, 0x7B000000000009)  # an unknown tag: RELAENT is gone


def dynamic_address_moved(e: Elf) -> bytes:
    at = next(p[0] for p in e.phdrs if p[1] == 2)
    return e.put("<Q", at + 16, e.dynamic_vaddr - 0x2F)


def first_load_unreadable(e: Elf) -> bytes:
    at, _t, flags, _o, _v = next(p for p in e.phdrs if p[1] == 1)
    return e.put("<I", at + 4, flags & ~4)


def relocation_into_dynamic(e: Elf) -> bytes:
    at, _r, _t, _a = e.relas()[-1]
    return e.put("<Q", at, e.dynamic_vaddr + 0x60)


def relocation_across_fini_slot(e: Elf) -> bytes:
    fini = e.dyn[DT_FINI_ARRAY][1]
    # A relocation applied after the slot's own, so its bytes land last.
    at, _r, _t, _a = next(r for r in reversed(e.relas()) if r[1] != fini and r[2] == 8)
    return e.put("<Q", at, fini + 5)


def fini_target_inside_a_function(e: Elf) -> bytes:
    fini = e.dyn[DT_FINI_ARRAY][1]
    at, _r, _t, addend = next(r for r in e.relas() if r[1] == fini)
    return e.put("<q", at + 16, addend + 0xE)


def query_symbol_shifted(e: Elf) -> bytes:
    symtab = e.file_offset(e.dyn[6][1])
    strtab = e.file_offset(e.dyn[5][1])
    k = 1
    while True:
        at = symtab + 24 * k
        name = struct.unpack_from("<I", e.blob, at)[0]
        end = e.blob.index(0, strtab + name)
        if bytes(e.blob[strtab + name : end]).endswith(b"_library_query"):
            value = struct.unpack_from("<Q", e.blob, at + 8)[0]
            return e.put("<Q", at + 8, value - 2)
        k += 1


def query_symbol_made_indirect(e: Elf) -> bytes:
    """The query symbol retyped STT_GNU_IFUNC: the loader would call it as a resolver."""
    symtab = e.file_offset(e.dyn[6][1])
    strtab = e.file_offset(e.dyn[5][1])
    k = 1
    while True:
        at = symtab + 24 * k
        name = struct.unpack_from("<I", e.blob, at)[0]
        end = e.blob.index(0, strtab + name)
        if bytes(e.blob[strtab + name : end]).endswith(b"_library_query"):
            info = e.blob[at + 4]
            return e.put("<B", at + 4, (info & 0xF0) | 10)
        k += 1


def undefined_symbol_made_hidden(e: Elf) -> bytes:
    """A weak undefined symbol (``__gmon_start__``) made hidden: the loader binds it to
    the library's base, and the library's _init calls it."""
    symtab = e.file_offset(e.dyn[6][1])
    k = 1
    while True:
        at = symtab + 24 * k
        if struct.unpack_from("<H", e.blob, at + 6)[0] == 0:  # undefined
            return e.put("<B", at + 5, 2)
        k += 1


IREE_CASES: list[Callable[[Elf], bytes]] = [
    relacount_too_large,
    relaent_missing,
    dynamic_address_moved,
    first_load_unreadable,
    relocation_into_dynamic,
    query_symbol_shifted,
    query_symbol_made_indirect,
]
NATIVE_CASES: list[Callable[[Elf], bytes]] = [
    relaent_missing,
    dynamic_address_moved,
    first_load_unreadable,
    relocation_into_dynamic,
    relocation_across_fini_slot,
    fini_target_inside_a_function,
    query_symbol_shifted,
    query_symbol_made_indirect,
    undefined_symbol_made_hidden,
]


@pytest.mark.parametrize("mutate", IREE_CASES, ids=lambda f: f.__name__)
def test_corrupt_iree_library(mutate):
    blob = mutate(Elf(IREE_LIB.read_bytes()))
    with pytest.raises(hal.InvalidArgumentError):
        iree_elf.load_embedded_elf(blob)


@pytest.mark.parametrize("mutate", NATIVE_CASES, ids=lambda f: f.__name__)
def test_corrupt_native_library(mutate):
    blob = mutate(Elf(_native_bytes()))
    with pytest.raises(hal.InvalidArgumentError):
        load_native_executable(blob)


def test_unmutated_libraries_load():
    assert iree_elf.load_embedded_elf(IREE_LIB.read_bytes()).functions
    assert load_native_executable(_native_bytes()).functions
