"""A stand-in for ``cuda.bindings.driver`` over host memory, for logic tests of hal-cuda
where no GPU exists (CI). It implements the calls the driver makes for transfers, memory,
events and streams with cuda-bindings' calling convention (a tuple ``(CUresult, ...)``):
"device" memory is host memory whose address is the device pointer, stream work runs at
once on the calling thread (so every event is reached when recorded). Modules load from
PTX text only (reflected with hal-cuda's own PTX reader, so ``cuFuncGetParamInfo`` answers
as the driver would); a kernel launch runs nothing but is recorded in ``launches`` with
its grid, block, shared memory and parameter words. Graphs built with the node API
(kernel, memset, memcpy and empty nodes) are modelled: a node copies its parameters when
added or set, an instantiated graph holds its own copy, and a launch runs its nodes in
the order they were added (``graph_refused`` makes instantiation fail). Stream capture,
cubins and fatbins are refused (CUDA_ERROR_NOT_SUPPORTED). It is no model of CUDA's
concurrency: the GPU tests (``test_cuda_gpu.py``) run the real driver.

Every ``cu*`` call is counted in ``calls`` as (thread name, function name) -> count, so
tests can pin which driver calls an operation makes and on which thread."""

from __future__ import annotations

import collections
import ctypes
import itertools
import sys
import threading
from typing import Any, Callable

import numpy as np
from hal_cuda import cuda_api
from hal_cuda import driver as cuda_driver
from hal_cuda.kernels import reflect_ptx

NOT_SUPPORTED = 801
NOT_READY = 600
INVALID_VALUE = 1
OUT_OF_MEMORY = 2

TOTAL_MEMORY = 1 << 30


class _Uuid:
    bytes = bytes(range(16))


class Launch:
    """One recorded ``cuLaunchKernel``: the kernel's name, grid, block, dynamic shared
    memory and its parameters as 64-bit words (a constant in the low 4 bytes)."""

    __slots__ = ("name", "grid", "block", "shared", "params")

    def __init__(self, name: str, grid: tuple, block: tuple, shared: int, params: list) -> None:
        self.name, self.grid, self.block, self.shared, self.params = (
            name,
            grid,
            block,
            shared,
            params,
        )


class FakeKernelNodeParams:
    """``CUDA_KERNEL_NODE_PARAMS``: the fields hal-cuda sets."""

    func: Any = 0
    gridDimX = gridDimY = gridDimZ = blockDimX = blockDimY = blockDimZ = 1
    sharedMemBytes = 0
    kernelParams = 0


class FakeMemsetNodeParams:
    """``CUDA_MEMSET_NODE_PARAMS``."""

    dst = value = elementSize = width = height = pitch = 0


class FakeMemcpy3D:
    """``CUDA_MEMCPY3D``: the fields hal-cuda sets."""

    srcMemoryType: Any = None
    dstMemoryType: Any = None
    srcDevice = dstDevice = WidthInBytes = Height = Depth = 0


class FakeMemoryType:
    """``CUmemorytype``."""

    CU_MEMORYTYPE_HOST = 1
    CU_MEMORYTYPE_DEVICE = 2
    CU_MEMORYTYPE_UNIFIED = 4


