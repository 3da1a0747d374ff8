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
themselves: an id reused by a new executable or buffer after the old one was collected
misses and replaces the entry. The table is bounded: past ``CAPACITY`` entries it is
emptied (a workload cycling through more distinct dispatches pays the build, as before).
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
    reads and writes are atomic; two threads building the same entry keep either); the
    ``hits`` and ``builds`` counters are diagnostics, not exact under concurrent use."""

    __slots__ = ("_programs", "hits", "builds")

    def __init__(self) -> None:
        # key -> (program, weak reference to its executable)
        self._programs: dict[tuple, tuple[CudaProgram, Any]] = {}
        self.hits = 0
        self.builds = 0

    def get(self, command: tuple) -> CudaProgram:
        """The program of ``command`` (a ``CMD_DISPATCH`` recording command with direct
        references, as ``queue_dispatch`` makes), built on a miss."""
        _, executable, ordinal, config, constants, refs, _flags = command
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
        entry = self._programs.get(key)
        if entry is not None and entry[1]() is executable:
            program = entry[0]
            launch = program.steps[0][1]
            for held, ref in zip(launch.refs, refs):
                if held.peek() is not ref.buffer:
                    break
            else:
                self.hits += 1
                return program
        program = CudaProgram([command], True)
        programs = self._programs
        if len(programs) >= CAPACITY:
            programs.clear()
        programs[key] = (program, weakref.ref(executable))
        self.builds += 1
        return program


def is_single_dispatch(commands: list) -> bool:
    """Whether ``commands`` is one direct dispatch (``queue_dispatch``'s recording)."""
    return len(commands) == 1 and commands[0][0] == CMD_DISPATCH
