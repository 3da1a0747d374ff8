"""Instantiated graphs of kernel-only programs, shared by every recording of one shape.

A kernel-only program (every step a dispatch of static, non-empty grid; recorded neither
UNRETAINED nor with indirect workgroup counts) has an exact shape: per dispatch its
function, grid, block and shared memory, and per dispatch the stage (barriers before it)
that gives its dependencies. Two programs of one shape lay out their kernel-parameter
blocks identically, word for word, so an instance built for one serves the other: the
instance remembers the parameter words its kernel nodes were last given (``snapshot``),
and an execution compares its program's whole block with that first. Equal: the instance
is launched untouched (``cuGraphLaunch``, no node set). Different: only the kernel nodes
whose words differ are set (``cuGraphExecKernelNodeSetParams``) before the launch. No
graph is built and nothing is instantiated on that path.

``KernelGraphs`` (one per device, inside ``graphs.GraphCache``) keeps up to
``PER_SHAPE`` instances per shape for ``SHAPES`` shapes (least recently used shapes are
dropped). An execution whose words no instance holds updates the least recently used
one, unless these words were replaced on an instance before (a recurring binding table:
a pool handing the same ranges back) and there is room: then it gets an instance of its
own.

Reusable command buffers of such programs always run this way; one-shot ones do when an
instance of their shape exists or their shape was recorded once before (instantiating a
graph for a one-shot recording costs more than launching its kernels once, but a shape
recorded twice is one a program keeps recording: from the second recording on, every
recording of it is one graph launch plus the node sets its parameters need).

Kernel-node updates go through ``cuGraphExecKernelNodeSetParams_v2`` over
``ctypes.PyDLL`` (keeping the GIL, as ``cuda_api.HotCalls`` does for stream calls) with
one ``CUDA_KERNEL_NODE_PARAMS_v2`` per node, filled once; on a stand-in driver (or a
library without that entry point) through the driver module's own call.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import numpy as np

from .cuda_api import LAUNCH_ENV, CudaContext, HotCalls, check
from .kernel_layouts import binding_layout
from .stream_ops import CudaProgram

PER_SHAPE = 4
"""Instances kept per program shape."""

SHAPES = 64
"""Program shapes whose instances are kept (least recently used dropped first)."""

SIGHTINGS = 256
"""One-shot shapes remembered as recorded once (the table is cleared when full)."""

STAGE_LANES = 16
"""The lanes a stage's nodes are spread over in a graph: node k of a stage depends on
node k - STAGE_LANES of it (the first STAGE_LANES on the stage before). The HAL orders
nothing within a stage, so any order is allowed; without it a stage of N commands is N
root nodes, which the GPU runs slower than one chain (H200, 512 no-op kernels, us per
node: 1.24-1.50 as independent nodes, 0.54 as one chain, 0.19-0.21 over 4 or 16 lanes;
``tools/replay_floor.py``)."""


def stage_tails(stage: list) -> list:
    """The nodes of a finished stage that the next one must wait on: each lane's last."""
    return stage[-STAGE_LANES:]


class KernelNodeParams(ctypes.Structure):
    """cuda.h's ``CUDA_KERNEL_NODE_PARAMS_v2`` (CUDA 12 and later)."""

    _fields_ = [
        ("func", ctypes.c_void_p),
        ("gridDimX", ctypes.c_uint),
        ("gridDimY", ctypes.c_uint),
        ("gridDimZ", ctypes.c_uint),
        ("blockDimX", ctypes.c_uint),
        ("blockDimY", ctypes.c_uint),
        ("blockDimZ", ctypes.c_uint),
        ("sharedMemBytes", ctypes.c_uint),
        ("kernelParams", ctypes.c_void_p),
        ("extra", ctypes.c_void_p),
        ("kern", ctypes.c_void_p),
        ("ctx", ctypes.c_void_p),
    ]


class HotGraphCalls:
    """``cuGraphExecKernelNodeSetParams_v2`` and ``cuGraphLaunch`` of ``library`` called
    without ``argtypes`` (every argument a ``ctypes.c_void_p`` made once), keeping the
    GIL. ``library``: ``ctypes.PyDLL("libcuda.so.1")`` or a stand-in with those two
    attributes."""

    __slots__ = ("set_params", "launch")

    set_params: Any
    launch: Any

    def __init__(self, library: Any) -> None:
        prototype = ctypes.PYFUNCTYPE(ctypes.c_int)
        # Separate function objects: the library's own are shared per name, and others
        # may set their argtypes.
        for name, attribute in (
            ("cuGraphExecKernelNodeSetParams_v2", "set_params"),
            ("cuGraphLaunch", "launch"),
        ):
            address = ctypes.cast(getattr(library, name), ctypes.c_void_p).value or 0
            fn: Any = prototype(address)
            fn.argtypes = None
            setattr(self, attribute, fn)


