"""CTS: queue submissions ordered by semaphores (IREE's SemaphoreSubmissionTest).

Every scenario here uses queue barriers (a submission with no work), so it needs no
command buffers: signal-only barriers, waits on host and device semaphores in every mix,
cross-queue wait-before-signal without head-of-line blocking, fan-out/fan-in, waits on
several values of one semaphore, and failure propagation. The indirect command-buffer
retention scenario lives with the command-buffer suites.
"""

from __future__ import annotations

import pytest

import hal_core
from hal_core import FAILURE_VALUE, QueueAffinity, StatusCode

from .context import TIMEOUT

pytestmark = pytest.mark.hal_requires("async_queue")

ANY = QueueAffinity.ANY


def _two_queues(cts) -> tuple[int, int]:
    if cts.device.queue_count < 2:
        pytest.skip("backend exposes fewer than two explicit queue affinities")
    return 1 << 0, 1 << 1


def test_barrier_signal_only(cts):
    sem = cts.semaphore(0)
    cts.device.queue_barrier(ANY, [], [(sem, 1)])
    cts.wait(sem, 1)
    assert sem.query() == 1


def test_barrier_without_signals_or_waits(cts):
    cts.device.queue_barrier(ANY, [], [])
    sem = cts.semaphore(0)
    cts.device.queue_barrier(ANY, [], [(sem, 1)])
    cts.wait(sem, 1)


def test_wait_on_host_signal(cts):
    wait_sem = cts.semaphore(0)
    signal_sem = cts.semaphore(100)
    cts.device.queue_barrier(ANY, [(wait_sem, 1)], [(signal_sem, 101)])
    # The wait is not reached: nothing may have been signalled.
    assert signal_sem.query() == 100
    with pytest.raises(hal_core.DeadlineExceededError):
        signal_sem.wait(101, 0)
    wait_sem.signal(1)
    cts.wait(signal_sem, 101)
    assert signal_sem.query() == 101


def test_multiple_waits_and_signals(cts):
    w1, w2 = cts.semaphore(0), cts.semaphore(0)
    s1, s2 = cts.semaphore(0), cts.semaphore(10)
    cts.device.queue_barrier(ANY, [(w1, 1), (w2, 5)], [(s1, 1), (s2, 11)])
    w1.signal(1)
    assert s1.query() == 0 and s2.query() == 10
    w2.signal(5)
    cts.device.wait_semaphores(hal_core.WaitMode.ALL, [(s1, 1), (s2, 11)], TIMEOUT)


@pytest.mark.parametrize("host_first", [True, False])
@pytest.mark.parametrize("mode", ["all", "any"])
def test_wait_on_host_and_device_semaphores(cts, host_first, mode):
    """A batch waits on a host-signalled semaphore and a device-signalled one; the host
    then waits for all or any of the outputs."""
    host = cts.semaphore(0)
    device_gate = cts.semaphore(0)
    device_sem = cts.semaphore(0)
    out = cts.semaphore(0)
    cts.device.queue_barrier(ANY, [(device_gate, 1)], [(device_sem, 1)])
    cts.device.queue_barrier(ANY, [(host, 1), (device_sem, 1)], [(out, 1)])
    if host_first:
        host.signal(1)
        assert out.query() == 0
        device_gate.signal(1)
    else:
        device_gate.signal(1)
        cts.wait(device_sem, 1)
        assert out.query() == 0
        host.signal(1)
    pairs = [(out, 1), (device_sem, 1)]
    if mode == "all":
        cts.device.wait_semaphores(hal_core.WaitMode.ALL, pairs, TIMEOUT)
    else:
        assert cts.device.wait_semaphores(hal_core.WaitMode.ANY, pairs, TIMEOUT) in (0, 1)
        cts.wait(out, 1)


def test_host_waits_any_of_device_semaphores(cts):
    gate_a, gate_b = cts.semaphore(0), cts.semaphore(0)
    a, b = cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_barrier(ANY, [(gate_a, 1)], [(a, 1)])
    cts.device.queue_barrier(ANY, [(gate_b, 1)], [(b, 1)])
    gate_b.signal(1)
    assert cts.device.wait_semaphores(hal_core.WaitMode.ANY, [(a, 1), (b, 1)], TIMEOUT) == 1
    assert a.query() == 0
    gate_a.signal(1)
    cts.wait(a, 1)


