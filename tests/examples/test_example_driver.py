"""The example driver's own behaviour beyond the CTS: its URI parameters, errors from any
exception, NON_BLOCKING host-call errors, close, long chains, and that it uses only the
public tiers of hal_core."""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

import hal_core
import hal_core.backend
from hal_core import HostCallFlags, QueueOpKind, StatusCode

pytest.importorskip(
    "hal_example_driver",
    reason="hal-example-driver is not installed (pip install -e examples/hal-example-driver)",
)

from hal_example_driver import operations  # noqa: E402

ANY = hal_core.QueueAffinity.ANY
TIMEOUT = 20.0
PACKAGE = Path(operations.__file__).resolve().parent


@pytest.fixture
def device() -> Iterator[hal_core.Device]:
    with hal_core.create_device("example://") as dev:
        yield dev


def test_uri_parameters() -> None:
    with hal_core.create_device("example://?queues=1") as one:
        assert one.queue_count == 1
    with hal_core.create_device("example://0?queues=4") as four:
        assert four.queue_count == 4
    for uri in ("example://?queues=5", "example://?queues=x", "example://?workers=2"):
        with pytest.raises(hal_core.InvalidArgumentError):
            hal_core.create_device(uri)
    with pytest.raises(hal_core.NotFoundError):
        hal_core.create_device("example://1")


def test_any_exception_fails_the_signals_and_the_queue_goes_on(device, monkeypatch) -> None:
    def broken_fill(op: Any) -> None:
        raise ZeroDivisionError("a bug in a handler")

    monkeypatch.setitem(operations.HANDLERS, QueueOpKind.FILL, broken_fill)
    buf = device.allocator.allocate_buffer(64)
    bad, after = device.create_semaphore(), device.create_semaphore()
    device.queue_fill(ANY, (), [(bad, 1)], buf, 0, 64, b"\x01")
    with pytest.raises(hal_core.UnknownError, match="ZeroDivisionError: a bug"):
        bad.wait(1, TIMEOUT)
    assert isinstance(bad.failure.__cause__, ZeroDivisionError)  # kept for debugging
    # The op that depends on it fails with the same code; independent work still runs.
    dep = device.create_semaphore()
    device.queue_barrier(ANY, [(bad, 1)], [(dep, 1)])
    with pytest.raises(hal_core.UnknownError):
        dep.wait(1, TIMEOUT)
    device.queue_update(ANY, (), [(after, 1)], b"\x07" * 64, 0, buf, 0, 64)
    after.wait(1, TIMEOUT)
    assert buf.read(0, 64) == b"\x07" * 64


def test_signal_of_an_already_reached_value_fails_the_semaphore(device) -> None:
    gate, sem = device.create_semaphore(), device.create_semaphore()
    device.queue_barrier(1, [(gate, 1)], [(sem, 3)])
    sem.signal(5)  # another producer passes the value before the barrier runs
    gate.signal(1)
    with pytest.raises(hal_core.InvalidArgumentError, match="already at 5"):
        sem.wait(6, TIMEOUT)


def test_non_blocking_host_call_error_is_reported_and_the_worker_survives(
    device, monkeypatch
) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    def raises(args: tuple, context: Any) -> None:
        raise RuntimeError("nobody waits for me")

    signalled, later = device.create_semaphore(), device.create_semaphore()
    device.queue_host_call(
        1, (), [(signalled, 1)], raises, (0, 0, 0, 0), flags=HostCallFlags.NON_BLOCKING
    )
    signalled.wait(1, TIMEOUT)
    device.queue_barrier(1, [(signalled, 1)], ())
    device.queue_host_call(1, (), [(later, 1)], lambda args, ctx: None, (0, 0, 0, 0))
    later.wait(1, TIMEOUT)  # the same worker ran the next call
    assert len(reported) == 1
    assert isinstance(reported[0].exc_value, RuntimeError)


