"""Device-side waits on other CUDA devices' signals (``hal_cuda.stream_waits``) over the
stand-in driver: which waits become ``cuStreamWaitValue64`` on a semaphore word, what the
word holds as the semaphore advances or fails, the host fallback without 64-bit stream
memory operations, and that host-signalled waits never hold a queue's stream."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hal_cuda import cuda_api
from hal_cuda import driver as cuda_driver
from hal_cuda.memory import allocate_host
from hal_cuda.stream_waits import FAILED_WORD, SLAB_WORDS

import hal_core
from hal_core import BufferParams, BufferUsage, StatusCode
from hal_core.backend import device_from_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import install  # noqa: E402
from fake_cuda_peers import FakePeerDriver  # noqa: E402

TIMEOUT = 10.0
Q0, Q1 = 1, 2  # queue affinities of queue 0 and queue 1
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER


@pytest.fixture
def peers(monkeypatch: Any) -> Any:
    api = FakePeerDriver(gpus=2)
    install(monkeypatch, api)
    yield api
    api.release()
    cuda_api.reset_for_tests()


def open_device(path: str) -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path(path, {})
    return device_from_backend(backend, driver_name="cuda", uri=f"cuda://{path}")


def buffer(dev: Any, size: int = 256) -> Any:
    return dev.allocator.allocate_buffer(BufferParams(usage=USAGE), size)


def stage(api: Any) -> tuple[Any, Any, Any, Any]:
    """Two devices (GPU 0 and GPU 1) with events held unreached: ``producer`` has a fill
    in flight that will signal ``sem`` to 1, ``consumer`` has work of its own in flight
    (so its submits look at waits)."""
    consumer, producer = open_device("0"), open_device("1")
    api.hold()
    sem = producer.create_semaphore(0)
    producer.queue_fill(Q1, [], [(sem, 1)], buffer(producer), 0, 256, b"\x01")
    busy = consumer.create_semaphore(0)
    consumer.queue_fill(Q1, [], [(busy, 1)], buffer(consumer), 0, 256, b"\x02")
    return consumer, producer, sem, busy


def test_wait_on_another_gpus_work_is_a_word_wait_on_the_stream(peers: Any) -> None:
    consumer, producer, sem, _busy = stage(peers)
    try:
        waits = consumer._backend.stream_waits
        done = consumer.create_semaphore(0)
        target = buffer(consumer)
        consumer.queue_fill(Q0, [(sem, 1)], [(done, 1)], target, 0, 256, b"\x07")
        assert waits.counts() == {"event": 0, "word": 1, "host": 0}
        ((stream, address, value, flags),) = peers.value_waits
        assert stream is consumer._backend.streams[0] and (value, flags) == (1, 0)
        assert peers.word(address) == 0 == waits.word_of(sem)  # not signalled yet
        peers.release()
        done.wait(1, TIMEOUT)
        # The waiter completed behind the word, so after the producer signalled.
        assert sem.query() == 1 and peers.word(address) == 1 == waits.word_of(sem)
    finally:
        peers.release()
        consumer.close()
        producer.close()


def test_a_failed_semaphore_unblocks_the_stream_and_fails_the_op(peers: Any) -> None:
    consumer, producer, sem, _busy = stage(peers)
    try:
        done = consumer.create_semaphore(0)
        consumer.queue_fill(Q0, [(sem, 1)], [(done, 1)], buffer(consumer), 0, 256, b"\x07")
        ((_stream, address, _value, _flags),) = peers.value_waits
        sem.fail(StatusCode.ABORTED, "producer gave up")
        # The sentinel satisfies every GEQ wait on a HAL value: the stream moves on.
        assert peers.word(address) == FAILED_WORD
        peers.release()
        with pytest.raises(hal_core.HalError) as info:
            done.wait(1, TIMEOUT)
        assert info.value.code == StatusCode.ABORTED
        # Both devices keep working.
        later = consumer.create_semaphore(0)
        consumer.queue_fill(Q0, [], [(later, 1)], buffer(consumer), 0, 256, b"\x01")
        later.wait(1, TIMEOUT)
    finally:
        peers.release()
        consumer.close()
        producer.close()


def test_words_only_grow_and_several_values_share_one_word(peers: Any) -> None:
    consumer, producer, sem, _busy = stage(peers)
    try:
        producer.queue_fill(Q1, [], [(sem, 2)], buffer(producer), 0, 256, b"\x01")
        done = consumer.create_semaphore(0)
        consumer.queue_fill(Q0, [(sem, 2)], [(done, 1)], buffer(consumer), 0, 256, b"\x01")
        consumer.queue_fill(Q0, [(sem, 1)], [(done, 2)], buffer(consumer), 0, 256, b"\x01")
        first, second = peers.value_waits
        assert first[1] == second[1] and (first[2], second[2]) == (2, 1)
        peers.release()
        done.wait(2, TIMEOUT)
        sem.wait(2, TIMEOUT)
        assert peers.word(first[1]) == 2
    finally:
        peers.release()
        consumer.close()
        producer.close()


def test_host_signals_stay_on_the_host_and_hold_no_stream(peers: Any) -> None:
    consumer, producer, _sem, _busy = stage(peers)
    try:
        host = consumer.create_semaphore(0)
        done = consumer.create_semaphore(0)
        independent = consumer.create_semaphore(0)
        consumer.queue_fill(Q0, [(host, 1)], [(done, 1)], buffer(consumer), 0, 256, b"\x01")
        consumer.queue_fill(Q0, [], [(independent, 1)], buffer(consumer), 0, 256, b"\x01")
        assert peers.value_waits == []
        assert consumer._backend.stream_waits.counts() == {"event": 0, "word": 0, "host": 1}
        peers.release()
        independent.wait(1, TIMEOUT)
        assert done.query() == 0
        host.signal(1)
        done.wait(1, TIMEOUT)
    finally:
        peers.release()
        consumer.close()
        producer.close()


def test_without_stream_memory_operations_waits_are_deferred_with_a_reason(
    monkeypatch: Any,
) -> None:
    api = FakePeerDriver(gpus=2, memops=False)
    install(monkeypatch, api)
    try:
        info = cuda_driver.CudaDriverBackend().dump_device_info(1)
        assert "waits on other GPUs' work: host deferral" in info
        assert "CAN_USE_64_BIT_STREAM_MEM_OPS is 0" in info
        consumer, producer, sem, _busy = stage(api)
        try:
            assert not consumer._backend.stream_waits.supported
            done = consumer.create_semaphore(0)
            consumer.queue_fill(Q0, [(sem, 1)], [(done, 1)], buffer(consumer), 0, 256, b"\x01")
            assert api.value_waits == []
            assert consumer._backend.stream_waits.counts()["host"] == 1
            api.release()
            done.wait(1, TIMEOUT)
        finally:
            api.release()
            consumer.close()
            producer.close()
    finally:
        cuda_api.reset_for_tests()


def test_hal_info_names_the_word_waits(peers: Any) -> None:
    info = cuda_driver.CudaDriverBackend().dump_device_info(0)
    assert info.count("waits on other GPUs' work: cuStreamWaitValue64 (GEQ)") == 2


def test_semaphore_words_fill_more_than_one_slab(peers: Any) -> None:
    dev = open_device("0")
    try:
        waits = dev._backend.stream_waits
        sems = [dev.create_semaphore(0) for _ in range(SLAB_WORDS + 3)]
        addresses = set()
        for sem in sems:
            words, index = waits._slot(sem)
            assert words[index % SLAB_WORDS] == 0
            addresses.add(index)
        assert len(addresses) == len(sems) and len(waits._slabs) == 2
    finally:
        dev.close()


class Gate:
    """A word in pinned host memory that a stream can be made to wait on (a raw
    ``cuStreamWaitValue64``), opened from the host: holds one stream, not the others."""

    def __init__(self, api: Any, dev: Any) -> None:
        self.api = api
        self.storage = allocate_host(dev._backend.ctx, 4096)
        self.address = self.storage.address

    def hold(self, stream: Any) -> None:
        assert self.api.cuStreamWaitValue64(stream, self.address, 1, 0) == (0,)

    def open(self) -> None:
        np.asarray(self.storage.host_array).view(np.uint64)[0] = 1


def test_a_word_wait_holds_its_op_until_the_producer_signals_and_a_failure_releases_it(
    peers: Any,
) -> None:
    """The producer's stream is held by a gate (its fill stays in flight); the consumer's
    waiter completes only once the producer signals, or at once when the semaphore fails
    while the producer is still held."""
    consumer, producer = open_device("0"), open_device("1")
    gate, busy_gate = Gate(peers, producer), Gate(peers, consumer)
    try:
        gate.hold(producer._backend.streams[1])
        # Consumer work in flight while the waiters are submitted (so they look for their
        # producers); opened right after, as it is ahead of them on the completion thread.
        busy_gate.hold(consumer._backend.streams[1])
        busy = consumer.create_semaphore(0)
        consumer.queue_fill(Q1, [], [(busy, 1)], buffer(consumer), 0, 256, b"\x02")
        ok, bad = producer.create_semaphore(0), producer.create_semaphore(0)
        producer.queue_fill(Q1, [], [(ok, 1), (bad, 1)], buffer(producer), 0, 256, b"\x01")
        first, second = consumer.create_semaphore(0), consumer.create_semaphore(0)
        consumer.queue_fill(Q0, [(bad, 1)], [(second, 1)], buffer(consumer), 0, 256, b"\x03")
        consumer.queue_fill(Q0, [(ok, 1)], [(first, 1)], buffer(consumer), 0, 256, b"\x04")
        assert consumer._backend.stream_waits.counts()["word"] == 2
        busy_gate.open()
        busy.wait(1, TIMEOUT)
        with pytest.raises(hal_core.DeadlineExceededError):
            second.wait(1, 0.1)  # held behind the word
        bad.fail(StatusCode.ABORTED, "producer gave up")
        with pytest.raises(hal_core.HalError) as info:
            second.wait(1, TIMEOUT)  # released while the producer is still held
        assert info.value.code == StatusCode.ABORTED and ok.query() == 0
        with pytest.raises(hal_core.DeadlineExceededError):
            first.wait(1, 0.1)  # still held: ``ok`` is not signalled
        gate.open()
        first.wait(1, TIMEOUT)
        assert ok.query() == 1
    finally:
        gate.open()
        busy_gate.open()
        consumer.close()
        producer.close()