def test_device_to_device_chain(cts):
    gate = cts.semaphore(0)
    links = [cts.semaphore(0) for _ in range(4)]
    cts.device.queue_barrier(ANY, [(gate, 1)], [(links[0], 1)])
    for prev, nxt in zip(links, links[1:]):
        cts.device.queue_barrier(ANY, [(prev, 1)], [(nxt, 1)])
    assert all(s.query() == 0 for s in links)
    gate.signal(1)
    cts.wait(links[-1], 1)
    assert all(s.query() == 1 for s in links)


def test_long_chain_completes_on_one_signal(cts):
    """Thousands of dependent submissions alternating queues: completion chains
    iteratively (no recursion limit is hit) and every link is reached."""
    n = 3000
    affinities = cts.queue_affinities()
    sem = cts.semaphore(0)
    for i in range(1, n + 1):
        affinity = affinities[i % len(affinities)]
        cts.device.queue_barrier(affinity, [(sem, i)], [(sem, i + 1)])
    assert sem.query() == 0
    sem.signal(1)
    cts.wait(sem, n + 1)
    assert sem.query() == n + 1


def test_two_batches_wait_on_one_semaphore(cts):
    gate = cts.semaphore(0)
    a, b = cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_barrier(ANY, [(gate, 1)], [(a, 1)])
    cts.device.queue_barrier(ANY, [(gate, 1)], [(b, 1)])
    gate.signal(1)
    hal_core.wait_all([(a, 1), (b, 1)], TIMEOUT)


def test_waits_on_different_values_of_one_semaphore(cts):
    gate = cts.semaphore(0)
    outs = [cts.semaphore(0) for _ in range(3)]
    for value, out in zip((1, 2, 3), outs):
        cts.device.queue_barrier(ANY, [(gate, value)], [(out, 1)])
    gate.signal(2)
    cts.wait(outs[0], 1)
    cts.wait(outs[1], 1)
    assert outs[2].query() == 0
    gate.signal(3)
    cts.wait(outs[2], 1)


def test_batch_waits_on_host_and_device_signals(cts):
    host = cts.semaphore(0)
    producer_gate = cts.semaphore(0)
    produced = cts.semaphore(0)
    out = cts.semaphore(0)
    cts.device.queue_barrier(ANY, [(producer_gate, 1)], [(produced, 1)])
    cts.device.queue_barrier(ANY, [(produced, 1), (host, 1)], [(out, 1)])
    producer_gate.signal(1)
    host.signal(1)
    cts.wait(out, 1)


def test_batch_signals_host_and_another_batch(cts):
    gate = cts.semaphore(0)
    to_host = cts.semaphore(0)
    to_batch = cts.semaphore(0)
    final = cts.semaphore(0)
    cts.device.queue_barrier(ANY, [(to_batch, 1)], [(final, 1)])
    cts.device.queue_barrier(ANY, [(gate, 1)], [(to_host, 1), (to_batch, 1)])
    gate.signal(1)
    cts.wait(to_host, 1)
    cts.wait(final, 1)


def test_signal_larger_value_before_enqueueing_wait(cts):
    sem = cts.semaphore(0)
    out = cts.semaphore(0)
    sem.signal(5)
    cts.device.queue_barrier(ANY, [(sem, 2)], [(out, 1)])
    cts.wait(out, 1)


def test_signal_larger_value_after_enqueueing_wait(cts):
    sem = cts.semaphore(0)
    out = cts.semaphore(0)
    cts.device.queue_barrier(ANY, [(sem, 2)], [(out, 1)])
    sem.signal(5)
    cts.wait(out, 1)


def test_cross_queue_wait_before_signal(cts):
    """Queue 1 waits on a semaphore that queue 0 signals only later: queue 1 must not
    block queue 0 (no head-of-line deadlock), and later work on queue 1 is not stuck
    behind the parked wait."""
    q0, q1 = _two_queues(cts)
    gate = cts.semaphore(0)
    cross = cts.semaphore(0)
    consumer_done = cts.semaphore(0)
    independent = cts.semaphore(0)
    cts.device.queue_barrier(q1, [(cross, 1)], [(consumer_done, 1)])
    cts.device.queue_barrier(q1, [], [(independent, 1)])
    cts.wait(independent, 1)  # not held behind the parked barrier on the same queue
    cts.device.queue_barrier(q0, [(gate, 1)], [(cross, 1)])
    assert consumer_done.query() == 0
    gate.signal(1)
    cts.wait(consumer_done, 1)