def test_non_blocking_host_call_error_with_the_default_hook(tmp_path) -> None:
    # The default sys.unraisablehook prints the report; the worker keeps running.
    import subprocess

    script = (
        "import hal_core\n"
        "d = hal_core.create_device('example://')\n"
        "s = d.create_semaphore()\n"
        "def boom(args, ctx): raise RuntimeError('from a NON_BLOCKING call')\n"
        "d.queue_host_call(1, (), [(s, 1)], boom, (0, 0, 0, 0), flags=1)\n"
        "d.queue_host_call(1, [(s, 1)], [(s, 2)], lambda a, c: None, (0, 0, 0, 0))\n"
        "s.wait(2, 20)\n"
        "d.close()\n"
        "print('done')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert "RuntimeError: from a NON_BLOCKING call" in proc.stderr


def test_close_cancels_parked_work_and_refuses_new_work() -> None:
    device = hal_core.create_device("example://")
    gate, done = device.create_semaphore(), device.create_semaphore()
    device.queue_barrier(ANY, [(gate, 1)], [(done, 1)])
    device.close()
    with pytest.raises(hal_core.CancelledError):
        done.wait(1, TIMEOUT)
    with pytest.raises(hal_core.HalError):
        device.queue_barrier(ANY, (), ())


def test_close_from_inside_a_host_call() -> None:
    device = hal_core.create_device("example://")
    sem = device.create_semaphore()

    def close_it(args: tuple, context: Any) -> None:
        context.device.close()

    device.queue_host_call(1, (), [(sem, 1)], close_it, (0, 0, 0, 0))
    sem.wait(1, TIMEOUT)  # the worker did not join itself
    assert device.closed


def test_long_chains_do_not_recurse(device) -> None:
    # 100,000 barriers complete on the readying thread through the semaphore
    # trampoline; 2,000 fills alternate between the two queue workers.
    sem = device.create_semaphore()
    for v in range(100_000):
        device.queue_barrier(ANY, [(sem, v)] if v else (), [(sem, v + 1)])
    sem.wait(100_000, 60)
    buf = device.allocator.allocate_buffer(4)
    chain = device.create_semaphore()
    for v in range(2_000):
        device.queue_fill(1 << (v % 2), [(chain, v)], [(chain, v + 1)], buf, 0, 4, bytes([v % 256]))
    chain.wait(2_000, 60)
    assert buf.read() == bytes([1999 % 256]) * 4


def test_explicit_pool_is_unimplemented_at_the_call(device) -> None:
    pool = hal_core.PassthroughPool(hal_core.backend.CpuSlabProvider())
    sem = device.create_semaphore()
    with pytest.raises(hal_core.UnimplementedError, match="pool=None"):
        device.queue_alloca(ANY, (), [(sem, 1)], None, 64, pool=pool)
    pool.close()


def _private_uses(path: Path) -> list[str]:
    """``hal_core._*`` imports and ``x._name`` attribute uses on anything but self."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if any(part.startswith("_") for part in node.module.split(".")[1:]):
                if node.module.startswith("hal_core"):
                    found.append(f"{path.name}:{node.lineno} from {node.module}")
        elif isinstance(node, ast.Import):
            found += [
                f"{path.name}:{node.lineno} import {a.name}"
                for a in node.names
                if a.name.startswith("hal_core._")
            ]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            owner = node.value
            if node.attr.startswith("__") or (isinstance(owner, ast.Name) and owner.id == "self"):
                continue
            found.append(f"{path.name}:{node.lineno} .{node.attr}")
    return found


def test_uses_only_the_public_tiers() -> None:
    sources = sorted(PACKAGE.glob("*.py"))
    assert len(sources) >= 6
    assert [u for p in sources for u in _private_uses(p)] == []


def test_host_call_deferred_signals_later(device) -> None:
    sem, ran = device.create_semaphore(), device.create_semaphore()
    kept: list[Any] = []

    def later(args: tuple, context: Any) -> StatusCode:
        kept.append(context)
        ran.signal(1)
        return StatusCode.DEFERRED

    device.queue_host_call(1, (), [(sem, 1)], later, (0, 0, 0, 0))
    ran.wait(1, TIMEOUT)
    after = device.create_semaphore()
    device.queue_barrier(1, (), [(after, 1)])
    after.wait(1, TIMEOUT)  # the queue went on; the call's signal is the callback's
    assert sem.value == 0
    kept[0].signal()
    sem.wait(1, TIMEOUT)


def test_a_completed_op_holds_nothing_once_its_signals_publish(monkeypatch) -> None:
    # The worker may still hold the op object after signalling: everything the op kept
    # alive (command buffer, binding table, update bytes) must be gone by then.
    from hal_example_driver.device import ExampleDeviceBackend

    seen: list[Any] = []
    submit = ExampleDeviceBackend.submit

    def keep(self: ExampleDeviceBackend, op: Any) -> None:
        seen.append(op)
        submit(self, op)

    monkeypatch.setattr(ExampleDeviceBackend, "submit", keep)
    with hal_core.create_device("example://") as device:
        src = device.allocator.allocate_buffer(16)
        dst = device.allocator.allocate_buffer(16)
        cb = device.create_command_buffer(0, hal_core.CommandCategory.TRANSFER, ANY, 2)
        cb.begin()
        cb.copy_buffer(hal_core.BufferRef.indirect(0, 0, 16), hal_core.BufferRef.indirect(1, 0, 16))
        cb.end()
        gate, executed, updated = (device.create_semaphore() for _ in range(3))
        device.queue_execute(ANY, [(gate, 1)], [(executed, 1)], cb, [src, dst])
        device.queue_update(ANY, [(gate, 1)], [(updated, 1)], b"\x05" * 16, 0, src, 0, 16)
        gate.signal(1)
        executed.wait(1, TIMEOUT)
        updated.wait(1, TIMEOUT)
    assert [op.kind for op in seen] == [QueueOpKind.EXECUTE, QueueOpKind.UPDATE]
    for op in seen:
        assert op.retained is None and op.program is None and op.bindings == ()
        assert op.payload is None
