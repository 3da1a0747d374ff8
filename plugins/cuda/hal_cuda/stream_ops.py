"""Queue operations and command-buffer programs as work on a CUDA stream.

Each ``enqueue_*`` puts one validated ``QueueOp``'s work on a stream and returns without
waiting for it; the device records an event after it and completes the op when the
event is reached (``completion.py``). Buffers are addressed as ``storage.address +
byte_offset + offset``: device memory by its device pointer, pinned or registered host
memory by its device alias, so one set of calls (``cuMemcpyAsync`` under unified
addressing, ``cuMemsetD*Async``) serves every memory type.

A command buffer's program (``CudaProgram``, built once at ``end()``) replays as stream
launches in recording order: commands on one stream run in order, so barriers need no
work there (each step's stage, counted in barriers, is kept for the graph form,
``graphs.py``, where it gives the dependencies). Dispatches whose workgroup count is
read from a buffer need the count on the host before the launch: such programs run on
the queue's worker thread, which synchronises the stream before reading the count
(``needs_host_sync``).
"""

from __future__ import annotations

import array
import ctypes
import threading
import weakref
from itertools import accumulate, chain, compress
from operator import itemgetter
from typing import Any

import numpy as np

from hal_core import BufferRef, FailedPreconditionError
from hal_core.backend import (
    CMD_BARRIER,
    CMD_COPY,
    CMD_DEBUG_BEGIN,
    CMD_DEBUG_END,
    CMD_DISPATCH,
    CMD_FILL,
    CMD_UPDATE,
    QueueOp,
    buffer_storage,
    resolve_binding,
)

from .cuda_api import HotCalls, check, cuda_error
from .executable import CudaExecutable, ParameterBlock, check_launch, constant_words

STEP_FILL = 0
STEP_UPDATE = 1
STEP_COPY = 2
STEP_DISPATCH = 3


def address_of(buffer: Any, offset: int) -> int:
    """The device address of byte ``offset`` of ``buffer`` (FAILED_PRECONDITION when its
    memory is not committed)."""
    return buffer_storage(buffer).address + buffer.byte_offset + offset


class WeakBufferRef:
    """A direct reference of an UNRETAINED recording: it does not keep its buffer alive
    (the caller does, until every submission completes). A buffer dropped earlier is
    FAILED_PRECONDITION when the program runs."""

    __slots__ = ("_buffer", "offset", "length")

    def __init__(self, ref: Any) -> None:
        if ref.__class__ is BufferRef:
            buffer, self.offset, self.length = ref.buffer, ref.offset, ref.resolved_length()
        else:
            buffer, self.offset, self.length = ref, 0, ref.byte_length
        self._buffer = weakref.ref(buffer)

    def peek(self) -> Any:
        """The buffer, or None once it was collected."""
        return self._buffer()

    def get(self) -> Any:
        buffer = self._buffer()
        if buffer is None:
            raise FailedPreconditionError(
                "a buffer of an UNRETAINED command buffer was dropped before the command "
                "buffer ran; keep such buffers alive until every submission completes"
            )
        return buffer


def weaken(ref: Any) -> Any:
    """``ref`` without a strong reference to its buffer when it is direct."""
    if ref is None or (ref.__class__ is BufferRef and ref.buffer is None):
        return ref
    return WeakBufferRef(ref)


def resolve(ref: Any, table: tuple) -> tuple[int, int]:
    """``(address, length)`` of a command's buffer reference: a whole ``Buffer``, a direct
    ``BufferRef`` or an indirect one composed with its binding-table slot (hal_core's
    ``resolve_binding``: OUT_OF_RANGE for a range that does not fit, INVALID_ARGUMENT for
    an empty slot; recordings made UNVALIDATED reach here unchecked)."""
    if ref.__class__ is WeakBufferRef:
        return address_of(ref.get(), ref.offset), ref.length
    buffer, offset, length = resolve_binding(ref, table)
    return address_of(buffer, offset), length


