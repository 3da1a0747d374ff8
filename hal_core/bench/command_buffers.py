"""Command-buffer benchmarks: the cost of recording, and of replaying against calling a
kernel directly.

* ``cb.record.validated`` / ``cb.record.unvalidated``: the "dynamic tax" of building work
  at run time. Record a chain of 512 dispatches (``negate`` over two 16-byte buffers, a
  barrier after each), end, submit and wait; subtract the same submit+wait of a prebuilt
  command buffer holding the same chain. Microseconds per dispatch.
* ``cb.replay``: submit+wait of a prebuilt reusable command buffer of 512 single-workgroup
  ``noop`` native dispatches; microseconds per dispatch.
* ``direct.loop`` (the peer of ``cb.replay``): a Python loop calling the same native
  ``noop`` kernel 512 times through cffi, as a user without a HAL would; microseconds per
  call.

The kernels are the backend's CTS kernels (``hal_cts_backends`` hook), in the first
executable format whose backend executable exposes ``workgroup_caller`` (native code);
backends without one report UNAVAILABLE.
"""

from __future__ import annotations

from typing import Any

from .. import (
    BufferParams,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    QueueAffinity,
    UnavailableError,
)
from . import BenchContext, benchmark

DISPATCHES = 512
_TIMEOUT = 60.0
_ANY = QueueAffinity.ANY
_COUNT_4 = (4).to_bytes(4, "little")  # negate's element-count constant (4 float32s)
_cache: dict[tuple[int, bool], Any] = {}


def _native_executable(ctx: BenchContext, require_native: bool = True) -> Any:
    """The backend's CTS kernels: with ``require_native`` only an executable exposing
    ``workgroup_caller`` (direct calls need it); otherwise the first format the device can
    prepare (recording only needs dispatchable functions, e.g. amdgpu's HSACO)."""
    key = (id(ctx.device), require_native)
    exe = _cache.get(key)
    if exe is not None:
        return exe
    from .._registry import iter_hook_results

    driver = ctx.device.driver_name
    configs = [cfg for _p, cfg in iter_hook_results("hal_cts_backends") if cfg.driver == driver]
    cache = ctx.device.create_executable_cache("bench")
    for cfg in reversed(configs):
        for fmt, source in cfg.executable_formats.items():
            if not cache.can_prepare(fmt):
                continue
            exe = cache.prepare(fmt, source("cts_kernels"))
            if not require_native or hasattr(exe.backend, "workgroup_caller"):
                _cache[key] = exe
                return exe
    raise UnavailableError(
        f"{driver} registers no native CTS kernels (an executable format whose backend "
        "executable has workgroup_caller); these benchmarks need one"
    )


def _buffers(ctx: BenchContext) -> tuple[Any, Any]:
    params = BufferParams(usage=BufferUsage.DEFAULT | BufferUsage.TRANSFER)
    alloc = ctx.device.allocator.allocate_buffer
    return alloc(params, 16), alloc(params, 16)


def _record_chain(ctx: BenchContext, exe: Any, mode: int, bindings: tuple) -> Any:
    cb = ctx.device.create_command_buffer(mode, CommandCategory.ANY, _ANY, 0)
    fn = exe.lookup_function("negate")
    config = DispatchConfig.static(1)
    count = _COUNT_4
    ab, ba = bindings
    cb.begin()
    dispatch = cb.dispatch
    barrier = cb.execution_barrier
    for i in range(DISPATCHES):
        dispatch(exe, fn, config, count, ab if i & 1 else ba)
        barrier()
    cb.end()
    return cb


def _submit_wait(ctx: BenchContext, cb: Any, sem: Any, value: int) -> None:
    ctx.device.queue_execute(_ANY, (), ((sem, value),), cb)
    sem.wait(value, _TIMEOUT)


def _record_tax(ctx: BenchContext, mode: int) -> float:
    exe = _native_executable(ctx, require_native=False)
    a, b = _buffers(ctx)
    bindings = ((a, b), (b, a))
    prebuilt = _record_chain(ctx, exe, mode, bindings)
    sem = ctx.device.create_semaphore()
    counter = [0]

    def dynamic() -> float:
        counter[0] += 1
        t0 = ctx.now()
        cb = _record_chain(ctx, exe, mode | CommandBufferMode.ONE_SHOT, bindings)
        _submit_wait(ctx, cb, sem, counter[0])
        return ctx.now() - t0

    def replay() -> float:
        counter[0] += 1
        t0 = ctx.now()
        _submit_wait(ctx, prebuilt, sem, counter[0])
        return ctx.now() - t0

    dyn = ctx.median(dynamic)
    pre = ctx.median(replay)
    return (dyn - pre) / DISPATCHES * 1e6


@benchmark("cb.record.validated", "us/dispatch")
def record_validated(ctx: BenchContext) -> float:
    """Record+end+submit of a 512 dispatch+barrier chain minus prebuilt replay (validated)."""
    return _record_tax(ctx, 0)


@benchmark("cb.record.unvalidated", "us/dispatch")
def record_unvalidated(ctx: BenchContext) -> float:
    """The same dynamic tax with UNVALIDATED command buffers."""
    return _record_tax(ctx, CommandBufferMode.UNVALIDATED)


@benchmark("cb.replay", "us/dispatch")
def replay(ctx: BenchContext) -> float:
    """Submit+wait of a prebuilt command buffer of 512 single-workgroup native no-ops."""
    return noop_replay_us(ctx, _native_executable(ctx))


def noop_replay_us(ctx: BenchContext, exe: Any) -> float:
    """Median submit+wait of a prebuilt command buffer of 512 single-workgroup ``noop``
    dispatches of ``exe``, in microseconds per dispatch (``cb.replay``'s measure, also used
    by backends whose kernels are not native code)."""
    fn = exe.lookup_function("noop")
    config = DispatchConfig.static(1)
    cb = ctx.device.create_command_buffer(0, CommandCategory.DISPATCH, _ANY, 0)
    cb.begin()
    for _ in range(DISPATCHES):
        cb.dispatch(exe, fn, config, b"", ())
    cb.end()
    sem = ctx.device.create_semaphore()
    counter = [0]

    def once() -> float:
        counter[0] += 1
        t0 = ctx.now()
        _submit_wait(ctx, cb, sem, counter[0])
        return ctx.now() - t0

    return ctx.median(once) / DISPATCHES * 1e6


@benchmark("direct.loop", "us/call")
def direct_loop(ctx: BenchContext) -> float:
    """Peer of cb.replay: a Python loop calling the native no-op 512 times via cffi."""
    exe = _native_executable(ctx)
    call, state = exe.backend.workgroup_caller(exe.lookup_function("noop"))

    def once() -> float:
        t0 = ctx.now()
        for _ in range(DISPATCHES):
            call(state, 0, 0, 0)
        return ctx.now() - t0

    return ctx.median(once) / DISPATCHES * 1e6
