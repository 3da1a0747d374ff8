"""Reusable command buffers as CUDA graphs built with the node API.

A reusable command buffer (not ONE_SHOT, not UNRETAINED) whose program has no host-byte
updates and no workgroup counts read from a buffer becomes one CUDA graph, built in one
pass over its steps: a kernel node per dispatch, a memset node per fill, a memcpy node
per copy (an empty node for one that does nothing), each depending on the nodes of the
stage before it (the commands between two execution barriers run unordered, as the HAL
allows; a stage of several nodes is joined through one empty node). Programs that name
their buffers directly are built at ``end()``; a program with binding-table references
(or a buffer whose memory is not committed yet) is built at its first execution, from
the addresses that execution resolves.

An execution resolves only what may have moved, the program's operands: each distinct
direct buffer's memory and each binding-table slot's range. A program keeps a few
instances (``ProgramGraphs``), each holding the operands of an execution: one holding
this execution's is launched as it is (``cuGraphLaunch``); otherwise an instance gets the
nodes naming a moved operand updated (``cuGraphExec{Kernel,Memset,Memcpy}NodeSetParams``)
first. Updates affect later launches only, so launches in flight keep what they were
launched with. An execution the graph cannot express (a fill turned misaligned or empty)
replays as stream launches instead.

When a program is dropped, its instances go back to the device's ``GraphCache`` under
the program's shape (node kinds and dependencies); a program of the same shape recorded
later builds its graph and updates such an instance with it (``cuGraphExecUpdate``)
instead of instantiating a new one.

One-shot command buffers replay as stream launches: building and instantiating a graph
costs more than launching each command once (``tools/graph_cost.py`` measures both).
"""

from __future__ import annotations

import weakref
from typing import Any

from hal_core import WHOLE_BUFFER, BufferRef, HalError
from hal_core.backend import buffer_storage

from .cuda_api import CudaContext, check
from .kernel_graphs import STAGE_LANES, KernelGraphs, stage_tails
from .stream_ops import (
    STEP_COPY,
    STEP_DISPATCH,
    STEP_FILL,
    CudaProgram,
    Launch,
    WeakBufferRef,
    resolve,
)

CACHE_PER_SHAPE = 4
"""Instantiated graphs kept per program shape for re-recorded command buffers."""

GRAPHS_PER_PROGRAM = 4
"""Instances one program keeps, each for the operands of a recent execution."""

_KERNEL = 0
_MEMSET = 1
_MEMCPY = 2
_EMPTY = 3


class Unexpressible(Exception):
    """An execution the graph cannot express: the caller replays it as stream launches."""


class GraphCache:
    """Idle instantiated graphs of one context by program shape, each as (graph, instance,
    the graph's node per step): CUDA names an instance's nodes by the nodes of the graph
    it was instantiated from, so that graph lives as long as the instance. ``put`` may
    run on any thread, including inside garbage collection, so it takes no lock: list
    ``append`` and ``pop`` are atomic, and a shape's list may briefly exceed its bound
    (harmless)."""

    def __init__(self, ctx: CudaContext) -> None:
        self.ctx = ctx
        # Kernel-only programs' instances, shared by exact shape (``kernel_graphs``).
        self.kernel = KernelGraphs(ctx)
        self._idle: dict[tuple, list[Any]] = {}
        self._closed = False
        # Counts for tools and tests: instances updated from a re-recorded program's
        # graph, instantiated anew, and node parameters set before a launch.
        self.updates = 0
        self.instantiations = 0
        self.node_updates = 0

    def take(self, shape: tuple) -> Any:
        """An idle (graph, instance, nodes) of ``shape``, or None."""
        idle = self._idle.get(shape)
        if idle:
            try:
                return idle.pop()
            except IndexError:
                return None
        return None

    def put(self, shape: tuple, entry: tuple) -> None:
        """Keep (graph, instance, nodes) for a later program of ``shape`` (or destroy
        them)."""
        idle = self._idle.setdefault(shape, [])
        if self._closed or len(idle) >= CACHE_PER_SHAPE:
            _destroy(self.ctx, entry[0], entry[1])
        else:
            idle.append(entry)

    def close(self) -> None:
        """Destroy every idle graph; later ``put`` destroys at once."""
        self._closed = True
        self.kernel.close()
        for idle in list(self._idle.values()):
            while idle:
                try:
                    entry = idle.pop()
                except IndexError:
                    break
                _destroy(self.ctx, entry[0], entry[1])


