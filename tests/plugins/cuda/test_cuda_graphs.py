"""Reusable command buffers as CUDA graphs built with the node API, over the stand-in
driver (``fake_cuda_driver``: nodes copy their parameters when added or set, a launch runs
an instance's own copy). Pinned here: one instantiation per program, a launch per
execution, node-parameter updates for new bindings only where they changed, graph update
instead of instantiation for a re-recorded program of the same shape, dependencies from
barriers, and stream replay where the graph cannot express an execution."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hal_cuda import cuda_api
from hal_cuda import driver as cuda_driver
from hal_cuda.kernels import CTS_LIBRARY, load_ptx

import hal_core
from hal_core import (
    BufferBinding,
    BufferParams,
    BufferRef,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    MemoryAccess,
    QueueAffinity,
)
from hal_core.backend import device_from_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import FakeDriver, install  # noqa: E402

ANY = QueueAffinity.ANY
TIMEOUT = 10.0
COUNT_4 = (4).to_bytes(4, "little")
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
CHAIN = 32


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


def _buffer(dev: Any, size: int, data: bytes | None = None) -> Any:
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), size)
    if data is not None:
        s = dev.create_semaphore()
        dev.queue_update(ANY, (), [(s, 1)], np.frombuffer(data, np.uint8), 0, buf, 0, len(data))
        s.wait(1, TIMEOUT)
    return buf


def _read(dev: Any, buf: Any) -> bytes:
    out = bytearray(buf.byte_length)
    file = dev.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    s = dev.create_semaphore()
    dev.queue_write(ANY, (), [(s, 1)], buf, 0, file, 0, len(out))
    s.wait(1, TIMEOUT)
    file.close()
    return bytes(out)


def _execute(dev: Any, cb: Any, bindings: Any = ()) -> None:
    s = dev.create_semaphore()
    dev.queue_execute(ANY, (), [(s, 1)], cb, bindings)
    s.wait(1, TIMEOUT)


def _negate(dev: Any) -> Any:
    return dev.create_executable_cache("graphs").prepare("ptx", load_ptx(CTS_LIBRARY))


def _graph_calls(fake: FakeDriver) -> dict[str, int]:
    return {name: n for name, n in fake.calls_on("MainThread").items() if "Graph" in name}


def _chain(dev: Any, exe: Any, a: Any, b: Any, mode: int = 0) -> Any:
    """fill a | dispatch negate a->b | copy b[0:4]->a[12:16], a barrier between each."""
    cb = dev.create_command_buffer(mode, CommandCategory.ANY, ANY, 0)
    cb.begin()
    cb.fill_buffer(BufferRef(a, 0, 12), b"\x00\x00\x80\x3f")  # 1.0f
    cb.execution_barrier()
    cb.dispatch(exe, "negate", DispatchConfig.static(1), COUNT_4, [a, b])
    cb.execution_barrier()
    cb.copy_buffer(BufferRef(b, 0, 4), BufferRef(a, 12, 4))
    cb.end()
    return cb


def test_direct_program_is_one_graph_built_at_end_and_one_launch_per_execution(
    dev: Any, fake: FakeDriver
) -> None:
    exe = _negate(dev)
    a, b = _buffer(dev, 16), _buffer(dev, 16)
    fake.reset_calls()
    cb = _chain(dev, exe, a, b)
    assert _graph_calls(fake) == {
        "cuGraphCreate": 1,
        "cuGraphAddMemsetNode": 1,
        "cuGraphAddKernelNode": 1,
        "cuGraphAddMemcpyNode": 1,
        "cuGraphInstantiate": 1,
    }
    graph = cb.program.graph.graph
    assert fake.graph_dependencies(graph.graph_exec) == [
        ("memset", ()),
        ("kernel", (0,)),
        ("memcpy", (1,)),
    ]
    fake.reset_calls()
    for _ in range(3):
        _execute(dev, cb)
    calls = fake.calls_on("MainThread")
    assert calls["cuGraphLaunch"] == 3
    assert "cuLaunchKernel" not in calls and "cuGraphInstantiate" not in calls
    assert not [name for name in calls if "SetParams" in name]
    assert len(fake.launches) == 3
    address_a, address_b = fake.launches[0].params[:2]
    assert fake.launches[0].params == [address_a, address_b, 4]
    # The fill and the copy ran in the graph: a = 1.0 x3 then b[0] (the kernel is not
    # run by the stand-in, so b stays zero).
    assert np.frombuffer(_read(dev, a), np.float32).tolist() == [1.0, 1.0, 1.0, 0.0]


def _slot_program(dev: Any, exe: Any, out: Any) -> Any:
    """Slot 0 is read by every dispatch, slot 1 written by the fill only."""
    cb = dev.create_command_buffer(0, CommandCategory.ANY, ANY, 2)
    cb.begin()
    cb.fill_buffer(BufferRef.indirect(1, 0, 64), b"\x07")
    cb.execution_barrier()
    for i in range(CHAIN):
        refs = [BufferRef.indirect(0, 16 * i, 16), BufferRef(out, 16 * i, 16)]
        cb.dispatch(exe, "negate", DispatchConfig.static(1), COUNT_4, refs)
        cb.execution_barrier()
    cb.end()
    return cb


def test_recurring_binding_tables_launch_their_own_instance_without_updates(
    dev: Any, fake: FakeDriver
) -> None:
    """The graph is built at the first execution; the same table again launches it as it
    is; a table seen for the first time updates it; a table coming back gets an instance
    of its own, after which alternating tables set no node parameter."""
    exe = _negate(dev)
    src, out, other_out = _buffer(dev, 16 * CHAIN), _buffer(dev, 16 * CHAIN), _buffer(dev, 64)
    cb = _slot_program(dev, exe, out)
    fake.reset_calls()
    assert _graph_calls(fake) == {}  # waits for a table
    first = [BufferBinding(src), BufferBinding(out)]
    second = [BufferBinding(src), BufferBinding(other_out)]
    _execute(dev, cb, first)
    assert _graph_calls(fake)["cuGraphInstantiate"] == 1
    assert _graph_calls(fake)["cuGraphAddKernelNode"] == CHAIN
    base = fake.launches[0].params[0]
    assert [launch.params[0] for launch in fake.launches] == [base + 16 * i for i in range(CHAIN)]
    fake.reset_calls()
    _execute(dev, cb, [BufferBinding(src), BufferBinding(out)])
    assert _graph_calls(fake) == {"cuGraphLaunch": 1}
    fake.reset_calls()
    _execute(dev, cb, second)  # new: slot 1 moved, so the one memset node is set
    assert _graph_calls(fake) == {"cuGraphExecMemsetNodeSetParams": 1, "cuGraphLaunch": 1}
    assert _read(dev, other_out) == b"\x07" * 64
    fake.reset_calls()
    _execute(dev, cb, first)  # back again: an instance of its own
    assert _graph_calls(fake)["cuGraphInstantiate"] == 1
    assert "cuGraphExecMemsetNodeSetParams" not in _graph_calls(fake)
    fake.reset_calls()
    for _ in range(3):
        _execute(dev, cb, second)
        _execute(dev, cb, first)
    assert _graph_calls(fake) == {"cuGraphLaunch": 6}
    assert len(cb.program.graph.graphs) == 2
    assert "cuLaunchKernel" not in fake.calls_on("MainThread")


def test_new_tables_update_only_nodes_whose_slots_changed(dev: Any, fake: FakeDriver) -> None:
    """A table not seen before updates the most recently used instance: a new buffer in
    slot 1 sets the one memset node; in slot 0, the kernel nodes, each to the new address
    (the binding's offset composed with the reference's)."""
    exe = _negate(dev)
    src, out = _buffer(dev, 16 * CHAIN + 16), _buffer(dev, 16 * CHAIN)
    outs = [_buffer(dev, 64) for _ in range(3)]
    cb = _slot_program(dev, exe, out)
    _execute(dev, cb, [BufferBinding(src), BufferBinding(outs[0])])
    base = fake.launches[0].params[0]
    fake.reset_calls()
    _execute(dev, cb, [BufferBinding(src), BufferBinding(outs[1])])
    assert _graph_calls(fake) == {"cuGraphExecMemsetNodeSetParams": 1, "cuGraphLaunch": 1}
    assert _read(dev, outs[1]) == b"\x07" * 64
    fake.reset_calls()
    _execute(dev, cb, [BufferBinding(src, 16, 16 * CHAIN), BufferBinding(outs[2])])
    assert _graph_calls(fake) == {
        "cuGraphExecKernelNodeSetParams": CHAIN,
        "cuGraphExecMemsetNodeSetParams": 1,
        "cuGraphLaunch": 1,
    }
    assert [launch.params[0] for launch in fake.launches] == [
        base + 16 + 16 * i for i in range(CHAIN)
    ]
    assert len(cb.program.graph.graphs) == 1
    assert "cuLaunchKernel" not in fake.calls_on("MainThread")


def test_a_table_error_fails_the_execution_and_the_graph_still_serves_the_next(
    dev: Any, fake: FakeDriver
) -> None:
    exe = _negate(dev)
    src, out = _buffer(dev, 16), _buffer(dev, 16)
    cb = dev.create_command_buffer(CommandBufferMode.UNVALIDATED, CommandCategory.ANY, ANY, 1)
    cb.begin()
    cb.dispatch(
        exe, "negate", DispatchConfig.static(1), COUNT_4, [BufferRef.indirect(0, 0, 16), out]
    )
    cb.end()
    fake.reset_calls()
    _execute(dev, cb, [BufferBinding(src)])
    s = dev.create_semaphore()
    dev.queue_execute(ANY, (), [(s, 1)], cb, [BufferBinding(src, 0, 8)])  # too short
    with pytest.raises(hal_core.OutOfRangeError):
        s.wait(1, TIMEOUT)
    address = fake.launches[0].params[0]
    fake.reset_calls()
    _execute(dev, cb, [BufferBinding(src)])
    assert _graph_calls(fake) == {"cuGraphLaunch": 1}
    assert fake.launches[0].params[0] == address


def test_re_recorded_program_of_the_same_shape_updates_a_cached_graph(
    dev: Any, fake: FakeDriver
) -> None:
    exe = _negate(dev)
    a, b = _buffer(dev, 16), _buffer(dev, 16)
    c, d = _buffer(dev, 16), _buffer(dev, 16)
    first = _chain(dev, exe, a, b)
    _execute(dev, first)
    del first
    gc.collect()
    fake.reset_calls()
    second = _chain(dev, exe, c, d)
    calls = _graph_calls(fake)
    assert calls.get("cuGraphInstantiate", 0) == 0
    assert calls["cuGraphExecUpdate"] == 1
    _execute(dev, second)
    assert fake.launches[-1].params[:2] != fake.launches[0].params[:2] or len(fake.launches) == 1
    address_c = fake.launches[-1].params[0]
    s = dev.create_semaphore()
    dev.queue_fill(ANY, (), [(s, 1)], c, 0, 16, b"\x00")
    s.wait(1, TIMEOUT)
    _execute(dev, second)
    assert fake.launches[-1].params[0] == address_c
    # A different shape instantiates anew.
    fake.reset_calls()
    cb = dev.create_command_buffer(0, CommandCategory.ANY, ANY, 0)
    cb.begin()
    cb.fill_buffer(a, b"\x01")
    cb.fill_buffer(b, b"\x02")
    cb.end()
    assert _graph_calls(fake)["cuGraphInstantiate"] == 1
    assert "cuGraphExecUpdate" not in _graph_calls(fake)


def test_commands_between_barriers_are_unordered_and_stages_join(
    dev: Any, fake: FakeDriver
) -> None:
    a, b, c, d = (_buffer(dev, 16) for _ in range(4))
    cb = dev.create_command_buffer(0, CommandCategory.ANY, ANY, 0)
    cb.begin()
    cb.fill_buffer(a, b"\x01")
    cb.fill_buffer(b, b"\x02")
    cb.execution_barrier()
    cb.execution_barrier()  # an empty stage adds nothing
    cb.copy_buffer(a, c)
    cb.fill_buffer(d, b"\x03")
    cb.execution_barrier()
    cb.copy_buffer(b, a)
    cb.end()
    graph = cb.program.graph.graph
    assert fake.graph_dependencies(graph.graph_exec) == [
        ("memset", ()),
        ("memset", ()),
        ("empty", (0, 1)),
        ("memcpy", (2,)),
        ("memset", (2,)),
        ("empty", (3, 4)),
        ("memcpy", (5,)),
    ]
    _execute(dev, cb)
    assert _read(dev, a) == b"\x02" * 16 and _read(dev, c) == b"\x01" * 16
    assert _read(dev, d) == b"\x03" * 16


def test_uncommitted_transient_defers_the_graph_to_the_first_execution(
    dev: Any, fake: FakeDriver
) -> None:
    """A reusable command buffer recorded over a queue_alloca buffer whose memory is not
    committed yet: its graph is built at the first execution; once the buffer is
    deallocated, an execution fails FAILED_PRECONDITION as the stream replay does."""
    exe = _negate(dev)
    out = _buffer(dev, 16)
    s = dev.create_semaphore()
    t = dev.queue_alloca(ANY, [(s, 1)], [(s, 2)], BufferParams(usage=USAGE), 16)
    fake.reset_calls()
    cb = dev.create_command_buffer(0, CommandCategory.ANY, ANY, 0)
    cb.begin()
    cb.fill_buffer(t, b"\x05")
    cb.execution_barrier()
    cb.dispatch(exe, "negate", DispatchConfig.static(1), COUNT_4, [t, out])
    cb.end()
    assert _graph_calls(fake) == {}
    s.signal(1)
    s.wait(2, TIMEOUT)
    _execute(dev, cb)
    assert _graph_calls(fake)["cuGraphInstantiate"] == 1
    assert _read(dev, t) == b"\x05" * 16
    dev.queue_dealloca(ANY, [(s, 2)], [(s, 3)], t)
    s.wait(3, TIMEOUT)
    fake.reset_calls()
    s2 = dev.create_semaphore()
    dev.queue_execute(ANY, (), [(s2, 1)], cb)
    with pytest.raises(hal_core.FailedPreconditionError):
        s2.wait(1, TIMEOUT)
    assert "cuGraphLaunch" not in fake.calls_on("MainThread")


def test_misaligned_or_emptied_fill_replays_that_execution_as_stream_launches(
    dev: Any, fake: FakeDriver
) -> None:
    buf = _buffer(dev, 64)
    cb = dev.create_command_buffer(CommandBufferMode.UNVALIDATED, CommandCategory.ANY, ANY, 1)
    cb.begin()
    cb.fill_buffer(BufferRef.indirect(0, 0, 8), b"\x0a\x0b\x0c\x0d")
    cb.end()
    _execute(dev, cb, [BufferBinding(buf, 0, 16)])
    assert _read(dev, buf)[:8] == b"\x0a\x0b\x0c\x0d" * 2
    fake.reset_calls()
    _execute(dev, cb, [BufferBinding(buf, 18, 16)])  # misaligned for a 4-byte memset
    calls = fake.calls_on("MainThread")
    assert "cuGraphLaunch" not in calls and calls["cuMemsetD2D8Async"] == 4
    assert _read(dev, buf)[18:26] == b"\x0a\x0b\x0c\x0d" * 2
    fake.reset_calls()
    _execute(dev, cb, [BufferBinding(buf, 32, 16)])  # aligned again: the graph serves
    calls = fake.calls_on("MainThread")
    assert calls["cuGraphLaunch"] == 1 and calls["cuGraphExecMemsetNodeSetParams"] == 1
    assert _read(dev, buf)[32:40] == b"\x0a\x0b\x0c\x0d" * 2


def test_one_shot_and_refused_graphs_replay_as_stream_launches(dev: Any, fake: FakeDriver) -> None:
    exe = _negate(dev)
    a, b = _buffer(dev, 16), _buffer(dev, 16)
    fake.reset_calls()
    once = _chain(dev, exe, a, b, CommandBufferMode.ONE_SHOT)
    assert once.program.graph is None and _graph_calls(fake) == {}
    _execute(dev, once)
    assert fake.calls_on("MainThread")["cuLaunchKernel"] == 1
    fake.graph_refused = True
    refused = _chain(dev, exe, a, b)
    assert refused.program.graph.graph is None
    fake.reset_calls()
    _execute(dev, refused)
    calls = fake.calls_on("MainThread")
    assert calls["cuLaunchKernel"] == 1 and "cuGraphLaunch" not in calls
    assert np.frombuffer(_read(dev, a), np.float32).tolist() == [1.0, 1.0, 1.0, 0.0]


def test_graphs_are_destroyed_with_their_programs_and_the_cache_at_close(fake: FakeDriver) -> None:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    dev = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    exe = _negate(dev)
    a, b = _buffer(dev, 16), _buffer(dev, 16)
    cbs = [_chain(dev, exe, a, b) for _ in range(6)]
    assert fake.live_graphs == 12  # a graph and an instance each
    del cbs
    gc.collect()
    # Kept for re-recording: at most 4 instances a shape, each with its graph.
    assert fake.live_graphs == 8
    dev.close()
    assert fake.live_graphs == 0
