"""The native submit lane (``hal_cuda/_native_lane.c``) against the Python path, over the
stand-in driver: random sequences of ops (fills of each pattern size, copies, updates,
single dispatches, chains across two queues, waits on in-flight, reached, unreached and
failed semaphores, a dropped weak buffer, a failing driver call, the device closed at the
end) run once through the lane and once with ``HAL_CUDA_NATIVE=0``, and must make the
same driver calls in the same order on the submitting thread, leave the same memory and
end every semaphore at the same value or failure code. Plus each reason an op falls
back, the in-flight race at completion, and a 100,000-op chain. Tests run with Python's
default ``sys.unraisablehook``."""

from __future__ import annotations

import gc
import random
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest
from hal_cuda import driver as cuda_driver
from hal_cuda import native_lane
from hal_cuda.kernels import CTS_LIBRARY, load_ptx

import hal_core
from hal_core import (
    BufferParams,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    QueueAffinity,
    StatusCode,
)
from hal_core.backend import buffer_storage, device_from_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import INVALID_VALUE, FakeDriver, install  # noqa: E402

TIMEOUT = 10.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
COUNT_4 = (4).to_bytes(4, "little")
LOGGED = frozenset(
    {
        "cuEventRecord",
        "cuEventCreate",
        "cuStreamWaitEvent",
        "cuMemsetD8Async",
        "cuMemsetD16Async",
        "cuMemsetD32Async",
        "cuMemsetD2D8Async",
        "cuMemcpyAsync",
        "cuMemcpyHtoDAsync",
        "cuLaunchKernel",
    }
)

needs_native = pytest.mark.skipif(
    native_lane.native is None, reason="hal_cuda._native_lane is not built"
)