def _destroy(ctx: CudaContext, graph: Any, graph_exec: Any) -> None:
    try:
        ctx.make_current()
        ctx.api.cuGraphExecDestroy(graph_exec)
        ctx.api.cuGraphDestroy(graph)
    except Exception:
        pass


def _release(cache: GraphCache, shape: tuple, entry: tuple) -> None:
    """Finalizer of a ``ProgramGraph``: its graph and instance go to the cache."""
    cache.put(shape, entry)


def _buffer_of(ref: Any) -> Any:
    """The buffer a direct reference names, or None for an indirect one."""
    if ref.__class__ is BufferRef:
        return ref.buffer
    return ref


def _refs(step: tuple) -> tuple:
    kind = step[0]
    if kind == STEP_DISPATCH:
        return step[1].refs
    if kind == STEP_FILL:
        return (step[1],)
    return (step[1], step[2])


def _fill_shape(address: int, length: int, pattern: bytes) -> int:
    """The memset element size of a fill (1, 2 or 4), or 0 when it writes nothing; an
    address misaligned for its pattern is Unexpressible (the stream path writes it byte
    column by byte column)."""
    if length == 0:
        return 0
    size = len(pattern)
    if address % size:
        raise Unexpressible
    return size


class ProgramGraph:
    """An instantiated graph of one program and what each node was last given.

    The caller holds the program's lock for ``launch`` (it writes the program's shared
    kernel-parameter block and the nodes' parameters)."""

    __slots__ = (
        "graph_exec",
        "nodes",
        "kinds",
        "params",
        "applied",
        "buffers",
        "slots",
        "users",
        "key",
        "fast",
        "limits",
        "_finalizer",
        "__weakref__",
    )

    def __init__(self) -> None:
        self.graph_exec: Any = None
        self.nodes: list[Any] = []  # per step: its node (None for an empty node)
        self.kinds: list[int] = []  # per step: _KERNEL, _MEMSET, _MEMCPY or _EMPTY
        self.params: list[Any] = []  # per step: its node-parameter struct
        self.applied: list[Any] = []  # per step: what its node was last given
        # The program's operands: its distinct direct buffers, then the binding-table
        # slots it reads, in order of first use; per operand the steps naming it; and
        # what each resolved to when this graph's nodes were last set (``operand_key``).
        self.buffers: list[Any] = []
        self.slots: list[int] = []
        self.users: list[frozenset[int]] = []
        self.key: tuple = ()
        # Per step, for a kernel node: its bindings as (operand index, bytes past the
        # operand's base), so new addresses need no resolution per reference; per slot,
        # the largest reference offset and end its steps use, checked once per execution.
        self.fast: list[tuple | None] = []
        self.limits: list[tuple[int, int]] = []
        self._finalizer: Any = None

    def operand_key(self, table: tuple) -> tuple:
        """What each operand resolves to with ``table``: a direct buffer's memory address
        (FAILED_PRECONDITION for one deallocated), a slot's ``_slot_key`` (None for a slot
        the table does not fill: the resolution then reports it)."""
        key = [buffer_storage(buffer).address for buffer in self.buffers]
        for slot in self.slots:
            key.append(_slot_key(table, slot))
        return tuple(key)

    def launch(
        self,
        api: Any,
        ctx: CudaContext,
        program: CudaProgram,
        table: tuple,
        stream: Any,
        key: tuple,
    ) -> int:
        """Update the nodes whose operands resolve differently under ``key`` (this
        execution's ``operand_key``), then launch; the number of nodes whose operands moved.
        Unexpressible when this execution needs a node the graph cannot become (nothing
        launched then)."""
        dirty: set[int] = set()
        if key != self.key:
            for i, (now, before) in enumerate(zip(key, self.key)):
                if now is None or now != before:
                    dirty.update(self.users[i])
            steps = program.steps
            bases = self._bases(key)
            for index in sorted(dirty):
                self._update(api, ctx, program, index, steps[index], table, bases)
            self.key = key
        check(api.cuGraphLaunch(self.graph_exec, stream), "cuGraphLaunch")
        return len(dirty)

    def _bases(self, key: tuple) -> list[int | None]:
        """Per operand, the address its references' offsets count from: a direct buffer's
        memory, a slot's bound range; None for a slot whose binding does not hold every
        reference its steps make (those steps resolve one by one, which reports it)."""
        count = len(self.buffers)
        bases: list[int | None] = list(key[:count])
        for (max_offset, max_end), entry in zip(self.limits, key[count:]):
            if entry is None:
                bases.append(None)
                continue
            address, size, offset, length = entry
            bound = size - offset if length == WHOLE_BUFFER else length
            if bound < 0 or offset + bound > size or max_offset > bound or max_end > bound:
                bases.append(None)
            else:
                bases.append(address + offset)
        return bases

    def _update(
        self,
        api: Any,
        ctx: CudaContext,
        program: CudaProgram,
        index: int,
        step: tuple,
        table: tuple,
        bases: list[int | None],
    ) -> None:
        kind = self.kinds[index]
        fast = self.fast[index]
        args: Any = None
        if fast is not None:
            try:
                args = tuple([bases[operand] + extra for operand, extra in fast])
            except TypeError:  # an operand without a base: resolve one by one
                args = None
        if args is None:
            args = _node_args(program, step, table)
        if args == self.applied[index]:
            return
        if kind == _EMPTY or not _same_kind(kind, step, args):
            raise Unexpressible
        node = self.nodes[index]
        params = self.params[index]
        if kind == _KERNEL:
            launch: Launch = step[1]
            _write_bindings(program, launch, args)
            check(
                api.cuGraphExecKernelNodeSetParams(self.graph_exec, node, params),
                "cuGraphExecKernelNodeSetParams",
            )
        elif kind == _MEMSET:
            address, length, _size = args
            params.dst = address
            params.width = length // params.elementSize
            check(
                api.cuGraphExecMemsetNodeSetParams(self.graph_exec, node, params, ctx.handle),
                "cuGraphExecMemsetNodeSetParams",
            )
        else:
            target, source, length = args
            params.dstDevice = target
            params.srcDevice = source
            params.WidthInBytes = length
            check(
                api.cuGraphExecMemcpyNodeSetParams(self.graph_exec, node, params, ctx.handle),
                "cuGraphExecMemcpyNodeSetParams",
            )
        self.applied[index] = args


