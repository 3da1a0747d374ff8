"""The completion thread's coalescing (``hal_cuda/completion.py``), over a stand-in driver
whose events can lag and fault: a batch of finished ops completes with one query per
stream, every op's signals publish in hand-over order and its retained objects are
released; a GPU a step behind costs a second probe and one wait; a kernel fault in the
middle of a batch fails exactly the ops whose events report it (and later ones, as CUDA's
sticky errors do), never the ops before it. Each test runs with Python's default
``sys.unraisablehook``: an error escaping a HAL thread would be printed, not collected
by pytest, and the test checks that nothing was reported."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest
from hal_cuda import cuda_api
from hal_cuda import driver as cuda_driver
from hal_cuda.kernels import CTS_LIBRARY, load_ptx

import hal_core
from hal_core import BufferParams, BufferUsage, DispatchConfig, StatusCode
from hal_core.backend import device_from_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import NOT_READY, FakeDriver, install  # noqa: E402

TIMEOUT = 10.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
COUNT_4 = (4).to_bytes(4, "little")
ILLEGAL_ADDRESS = 700  # CUDA_ERROR_ILLEGAL_ADDRESS: sticky


class LaggingFake(FakeDriver):
    """``FakeDriver`` whose events can also be held one by one and can fault.

    * ``blocked`` is set once a thread waits in ``cuEventSynchronize`` on an event not
      reached (the completion thread asleep in the driver).
    * ``lag()``: events recorded from now on stay unreached (also after ``release``)
      until ``catch_up()``, as on a GPU still running the last work submitted.
    * ``fault_kernel``: a launch of that kernel faults; as CUDA's errors are sticky,
      every event recorded after it reports CUDA_ERROR_ILLEGAL_ADDRESS. Events recorded
      before it are reached normally.
    """

    def __init__(self) -> None:
        super().__init__()
        self.blocked = threading.Event()
        self.fault_kernel: str | None = None
        self._sticky = False
        self._faulted: set[Any] = set()
        self._lagging: set[Any] = set()
        self._lag = False
        self._caught_up = threading.Event()

    def lag(self) -> None:
        self._lag = True

    def catch_up(self) -> None:
        self._lag = False
        self._lagging.clear()
        self._caught_up.set()

    def cuEventRecord(self, event: Any, stream: Any) -> tuple:
        (self._faulted.add if self._sticky else self._faulted.discard)(event)
        (self._lagging.add if self._lag else self._lagging.discard)(event)
        return (0,)

    def cuLaunchKernel(self, function: int, *args: Any) -> tuple:
        result = FakeDriver.cuLaunchKernel(self, function, *args)
        if self.launches and self.launches[-1].name == self.fault_kernel:
            self._sticky = True
        return result

    def _state(self, event: Any) -> int:
        if not self._gate.is_set() or event in self._lagging:
            return NOT_READY
        return ILLEGAL_ADDRESS if event in self._faulted else 0

    def cuEventQuery(self, event: Any) -> tuple:
        return (self._state(event),)

    def cuEventSynchronize(self, event: Any) -> tuple:
        if self._state(event) == NOT_READY:
            self.blocked.set()
        self._gate.wait()
        if event in self._lagging:
            self._caught_up.wait()
        return (self._state(event),)


@pytest.fixture
def fake(monkeypatch: Any) -> Any:
    api = LaggingFake()
    install(monkeypatch, api)
    yield api
    api.release()
    api.catch_up()
    cuda_api.reset_for_tests()


@pytest.fixture
def reported(monkeypatch: Any) -> list[Any]:
    """Python's default unraisable hook, wrapped to collect what it is given."""
    seen: list[Any] = []

    def hook(unraisable: Any) -> None:
        seen.append(unraisable)
        sys.__unraisablehook__(unraisable)

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return seen


@pytest.fixture
def dev(fake: LaggingFake) -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    device = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    yield device
    device.close()


def _block_completion(dev: Any, fake: LaggingFake) -> Any:
    """Hold the fake and put one fill on queue 1; return once the completion thread
    sleeps in the driver on it, so everything submitted next waits in its inbox and is
    taken as one batch after ``release``. Counts calls from here on (not that fill's
    query and wait). Returns the semaphore that fill signals (to 1)."""
    scratch = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 4)
    first = dev.create_semaphore()
    fake.hold()
    fake.blocked.clear()
    dev.queue_fill(1, (), ((first, 1),), scratch, 0, 4, b"\0\0\0\0")
    assert fake.blocked.wait(TIMEOUT)
    fake.reset_calls()
    fake.keep_alive = scratch
    return first