class LoggingFake(FakeDriver):
    """``FakeDriver`` that logs the stream-work calls made on the main thread (addresses
    as (allocation number, offset), so two runs compare) and fails chosen calls:
    ``fail[name] = n`` fails the n-th next call of ``name`` (0: the next) with
    CUDA_ERROR_INVALID_VALUE."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple] = []
        self.fail: dict[str, int] = {}
        self.bases: list[tuple[int, int]] = []  # (address, size) in allocation order

    def _allocate(self, size: int) -> tuple:
        result = FakeDriver._allocate(self, size)
        if not result[0]:
            self.bases.append((result[1], size))
        return result

    def norm(self, value: Any) -> Any:
        if value.__class__ is not int:
            return value
        for k, (base, size) in enumerate(self.bases):
            if base <= value < base + size:
                return ("mem", k, value - base)
        return value

    def __getattribute__(self, name: str) -> Any:
        value = FakeDriver.__getattribute__(self, name)
        if name not in LOGGED:
            return value
        fake = self

        def call(*args: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                shown = list(args)
                if name == "cuLaunchKernel":
                    shown[9] = None  # the parameter block: compared as launch words
                elif name == "cuMemcpyHtoDAsync":
                    shown[1] = None  # the payload's host copy: compared as memory
                fake.log.append((name, tuple(fake.norm(int(a)) for a in shown if a is not None)))
                left = fake.fail.get(name)
                if left is not None:
                    if left == 0:
                        del fake.fail[name]
                        return (INVALID_VALUE,)
                    fake.fail[name] = left - 1
            return value(*args)

        return call


@pytest.fixture
def default_hook(monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)


def _device(monkeypatch: Any, native: bool, api: Any = None) -> tuple[Any, Any]:
    api = LoggingFake() if api is None else api
    install(monkeypatch, api)
    monkeypatch.setenv(native_lane.NATIVE_ENV, "1" if native else "0")
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    device = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    device.test_backend = backend
    return device, api


class Scenario:
    """One random sequence of ops on a fresh device (``seed`` decides everything)."""

    def __init__(self, dev: Any, api: LoggingFake, seed: int) -> None:
        self.dev, self.api, self.rng = dev, api, random.Random(seed)
        alloc = dev.allocator.allocate_buffer
        self.buffers = [alloc(BufferParams(usage=USAGE), 256) for _ in range(3)]
        self.exe = dev.create_executable_cache("lane").prepare("ptx", load_ptx(CTS_LIBRARY))
        self.fn = self.exe.lookup_function("negate")
        self.config = DispatchConfig.static(1)
        self.sems: list[Any] = []
        self.later: list[Any] = []  # host semaphores signalled after the sequence
        self.refused: list[Any] = []

    def _waits(self, queue: int) -> tuple:
        rng, sems = self.rng, self.sems
        choice = rng.randrange(7)
        if choice == 0 or not sems:
            return ()
        if choice == 1:
            return ((sems[-1], 1),)  # a chain (in flight, maybe another queue)
        if choice == 2:
            picked = rng.sample(sems, min(2, len(sems)))
            return tuple((s, 1) for s in picked)
        host = self.dev.create_semaphore()
        if choice == 3:
            host.signal(1)  # reached
        elif choice == 4:
            self.later.append(host)  # unreached: parked, readied later
        elif choice == 5:
            host.fail(StatusCode.ABORTED, "failed before the op")
        else:
            return ((sems[-1], 1), (host, 0))  # an in-flight wait and a reached one
        return ((host, 1),)

    def step(self) -> None:
        rng, dev = self.rng, self.dev
        queue = 1 << rng.randrange(2)
        waits = self._waits(queue)
        sem = dev.create_semaphore()
        signals = ((sem, 1),)
        if rng.random() < 0.2:
            extra = dev.create_semaphore()
            signals = signals + ((extra, 1),)
            self.sems.append(extra)
        self.sems.append(sem)
        if rng.random() < 0.08:
            name = rng.choice(["cuMemsetD32Async", "cuLaunchKernel", "cuEventRecord"])
            self.api.fail[name] = rng.randrange(2)
        target = rng.choice(self.buffers)
        kind = rng.randrange(8)
        if kind <= 2:
            size = (1, 2, 4)[kind]
            offset = size * rng.randrange(8)
            length = size * rng.randrange(1, 8)
            pattern = bytes(rng.randrange(256) for _ in range(size))
            dev.queue_fill(queue, waits, signals, target, offset, length, pattern)
        elif kind == 3:
            source = rng.choice(self.buffers)
            dev.queue_copy(queue, waits, signals, source, 16, target, 64, 32)
        elif kind == 4:
            data = bytes(rng.randrange(256) for _ in range(12))
            dev.queue_update(queue, waits, signals, data, 0, target, 128, 12)
        elif kind in (5, 6):
            buffers = (target, rng.choice(self.buffers))
            dev.queue_dispatch(
                queue, waits, signals, self.exe, self.fn, self.config, COUNT_4, buffers
            )
        else:
            self._weak_execute(queue, waits, signals)

    def _weak_execute(self, queue: int, waits: tuple, signals: tuple) -> None:
        """An UNRETAINED single dispatch; half the time its buffer is dropped first."""
        dev = self.dev
        buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
        cb = dev.create_command_buffer(
            CommandBufferMode.UNRETAINED, CommandCategory.ANY, QueueAffinity.ANY, 0
        )
        cb.begin()
        cb.dispatch(self.exe, self.fn, self.config, COUNT_4, (buf, self.buffers[0]))
        cb.end()
        keep = buf if self.rng.random() < 0.5 else None
        alive = weakref.ref(buf)
        del buf
        gc.collect()
        assert (alive() is None) == (keep is None)
        dev.queue_execute(queue, waits, signals, cb)
        self.refused.append((cb, keep))

    def finish(self) -> tuple:
        for host in self.later:
            host.signal(1)
        self.api.release()
        outcomes = []
        for sem in self.sems:
            try:
                sem.wait(1, TIMEOUT)
                outcomes.append(("value", sem.query()))
            except hal_core.HalError as exc:
                outcomes.append(("failed", exc.code))
        memory = [bytes(_host(self.api, b)) for b in self.buffers]
        launches = [
            (launch.name, launch.grid, launch.block, [self.api.norm(w) for w in launch.params])
            for launch in self.api.launches
        ]
        self.dev.close()
        try:
            self.dev.queue_barrier(1, (), ((self.dev.create_semaphore(), 1),))
            after = "accepted"
        except hal_core.HalError as exc:
            after = exc.code
        return self.api.log, launches, memory, outcomes, after


def _host(api: Any, buffer: Any) -> Any:
    import ctypes

    address = buffer_storage(buffer).address + buffer.byte_offset
    return (ctypes.c_uint8 * buffer.byte_length).from_address(address)


def _run(monkeypatch: Any, native: bool, seed: int, ops: int) -> tuple:
    dev, api = _device(monkeypatch, native)
    assert dev.test_backend.native.startswith("native" if native else "python")
    api.hold()  # events stay unreached until the end: every chain wait is in flight
    scenario = Scenario(dev, api, seed)
    for _ in range(ops):
        scenario.step()
    result = scenario.finish()
    lane = dev.test_backend._lane
    taken = 0 if lane is None else lane.handled
    return result, taken


@needs_native
@pytest.mark.parametrize("seed", range(12))
def test_the_lane_and_the_python_path_agree(
    monkeypatch: Any, default_hook: None, seed: int
) -> None:
    """The same ops make the same driver calls in the same order, leave the same memory
    and the same semaphore values and failure codes; the lane took most of them."""
    python, _ = _run(monkeypatch, False, seed, 40)
    native, taken = _run(monkeypatch, True, seed, 40)
    assert taken > 10
    for a, b in zip(python, native):
        assert a == b


# -- each fallback reason --------------------------------------------------------------


@pytest.fixture
def lane_dev(monkeypatch: Any, default_hook: None) -> Any:
    if native_lane.native is None:
        pytest.skip("hal_cuda._native_lane is not built")
    dev, api = _device(monkeypatch, True)
    dev.fake = api
    yield dev
    api.release()
    dev.close()


def _fill(dev: Any, waits: tuple = (), queue: int = 1) -> Any:
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    sem = dev.create_semaphore()
    dev.queue_fill(queue, waits, ((sem, 1),), buf, 0, 16, b"\1\2\3\4")
    return sem


def _expect_fallback(dev: Any, reason: str, action: Any) -> None:
    lane = dev.test_backend._lane
    before = (lane.handled, lane.fallbacks)
    action()
    assert (lane.handled, lane.fallbacks) == (before[0], before[1] + 1)
    assert lane.reason == reason


def test_a_plain_fill_and_a_chain_take_the_lane(lane_dev: Any) -> None:
    lane = lane_dev.test_backend._lane
    lane_dev.fake.hold()
    first = _fill(lane_dev)
    second = _fill(lane_dev, ((first, 1),), queue=2)
    assert lane.handled == 2 and lane.fallbacks == 0
    lane_dev.fake.release()
    second.wait(1, TIMEOUT)
    assert first.query() == 1


def test_a_host_wait_falls_back(lane_dev: Any) -> None:
    host = lane_dev.create_semaphore()
    sems: list[Any] = []
    _expect_fallback(lane_dev, "host wait", lambda: sems.append(_fill(lane_dev, ((host, 1),))))
    host.signal(1)
    sems[0].wait(1, TIMEOUT)


def test_a_barrier_falls_back(lane_dev: Any) -> None:
    sem = lane_dev.create_semaphore()
    _expect_fallback(lane_dev, "kind", lambda: lane_dev.queue_barrier(1, (), ((sem, 1),)))
    sem.wait(1, TIMEOUT)


def test_another_thread_without_the_context_falls_back(lane_dev: Any) -> None:
    buf = lane_dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    sem = lane_dev.create_semaphore()

    def fill() -> None:  # a thread that has made no driver call yet
        lane_dev.queue_fill(1, (), ((sem, 1),), buf, 0, 16, b"\1\2\3\4")

    worker = threading.Thread(target=fill)
    _expect_fallback(lane_dev, "context not current", lambda: (worker.start(), worker.join()))
    sem.wait(1, TIMEOUT)


def test_a_program_with_a_graph_falls_back(lane_dev: Any) -> None:
    exe = lane_dev.create_executable_cache("g").prepare("ptx", load_ptx(CTS_LIBRARY))
    fn = exe.lookup_function("negate")
    buf = lane_dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    cb = lane_dev.create_command_buffer(
        CommandBufferMode.DEFAULT, CommandCategory.ANY, QueueAffinity.ANY, 0
    )
    cb.begin()
    cb.dispatch(exe, fn, DispatchConfig.static(1), COUNT_4, (buf, buf))
    cb.end()
    sem = lane_dev.create_semaphore()
    _expect_fallback(lane_dev, "graph", lambda: lane_dev.queue_execute(1, (), ((sem, 1),), cb))
    sem.wait(1, TIMEOUT)


def test_profiling_falls_back(lane_dev: Any) -> None:
    """A session's ops run the Python path (its timers and taps); after it, the lane."""
    from hal_core.profiling import ProfilingDataFamily, ProfilingOptions, StatisticsSink

    families = ProfilingDataFamily.QUEUE_EVENTS | ProfilingDataFamily.HOST_EXECUTION_EVENTS
    lane_dev.profiling_begin(ProfilingOptions(families, sinks=[StatisticsSink()]))
    sems: list[Any] = []
    try:
        _expect_fallback(lane_dev, "profiling", lambda: sems.append(_fill(lane_dev)))
        sems[0].wait(1, TIMEOUT)
    finally:
        lane_dev.profiling_end()
    lane = lane_dev.test_backend._lane
    handled = lane.handled
    _fill(lane_dev).wait(1, TIMEOUT)
    assert lane.handled == handled + 1