def _same_kind(kind: int, step: tuple, args: Any) -> bool:
    """Whether ``args`` still fit a node of ``kind`` (non-empty, same element size)."""
    if kind == _MEMSET:
        return args[2] != 0 and args[2] == len(step[2])
    if kind == _MEMCPY:
        return args[2] != 0
    return True


def _slot_key(table: tuple, slot: int) -> Any:
    """What a slot's binding resolves through: its buffer's memory address and length,
    the binding's offset and length (None for a slot the table does not fill, which the
    resolution then reports)."""
    if slot >= len(table):
        return None
    binding = table[slot]
    if binding is None or binding.buffer is None:
        return None
    buffer = binding.buffer
    return (
        buffer_storage(buffer).address + buffer.byte_offset,
        buffer.byte_length,
        binding.offset,
        binding.length,
    )


def _node_args(program: CudaProgram, step: tuple, table: tuple) -> Any:
    """A step's resolved operands: a dispatch's binding addresses; a fill's (address,
    length, element size or 0); a copy's (target, source, length). Raises as the stream
    replay would for a reference that does not resolve."""
    kind = step[0]
    if kind == STEP_DISPATCH:
        launch: Launch = step[1]
        if launch.grid[0] == 0 or launch.grid[1] == 0 or launch.grid[2] == 0:
            return ()
        return tuple(resolve(ref, table)[0] for ref in launch.refs)
    if kind == STEP_FILL:
        address, length = resolve(step[1], table)
        return (address, length, _fill_shape(address, length, step[2]))
    target, length = resolve(step[1], table)
    source, _ = resolve(step[2], table)
    return (target, source, length)