def fill(api: Any, address: int, length: int, pattern: bytes, stream: Any) -> None:
    """Repeat a 1-, 2- or 4-byte ``pattern`` over ``length`` bytes at ``address``.

    ``cuMemsetD16/D32`` need an address aligned to the pattern; imported host memory may
    not be, and then each byte of the pattern is written as a column of a 2-D byte
    memset with the pattern's size as pitch (exact, and only on this rare path)."""
    if length == 0:
        return
    size = len(pattern)
    if size == 1:
        check(api.cuMemsetD8Async(address, pattern[0], length, stream), "cuMemsetD8Async")
    elif address % size == 0:
        value = int.from_bytes(pattern, "little")
        if size == 2:
            check(api.cuMemsetD16Async(address, value, length >> 1, stream), "cuMemsetD16Async")
        else:
            check(api.cuMemsetD32Async(address, value, length >> 2, stream), "cuMemsetD32Async")
    else:
        rows = length // size
        for k in range(size):
            check(
                api.cuMemsetD2D8Async(address + k, size, pattern[k], 1, rows, stream),
                "cuMemsetD2D8Async",
            )


def copy(api: Any, target: int, source: int, length: int, stream: Any) -> None:
    if length:
        check(api.cuMemcpyAsync(target, source, length, stream), "cuMemcpyAsync")


def update(api: Any, target: int, payload: np.ndarray, stream: Any) -> None:
    """Host bytes to ``target``. The payload is pageable host memory: CUDA copies it to
    its own staging memory before the call returns, so it need not outlive the call."""
    n = payload.nbytes
    if n:
        check(api.cuMemcpyHtoDAsync(target, payload.ctypes.data, n, stream), "cuMemcpyHtoDAsync")


def enqueue_fill(api: Any, op: QueueOp, stream: Any) -> None:
    fill(api, address_of(op.target, op.target_offset), op.length, op.pattern, stream)


def enqueue_update(api: Any, op: QueueOp, stream: Any) -> None:
    update(api, address_of(op.target, op.target_offset), op.payload, stream)


def enqueue_copy(api: Any, op: QueueOp, stream: Any) -> None:
    source = address_of(op.source, op.source_offset)
    copy(api, address_of(op.target, op.target_offset), source, op.length, stream)


def enqueue_program(api: Any, op: QueueOp, stream: Any) -> None:
    op.program.run(api, op.bindings or (), stream)


class Launch:
    """One recorded dispatch: the function, its grid (or where to read it), its constants
    and, once its program has built its ``ParameterBlock``, where its parameters are in it
    (``first``: index of its first word; ``params``: the address ``cuLaunchKernel`` reads)."""

    __slots__ = (
        "function",
        "grid",
        "block",
        "count_ref",
        "refs",
        "words",
        "first",
        "params",
        "shared",
        "executable_id",
        "ordinal",
        "direct",
        "function_ptr",
        "params_ptr",
    )

    def __init__(
        self, command: tuple, unretained: bool = False, template: Any = None, direct: Any = False
    ) -> None:
        """``template``: ``launch_template(command)``, shared by the launches of one
        program that dispatch the same function with the same config and constants;
        ``direct``: ``direct_refs`` of the command's references (computed when False)."""
        if template is None:
            template = launch_template(command)
        (
            self.function,
            self.function_ptr,
            self.block,
            self.grid,
            count_ref,
            count,
            self.words,
            self.shared,
            self.executable_id,
            self.ordinal,
            _part,
            _size,
        ) = template
        # hal_core admits more bindings and constants than the function takes; the kernel
        # receives exactly its own (the parameter layout is fixed by the ABI). A tuple
        # of exactly that many is kept as it is (launches of one program share it).
        refs = command[5]
        self.refs = refs[:count] if refs.__class__ is tuple else tuple(refs)[:count]
        if unretained:
            # Held weakly, so each launch resolves through the weak references.
            self.refs = tuple(weaken(ref) for ref in self.refs)
            self.count_ref = weaken(count_ref)
            self.direct = None
        else:
            self.count_ref = count_ref
            self.direct = direct_refs(self.refs) if direct is False else direct
        self.first = 0
        self.params = 0
        self.params_ptr: Any = None  # made at the first stream launch