class FakeDriver:
    """``gpus`` fake GPUs ("Fake GPU", sm_90, 1 GiB each; contexts share one memory)."""

    def __init__(self, gpus: int = 1) -> None:
        self._gpus = gpus
        self._memory: dict[int, np.ndarray] = {}
        # Reentrant: the garbage collector may run a collected buffer's finalizer (a
        # cuMemFree) inside an allocation that holds it.
        self._lock = threading.RLock()
        self._handles = itertools.count(1)
        self.allocated = 0
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self._functions: dict[int, tuple[str, int, int]] = {}  # handle -> name, nb, nc
        self._modules: dict[int, Any] = {}
        self.launches: list[Launch] = []
        # Set: every event is reached when recorded. Cleared (``hold``): events read as
        # not reached (CUDA_ERROR_NOT_READY) and cuEventSynchronize blocks until
        # ``release``, as while a GPU is still running the work.
        self._gate = threading.Event()
        self._gate.set()

    def hold(self) -> None:
        """Keep recorded events unreached until ``release``."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name.startswith("cu") and callable(value):
            return _counted(object.__getattribute__(self, "calls"), name, value)
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("cu"):
            return _counted(self.calls, name, lambda *args: (NOT_SUPPORTED,))
        raise AttributeError(name)

    def reset_calls(self) -> None:
        """Forget the calls and launches counted so far."""
        self.calls.clear()
        self.launches.clear()

    def calls_on(self, thread: str) -> dict[str, int]:
        """The calls made on threads whose name starts with ``thread``: name -> count."""
        out: collections.Counter[str] = collections.Counter()
        for (who, name), n in list(self.calls.items()):
            if who.startswith(thread):
                out[name] += n
        return dict(out)

    # enum constructors the driver calls
    @staticmethod
    def CUdevice_attribute(value: int) -> int:
        return value

    @staticmethod
    def CUstreamCaptureMode(value: int) -> int:
        return value

    def cuInit(self, flags: int) -> tuple:
        return (0,)

    def cuDeviceGetCount(self) -> tuple:
        return (0, self._gpus)

    def cuDeviceGet(self, ordinal: int) -> tuple:
        return (0, ordinal) if 0 <= ordinal < self._gpus else (101, None)

    def cuDeviceGetName(self, length: int, dev: int) -> tuple:
        return (0, b"Fake GPU\0")

    def cuDeviceGetUuid(self, dev: int) -> tuple:
        uuid = _Uuid()
        if dev:
            uuid.bytes = bytes([dev]) + _Uuid.bytes[1:]
        return (0, uuid)

    def cuDeviceGetAttribute(self, attr: int, dev: int) -> tuple:
        return (0, {75: 9, 76: 0, 16: 4}.get(int(attr), 0))

    def cuDeviceTotalMem(self, dev: int) -> tuple:
        return (0, TOTAL_MEMORY)

    def cuDevicePrimaryCtxRetain(self, dev: int) -> tuple:
        return (0, "ctx")

    def cuDevicePrimaryCtxRelease(self, dev: int) -> tuple:
        return (0,)

    def cuCtxSetCurrent(self, ctx: Any) -> tuple:
        return (0,)

    def _handle(self) -> tuple:
        return (0, next(self._handles))

    cuStreamCreate = cuEventCreate = lambda self, flags: self._handle()  # noqa: E731

    def _ok(self, *args: Any) -> tuple:
        return (0,)

    cuStreamDestroy = cuEventDestroy = cuEventRecord = _ok
    cuStreamWaitEvent = cuStreamSynchronize = _ok

    def cuEventQuery(self, event: Any) -> tuple:
        return (0,) if self._gate.is_set() else (NOT_READY,)

    def cuEventSynchronize(self, event: Any) -> tuple:
        self._gate.wait()
        return (0,)

    def cuMemGetInfo(self) -> tuple:
        return (0, TOTAL_MEMORY - self.allocated, TOTAL_MEMORY)

    def _allocate(self, size: int) -> tuple:
        with self._lock:
            if self.allocated + size > TOTAL_MEMORY:
                return (OUT_OF_MEMORY, 0)
            array = np.zeros(size, np.uint8)
            address = int(array.ctypes.data)
            self._memory[address] = array
            self.allocated += size
        return (0, address)

    def _free(self, address: int) -> tuple:
        with self._lock:
            array = self._memory.pop(int(address), None)
            if array is None:
                return (INVALID_VALUE,)
            self.allocated -= array.nbytes
        return (0,)

    def cuMemAlloc(self, size: int) -> tuple:
        return self._allocate(size)

    def cuMemHostAlloc(self, size: int, flags: int) -> tuple:
        return self._allocate(size)

    cuMemFree = cuMemFreeHost = _free

    def cuMemHostGetDevicePointer(self, host: int, flags: int) -> tuple:
        return (0, int(host))

    cuMemHostRegister = cuMemHostUnregister = _ok

    @staticmethod
    def _set(address: int, value: int, count: int, size: int) -> tuple:
        dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32}[size]
        ctype = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_uint32}[size]
        if count:
            view = np.ctypeslib.as_array((ctype * count).from_address(int(address)))
            view[:] = dtype(value)
        return (0,)

    def cuMemsetD8(self, address: int, value: int, count: int) -> tuple:
        return self._set(address, value, count, 1)

    def cuMemsetD8Async(self, address: int, value: int, count: int, stream: Any) -> tuple:
        return self._set(address, value, count, 1)

    def cuMemsetD16Async(self, address: int, value: int, count: int, stream: Any) -> tuple:
        if address % 2:
            return (INVALID_VALUE,)
        return self._set(address, value, count, 2)

    def cuMemsetD32Async(self, address: int, value: int, count: int, stream: Any) -> tuple:
        if address % 4:
            return (INVALID_VALUE,)
        return self._set(address, value, count, 4)

    def cuMemsetD2D8Async(
        self, address: int, pitch: int, value: int, width: int, height: int, stream: Any
    ) -> tuple:
        for row in range(height):
            self._set(address + row * pitch, value, width, 1)
        return (0,)

    @staticmethod
    def _copy(target: int, source: int, length: int) -> tuple:
        ctypes.memmove(int(target), int(source), int(length))
        return (0,)

    def cuMemcpyAsync(self, target: int, source: int, length: int, stream: Any) -> tuple:
        return self._copy(target, source, length)

    def cuMemcpyHtoDAsync(self, target: int, source: int, length: int, stream: Any) -> tuple:
        return self._copy(target, source, length)

    def cuMemcpyHtoD(self, target: int, source: int, length: int) -> tuple:
        return self._copy(target, source, length)

    def cuMemcpyDtoH(self, target: int, source: int, length: int) -> tuple:
        return self._copy(target, source, length)

    # -- modules and kernels (PTX only) ------------------------------------------------

    def cuModuleLoadData(self, image: bytes) -> tuple:
        text = bytes(image).rstrip(b"\0")
        if not text.lstrip().startswith((b"//", b".version")):
            return (NOT_SUPPORTED, None)  # a cubin or fatbin: no JIT here
        try:
            module = reflect_ptx(text)
        except Exception:
            return (218, None)  # CUDA_ERROR_INVALID_PTX
        handle = next(self._handles)
        self._modules[handle] = module
        return (0, handle)

    def cuModuleUnload(self, module: int) -> tuple:
        self._modules.pop(int(module), None)
        return (0,)

    def cuModuleGetFunction(self, module: int, name: bytes) -> tuple:
        entries = {e.name: e for e in self._modules[int(module)].entries}
        entry = entries.get(name.decode())
        if entry is None:
            return (500, None)  # CUDA_ERROR_NOT_FOUND
        handle = next(self._handles)
        self._functions[handle] = (entry.name, entry.binding_count, entry.constant_count)
        return (0, handle)

    def cuFuncGetParamInfo(self, function: int, index: int) -> tuple:
        _, bindings, constants = self._functions[int(function)]
        if index >= bindings + constants:
            return (INVALID_VALUE, 0, 0)
        if index < bindings:
            return (0, 8 * index, 8)
        return (0, 8 * bindings + 4 * (index - bindings), 4)

    def cuLaunchKernel(
        self,
        function: int,
        gx: int,
        gy: int,
        gz: int,
        bx: int,
        by: int,
        bz: int,
        shared: int,
        stream: Any,
        params: int,
        extra: Any,
    ) -> tuple:
        name, bindings, constants = self._functions[int(function)]
        n = bindings + constants
        pointers = (ctypes.c_uint64 * max(n, 1)).from_address(int(params)) if n else []
        words = [ctypes.c_uint64.from_address(int(p)).value for p in pointers[:n]]
        self.launches.append(Launch(name, (gx, gy, gz), (bx, by, bz), int(shared), words))
        return (0,)

    # -- graphs (node API) --------------------------------------------------------------

    CUDA_KERNEL_NODE_PARAMS = FakeKernelNodeParams
    CUDA_MEMSET_NODE_PARAMS = FakeMemsetNodeParams
    CUDA_MEMCPY3D = FakeMemcpy3D
    CUmemorytype = FakeMemoryType
    graph_refused = False
    """Set: cuGraphInstantiate fails (CUDA_ERROR_NOT_SUPPORTED), as on a driver without
    graphs."""

    def _graph_tables(self) -> tuple[dict, dict, dict]:
        """graphs: handle -> [node]; nodes: handle -> (kind, deps, snapshot);
        execs: handle -> (topology, {node: (kind, snapshot)} in node order)."""
        tables = self.__dict__.get("_graph_state")
        if tables is None:
            tables = self.__dict__["_graph_state"] = ({}, {}, {})
        return tables

    @property
    def live_graphs(self) -> int:
        """Graphs and instantiated graphs created and not destroyed."""
        graphs, _, execs = self._graph_tables()
        return len(graphs) + len(execs)

    def cuGraphCreate(self, flags: int) -> tuple:
        handle = next(self._handles)
        self._graph_tables()[0][handle] = []
        return (0, handle)

    def cuGraphDestroy(self, graph: int) -> tuple:
        graphs, nodes, _ = self._graph_tables()
        for node in graphs.pop(int(graph), ()):
            nodes.pop(node, None)
        return (0,)

    def _add_node(self, graph: int, deps: Any, count: int, kind: str, snapshot: Any) -> tuple:
        graphs, nodes, _ = self._graph_tables()
        deps = tuple(int(d) for d in (deps or ())[:count])
        if any(d not in nodes for d in deps):
            return (INVALID_VALUE, None)
        handle = next(self._handles)
        nodes[handle] = (kind, deps, snapshot)
        graphs[int(graph)].append(handle)
        return (0, handle)

    def _kernel_snapshot(self, p: Any) -> tuple:
        name, bindings, constants = self._functions[int(p.func)]
        n = bindings + constants
        pointers: Any = (ctypes.c_uint64 * max(n, 1)).from_address(int(p.kernelParams)) if n else []
        words = [ctypes.c_uint64.from_address(int(q)).value for q in pointers[:n]]
        grid = (p.gridDimX, p.gridDimY, p.gridDimZ)
        block = (p.blockDimX, p.blockDimY, p.blockDimZ)
        return (name, grid, block, int(p.sharedMemBytes), words)

    @staticmethod
    def _memset_snapshot(p: Any) -> tuple:
        return (int(p.dst), int(p.value), int(p.elementSize), int(p.width), int(p.height))

    @staticmethod
    def _memcpy_snapshot(p: Any) -> tuple:
        return (int(p.dstDevice), int(p.srcDevice), int(p.WidthInBytes))

    def cuGraphAddKernelNode(self, graph: int, deps: Any, count: int, p: Any) -> tuple:
        return self._add_node(graph, deps, count, "kernel", self._kernel_snapshot(p))

    def cuGraphAddMemsetNode(self, graph: int, deps: Any, count: int, p: Any, ctx: Any) -> tuple:
        return self._add_node(graph, deps, count, "memset", self._memset_snapshot(p))

    def cuGraphAddMemcpyNode(self, graph: int, deps: Any, count: int, p: Any, ctx: Any) -> tuple:
        return self._add_node(graph, deps, count, "memcpy", self._memcpy_snapshot(p))

    def cuGraphAddEmptyNode(self, graph: int, deps: Any, count: int) -> tuple:
        return self._add_node(graph, deps, count, "empty", None)

    def graph_dependencies(self, graph_exec: int) -> list[tuple[str, tuple[int, ...]]]:
        """Each node of an instantiated graph as (kind, indices of the nodes it waits on)."""
        return list(self._graph_tables()[2][int(graph_exec)][0])

    def _topology(self, graph: int) -> list[tuple[str, tuple[int, ...]]]:
        graphs, nodes, _ = self._graph_tables()
        order = graphs[int(graph)]
        index = {node: i for i, node in enumerate(order)}
        return [(nodes[n][0], tuple(index[d] for d in nodes[n][1])) for n in order]

    def cuGraphInstantiate(self, graph: int, flags: int) -> tuple:
        if self.graph_refused:
            return (NOT_SUPPORTED, None)
        graphs, nodes, execs = self._graph_tables()
        handle = next(self._handles)
        instance = {n: (nodes[n][0], nodes[n][2]) for n in graphs[int(graph)]}
        execs[handle] = (self._topology(graph), instance)
        return (0, handle)

    def cuGraphExecDestroy(self, graph_exec: int) -> tuple:
        self._graph_tables()[2].pop(int(graph_exec), None)
        return (0,)

    def cuGraphExecUpdate(self, graph_exec: int, graph: int) -> tuple:
        """Succeeds when ``graph`` has the instance's topology (kinds and dependencies by
        position); the instance's nodes, still named by the nodes of the graph it was
        instantiated from, then take ``graph``'s parameters position by position."""
        graphs, nodes, execs = self._graph_tables()
        topology, instance = execs[int(graph_exec)]
        if self._topology(graph) != topology:
            return (910, None)  # CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE
        for old, new in zip(list(instance), graphs[int(graph)]):
            instance[old] = (nodes[new][0], nodes[new][2])
        return (0, None)

    def _set_exec_node(self, graph_exec: int, node: int, snapshot: Any) -> tuple:
        """As CUDA: ``node`` is a node of the graph the instance was instantiated from,
        which must still exist."""
        instance = self._graph_tables()[2][int(graph_exec)][1]
        if int(node) not in instance or int(node) not in self._graph_tables()[1]:
            return (INVALID_VALUE,)
        kind, _ = instance[int(node)]
        instance[int(node)] = (kind, snapshot)
        return (0,)

    def cuGraphExecKernelNodeSetParams(self, graph_exec: int, node: int, p: Any) -> tuple:
        return self._set_exec_node(graph_exec, node, self._kernel_snapshot(p))

    def cuGraphExecMemsetNodeSetParams(self, graph_exec: int, node: int, p: Any, ctx: Any) -> tuple:
        return self._set_exec_node(graph_exec, node, self._memset_snapshot(p))

    def cuGraphExecMemcpyNodeSetParams(self, graph_exec: int, node: int, p: Any, ctx: Any) -> tuple:
        return self._set_exec_node(graph_exec, node, self._memcpy_snapshot(p))

    def cuGraphLaunch(self, graph_exec: int, stream: Any) -> tuple:
        """Run the instance's nodes in the order they were added (a topological order)."""
        for kind, snapshot in list(self._graph_tables()[2][int(graph_exec)][1].values()):
            if kind == "kernel":
                self.launches.append(Launch(*snapshot))
            elif kind == "memset":
                dst, value, size, width, _height = snapshot
                self._set(dst, value, width, size)
            elif kind == "memcpy":
                self._copy(*snapshot)
        return (0,)

    # -- stream-ordered allocator (memory pools) ------------------------------------------

    class CUmemPoolProps:
        """``CUmemPoolProps``: the fields hal-cuda sets."""

        class _Location:
            type: Any = None
            id = 0

        def __init__(self) -> None:
            self.allocType: Any = None
            self.location = FakeDriver.CUmemPoolProps._Location()

    class CUmemAllocationType:
        CU_MEM_ALLOCATION_TYPE_PINNED = 1

    class CUmemLocationType:
        CU_MEM_LOCATION_TYPE_DEVICE = 1

    class CUmemPool_attribute:
        CU_MEMPOOL_ATTR_RELEASE_THRESHOLD = 4

    @staticmethod
    def cuuint64_t(value: int) -> int:
        return int(value)

    pool_refused = False
    """Set: cuMemPoolCreate fails (CUDA_ERROR_NOT_SUPPORTED), as on a GPU without memory
    pools."""

    def _pool_tables(self) -> tuple[dict, dict]:
        """pools: handle -> {attribute: value}; pool_allocations: address -> pool."""
        tables = self.__dict__.get("_pool_state")
        if tables is None:
            tables = self.__dict__["_pool_state"] = ({}, {})
        return tables

    @property
    def live_pools(self) -> dict:
        """Memory pools created and not destroyed: handle -> their attributes."""
        return self._pool_tables()[0]

    @property
    def pool_allocations(self) -> dict:
        """Live stream-ordered allocations: address -> the pool they came from."""
        return self._pool_tables()[1]

    def cuMemPoolCreate(self, props: Any) -> tuple:
        if self.pool_refused:
            return (NOT_SUPPORTED, None)
        handle = next(self._handles)
        self._pool_tables()[0][handle] = {"location": int(props.location.id)}
        return (0, handle)

    def cuMemPoolSetAttribute(self, pool: int, attr: Any, value: Any) -> tuple:
        pools = self._pool_tables()[0]
        if int(pool) not in pools:
            return (INVALID_VALUE,)
        pools[int(pool)][int(attr)] = int(value)
        return (0,)

    def cuMemPoolTrimTo(self, pool: int, keep: int) -> tuple:
        """Counted (the stand-in keeps no reserve: freed memory goes straight back)."""
        return (0,) if int(pool) in self._pool_tables()[0] else (INVALID_VALUE,)

    def cuMemPoolDestroy(self, pool: int) -> tuple:
        """As CUDA: allocations still live stay valid (freed later as usual)."""
        return (0,) if self._pool_tables()[0].pop(int(pool), None) is not None else (400,)

    def cuMemAllocFromPoolAsync(self, size: int, pool: int, stream: Any) -> tuple:
        if int(pool) not in self._pool_tables()[0]:
            return (INVALID_VALUE, 0)
        err, address = self._allocate(int(size))
        if not err:
            self._pool_tables()[1][address] = int(pool)
        return (err, address)

    def cuMemAllocAsync(self, size: int, stream: Any) -> tuple:
        return self._allocate(int(size))

    def cuMemFreeAsync(self, address: int, stream: Any) -> tuple:
        self._pool_tables()[1].pop(int(address), None)
        return self._free(address)


def _counted(calls: collections.Counter, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        calls[(threading.current_thread().name, name)] += 1
        return fn(*args)

    return call


def install(monkeypatch: Any, api: Any) -> None:
    """Make ``api`` (a stand-in driver) ``cuda.bindings.driver`` for one test: the driver
    module's cached contexts are forgotten (and restored by ``monkeypatch`` afterwards), so
    no real context is reused and none of the stand-in's survives the test."""
    package = type(sys)("cuda.bindings")
    package.driver = api  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda.bindings", package)
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", api)
    monkeypatch.setattr(cuda_driver, "_contexts", {})
    cuda_api.reset_for_tests()
