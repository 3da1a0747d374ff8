"""``queue_dispatch``'s front door: the inline path and the repeat of the latest accepted
call (``prepare_dispatch``) against the step-by-step reference
(``prepare_dispatch_reference``).

A repeat reuses the latest call's command only while that call's op still holds it; the
tests keep the first call in flight behind a gate so that the second one is such a repeat,
then change what can change (the executable closed, a buffer freed or not committed yet,
another device's buffer, any argument) and expect exactly the outcome a first call gets:
the same error with the same status at the call, or the same failure of the signal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from functools import partial
from typing import Any, Callable

import pytest
from hal_local_cpu.kernels import python_module

import hal_core as hal
from hal_core import (
    BufferParams,
    BufferRef,
    BufferUsage,
    DispatchConfig,
    DispatchFlags,
    MemoryAccess,
    MemoryType,
    StatusCode,
)
from hal_core import _command_submission as submission
from hal_core import _device_commands as device_commands
from hal_core.backend import new_buffer

TIMEOUT = 10.0
ANY = 1
COUNT_4 = (4).to_bytes(4, "little")
ONE = DispatchConfig.static(1)
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER | BufferUsage.DISPATCH_INDIRECT_PARAMETERS


@pytest.fixture(autouse=True)
def _default_unraisablehook(monkeypatch: pytest.MonkeyPatch) -> None:
    # HAL threads run user callbacks; an error they let escape must show as it would
    # outside pytest.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)


@pytest.fixture(params=["local-task://", "local-sync://"])
def dev(request: pytest.FixtureRequest) -> Iterator[Any]:
    device = hal.create_device(request.param)
    yield device
    device.close()


def _exe(dev: Any) -> Any:
    return dev.create_executable_cache("front").prepare(
        "local-cpu-python", python_module("cts_kernels")
    )


def _buf(dev: Any, data: bytes = bytes(16), usage: int = USAGE) -> Any:
    buf = dev.allocator.allocate_buffer(BufferParams(usage=usage), len(data))
    buf.write(data)
    return buf


def _f32(*values: float) -> bytes:
    import struct

    return struct.pack(f"<{len(values)}f", *values)


def _gated(dev: Any, exe: Any, bindings: tuple, **kw: Any) -> tuple[Any, Any]:
    """A dispatch held in flight behind a gate: its ``DispatchUse`` stays alive, so the
    next call with the same objects repeats it. Returns (gate, signal)."""
    gate, sem = dev.create_semaphore(), dev.create_semaphore()
    dev.queue_dispatch(ANY, [(gate, 1)], [(sem, 1)], exe, "negate", ONE, COUNT_4, bindings, **kw)
    use = submission._last_use()
    assert use is not None and use.executable is exe and use.bindings is bindings
    return gate, sem


def _code(call: Callable[[], Any]) -> StatusCode | None:
    try:
        call()
    except hal.HalError as exc:
        return exc.code
    return None


def test_a_repeat_while_the_first_is_in_flight_reuses_its_command(dev: Any) -> None:
    exe = _exe(dev)
    a = _buf(dev, _f32(1, 2, 3, 4))
    bindings = (a, a)
    gate, first = _gated(dev, exe, bindings)
    use = submission._last_use()
    second = dev.create_semaphore()
    dev.queue_dispatch(ANY, [(first, 1)], [(second, 1)], exe, "negate", ONE, COUNT_4, bindings)
    assert submission._last_use() is use  # answered by the repeat
    gate.signal(1)
    second.wait(1, TIMEOUT)
    assert a.read() == _f32(1, 2, 3, 4)  # negated twice


def test_a_repeat_of_a_closed_executable_is_refused_at_the_call(dev: Any) -> None:
    exe = _exe(dev)
    a = _buf(dev, _f32(1, 2, 3, 4))
    bindings = (a, a)
    gate, first = _gated(dev, exe, bindings)
    exe.close()
    sem = dev.create_semaphore()
    with pytest.raises(hal.FailedPreconditionError, match="closed executable"):
        dev.queue_dispatch(ANY, [], [(sem, 1)], exe, "negate", ONE, COUNT_4, bindings)
    assert sem.query() == 0 and sem.failure is None
    gate.signal(1)  # the op accepted before the close still runs
    first.wait(1, TIMEOUT)
    assert a.read() == _f32(-1, -2, -3, -4)
    other = _exe(dev)
    dev.queue_dispatch(ANY, [], [(sem, 1)], other, "negate", ONE, COUNT_4, bindings)
    sem.wait(1, TIMEOUT)
    assert a.read() == _f32(1, 2, 3, 4)


def test_another_devices_buffer_after_a_repeatable_call_is_refused(dev: Any) -> None:
    exe = _exe(dev)
    own = _buf(dev)
    with hal.create_device("local-sync://") as other:
        foreign = _buf(other)
        bindings = (own, own)
        gate, first = _gated(dev, exe, bindings)
        sem = dev.create_semaphore()
        for refused in ((own, foreign), (foreign, own), (BufferRef(foreign, 0, 16), own)):
            with pytest.raises(hal.InvalidArgumentError, match="another device"):
                dev.queue_dispatch(ANY, [], [(sem, 1)], exe, "negate", ONE, COUNT_4, refused)
        # The same objects on the other device: its buffers are foreign there.
        elsewhere = other.create_semaphore()
        with pytest.raises(hal.InvalidArgumentError, match="another device"):
            other.queue_dispatch(ANY, [], [(elsewhere, 1)], exe, "negate", ONE, COUNT_4, bindings)
        assert sem.query() == 0 and sem.failure is None
        assert elsewhere.query() == 0 and elsewhere.failure is None
        gate.signal(1)
        first.wait(1, TIMEOUT)


class _EqualToAnything:
    """Not a buffer, though it says it equals one."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


