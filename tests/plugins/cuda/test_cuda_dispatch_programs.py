"""``queue_dispatch``'s replay forms kept for the next identical dispatch
(``hal_cuda.dispatch_programs``), over the stand-in driver: a chain of identical dispatches
builds one program and still launches once per op with the right parameters; each
difference (buffers, ranges, constants, grid, function) gets a program of its own; a
collected buffer or executable is never reached through a kept program; the table stays
bounded; a one-dispatch command buffer that is not ``queue_dispatch``'s still runs; the
latest answer, kept with the config and constants objects, answers only a repeat."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import pytest
from hal_cuda import cuda_api
from hal_cuda import dispatch_programs as programs_module
from hal_cuda import driver as cuda_driver
from hal_cuda.kernels import CTS_LIBRARY, load_ptx

from hal_core import (
    BufferParams,
    BufferRef,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    QueueAffinity,
)
from hal_core.backend import buffer_storage, device_from_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import FakeDriver, install  # noqa: E402

TIMEOUT = 10.0
CHAIN = 64
COUNT_4 = (4).to_bytes(4, "little")
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER


@pytest.fixture
def fake(monkeypatch: Any) -> Any:
    api = FakeDriver()
    install(monkeypatch, api)
    yield api
    cuda_api.reset_for_tests()


@pytest.fixture
def dev(fake: Any) -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    device = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    device.test_backend = backend
    yield device
    device.close()


def _negate(dev: Any) -> tuple[Any, Any]:
    exe = dev.create_executable_cache("programs").prepare("ptx", load_ptx(CTS_LIBRARY))
    return exe, exe.lookup_function("negate")


def _address(buffer: Any, offset: int = 0) -> int:
    return buffer_storage(buffer).address + buffer.byte_offset + offset


def test_a_chain_of_identical_dispatches_builds_one_program(dev: Any, fake: FakeDriver) -> None:
    exe, fn = _negate(dev)
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    sem = dev.create_semaphore()
    config = DispatchConfig.static(1)
    kept = dev.test_backend.dispatch_programs
    for v in range(CHAIN):
        # A new config object each time: equal configs share the program.
        config = DispatchConfig.static(1)
        dev.queue_dispatch(1, ((sem, v),), ((sem, v + 1),), exe, fn, config, COUNT_4, (buf, buf))
    sem.wait(CHAIN, TIMEOUT)
    assert (kept.builds, kept.hits) == (1, CHAIN - 1)
    assert fake.calls_on("MainThread")["cuLaunchKernel"] == CHAIN
    assert len(fake.launches) == CHAIN
    address = _address(buf)
    for launch in fake.launches:
        assert launch.name == "negate" and launch.grid == (1, 1, 1)
        assert launch.params == [address, address, 4]


def test_each_difference_gets_its_own_program(dev: Any, fake: FakeDriver) -> None:
    exe, fn = _negate(dev)
    a = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 32)
    b = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 32)
    sem = dev.create_semaphore()
    kept = dev.test_backend.dispatch_programs
    cases = [
        (DispatchConfig.static(1), COUNT_4, (a, b)),
        (DispatchConfig.static(1), COUNT_4, (b, a)),
        (DispatchConfig.static(1), (2).to_bytes(4, "little"), (a, b)),
        (DispatchConfig.static(2), COUNT_4, (a, b)),
        (DispatchConfig.static(1), COUNT_4, (BufferRef(a, 16, 16), b)),
        (DispatchConfig.static(1), COUNT_4, (BufferRef(a, 16, 8), b)),
    ]
    v = 0
    for _round in range(2):
        for config, constants, bindings in cases:
            dev.queue_dispatch(1, (), ((sem, v + 1),), exe, fn, config, constants, bindings)
            v += 1
    sem.wait(v, TIMEOUT)
    assert (kept.builds, kept.hits) == (len(cases), len(cases))
    expected = [
        ((1, 1, 1), [_address(a), _address(b), 4]),
        ((1, 1, 1), [_address(b), _address(a), 4]),
        ((1, 1, 1), [_address(a), _address(b), 2]),
        ((2, 1, 1), [_address(a), _address(b), 4]),
        ((1, 1, 1), [_address(a, 16), _address(b), 4]),
        ((1, 1, 1), [_address(a, 16), _address(b), 4]),
    ]
    got = [(launch.grid, launch.params) for launch in fake.launches]
    assert got == expected * 2


def test_a_collected_buffer_is_never_reached_through_a_kept_program(
    dev: Any, fake: FakeDriver
) -> None:
    """Keys, and the latest answer kept with its config and constants objects, hold ids: a
    new buffer (which may reuse a collected one's id) launches with its own address."""
    exe, fn = _negate(dev)
    config = DispatchConfig.static(1)
    sem = dev.create_semaphore()
    for v in range(8):
        buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
        dev.queue_dispatch(1, (), ((sem, v + 1),), exe, fn, config, COUNT_4, (buf, buf))
        sem.wait(v + 1, TIMEOUT)
        assert fake.launches[-1].params == [_address(buf), _address(buf), 4]
        del buf
        gc.collect()


def test_a_collected_executable_is_never_reached_through_a_kept_program(
    dev: Any, fake: FakeDriver
) -> None:
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    config = DispatchConfig.static(1)
    sem = dev.create_semaphore()
    for v in range(4):
        exe, fn = _negate(dev)
        dev.queue_dispatch(1, (), ((sem, v + 1),), exe, fn, config, COUNT_4, (buf, buf))
        sem.wait(v + 1, TIMEOUT)
        del exe, fn
        gc.collect()
    kept = dev.test_backend.dispatch_programs
    assert kept.hits == 0 and kept.builds == 4
    assert len(fake.launches) == 4


def test_the_table_stays_bounded(dev: Any, fake: FakeDriver, monkeypatch: Any) -> None:
    monkeypatch.setattr(programs_module, "CAPACITY", 8)
    exe, fn = _negate(dev)
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    sem = dev.create_semaphore()
    kept = dev.test_backend.dispatch_programs
    for v in range(20):
        config = DispatchConfig.static(v + 1)
        dev.queue_dispatch(1, (), ((sem, v + 1),), exe, fn, config, COUNT_4, (buf, buf))
    sem.wait(20, TIMEOUT)
    assert len(kept._programs) <= 8
    assert [launch.grid[0] for launch in fake.launches] == list(range(1, 21))


def test_a_one_dispatch_command_buffer_over_a_binding_table_still_runs(
    dev: Any, fake: FakeDriver
) -> None:
    """ONE_SHOT | UNRETAINED is queue_dispatch's mode too; a user's recording with an
    indirect reference is built as before, never kept."""
    exe, fn = _negate(dev)
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    config = DispatchConfig.static(1)
    sem = dev.create_semaphore()
    kept = dev.test_backend.dispatch_programs
    mode = CommandBufferMode.ONE_SHOT | CommandBufferMode.UNRETAINED
    cb = dev.create_command_buffer(mode, CommandCategory.ANY, QueueAffinity.ANY, 1)
    cb.begin()
    cb.dispatch(exe, fn, config, COUNT_4, (BufferRef.indirect(0, 0, 16), buf))
    cb.end()
    dev.queue_execute(QueueAffinity.ANY, (), ((sem, 1),), cb, (buf,))
    sem.wait(1, TIMEOUT)
    assert kept.hits == 0 and len(kept._programs) == 0
    assert fake.launches[-1].params == [_address(buf), _address(buf), 4]


def test_an_unretained_dispatch_whose_buffer_was_dropped_fails_its_signal(
    dev: Any, fake: FakeDriver
) -> None:
    """A launch resolves an UNRETAINED recording's buffers through weak references: a
    buffer dropped before a run fails that run's signal FAILED_PRECONDITION, launching
    nothing."""
    import weakref

    import hal_core

    exe, fn = _negate(dev)
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    config = DispatchConfig.static(1)
    cb = dev.create_command_buffer(
        CommandBufferMode.UNRETAINED, CommandCategory.ANY, QueueAffinity.ANY, 0
    )
    cb.begin()
    cb.dispatch(exe, fn, config, COUNT_4, (buf, buf))
    cb.end()
    sem = dev.create_semaphore()
    dev.queue_execute(QueueAffinity.ANY, (), ((sem, 1),), cb)
    sem.wait(1, TIMEOUT)
    assert fake.launches[-1].params == [_address(buf), _address(buf), 4]
    alive = weakref.ref(buf)
    del buf
    gc.collect()
    assert alive() is None
    dev.queue_execute(QueueAffinity.ANY, (), ((sem, 2),), cb)
    with pytest.raises(hal_core.FailedPreconditionError, match="UNRETAINED"):
        sem.wait(2, TIMEOUT)
    assert len(fake.launches) == 1


def test_the_latest_answer_is_reused_only_for_the_same_dispatch(dev: Any, fake: FakeDriver) -> None:
    """A loop passes the same config and constants objects each call, which the latest
    answer is kept with: it answers a repeat (a hit), and nothing that differs in the
    buffers, their ranges, the function or the executable (same ordinal), each of which
    launches its own parameters."""
    exe, fn = _negate(dev)
    double = exe.lookup_function("double")
    other, other_fn = _negate(dev)
    a = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 32)
    b = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 32)
    config = DispatchConfig.static(1)
    sem = dev.create_semaphore()
    kept = dev.test_backend.dispatch_programs
    a16 = _address(a, 16)
    cases = [
        (exe, fn, (a, b), "negate", [_address(a), _address(b)]),
        (exe, fn, (a, b), "negate", [_address(a), _address(b)]),
        (exe, fn, (b, a), "negate", [_address(b), _address(a)]),
        (exe, fn, (BufferRef(a, 16, 16), b), "negate", [a16, _address(b)]),
        (exe, fn, (BufferRef(a, 16, 8), b), "negate", [a16, _address(b)]),
        (exe, double, (BufferRef(a, 16, 8), b), "double", [a16, _address(b)]),
        (other, other_fn, (BufferRef(a, 16, 8), b), "negate", [a16, _address(b)]),
        (other, other_fn, (BufferRef(a, 16, 8), b), "negate", [a16, _address(b)]),
    ]
    for v, (executable, function, bindings, _name, _params) in enumerate(cases):
        dev.queue_dispatch(1, (), ((sem, v + 1),), executable, function, config, COUNT_4, bindings)
    sem.wait(len(cases), TIMEOUT)
    assert (kept.builds, kept.hits) == (6, 2)
    got = [(launch.name, launch.params) for launch in fake.launches]
    assert got == [(name, params + [4]) for *_, name, params in cases]