def test_a_closed_device_refuses_through_the_python_path(lane_dev: Any) -> None:
    lane_dev.test_backend._closing = True
    try:
        with pytest.raises(hal_core.FailedPreconditionError, match="closed"):
            _expect_fallback(lane_dev, "closing", lambda: _fill(lane_dev))
    finally:
        lane_dev.test_backend._closing = False
    lane = lane_dev.test_backend._lane
    assert lane.reason == "closing"


def test_a_failed_driver_call_fails_the_op_and_its_waiters_and_the_device_goes_on(
    lane_dev: Any,
) -> None:
    """The lane takes both fills; the first one's cuMemsetD32Async fails, which fails its
    signal INVALID_ARGUMENT (CUDA_ERROR_INVALID_VALUE) and, at completion, the signal of
    the fill waiting on it on the device; the next fill runs."""
    lane = lane_dev.test_backend._lane
    lane_dev.fake.hold()
    lane_dev.fake.fail["cuMemsetD32Async"] = 0
    first = _fill(lane_dev)
    second = _fill(lane_dev, ((first, 1),), queue=2)
    assert lane.handled == 2
    lane_dev.fake.release()
    for sem in (first, second):
        with pytest.raises(hal_core.HalError) as caught:
            sem.wait(1, TIMEOUT)
        assert caught.value.code == StatusCode.INVALID_ARGUMENT
        assert "cuMemsetD32Async" in str(caught.value)
    _fill(lane_dev).wait(1, TIMEOUT)
    assert lane.handled == 3


