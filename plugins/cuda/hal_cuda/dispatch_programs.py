"""The replay forms of ``queue_dispatch`` calls, kept for the next identical dispatch.

hal_core turns each ``queue_dispatch`` into a one-command recording (ONE_SHOT and
UNRETAINED: the op itself retains what it uses) and asks the backend for its replay form.
Building a ``CudaProgram`` (its launch descriptor, parameter words and ctypes parameter
block) costs more than the launch it describes, and a loop of dispatches asks for the same
one each time. ``DispatchPrograms`` keeps the program of each (executable, function,
workgroup count and size, local memory, constants, buffers and ranges) and hands it out
again: a ``CudaProgram`` is safe to run from several threads (its lock serialises the
parameter writes and the launch, and ``cuLaunchKernel`` copies the parameters).

A cached program references its executable's function handle and holds its buffers
weakly (UNRETAINED). Keys hold object ids, so a hit is checked against the objects
themselves (weak references kept with the entry): an id reused by a new executable or
buffer after the old one was collected misses and replaces the entry. The latest answer
is also kept with the config and constants objects it was asked with, so a loop of one
dispatch (the same objects each call) is answered without building a key. The table is
bounded: past ``CAPACITY`` entries it is emptied (a workload cycling through more
distinct dispatches pays the build, as before).
"""

from __future__ import annotations

import weakref
from typing import Any

from hal_core import BufferRef
from hal_core.backend import CMD_DISPATCH

from .stream_ops import CudaProgram

CAPACITY = 256


class DispatchPrograms:
    """Programs of single dispatches by what they launch. ``get`` is thread-safe (dict
    reads and writes and the replacement of the one-entry memo are atomic; two threads
    building the same entry keep either); the ``hits`` and ``builds`` counters are
    diagnostics, not exact under concurrent use.

    An entry is (program, weak reference to its executable, ((weak reference to a buffer,
    offset, length), ...)): a hit is checked against the live objects through the weak
    references (one C call each). ``_last`` memoises the latest hit or build with the
    config and constants objects it was asked with: a loop dispatching the same thing
    passes the same config and constants objects each time, so the next call is answered
    by identity and value comparisons, without building or hashing a key."""

    __slots__ = ("_programs", "_last", "hits", "builds")

    def __init__(self) -> None:
        self._programs: dict[tuple, tuple[CudaProgram, Any, tuple]] = {}
        # (entry, config, constants, ordinal) of the latest answer, or None
        self._last: tuple[tuple[CudaProgram, Any, tuple], Any, Any, int] | None = None
        self.hits = 0
        self.builds = 0

    def get(self, command: tuple) -> CudaProgram:
        """The program of ``command`` (a ``CMD_DISPATCH`` recording command with direct
        references, as ``queue_dispatch`` makes), built on a miss."""
        _, executable, ordinal, config, constants, refs, _flags = command
        last = self._last
        if last is not None and last[1] is config and last[2] is constants:
            entry = last[0]
            spans = entry[2]
            if last[3] == ordinal and entry[1]() is executable and len(spans) == len(refs):
                index = 0
                for ref in refs:
                    span = spans[index]
                    if (
                        ref.__class__ is not BufferRef
                        or span[0]() is not ref.buffer
                        or span[1] != ref.offset
                        or span[2] != ref.length
                    ):
                        break
                    index += 1
                else:
                    self.hits += 1
                    return entry[0]
        if config.workgroup_count_ref is not None:
            # Indirect counts run on a worker and are rare: not worth a key.
            self.builds += 1
            return CudaProgram([command], True)
        # The config's fields rather than the config: tuples hash in C, the frozen
        # class's generated __hash__ in Python.
        key: tuple = (
            id(executable),
            ordinal,
            constants,
            config.workgroup_count,
            config.workgroup_size,
            config.dynamic_workgroup_local_memory,
        )
        for ref in refs:
            buffer = ref.buffer if ref.__class__ is BufferRef else None
            if buffer is None:  # a whole Buffer or a binding-table slot: not queue_dispatch's
                self.builds += 1
                return CudaProgram([command], True)
            key += (id(buffer), ref.offset, ref.length)
        found = self._programs.get(key)
        if found is not None and found[1]() is executable:
            for span, ref in zip(found[2], refs):
                if span[0]() is not ref.buffer:
                    break
            else:
                self.hits += 1
                self._last = (found, config, constants, ordinal)
                return found[0]
        program = CudaProgram([command], True)
        entry = (
            program,
            weakref.ref(executable),
            tuple((weakref.ref(ref.buffer), ref.offset, ref.length) for ref in refs),
        )
        programs = self._programs
        if len(programs) >= CAPACITY:
            programs.clear()
        programs[key] = entry
        self._last = (entry, config, constants, ordinal)
        self.builds += 1
        return program


def is_single_dispatch(commands: list) -> bool:
    """Whether ``commands`` is one direct dispatch (``queue_dispatch``'s recording)."""
    return len(commands) == 1 and commands[0][0] == CMD_DISPATCH