def hot_graph_calls(api: Any) -> HotGraphCalls | None:
    """The hot graph calls when ``api`` is ``cuda_api.HotCalls`` (the real driver) and
    its library has them; None otherwise (the driver module's calls are used), and with
    ``HAL_CUDA_LAUNCH=bindings`` in the environment (launches of every kind through
    cuda-bindings, for comparison)."""
    if api.__class__ is not HotCalls or os.environ.get(LAUNCH_ENV) == "bindings":
        return None
    try:
        return HotGraphCalls(ctypes.PyDLL("libcuda.so.1"))
    except (OSError, AttributeError):
        return None


class Instance:
    """One instantiated graph of a shape: its graph (CUDA names the instance's nodes by
    that graph's), the kernel node per step, each node's parameter struct, and the
    parameter words its nodes were last given. ``lock`` is held while its nodes are set
    and it is launched."""

    __slots__ = ("graph", "graph_exec", "nodes", "params", "hot", "snapshot", "lock", "exec_ptr")

    def __init__(self, graph: Any, graph_exec: Any, nodes: list, params: list, words: Any) -> None:
        self.graph = graph
        self.graph_exec = graph_exec
        self.nodes = nodes
        self.params = params
        # Per node, for the hot calls: (its KernelNodeParams, pointer to it, node pointer),
        # made at the node's first set.
        self.hot: list[Any] = [None] * len(nodes)
        self.snapshot = words.copy()
        self.lock = threading.Lock()
        self.exec_ptr = ctypes.c_void_p(int(graph_exec))


class ShapeEntry:
    """The instances of one shape, most recently used first, and digests of parameter
    words instances were updated away from. ``dead`` once the shape was dropped (a
    runner then looks its shape up again)."""

    __slots__ = ("instances", "replaced", "dead")

    def __init__(self) -> None:
        self.instances: list[Instance] = []
        self.replaced: list[int] = []
        self.dead = False


def _destroy(ctx: CudaContext, instance: Instance) -> None:
    """Destroy ``instance`` (marked by ``graph_exec`` None). The caller holds its lock or
    is its only user."""
    graph_exec, instance.graph_exec = instance.graph_exec, None
    if graph_exec is None:
        return
    try:
        ctx.make_current()
        ctx.api.cuGraphExecDestroy(graph_exec)
        ctx.api.cuGraphDestroy(instance.graph)
    except Exception:
        pass


class KernelGraphs:
    """The shared instances of one device by program shape. Thread-safe: ``_lock``
    guards the tables (held briefly, never across a driver call that waits)."""

    def __init__(self, ctx: CudaContext) -> None:
        self.ctx = ctx
        self._shapes: dict[tuple, ShapeEntry] = {}
        self._seen: dict[tuple, bool] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._hot: Any = False  # HotGraphCalls or None once looked up
        self.hot_error = 0  # what a refused hot call returned
        # Counts for tools and tests: instances made, launches that set no node, and
        # kernel nodes set.
        self.instantiations = 0
        self.untouched = 0
        self.node_sets = 0

    def runner(self, program: CudaProgram, one_shot: bool) -> KernelGraphRunner | None:
        """A runner for ``program`` (its ``kernel_shape`` set), or None when it is to
        replay as stream launches: a one-shot program whose shape has no instance and
        was not recorded before (the shape is remembered now)."""
        shape = program.kernel_shape
        assert shape is not None
        with self._lock:
            entry = self._shapes.get(shape)
            if entry is None and one_shot:
                if shape not in self._seen:
                    if len(self._seen) >= SIGHTINGS:
                        self._seen.clear()
                    self._seen[shape] = True
                    return None
            if entry is None:
                entry = self._entry_locked(shape)
        return KernelGraphRunner(self, entry, shape)

    def entry(self, shape: tuple) -> ShapeEntry:
        """The live entry of ``shape`` (made when missing)."""
        with self._lock:
            entry = self._shapes.get(shape)
            if entry is None:
                entry = self._entry_locked(shape)
            return entry

    def _entry_locked(self, shape: tuple) -> ShapeEntry:
        """A new entry for ``shape``, dropping the least recently made one past
        ``SHAPES``. The caller holds ``_lock``."""
        self._seen.pop(shape, None)
        entry = ShapeEntry()
        shapes = self._shapes
        if len(shapes) >= SHAPES:
            oldest = next(iter(shapes))
            self._drop_locked(shapes.pop(oldest))
        shapes[shape] = entry
        if self._closed:
            entry.dead = True
        return entry

    def _drop_locked(self, entry: ShapeEntry) -> None:
        """Mark ``entry`` dead and destroy its instances (each once no set or launch is
        under way on it). The caller holds ``_lock``."""
        entry.dead = True
        instances, entry.instances = entry.instances, []
        for instance in instances:
            with instance.lock:
                _destroy(self.ctx, instance)

    def hot(self, api: Any) -> HotGraphCalls | None:
        """The hot graph calls for ``api`` (looked up once)."""
        hot = self._hot
        if hot is False:
            hot = self._hot = hot_graph_calls(api)
        return hot

    def hot_refused(self, err: int) -> None:
        """A hot call returned ``err``: later calls go through the driver module (which
        reports the error again if it is the call's, not the hot path's). Kept in
        ``hot_error`` for tools."""
        self._hot = None
        self.hot_error = err

    def close(self) -> None:
        """Destroy every instance; later entries are dead at once."""
        with self._lock:
            self._closed = True
            for entry in self._shapes.values():
                self._drop_locked(entry)
            self._shapes.clear()