def test_a_dropped_weak_buffer_fails_failed_precondition(lane_dev: Any) -> None:
    exe = lane_dev.create_executable_cache("w").prepare("ptx", load_ptx(CTS_LIBRARY))
    fn = exe.lookup_function("negate")
    buf = lane_dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    cb = lane_dev.create_command_buffer(
        CommandBufferMode.UNRETAINED, CommandCategory.ANY, QueueAffinity.ANY, 0
    )
    cb.begin()
    cb.dispatch(exe, fn, DispatchConfig.static(1), COUNT_4, (buf, buf))
    cb.end()
    alive = weakref.ref(buf)
    del buf
    gc.collect()
    assert alive() is None
    lane = lane_dev.test_backend._lane
    sem = lane_dev.create_semaphore()
    lane_dev.queue_execute(1, (), ((sem, 1),), cb)
    assert lane.handled == 1
    with pytest.raises(hal_core.FailedPreconditionError, match="UNRETAINED"):
        sem.wait(1, TIMEOUT)
    assert lane_dev.fake.launches == []


@needs_native
def test_an_alloca_stream_device_runs_its_fills_through_the_lane(
    monkeypatch: Any, default_hook: None
) -> None:
    """alloca=stream wraps ``submit`` (and ``_complete``) around the lane: its allocas
    take their own route, other stream work the lane."""
    install(monkeypatch, FakeDriver())
    monkeypatch.setenv(native_lane.NATIVE_ENV, "1")
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {"alloca": "stream"})
    dev = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    try:
        _fill(dev).wait(1, TIMEOUT)
        assert backend._lane.handled == 1
    finally:
        dev.close()