# Fields of a launch template, read in C by map() over a program's templates.
_WORDS = itemgetter(6)
_PART = itemgetter(10)
_SIZE = itemgetter(11)


def direct_refs(refs: tuple) -> tuple | None:
    """Direct references resolve without the binding-table machinery at each launch:
    (buffer, offset within it) per reference, validated when recorded; None when any is
    indirect."""
    direct: list[tuple[Any, int]] = []
    for ref in refs:
        if ref.__class__ is not BufferRef:
            direct.append((ref, 0))
        elif ref.buffer is not None:
            direct.append((ref.buffer, ref.offset))
        else:
            return None
    return tuple(direct)


_part_lock = threading.Lock()
_PARTS: dict[tuple, int] = {}
"""Dispatch shapes (function, grid, block, shared memory) by small number, so a program's
shape is a tuple of ints (cheap to hash and compare)."""


def _part_id(part: tuple) -> int:
    number = _PARTS.get(part)
    if number is None:
        with _part_lock:
            number = _PARTS.setdefault(part, len(_PARTS))
    return number


def launch_template(command: tuple) -> tuple:
    """What a dispatch command's ``Launch`` takes from its function, config and constants
    (checked against CUDA's launch limits here, at the call): function handle and
    pointer, block, grid, workgroup-count reference, binding count, initial parameter
    words (a zero per binding, written at each launch, then the constants), shared
    memory, executable id, ordinal, the dispatch's shape number (-1 for an indirect or
    empty grid) and the number of parameter words."""
    _, executable, ordinal, config, constants, _refs, _flags = command
    backend: CudaExecutable = executable.backend
    function = backend.kernels[ordinal]
    size = tuple(config.workgroup_size)
    block = size if size != (0, 0, 0) else (function.block or (1, 1, 1))
    count_ref = config.workgroup_count_ref
    grid = tuple(config.workgroup_count)
    check_launch(block, (0, 0, 0) if count_ref else grid, function.name)
    words = (0,) * function.binding_count + constant_words(
        bytes(constants[: 4 * function.constant_count])
    )
    shared = function.shared_memory + int(config.dynamic_workgroup_local_memory)
    part = -1
    if count_ref is None and grid[0] and grid[1] and grid[2]:
        part = _part_id((function.key, grid, block, shared))
    return (
        function.handle,
        function.ptr,
        block,
        grid,
        count_ref,
        function.binding_count,
        words,
        shared,
        id(executable),
        ordinal,
        part,
        len(words),
    )


def _same(ref: Any) -> Any:
    return ref


_KIND = itemgetter(0)
_TEMPLATE_KEY = itemgetter(1, 2, 3, 4)  # executable, function, config, constants
_DISPATCH_MASK = bytes(int(k == CMD_DISPATCH) for k in range(256))
_BARRIER_MASK = bytes(int(k == CMD_BARRIER) for k in range(256))
_KERNEL_KINDS = bytes((CMD_BARRIER, CMD_DISPATCH, CMD_DEBUG_BEGIN, CMD_DEBUG_END))
_BARRIER_COMMAND = (CMD_BARRIER,)