def _write_bindings(program: CudaProgram, launch: Launch, addresses: tuple) -> None:
    values = program.parameters.values
    i = launch.first
    for address in addresses:
        values[i] = address
        i += 1


def qualifies(program: CudaProgram) -> bool:
    """Whether ``program`` can become a graph (no host-byte update, no indirect workgroup
    count, no weakly held buffer, at least one step)."""
    if not program.steps or program.needs_host_sync:
        return False
    for step in program.steps:
        if step[0] not in (STEP_DISPATCH, STEP_FILL, STEP_COPY):
            return False
        for ref in _refs(step):
            if ref.__class__ is WeakBufferRef:
                return False
    return True


def build(
    ctx: CudaContext, cache: GraphCache, program: CudaProgram, table: tuple
) -> ProgramGraph | None:
    """The program as an instantiated graph with the addresses ``table`` resolves (or a
    cached instance updated to it), or None when the driver refuses it or it holds a
    fill the graph cannot express (it then replays as stream launches). Raises as the
    stream replay would for a reference that does not resolve. The caller holds the
    program's lock."""
    api = ctx.api
    ctx.make_current()
    out = ProgramGraph()
    try:
        args = [_node_args(program, step, table) for step in program.steps]
    except Unexpressible:
        return None
    created = api.cuGraphCreate(0)
    if created[0]:
        return None
    graph = created[1]
    try:
        shape = _add_nodes(api, ctx, graph, program, args, out)
    except BaseException:
        api.cuGraphDestroy(graph)
        raise
    if shape is None:
        api.cuGraphDestroy(graph)
        return None
    graph_exec = None
    cached = cache.take(shape)
    if cached is not None:
        if api.cuGraphExecUpdate(cached[1], graph)[0]:
            _destroy(ctx, cached[0], cached[1])
        else:
            # The instance keeps naming its nodes by its own graph's: this one only
            # carried the parameters.
            api.cuGraphDestroy(graph)
            graph, graph_exec, out.nodes = cached
            cache.updates += 1
    if graph_exec is None:
        result = api.cuGraphInstantiate(graph, 0)
        if result[0]:
            api.cuGraphDestroy(graph)
            return None
        graph_exec = result[1]
        cache.instantiations += 1
    out.graph_exec = graph_exec
    out.applied = args
    _index_operands(program, table, out)
    out._finalizer = weakref.finalize(out, _release, cache, shape, (graph, graph_exec, out.nodes))
    return out


