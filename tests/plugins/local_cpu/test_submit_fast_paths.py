"""local_cpu's submit shortcuts agree with the general path.

An op whose waits are reached at submit runs inline without the ``_dispatch`` /
``_execute`` / ``_finish`` frames, and an alloca that reserved with nothing to wait on
commits at once (``commit_prepared``) instead of going through ``submit`` and
``QueuePools.start``. Both are skipped while a profiler is attached (its taps wrap those
frames), so marking the backend as profiled runs the general path: for any chain of
barriers, fills, updates, copies, reads that fail, allocas and deallocas, on either
device, some ready at submit and some parked behind a gate, both paths must leave the
same semaphore values and failures and the same buffer contents.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core
from hal_core import BufferParams

SLOTS = 8
T = 30.0

_op = st.tuples(
    st.sampled_from(["barrier", "fill", "update", "copy", "bad_read", "alloca"]),
    st.integers(1, 2),  # affinity
    st.integers(0, SLOTS - 1),  # slot
    st.one_of(st.none(), st.integers(0, 40)),  # wait on an earlier op (index mod count)
    st.booleans(),  # also wait on the gate
)


class _GeneralPath:
    """A stand-in profiler: the backend then takes its general (profiled) path."""


def _run(uri: str, ops: list, general: bool) -> tuple:
    with hal_core.create_device(uri) as device:
        backend = device.backend
        if general:
            backend.profiler = _GeneralPath()
        target = device.allocator.allocate_buffer(BufferParams(), 4 * SLOTS)
        file = device.import_file(bytes(8))
        gate = device.create_semaphore()
        done: list[Any] = []
        for i, (kind, affinity, slot, after, gated) in enumerate(ops):
            waits = []
            if after is not None and done:
                waits.append((done[after % len(done)], 1))
            if gated:
                waits.append((gate, 1))
            sem = device.create_semaphore()
            signal = [(sem, 1)]
            if kind == "barrier":
                device.queue_barrier(affinity, waits, signal)
            elif kind == "fill":
                device.queue_fill(
                    affinity, waits, signal, target, 4 * slot, 4, bytes([i & 255]) * 4
                )
            elif kind == "update":
                device.queue_update(
                    affinity, waits, signal, bytes([i & 255, 1]), 0, target, slot, 2
                )
            elif kind == "copy":
                device.queue_copy(affinity, waits, signal, target, 0, target, 16 + slot, 4)
            elif kind == "bad_read":
                device.queue_read(affinity, waits, signal, file, 4, target, 0, 8)
            else:
                mid = device.create_semaphore()
                buf = device.queue_alloca(affinity, waits, [(mid, 1)], BufferParams(), 4096)
                device.queue_fill(affinity, [(mid, 1)], [(sem, 1)], buf, 0, 4096, b"\x07")
                device.queue_dealloca(affinity, [(sem, 1)], [(device.create_semaphore(), 1)], buf)
            done.append(sem)
        gate.signal(1)
        states = []
        for sem in done:
            try:
                sem.wait(1, T)
                states.append("ok")
            except hal_core.HalError as exc:
                states.append(exc.code.name)
        return states, target.read()


@pytest.mark.parametrize("uri", ["local-task://", "local-sync://"])
@settings(max_examples=40, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=12))
def test_shortcuts_agree_with_the_general_path(uri: str, ops: list) -> None:
    # Worker threads run with Python's default hook (given has no function-scoped fixtures).
    hook = sys.unraisablehook
    sys.unraisablehook = sys.__unraisablehook__
    try:
        assert _run(uri, ops, general=False) == _run(uri, ops, general=True)
    finally:
        sys.unraisablehook = hook
