"""Host queues over the software HSA agent: transfers, ring wrap, parking, cross-queue
waits (device barrier and software deferral), faults, teardown."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hal_amdgpu import aql_packets as aql
from hal_amdgpu.device_library import load_device_library
from hal_amdgpu.driver import AmdgpuDriverBackend
from hal_amdgpu.queue_options import HostQueueOptions, WaitBarrierStrategy
from hal_amdgpu.queue_set import HostQueueSet

import hal_core as hal
from hal_core import BufferUsage, MemoryAccess, MemoryType
from hal_core._command_buffer import (
    CMD_BARRIER,
    CMD_COPY,
    CMD_FILL,
    CMD_UPDATE,
    BufferBinding,
    BufferRef,
    CommandBufferMode,
)
from hal_core._construction import INTERNAL
from hal_core._memory import BufferParams
from hal_core.backend import QueueOp, buffer_host_bytes, new_buffer
from hal_core.backend import QueueOpKind as K
from hal_core.pool import PassthroughPool

T = 10.0  # generous timeouts: the machine is shared


def Semaphore(initial_value: int = 0) -> hal.Semaphore:
    """A semaphore of no device: the host queues under test run without a ``Device``."""
    return hal.Semaphore(initial_value, _token=INTERNAL)


class Env:
    def __init__(self, soft_gpus: str = "", **opts):
        params = {"hsa": "soft"}
        if soft_gpus:
            params["soft_gpus"] = soft_gpus
        self.backend = AmdgpuDriverBackend().create_device_by_path("", params)
        be = self.backend
        access = list(dict.fromkeys([g.handle for g in be.gpus] + [c.handle for c in be.cpus]))
        self.qs = HostQueueSet(
            be.hsa,
            be.gpus,
            be.gpu_pools,
            be.cpu_pools,
            access,
            load_device_library(be.hsa, be.gpus),
            HostQueueOptions(**opts),
            2,
            be.allocator,
        )
        self.runtime = be.hsa.lib

    def buffer(self, n, data=None):
        st, mt = self.backend.allocator.allocate(
            BufferParams(
                type=MemoryType.HOST_LOCAL | MemoryType.DEVICE_VISIBLE, usage=BufferUsage.DEFAULT
            ),
            n,
        )
        b = new_buffer(
            st,
            memory_type=mt,
            allowed_usage=BufferUsage.TRANSFER | BufferUsage.DISPATCH | BufferUsage.MAPPING,
            allowed_access=MemoryAccess.ALL,
            allocation_size=n,
        )
        if data is not None:
            buffer_host_bytes(b)[:] = np.frombuffer(bytes(data), np.uint8)
        return b

    def op(self, kind, queue, waits=(), signals=(), **fields):
        o = QueueOp(kind, queue, tuple(waits), tuple(signals))
        for k, v in fields.items():
            setattr(o, k, v)
        self.qs.submit(o)
        return o

    def fill(self, q, buf, value, waits=(), signals=(), offset=0, length=None, width=1):
        length = buf.byte_length - offset if length is None else length
        return self.op(
            K.FILL,
            q,
            waits,
            signals,
            target=buf,
            target_offset=offset,
            length=length,
            pattern=int(value).to_bytes(width, "little"),
        )

    def copy(self, q, src, dst, waits=(), signals=(), length=None):
        return self.op(
            K.COPY,
            q,
            waits,
            signals,
            source=src,
            source_offset=0,
            target=dst,
            target_offset=0,
            length=length or src.byte_length,
        )

    def block(self, q):
        """Publish a raw barrier-AND packet waiting on a fresh HSA signal (test-only):
        the GPU queue stalls until ``release()``. No epoch is used."""
        hsa = self.backend.hsa
        ffi = hsa.ffi
        sig = ffi.new("hsa_signal_t*")
        hsa.check(hsa.lib.hsa_amd_signal_create(1, 0, ffi.NULL, 0, sig), "signal")
        queue = self.qs.queues[q]
        with queue._lock:
            first = queue.ring.try_reserve(1)
            assert first >= 0
            rows = aql.new_staging(1)
            aql.emit_barrier_and(rows, dep_signals=np.array([sig[0].handle], np.uint64))
            queue.ring.write_bodies(first, rows)
            queue.ring.commit_header(
                first, aql.header_setup_word(aql.encode_header(aql.PacketType.BARRIER_AND))
            )
            queue.ring.ring_doorbell(first)
        handle = sig[0]

        def release():
            hsa.lib.hsa_signal_store_screlease(handle, 0)

        return release

    def close(self, timeout=None):
        self.qs.close(timeout)
        self.backend.close(None)


@pytest.fixture
def env():
    e = Env(aql_capacity=64, kernarg_capacity=1 << 16)
    yield e
    e.close()


def test_fill_copy_update_barrier_across_queues(env):
    a, b = env.buffer(1024), env.buffer(1024)
    s = Semaphore(0)
    env.fill(0, a, 0x11223344, signals=[(s, 1)], width=4)
    env.copy(1, a, b, waits=[(s, 1)], signals=[(s, 2)], length=512)
    env.op(
        K.UPDATE,
        0,
        [(s, 2)],
        [(s, 3)],
        target=b,
        target_offset=512,
        length=4,
        payload=np.frombuffer(b"\1\2\3\4", np.uint8),
    )
    env.op(K.BARRIER, 1, [(s, 3)], [(s, 4)])
    s.wait(4, T)
    q0 = env.qs.queues[0]
    q0.wait_idle(T)
    assert env.qs.tracker.query_epoch(q0.axis, 2)  # the queue's frontier axis advanced
    assert (buffer_host_bytes(a).view(np.uint32) == 0x11223344).all()
    expected = bytes([0x44, 0x33, 0x22, 0x11, 1, 2, 3, 4, 0, 0, 0, 0])
    assert bytes(buffer_host_bytes(b)[508:520]) == expected


def test_ring_wrap_thousands_of_submissions():
    env = Env(aql_capacity=16, kernarg_capacity=4096, notification_capacity=16)
    try:
        buf = env.buffer(256)
        s = Semaphore(0)
        n = 2000
        for i in range(1, n + 1):
            env.fill(
                i % 2,
                buf,
                i & 0xFF,
                waits=[(s, i - 1)] if i > 1 else (),
                signals=[(s, i)],
                offset=(i % 4) * 64,
                length=64,
            )
        s.wait(n, T * 3)
        for slot in range(4):
            last = max(i for i in range(n - 3, n + 1) if i % 4 == slot)
            assert (buffer_host_bytes(buf)[slot * 64 : slot * 64 + 64] == last & 0xFF).all()
        q0 = env.qs.queues[0]
        assert q0.ring.write_index > 16 * 10 and q0.kernargs.write_position > 64 * 10
    finally:
        env.close()


def test_parking_when_full_then_drains_in_order(env):
    release = env.block(0)
    buf = env.buffer(64)
    s = Semaphore(0)
    q = env.qs.queues[0]
    for i in range(1, 201):
        env.fill(0, buf, i, signals=[(s, i)])
    assert len(q._parked) > 0  # the 64-packet ring is full behind the blocker
    assert s.value == 0
    release()
    s.wait(200, T)
    assert (buffer_host_bytes(buf) == 200).all()
    assert not q._parked


@pytest.mark.parametrize("strategy", ["barrier_value", "pm4", "defer"])
def test_two_queues_wait_on_each_other(strategy):
    soft = "gfx90a,gfx90a" if strategy == "barrier_value" else ""
    opts = {"wait_barrier": WaitBarrierStrategy.DEFER} if strategy == "defer" else {}
    env = Env(soft, aql_capacity=64, kernarg_capacity=1 << 16, **opts)
    try:
        qs = env.qs
        assert qs.barrier_value_supported == (strategy == "barrier_value")
        release = env.block(0)
        a, b, c = env.buffer(256), env.buffer(256), env.buffer(256)
        s0, s1 = Semaphore(0), Semaphore(0)
        env.fill(0, a, 7, signals=[(s0, 1)])  # q0 epoch 1 (stalled)
        env.copy(1, a, b, waits=[(s0, 1)], signals=[(s1, 1)])  # q1 waits on q0
        env.fill(1, c, 1, waits=[(s1, 1)], signals=[(s1, 2)])
        env.copy(0, b, c, waits=[(s1, 1)], signals=[(s0, 2)], length=128)  # q0 waits on q1
        q0, q1 = qs.queues[:2]
        if strategy != "defer":
            assert q1.frontier == {q0: 1}  # device barrier on q0's epoch 1
            assert not q1._deferred
            assert q1.deferred_waits == 0
        else:
            assert len(q1._deferred) == 2  # software deferral (copy, then fill behind it)
            assert q1.deferred_waits == 2
        release()
        s0.wait(2, T)
        s1.wait(2, T)
        assert (buffer_host_bytes(b) == 7).all()
        # c: fill(1) and the copy of b's first 128 bytes both wait only on s1 >= 1.
        assert set(np.unique(buffer_host_bytes(c)[:128])) <= {1, 7}
        assert (buffer_host_bytes(c)[128:] == 1).all()
    finally:
        env.close()


def test_fault_mid_stream_fails_exactly_affected_semaphores(env):
    buf = env.buffer(64)
    ok, bad, later, other = Semaphore(0), Semaphore(0), Semaphore(0), Semaphore(0)
    env.fill(0, buf, 1, signals=[(ok, 1)])
    ok.wait(1, T)
    env.runtime.inject_fault()
    env.fill(0, buf, 2, signals=[(bad, 1)])
    with pytest.raises(hal.HalError) as info:
        bad.wait(1, T)
    assert "queue 0" in str(info.value)
    env.fill(0, buf, 3, signals=[(later, 1)])  # a dead queue fails later work too
    with pytest.raises(hal.HalError):
        later.wait(1, T)
    env.fill(1, buf, 4, signals=[(other, 1)])  # the other queue is unaffected
    other.wait(1, T)
    tracker, q0, q1 = env.qs.tracker, env.qs.queues[0], env.qs.queues[1]
    assert not tracker.query_epoch(q0.axis, 1)  # the failed queue's axis is failed
    assert tracker.query_epoch(q1.axis, 1)
    assert ok.value == 1 and other.value == 1
    assert (buffer_host_bytes(buf) == 4).all()


def test_out_of_range_submission_sizes(env):
    buf = env.buffer(1 << 17)
    s = Semaphore(0)
    big_update = [(CMD_UPDATE, BufferRef(buf, 0, 1 << 16), bytes(1 << 16))]
    prog = env.qs.finalize_command_buffer(big_update, CommandBufferMode.ONE_SHOT, 0)
    with pytest.raises(hal.OutOfRangeError, match="kernarg ring holds 65536"):
        env.op(K.EXECUTE, 0, (), [(s, 1)], program=prog, bindings=())
    # A later block too large for the ring is refused at submit too (not parked forever).
    late_big = [(CMD_FILL, BufferRef(buf, 0, 64), b"\1")] + big_update
    prog = env.qs.finalize_command_buffer(late_big, CommandBufferMode.ONE_SHOT, 0)
    assert len(prog.per_gpu[0].blocks) == 2
    with pytest.raises(hal.OutOfRangeError, match="kernarg ring holds 65536"):
        env.op(K.EXECUTE, 0, (), [(s, 1)], program=prog, bindings=())
    many = [(Semaphore(0), 1) for _ in range(2000)]
    with pytest.raises(hal.OutOfRangeError, match="notification ring holds 1024"):
        env.fill(0, buf, 1, signals=many, length=64)
    # Large command buffers are split into blocks that fit the 64-packet ring.
    fills = [(CMD_FILL, BufferRef(buf, 64 * i, 64), bytes([i])) for i in range(200)]
    prog = env.qs.finalize_command_buffer(fills, CommandBufferMode.DEFAULT, 0)
    assert len(prog.per_gpu[0].blocks) == 13
    # queue_update larger than the inline limit is staged, not refused.
    env.op(
        K.UPDATE,
        1,
        (),
        [(s, 1)],
        target=buf,
        target_offset=0,
        length=1 << 17,
        payload=np.full(1 << 17, 3, np.uint8),
    )
    s.wait(1, T)
    env.op(K.EXECUTE, 0, [(s, 1)], [(s, 2)], program=prog, bindings=())
    s.wait(2, T)  # the queue still works after the refusals
    assert list(buffer_host_bytes(buf)[: 64 * 200 : 64]) == list(range(200))
    assert (buffer_host_bytes(buf)[64 * 200 :] == 3).all()


def test_host_call_alloca_dealloca(env):
    s = Semaphore(0)
    seen = []
    ran = threading.Event()

    def call(args, ctx):
        seen.append(args)
        ran.set()

    env.op(K.HOST_CALL, 0, (), [(s, 1)], callback=call, args=(1, 2, 3, 4), flags=0)
    s.wait(1, T)
    assert ran.is_set() and seen == [(1, 2, 3, 4)]

    def failing(args, ctx):
        raise hal.AbortedError("no")

    f = Semaphore(0)
    env.op(K.HOST_CALL, 1, (), [(f, 1)], callback=failing, args=(0, 0, 0, 0), flags=0)
    with pytest.raises(hal.AbortedError):
        f.wait(1, T)
    params = BufferParams(
        type=MemoryType.HOST_LOCAL | MemoryType.DEVICE_VISIBLE, usage=BufferUsage.DEFAULT
    )
    pending = new_buffer(
        None,
        memory_type=params.type,
        allowed_usage=BufferUsage.TRANSFER,
        allowed_access=MemoryAccess.ALL,
        allocation_size=128,
    )
    env.op(
        K.ALLOCA,
        0,
        [(s, 1)],
        [(s, 2)],
        target=pending,
        length=128,
        pool=None,
        params=params,
        alloca_state=None,
    )
    env.fill(0, pending, 5, waits=[(s, 2)], signals=[(s, 3)])  # elided: same queue
    env.op(K.DEALLOCA, 0, [(s, 3)], [(s, 4)], target=pending)
    s.wait(4, T)
    assert pending.is_decommitted
    env.op(K.DEALLOCA, 0, [(s, 4)], [(s, 5)], target=pending)
    with pytest.raises(hal.FailedPreconditionError):
        s.wait(5, T)
    # An explicit pool (the hal_core.pool substrate over the host-local heap) serves it.
    pool = PassthroughPool(env.qs.pools.providers[2], notification=env.qs.pools.notification)
    explicit = new_buffer(
        None,
        memory_type=params.type,
        allowed_usage=BufferUsage.TRANSFER,
        allowed_access=MemoryAccess.ALL,
        allocation_size=128,
    )
    e = Semaphore(0)
    env.op(
        K.ALLOCA,
        0,
        (),
        [(e, 1)],
        target=explicit,
        length=128,
        pool=pool,
        params=params,
        alloca_state=None,
    )
    e.wait(1, T)
    assert explicit.is_committed and pool.query_stats().reservation_count == 1
    env.op(K.DEALLOCA, 0, [(e, 1)], [(e, 2)], target=explicit)
    e.wait(2, T)
    assert pool.query_stats().reservation_count == 0
    pool.close()


def test_execute_block_program_with_binding_table(env):
    a, b = env.buffer(256), env.buffer(256)
    cmds = [
        (CMD_FILL, BufferRef.indirect(0, 0, 256), b"\x2a"),
        (CMD_BARRIER,),
        (CMD_COPY, BufferRef.indirect(1, 128, 128), BufferRef.indirect(0, 0, 128)),
        (CMD_UPDATE, BufferRef(b, 0, 5), b"hello"),
    ]
    prog = env.qs.finalize_command_buffer(cmds, CommandBufferMode.DEFAULT, 2)
    assert prog.per_gpu[1].strategy_counts == prog.per_gpu[0].strategy_counts
    assert prog.per_gpu[0].strategy_counts == {"PATCHED_TEMPLATE": 2, "PREPUBLISHED": 1}
    s = Semaphore(0)
    for i in range(3):
        env.op(
            K.EXECUTE,
            (0, 1, 3)[i],
            [(s, i)] if i else (),
            [(s, i + 1)],
            program=prog,
            bindings=(BufferBinding(a), BufferBinding(b)),
        )
    s.wait(3, T)
    assert (buffer_host_bytes(a) == 42).all()
    assert bytes(buffer_host_bytes(b)[:5]) == b"hello" and (buffer_host_bytes(b)[128:] == 42).all()


def test_teardown_with_work_in_flight_does_not_hang():
    env = Env(aql_capacity=16, kernarg_capacity=1 << 14)
    env.block(0)  # never released
    buf = env.buffer(64)
    s, never, waiting = Semaphore(0), Semaphore(0), Semaphore(0)
    for i in range(1, 40):
        env.fill(0, buf, i, signals=[(s, i)])
    env.fill(1, buf, 1, waits=[(never, 1)], signals=[(waiting, 1)])  # deferred forever
    env.close(timeout=0.2)
    with pytest.raises(hal.CancelledError):
        s.wait(1, T)
    with pytest.raises(hal.CancelledError):
        waiting.wait(1, T)


def _kernels(env, name):
    from pathlib import Path

    import hal_amdgpu

    root = Path(hal_amdgpu.__file__).parent / "kernels"
    return env.backend.load_executable(
        (root / f"{name}--amdgcn-amd-amdhsa--gfx1100.hsaco").read_bytes()
    )


@pytest.mark.parametrize("mode", [CommandBufferMode.DEFAULT, CommandBufferMode.ONE_SHOT])
@pytest.mark.parametrize("dynamic", [False, True])
def test_dispatch_real_kernels_on_every_gpu(env, mode, dynamic):
    from hal_core._command_buffer import CMD_DISPATCH, DispatchConfig

    exe = _kernels(env, "scale_and_offset")
    iota = _kernels(env, "indirect")
    src = env.buffer(1024, np.arange(256, dtype=np.float32).tobytes())
    dst, out = env.buffer(1024), env.buffer(1024)
    if dynamic:
        refs = (BufferRef.indirect(0, 0, 1024), BufferRef.indirect(1, 0, 1024))
    else:
        refs = (BufferRef(src, 0, 1024), BufferRef(dst, 0, 1024))
    consts = np.array([2.0, 1.0], np.float32).tobytes() + (256).to_bytes(4, "little")
    cmds = [
        (
            CMD_DISPATCH,
            exe,
            0,
            DispatchConfig((4, 1, 1), workgroup_size=(64, 1, 1)),
            consts,
            refs,
            0,
        ),
        (
            CMD_DISPATCH,
            iota,
            0,
            DispatchConfig((3, 1, 1), workgroup_size=(32, 1, 1)),
            (1000).to_bytes(4, "little"),
            (BufferRef(out, 0, 1024),),
            0,
        ),
    ]
    prog = env.qs.finalize_command_buffer(cmds, mode, 2)
    counts = prog.per_gpu[0].strategy_counts
    if mode == CommandBufferMode.ONE_SHOT:
        assert counts == {"HAL": 2}
    elif dynamic:
        assert counts == {"DYNAMIC_BINDINGS": 1, "PREPUBLISHED": 1}
    else:
        assert counts == {"PREPUBLISHED": 2}
    table = (BufferBinding(src), BufferBinding(dst)) if dynamic else ()
    s = Semaphore(0)
    runs = 1 if mode == CommandBufferMode.ONE_SHOT else 2
    for i, queue in enumerate((0, 2)[:runs]):  # GPU 0 and GPU 1
        env.op(K.EXECUTE, queue, [(s, i)] if i else (), [(s, i + 1)], program=prog, bindings=table)
    s.wait(runs, T)
    assert np.allclose(buffer_host_bytes(dst).view(np.float32), np.arange(256) * 2.0 + 1.0)
    # indirect_iota sizes itself from the hidden block count / group size we filled in.
    assert list(buffer_host_bytes(out).view(np.uint32)[:96]) == list(range(1000, 1096))
    assert (buffer_host_bytes(out).view(np.uint32)[96:] == 0).all()


def test_dropping_user_references_after_submit_keeps_results(env):
    import gc

    a = env.buffer(4096)
    s = Semaphore(0)
    release = env.block(0)
    src = env.buffer(4096, bytes(range(256)) * 16)
    cmds = [(CMD_COPY, BufferRef(a, 0, 4096), BufferRef(src, 0, 4096))]
    prog = env.qs.finalize_command_buffer(cmds, CommandBufferMode.ONE_SHOT, 0)
    op = QueueOp(K.EXECUTE, 0, (), ((s, 1),))
    op.program, op.bindings, op.retained = prog, (), (prog,)
    env.qs.submit(op)
    del src, prog, op, cmds
    gc.collect()
    release()
    s.wait(1, T)
    assert bytes(buffer_host_bytes(a)[:256]) == bytes(range(256))


@pytest.mark.parametrize("dynamic_params", [False, True])
def test_indirect_dispatch_parameters_read_when_reached(env, dynamic_params):
    from hal_core._command_buffer import CMD_DISPATCH, DispatchConfig

    iota = _kernels(env, "indirect")
    params = env.buffer(16, np.array([1, 1, 1, 0], np.uint32).tobytes())
    out = env.buffer(4096)
    ref = BufferRef.indirect(0, 0, 12) if dynamic_params else BufferRef(params, 0, 12)
    cfg = DispatchConfig((0, 0, 0), ref, workgroup_size=(32, 1, 1))
    cmds = [
        # Gated at admission: counts (1,1,1) as submitted.
        (CMD_DISPATCH, iota, 0, cfg, (0).to_bytes(4, "little"), (BufferRef(out, 0, 4096),), 0),
        (CMD_BARRIER,),
        # Written by the command buffer itself, read only when the next dispatch is reached.
        (CMD_UPDATE, BufferRef(params, 0, 12), np.array([5, 1, 1], np.uint32).tobytes()),
        (CMD_BARRIER,),
        (CMD_DISPATCH, iota, 0, cfg, (500).to_bytes(4, "little"), (BufferRef(out, 2048, 2048),), 0),
        (CMD_BARRIER,),
        (CMD_FILL, BufferRef(params, 0, 12), b"\0"),
        (CMD_BARRIER,),
        (
            CMD_DISPATCH,
            iota,
            0,
            cfg,
            (900).to_bytes(4, "little"),
            (BufferRef(out, 0, 4096),),
            0,
        ),  # zero counts: a NOP
    ]
    prog = env.qs.finalize_command_buffer(cmds, CommandBufferMode.DEFAULT, 1)
    p0 = prog.per_gpu[0]
    assert [b.replay.indirect is not None for b in p0.blocks] == [True, True, True]
    assert p0.blocks[1].header["indirect_dispatch_count"] == 1
    s = Semaphore(0)
    env.op(K.EXECUTE, 0, (), [(s, 1)], program=prog, bindings=(BufferBinding(params),))
    s.wait(1, T)
    words = buffer_host_bytes(out).view(np.uint32)
    assert list(words[:32]) == list(range(32))
    assert (words[32:512] == 0).all()
    assert list(words[512 : 512 + 160]) == list(range(500, 660))
    assert (words[512 + 160 :] == 0).all()


def test_many_block_replays_park_and_resume_in_order():
    env = Env(aql_capacity=16, kernarg_capacity=1 << 13, notification_capacity=8)
    try:
        buf = env.buffer(4 * 1200)
        cmds = [
            (CMD_FILL, BufferRef.indirect(0, 4 * i, 4), (i + 1).to_bytes(4, "little"))
            for i in range(1200)
        ]
        prog = env.qs.finalize_command_buffer(cmds, CommandBufferMode.DEFAULT, 1)
        assert len(prog.per_gpu[0].blocks) == 300  # 4 packets per block on a 16-slot ring
        s0, s1 = Semaphore(0), Semaphore(0)
        other = env.buffer(4 * 1200)
        for i in range(1, 4):  # three replays per queue, interleaved on two queues
            env.op(
                K.EXECUTE,
                0,
                [(s0, i - 1)] if i > 1 else (),
                [(s0, i)],
                program=prog,
                bindings=(BufferBinding(buf),),
            )
            env.op(
                K.EXECUTE,
                1,
                [(s1, i - 1)] if i > 1 else (),
                [(s1, i)],
                program=prog,
                bindings=(BufferBinding(other),),
            )
        s0.wait(3, T * 3)
        s1.wait(3, T * 3)
        expect = np.arange(1, 1201, dtype=np.uint32)
        assert (buffer_host_bytes(buf).view(np.uint32) == expect).all()
        assert (buffer_host_bytes(other).view(np.uint32) == expect).all()
    finally:
        env.close()


def test_unvalidated_out_of_range_fails_at_execution(env):
    buf = env.buffer(16)
    s = Semaphore(0)
    cases = [
        ([(CMD_FILL, BufferRef(buf, 8, 64), b"\1")], (), "exceeds its buffer"),
        (
            [(CMD_FILL, BufferRef.indirect(0, 8, 64), b"\1")],
            (BufferBinding(buf),),
            "binds 16 bytes",
        ),
        (
            [(CMD_FILL, BufferRef.indirect(3, 0, 4), b"\1")],
            (BufferBinding(buf),),
            "past the table of 1 entries",
        ),
    ]
    for cmds, table, message in cases:
        sem = Semaphore(0)
        prog = env.qs.finalize_command_buffer(cmds, CommandBufferMode.UNVALIDATED, 1)
        env.op(K.EXECUTE, 0, (), [(sem, 1)], program=prog, bindings=table)
        with pytest.raises(hal.OutOfRangeError, match=message):
            sem.wait(1, T)
    assert bytes(buffer_host_bytes(buf)) == bytes(16)  # nothing ran
    env.fill(0, buf, 2, signals=[(s, 1)])  # later work runs
    s.wait(1, T)
    assert bytes(buffer_host_bytes(buf)) == b"\2" * 16


def test_fault_propagates_to_a_peer_stuck_behind_a_device_barrier():
    env = Env("gfx90a,gfx90a", aql_capacity=64, kernarg_capacity=1 << 16)
    try:
        a, b = env.buffer(64), env.buffer(64)
        s0, s1, early = Semaphore(0), Semaphore(0), Semaphore(0)
        env.fill(1, b, 3, signals=[(early, 1)])
        early.wait(1, T)  # done before anything fails: stays signalled
        release = env.block(0)
        env.fill(0, a, 1, signals=[(s0, 1)])
        env.copy(1, a, b, waits=[(s0, 1)], signals=[(s1, 1)])  # device barrier on q0
        q0, q1 = env.qs.queues[:2]
        assert q1.frontier == {q0: 1}
        env.runtime.inject_fault()
        release()
        with pytest.raises(hal.HalError):
            s0.wait(1, T)
        with pytest.raises(hal.HalError, match="waits on queue 0, which failed"):
            s1.wait(1, T)
        assert early.value == 1 and (buffer_host_bytes(b) == 3).all()
        late = Semaphore(0)
        env.fill(2, b, 5, signals=[(late, 1)])  # the other GPU's queues still work
        late.wait(1, T)
    finally:
        env.close(timeout=1)


def test_alloca_alignment_beyond_the_heap_is_invalid_at_submit(env):
    params = BufferParams(
        type=MemoryType.HOST_LOCAL | MemoryType.DEVICE_VISIBLE,
        usage=BufferUsage.DEFAULT,
        min_alignment=1 << 20,
    )
    pending = new_buffer(
        None,
        memory_type=params.type,
        allowed_usage=BufferUsage.TRANSFER,
        allowed_access=MemoryAccess.ALL,
        allocation_size=64,
    )
    with pytest.raises(hal.InvalidArgumentError, match="alignment"):
        env.op(
            K.ALLOCA,
            0,
            (),
            [(Semaphore(0), 1)],
            target=pending,
            length=64,
            pool=None,
            params=params,
            alloca_state=None,
        )