def test_cross_queue_fan_out(cts):
    q0, q1 = _two_queues(cts)
    producer = cts.semaphore(0)
    gate = cts.semaphore(0)
    out0, out1 = cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_barrier(q0, [(producer, 1)], [(out0, 1)])
    cts.device.queue_barrier(q1, [(producer, 2)], [(out1, 1)])
    cts.device.queue_barrier(q0, [(gate, 1)], [(producer, 3)])
    gate.signal(1)
    hal_core.wait_all([(out0, 1), (out1, 1)], TIMEOUT)
    assert producer.query() == 3


def test_cross_queue_fan_in(cts):
    q0, q1 = _two_queues(cts)
    gate = cts.semaphore(0)
    a, b, joined = cts.semaphore(0), cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_barrier(q0, [(a, 1), (b, 1)], [(joined, 1)])
    cts.device.queue_barrier(q0, [(gate, 1)], [(a, 1)])
    cts.device.queue_barrier(q1, [(gate, 1)], [(b, 1)])
    gate.signal(1)
    cts.wait(joined, 1)


def test_every_queue_affinity_is_usable(cts):
    sems = []
    for affinity in cts.queue_affinities():
        sem = cts.semaphore(0)
        cts.device.queue_barrier(affinity, [], [(sem, 1)])
        sems.append((sem, 1))
    hal_core.wait_all(sems, TIMEOUT)


def test_queue_flush(cts):
    gate, done = cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_barrier(ANY, [(gate, 1)], [(done, 1)])
    cts.device.queue_flush(ANY)
    for affinity in cts.queue_affinities():
        cts.device.queue_flush(affinity)
    assert done.query() == 0  # flushing never skips a wait
    gate.signal(1)
    cts.wait(done, 1)


# --------------------------------------------------------------------------- failure


def test_propagate_fail_signal(cts):
    wait_sem = cts.semaphore(0)
    signal_sem = cts.semaphore(0)
    cts.device.queue_barrier(ANY, [(wait_sem, 1)], [(signal_sem, 1)])
    wait_sem.fail(StatusCode.CANCELLED, "upstream cancelled")
    with pytest.raises(hal_core.CancelledError):
        signal_sem.wait(1, TIMEOUT)
    assert signal_sem.value >= FAILURE_VALUE
    with pytest.raises(hal_core.CancelledError):
        signal_sem.query()


def test_failure_travels_down_a_chain_and_later_work_runs(cts):
    gate = cts.semaphore(0)
    links = [cts.semaphore(0) for _ in range(3)]
    cts.device.queue_barrier(ANY, [(gate, 1)], [(links[0], 1)])
    for prev, nxt in zip(links, links[1:]):
        cts.device.queue_barrier(ANY, [(prev, 1)], [(nxt, 1)])
    gate.fail(StatusCode.DATA_LOSS, "lost")
    for sem in links:
        with pytest.raises(hal_core.DataLossError):
            sem.wait(1, TIMEOUT)
    fresh = cts.semaphore(0)
    cts.device.queue_barrier(ANY, [], [(fresh, 1)])
    cts.wait(fresh, 1)


def test_wait_on_already_failed_semaphore(cts):
    failed = cts.semaphore(0)
    failed.fail(StatusCode.ABORTED, "early")
    out = cts.semaphore(0)
    cts.device.queue_barrier(ANY, [(failed, 1)], [(out, 1)])
    with pytest.raises(hal_core.AbortedError):
        out.wait(1, TIMEOUT)


def test_one_failed_wait_among_several(cts):
    ok, bad = cts.semaphore(0), cts.semaphore(0)
    out = cts.semaphore(0)
    cts.device.queue_barrier(ANY, [(ok, 1), (bad, 1)], [(out, 1)])
    ok.signal(1)
    bad.fail(StatusCode.UNAVAILABLE, "device lost")
    with pytest.raises(hal_core.UnavailableError):
        out.wait(1, TIMEOUT)
    assert ok.query() == 1


