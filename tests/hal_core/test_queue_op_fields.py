"""QueueOp carries named, typed fields, and its kind is always a QueueOpKind.

A recording backend captures the op each ``Device.queue_*`` call hands to ``submit``;
every kind's fields are read by name (the kind-dependent ``data``/``extra`` pair is gone).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import hal_core
from hal_core import BufferParams, HostCallFlags
from hal_core.backend import QueueOp, QueueOpKind, buffer_host_bytes


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Any:
    device = hal_core.create_device("local-sync://")
    ops: list[QueueOp] = []
    backend = device._backend
    real = backend.submit

    def record(op: QueueOp) -> None:
        ops.append(op)
        real(op)

    # The front door binds the backend's submit at construction and rebinds it when
    # profiling taps change; both paths read these attributes.
    monkeypatch.setattr(backend, "submit", record)
    monkeypatch.setattr(device, "_submit", record)
    yield device, ops
    device.close()


def test_every_front_door_kind_is_an_enum_member(captured: Any) -> None:
    device, ops = captured
    sem = device.create_semaphore(0)
    buf = device.allocator.allocate_buffer(BufferParams(), 64)
    device.queue_barrier(signal=[(sem, 1)])
    device.queue_fill(1, [(sem, 1)], [(sem, 2)], buf, 0, 16, b"\x01\x02\x03\x04")
    device.queue_update(1, [(sem, 2)], [(sem, 3)], b"abcd", 0, buf, 16, 4)
    device.queue_copy(1, [(sem, 3)], [(sem, 4)], buf, 0, buf, 32, 16)

    def call(args: tuple, context: Any) -> None:
        return None

    device.queue_host_call(1, [(sem, 4)], [(sem, 5)], call, (1, 2, 3, 4))
    sem.wait(5, timeout=10)
    kinds = [op.kind for op in ops]
    assert kinds == [
        QueueOpKind.BARRIER,
        QueueOpKind.FILL,
        QueueOpKind.UPDATE,
        QueueOpKind.COPY,
        QueueOpKind.HOST_CALL,
    ]
    assert all(type(k) is QueueOpKind for k in kinds)
    fill, update, copy, host = ops[1:]
    assert fill.pattern == b"\x01\x02\x03\x04" and (fill.target_offset, fill.length) == (0, 16)
    assert update.payload.dtype == np.uint8 and bytes(update.payload) == b"abcd"
    assert (copy.source, copy.source_offset, copy.target_offset) == (buf, 0, 32)
    assert host.args == (1, 2, 3, 4) and host.flags == HostCallFlags.NONE
    assert bytes(buffer_host_bytes(buf, 0, 20)) == b"\x01\x02\x03\x04" * 4 + b"abcd"
    assert bytes(buffer_host_bytes(buf, 32, 16)) == bytes(buffer_host_bytes(buf, 0, 16))


def test_alloca_names_its_pool_params_and_state(captured: Any) -> None:
    device, ops = captured
    sem = device.create_semaphore(0)
    device.queue_alloca(1, [], [(sem, 1)], BufferParams(), 4096)
    (op,) = ops
    assert op.kind is QueueOpKind.ALLOCA
    assert op.pool is None and isinstance(op.params, BufferParams) and op.length == 4096
    assert op.alloca_state is None  # released once the alloca committed
    sem.wait(1, timeout=10)
    device.queue_dealloca(1, [(sem, 1)], [(sem, 2)], op.target)
    sem.wait(2, timeout=10)
    assert ops[1].kind is QueueOpKind.DEALLOCA and ops[1].target is op.target


def test_a_plain_int_kind_becomes_the_enum_member() -> None:
    op = QueueOp(0, 0, (), ())  # type: ignore[arg-type]
    assert op.kind is QueueOpKind.BARRIER
    op = QueueOp(QueueOpKind.FILL, 1, (), ())
    assert op.kind is QueueOpKind.FILL and op.flags == 0 and op.retained is None


def test_fields_of_other_kinds_are_unset() -> None:
    op = QueueOp(QueueOpKind.BARRIER, 0, (), ())
    for name in ("pattern", "payload", "callback", "program", "bindings", "pool", "params"):
        with pytest.raises(AttributeError):
            getattr(op, name)
    assert not hasattr(op, "data") and not hasattr(op, "extra")
    with pytest.raises(AttributeError):
        op.data = 1  # type: ignore[attr-defined]