def _add_nodes(
    api: Any, ctx: CudaContext, graph: Any, program: CudaProgram, args: list, out: ProgramGraph
) -> tuple | None:
    """Add a node per step, each depending on the stage before it through
    ``STAGE_LANES`` lanes (``kernel_graphs``); the program's shape
    (each node's kind and the indices of the nodes it depends on), or None when the
    driver refuses a node."""
    stages = program.stages
    previous: list[Any] = []  # the nodes the current stage depends on
    previous_at: tuple[int, ...] = ()  # their indices in the shape
    current: list[Any] = []  # the nodes of the current stage
    current_at: list[int] = []
    current_stage = 0
    shape: list[tuple] = []
    for index, step in enumerate(program.steps):
        stage = stages[index]
        if stage != current_stage:
            current_stage = stage
            if current:
                previous, previous_at = stage_tails(current), tuple(stage_tails(current_at))
                current, current_at = [], []
                if len(previous) > 1:
                    joined = api.cuGraphAddEmptyNode(graph, previous, len(previous))
                    if joined[0]:
                        return None
                    shape.append((_EMPTY, previous_at))
                    previous, previous_at = [joined[1]], (len(shape) - 1,)
        kind, params = _node_params(api, program, step, args[index])
        if len(current) < STAGE_LANES:
            depends, depends_at = previous, previous_at
        else:
            depends, depends_at = [current[-STAGE_LANES]], (current_at[-STAGE_LANES],)
        n = len(depends)
        if kind == _KERNEL:
            result = api.cuGraphAddKernelNode(graph, depends, n, params)
        elif kind == _MEMSET:
            result = api.cuGraphAddMemsetNode(graph, depends, n, params, ctx.handle)
        elif kind == _MEMCPY:
            result = api.cuGraphAddMemcpyNode(graph, depends, n, params, ctx.handle)
        else:
            result = api.cuGraphAddEmptyNode(graph, depends, n)
        if result[0]:
            return None
        node = result[1]
        shape.append((kind, depends_at))
        current.append(node)
        current_at.append(len(shape) - 1)
        out.nodes.append(node)
        out.kinds.append(kind)
        out.params.append(params)
    return tuple(shape)


def _node_params(api: Any, program: CudaProgram, step: tuple, args: Any) -> tuple[int, Any]:
    """(node kind, its parameter struct) for a step resolved to ``args``."""
    kind = step[0]
    if kind == STEP_DISPATCH:
        launch: Launch = step[1]
        if launch.grid[0] == 0 or launch.grid[1] == 0 or launch.grid[2] == 0:
            return _EMPTY, None
        _write_bindings(program, launch, args)
        params = api.CUDA_KERNEL_NODE_PARAMS()
        params.func = launch.function
        params.gridDimX, params.gridDimY, params.gridDimZ = launch.grid
        params.blockDimX, params.blockDimY, params.blockDimZ = launch.block
        params.sharedMemBytes = launch.shared
        params.kernelParams = launch.params
        return _KERNEL, params
    if kind == STEP_FILL:
        address, length, size = args
        if size == 0:
            return _EMPTY, None
        params = api.CUDA_MEMSET_NODE_PARAMS()
        params.dst = address
        params.value = int.from_bytes(step[2], "little")
        params.elementSize = size
        params.width = length // size
        params.height = 1
        params.pitch = 0
        return _MEMSET, params
    target, source, length = args
    if length == 0:
        return _EMPTY, None
    unified = api.CUmemorytype.CU_MEMORYTYPE_UNIFIED
    params = api.CUDA_MEMCPY3D()
    params.srcMemoryType = unified
    params.srcDevice = source
    params.dstMemoryType = unified
    params.dstDevice = target
    params.WidthInBytes = length
    params.Height = 1
    params.Depth = 1
    return _MEMCPY, params


def _index_operands(program: CudaProgram, table: tuple, out: ProgramGraph) -> None:
    """The program's operands (distinct direct buffers, then binding-table slots) with
    the steps naming each, and the key this build resolved them to."""
    buffers: dict[int, tuple[Any, set[int]]] = {}
    slots: dict[int, set[int]] = {}
    for index, step in enumerate(program.steps):
        for ref in _refs(step):
            buffer = _buffer_of(ref)
            if buffer is None:
                slots.setdefault(ref.slot, set()).add(index)
            else:
                buffers.setdefault(id(buffer), (buffer, set()))[1].add(index)
    out.buffers = [buffer for buffer, _ in buffers.values()]
    out.slots = list(slots)
    out.users = [frozenset(users) for _, users in buffers.values()]
    out.users += [frozenset(users) for users in slots.values()]
    out.key = out.operand_key(table)
    operand = {key: i for i, key in enumerate(buffers)}
    operand.update({-1 - slot: len(buffers) + i for i, slot in enumerate(slots)})
    limits = {slot: [0, 0] for slot in slots}
    for index, step in enumerate(program.steps):
        refs = _refs(step)
        for ref in refs:
            if ref.__class__ is BufferRef and ref.buffer is None:
                limit = limits[ref.slot]
                limit[0] = max(limit[0], ref.offset)
                if ref.length != WHOLE_BUFFER:
                    limit[1] = max(limit[1], ref.offset + ref.length)
        if out.kinds[index] != _KERNEL:
            out.fast.append(None)
            continue
        fast = []
        for ref in refs:
            if ref.__class__ is not BufferRef:
                fast.append((operand[id(ref)], ref.byte_offset))
            elif ref.buffer is not None:
                fast.append((operand[id(ref.buffer)], ref.buffer.byte_offset + ref.offset))
            else:
                fast.append((operand[-1 - ref.slot], ref.offset))
        out.fast.append(tuple(fast))
    out.limits = [(limits[slot][0], limits[slot][1]) for slot in slots]