# --------------------------------------------------------------------------- bad input


def test_signal_backwards_at_submit_is_invalid(cts):
    sem = cts.semaphore(5)
    for bad in (5, 3):
        with pytest.raises(hal_core.InvalidArgumentError, match="signal value"):
            cts.device.queue_barrier(ANY, [], [(sem, bad)])
    assert sem.query() == 5  # nothing was submitted
    cts.device.queue_barrier(ANY, [], [(sem, 6)])
    cts.wait(sem, 6)


def test_signal_beyond_max_value_at_submit_is_invalid(cts):
    sem = cts.semaphore(0)
    with pytest.raises(hal_core.InvalidArgumentError, match=str(hal_core.MAX_VALUE)):
        cts.device.queue_barrier(ANY, [], [(sem, hal_core.MAX_VALUE + 1)])
    assert sem.query() == 0 and sem.failure is None
    cts.device.queue_barrier(ANY, [], [(sem, hal_core.MAX_VALUE)])
    cts.wait(sem, hal_core.MAX_VALUE)


def test_wait_semaphores_with_unknown_mode_is_invalid(cts):
    sem = cts.semaphore(1)
    with pytest.raises(hal_core.InvalidArgumentError, match="mode"):
        cts.device.wait_semaphores(7, [(sem, 1)], 0)


def test_malformed_semaphore_lists_are_invalid(cts):
    sem = cts.semaphore(0)
    for bad in ([(object(), 1)], [(sem, "1")], [sem]):
        with pytest.raises(hal_core.InvalidArgumentError):
            cts.device.queue_barrier(ANY, bad, [])
        with pytest.raises(hal_core.InvalidArgumentError):
            cts.device.queue_barrier(ANY, [], bad)
    cts.device.queue_barrier(ANY, [], [(sem, 1)])
    cts.wait(sem, 1)


def test_affinity_selecting_no_queue_is_invalid(cts):
    missing = 1 << cts.device.queue_count
    sem = cts.semaphore(0)
    with pytest.raises(hal_core.InvalidArgumentError, match="affinity"):
        cts.device.queue_barrier(missing, [], [(sem, 1)])
    assert sem.query() == 0
    cts.device.queue_barrier(ANY, [], [(sem, 1)])
    cts.wait(sem, 1)


# --------------------------------------------------------------------------- stress


def test_stress_concurrent_submitters_interleave_one_chain(cts):
    """Several host threads submit the links of one dependency chain in an arbitrary
    interleaving (link i waits on value i and signals i + 1); links are often submitted
    before the link they wait on. Every link runs exactly once, in chain order."""
    threads, links = 4, 1200
    affinities = cts.queue_affinities()
    sem = cts.semaphore(0)
    order: list[int] = []

    def record(args, context):
        order.append(args[0])

    def submitter(k):
        for i in range(k + 1, links + 1, threads):
            affinity = affinities[i % len(affinities)]
            if i % 3 == 0:
                cts.device.queue_host_call(
                    affinity, [(sem, i)], [(sem, i + 1)], record, (i, 0, 0, 0)
                )
            else:
                cts.device.queue_barrier(affinity, [(sem, i)], [(sem, i + 1)])

    workers = [cts.thread(submitter, k) for k in range(threads)]
    for t in workers:
        t.join()
    sem.signal(1)
    cts.wait(sem, links + 1)
    assert order == list(range(3, links + 1, 3))


def test_stress_independent_chains_from_threads(cts):
    threads, links = 4, 300
    affinities = cts.queue_affinities()
    sems = [cts.semaphore(0) for _ in range(threads)]

    def submitter(k):
        sem = sems[k]
        for i in range(links):
            affinity = affinities[(i + k) % len(affinities)]
            cts.device.queue_barrier(affinity, [(sem, i)], [(sem, i + 1)])
        sem.wait(links, TIMEOUT)

    workers = [cts.thread(submitter, k) for k in range(threads)]
    for t in workers:
        t.join()
    assert [s.query() for s in sems] == [links] * threads