class KernelGraphRunner:
    """Runs one kernel-only program as a graph launch of an instance of its shape (the
    ``graph`` of a ``CudaProgram``). The caller holds the program's lock for ``run`` and
    ``prebuild`` (they write its parameter block)."""

    __slots__ = ("graphs", "entry", "shape", "layout", "failed")

    def __init__(self, graphs: KernelGraphs, entry: ShapeEntry, shape: tuple) -> None:
        self.graphs = graphs
        self.entry = entry
        self.shape = shape
        self.layout: Any = None  # binding_layout(program), made at the first execution
        self.failed = False

    def prebuild(self, program: CudaProgram) -> None:
        """Instantiate the program's graph now when its shape has no instance yet and its
        references are all direct and committed (else the first execution does). A
        shape that has one takes it: the first execution sets the nodes whose words
        differ (a re-recorded command buffer costs node sets, not an instantiation)."""
        layout = self.layout = binding_layout(program)
        entry = self._live_entry()
        if layout.slots or entry.instances:
            return
        try:
            layout.write(program, ())
        except Exception:
            return  # a transient not committed yet: the execution resolves it
        self._instantiate(program, entry)

    def run(self, program: CudaProgram, api: Any, table: tuple, stream: Any) -> bool:
        """Write the program's binding words for ``table``, then launch an instance of
        its shape holding them (setting the kernel nodes whose words differ first);
        False when the program is to replay as stream launches (the driver refused its
        graph). Raises as the stream replay would for a reference that does not
        resolve (nothing launched then)."""
        if self.failed:
            return False
        layout = self.layout
        if layout is None:
            layout = self.layout = binding_layout(program)
        layout.write(program, table)
        words = program.parameters.words
        entry = self.entry
        if entry.dead:
            entry = self._live_entry()
        graphs = self.graphs
        instances = entry.instances
        for instance in tuple(instances):
            with instance.lock:
                if instance.graph_exec is not None and np.array_equal(instance.snapshot, words):
                    self._launch(api, instance, stream)
                    graphs.untouched += 1
                    break
        else:
            digest = hash(words.tobytes())
            if not instances or (len(instances) < PER_SHAPE and digest in entry.replaced):
                made = self._instantiate(program, entry)
                if made is None:
                    return False
                with made.lock:
                    if made.graph_exec is None:
                        return False  # dropped meanwhile: stream launches this time
                    self._launch(api, made, stream)
                return True
            try:
                instance = instances[-1]
            except IndexError:  # dropped meanwhile: stream launches this time
                return False
            with instance.lock:
                if instance.graph_exec is None:
                    return False
                replaced = hash(instance.snapshot.tobytes())
                graphs.node_sets += self._set(api, instance, program, words, layout)
                self._launch(api, instance, stream)
            seen = entry.replaced
            if replaced not in seen:
                seen.append(replaced)
                if len(seen) > 2 * PER_SHAPE:
                    del seen[0]
        if instances and instances[0] is not instance:
            # Most recently used first (list operations are atomic; a concurrent
            # reorder only changes which instance is tried first).
            try:
                instances.remove(instance)
                instances.insert(0, instance)
            except ValueError:
                pass
        return True

    def _live_entry(self) -> ShapeEntry:
        entry = self.entry
        if entry.dead:
            entry = self.entry = self.graphs.entry(self.shape)
        return entry

    def _launch(self, api: Any, instance: Instance, stream: Any) -> None:
        """Launch ``instance``. The caller holds its lock."""
        hot = self.graphs.hot(api)
        if hot is not None:
            err = hot.launch(instance.exec_ptr, ctypes.c_void_p(int(stream)))
            if not err:
                return
            self.graphs.hot_refused(err)  # nothing was launched: through the bindings
        check(api.cuGraphLaunch(instance.graph_exec, stream), "cuGraphLaunch")

    def _set(
        self, api: Any, instance: Instance, program: CudaProgram, words: Any, layout: Any
    ) -> int:
        """Set the kernel nodes whose words differ from the instance's; their count. The
        caller holds the instance's lock."""
        snapshot = instance.snapshot
        changed = np.flatnonzero(snapshot != words)
        if not changed.size:
            return 0
        steps = layout.steps_of(changed)
        address = program.parameters.address
        firsts = program.firsts
        hot = self.graphs.hot(api)
        nodes = instance.nodes
        try:
            done = 0
            if hot is not None:
                set_params = hot.set_params
                exec_ptr = instance.exec_ptr
                entries = instance.hot
                for index in steps:
                    entry = entries[index]
                    if entry is None:
                        template = program.templates[index]
                        entry = entries[index] = _hot_params(template, nodes[index])
                    entry[0].kernelParams = address + 8 * firsts[index]
                    err = set_params(exec_ptr, entry[2], entry[1])
                    if err:
                        # This node and the rest through the bindings.
                        self.graphs.hot_refused(err)
                        break
                    done += 1
            if done < len(steps):
                params = instance.params
                graph_exec = instance.graph_exec
                for index in steps[done:]:
                    p = params[index]
                    p.kernelParams = address + 8 * firsts[index]
                    check(
                        api.cuGraphExecKernelNodeSetParams(graph_exec, nodes[index], p),
                        "cuGraphExecKernelNodeSetParams",
                    )
        except BaseException:
            # Which nodes took the new words is unknown: no later execution may trust
            # this snapshot.
            snapshot[:] = ~words
            raise
        snapshot[:] = words
        return len(steps)

    def _instantiate(self, program: CudaProgram, entry: ShapeEntry) -> Instance | None:
        """A new instance of the program's graph with its current words, added to
        ``entry``; None when the driver refuses it."""
        graphs = self.graphs
        instance = _build(graphs.ctx, program)
        if instance is None:
            self.failed = True  # the driver refuses this graph: stream launches
            return None
        graphs.instantiations += 1
        with graphs._lock:
            if entry.dead:
                _destroy(graphs.ctx, instance)
                return None
            entry.instances.insert(0, instance)
            while len(entry.instances) > PER_SHAPE:
                old = entry.instances.pop()
                with old.lock:
                    _destroy(graphs.ctx, old)
        return instance