def test_native_off_runs_the_python_path(monkeypatch: Any, default_hook: None) -> None:
    dev, api = _device(monkeypatch, False)
    try:
        backend = dev.test_backend
        assert backend._lane is None and backend.native == "python (HAL_CUDA_NATIVE=0)"
        _fill(dev).wait(1, TIMEOUT)
        assert api.calls_on("MainThread")["cuMemsetD32Async"] == 1
    finally:
        dev.close()


# -- completion: the in-flight race ----------------------------------------------------


class RacingTable(dict):
    """An in-flight table whose ``get`` of a semaphore, once armed, lets another thread
    publish a newer entry for it (under the hand-over lock, as every hand-over does)
    before answering, as a thread switch between a look-up and a deletion would."""

    def __init__(self, lock: Any) -> None:
        super().__init__()
        self.lock = lock
        self.armed: Any = None
        self.newer = ("newer",)
        self.done = threading.Event()

    def _publish(self, key: Any) -> None:
        with self.lock:
            self[key] = self.newer

    def get(self, key: Any, default: Any = None) -> Any:
        found = dict.get(self, key, default)
        if key is self.armed:
            self.armed = None
            self.late = threading.Thread(target=self._publish, args=(key,))
            self.late.start()
            self.late.join(0.5)  # fixed: it waits for the lock the completion holds
            self.done.set()
        return found


def test_completion_never_drops_a_newer_in_flight_entry(
    monkeypatch: Any, default_hook: None
) -> None:
    """Completing an op removes its in-flight entry only if that entry is still the
    published one: an entry a later op published meanwhile stays (a look-up followed by
    a deletion could drop it)."""
    dev, api = _device(monkeypatch, False)
    backend = dev.test_backend
    table = RacingTable(backend.completion._lock)
    backend._inflight = table
    if hasattr(backend, "_discard"):
        backend._discard = native_lane.discarder(backend.completion._lock, table, False)
    api.hold()
    sem = _fill(dev)
    assert dict.get(table, sem) is not None
    table.armed = sem
    api.release()
    sem.wait(1, TIMEOUT)
    assert table.done.wait(TIMEOUT)
    table.late.join(TIMEOUT)
    assert dict.get(table, sem) is table.newer
    dev.close()


@needs_native
def test_native_discard_keeps_a_replaced_entry() -> None:
    sem_a, sem_b = object(), object()
    a, b = (1, None, 0, sem_a), (1, None, 0, sem_b)
    table = {sem_a: a, sem_b: ("newer",)}
    native_lane.native.discard(table, [a, b])
    assert table == {sem_b: ("newer",)}
    native_lane.native.discard(table, None)
    native_lane.native.discard(table, (2, None, 0, sem_b))
    assert table == {sem_b: ("newer",)}


# -- long chains -----------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_a_100000_op_chain(monkeypatch: Any, default_hook: None, native: bool) -> None:
    """Each fill waits on the previous one's value, alternating two queues."""
    if native and native_lane.native is None:
        pytest.skip("hal_cuda._native_lane is not built")
    dev, api = _device(monkeypatch, native, FakeDriver())
    try:
        buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 4)
        sem = dev.create_semaphore()
        fill = dev.queue_fill
        for v in range(100_000):
            fill(1 + (v & 1), ((sem, v),), ((sem, v + 1),), buf, 0, 4, b"\1\2\3\4")
        sem.wait(100_000, 120.0)
        lane = dev.test_backend._lane
        if lane is not None:
            assert lane.handled > 90_000
    finally:
        dev.close()