def test_a_repeat_compares_bindings_by_identity(dev: Any) -> None:
    exe = _exe(dev)
    a = _buf(dev)
    bindings = (a, a)
    gate, first = _gated(dev, exe, bindings)
    sem = dev.create_semaphore()
    impostor = (_EqualToAnything(), _EqualToAnything())
    with pytest.raises(hal.InvalidArgumentError, match="must be a Buffer"):
        dev.queue_dispatch(ANY, [], [(sem, 1)], exe, "negate", ONE, COUNT_4, impostor)
    assert sem.query() == 0 and sem.failure is None
    gate.signal(1)
    first.wait(1, TIMEOUT)


def _freed_repeat_outcome(dev: Any) -> tuple[StatusCode | None, StatusCode | None]:
    """Dispatch a buffer that queue_dealloca freed while an identical dispatch of it
    waits; (status at the call, status of the signal)."""
    exe = _exe(dev)
    s = dev.create_semaphore()
    buf = dev.queue_alloca(ANY, [], [(s, 1)], BufferParams(usage=USAGE), 16)
    s.wait(1, TIMEOUT)
    bindings = (buf, buf)
    gate, first = dev.create_semaphore(), dev.create_semaphore()
    dev.queue_dispatch(ANY, [(gate, 1)], [(first, 1)], exe, "negate", ONE, COUNT_4, bindings)
    dev.queue_dealloca(ANY, [], [(s, 2)], buf)
    s.wait(2, TIMEOUT)
    assert buf.is_decommitted
    sem = dev.create_semaphore()
    at_call = _code(
        lambda: dev.queue_dispatch(ANY, [], [(sem, 1)], exe, "negate", ONE, COUNT_4, bindings)
    )
    gate.signal(1)
    at_signal = _code(lambda: sem.wait(1, TIMEOUT)) if at_call is None else None
    with pytest.raises(hal.FailedPreconditionError):
        first.wait(1, TIMEOUT)
    return at_call, at_signal


