"""Block program + block processor over host memory (IREE's aql_block_processor_test idea):
a fake arena stands in for device memory and a tiny interpreter plays the packet processor,
so recorded fills, copies, updates and dispatches are checked end to end."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hal_amdgpu import aql_packets as aql
from hal_amdgpu.aql_ring import READ_INDEX_WORD, AqlRing
from hal_amdgpu.block_format import BINDING_SOURCE_DTYPE, BLOCK_MAGIC, CommandFlags, Opcode
from hal_amdgpu.block_processor import BlockProcessor
from hal_amdgpu.block_program import build_program, build_programs
from hal_amdgpu.kernarg_ring import KernargRing
from hal_amdgpu.kernel_descriptors import BuiltinKernels, KernelDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core as hal
from hal_core._command_buffer import (
    CMD_BARRIER,
    CMD_COPY,
    CMD_DISPATCH,
    CMD_FILL,
    CMD_UPDATE,
    BufferRef,
    CommandBufferMode,
    DispatchConfig,
    DispatchFlags,
)
from hal_core.backend import new_buffer

BASE = 0x100000
FILL = {1: 0xF1, 2: 0xF2, 4: 0xF4, 8: 0xF8}
COPY = {1: 0xC1, 4: 0xC4, 16: 0xC16}
AXPY = 0xA0


def _desc(obj, nb, nc, size=None, hidden=()):
    return KernelDescriptor(
        kernel_object=obj,
        kernarg_size=size or 8 * nb + 8 * nc,
        binding_count=nb,
        constant_count=nc,
        workgroup_size=(64, 1, 1),
        hidden_args=hidden,
    )


class Arena:
    def __init__(self, size=1 << 20):
        self.mem = np.zeros(size, np.uint8)
        self.cursor = 0

    def alloc(self, n, align=64):
        self.cursor = (self.cursor + align - 1) & ~(align - 1)
        off = self.cursor
        self.cursor += n
        return off

    def view(self, addr, n, dtype=np.uint8):
        off = addr - BASE
        return self.mem[off : off + n * np.dtype(dtype).itemsize].view(dtype)


class Buf:
    def __init__(self, arena, n, committed=True):
        self.byte_length = n
        self.offset = arena.alloc(n)
        self.committed = committed

    @property
    def address(self):
        return BASE + self.offset


class Ctx:
    def __init__(self, arena):
        self.arena = arena
        self.builtins = BuiltinKernels(
            fill={w: _desc(FILL[w], 1, 4) for w in FILL},
            copy={w: _desc(COPY[w], 2, 2) for w in COPY},
        )
        self.axpy = _desc(
            AXPY,
            2,
            1,
            size=64,
            hidden=(("hidden_block_count_x", 24, 4), ("hidden_grid_dims", 32, 2)),
        )

    def kernel_descriptor(self, executable, ordinal):
        return self.axpy

    def buffer_address(self, buffer):
        return buffer.address if buffer.committed else None

    def allocate_prepublished(self, n):
        off = self.arena.alloc(n)
        return self.arena.mem[off : off + n], BASE + off, ("storage", off)


class Machine:
    """Rings over the arena + an interpreter for published packets."""

    def __init__(self, arena, aql_cap=64, ka_blocks=256):
        self.arena = arena
        self.rows = aql.new_staging(aql_cap)
        self.idx = np.zeros(32, np.uint64)
        self.doorbells = []
        self.ring = AqlRing(self.rows, self.idx, self.doorbells.append)
        ka_off = arena.alloc(ka_blocks * 64)
        self.ka = KernargRing(arena.mem[ka_off : ka_off + ka_blocks * 64], BASE + ka_off)
        self.proc = BlockProcessor(self.ring, self.ka)
        self.completed_signals = []

    def run(self):
        pk = aql.as_dispatch(self.rows)
        read = int(self.idx[READ_INDEX_WORD])
        for pid in range(read, self.doorbells[-1] + 1):
            slot = pid & self.ring.mask
            word = int(self.ring.words[slot])
            assert aql.decode_header(word)[0] == aql.PacketType.KERNEL_DISPATCH
            p = pk[slot]
            obj, ka = int(p["kernel_object"]), int(p["kernarg_address"])
            q = self.arena.view(ka, 4, np.uint64)
            if obj in FILL.values():
                w = {v: k for k, v in FILL.items()}[obj]
                dt = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[w]
                self.arena.view(int(q[0]), int(q[1]), dt)[:] = int(q[2])
            elif obj in COPY.values():
                w = {v: k for k, v in COPY.items()}[obj]
                n = int(q[2]) * w
                self.arena.view(int(q[1]), n)[:] = self.arena.view(int(q[0]), n)
            elif obj == AXPY:
                n = int(p["grid_size"][0])
                c = int(self.arena.view(ka + 16, 1, np.uint32)[0])
                blocks = int(self.arena.view(ka + 24, 1, np.uint32)[0])
                assert blocks * 64 == n and int(self.arena.view(ka + 32, 1, np.uint16)[0]) == 3
                src = self.arena.view(int(q[0]), n, np.uint32)
                self.arena.view(int(q[1]), n, np.uint32)[:] = src * 2 + c
            else:
                raise AssertionError(f"unknown kernel object {obj:#x}")
            if int(p["completion_signal"]):
                self.completed_signals.append(int(p["completion_signal"]))
            self.ring.words[slot] = aql.INVALID_HEADER_WORD
        self.idx[READ_INDEX_WORD] = self.doorbells[-1] + 1

    def submit(self, program, binding_ptrs=None, static_ptrs=None, signal=0x5151):
        for block in program.blocks:
            rp = block.replay
            if rp.packet_count == 0:
                continue
            self.ring.check_fits(rp.packet_count)
            first = self.ring.try_reserve(rp.packet_count)
            if first < 0:
                self.run()
                first = self.ring.try_reserve(rp.packet_count)
            assert first >= 0
            start = self.ka.allocate(rp.kernarg_block_count)
            if start < 0:
                self.run()
                self.ka.reclaim(self.ka.write_position)
                start = self.ka.allocate(rp.kernarg_block_count)
            headers = self.proc.process_block(
                block, first, start, binding_ptrs, static_ptrs, signal, aql.FenceScope.SYSTEM
            )
            self.ring.commit_headers(first, headers)
            self.ring.ring_doorbell(first + rp.packet_count - 1)
            self.run()
            self.ka.reclaim(start + rp.kernarg_block_count)


@pytest.fixture
def env():
    arena = Arena()
    return arena, Ctx(arena), Machine(arena)


def _record(arena, dynamic=False, committed=True):
    a, b, c = Buf(arena, 256, committed), Buf(arena, 256, committed), Buf(arena, 256, committed)
    ref = (
        (lambda buf, slot, off=0, n=256: BufferRef.indirect(slot, off, n))
        if dynamic
        else (lambda buf, slot, off=0, n=256: BufferRef(buf, off, n))
    )
    cmds = [
        (CMD_FILL, ref(a, 0), (7).to_bytes(4, "little")),
        (CMD_BARRIER,),
        (
            CMD_DISPATCH,
            "exe",
            0,
            DispatchConfig((1, 1, 1)),
            (5).to_bytes(4, "little"),
            (ref(a, 0), ref(b, 1)),
            0,
        ),
        (CMD_BARRIER,),
        (CMD_COPY, ref(c, 2, 128, 128), ref(b, 1, 0, 128)),
        (CMD_UPDATE, ref(c, 2, 0, 16), bytes(range(16))),
    ]
    return (a, b, c), cmds


def _check(arena, bufs):
    a, b, c = bufs
    assert (arena.view(a.address, 64, np.uint32) == 7).all()
    assert (arena.view(b.address, 64, np.uint32) == 19).all()
    assert (arena.view(c.address + 128, 32, np.uint32) == 19).all()
    assert list(arena.view(c.address, 16)) == list(range(16))


def test_reusable_static_program_is_prepublished_and_replays(env):
    arena, ctx, m = env
    bufs, cmds = _record(arena)
    prog = build_program(cmds, CommandBufferMode.DEFAULT, ctx)
    assert prog.strategy_counts == {"PREPUBLISHED": 4}
    blk = prog.blocks[0]
    assert blk.replay.queue_kernarg_packets.size == 0 and blk.replay.kernarg_block_count == 0
    h = blk.header
    assert h["magic"] == BLOCK_MAGIC and h["aql_packet_count"] == 4
    assert h["terminator_opcode"] == Opcode.RETURN and h["dispatch_count"] == 1
    cmds_rec = blk.commands
    assert list(cmds_rec["opcode"]) == [
        Opcode.FILL,
        Opcode.DISPATCH,
        Opcode.COPY,
        Opcode.UPDATE,
        Opcode.RETURN,
    ]
    assert cmds_rec["flags"][1] & CommandFlags.HAS_BARRIER
    for _ in range(3):  # replays reuse the same prepublished kernargs
        arena.mem[bufs[0].offset : bufs[2].offset + 256] = 0
        m.submit(prog)
        _check(arena, bufs)
    assert m.ka.write_position == 0  # replay wrote no queue kernargs
    assert m.completed_signals == [0x5151] * 3


def test_dynamic_program_patches_binding_table_slots(env):
    arena, ctx, m = env
    bufs, cmds = _record(arena, dynamic=True)
    prog = build_program(cmds, CommandBufferMode.DEFAULT, ctx)
    assert prog.strategy_counts == {"PATCHED_TEMPLATE": 3, "DYNAMIC_BINDINGS": 1}
    assert prog.slot_extents == {0: 256, 1: 256, 2: 256}
    srcs = prog.blocks[0].binding_sources
    assert srcs.dtype == BINDING_SOURCE_DTYPE and len(srcs) >= 5
    ptrs = np.array([b.address for b in bufs], np.uint64)
    m.submit(prog, binding_ptrs=ptrs)
    _check(arena, bufs)
    # Same program, a different binding table: results land in the new buffers.
    bufs2 = tuple(Buf(arena, 256) for _ in range(3))
    m.submit(prog, binding_ptrs=np.array([b.address for b in bufs2], np.uint64))
    _check(arena, bufs2)


def test_one_shot_uses_hal_strategy_and_late_bound_static_buffers(env):
    arena, ctx, m = env
    bufs, cmds = _record(arena, committed=False)
    prog = build_program(cmds, CommandBufferMode.ONE_SHOT, ctx)
    assert prog.strategy_counts == {"HAL": 4}
    assert len(prog.static_buffers) == 3
    m.submit(prog, static_ptrs=np.array([b.address for b in prog.static_buffers], np.uint64))
    _check(arena, bufs)


def test_long_recording_chains_blocks_with_branch(env):
    arena, ctx, m = env
    buf = Buf(arena, 4096)
    cmds = [(CMD_FILL, BufferRef(buf, 4 * i, 4), (i).to_bytes(4, "little")) for i in range(300)]
    prog = build_program(cmds, CommandBufferMode.DEFAULT, ctx, block_packet_capacity=64)
    assert len(prog.blocks) == 5 and prog.packet_count == 300
    assert [b.header["terminator_opcode"] for b in prog.blocks] == [Opcode.BRANCH] * 4 + [
        Opcode.RETURN
    ]
    assert prog.blocks[0].header["terminator_target_block_ordinal"] == 1
    m.submit(prog)
    assert list(arena.view(buf.address, 300, np.uint32)) == list(range(300))


def test_header_overlay_final_release_and_first_wait(env):
    arena, ctx, m = env
    bufs, cmds = _record(arena)
    prog = build_program(cmds, CommandBufferMode.DEFAULT, ctx)
    blk = prog.blocks[0]
    first = m.ring.try_reserve(blk.replay.packet_count)
    headers = m.proc.process_block(
        blk,
        first,
        0,
        None,
        None,
        0x99,
        aql.FenceScope.SYSTEM,
        acquire_scope=aql.FenceScope.SYSTEM,
        first_has_wait=True,
    )
    t0, b0, acq0, _ = aql.decode_header(int(headers[0]))
    assert b0 and acq0 == aql.FenceScope.SYSTEM
    t, b, _, rel = aql.decode_header(int(headers[-1]))
    assert b and rel == aql.FenceScope.SYSTEM
    assert blk.replay.header_words[-1] != headers[-1]  # template untouched
    assert int(aql.as_dispatch(m.rows)[(first + 3) & m.ring.mask]["completion_signal"]) == 0x99


def test_unimplemented_and_bad_dispatches(env):
    arena, ctx, _ = env
    a = Buf(arena, 256)
    bad_flags = [
        (
            CMD_DISPATCH,
            "exe",
            0,
            DispatchConfig((1, 1, 1)),
            b"\0" * 4,
            (BufferRef(a), BufferRef(a)),
            int(DispatchFlags.CUSTOM_DIRECT_ARGUMENTS),
        )
    ]
    with pytest.raises(hal.UnimplementedError, match="custom or indirect arguments"):
        build_program(bad_flags, 0, ctx)
    wrong_bindings = [
        (CMD_DISPATCH, "exe", 0, DispatchConfig((1, 1, 1)), b"\0" * 4, (BufferRef(a),), 0)
    ]
    with pytest.raises(hal.InvalidArgumentError, match="got 1 bindings, the kernel takes 2"):
        build_program(wrong_bindings, 0, ctx)
    wrong_consts = [
        (CMD_DISPATCH, "exe", 0, DispatchConfig((1, 1, 1)), b"", (BufferRef(a), BufferRef(a)), 0)
    ]
    with pytest.raises(hal.InvalidArgumentError, match="constant bytes"):
        build_program(wrong_consts, 0, ctx)
    huge = [
        (
            CMD_DISPATCH,
            "exe",
            0,
            DispatchConfig((1 << 30, 1, 1)),
            b"\0" * 4,
            (BufferRef(a), BufferRef(a)),
            0,
        )
    ]
    with pytest.raises(hal.OutOfRangeError, match="32-bit AQL grid"):
        build_program(huge, 0, ctx)


def test_block_larger_than_ring_is_out_of_range(env):
    arena, ctx, _ = env
    m = Machine(arena, aql_cap=8)
    buf = Buf(arena, 64)
    cmds = [(CMD_FILL, BufferRef(buf, 0, 4), b"\1")] * 9
    with pytest.raises(hal.OutOfRangeError, match="ring holds 8"):
        m.submit(build_program(cmds, 0, ctx))
    m.submit(build_program(cmds, 0, ctx, block_packet_capacity=8))  # split blocks fit
    assert (arena.view(buf.address, 4) == 1).all()


def test_empty_program(env):
    _, ctx, m = env
    prog = build_program([], 0, ctx)
    assert len(prog.blocks) == 1 and prog.packet_count == 0
    assert prog.blocks[0].header["terminator_opcode"] == Opcode.RETURN


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 15), st.integers(0, 255), st.booleans()), min_size=1, max_size=40
    ),
    st.sampled_from([4, 8, 16]),
)
def test_property_fills_replay_like_a_reference(ops, cap):
    arena = Arena(1 << 18)
    ctx = Ctx(arena)
    m = Machine(arena, aql_cap=16, ka_blocks=64)
    buf = Buf(arena, 64)
    expect = np.zeros(64, np.uint8)
    cmds = []
    for word, value, dynamic in ops:
        ref = BufferRef.indirect(0, 4 * word, 4) if dynamic else BufferRef(buf, 4 * word, 4)
        cmds.append((CMD_FILL, ref, bytes([value])))
        expect[4 * word : 4 * word + 4] = value
    prog = build_program(cmds, 0, ctx, block_packet_capacity=cap)
    m.submit(prog, binding_ptrs=np.array([buf.address], np.uint64))
    assert (arena.view(buf.address, 64) == expect).all()


# -- building once for several GPUs (build_programs) ---------------------------------------


class OtherGpuCtx(Ctx):
    """A second GPU: the same kernels at other kernel objects (and, with ``private``, a
    descriptor that differs beyond the kernel object, so nothing can be shared)."""

    def __init__(self, arena, private=0):
        super().__init__(arena)

        def moved(d):
            return attrs.evolve(
                d, kernel_object=d.kernel_object + 0x1000, private_segment_size=private
            )

        self.builtins = BuiltinKernels(
            fill={w: moved(d) for w, d in self.builtins.fill.items()},
            copy={w: moved(d) for w, d in self.builtins.copy.items()},
        )
        self.axpy = moved(self.axpy)


class CountingCtx(Ctx):
    def __init__(self, arena):
        super().__init__(arena)
        self.allocations = 0

    def allocate_prepublished(self, n):
        self.allocations += 1
        return super().allocate_prepublished(n)


_REPLAY_FIELDS = (
    "packets",
    "header_words",
    "queue_kernarg_packets",
    "queue_kernarg_offsets",
    "kernarg_template",
    "patch_qwords",
    "patch_slots",
    "patch_offsets",
    "static_qwords",
    "static_slots",
    "static_offsets",
    "self_qwords",
    "self_offsets",
)


def _assert_same_program(a, b):
    for field in (
        "mode",
        "strategy_counts",
        "dispatch_count",
        "packet_count",
        "max_block_packets",
        "max_block_kernarg_blocks",
        "slot_extents",
        "range_error",
    ):
        assert getattr(a, field) == getattr(b, field), field
    assert len(a.static_buffers) == len(b.static_buffers)
    assert len(a.blocks) == len(b.blocks)
    for x, y in zip(a.blocks, b.blocks):
        assert x.data.tobytes() == y.data.tobytes()
        for field in _REPLAY_FIELDS:
            u, v = getattr(x.replay, field), getattr(y.replay, field)
            assert u.dtype == v.dtype and u.tobytes() == v.tobytes(), field
        assert x.replay.indirect == y.replay.indirect


def _both_ways(make_cmds, mode, private=0, **caps):
    """(build_programs over two GPUs, build_program per GPU), each over its own arena with
    the same allocation order, plus both arenas."""
    arena1 = Arena()
    cmds1 = make_cmds(arena1)
    shared = build_programs(cmds1, mode, (Ctx(arena1), OtherGpuCtx(arena1, private)), **caps)
    arena2 = Arena()
    cmds2 = make_cmds(arena2)
    separate = tuple(
        build_program(cmds2, mode, c, **caps) for c in (Ctx(arena2), OtherGpuCtx(arena2, private))
    )
    return shared, separate, arena1, arena2


@pytest.mark.parametrize("mode", [CommandBufferMode.DEFAULT, CommandBufferMode.ONE_SHOT])
@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("private", [0, 16])
def test_build_programs_equals_a_build_per_gpu(mode, dynamic, private):
    def make(arena):
        return _record(arena, dynamic=dynamic)[1] * 3

    shared, separate, arena1, arena2 = _both_ways(make, mode, private, block_packet_capacity=5)
    for a, b in zip(shared, separate):
        _assert_same_program(a, b)
    # Same prepublished storage contents at the same addresses (the UPDATE payload pointer
    # of the second GPU's program points into its own storage).
    assert (arena1.mem == arena2.mem).all()
    objects = [
        int(aql.as_dispatch(shared[g].blocks[0].replay.packets)["kernel_object"][0]) for g in (0, 1)
    ]
    assert objects[1] == objects[0] + 0x1000
    if mode == CommandBufferMode.DEFAULT and not dynamic:
        pre = [aql.as_dispatch(p.blocks[0].replay.packets)["kernarg_address"] for p in shared]
        assert (pre[0] != pre[1]).all()  # one prepublished storage per GPU


def test_build_programs_runs_on_the_first_gpu_and_retargets_the_empty_program(env):
    arena, ctx, m = env
    bufs, cmds = _record(arena)
    first, second = build_programs(cmds, CommandBufferMode.DEFAULT, (ctx, OtherGpuCtx(arena)))
    m.submit(first)
    _check(arena, bufs)
    assert first.blocks[0].data is not second.blocks[0].data
    empty = build_programs([], 0, (ctx, OtherGpuCtx(arena)))
    assert [p.packet_count for p in empty] == [0, 0]
    assert all(p.blocks[0].header["terminator_opcode"] == Opcode.RETURN for p in empty)


def test_repeated_dispatches_share_one_record_and_lower_identically():
    def make(fresh_tuples):
        def build(arena):
            a, b = Buf(arena, 256), Buf(arena, 256)
            config = DispatchConfig((1, 1, 1))
            shared = (BufferRef(a, 0, 256), BufferRef(b, 0, 256))
            cmds = []
            for i in range(40):
                refs = (BufferRef(a, 0, 256), BufferRef(b, 0, 256)) if fresh_tuples else shared
                consts = (5 if i % 3 else 6).to_bytes(4, "little")
                cmds += [(CMD_DISPATCH, "exe", 0, config, consts, refs, 0), (CMD_BARRIER,)]
            return cmds

        return build

    a1, a2 = Arena(), Arena()
    memo = build_program(make(False)(a1), CommandBufferMode.ONE_SHOT, Ctx(a1))
    fresh = build_program(make(True)(a2), CommandBufferMode.ONE_SHOT, Ctx(a2))
    _assert_same_program(memo, fresh)
    # The two constants stay distinct records: command 2k has constant 6 (k % 3 == 0).
    template = memo.blocks[0].replay.kernarg_template.reshape(40, 64)
    assert [int(v) for v in template[:, 16]] == [6 if i % 3 == 0 else 5 for i in range(40)]
    assert (memo.blocks[0].commands["command_index"][:-1] == np.arange(0, 80, 2)).all()
    assert (memo.blocks[0].commands["flags"][1:-1] & CommandFlags.HAS_BARRIER).all()


def test_build_programs_errors_allocate_nothing_and_leave_contexts_usable():
    arena = Arena()
    a = Buf(arena, 256)
    good = (
        CMD_DISPATCH,
        "exe",
        0,
        DispatchConfig((1, 1, 1)),
        b"\0" * 4,
        (BufferRef(a), BufferRef(a)),
        0,
    )
    bad = (CMD_DISPATCH, "exe", 0, DispatchConfig((1, 1, 1)), b"", (BufferRef(a), BufferRef(a)), 0)
    first, second = CountingCtx(arena), CountingCtx(arena)
    with pytest.raises(hal.InvalidArgumentError, match="command 1: .* constant bytes"):
        build_programs([good, bad], 0, (first, second))

    class BrokenSecondGpu(CountingCtx):
        def kernel_descriptor(self, executable, ordinal):
            raise hal.InvalidArgumentError("executable 'exe' was not loaded on this GPU")

    broken = BrokenSecondGpu(arena)
    with pytest.raises(hal.InvalidArgumentError, match="not loaded on this GPU"):
        build_programs([good], 0, (first, broken))
    assert first.allocations == second.allocations == broken.allocations == 0
    programs = build_programs([good], 0, (first, second))  # later work still builds
    assert [p.strategy_counts for p in programs] == [{"PREPUBLISHED": 1}] * 2
    assert first.allocations == second.allocations == 1


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["fill", "copy", "update", "dispatch", "barrier"]),
        st.integers(0, 3),
        st.booleans(),
    ),
    max_size=30,
)


@settings(max_examples=20, deadline=None)
@given(
    _OPS,
    st.sampled_from(
        [CommandBufferMode.DEFAULT, CommandBufferMode.ONE_SHOT, CommandBufferMode.UNVALIDATED]
    ),
    st.sampled_from([3, 8, 1024]),
    st.sampled_from([0, 16]),
)
def test_property_build_programs_matches_per_gpu_builds(ops, mode, cap, private):
    def make(arena):
        bufs = [Buf(arena, 256, committed=i != 3) for i in range(4)]
        bindings = (BufferRef(bufs[0], 0, 64), BufferRef.indirect(1, 0, 64))
        cmds = []
        for op, k, dynamic in ops:
            ref = BufferRef.indirect(k, 16 * k, 64) if dynamic else BufferRef(bufs[k], 16 * k, 64)
            if op == "fill":
                cmds.append((CMD_FILL, ref, bytes([k + 1]) * (1 << (k % 3))))
            elif op == "copy":
                cmds.append((CMD_COPY, ref, BufferRef(bufs[(k + 1) % 4], 0, 64)))
            elif op == "update":
                cmds.append((CMD_UPDATE, ref, bytes(range(8 * k + 1))))
            elif op == "dispatch":
                cmds.append(
                    (
                        CMD_DISPATCH,
                        "exe",
                        0,
                        DispatchConfig((k + 1, 1, 1)),
                        (k).to_bytes(4, "little"),
                        bindings if dynamic else (ref, ref),
                        0,
                    )
                )
            else:
                cmds.append((CMD_BARRIER,))
        return cmds

    shared, separate, arena1, arena2 = _both_ways(make, mode, private, block_packet_capacity=cap)
    for a, b in zip(shared, separate):
        _assert_same_program(a, b)
    assert (arena1.mem == arena2.mem).all()


def test_device_programs_carry_each_gpus_kernel_objects():
    from hal_amdgpu.host_queue import kernel_descriptor
    from hal_amdgpu.kernels import code_object_path

    dev = hal.create_device("amdgpu://?hsa=soft")
    try:
        backend = dev.backend
        exe = backend.load_executable(code_object_path("scale_and_offset", "gfx1100").read_bytes())
        qs = backend._create_host_queues()
        params = hal.BufferParams(
            type=hal.MemoryType.HOST_LOCAL | hal.MemoryType.DEVICE_VISIBLE,
            usage=hal.BufferUsage.DEFAULT,
        )
        buffers = []
        for _ in range(2):
            storage, memory_type = backend.allocator.allocate(params, 1024)
            buffers.append(
                new_buffer(
                    storage,
                    memory_type=memory_type,
                    allowed_usage=params.usage,
                    allowed_access=hal.MemoryAccess.ALL,
                    allocation_size=1024,
                )
            )
        refs = (BufferRef(buffers[0], 0, 1024), BufferRef(buffers[1], 0, 1024))
        consts = np.array([2.0, 1.0], np.float32).tobytes() + (256).to_bytes(4, "little")
        cmds = [
            (CMD_DISPATCH, exe, 0, DispatchConfig((4, 1, 1)), consts, refs, 0),
            (CMD_BARRIER,),
        ] * 3
        prog = qs.finalize_command_buffer(cmds, CommandBufferMode.DEFAULT, 0)
        assert len(prog.per_gpu) == 2
        for g, program in enumerate(prog.per_gpu):
            packets = aql.as_dispatch(program.blocks[0].replay.packets)
            expected = kernel_descriptor(exe, g, 0).kernel_object
            assert (packets["kernel_object"] == expected).all()
            assert (program.blocks[0].commands["kernel_object"][:-1] == expected).all()
        addresses = [
            aql.as_dispatch(p.blocks[0].replay.packets)["kernarg_address"] for p in prog.per_gpu
        ]
        assert not set(addresses[0].tolist()) & set(addresses[1].tolist())
    finally:
        dev.close()
