"""Kernel-only programs share instantiated graphs by exact shape (``kernel_graphs``), over
the stand-in driver (nodes copy their parameters when added or set; a launch runs an
instance's own copy). Pinned: a recording of a shape that ran before (one-shot included)
builds no graph and instantiates nothing, sets exactly the kernel nodes whose parameter
words changed (none when none did), and launches what its own recording says; a one-shot
shape seen once replays as stream launches; binding tables that recur get instances of
their own; the hot node-set call passes CUDA's v2 node-parameter struct."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hal_cuda import cuda_api, kernel_graphs
from hal_cuda import driver as cuda_driver
from hal_cuda.kernels import CTS_LIBRARY, load_ptx

from hal_core import (
    BufferBinding,
    BufferParams,
    BufferRef,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    FailedPreconditionError,
    OutOfRangeError,
    QueueAffinity,
)
from hal_core.backend import device_from_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import FakeDriver, install  # noqa: E402

ANY = QueueAffinity.ANY
TIMEOUT = 10.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
ONE_SHOT = CommandBufferMode.ONE_SHOT | CommandBufferMode.UNVALIDATED
N = 16


@pytest.fixture
def fake(monkeypatch: Any) -> Any:
    api = FakeDriver()
    install(monkeypatch, api)
    yield api
    api.release()
    cuda_api.reset_for_tests()


@pytest.fixture
def dev(fake: Any) -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    device = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    yield device
    device.close()


def _buffer(dev: Any) -> Any:
    return dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)


def _negate(dev: Any) -> Any:
    return dev.create_executable_cache("kernel-graphs").prepare("ptx", load_ptx(CTS_LIBRARY))


def _count(n: int) -> bytes:
    return n.to_bytes(4, "little")


def _record(dev: Any, exe: Any, bindings: list, mode: int = 0, counts: Any = None) -> Any:
    """A chain of negate dispatches (a barrier after each); ``bindings[i]`` per dispatch,
    ``counts[i]`` its element-count constant (4 by default)."""
    cb = dev.create_command_buffer(mode, CommandCategory.ANY, ANY, 2)
    cb.begin()
    config = DispatchConfig.static(1)
    for i, pair in enumerate(bindings):
        count = _count(counts[i] if counts else 4)
        cb.dispatch(exe, "negate", config, count, pair)
        cb.execution_barrier()
    cb.end()
    return cb


def _execute(dev: Any, cb: Any, table: Any = ()) -> None:
    s = dev.create_semaphore()
    dev.queue_execute(ANY, (), [(s, 1)], cb, table)
    s.wait(1, TIMEOUT)


def _calls(fake: FakeDriver) -> dict[str, int]:
    wanted = ("Graph", "cuLaunchKernel")
    return {n: c for n, c in fake.calls_on("MainThread").items() if any(w in n for w in wanted)}


def _address(buffer: Any) -> int:
    from hal_core.backend import buffer_storage

    return buffer_storage(buffer).address + buffer.byte_offset


def test_a_second_recording_of_a_shape_launches_the_instance_untouched(
    dev: Any, fake: FakeDriver
) -> None:
    exe = _negate(dev)
    a, b = _buffer(dev), _buffer(dev)
    pairs = [(a, b) if i & 1 else (b, a) for i in range(N)]
    fake.reset_calls()
    reusable = _record(dev, exe, pairs)
    calls = _calls(fake)
    assert calls["cuGraphInstantiate"] == 1 and calls["cuGraphAddKernelNode"] == N
    _execute(dev, reusable)
    fake.reset_calls()
    fake.launches.clear()
    cb = _record(dev, exe, pairs, ONE_SHOT)
    _execute(dev, cb)
    # No graph built, nothing instantiated, no node set: one launch of the instance.
    assert _calls(fake) == {"cuGraphLaunch": 1}
    assert [launch.params for launch in fake.launches] == [
        [_address(y), _address(x), 4] for x, y in [(b, a) if i & 1 else (a, b) for i in range(N)]
    ]
    kernel = dev.backend.graph_cache.kernel
    assert kernel.instantiations == 1 and kernel.node_sets == 0


def test_changed_parameters_set_exactly_their_nodes(dev: Any, fake: FakeDriver) -> None:
    exe = _negate(dev)
    a, b, c = _buffer(dev), _buffer(dev), _buffer(dev)
    pairs = [(a, b)] * N
    _execute(dev, _record(dev, exe, pairs))
    changed = list(pairs)
    changed[3] = (c, b)
    changed[7] = (a, c)
    counts = [4] * N
    counts[11] = 2  # a constant differs: that node too
    fake.reset_calls()
    fake.launches.clear()
    _execute(dev, _record(dev, exe, changed, ONE_SHOT, counts))
    calls = _calls(fake)
    assert calls == {"cuGraphExecKernelNodeSetParams": 3, "cuGraphLaunch": 1}
    expected = [[_address(x), _address(y), n] for (x, y), n in zip(changed, counts)]
    assert [launch.params for launch in fake.launches] == expected
    # The reusable recording's words, replaced on the instance, come back: they get an
    # instance of their own, and from then on both sets of words launch untouched.
    fake.reset_calls()
    _execute(dev, _record(dev, exe, pairs, ONE_SHOT))
    calls = _calls(fake)
    assert calls["cuGraphInstantiate"] == 1 and "cuGraphExecKernelNodeSetParams" not in calls
    fake.reset_calls()
    fake.launches.clear()
    _execute(dev, _record(dev, exe, changed, ONE_SHOT, counts))
    _execute(dev, _record(dev, exe, pairs, ONE_SHOT))
    assert _calls(fake) == {"cuGraphLaunch": 2}
    assert [launch.params for launch in fake.launches] == expected + [
        [_address(a), _address(b), 4]
    ] * N


def test_a_one_shot_shape_seen_once_replays_as_stream_launches(dev: Any, fake: FakeDriver) -> None:
    exe = _negate(dev)
    a, b = _buffer(dev), _buffer(dev)
    pairs = [(a, b)] * N
    fake.reset_calls()
    _execute(dev, _record(dev, exe, pairs, ONE_SHOT))
    assert _calls(fake) == {"cuLaunchKernel": N}
    # Recorded a second time: instantiated once, then every later recording launches it.
    fake.reset_calls()
    _execute(dev, _record(dev, exe, pairs, ONE_SHOT))
    calls = _calls(fake)
    assert calls["cuGraphInstantiate"] == 1 and calls["cuGraphLaunch"] == 1
    assert "cuLaunchKernel" not in calls
    fake.reset_calls()
    fake.launches.clear()
    _execute(dev, _record(dev, exe, pairs, ONE_SHOT))
    assert _calls(fake) == {"cuGraphLaunch": 1}
    assert [launch.params for launch in fake.launches] == [[_address(a), _address(b), 4]] * N


def test_another_shape_does_not_take_the_instance(dev: Any, fake: FakeDriver) -> None:
    exe = _negate(dev)
    a, b = _buffer(dev), _buffer(dev)
    _execute(dev, _record(dev, exe, [(a, b)] * N))
    fake.reset_calls()
    # One dispatch more, and the same count with no barrier between two dispatches.
    _execute(dev, _record(dev, exe, [(a, b)] * (N + 1), ONE_SHOT))
    cb = dev.create_command_buffer(ONE_SHOT, CommandCategory.ANY, ANY, 0)
    cb.begin()
    for i in range(N):
        cb.dispatch(exe, "negate", DispatchConfig.static(1), _count(4), (a, b))
        if i != 5:
            cb.execution_barrier()
    cb.end()
    _execute(dev, cb)
    assert _calls(fake) == {"cuLaunchKernel": 2 * N + 1}


def test_binding_tables_set_nodes_until_they_recur(dev: Any, fake: FakeDriver) -> None:
    exe = _negate(dev)
    slots = (BufferRef.indirect(0, 0, 16), BufferRef.indirect(1, 0, 16))
    cb = _record(dev, exe, [slots] * N)
    tables = [[BufferBinding(_buffer(dev)), BufferBinding(_buffer(dev))] for _ in range(2)]
    kernel = dev.backend.graph_cache.kernel
    fake.reset_calls()
    _execute(dev, cb, tables[0])
    assert _calls(fake) == {
        "cuGraphCreate": 1,
        "cuGraphAddKernelNode": N,
        "cuGraphInstantiate": 1,
        "cuGraphLaunch": 1,
    }
    fake.reset_calls()
    _execute(dev, cb, tables[0])
    assert _calls(fake) == {"cuGraphLaunch": 1}
    # A new table: every node set. The first one again: it was replaced, so it gets an
    # instance of its own; from then on both launch untouched.
    fake.reset_calls()
    _execute(dev, cb, tables[1])
    assert _calls(fake) == {"cuGraphExecKernelNodeSetParams": N, "cuGraphLaunch": 1}
    _execute(dev, cb, tables[0])
    assert kernel.instantiations == 2
    fake.reset_calls()
    fake.launches.clear()
    for table in tables * 2:
        _execute(dev, cb, table)
    assert _calls(fake) == {"cuGraphLaunch": 4}
    expected = [[[_address(t[0].buffer), _address(t[1].buffer), 4]] * N for t in tables * 2]
    assert [launch.params for launch in fake.launches] == [w for run in expected for w in run]


def test_a_binding_that_does_not_hold_the_references_fails_and_later_work_runs(
    dev: Any, fake: FakeDriver, monkeypatch: Any
) -> None:
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    exe = _negate(dev)
    slots = (BufferRef.indirect(0, 0, 16), BufferRef.indirect(1, 0, 16))
    cb = _record(dev, exe, [slots] * N, CommandBufferMode.UNVALIDATED)
    good = [BufferBinding(_buffer(dev)), BufferBinding(_buffer(dev))]
    small = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 8)
    s = dev.create_semaphore()
    dev.queue_execute(ANY, (), [(s, 1)], cb, [BufferBinding(small), good[1]])
    with pytest.raises(OutOfRangeError):
        s.wait(1, TIMEOUT)
    fake.launches.clear()
    _execute(dev, cb, good)
    assert [launch.params for launch in fake.launches] == [
        [_address(good[0].buffer), _address(good[1].buffer), 4]
    ] * N


def test_the_stand_in_graphs_match_stream_launches(dev: Any, fake: FakeDriver) -> None:
    exe = _negate(dev)
    a, b, c = _buffer(dev), _buffer(dev), _buffer(dev)
    pairs = [(a, b), (b, c), (c, a)] * 5
    counts = [1, 2, 3, 4] * 3 + [4, 4, 4]
    graph_cb = _record(dev, exe, pairs, 0, counts)
    fake.launches.clear()
    _execute(dev, graph_cb)
    graphed = [launch.params for launch in fake.launches]
    stream_cb = _record(dev, exe, pairs, 0, counts)
    stream_cb.program.graph = None
    fake.launches.clear()
    _execute(dev, stream_cb)
    assert graphed == [launch.params for launch in fake.launches]
    assert len(graphed) == len(pairs)


def test_kernel_node_params_is_cudas_v2_layout() -> None:
    p = kernel_graphs.KernelNodeParams
    offsets = {field[0]: getattr(p, field[0]).offset for field in p._fields_}
    assert offsets == {
        "func": 0,
        "gridDimX": 8,
        "gridDimY": 12,
        "gridDimZ": 16,
        "blockDimX": 20,
        "blockDimY": 24,
        "blockDimZ": 28,
        "sharedMemBytes": 32,
        "kernelParams": 40,
        "extra": 48,
        "kern": 56,
        "ctx": 64,
    }
    assert ctypes.sizeof(p) == 72


def cb_shape(dev: Any, exe: Any, pairs: list) -> tuple:
    return _record(dev, exe, pairs, ONE_SHOT).program.kernel_shape


class _Library:
    """A stand-in libcuda whose two graph entry points are C callbacks forwarding to the
    stand-in driver, reading the node parameters from the struct the call passes."""

    def __init__(self, fake: FakeDriver, refuse: int = 0) -> None:
        """``refuse``: what both calls return instead (0: they forward)."""
        self.sets: list[tuple[int, int]] = []
        callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)

        def set_params(graph_exec: int, node: int, params: int) -> int:
            self.sets.append((graph_exec, node))
            if refuse:
                return refuse
            p = kernel_graphs.KernelNodeParams.from_address(params)
            return int(fake.cuGraphExecKernelNodeSetParams(graph_exec, node, p)[0])

        def launch(graph_exec: int, stream: int) -> int:
            if refuse:
                return refuse
            return int(fake.cuGraphLaunch(graph_exec, stream)[0])

        self.cuGraphExecKernelNodeSetParams_v2 = callback(set_params)
        self.cuGraphLaunch = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(
            launch
        )


def test_hot_calls_set_nodes_through_the_v2_struct(dev: Any, fake: FakeDriver) -> None:
    library = _Library(fake)
    kernel = dev.backend.graph_cache.kernel
    kernel._hot = kernel_graphs.HotGraphCalls(library)
    exe = _negate(dev)
    a, b, c = _buffer(dev), _buffer(dev), _buffer(dev)
    _execute(dev, _record(dev, exe, [(a, b)] * N))
    changed = [(a, b)] * N
    changed[2] = (c, c)
    fake.launches.clear()
    fake.reset_calls()
    _execute(dev, _record(dev, exe, changed, ONE_SHOT))
    instance = kernel._shapes[cb_shape(dev, exe, changed)].instances[0]
    assert library.sets == [(int(instance.graph_exec), int(instance.nodes[2]))]
    assert [launch.params for launch in fake.launches] == [
        [_address(x), _address(y), 4] for x, y in changed
    ]


def test_a_refused_hot_call_falls_back_to_the_driver_module(dev: Any, fake: FakeDriver) -> None:
    kernel = dev.backend.graph_cache.kernel
    exe = _negate(dev)
    a, b, c = _buffer(dev), _buffer(dev), _buffer(dev)
    _execute(dev, _record(dev, exe, [(a, b)] * N))
    library = _Library(fake, refuse=801)
    kernel._hot = kernel_graphs.HotGraphCalls(library)
    changed = [(a, b)] * N
    changed[1] = changed[4] = (c, c)
    fake.reset_calls()
    fake.launches.clear()
    _execute(dev, _record(dev, exe, changed, ONE_SHOT))
    # The first hot set was refused: both nodes set, and the launch made, by the module.
    assert len(library.sets) == 1 and kernel.hot_error == 801
    assert _calls(fake) == {"cuGraphExecKernelNodeSetParams": 2, "cuGraphLaunch": 1}
    assert [launch.params for launch in fake.launches] == [
        [_address(x), _address(y), 4] for x, y in changed
    ]


def test_a_refused_instantiation_replays_as_stream_launches(dev: Any, fake: FakeDriver) -> None:
    fake.graph_refused = True
    exe = _negate(dev)
    a, b = _buffer(dev), _buffer(dev)
    cb = _record(dev, exe, [(a, b)] * N)
    fake.reset_calls()
    fake.launches.clear()
    _execute(dev, cb)
    # Refused when recorded: not tried again.
    assert _calls(fake) == {"cuLaunchKernel": N}
    assert [launch.params for launch in fake.launches] == [[_address(a), _address(b), 4]] * N
    assert np.array_equal(cb.program.parameters.words[:3], [_address(a), _address(b), 4])


def test_programs_with_a_reference_tuple_per_dispatch(dev: Any, fake: FakeDriver) -> None:
    # More distinct tuples than the layout groups by identity: grouped by value, with
    # direct BufferRefs into buffers at offsets.
    exe = _negate(dev)
    a, b = _buffer(dev), _buffer(dev)
    count = 80

    def refs(i: int) -> tuple:
        return (BufferRef(a, 4 * (i % 3), 4), BufferRef(b, 4 * (i % 2), 4))

    def record(mode: int) -> Any:
        cb = dev.create_command_buffer(mode, CommandCategory.ANY, ANY, 0)
        cb.begin()
        for i in range(count):
            cb.dispatch(exe, "negate", DispatchConfig.static(1), _count(1), refs(i))
            cb.execution_barrier()
        cb.end()
        return cb

    expected = [[_address(a) + 4 * (i % 3), _address(b) + 4 * (i % 2), 1] for i in range(count)]
    fake.launches.clear()
    _execute(dev, record(0))
    assert [launch.params for launch in fake.launches] == expected
    fake.reset_calls()
    fake.launches.clear()
    _execute(dev, record(ONE_SHOT))
    assert _calls(fake) == {"cuGraphLaunch": 1}
    assert [launch.params for launch in fake.launches] == expected


def test_an_uncommitted_transient_defers_the_instance_to_the_first_execution(
    dev: Any, fake: FakeDriver, monkeypatch: Any
) -> None:
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    exe = _negate(dev)
    out = _buffer(dev)
    s = dev.create_semaphore()
    t = dev.queue_alloca(ANY, [(s, 1)], [(s, 2)], BufferParams(usage=USAGE), 16)
    fake.reset_calls()
    cb = _record(dev, exe, [(t, out)] * N)
    assert _calls(fake) == {}  # nothing to build from yet
    s.signal(1)
    s.wait(2, TIMEOUT)
    fake.launches.clear()
    _execute(dev, cb)
    assert _calls(fake)["cuGraphInstantiate"] == 1
    assert [launch.params for launch in fake.launches] == [[_address(t), _address(out), 4]] * N
    dev.queue_dealloca(ANY, [(s, 2)], [(s, 3)], t)
    s.wait(3, TIMEOUT)
    fake.reset_calls()
    s2 = dev.create_semaphore()
    dev.queue_execute(ANY, (), [(s2, 1)], cb)
    with pytest.raises(FailedPreconditionError):
        s2.wait(1, TIMEOUT)
    assert "cuGraphLaunch" not in fake.calls_on("MainThread")
    # Later work still runs.
    fake.launches.clear()
    _execute(dev, _record(dev, exe, [(out, out)] * N, ONE_SHOT))
    assert [launch.params for launch in fake.launches] == [[_address(out), _address(out), 4]] * N


def test_instances_are_destroyed_when_the_device_closes(fake: FakeDriver) -> None:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    dev = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    exe = _negate(dev)
    a, b = _buffer(dev), _buffer(dev)
    cbs = [_record(dev, exe, [(a, b)] * (N + i)) for i in range(3)]
    _execute(dev, _record(dev, exe, [(b, a)] * N, ONE_SHOT))  # sets the first's nodes
    assert fake.live_graphs == 6  # a graph and an instance per shape
    del cbs
    dev.close()
    assert fake.live_graphs == 0


def test_hot_graph_calls_only_for_the_real_driver_and_not_when_bindings_are_asked(
    monkeypatch: Any,
) -> None:
    class Bindings:
        pass

    fake = FakeDriver()
    assert kernel_graphs.hot_graph_calls(fake) is None  # a stand-in driver module
    hot = cuda_api.HotCalls(Bindings(), _Libc(), raw_launch=False)
    library = _Libc()
    monkeypatch.setattr(ctypes, "PyDLL", lambda name: library)
    assert isinstance(kernel_graphs.hot_graph_calls(hot), kernel_graphs.HotGraphCalls)
    monkeypatch.setenv(cuda_api.LAUNCH_ENV, "bindings")
    assert kernel_graphs.hot_graph_calls(hot) is None


class _Libc:
    """Every entry point is C's ``abs`` (a callable C function of the right convention)."""

    def __init__(self) -> None:
        self._lib = ctypes.PyDLL(None)

    def __getattr__(self, name: str) -> Any:
        return self._lib.abs


