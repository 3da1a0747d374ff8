"""Reflection of PTX modules under the HAL kernel ABI, without a compiler or a GPU.

The HAL kernel ABI for CUDA kernels: an entry point's parameters are its bindings, in
order, as 64-bit device pointers (PTX ``.u64``/``.s64``/``.b64``), then its 32-bit
constants, in order (``.u32``/``.s32``/``.b32``/``.f32``); nothing else. So the PTX
``.entry`` header alone gives a kernel's binding and constant counts. A ``.reqntid``
directive fixes the kernel's workgroup (block) size; without one the size is chosen per
dispatch (``workgroup_size`` is ``None``).

``reflect_ptx(data)`` parses the module directives (``.version``, ``.target``,
``.address_size``) and every ``.entry`` header; it reads nothing of the kernel bodies. A
module that is not PTX text, or an entry whose parameters break the ABI, raises
``InvalidArgumentError`` naming the line.
"""

from __future__ import annotations

import re

import attrs

from hal_core import InvalidArgumentError

__all__ = ["PtxEntry", "PtxModule", "reflect_ptx"]

_BINDING_TYPES = frozenset({".u64", ".s64", ".b64"})
_CONSTANT_TYPES = frozenset({".u32", ".s32", ".b32", ".f32"})
# An unterminated block comment runs to the end (one scan, never quadratic).
_COMMENTS = re.compile(rb"//[^\n]*|/\*.*?(?:\*/|\Z)", re.S)
_IDENT = r"[A-Za-z_$%][\w$]*"
_ENTRY = re.compile(rf"\.entry\s+({_IDENT})")
_DIRECTIVE = re.compile(r"^[ \t]*\.(version|target|address_size)[ \t]+([^\n]*)", re.M)
_REQNTID = re.compile(r"\.reqntid\s+(\d+)\s*(?:,\s*(\d+)\s*)?(?:,\s*(\d+)\s*)?")


@attrs.frozen
class PtxEntry:
    """One ``.entry`` of a PTX module as the HAL sees it."""

    name: str
    binding_count: int
    constant_count: int
    #: The ``.reqntid`` block size, or ``None`` when the dispatch chooses it.
    workgroup_size: tuple[int, int, int] | None
    #: The PTX type of each parameter, in order (``.u64``, ``.f32``, ...).
    param_types: tuple[str, ...]


@attrs.frozen
class PtxModule:
    """A PTX module's header directives and entries, in file order."""

    version: str
    target: str
    address_size: int
    entries: tuple[PtxEntry, ...]

    def entry(self, name: str) -> PtxEntry:
        """The entry ``name``; ``KeyError`` when the module has none of that name."""
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)


def _strip_comments(data: bytes) -> str:
    """The module text with comments blanked (newlines kept, so line numbers hold)."""
    if b"\x00" in data.rstrip(b"\x00"):
        raise InvalidArgumentError("PTX module: not PTX text (NUL byte inside the text)")
    text = _COMMENTS.sub(lambda m: b"\n" * m.group(0).count(b"\n"), data.rstrip(b"\x00"))
    try:
        return text.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"PTX module: not PTX text (non-ASCII byte at offset {exc.start})"
        ) from None


def _param_type(decl: str, entry: str, line: int) -> str:
    """The PTX type of one ``.param`` declaration, checked against the HAL ABI."""
    tokens = decl.split()
    if not tokens or tokens[0] != ".param":
        raise InvalidArgumentError(
            f"PTX entry {entry!r} (line {line}): parameter {decl.strip()!r} is not a .param"
        )
    types = [t for t in tokens[1:] if t in _BINDING_TYPES or t in _CONSTANT_TYPES]
    if len(types) != 1 or "[" in decl:
        raise InvalidArgumentError(
            f"PTX entry {entry!r} (line {line}): parameter {decl.strip()!r} is neither a "
            "64-bit binding pointer nor a 32-bit constant, which is all the HAL kernel ABI "
            "passes"
        )
    return types[0]


def _entry(name: str, line: int, span: str) -> PtxEntry:
    """The entry ``name`` (its ``.entry`` on ``line``) from ``span``, the text after its name
    up to the next entry, so each entry reads only its own part of the module."""
    rest = span.lstrip()
    params = ""
    if rest.startswith("("):
        close = rest.find(")")
        if close < 0:
            raise InvalidArgumentError(
                f"PTX entry {name!r} (line {line}): the parameter list has no closing ')'"
            )
        params, rest = rest[1:close], rest[close + 1 :]
    decls = params.split(",") if params.strip() else []
    types = tuple(_param_type(d, name, line) for d in decls)
    bindings = 0
    while bindings < len(types) and types[bindings] in _BINDING_TYPES:
        bindings += 1
    if any(t in _BINDING_TYPES for t in types[bindings:]):
        raise InvalidArgumentError(
            f"PTX entry {name!r} (line {line}): a 64-bit parameter follows a 32-bit one; the "
            "HAL kernel ABI passes every binding before the constants"
        )
    # The performance directives sit between the parameter list and the body's brace.
    body = rest.find("{")
    header = rest if body < 0 else rest[:body]
    size = None
    req = _REQNTID.search(header)
    if req:
        size = (int(req.group(1)), int(req.group(2) or 1), int(req.group(3) or 1))
        if min(size) < 1:
            raise InvalidArgumentError(
                f"PTX entry {name!r} (line {line}): .reqntid {size} has a zero dimension"
            )
    return PtxEntry(name, bindings, len(types) - bindings, size, types)


def reflect_ptx(data: bytes) -> PtxModule:
    """Parse a PTX module's directives and entry headers (see the module docstring).

    Raises ``InvalidArgumentError`` when ``data`` is not PTX text, lacks ``.version`` or
    ``.target``, or has an entry whose parameters break the HAL kernel ABI."""
    text = _strip_comments(bytes(data))
    found: dict[str, str] = {}
    for m in _DIRECTIVE.finditer(text):
        found.setdefault(m.group(1), m.group(2).strip())
    for required in ("version", "target"):
        if required not in found:
            raise InvalidArgumentError(f"PTX module: no .{required} directive (is this PTX?)")
    try:
        address_size = int(found.get("address_size", "64"))
    except ValueError:
        raise InvalidArgumentError(
            f"PTX module: bad .address_size {found['address_size']!r}"
        ) from None
    marks = list(_ENTRY.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)]
    entries: list[PtxEntry] = []
    line, counted = 1, 0
    for mark, end in zip(marks, ends):
        line += text.count("\n", counted, mark.start())
        counted = mark.start()
        entries.append(_entry(mark.group(1), line, text[mark.end() : end]))
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise InvalidArgumentError(f"PTX module: entry name {entry.name!r} repeats")
        seen.add(entry.name)
    return PtxModule(found["version"], found["target"], address_size, tuple(entries))
