"""Block program + block processor over host memory (IREE's aql_block_processor_test idea):
a fake arena stands in for device memory and a tiny interpreter plays the packet processor,
so recorded fills, copies, updates and dispatches are checked end to end."""

from __future__ import annotations

import numpy as np
import pytest
from hal_amdgpu import aql_packets as aql
from hal_amdgpu.aql_ring import READ_INDEX_WORD, AqlRing
from hal_amdgpu.block_processor import BlockProcessor
from hal_amdgpu.block_program import (
    BINDING_SOURCE_DTYPE,
    BLOCK_MAGIC,
    BuiltinKernels,
    CommandFlags,
    KernelDescriptor,
    Opcode,
    build_program,
)
from hal_amdgpu.kernarg_ring import KernargRing
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

BASE = 0x100000
FILL = {1: 0xF1, 2: 0xF2, 4: 0xF4, 8: 0xF8}
COPY = {1: 0xC1, 4: 0xC4, 16: 0xC16}
AXPY = 0xA0


def _desc(obj, nb, nc, size=None, hidden=()):
    return KernelDescriptor(kernel_object=obj, kernarg_size=size or 8 * nb + 8 * nc,
                            binding_count=nb, constant_count=nc, workgroup_size=(64, 1, 1),
                            hidden_args=hidden)


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
            copy={w: _desc(COPY[w], 2, 2) for w in COPY})
        self.axpy = _desc(AXPY, 2, 1, size=64, hidden=(("hidden_block_count_x", 24, 4),
                                                       ("hidden_grid_dims", 32, 2)))

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
            headers = self.proc.process_block(block, first, start, binding_ptrs, static_ptrs,
                                              signal, aql.FenceScope.SYSTEM)
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
    ref = (lambda buf, slot, off=0, n=256: BufferRef.indirect(slot, off, n)) if dynamic else (
        lambda buf, slot, off=0, n=256: BufferRef(buf, off, n))
    cmds = [
        (CMD_FILL, ref(a, 0), (7).to_bytes(4, "little")),
        (CMD_BARRIER,),
        (CMD_DISPATCH, "exe", 0, DispatchConfig((1, 1, 1)), (5).to_bytes(4, "little"),
         (ref(a, 0), ref(b, 1)), 0),
        (CMD_BARRIER,),
        (CMD_COPY, ref(b, 1, 0, 128), ref(c, 2, 128, 128)),
        (CMD_UPDATE, bytes(range(16)), ref(c, 2, 0, 16)),
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
    assert list(cmds_rec["opcode"]) == [Opcode.FILL, Opcode.DISPATCH, Opcode.COPY,
                                       Opcode.UPDATE, Opcode.RETURN]
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
        Opcode.RETURN]
    assert prog.blocks[0].header["terminator_target_block_ordinal"] == 1
    m.submit(prog)
    assert list(arena.view(buf.address, 300, np.uint32)) == list(range(300))


def test_header_overlay_final_release_and_first_wait(env):
    arena, ctx, m = env
    bufs, cmds = _record(arena)
    prog = build_program(cmds, CommandBufferMode.DEFAULT, ctx)
    blk = prog.blocks[0]
    first = m.ring.try_reserve(blk.replay.packet_count)
    headers = m.proc.process_block(blk, first, 0, None, None, 0x99, aql.FenceScope.SYSTEM,
                                   acquire_scope=aql.FenceScope.SYSTEM, first_has_wait=True)
    t0, b0, acq0, _ = aql.decode_header(int(headers[0]))
    assert b0 and acq0 == aql.FenceScope.SYSTEM
    t, b, _, rel = aql.decode_header(int(headers[-1]))
    assert b and rel == aql.FenceScope.SYSTEM
    assert (blk.replay.header_words[-1] != headers[-1])  # template untouched
    assert int(aql.as_dispatch(m.rows)[(first + 3) & m.ring.mask]["completion_signal"]) == 0x99


def test_unimplemented_and_bad_dispatches(env):
    arena, ctx, _ = env
    a = Buf(arena, 256)
    bad_flags = [(CMD_DISPATCH, "exe", 0, DispatchConfig((1, 1, 1)), b"\0" * 4,
                  (BufferRef(a), BufferRef(a)), int(DispatchFlags.CUSTOM_DIRECT_ARGUMENTS))]
    with pytest.raises(hal.UnimplementedError, match="custom or indirect arguments"):
        build_program(bad_flags, 0, ctx)
    wrong_bindings = [(CMD_DISPATCH, "exe", 0, DispatchConfig((1, 1, 1)), b"\0" * 4,
                       (BufferRef(a),), 0)]
    with pytest.raises(hal.InvalidArgumentError, match="got 1 bindings, the kernel takes 2"):
        build_program(wrong_bindings, 0, ctx)
    wrong_consts = [(CMD_DISPATCH, "exe", 0, DispatchConfig((1, 1, 1)), b"",
                     (BufferRef(a), BufferRef(a)), 0)]
    with pytest.raises(hal.InvalidArgumentError, match="constant bytes"):
        build_program(wrong_consts, 0, ctx)
    huge = [(CMD_DISPATCH, "exe", 0, DispatchConfig((1 << 30, 1, 1)), b"\0" * 4,
             (BufferRef(a), BufferRef(a)), 0)]
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
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 255), st.booleans()),
                min_size=1, max_size=40), st.sampled_from([4, 8, 16]))
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