def _one_template(commands: list) -> tuple[tuple, list[tuple], list[int]] | None:
    """For a recording of dispatches (barriers and debug labels aside) that all name one
    executable, function, config and constants, read without a Python loop: the launch
    template they share, the dispatch commands and each one's stage. None for any other
    recording (``CudaProgram`` reads it one command at a time). The template depends on
    those four's values only, so equal configs count as one (compared by identity first,
    in C)."""
    # A chain (dispatch, barrier, dispatch, barrier, ...) is recognised by slicing.
    barriers = commands[1::2]
    dispatches = commands[::2]
    n = len(dispatches)
    try:
        chain_kinds = n and barriers.count(_BARRIER_COMMAND) == len(barriers)
        chain_kinds = chain_kinds and list(map(_KIND, dispatches)).count(CMD_DISPATCH) == n
        kinds = b"" if chain_kinds else bytes(map(_KIND, commands))
    except (TypeError, ValueError):
        return None
    if chain_kinds:
        stages = list(range(n))
    else:
        if not kinds or kinds.translate(None, _KERNEL_KINDS):
            return None  # empty, or a fill, update or copy
        mask = kinds.translate(_DISPATCH_MASK)
        dispatches = list(compress(commands, mask))
        n = len(dispatches)
        if not n:
            return None
        if len(kinds) == n:
            stages = [0] * n
        else:
            # A dispatch's stage: the barriers before it (its own kind adds none).
            stages = list(compress(accumulate(kinds.translate(_BARRIER_MASK)), mask))
    keys = list(map(_TEMPLATE_KEY, dispatches))
    if keys.count(keys[0]) != n:
        return None
    return launch_template(dispatches[0]), dispatches, stages