def _dependencies(fake: FakeDriver) -> list[tuple[str, tuple[int, ...]]]:
    """The nodes of the one graph built, in order: (kind, indices of their dependencies)."""
    graphs, nodes, _ = fake._graph_tables()
    (handles,) = [h for h in graphs.values() if h]
    index = {h: i for i, h in enumerate(handles)}
    return [(nodes[h][0], tuple(index[d] for d in nodes[h][1])) for h in handles]


@pytest.mark.parametrize("with_fill", [False, True], ids=["kernel-only", "with-a-fill"])
def test_a_wide_stage_runs_over_lanes_and_the_next_stage_waits_on_their_tails(
    dev: Any, fake: FakeDriver, with_fill: bool
) -> None:
    """A stage of W dispatches is not W root nodes (slow on a GPU): node k depends on node
    k - STAGE_LANES, the first lanes on the stage before; the stage's join waits on each
    lane's last node. Both graph builders (kernel-only programs, and programs with a fill)."""
    lanes = kernel_graphs.STAGE_LANES
    width = 2 * lanes + 3
    exe = _negate(dev)
    a, b = _buffer(dev), _buffer(dev)
    cb = dev.create_command_buffer(0, CommandCategory.ANY, ANY, 0)
    cb.begin()
    for _ in range(width):
        cb.dispatch(exe, "negate", DispatchConfig.static(1), _count(4), (a, b))
    cb.execution_barrier()
    if with_fill:
        cb.fill_buffer(BufferRef(b, 0, 4), b"\x00\x00\x00\x00")
    else:
        cb.dispatch(exe, "negate", DispatchConfig.static(1), _count(4), (b, a))
    cb.end()
    _execute(dev, cb)
    nodes = _dependencies(fake)
    stage = nodes[:width]
    assert [deps for _kind, deps in stage] == [
        () if k < lanes else (k - lanes,) for k in range(width)
    ]
    join, last = nodes[width], nodes[width + 1]
    assert join == ("empty", tuple(range(width - lanes, width)))
    assert last[1] == (width,)
    assert last[0] == ("memset" if with_fill else "kernel") and len(nodes) == width + 2
    s = dev.create_semaphore()
    dev.queue_execute(ANY, (), [(s, 1)], cb)
    s.wait(1, TIMEOUT)