def test_a_finished_batch_costs_one_query_per_stream(
    dev: Any, fake: LaggingFake, reported: list[Any]
) -> None:
    """N fills alternating two queues, each waiting on the previous one, taken as one
    batch once the GPU (the fake) has finished them: the completion thread asks about
    each stream's latest event once, signals every semaphore in hand-over order and
    releases what each op retained (its target buffer, freed there once the caller has
    dropped it)."""
    n = 200
    head = _block_completion(dev, fake)
    sems = [dev.create_semaphore() for _ in range(n)]
    order: list[int] = []
    for i, sem in enumerate(sems):
        sem.add_timepoint(1, lambda arg, error: order.append(arg), i)
    targets = [dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 4) for _ in range(n)]
    alive = [weakref.ref(t) for t in targets]
    prev = (head, 1)
    for i in range(n):
        dev.queue_fill(2 if i & 1 else 1, (prev,), ((sems[i], 1),), targets[i], 0, 4, b"\1\2\3\4")
        prev = (sems[i], 1)
    del targets
    fake.release()
    sems[-1].wait(1, TIMEOUT)
    assert order == list(range(n))
    calls = fake.calls_on("cuda0-completion")
    assert calls == {"cuEventQuery": 2, "cuMemFree": n}
    gc.collect()
    assert [ref() for ref in alive] == [None] * n
    assert not dev.backend._inflight  # every in-flight entry forgotten at completion
    assert reported == []


def test_a_gpu_a_step_behind_costs_a_second_probe_and_one_wait(
    dev: Any, fake: LaggingFake, reported: list[Any]
) -> None:
    """The batch's latest event is not reached yet (the GPU still runs it): the thread
    asks about the one before it, completes everything up to there without asking, then
    sleeps on the last op alone."""
    n = 50
    head = _block_completion(dev, fake)
    sem = dev.create_semaphore()
    target = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 4 * n)
    for i in range(n):
        if i == n - 1:
            fake.lag()
        waits = ((head, 1),) if i == 0 else ((sem, i),)
        dev.queue_fill(1, waits, ((sem, i + 1),), target, 4 * i, 4, b"\1\2\3\4")
    fake.blocked.clear()
    fake.release()
    sem.wait(n - 1, TIMEOUT)
    assert fake.blocked.wait(TIMEOUT)  # asleep on the last op
    assert sem.query() == n - 1
    fake.catch_up()
    sem.wait(n, TIMEOUT)
    calls = fake.calls_on("cuda0-completion")
    # The latest (not ready) and the one before it; then the last op's own, and a wait.
    assert calls == {"cuEventQuery": 2 + 1, "cuEventSynchronize": 1}
    assert reported == []


def test_a_fault_in_the_middle_of_a_batch_fails_the_ops_from_it_on(
    dev: Any, fake: LaggingFake, reported: list[Any]
) -> None:
    """20 dispatches alternating two queues, each signalling its own semaphore; the
    eleventh launches a kernel that faults. Taken as one batch: the ten before it
    complete, it and every later one (on both streams: the error is sticky for the
    context) fail INTERNAL naming the CUDA error, and an op submitted afterwards fails
    too, without hanging."""
    exe = dev.create_executable_cache("faults").prepare("ptx", load_ptx(CTS_LIBRARY))
    negate, noop = exe.lookup_function("negate"), exe.lookup_function("noop")
    buf = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 16)
    config = DispatchConfig.static(1)
    fake.fault_kernel = "noop"
    _block_completion(dev, fake)
    sems = [dev.create_semaphore() for _ in range(20)]
    for i, sem in enumerate(sems):
        if i == 10:
            dev.queue_dispatch(1, (), ((sem, 1),), exe, noop, config, b"", ())
        else:
            affinity = 2 if i & 1 else 1
            dev.queue_dispatch(affinity, (), ((sem, 1),), exe, negate, config, COUNT_4, (buf, buf))
    fake.release()
    for sem in sems[:10]:
        sem.wait(1, TIMEOUT)
    for sem in sems[10:]:
        with pytest.raises(hal_core.HalError) as caught:
            sem.wait(1, TIMEOUT)
        assert caught.value.code == StatusCode.INTERNAL
        assert str(ILLEGAL_ADDRESS) in str(caught.value)
    later = dev.create_semaphore()
    dev.queue_fill(2, (), ((later, 1),), buf, 0, 4, b"\0\0\0\0")
    with pytest.raises(hal_core.HalError) as caught:
        later.wait(1, TIMEOUT)
    assert caught.value.code == StatusCode.INTERNAL
    assert reported == []


def test_a_long_chain_completes_in_batches_without_recursion(
    dev: Any, fake: LaggingFake, reported: list[Any]
) -> None:
    """20,000 fills on one queue, each waiting on the previous value, submitted while the
    completion thread sleeps on the first: one batch, completed in a loop (a recursive
    completion would overflow the stack), every value published."""
    n = 20_000
    head = _block_completion(dev, fake)
    sem = dev.create_semaphore()
    target = dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 4)
    fill = dev.queue_fill
    fill(1, ((head, 1),), ((sem, 1),), target, 0, 4, b"\1\2\3\4")
    for v in range(1, n):
        fill(1, ((sem, v),), ((sem, v + 1),), target, 0, 4, b"\1\2\3\4")
    fake.release()
    sem.wait(n, 60.0)
    assert fake.calls_on("cuda0-completion")["cuEventQuery"] == 1
    assert reported == []