class CudaProgram:
    """The replay form of a recording: steps in recording order, run as stream launches.

    ``run`` may be called from several threads at once (a command buffer submitted
    twice): the lock serialises writes to the shared kernel-parameter block."""

    __slots__ = (
        "_steps",
        "stages",
        "needs_host_sync",
        "graph",
        "parameters",
        "single",
        "kernel_shape",
        "templates",
        "commands",
        "firsts",
        "_pending",
        "_lock",
    )

    def __init__(self, commands: list, unretained: bool = False) -> None:
        """``unretained``: the recording is UNRETAINED, so the program holds its direct
        buffers weakly.

        A dispatch's ``Launch`` is made when the steps are first read (a program that
        only ever runs as a shared graph, ``kernel_graphs``, never makes them): until
        then a dispatch is its command, its ``launch_template`` and the index of its
        first parameter word (``commands``, ``templates``, ``firsts``, one per dispatch
        in order)."""
        uniform = None if unretained else _one_template(commands)
        if uniform is not None:
            shared, kernels, kernel_stages = uniform
            n = len(kernels)
            size = shared[11]
            self._finish(
                [None] * n,  # each dispatch's Launch, made by _launches
                kernel_stages,
                [shared] * n,
                kernels,
                list(range(0, size * n + 1, size)) if size else [0] * (n + 1),
                array.array("Q", shared[6]).tobytes() * n,
                (shared,),
                (shared[10],) * n,
            )
            return
        steps: list[Any] = []
        stages: list[int] = []
        stage = 0
        keep = weaken if unretained else _same
        # Launch templates by (executable, ordinal, config, constants): the commands
        # hold those objects for the duration of this loop, so their ids are stable.
        known: dict[tuple, tuple] = {}
        templates: list[tuple] = []
        dispatches: list[tuple] = []
        # The previous dispatch's (executable, ordinal, config, constants) objects: a
        # dispatch naming the very same ones takes its template without a look-up.
        last: tuple = (None, None, None, None)
        template: tuple = ()
        for cmd in commands:
            code = cmd[0]
            if code == CMD_BARRIER:
                stage += 1
                continue
            if code == CMD_DISPATCH:
                if (
                    cmd[3] is not last[2]
                    or cmd[4] is not last[3]
                    or cmd[1] is not last[0]
                    or cmd[2] != last[1]
                ):
                    constants = cmd[4]
                    if constants.__class__ is not bytes:
                        constants = bytes(constants)
                    key = (id(cmd[1]), cmd[2], id(cmd[3]), constants)
                    found = known.get(key)
                    if found is None:
                        found = known[key] = launch_template(cmd)
                    template = found
                    last = cmd[1:5]
                templates.append(template)
                dispatches.append(cmd)
                steps.append(None)  # its Launch, made by _launches
            elif code == CMD_FILL:
                steps.append((STEP_FILL, keep(cmd[1]), bytes(cmd[2])))
            elif code == CMD_UPDATE:  # (kind, target, data)
                payload = np.frombuffer(bytes(cmd[2]), np.uint8)
                steps.append((STEP_UPDATE, keep(cmd[1]), payload))
            elif code == CMD_COPY:  # (kind, target, source)
                steps.append((STEP_COPY, keep(cmd[1]), keep(cmd[2])))
            else:
                continue  # debug labels
            stages.append(stage)
        firsts = [0, *accumulate(map(_SIZE, templates))]
        words = list(chain.from_iterable(map(_WORDS, templates)))
        parts = tuple(map(_PART, templates))
        self._finish(
            steps, stages, templates, dispatches, firsts, words, known.values(), parts, unretained
        )

    def _finish(
        self,
        steps: list,
        stages: list[int],
        templates: list[tuple],
        dispatches: list[tuple],
        firsts: list[int],
        words: list[int] | bytes,
        distinct: Any,
        parts: tuple[int, ...],
        unretained: bool = False,
    ) -> None:
        """The rest of ``__init__`` once the recording was read: ``steps`` (None for each
        dispatch), per step its stage, per dispatch its template and command, the first
        parameter word of each dispatch and then their total, the initial parameter words
        (ints, or packed as uint64), the distinct templates and each dispatch's shape
        number."""
        self.stages = stages
        self.templates = templates
        self.commands = dispatches
        # One parameter block for every dispatch: each one's binding words (zero until
        # written) then its constants, back to back.
        self.parameters = ParameterBlock(words)
        del firsts[-1]
        self.firsts = firsts
        self.needs_host_sync = any([template[4] is not None for template in distinct])
        # For ``kernel_graphs``: the exact shape of a program of dispatches of static,
        # non-empty grids only (each one's function, grid, block and shared memory as a
        # number, and its stage), else None.
        self.kernel_shape: tuple | None = None
        if templates and len(templates) == len(steps) and not unretained:
            if -1 not in parts:
                self.kernel_shape = (parts, tuple(stages))
        self._steps = steps
        self._pending = bool(templates)
        if unretained or self.kernel_shape is None or len(steps) == 1:
            self._launches(unretained)
        if unretained:
            self.commands = []  # UNRETAINED: the program holds no buffer strongly
        # The launch of a program that is one dispatch of static size (queue_dispatch's):
        # ``run`` launches it without walking the steps (unless it runs as a graph).
        self.single: Launch | None = None
        if len(steps) == 1 and templates and not self.needs_host_sync:
            self.single = self._steps[0][1]
        # A graphs.ProgramGraphs or kernel_graphs.KernelGraphRunner when the program is
        # to run as a CUDA graph.
        self.graph: Any = None
        self._lock = threading.Lock()

    @property
    def steps(self) -> list[tuple]:
        """The steps in recording order: (STEP_DISPATCH, Launch), (STEP_FILL, target,
        pattern), (STEP_COPY, target, source) or (STEP_UPDATE, target, payload)."""
        if self._pending:
            return self._launches(False)
        return self._steps

    def _launches(self, unretained: bool) -> list[tuple]:
        """Make the dispatches' ``Launch`` es. Two threads may race here: each makes
        equivalent launches (the same words of the same block), and one list is kept."""
        steps = list(self._steps)
        address = self.parameters.address
        commands, templates, firsts = self.commands, self.templates, self.firsts
        directs: dict[tuple, tuple] = {}  # direct references by reference tuple
        j = 0
        for index, step in enumerate(steps):
            if step is not None:
                continue
            cmd = commands[j]
            template = templates[j]
            refs = cmd[5]
            direct: Any = False
            if not unretained and refs.__class__ is tuple:
                count = template[5]
                try:
                    hit = directs.get(refs)
                except TypeError:  # an unhashable reference: no sharing
                    hit = None
                if hit is not None and hit[0] == count:
                    direct = hit[1]
                else:
                    direct = direct_refs(refs[:count])
                    if hit is None:
                        try:
                            directs[refs] = (count, direct)
                        except TypeError:
                            pass
            launch = Launch(cmd, unretained, template, direct)
            first = launch.first = firsts[j]
            launch.params = address + 8 * first
            steps[index] = (STEP_DISPATCH, launch)
            j += 1
        self._steps = steps
        self._pending = False
        return steps

    def run(self, api: Any, table: tuple, stream: Any, timer: Any = None) -> None:
        """Put every step on ``stream``. Raises on the first step the driver refuses
        (the device still waits for what was already queued before it fails the op).
        A program with a graph is one graph launch (after updating the nodes whose
        buffers moved) unless this execution is one the graph cannot express. With a
        ``timer`` (profiling.DispatchTimer) each launch is bracketed by timing events and
        the program replays as stream launches."""
        graph = self.graph
        if timer is None:
            if graph is None:
                single = self.single
                if single is not None:
                    self._launch(api, single, table, stream)
                    return
            else:
                with self._lock:
                    if graph.run(self, api, table, stream):
                        return
        for index, step in enumerate(self.steps):
            kind = step[0]
            if kind == STEP_DISPATCH:
                if timer is None:
                    self._launch(api, step[1], table, stream)
                else:
                    start = timer.mark(api, stream)
                    self._launch(api, step[1], table, stream)
                    timer.entries.append((index, step[1], start, timer.mark(api, stream)))
            elif kind == STEP_FILL:
                address, length = resolve(step[1], table)
                fill(api, address, length, step[2], stream)
            elif kind == STEP_COPY:
                target, length = resolve(step[1], table)
                source, _ = resolve(step[2], table)
                copy(api, target, source, length, stream)
            else:
                target, _ = resolve(step[1], table)
                update(api, target, step[2], stream)

    def _launch(self, api: Any, launch: Launch, table: tuple, stream: Any) -> None:
        if launch.count_ref is not None:
            grid = _read_counts(api, launch.count_ref, table, stream)
            check_launch(launch.block, grid, "indirect dispatch")
        else:
            grid = launch.grid
        if grid[0] == 0 or grid[1] == 0 or grid[2] == 0:
            return  # an empty grid dispatches nothing (CUDA refuses a zero dimension)
        bx, by, bz = launch.block
        values = self.parameters.values
        with self._lock:
            i = launch.first
            direct = launch.direct
            if direct is not None:
                for buffer, offset in direct:
                    values[i] = buffer_storage(buffer).address + buffer.byte_offset + offset
                    i += 1
            else:
                for ref in launch.refs:
                    if ref.__class__ is WeakBufferRef:  # queue_dispatch's: resolved inline
                        held = ref._buffer()
                        if held is None:
                            held = ref.get()  # raises: the buffer was dropped
                        address = buffer_storage(held).address + held.byte_offset
                        values[i] = address + ref.offset
                    else:
                        values[i] = resolve(ref, table)[0]
                    i += 1
            if api.__class__ is HotCalls:
                raw = api.launch
                if raw is not None:
                    params_ptr = launch.params_ptr
                    if params_ptr is None:
                        params_ptr = launch.params_ptr = ctypes.c_void_p(launch.params)
                    err = raw(
                        launch.function_ptr,
                        grid[0],
                        grid[1],
                        grid[2],
                        bx,
                        by,
                        bz,
                        launch.shared,
                        ctypes.c_void_p(int(stream)),
                        params_ptr,
                        None,
                    )
                    if err:
                        raise cuda_error(err, "cuLaunchKernel")
                    return
            check(
                api.cuLaunchKernel(
                    launch.function,
                    grid[0],
                    grid[1],
                    grid[2],
                    bx,
                    by,
                    bz,
                    launch.shared,
                    stream,
                    launch.params,
                    0,
                ),
                "cuLaunchKernel",
            )


def _read_counts(api: Any, ref: Any, table: tuple, stream: Any) -> tuple[int, int, int]:
    """The three uint32 workgroup counts at ``ref``, once the stream's earlier work (which
    may have written them) is done. Runs on a worker thread only."""
    address, _ = resolve(ref, table)
    check(api.cuStreamSynchronize(stream), "cuStreamSynchronize")
    counts = np.zeros(3, np.uint32)
    check(api.cuMemcpyDtoH(counts.ctypes.data, address, 12), "cuMemcpyDtoH")
    return int(counts[0]), int(counts[1]), int(counts[2])
