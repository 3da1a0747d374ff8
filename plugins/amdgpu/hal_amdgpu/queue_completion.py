"""The completion side of an amdgpu host queue: draining, failure, close.

``QueueCompletion`` is the half of ``host_queue.HostQueue`` that runs after publication:
the completion thread waits (``hsa_amd_signal_wait_any``) on the queue's epoch signal and
its stop signal, drains retired epochs in order (signals coalesced per semaphore, host
actions at their epoch, resources dropped, kernarg space reclaimed, parked submissions
retried), advances the queue's frontier axis and tells the retire listener.

Nothing user code does ends the thread: every semaphore signal, host action, frontier
advance and listener call is guarded, and what they raise is reported
(``report_callback_error``) while the rest of the batch still completes.

A queue error (the HSA queue's error callback) is sticky: the completion thread drains
what had completed, fails every pending signal with the HSA error, fails the queue's
frontier axis and peer queues stuck behind a device barrier on it.

``close`` is safe from any thread. From another thread it waits (bounded) for in-flight
work, stops and joins the completion thread, destroys the HSA queue, fails what remains
with CANCELLED and frees the rings and signals. From the completion thread itself (a host
call closing its device) it drains inline instead of joining, and defers freeing the
signals and kernarg ring the thread still reads until the thread ends
(``_at_thread_exit``).

Locks: ``_drain_lock`` guards the gathering of retired epochs; ``_lock`` (submission) is
taken briefly to reclaim kernarg space and retry parked work; ``_idle`` wakes
``wait_idle``; ``_exit_lock`` guards the exit hooks. None is held while semaphores are
signalled or user callbacks run.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

from hal_core import CancelledError, HalError, error_for
from hal_core.backend import fail_all, report_callback_error, run_on_trampoline, signal_all

from .aql_packets import SignalCondition
from .kernarg_ring import KernargRing
from .notification_ring import DrainResult, NotificationRing

__all__ = ["CLOSE_DRAIN_TIMEOUT", "EPOCH_INITIAL_VALUE", "QueueCompletion", "fail_signals"]

#: Initial value of every epoch signal; the completed epoch is ``INITIAL - load(signal)``.
EPOCH_INITIAL_VALUE = 4611686018427387903
#: Seconds ``close`` waits for in-flight work before cancelling it.
CLOSE_DRAIN_TIMEOUT = 10.0
_UINT64_MAX = (1 << 64) - 1
_WAIT_BLOCKED = 0


def fail_signals(signals: Any, error: HalError) -> None:
    """Fail each ``(semaphore, value)`` with ``error``; a semaphore callback that raises
    is reported and the rest still fail."""
    fail_all(signals, error, "failing a semaphore on an amdgpu queue")


def _signal_all(signals: list, _status: Any) -> None:
    """Signal each ``(semaphore, value)`` of a drained batch (a trampoline callback)."""
    signal_all(signals, "signalling a semaphore on an amdgpu queue")


class QueueCompletion:
    """Completion, failure and close of a ``HostQueue`` (whose ``__init__`` sets every
    attribute declared here). See the module docstring."""

    qset: Any
    hsa: Any
    index: int
    axis: int
    error: HalError | None
    published_epoch: int
    completed_epoch: int
    signalled_epoch: int
    epoch_signal: Any
    stop_signal: Any
    notifications: NotificationRing
    kernargs: KernargRing
    _lock: threading.Lock
    _drain_lock: threading.Lock
    _idle: threading.Condition
    _exit_lock: threading.Lock
    _exit_hooks: list[Callable[[], None]] | None
    _closing: bool
    _closed: bool
    _parked: collections.deque[Any]
    _deferred: dict[Any, bool]
    _action_epochs: collections.deque[tuple[int, Callable[[], None]]]
    _batches: collections.deque[tuple[DrainResult, Callable[[], None] | None]]
    _wait_signals: Any
    _wait_conds: Any
    _wait_values: Any
    _kernarg_ptr: Any
    _pm4_waits: Any
    _queue: Any
    _thread: threading.Thread

    def _retry_parked(self) -> None:
        raise NotImplementedError  # HostQueue's: the submission side

    def _fail_sub(self, sub: Any, error: HalError) -> None:
        raise NotImplementedError  # HostQueue's: the submission side

    def _completion_main(self) -> None:
        """The completion thread. Nothing raised by user code or by reporting it ends the
        loop; the thread ends only once the stop signal is set, and then runs the teardown
        that a close from this very thread deferred (``_at_thread_exit``)."""
        lib = self.hsa.lib
        sigs, conds, vals = self._wait_signals, self._wait_conds, self._wait_values
        stop = self.stop_signal
        try:
            while True:
                lib.hsa_amd_signal_wait_any(
                    2, sigs, conds, vals, _UINT64_MAX, _WAIT_BLOCKED, self.hsa.ffi.NULL
                )
                try:
                    self._drain()
                except BaseException as exc:  # never let the thread die
                    report_callback_error(exc, "draining an amdgpu queue")
                # A close from a host call on this thread already stopped the queue.
                if self._closed or lib.hsa_signal_load_scacquire(stop) != 0:
                    break
            if self.error is not None and not self._closed:
                try:
                    self._fail_pending(self.error)
                    self._fail_stuck_peers(self.error)
                except BaseException as exc:
                    report_callback_error(exc, "failing a faulted amdgpu queue")
        finally:
            with self._exit_lock:
                hooks, self._exit_hooks = self._exit_hooks, None
            for hook in hooks or ():
                hook()

    def _at_thread_exit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the completion thread has ended (now if it already has)."""
        with self._exit_lock:
            if self._exit_hooks is not None:
                self._exit_hooks.append(fn)
                return
        fn()

    def _drain(self) -> None:
        """Retire every completed epoch: signal its semaphores, run its host action, drop
        its resources, in epoch order. Called on the completion thread (or by ``close``
        once that thread ended). Re-entrant: a host action that closes the device drains
        from inside its own epoch, and takes over the batches not run yet, so signals
        still reach each semaphore in increasing order."""
        lib = self.hsa.lib
        batches = self._batches
        with self._drain_lock:
            completed = EPOCH_INITIAL_VALUE - lib.hsa_signal_load_scacquire(self.epoch_signal)
            if completed > self.completed_epoch:
                # Arm the next wait from what was drained (not a fresh load): no lost wakeup.
                self._wait_values[0] = EPOCH_INITIAL_VALUE - completed
                ring = self.notifications
                actions = self._action_epochs
                while actions and actions[0][0] <= completed:
                    epoch, action = actions.popleft()
                    batches.append((ring.drain(epoch), action))
                batches.append((ring.drain(completed), None))
                self.completed_epoch = completed
            elif not batches:
                return
            completed = self.completed_epoch
        kernarg_position = -1
        while batches:
            result, run = batches.popleft()
            if result.signals:
                # Through the thread's trampoline: every semaphore of the batch reaches its
                # value before any callback it releases runs (work admitted by one of them
                # cannot finish and signal a semaphore of this batch first).
                run_on_trampoline(_signal_all, result.signals)
            if result.kernarg_position >= 0:
                kernarg_position = result.kernarg_position
            result.resources.clear()
            if run is not None:
                try:
                    run()
                except BaseException as exc:
                    report_callback_error(exc, "a host action on an amdgpu queue", run)
        if completed > self.signalled_epoch:
            self.signalled_epoch = completed
        with self._lock:
            if kernarg_position >= 0:
                self.kernargs.reclaim(kernarg_position)
        self._retry_parked()
        # The queue's frontier axis: "axis at epoch N" = all of this queue's work up to N.
        try:
            self.qset.tracker.advance(self.axis, completed)
        except BaseException as exc:  # frontier waiters run user callbacks
            report_callback_error(exc, "advancing an amdgpu queue's frontier axis")
        listener = self.qset.retire_listener
        if listener is not None:
            try:
                listener(self.index, completed)
            except BaseException as exc:
                report_callback_error(exc, "an amdgpu queue's retire listener", listener)
        with self._idle:
            self._idle.notify_all()

    def _on_queue_error(self, status: int, _queue: Any, _data: Any) -> None:
        # Runs on the packet processor's (or ROCr's) thread: record the first error and
        # wake the completion thread, which fails everything outside this callback.
        if self.error is None:
            self.error = self.hsa.error(int(status), f"AMD GPU queue {self.index}")
        self.hsa.lib.hsa_signal_store_screlease(self.stop_signal, 1)

    def _fail_stuck_peers(self, error: HalError) -> None:
        """Peers that published a device barrier on an epoch of this (failed) queue that
        never retired are stuck behind it for good: fail them too (their completion
        threads drain what finished before the barrier, then fail the rest), so failure
        propagates instead of hanging. Each peer's own thread continues the cascade."""
        for peer in self.qset.consumer_queues():  # other devices' too, in a group
            if peer is self or peer.error is not None or peer._closing:
                continue
            if peer.frontier.get(self, 0) > self.completed_epoch:
                peer.error = error_for(
                    error.code,
                    f"AMD GPU queue {peer.index} waits on queue {self.index}, which failed: "
                    f"{error}",
                )
                self.hsa.lib.hsa_signal_store_screlease(peer.stop_signal, 1)

    def _fail_pending(self, error: HalError) -> None:
        """Fail every pending signal (notifications, host actions, parked, deferred) and
        the queue's frontier axis. Callbacks that raise are reported, never propagated."""
        try:
            self.qset.tracker.fail_axis(self.axis, error)
        except BaseException as exc:
            report_callback_error(exc, "failing an amdgpu queue's frontier axis")
        with self._drain_lock:
            result = self.notifications.fail_all()
            actions = list(self._action_epochs)
            self._action_epochs.clear()
        with self._lock:
            parked = list(self._parked)
            self._parked.clear()
        seen: set[int] = set()
        unique = []
        for sem, value in result.signals:
            if id(sem) not in seen:
                seen.add(id(sem))
                unique.append((sem, value))
        fail_signals(unique, error)
        for _epoch, action in actions:
            fail = getattr(action, "fail", None)
            if fail is not None:
                try:
                    fail(error)
                except BaseException as exc:
                    report_callback_error(
                        exc, "cancelling a host action on an amdgpu queue", action
                    )
        for sub in parked:
            self._fail_sub(sub, error)
        for sub in list(self._deferred):
            if self._deferred.pop(sub, None) is not None:
                self._fail_sub(sub, error)
        with self._idle:
            self._idle.notify_all()

    # -- lifetime ------------------------------------------------------------------------

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until every published epoch retired (or the queue failed). Not from the
        completion thread (nothing would drain): ``close`` drains inline there."""
        with self._idle:
            return self._idle.wait_for(self._is_idle, timeout)

    def _is_idle(self) -> bool:
        return self.error is not None or (
            self.completed_epoch >= self.published_epoch and not self._parked
        )

    def _drain_inline(self, timeout: float) -> None:
        """``wait_idle`` for the completion thread itself (a host call closing the device):
        wait on the epoch signal here and drain, until idle or ``timeout`` passed."""
        lib = self.hsa.lib
        deadline = time.monotonic() + timeout
        while not self._is_idle():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            lib.hsa_signal_wait_scacquire(
                self.epoch_signal,
                SignalCondition.NE,
                EPOCH_INITIAL_VALUE - self.completed_epoch,
                int(remaining * 1e9),
                _WAIT_BLOCKED,
            )
            self._drain()

    def close(self, timeout: float | None = None) -> bool:
        """Cancel deferred work, wait (bounded) for in-flight work, stop the thread,
        destroy the HSA queue, fail what remains with CANCELLED, free rings and signals.
        Idempotent; never hangs; safe from any thread. Called from this queue's own
        completion thread (a host call closing the device), the signals and kernarg ring
        the thread still reads are freed when it ends, and the result is True: the
        caller defers whatever must follow that (``hsa_shut_down``) the same way."""
        if self._closed or self._closing:
            return False
        self._closing = True
        cancelled = CancelledError("device closed while the operation was waiting")
        for sub in list(self._deferred):
            if self._deferred.pop(sub, None) is not None:
                self._fail_sub(sub, cancelled)
        own = threading.current_thread() is self._thread
        limit = CLOSE_DRAIN_TIMEOUT if timeout is None else timeout
        if own:
            self._drain_inline(limit)
        else:
            self.wait_idle(limit)
        lib = self.hsa.lib
        lib.hsa_signal_store_screlease(self.stop_signal, 1)
        if not own:
            self._thread.join()
        self._destroy_hsa_queue()
        self._drain()
        self._fail_pending(
            self.error or CancelledError("device closed with work in flight on the GPU queue")
        )
        self._closed = True
        if own:
            self._at_thread_exit(self._free)
            return True
        self._free()
        return False

    def _free(self) -> None:
        """Free the kernarg ring and the PM4 wait buffers and destroy the signals (the
        thread has ended)."""
        ptr, self._kernarg_ptr = self._kernarg_ptr, None
        if ptr is not None:
            self.hsa.lib.hsa_amd_memory_pool_free(ptr)
        self._pm4_waits.free()
        self._destroy_signals()

    def _destroy_hsa_queue(self) -> None:
        q, self._queue = getattr(self, "_queue", None), None
        if q is not None:
            self.hsa.lib.hsa_queue_destroy(q)

    def _destroy_signals(self) -> None:
        lib = self.hsa.lib
        for name in ("epoch_signal", "stop_signal"):
            sig = self.__dict__.pop(name, None)
            if sig is not None:
                lib.hsa_signal_destroy(sig)
