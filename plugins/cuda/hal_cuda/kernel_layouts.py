"""Where a kernel-only program's binding words come from (``kernel_graphs``): per binding
word of its parameter block, the operand it is the address of (a distinct direct buffer,
or a binding-table slot) and its offset from the operand's base, so that an execution
writes every binding word of the program in one numpy pass.

``binding_layout`` builds a ``OneTemplateLayout`` for the usual program (every dispatch
the same function, grid, config and constants, over a few reference tuples: its words
are an (n, size) array whose first columns come from one row per tuple) and a general
``Layout`` otherwise (word indices listed one by one).
"""

from __future__ import annotations

from itertools import repeat
from operator import is_, itemgetter
from typing import Any

import numpy as np

from hal_core import WHOLE_BUFFER, BufferRef
from hal_core.backend import buffer_storage

from .stream_ops import CudaProgram, resolve

_GROUPS = 64
"""Distinct reference tuples up to which a program's binding layout is built per tuple
(vectorised) rather than per dispatch."""

_FEW = 8
"""Distinct reference tuples up to which ``binding_layout`` groups dispatches for a
``OneTemplateLayout`` (one pass over the dispatches per tuple)."""

_PERIODS = 4
"""Longest cycle of reference tuples ``binding_layout`` looks for by comparing slices."""

_REFS = itemgetter(5)  # a dispatch command's references
_COUNT = itemgetter(5)  # a launch template's binding count
_SIZE = itemgetter(11)  # a launch template's number of parameter words


def binding_layout(program: CudaProgram) -> Layout:
    """The layout of a kernel-only program's binding words (``OneTemplateLayout`` when
    its dispatches share one template and pass at most ``_FEW`` distinct reference
    tuples, by identity, that bind equally many words)."""
    templates = program.templates
    n = len(templates)
    one = templates[0]
    if not one[11] or templates.count(one) != n:
        return Layout(program)
    refs = list(map(_REFS, program.commands))
    first = refs[0]
    # Dispatches cycling through ``period`` tuples (one tuple, a ping-pong pair, ...):
    # found by comparing slices of the list in C (by identity first; the comparison of
    # a slice stops at its first different tuple).
    for period in range(1, _PERIODS + 1):
        if all([refs[k::period] == [refs[k]] * len(range(k, n, period)) for k in range(period)]):
            if period == 1:
                return _one_template_layout(program, one, [first], None)
            inverse = np.arange(n, dtype=np.intp) % period
            return _one_template_layout(program, one, refs[:period], inverse)
        if period >= n:
            break
    # Otherwise grouped by tuple identity: one pass of ``is`` per distinct tuple (``id``
    # would make an int per dispatch; the commands hold the tuples while this runs).
    rows = [first]
    same = np.fromiter(map(is_, refs, repeat(first)), np.bool_, n)
    assigned = same
    inverse = np.zeros(n, np.intp)
    while not assigned.all():
        if len(rows) == _FEW:
            return Layout(program)
        row = refs[int(np.argmin(assigned))]
        same = np.fromiter(map(is_, refs, repeat(row)), np.bool_, n)
        inverse[same] = len(rows)
        rows.append(row)
        assigned = assigned | same
    return _one_template_layout(program, one, rows, inverse)


def _one_template_layout(program: CudaProgram, one: tuple, rows: list, inverse: Any) -> Layout:
    """A ``OneTemplateLayout`` when every row binds as many words as the first, else the
    general ``Layout``."""
    width = len(rows[0][: one[5]])
    if any([len(row[: one[5]]) != width for row in rows]):
        return Layout(program)
    return OneTemplateLayout(program, one, rows, inverse)


