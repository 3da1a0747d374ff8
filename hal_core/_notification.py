"""Notifications: a level-triggered epoch counter with an explicit observe-token protocol.

A waiter that must re-check some condition (a pool with free space, a ring with room) does::

    token = n.begin_observe()
    try:
        while not condition():
            n.wait_for_token(token, timeout)   # returns once the epoch moved past token
            token = n.query_epoch()
    finally:
        n.end_observe()

Invariants: ``_epoch`` only grows and every ``signal`` advances it, so a signal that lands
between ``begin_observe`` and ``wait_for_token`` is never lost (the token no longer matches
and the wait returns at once). ``_observers`` counts active observe scopes; while it is zero
``signal_if_observed`` advances the epoch without taking the condition lock (no wake).
No lock is held while a caller's code runs.

Producers on hot paths (pool releases) may skip the call entirely when an unlocked read of
``_observers`` is 0: the producer changes its state first and reads the count after, the
observer raises the count first and re-checks the state after, so one of the two always
sees the other (the GIL orders these accesses).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ._semaphore import dispatch_callbacks
from ._status import DeadlineExceededError, FailedPreconditionError
from ._timeouts import as_timeout

__all__ = ["Notification"]


class Notification:
    """Epoch-counting wakeup primitive shared by pools and their waiters. Thread-safe.

    ``wait_for_token`` and ``wait`` block the calling thread (never while holding another
    HAL lock); everything else is non-blocking.
    """

    __slots__ = ("_cond", "_epoch", "_observers", "_parked", "__weakref__")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._epoch = 0
        self._observers = 0
        # Asynchronous observers (queue work parked without a thread): [token, fn, arg].
        self._parked: list[list[Any]] = []

    def query_epoch(self) -> int:
        """The current epoch (a plain read)."""
        return self._epoch

    @property
    def observer_count(self) -> int:
        return self._observers

    def signal(self) -> None:
        """Advance the epoch and wake every waiter (signals coalesce). Parked callbacks
        run on this thread after the lock is dropped, through the semaphore trampoline."""
        with self._cond:
            self._epoch += 1
            self._cond.notify_all()
            parked = self._take_parked()
        if parked:
            dispatch_callbacks(parked)

    def _take_parked(self) -> list[tuple[Callable[[Any, Any], None], Any, None]] | None:
        if not self._parked:
            return None
        ready = [(p[1], p[2], None) for p in self._parked]
        self._parked = []
        self._observers -= len(ready)
        return ready

    def park(self, token: int, fn: Callable[[Any, Any], None], arg: Any) -> list[Any] | None:
        """Call ``fn(arg, None)`` once the epoch differs from ``token`` (the asynchronous
        form of ``wait_for_token``: no thread blocks). A parked callback counts as an
        observer, so ``signal_if_observed`` wakes it. Fires at once (through the
        trampoline) and returns None when the epoch already moved; otherwise returns a
        handle for ``unpark``. ``fn`` runs outside every lock and must not block."""
        with self._cond:
            if self._epoch == token:
                entry = [token, fn, arg]
                self._parked.append(entry)
                self._observers += 1
                return entry
        dispatch_callbacks(((fn, arg, None),))
        return None

    def unpark(self, handle: list[Any]) -> bool:
        """Withdraw a parked callback; True iff it will not run."""
        with self._cond:
            try:
                self._parked.remove(handle)
            except ValueError:
                return False
            self._observers -= 1
            return True

    def signal_if_observed(self) -> bool:
        """Advance the epoch; wake waiters only when an observe scope is active. Returns
        True when it woke (someone was observing).

        Race-free with the token protocol: an observer registers (under the lock) before it
        reads its token, so either this call sees it and wakes, or the observer's token is
        read after the epoch moved and its wait returns at once.
        """
        with self._cond:
            self._epoch += 1
            if self._observers == 0:
                return False
            self._cond.notify_all()
            parked = self._take_parked()
        if parked:
            dispatch_callbacks(parked)
        return True

    def begin_observe(self) -> int:
        """Open an observe scope and return the token (the epoch now). Always pair with
        ``end_observe``."""
        with self._cond:
            self._observers += 1
            return self._epoch

    def end_observe(self) -> None:
        """Close an observe scope. FAILED_PRECONDITION without a matching begin."""
        with self._cond:
            if self._observers <= 0:
                raise FailedPreconditionError(
                    "end_observe without begin_observe: every observe scope is opened by "
                    "begin_observe and closed exactly once"
                )
            self._observers -= 1

    def wait_for_token(self, token: int, timeout: float | None = None) -> int:
        """Block until the epoch differs from ``token``; returns the new epoch.

        ``timeout`` in seconds (None or ``inf`` = forever, 0 or less = poll; anything but
        a real number is INVALID_ARGUMENT). DEADLINE_EXCEEDED when it does not move in
        time. Call inside an observe scope.
        """
        timeout = as_timeout(timeout)
        with self._cond:
            if self._epoch != token:
                return self._epoch
            if timeout is not None and timeout <= 0:
                raise DeadlineExceededError(
                    f"notification still at epoch {token} (immediate timeout)"
                )
            if not self._cond.wait_for(lambda: self._epoch != token, timeout):
                raise DeadlineExceededError(f"notification stayed at epoch {token} for {timeout} s")
            return self._epoch

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the next signal after this call (the simple form of the protocol)."""
        token = self.begin_observe()
        try:
            return self.wait_for_token(token, timeout)
        finally:
            self.end_observe()

    def __repr__(self) -> str:
        return f"<hal_core.backend.Notification epoch={self._epoch} observers={self._observers}>"
