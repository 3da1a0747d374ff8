"""The cuda driver on a real NVIDIA GPU: devices, memory, every queue op, executables,
command buffers and bad input. Skipped where no GPU is usable (the UNAVAILABLE path is
``test_cuda_unavailable.py``); ``plugins/cuda/tools/gpu_check.sh`` runs these on the GPU
machine."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
from typing import Any

import numpy as np
import pytest

import hal_core
from hal_core import (
    BufferParams,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    MemoryAccess,
    MemoryType,
    QueueAffinity,
)

ANY = QueueAffinity.ANY
TIMEOUT = 30.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER | BufferUsage.DISPATCH_INDIRECT_PARAMETERS


def _open() -> Any:
    try:
        return hal_core.create_device("cuda://0")
    except hal_core.UnavailableError as exc:
        pytest.skip(f"no usable NVIDIA GPU here: {exc}", allow_module_level=True)


DEVICE = _open()


@pytest.fixture
def dev() -> Any:
    return DEVICE


def sem(dev: Any) -> Any:
    return dev.create_semaphore(0)


def device_buffer(dev: Any, size: int, data: bytes | None = None) -> Any:
    buf = dev.allocator.allocate_buffer(
        BufferParams(usage=USAGE, type=MemoryType.DEVICE_LOCAL), size
    )
    if data is not None:
        s = sem(dev)
        dev.queue_update(ANY, (), [(s, 1)], np.frombuffer(data, np.uint8), 0, buf, 0, len(data))
        s.wait(1, TIMEOUT)
    return buf


def host_buffer(dev: Any, size: int) -> Any:
    params = BufferParams(usage=USAGE | BufferUsage.MAPPING, type=MemoryType.HOST_LOCAL)
    return dev.allocator.allocate_buffer(params, size)


def read(dev: Any, buf: Any, offset: int = 0, length: int | None = None) -> bytes:
    length = buf.byte_length - offset if length is None else length
    out = bytearray(length)
    file = dev.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
    s = sem(dev)
    dev.queue_write(ANY, (), [(s, 1)], buf, offset, file, 0, length)
    s.wait(1, TIMEOUT)
    file.close()
    return bytes(out)


def ptx_executable(dev: Any, name: str) -> Any:
    from hal_cuda.kernels import load_ptx

    return dev.create_executable_cache("test").prepare("ptx", load_ptx(name))


# -- devices ------------------------------------------------------------------------------


def test_driver_lists_gpus_with_details() -> None:
    driver = hal_core.registry().driver("cuda")
    infos = driver.query_available_devices()
    assert infos, "the CUDA driver reports no GPU"
    assert "sm_" in infos[0].name and "GPU-" in infos[0].name and "GiB" in infos[0].name
    text = driver.dump_device_info(infos[0].device_id)
    assert "compute capability" in text and "uuid: GPU-" in text


def test_device_paths() -> None:
    driver = hal_core.registry().driver("cuda")
    info = driver.query_available_devices()[0]
    uuid = info.name.split("GPU-", 1)[1].rstrip(")")
    for uri in (f"cuda://GPU-{uuid}", "cuda://0,0", "cuda://0?queues=3"):
        with hal_core.create_device(uri) as d:
            assert d.queue_count == (3 if "queues" in uri else 2)
    with pytest.raises(hal_core.NotFoundError, match="no GPU"):
        hal_core.create_device("cuda://99")
    with pytest.raises(hal_core.InvalidArgumentError):
        hal_core.create_device("cuda://0?queues=0")


# -- memory -------------------------------------------------------------------------------


def test_memory_types_and_host_views(dev: Any) -> None:
    d = device_buffer(dev, 256)
    assert d.memory_type.has(MemoryType.DEVICE_LOCAL)
    assert not d.memory_type.has(MemoryType.HOST_VISIBLE)
    h = host_buffer(dev, 256)
    assert h.memory_type.has(MemoryType.HOST_LOCAL | MemoryType.DEVICE_VISIBLE)
    s = sem(dev)
    dev.queue_fill(ANY, (), [(s, 1)], h, 0, 256, b"\x5a")
    s.wait(1, TIMEOUT)
    with h.map(MemoryAccess.READ) as m:
        assert bytes(m.contents) == b"\x5a" * 256
    h.write(b"\x01\x02\x03\x04", 8)
    s2 = sem(dev)
    dev.queue_copy(ANY, (), [(s2, 1)], h, 0, d, 0, 256)
    s2.wait(1, TIMEOUT)
    assert read(dev, d, 8, 4) == b"\x01\x02\x03\x04"


def test_imported_host_memory_is_shared_without_copy(dev: Any) -> None:
    array = np.zeros(1024, np.uint8)
    buf = dev.allocator.import_host_buffer(BufferParams(usage=USAGE), array)
    s = sem(dev)
    dev.queue_fill(ANY, (), [(s, 1)], buf, 16, 32, b"\x11\x22\x33\x44")
    s.wait(1, TIMEOUT)
    assert bytes(array[16:24]) == b"\x11\x22\x33\x44" * 2
    assert array[:16].sum() == 0 and array[48:].sum() == 0


def test_fill_on_unaligned_imported_memory(dev: Any) -> None:
    raw = np.zeros(4096 + 3, np.uint8)
    array = raw[1:4097]  # an address that is odd: cuMemsetD16/D32 cannot be used
    buf = dev.allocator.import_host_buffer(BufferParams(usage=USAGE), array)
    s = sem(dev)
    dev.queue_fill(ANY, (), [(s, 1)], buf, 4, 16, b"\xaa\xbb\xcc\xdd")
    dev.queue_fill(ANY, (), [(s, 2)], buf, 20, 8, b"\x01\x02")
    s.wait(2, TIMEOUT)
    assert bytes(array[4:20]) == b"\xaa\xbb\xcc\xdd" * 4
    assert bytes(array[20:28]) == b"\x01\x02" * 4
    assert array[:4].sum() == 0 and array[28:].sum() == 0


@pytest.mark.parametrize("pattern", [b"\x7f", b"\x01\x02", b"\x01\x02\x03\x04"])
def test_fill_patterns_on_device_memory(dev: Any, pattern: bytes) -> None:
    buf = device_buffer(dev, 64, b"\xee" * 64)
    s = sem(dev)
    dev.queue_fill(ANY, (), [(s, 1)], buf, 8, 16, pattern)
    s.wait(1, TIMEOUT)
    assert read(dev, buf) == b"\xee" * 8 + pattern * (16 // len(pattern)) + b"\xee" * 40


def test_device_memory_exhaustion_is_resource_exhausted_and_leaks_nothing(dev: Any) -> None:
    from hal_cuda.cuda_api import driver_api

    api = driver_api()
    free_before = api.cuMemGetInfo()[1]
    total = api.cuMemGetInfo()[2]
    with pytest.raises(hal_core.ResourceExhaustedError):
        dev.allocator.allocate_buffer(BufferParams(usage=USAGE), total - (1 << 20))
    with pytest.raises(hal_core.ResourceExhaustedError):
        dev.allocator.allocate_buffer(BufferParams(usage=USAGE), total * 2)
    assert api.cuMemGetInfo()[1] >= free_before - (64 << 20)
    device_buffer(dev, 1 << 20)  # the device still allocates


def test_queue_alloca_and_dealloca(dev: Any) -> None:
    s = sem(dev)
    buf = dev.queue_alloca(ANY, (), [(s, 1)], BufferParams(usage=USAGE), 4096)
    dev.queue_fill(ANY, [(s, 1)], [(s, 2)], buf, 0, 4096, b"\x42\x42\x42\x42")
    s.wait(2, TIMEOUT)
    assert read(dev, buf, 100, 4) == b"\x42" * 4
    dev.queue_dealloca(ANY, [(s, 2)], [(s, 3)], buf)
    s.wait(3, TIMEOUT)


# -- queue ops and semaphores ----------------------------------------------------------------


def test_update_copy_and_file_round_trip_larger_than_staging(dev: Any) -> None:
    n = (8 << 20) + 4096 * 3 + 12  # crosses the 8 MiB staging chunk
    data = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8)
    src = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), n)
    dst = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), n)
    file = dev.import_file(bytearray(data.tobytes()), MemoryAccess.READ)
    s = sem(dev)
    dev.queue_read(ANY, (), [(s, 1)], file, 0, src, 0, n)
    dev.queue_copy(ANY, [(s, 1)], [(s, 2)], src, 0, dst, 0, n)
    dev.queue_update(ANY, [(s, 2)], [(s, 3)], np.full(16, 9, np.uint8), 0, dst, 32, 16)
    s.wait(3, TIMEOUT)
    expected = data.copy()
    expected[32:48] = 9
    assert read(dev, dst) == expected.tobytes()


def test_long_chain_across_queues_without_recursion(dev: Any) -> None:
    buf = device_buffer(dev, 4)
    s = sem(dev)
    n = 20_000
    for i in range(n):
        dev.queue_fill(
            1 << (i % 2), [(s, i)] if i else (), [(s, i + 1)], buf, 0, 4, bytes([i % 251])
        )
    s.wait(n, 120.0)
    assert read(dev, buf) == bytes([(n - 1) % 251]) * 4


def test_wait_failure_propagates_and_host_call_errors_never_kill_threads(
    dev: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    a, b = sem(dev), sem(dev)
    buf = device_buffer(dev, 16)
    dev.queue_fill(ANY, [(a, 1)], [(b, 1)], buf, 0, 16, b"\x01")
    a.fail(hal_core.AbortedError("upstream failed"))
    with pytest.raises(hal_core.AbortedError, match="upstream failed"):
        b.wait(1, TIMEOUT)

    def boom(args: Any, context: Any) -> None:
        raise ValueError("a user callback failed")

    c = sem(dev)
    dev.queue_host_call(ANY, (), [(c, 1)], boom)
    with pytest.raises(hal_core.UnknownError, match="ValueError"):
        c.wait(1, TIMEOUT)
    d = sem(dev)  # c failed for good (failure is sticky)
    for queue in (1, 2):  # a NON_BLOCKING call's error is reported, never kills the worker
        dev.queue_host_call(
            queue, (), [(d, queue)], boom, flags=hal_core.HostCallFlags.NON_BLOCKING
        )
        d.wait(queue, TIMEOUT)
    dev.queue_fill(1, [(d, 2)], [(d, 3)], buf, 0, 16, b"\x02")  # every thread still serves
    dev.queue_host_call(1, [(d, 3)], [(d, 4)], lambda args, context: None)
    d.wait(4, TIMEOUT)
    assert read(dev, buf) == b"\x02" * 16


# -- executables and dispatch ----------------------------------------------------------------


def test_ptx_reflection_and_queue_dispatch(dev: Any) -> None:
    exe = ptx_executable(dev, "cts_kernels")
    info = exe.function_info("scale_and_offset")
    assert (info.binding_count, info.constant_count, info.workgroup_size) == (2, 3, (64, 1, 1))
    n = 1000
    values = np.arange(n, dtype=np.float32)
    src = device_buffer(dev, 4 * n, values.tobytes())
    dst = device_buffer(dev, 4 * n)
    constants = np.array([2.0, 0.5], np.float32).tobytes() + np.array([n], np.uint32).tobytes()
    s = sem(dev)
    grid = DispatchConfig.static((n + 63) // 64)
    dev.queue_dispatch(ANY, (), [(s, 1)], exe, "scale_and_offset", grid, constants, [src, dst])
    s.wait(1, TIMEOUT)
    assert np.array_equal(np.frombuffer(read(dev, dst), np.float32), values * 2 + 0.5)


def test_command_buffer_with_binding_table_replays_with_new_bindings(dev: Any) -> None:
    exe = ptx_executable(dev, "cts_kernels")
    cb = dev.create_command_buffer(0, CommandCategory.ANY, binding_capacity=2)
    cb.begin()
    src, dst = hal_core.BufferRef.indirect(0), hal_core.BufferRef.indirect(1)
    cb.fill_buffer(dst, b"\x00\x00\x00\x00")
    cb.dispatch(exe, "negate", DispatchConfig.static(1), np.uint32([4]).tobytes(), [src, dst])
    cb.end()
    for k in (1.0, 3.0):
        a = device_buffer(dev, 16, np.full(4, k, np.float32).tobytes())
        b = device_buffer(dev, 16)
        s = sem(dev)
        dev.queue_execute(ANY, (), [(s, 1)], cb, [a, b])
        s.wait(1, TIMEOUT)
        assert np.frombuffer(read(dev, b), np.float32).tolist() == [-k] * 4


def test_indirect_workgroup_count_from_a_previous_dispatch(dev: Any) -> None:
    exe = ptx_executable(dev, "cts_kernels")
    counts = device_buffer(dev, 12)
    out = device_buffer(dev, 4 * 6, b"\xff" * 24)
    cb = dev.create_command_buffer(CommandBufferMode.ONE_SHOT, CommandCategory.ANY)
    cb.begin()
    cb.dispatch(
        exe,
        "write_workgroup_count",
        DispatchConfig.static(1),
        np.uint32([3, 2, 1]).tobytes(),
        [counts],
    )
    cb.execution_barrier()
    cb.dispatch(
        exe,
        "write_workgroup_ids",
        DispatchConfig.indirect(counts),
        b"",
        [out],
        flags=hal_core.DispatchFlags.DYNAMIC_INDIRECT_PARAMETERS,
    )
    cb.end()
    s = sem(dev)
    dev.queue_execute(ANY, (), [(s, 1)], cb)
    s.wait(1, TIMEOUT)
    assert np.frombuffer(read(dev, out), np.uint32).tolist() == [0, 1, 2, 3, 4, 5]


BAD_PTX = b"""
.version 7.0
.target sm_80
.address_size 64
.visible .entry broken(.param .u64 out)
{
  this_is_not_an_instruction;
}
"""


def test_bad_executables_and_dispatches_are_refused_at_the_call(dev: Any) -> None:
    cache = dev.create_executable_cache("bad")
    with pytest.raises(hal_core.InvalidArgumentError, match="does not load"):
        cache.prepare("ptx", BAD_PTX)
    with pytest.raises(hal_core.InvalidArgumentError):
        cache.prepare("cubin", b"not a cubin at all")
    exe = ptx_executable(dev, "cts_kernels")
    out = device_buffer(dev, 64)
    s = sem(dev)
    with pytest.raises(hal_core.InvalidArgumentError):  # too few bindings for the ABI
        dev.queue_dispatch(
            ANY, (), [(s, 1)], exe, "write_workgroup_ids", DispatchConfig.static(1), b"", []
        )
    with pytest.raises(hal_core.InvalidArgumentError):  # constants the kernel does not take
        dev.queue_dispatch(
            ANY, (), [(s, 1)], exe, "write_workgroup_ids", DispatchConfig.static(1), b"1234", [out]
        )
    with pytest.raises(hal_core.OutOfRangeError, match="grid limit"):
        dev.queue_dispatch(
            ANY,
            (),
            [(s, 1)],
            exe,
            "write_workgroup_ids",
            DispatchConfig.static(1, 70000, 1),
            b"",
            [out],
        )
    big = DispatchConfig((1, 1, 1), workgroup_size=(2048, 1, 1))
    with pytest.raises(hal_core.OutOfRangeError, match="workgroup size"):
        dev.queue_dispatch(ANY, (), [(s, 1)], exe, "write_workgroup_ids", big, b"", [out])
    other = hal_core.create_device("local-sync://")
    foreign = other.allocator.allocate_buffer(BufferParams(usage=USAGE), 64)
    with pytest.raises(hal_core.HalError):
        dev.queue_dispatch(
            ANY, (), [(s, 1)], exe, "write_workgroup_ids", DispatchConfig.static(1), b"", [foreign]
        )
    # Nothing was queued; the device still works.
    dev.queue_dispatch(
        ANY, (), [(s, 1)], exe, "write_workgroup_ids", DispatchConfig.static(2), b"", [out]
    )
    s.wait(1, TIMEOUT)
    assert np.frombuffer(read(dev, out, 0, 8), np.uint32).tolist() == [0, 1]


FAULT_SCRIPT = textwrap.dedent(
    """
    import numpy as np, hal_core
    from hal_core import BufferParams, DispatchConfig, QueueAffinity
    PTX = b'''
    .version 7.0
    .target sm_80
    .address_size 64
    .visible .entry KIND(.param .u64 out)
    {
      .reg .b64 %rd<2>;
      mov.u64 %rd1, 8;
      BODY
      ret;
    }
    '''
    dev = hal_core.create_device("cuda://0")
    exe = dev.create_executable_cache("f").prepare("ptx", PTX)
    buf = dev.allocator.allocate_buffer(BufferParams(), 64)
    s, t, u = dev.create_semaphore(0), dev.create_semaphore(0), dev.create_semaphore(0)
    ANY, ONE = QueueAffinity.ANY, DispatchConfig.static(1)
    dev.queue_dispatch(ANY, (), [(s, 1)], exe, "KIND", ONE, b"", [buf])
    try:
        s.wait(1, 60)
        print("NO-FAULT")
    except hal_core.HalError as exc:
        print("FAULT", exc.code.name, str(exc).split(";")[0])
    dev.queue_fill(ANY, (), [(t, 1)], buf, 0, 64, b"\\x01")
    try:
        t.wait(1, 60)
        print("LATER-OK")
    except hal_core.HalError as exc:
        print("LATER", exc.code.name)
    # Semaphores not depending on the fault are not failed by it.
    u.signal(1)
    print("UNRELATED", u.value)
    """
)


@pytest.mark.parametrize(
    "kind, body, error",
    [
        ("illegal_address", "st.global.u32 [%rd1], 1;", "CUDA_ERROR_ILLEGAL_ADDRESS"),
        ("trap", "trap;", "CUDA_ERROR_LAUNCH_FAILED"),
    ],
)
def test_kernel_fault_fails_signals_and_the_device_reports_it_after(
    kind: str, body: str, error: str
) -> None:
    script = FAULT_SCRIPT.replace("KIND", kind).replace("BODY", body)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180
    )
    out = done.stdout
    assert "FAULT INTERNAL" in out and error in out, (out, done.stderr)
    # CUDA's sticky error: later work on the context fails too, and never hangs.
    assert "LATER INTERNAL" in out, (out, done.stderr)
    assert "UNRELATED 1" in out


def test_concurrent_submitters(dev: Any) -> None:
    buf = device_buffer(dev, 4 * 8)
    errors: list[BaseException] = []

    def submit(k: int) -> None:
        try:
            s = sem(dev)
            for i in range(200):
                dev.queue_fill(
                    1 << (k % 2), [(s, i)] if i else (), [(s, i + 1)], buf, 4 * k, 4, bytes([k])
                )
            s.wait(200, TIMEOUT)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors
    assert np.frombuffer(read(dev, buf), np.uint8).tolist() == [
        k for k in range(8) for _ in range(4)
    ]


# -- device-side waits and graphs -------------------------------------------------------------


def test_device_side_waits_chain_and_propagate_failures(dev: Any) -> None:
    buf = device_buffer(dev, 64)
    s = sem(dev)
    # A chain across both queues: each op waits on stream work still in flight, so the
    # waits are device-side (cuStreamWaitEvent) and nothing waits on the host.
    for i in range(64):
        dev.queue_fill(1 << (i % 2), [(s, i)] if i else (), [(s, i + 1)], buf, i, 1, bytes([i]))
    s.wait(64, TIMEOUT)
    assert read(dev, buf) == bytes(range(64))
    # A producer failing at execution fails a consumer that waited on it on the device.
    t_sem = sem(dev)
    gone = dev.queue_alloca(ANY, (), [(t_sem, 1)], BufferParams(usage=USAGE), 64)
    dev.queue_dealloca(ANY, [(t_sem, 1)], [(t_sem, 2)], gone)
    t_sem.wait(2, TIMEOUT)
    p, c = sem(dev), sem(dev)
    big = device_buffer(dev, 64 << 20)
    dev.queue_fill(1, (), [(p, 1)], big, 0, 64 << 20, b"\x09")  # still in flight next
    dev.queue_fill(2, [(p, 1)], [(p, 2)], gone, 0, 4, b"\x01")  # fails when it runs
    dev.queue_fill(1, [(p, 2)], [(c, 1)], buf, 0, 4, b"\x07")
    with pytest.raises(hal_core.FailedPreconditionError):
        c.wait(1, TIMEOUT)
    with pytest.raises(hal_core.FailedPreconditionError):
        p.wait(2, TIMEOUT)


def test_reusable_command_buffer_replays_as_a_graph(dev: Any) -> None:
    exe = ptx_executable(dev, "cts_kernels")
    a = device_buffer(dev, 16, np.full(4, 2.0, np.float32).tobytes())
    b = device_buffer(dev, 16)
    cb = dev.create_command_buffer(0, CommandCategory.ANY)
    cb.begin()
    cb.fill_buffer(b, b"\x00\x00\x00\x00")
    cb.execution_barrier()
    cb.dispatch(exe, "negate", DispatchConfig.static(1), np.uint32([4]).tobytes(), [a, b])
    cb.execution_barrier()
    cb.copy_buffer(hal_core.BufferRef(a, 0, 4), hal_core.BufferRef(b, 12, 4))
    cb.end()
    assert cb.program.graph.graph is not None, "a reusable direct command buffer is a graph"
    for k in (2.0, 5.0):
        s = sem(dev)
        dev.queue_update(ANY, (), [(s, 1)], np.full(4, k, np.float32).view(np.uint8), 0, a, 0, 16)
        dev.queue_execute(ANY, [(s, 1)], [(s, 2)], cb)
        s.wait(2, TIMEOUT)
        assert np.frombuffer(read(dev, b), np.float32).tolist() == [-k, -k, -k, k]


def _pipeline(dev: Any, exe: Any, mode: int, out: Any) -> Any:
    """A 64-stage chain over binding-table slots (0: source, 1: scratch, 2: pinned host
    output), each stage a scale_and_offset of the previous one's result, with fills,
    copies and dispatches side by side between barriers."""
    ref = hal_core.BufferRef.indirect
    cb = dev.create_command_buffer(mode, CommandCategory.ANY, ANY, 3)
    cb.begin()
    cb.fill_buffer(ref(1, 0, 256), b"\x00\x00\x00\x00")
    cb.fill_buffer(ref(2, 0, 64), b"\x11")
    cb.execution_barrier()
    cb.copy_buffer(ref(0, 0, 256), ref(1, 0, 256))
    cb.execution_barrier()
    constants = np.array([3.0, 1.0], np.float32).view(np.uint32).tolist() + [64]
    for i in range(64):
        cb.dispatch(
            exe, "scale_and_offset", DispatchConfig.static(1), constants, [ref(1, 0, 256), out]
        )
        cb.execution_barrier()
        cb.copy_buffer(hal_core.BufferRef(out, 0, 256), ref(1, 0, 256))
        cb.fill_buffer(ref(2, 64 + 4 * (i % 16), 4), np.uint32([i]).tobytes())
        cb.execution_barrier()
    cb.copy_buffer(ref(1, 0, 256), ref(2, 128, 256))
    cb.end()
    return cb


def test_graph_with_binding_tables_is_bit_exact_against_stream_replay(dev: Any) -> None:
    """The same recording as a graph (reusable: node parameters updated per table) and as
    stream launches (one-shot), over several tables, alternating: every output byte is
    equal. The host output is pinned memory, reached by memcpy and memset nodes."""
    exe = ptx_executable(dev, "cts_kernels")
    rng = np.random.default_rng(7)
    sources = [
        device_buffer(dev, 256, rng.standard_normal(64).astype(np.float32).tobytes())
        for _ in range(3)
    ]
    out = device_buffer(dev, 256)
    graph_cb = _pipeline(dev, exe, 0, out)
    for k in range(6):
        results = []
        for mode in (0, CommandBufferMode.ONE_SHOT):
            cb = graph_cb if mode == 0 else _pipeline(dev, exe, mode, out)
            scratch = device_buffer(dev, 256 + 64 * k)
            host = host_buffer(dev, 512)
            table = [
                hal_core.BufferBinding(sources[k % 3]),
                hal_core.BufferBinding(scratch, 64 * k, 256),
                hal_core.BufferBinding(host, 64 * (k % 2), 448),
            ]
            s = sem(dev)
            dev.queue_execute(ANY, (), [(s, 1)], cb, table)
            s.wait(1, TIMEOUT)
            base = 64 * (k % 2)  # the bytes the recording writes, nothing else
            with host.map(MemoryAccess.READ) as m:
                results.append(bytes(m.contents)[base : base + 384])
            results.append(read(dev, scratch, 64 * k, 256))
        assert results[0] == results[2] and results[1] == results[3]
        assert results[0][:64] == b"\x11" * 64
    graph = graph_cb.program.graph.graph
    assert graph is not None and graph_cb.program.graph.pending is False


def test_re_recorded_graph_of_the_same_shape_is_updated_not_instantiated(dev: Any) -> None:
    """Kernel-only recordings of one shape share an instance (``kernel_graphs``): a
    re-recorded one over other buffers sets the kernel nodes that name them."""
    exe = ptx_executable(dev, "cts_kernels")
    kernel = dev.backend.graph_cache.kernel
    outputs = []
    kept = []  # live buffers: each recording's addresses are new
    for k in range(3):
        a = device_buffer(dev, 16, np.full(4, float(k + 1), np.float32).tobytes())
        b = device_buffer(dev, 16)
        kept.append((a, b))
        before = (kernel.instantiations, kernel.node_sets)
        cb = dev.create_command_buffer(0, CommandCategory.ANY)
        cb.begin()
        # Three workgroups (one does the work): a shape no other test records.
        cb.dispatch(exe, "double", DispatchConfig.static(3), np.uint32([4]).tobytes(), [a, b])
        cb.end()
        s = sem(dev)
        dev.queue_execute(ANY, (), [(s, 1)], cb)
        s.wait(1, TIMEOUT)
        if k:  # the first one's instance, its node set to this recording's buffers
            assert (kernel.instantiations, kernel.node_sets) == (before[0], before[1] + 1)
        outputs.append(np.frombuffer(read(dev, b), np.float32).tolist())
        del cb
        gc.collect()
    assert outputs == [[2.0] * 4, [4.0] * 4, [6.0] * 4]


# -- DLPack ---------------------------------------------------------------------------------


def test_dlpack_torch_tensor_as_buffer_and_buffer_as_tensor(dev: Any) -> None:
    torch = pytest.importorskip("torch")
    from hal_cuda.dlpack import export_dlpack, import_dlpack

    tensor = torch.arange(16, dtype=torch.float32, device="cuda:0")
    torch.cuda.synchronize()
    buf = import_dlpack(dev, tensor)
    assert buf.byte_length == 64
    s = sem(dev)
    dev.queue_fill(ANY, (), [(s, 1)], buf, 0, 16, np.float32(-1.0).tobytes())
    s.wait(1, TIMEOUT)
    assert tensor.tolist() == [-1.0] * 4 + list(range(4, 16))  # the same memory, no copy

    out = device_buffer(dev, 8, bytes(range(8)))
    view = torch.from_dlpack(export_dlpack(out))
    assert view.dtype == torch.uint8 and view.device.type == "cuda"
    assert view.tolist() == list(range(8))
    view.add_(1)
    torch.cuda.synchronize()
    assert read(dev, out) == bytes(range(1, 9))
    with pytest.raises(hal_core.InvalidArgumentError):
        import_dlpack(dev, torch.zeros(4, dtype=torch.float32))  # host tensor


# -- profiling ------------------------------------------------------------------------------


def test_dispatch_events_have_device_timestamps_on_the_host_timeline(dev: Any) -> None:
    from hal_core.profiling import CaptureSink, ProfilingDataFamily, ProfilingOptions

    exe = ptx_executable(dev, "cts_kernels")
    out = device_buffer(dev, 4 * 64)
    sink = CaptureSink()
    families = ProfilingDataFamily.DISPATCH_EVENTS | ProfilingDataFamily.MEMORY_EVENTS
    with dev.profiling_begin(ProfilingOptions(families, sinks=[sink])):
        s = sem(dev)
        for i in range(4):
            config = DispatchConfig.static(64)
            waits = [(s, i)] if i else ()
            dev.queue_dispatch(
                ANY, waits, [(s, i + 1)], exe, "write_workgroup_ids", config, b"", [out]
            )
        t = dev.queue_alloca(ANY, [(s, 4)], [(s, 5)], BufferParams(usage=USAGE), 4096)
        dev.queue_dealloca(ANY, [(s, 5)], [(s, 6)], t)
        s.wait(6, TIMEOUT)
    events = sink.capture.records("dispatch-events")
    assert len(events) == 4
    assert all(int(e["end_tick"]) >= int(e["start_tick"]) for e in events)
    start, end = sink.capture.dispatch_host_ns()
    assert (end >= start).all() and list(start) == sorted(start)
    assert len(sink.capture.records("memory-events")) >= 2  # reserve + release