class Layout:
    """Where a kernel-only program's binding words come from: per binding word its index
    in the parameter block, its operand (a distinct direct buffer, or a binding-table
    slot) and its offset from the operand's base; per word the step it belongs to."""

    __slots__ = (
        "buffers",
        "slots",
        "limits",
        "_limits",
        "index",
        "operand",
        "extra",
        "word_step",
    )

    def __init__(self, program: CudaProgram) -> None:
        operands: dict[int, int] = {}  # id(buffer) or -1 - slot -> operand index
        self.buffers: list[Any] = []
        self.slots: list[int] = []
        self._limits: list[list[int]] = []
        index = [np.zeros(0, np.int64)]
        operand = [np.zeros(0, np.int64)]
        extra = [np.zeros(0, np.uint64)]
        templates = program.templates
        n = len(templates)
        starts = np.fromiter(program.firsts, np.int64, n)
        # Dispatches grouped by reference tuple: one program usually passes the same
        # tuple objects again (grouped by identity here, in C: the commands hold the
        # tuples while this runs); otherwise by value, one dispatch at a time.
        refs_ids = np.fromiter(map(id, map(_REFS, program.commands)), np.int64, n)
        unique, where, inverse = np.unique(refs_ids, return_index=True, return_inverse=True)
        counts = np.fromiter(map(_COUNT, templates), np.int64, n)
        grouped = len(unique) <= _GROUPS
        if grouped:
            members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
            grouped = all(not (counts[m] != counts[m[0]]).any() for m in members)
        if grouped:
            commands = program.commands
            for position, member in zip(where.tolist(), members):
                count = int(counts[position])
                ops, offsets = self._operands(commands[position][5][:count], operands)
                self._append(index, operand, extra, starts[member], ops, offsets)
        else:
            self._by_value(program, operands, index, operand, extra)
        self.limits = [(a, b) for a, b in self._limits]
        count = len(self.buffers)
        # Slots' operands (numbered -1, -2, ... while building) follow the buffers'.
        numbers = np.concatenate(operand)
        self.operand = np.where(numbers < 0, count - 1 - numbers, numbers)
        self.index = np.concatenate(index)
        self.extra = np.concatenate(extra)
        sizes = np.fromiter(map(_SIZE, templates), np.int64, n)
        self.word_step = np.repeat(np.arange(n), sizes)

    @staticmethod
    def _append(
        index: list, operand: list, extra: list, starts: Any, ops: list[int], offsets: list[int]
    ) -> None:
        """Add the words of dispatches whose parameter words start at ``starts`` and
        whose references are ``ops`` / ``offsets``: as many words as references (an
        UNVALIDATED recording may pass fewer than the function binds; the rest stay
        zero, as stream launches leave them)."""
        if not ops:
            return
        index.append((starts[:, None] + np.arange(len(ops))).ravel())
        operand.append(np.tile(np.array(ops, np.int64), len(starts)))
        extra.append(np.tile(np.array(offsets, np.uint64), len(starts)))

    def _by_value(
        self,
        program: CudaProgram,
        operands: dict[int, int],
        index: list,
        operand: list,
        extra: list,
    ) -> None:
        """Group dispatches by (binding count, reference tuple) value (a tuple of
        buffers compares by identity, a BufferRef by value), one dispatch at a time."""
        groups: dict[Any, tuple[list[int], list[int], list[int]]] = {}
        for cmd, template, first in zip(program.commands, program.templates, program.firsts):
            count = template[5]
            key: Any = (count, cmd[5])
            try:
                group = groups.get(key)
            except TypeError:  # an unhashable reference: a group of its own
                key = id(cmd)
                group = None
            if group is None:
                group = groups[key] = (*self._operands(cmd[5][:count], operands), [])
            group[2].append(first)
        for ops, offsets, firsts in groups.values():
            self._append(index, operand, extra, np.array(firsts, np.int64), ops, offsets)

    def _operands(self, refs: tuple, operands: dict[int, int]) -> tuple[list[int], list[int]]:
        """Per reference: its operand and its offset from the operand's base (new
        operands numbered in ``operands``)."""
        out: list[int] = []
        offsets: list[int] = []
        for ref in refs:
            if ref.__class__ is BufferRef and ref.buffer is None:
                key = -1 - ref.slot
                o = operands.get(key)
                if o is None:
                    o = operands[key] = -1 - len(self.slots)
                    self.slots.append(ref.slot)
                    self._limits.append([0, 0])
                limit = self._limits[-1 - o]
                limit[0] = max(limit[0], ref.offset)
                if ref.length != WHOLE_BUFFER:
                    limit[1] = max(limit[1], ref.offset + ref.length)
                out.append(o)
                offsets.append(ref.offset)
                continue
            if ref.__class__ is BufferRef:
                buffer, offset = ref.buffer, ref.offset
            else:
                buffer, offset = ref, 0
            o = operands.get(id(buffer))
            if o is None:
                o = operands[id(buffer)] = len(self.buffers)
                self.buffers.append(buffer)
            out.append(o)
            offsets.append(offset)
        return out, offsets

    def steps_of(self, changed: Any) -> list[int]:
        """The dispatches (in order, once each) holding the parameter words at indices
        ``changed``."""
        return np.unique(self.word_step[changed]).tolist()

    def write(self, program: CudaProgram, table: tuple) -> None:
        """Write every binding word of the program for ``table``. Raises as the stream
        replay would for a reference that does not resolve. The caller holds the
        program's lock."""
        bases = [buffer_storage(buffer).address + buffer.byte_offset for buffer in self.buffers]
        for slot, (max_offset, max_end) in zip(self.slots, self.limits):
            base = _slot_base(table, slot, max_offset, max_end)
            if base is None:
                self._write_one_by_one(program, table)
                return
            bases.append(base)
        if self.index.size:
            words = program.parameters.words
            words[self.index] = np.array(bases, np.uint64)[self.operand] + self.extra

    def _write_one_by_one(self, program: CudaProgram, table: tuple) -> None:
        """Resolve each reference (which raises for the one that does not fit)."""
        values = program.parameters.values
        for cmd, template, first in zip(program.commands, program.templates, program.firsts):
            i = first
            for ref in cmd[5][: template[5]]:
                values[i] = resolve(ref, table)[0]
                i += 1