def _reference_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``queue_dispatch`` through the step-by-step reference alone."""

    def reference(device: Any, *args: Any) -> Any:
        return _reference(device, args[:5], args[5])

    monkeypatch.setattr(device_commands, "prepare_dispatch", reference)


def test_a_freed_buffer_fails_a_repeat_as_it_fails_a_first_call(
    dev: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    repeated = _freed_repeat_outcome(dev)
    _reference_only(monkeypatch)
    reference = _freed_repeat_outcome(dev)
    assert repeated == reference == (None, StatusCode.FAILED_PRECONDITION)


def test_a_buffer_not_committed_yet_is_accepted_and_runs_once_committed(dev: Any) -> None:
    exe = _exe(dev)
    gate, s = dev.create_semaphore(), dev.create_semaphore()
    buf = dev.queue_alloca(ANY, [(gate, 1)], [(s, 1)], BufferParams(usage=USAGE), 16)
    assert not buf.is_committed
    bindings = (buf, buf)
    dev.queue_dispatch(ANY, [(s, 1)], [(s, 2)], exe, "negate", ONE, COUNT_4, bindings)
    dev.queue_dispatch(ANY, [(s, 2)], [(s, 3)], exe, "negate", ONE, COUNT_4, bindings)
    gate.signal(1)
    s.wait(3, TIMEOUT)
    assert buf.is_committed


def _variants(dev: Any, exe: Any, a: Any, b: Any) -> list[tuple[str, tuple, StatusCode]]:
    """One bad argument each, against the good call (exe, "negate", ONE, COUNT_4, (a, b)),
    with the status the reference gives it."""
    no_storage = _buf(dev, usage=BufferUsage.TRANSFER | BufferUsage.MAPPING)
    host_only = new_buffer(
        None,
        memory_type=MemoryType.HOST_LOCAL | MemoryType.HOST_VISIBLE,
        allowed_usage=BufferUsage.DEFAULT,
        allowed_access=MemoryAccess.ALL,
        allocation_size=16,
        device=dev,
    )
    params = _buf(dev, bytes(12), usage=BufferUsage.DISPATCH_STORAGE)
    bad = StatusCode.INVALID_ARGUMENT
    return [
        ("not an executable", ("exe", "negate", ONE, COUNT_4, (a, b)), bad),
        ("ordinal past the end", (exe, 99, ONE, COUNT_4, (a, b)), StatusCode.OUT_OF_RANGE),
        ("negative ordinal", (exe, -1, ONE, COUNT_4, (a, b)), StatusCode.OUT_OF_RANGE),
        ("unknown name", (exe, "missing", ONE, COUNT_4, (a, b)), StatusCode.NOT_FOUND),
        ("config type", (exe, "negate", (1, 1, 1), COUNT_4, (a, b)), bad),
        ("constants length", (exe, "negate", ONE, COUNT_4 * 2, (a, b)), bad),
        ("constants not words", (exe, "negate", ONE, b"123", (a, b)), bad),
        ("no constants", (exe, "negate", ONE, b"", (a, b)), bad),
        ("too few bindings", (exe, "negate", ONE, COUNT_4, (a,)), bad),
        ("binding type", (exe, "negate", ONE, COUNT_4, (a, "b")), bad),
        ("indirect ref", (exe, "negate", ONE, COUNT_4, (a, BufferRef.indirect(0))), bad),
        ("ref buffer type", (exe, "negate", ONE, COUNT_4, (a, BufferRef("b"))), bad),  # type: ignore[arg-type]
        (
            "ref past the end",
            (exe, "negate", ONE, COUNT_4, (a, BufferRef(b, 8, 16))),
            StatusCode.OUT_OF_RANGE,
        ),
        (
            "ref offset past the end",
            (exe, "negate", ONE, COUNT_4, (a, BufferRef(b, 20))),
            StatusCode.OUT_OF_RANGE,
        ),
        (
            "no storage usage",
            (exe, "negate", ONE, COUNT_4, (a, no_storage)),
            StatusCode.PERMISSION_DENIED,
        ),
        (
            "no storage usage (ref)",
            (exe, "negate", ONE, COUNT_4, (BufferRef(no_storage, 0, 16), b)),
            StatusCode.PERMISSION_DENIED,
        ),
        (
            "not device visible",
            (exe, "negate", ONE, COUNT_4, (host_only, b)),
            StatusCode.PERMISSION_DENIED,
        ),
        (
            "indirect count without its usage",
            (exe, "negate", DispatchConfig.indirect(params), COUNT_4, (a, b)),
            StatusCode.PERMISSION_DENIED,
        ),
        (
            "indirect count through a slot",
            (
                exe,
                "negate",
                DispatchConfig((0, 0, 0), BufferRef.indirect(0, 0, 12)),
                COUNT_4,
                (a, b),
            ),
            bad,
        ),
    ]


@pytest.mark.parametrize("repeat", [False, True], ids=["first", "after-an-accepted-call"])
def test_every_front_door_error_is_raised_at_the_call(dev: Any, repeat: bool) -> None:
    exe = _exe(dev)
    a, b = _buf(dev), _buf(dev)
    gate = None
    if repeat:
        gate, _first = _gated(dev, exe, (a, b))
    sem = dev.create_semaphore()
    for name, args, code in _variants(dev, exe, a, b):
        got = _code(partial(dev.queue_dispatch, ANY, [], [(sem, 1)], *args))
        assert got == code, name
    unimplemented = int(DispatchFlags.CUSTOM_DIRECT_ARGUMENTS)
    got = _code(
        lambda: dev.queue_dispatch(
            ANY, [], [(sem, 1)], exe, "negate", ONE, COUNT_4, (a, b), unimplemented
        )
    )
    assert got == StatusCode.UNIMPLEMENTED
    assert sem.query() == 0 and sem.failure is None
    if gate is not None:
        gate.signal(1)
    dev.queue_dispatch(ANY, [], [(sem, 1)], exe, "negate", ONE, COUNT_4, (a, b))
    sem.wait(1, TIMEOUT)  # later work still runs


def _outcome(call: Callable[[], Any]) -> Any:
    """What a prepare call gives: its error (type and text), or the command it built and
    the objects its retention keeps alive."""
    seen: list[Any] = []
    try:
        program, retained = call()
    except hal.HalError as exc:
        return type(exc), str(exc)
    (command,) = program
    seen.append(command[:5] + (tuple(_as_ref(r) for r in command[5]),) + command[6:])
    if isinstance(retained, submission.DispatchUse):
        executable, refs, config = retained.executable, retained.command[5], retained.config
        seen.append((executable, tuple(_as_ref(r) for r in refs), config))
    elif isinstance(retained, tuple):
        executable, refs, config = retained
        seen.append((executable, tuple(_as_ref(r) for r in refs), config))
    else:
        seen.append(retained)  # BORROW_RESOURCE_LIFETIMES: the executable alone
    return seen


def _as_ref(r: Any) -> Any:
    return r if r.__class__ is BufferRef else BufferRef(r)


def test_fast_paths_agree_with_the_reference(dev: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variant (good and bad), as a first call and as a repeat of an accepted call
    that is still held, gives what the reference gives: the same error, or a command of
    equal fields."""
    exe = _exe(dev)
    a, b = _buf(dev), _buf(dev)
    device = dev

    def capture(commands: list, mode: int, capacity: int) -> Any:
        assert mode == int(hal.CommandBufferMode.ONE_SHOT | hal.CommandBufferMode.UNRETAINED)
        assert capacity == 0
        return list(commands)

    good = [
        ("whole buffers", (exe, "negate", ONE, COUNT_4, (a, b))),
        ("refs", (exe, 0, ONE, COUNT_4, (BufferRef(a, 0, 16), BufferRef(b, 4, 12)))),
        ("ref to the end", (exe, "negate", ONE, COUNT_4, (BufferRef(a, 16), b))),
        ("list bindings", (exe, "negate", ONE, COUNT_4, [a, b])),
        ("int constants", (exe, "negate", ONE, [4], (a, b))),
        ("extra bindings", (exe, "negate", ONE, COUNT_4, (a, b, a))),
        (
            "indirect count",
            (exe, "negate", DispatchConfig.indirect(_buf(dev, bytes(12))), COUNT_4, (a, b)),
        ),
        ("subspan", (exe, "negate", ONE, COUNT_4, (a.subspan(4, 8), b))),
    ]
    cases = good + [(name, args) for name, args, _code in _variants(dev, exe, a, b)]
    flags_cases = [0, int(DispatchFlags.BORROW_RESOURCE_LIFETIMES)]
    monkeypatch.setattr(device, "_finalize", capture)
    for name, args in cases:
        for flags in flags_cases:
            fast = partial(_fast, device, args, flags)
            expected = _outcome(partial(_reference, device, args, flags))
            monkeypatch.setattr(submission, "_last_use", submission._nothing)
            assert _outcome(fast) == expected, (name, flags, "first")
            # Again while the first call's result is held (its op in flight).
            held = _outcome_and_keep(fast)
            assert held[0] == expected, (name, flags, "held")
            assert _outcome(fast) == expected, (name, flags, "repeat")
            del held


def _fast(device: Any, args: tuple, flags: int) -> Any:
    exe, fn, config, constants, bindings = args
    return submission.prepare_dispatch(device, exe, fn, config, constants, bindings, flags)


def _reference(device: Any, args: tuple, flags: int) -> Any:
    """The reference after the argument normalisation both paths share."""
    exe, fn, config, constants, bindings = args
    if fn.__class__ is not int:
        fn = submission.function_ordinal(exe, fn)
    if constants.__class__ is not bytes:
        constants = submission.constants_bytes(constants)
    if bindings.__class__ is not tuple:
        bindings = submission.bindings_tuple(bindings)
    return submission.prepare_dispatch_reference(
        device, exe, fn, config, constants, bindings, flags
    )


def _outcome_and_keep(call: Callable[[], Any]) -> tuple[Any, Any]:
    kept: list[Any] = []

    def keep() -> Any:
        result = call()
        kept.append(result)
        return result

    return _outcome(keep), kept
