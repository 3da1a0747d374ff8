"""The native ``Semaphore.add_timepoint`` agrees with its Python reference.

With ``hal_core._native_queue`` built, ``Semaphore.add_timepoint`` parks the common case in
C and calls ``Semaphore._add_timepoint`` (the reference) for everything else. Two
semaphores driven by the same calls, one through each, must return the same kind of
handle, fire the same callbacks in the same order with the same statuses, raise the same
errors and end with the same payload, failure and pending count, whatever the mix of
registrations (values below, at and above the payload, non-int values, non-callables),
cancellations, signals and failures.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core import StatusCode
from hal_core._construction import INTERNAL
from hal_core._queue_fast_paths import native
from hal_core._semaphore import Semaphore

pytestmark = pytest.mark.skipif(native is None, reason="hal_core._native_queue is not built")

_value = st.one_of(
    st.integers(0, 8),
    st.integers(0, 8),
    st.sampled_from([np.int32(3), True, 2.0, "1", -1, 1 << 40]),
)
_step = st.one_of(
    st.tuples(st.just("add"), _value, st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 20), st.just(False)),
    st.tuples(st.just("signal"), st.integers(1, 9), st.just(False)),
    st.tuples(st.just("fail"), st.just(0), st.just(False)),
)


def _run(steps: list, add: Any) -> tuple:
    sem = Semaphore(2, _token=INTERNAL)
    log: list = []
    handles: list = []
    results: list = []
    for i, (kind, value, good_fn) in enumerate(steps):
        try:
            if kind == "add":
                fn = (
                    (lambda arg, status: log.append((arg, status and status.code)))
                    if good_fn
                    else 5
                )
                handle = add(sem, value, fn, i)
                handles.append(handle)
                results.append(None if handle is None else ("handle", handle[0], handle[3]))
            elif kind == "cancel":
                live = [h for h in handles if h is not None]
                results.append(sem.cancel_timepoint(live[value % len(live)]) if live else None)
            elif kind == "signal":
                sem.signal(value)
                results.append("signalled")
            else:
                sem.fail(StatusCode.ABORTED, "step")
                results.append("failed")
        except Exception as exc:
            results.append((type(exc).__name__, str(exc)))
    return results, log, sem.value, sem.pending_timepoints()


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(_step, max_size=25))
def test_native_add_timepoint_agrees_with_the_reference(steps: list) -> None:
    assert Semaphore.add_timepoint is not Semaphore._add_timepoint  # the native one is bound
    assert _run(steps, Semaphore.add_timepoint) == _run(steps, Semaphore._add_timepoint)


def test_a_held_lock_takes_the_reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the lock is held (a signal in progress on another thread), the native path
    must not push behind its back; it waits through the reference."""
    # Threads run with Python's default hook, so nothing they report is hidden.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    sem = Semaphore(0, _token=INTERNAL)
    fired = threading.Event()
    handle: list = []
    sem._lock.acquire()
    thread = threading.Thread(
        target=lambda: handle.append(sem.add_timepoint(1, lambda a, s: fired.set(), None))
    )
    thread.start()
    thread.join(0.2)
    assert thread.is_alive() and sem._timepoints == []
    # What signal(1) does under the lock before releasing it.
    sem._value = 1
    sem._lock.release()
    thread.join(10)
    assert handle == [None] and fired.is_set()  # already reached: fired, no handle