def _hot_params(template: tuple, node: Any) -> tuple:
    """A dispatch's ``KernelNodeParams`` (from its ``launch_template``; the parameter
    pointer is set per node set), a pointer to it, and the node as a pointer."""
    params = KernelNodeParams()
    params.func = int(template[0])
    params.gridDimX, params.gridDimY, params.gridDimZ = template[3]
    params.blockDimX, params.blockDimY, params.blockDimZ = template[2]
    params.sharedMemBytes = template[7]
    return (params, ctypes.c_void_p(ctypes.addressof(params)), ctypes.c_void_p(int(node)))


def _build(ctx: CudaContext, program: CudaProgram) -> Instance | None:
    """The program's graph (a kernel node per step, each depending on the stage before
    it through ``STAGE_LANES`` lanes, a stage of several joined through one empty node)
    instantiated with its current parameter words; None when the driver refuses it."""
    api = ctx.api
    ctx.make_current()
    created = api.cuGraphCreate(0)
    if created[0]:
        return None
    graph = created[1]
    nodes: list[Any] = []
    params: list[Any] = []
    previous: list[Any] = []
    current: list[Any] = []
    current_stage = 0
    stages = program.stages
    address = program.parameters.address
    firsts = program.firsts
    for index, template in enumerate(program.templates):
        stage = stages[index]
        if stage != current_stage:
            current_stage = stage
            if current:
                previous, current = stage_tails(current), []
                if len(previous) > 1:
                    joined = api.cuGraphAddEmptyNode(graph, previous, len(previous))
                    if joined[0]:
                        api.cuGraphDestroy(graph)
                        return None
                    previous = [joined[1]]
        depends = previous if len(current) < STAGE_LANES else [current[-STAGE_LANES]]
        p = api.CUDA_KERNEL_NODE_PARAMS()
        p.func = template[0]
        p.gridDimX, p.gridDimY, p.gridDimZ = template[3]
        p.blockDimX, p.blockDimY, p.blockDimZ = template[2]
        p.sharedMemBytes = template[7]
        p.kernelParams = address + 8 * firsts[index]
        result = api.cuGraphAddKernelNode(graph, depends, len(depends), p)
        if result[0]:
            api.cuGraphDestroy(graph)
            return None
        nodes.append(result[1])
        params.append(p)
        current.append(result[1])
    result = api.cuGraphInstantiate(graph, 0)
    if result[0]:
        api.cuGraphDestroy(graph)
        return None
    return Instance(graph, result[1], nodes, params, program.parameters.words)