class OneTemplateLayout(Layout):
    """The layout of a program whose ``n`` dispatches share one template of ``size``
    parameter words, the first ``width`` of them bindings: the words are an (n, size)
    array whose first ``width`` columns of dispatch k are row ``inverse[k]`` of a table
    of operands and offsets, one row per reference tuple (the binding words the tuple
    gives, fewer than the function binds when an UNVALIDATED recording passed fewer)."""

    __slots__ = ("table", "offsets", "inverse", "size", "width")

    def __init__(self, program: CudaProgram, template: tuple, rows: list, inverse: Any) -> None:
        """``rows``: the reference tuples; ``inverse``: per dispatch its row (None: all
        the first)."""
        operands: dict[int, int] = {}
        self.buffers: list[Any] = []
        self.slots: list[int] = []
        self._limits: list[list[int]] = []
        count = template[5]
        ops: list[list[int]] = []
        offsets: list[list[int]] = []
        for row in rows:
            o, f = self._operands(row[:count], operands)
            ops.append(o)
            offsets.append(f)
        self.limits = [(a, b) for a, b in self._limits]
        self.size = template[11]
        self.width = len(ops[0])
        buffers = len(self.buffers)
        numbers = np.array(ops, np.int64).reshape(len(rows), self.width)
        # Slots' operands (numbered -1, -2, ... while building) follow the buffers'.
        self.table = np.where(numbers < 0, buffers - 1 - numbers, numbers)
        self.offsets = np.array(offsets, np.uint64).reshape(len(rows), self.width)
        self.inverse = inverse

    def steps_of(self, changed: Any) -> list[int]:
        return np.unique(changed // self.size).tolist()

    def write(self, program: CudaProgram, table: tuple) -> None:
        """Write every binding word of the program for ``table``. Raises as the stream
        replay would for a reference that does not resolve. The caller holds the
        program's lock."""
        bases = [buffer_storage(buffer).address + buffer.byte_offset for buffer in self.buffers]
        for slot, (max_offset, max_end) in zip(self.slots, self.limits):
            base = _slot_base(table, slot, max_offset, max_end)
            if base is None:
                self._write_one_by_one(program, table)
                return
            bases.append(base)
        width = self.width
        if width:
            rows = np.array(bases, np.uint64)[self.table] + self.offsets
            size = self.size
            n = len(program.templates)
            words = program.parameters.words[: n * size].reshape(n, size)
            words[:, :width] = rows[0] if self.inverse is None else rows[self.inverse]


def _slot_base(table: tuple, slot: int, max_offset: int, max_end: int) -> int | None:
    """The address a slot's references count from, or None when the table does not fill
    the slot or its binding does not hold every reference (resolution then reports it)."""
    if slot >= len(table):
        return None
    binding = table[slot]
    if binding is None or binding.buffer is None:
        return None
    buffer = binding.buffer
    size = buffer.byte_length
    offset = binding.offset
    bound = size - offset if binding.length == WHOLE_BUFFER else binding.length
    if bound < 0 or offset + bound > size or max_offset > bound or max_end > bound:
        return None
    return buffer_storage(buffer).address + buffer.byte_offset + offset