class ProgramGraphs:
    """A program's graphs: up to ``GRAPHS_PER_PROGRAM`` instances, each holding the
    operands of an execution, most recently used first. An execution whose operands one
    of them holds launches it as it is. Otherwise, when these operands came before (a
    recurring binding table: a pool handing out the same ranges again) and there is room,
    an instance is built for them; else the least recently used instance is updated
    (operands never seen before, as a replay allocating anew each run, cost node updates,
    not instantiations). Built at ``end()`` (``prebuild``) or at the first
    execution; ``graphs`` is empty and ``pending`` False once the program turned out not
    to fit a graph (it then replays as stream launches). The caller holds the program's
    lock for ``run``."""

    __slots__ = ("ctx", "cache", "graphs", "pending", "_seen")

    def __init__(self, ctx: CudaContext, cache: GraphCache) -> None:
        self.ctx = ctx
        self.cache = cache
        self.graphs: list[ProgramGraph] = []
        self.pending = True
        # Operand keys instances were updated away from, most recent last.
        self._seen: list[tuple] = []

    @property
    def graph(self) -> ProgramGraph | None:
        """The most recently used instance, or None."""
        return self.graphs[0] if self.graphs else None

    def prebuild(self, program: CudaProgram) -> None:
        """Build now when every reference is direct and resolves (memory committed);
        otherwise leave it to the first execution, which has the binding table."""
        for step in program.steps:
            for ref in _refs(step):
                if _buffer_of(ref) is None:
                    return
        try:
            graph = build(self.ctx, self.cache, program, ())
        except HalError:
            return  # a transient not committed yet, or a reference the execution reports
        self.pending = False
        if graph is not None:
            self.graphs.append(graph)

    def run(self, program: CudaProgram, api: Any, table: tuple, stream: Any) -> bool:
        """Launch a graph of the program with ``table``'s bindings; False when this
        execution is to replay as stream launches. Raises as the stream replay would for
        a reference that does not resolve."""
        graphs = self.graphs
        if self.pending:
            graph = build(self.ctx, self.cache, program, table)
            self.pending = False
            if graph is None:
                return False
            graphs.append(graph)
        elif not graphs:
            return False
        key = graphs[0].operand_key(table)
        chosen = None
        for graph in graphs:
            if graph.key == key:
                chosen = graph
                break
        seen = self._seen
        if chosen is None and key in seen and len(graphs) < GRAPHS_PER_PROGRAM:
            seen.remove(key)
            chosen = build(self.ctx, self.cache, program, table)
            if chosen is not None:
                graphs.insert(0, chosen)
        if chosen is None:
            chosen = graphs[-1]
            # Updated away from its operands: should they come back, they get their own.
            seen.append(chosen.key)
            if len(seen) > 2 * GRAPHS_PER_PROGRAM:
                del seen[0]
        if chosen is not graphs[0]:
            graphs.remove(chosen)
            graphs.insert(0, chosen)
        try:
            self.cache.node_updates += chosen.launch(api, self.ctx, program, table, stream, key)
        except Unexpressible:
            return False
        return True
