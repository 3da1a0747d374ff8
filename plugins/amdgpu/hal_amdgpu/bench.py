"""``hal bench`` benchmarks of the amdgpu AQL replay path (host cost only).

``aql.replay.{prepublished,patched,dynamic}``: host-side cost per dispatch of replaying a
reusable 512-dispatch command buffer into an AQL ring: reserve, packet bodies, kernargs,
header words, one doorbell store. Execution is excluded: the rings live in host memory and
the packet processor's read index is advanced between repeats (untimed), exactly as if a
GPU had consumed the packets. The kernel is a HAL-ABI kernel with 2 bindings, 1 constant and
the 256-byte implicit-argument block (320 bytes of kernargs per dispatch).

``aql.finalize.{repeated,distinct}``: host cost per dispatch of ``end()`` (building the
block programs of a one-shot 512 dispatch+barrier chain for two GPUs): with the dispatches
repeating two bindings tuples (the ``cb.record.*`` shape) and with every dispatch distinct.

``aql.replay.naive_loop`` is the peer: the same prepublished replay written the way a direct
port would, one Python loop iteration per packet setting each field.
"""

from __future__ import annotations

from typing import Any, cast

import attrs
import numpy as np

from hal_core import Buffer, BufferRef, CommandBufferMode, DispatchConfig
from hal_core.backend import CMD_BARRIER, CMD_DISPATCH
from hal_core.bench import BenchContext, benchmark

from .aql_packets import (
    DISPATCH_SETUP_3D,
    FenceScope,
    PacketType,
    as_dispatch,
    header_setup_word,
    make_header,
    new_staging,
)
from .aql_ring import READ_INDEX_WORD, AqlRing
from .block_processor import BlockProcessor
from .block_program import build_program, build_programs
from .kernarg_ring import KernargRing
from .kernel_descriptors import BuiltinKernels, KernelDescriptor

DISPATCHES = 512
_BASE = 0x7F0000000000


class _Buffer:
    """A committed host 'buffer' with a fixed device address (the program only reads
    addresses from it)."""

    def __init__(self, address: int, length: int) -> None:
        self.address = address
        self.byte_length = length
        self.byte_offset = 0
        self.is_committed = True


def _stand_in(address: int, length: int) -> Buffer:
    """A ``_Buffer``, typed as the ``Buffer`` it stands in for in ``BufferRef``s."""
    return cast(Buffer, _Buffer(address, length))


class _Context:
    def __init__(self) -> None:
        self.kernel = KernelDescriptor(
            kernel_object=0x1000,
            kernarg_size=16 + 8 + 256,
            binding_count=2,
            constant_count=1,
            workgroup_size=(64, 1, 1),
            hidden_args=(
                ("hidden_block_count_x", 24, 4),
                ("hidden_group_size_x", 36, 2),
                ("hidden_grid_dims", 88, 2),
            ),
        )
        self.builtins = BuiltinKernels(fill={}, copy={})
        self.storage: list[np.ndarray] = []

    def kernel_descriptor(self, executable: Any, ordinal: int) -> KernelDescriptor:
        return self.kernel

    def buffer_address(self, buffer: Any) -> int:
        return buffer.address

    def allocate_prepublished(self, n: int) -> tuple[np.ndarray, int, Any]:
        mem = np.zeros(n, np.uint8)
        self.storage.append(mem)
        return mem, int(mem.ctypes.data), mem


class _Rig:
    """A program plus host-memory rings to replay it into."""

    def __init__(self, kind: str) -> None:
        ctx = _Context()
        a, b = _stand_in(_BASE, 1 << 20), _stand_in(_BASE + (1 << 20), 1 << 20)
        commands = []
        for i in range(DISPATCHES):
            if kind == "prepublished":
                refs = (BufferRef(a, 64 * i, 64), BufferRef(b, 64 * i, 64))
            elif kind == "patched":
                refs = (BufferRef.indirect(0, 64 * i, 64), BufferRef(b, 64 * i, 64))
            else:
                refs = (BufferRef.indirect(0, 64 * i, 64), BufferRef.indirect(1, 64 * i, 64))
            commands.append(
                (
                    CMD_DISPATCH,
                    None,
                    0,
                    DispatchConfig((1, 1, 1)),
                    (i).to_bytes(4, "little"),
                    refs,
                    0,
                )
            )
        self.program = build_program(commands, CommandBufferMode.DEFAULT, ctx)
        self.context = ctx
        self.rows = new_staging(1024)
        self.indices = np.zeros(32, np.uint64)
        self.ring = AqlRing(self.rows, self.indices, lambda _id: None)
        raw = np.zeros((1 << 20) + 64, np.uint8)
        skip = -int(raw.ctypes.data) % 64  # 64-byte aligned, as HSA pool memory is
        mem = raw[skip : skip + (1 << 20)]
        self.kernargs = KernargRing(mem, int(mem.ctypes.data))
        self.processor = BlockProcessor(self.ring, self.kernargs)
        self.binding_ptrs = np.array([_BASE + (2 << 20), _BASE + (3 << 20)], np.uint64)

    def replay(self) -> None:
        """Everything a host queue does per block of a replay, minus locking."""
        ring, kernargs = self.ring, self.kernargs
        for block in self.program.blocks:
            rp = block.replay
            first = ring.try_reserve(rp.packet_count)
            start = kernargs.allocate(rp.kernarg_block_count)
            headers = self.processor.process_block(
                block, first, start, self.binding_ptrs, None, 0x5151, FenceScope.SYSTEM
            )
            ring.commit_headers(first, headers)
            ring.ring_doorbell(first + rp.packet_count - 1)

    def consume(self) -> None:
        """Play the packet processor (untimed): everything published is consumed."""
        self.indices[READ_INDEX_WORD] = self.indices[7]
        self.ring.words[:] = 1
        self.kernargs.reclaim(self.kernargs.write_position)


def _measure(ctx: BenchContext, rig: _Rig, fn: Any) -> float:
    def once() -> float:
        rig.consume()
        t0 = ctx.now()
        fn()
        return (ctx.now() - t0) / DISPATCHES * 1e6

    return ctx.median(once, max(ctx.repeats, 15))


@benchmark("aql.replay.prepublished", "us/dispatch", needs_device=False)
def replay_prepublished(ctx: BenchContext) -> float:
    """Replay 512 static reusable dispatches (kernargs prepublished at end()); us each."""
    rig = _Rig("prepublished")
    assert rig.program.strategy_counts == {"PREPUBLISHED": DISPATCHES}
    return _measure(ctx, rig, rig.replay)


@benchmark("aql.replay.patched", "us/dispatch", needs_device=False)
def replay_patched(ctx: BenchContext) -> float:
    """Replay 512 dispatches with one dynamic and one static binding (template + patch)."""
    rig = _Rig("patched")
    return _measure(ctx, rig, rig.replay)


@benchmark("aql.replay.dynamic", "us/dispatch", needs_device=False)
def replay_dynamic(ctx: BenchContext) -> float:
    """Replay 512 dispatches whose bindings all come from the binding table."""
    rig = _Rig("dynamic")
    return _measure(ctx, rig, rig.replay)


@benchmark("aql.replay.naive_loop", "us/dispatch", needs_device=False)
def replay_naive_loop(ctx: BenchContext) -> float:
    """Peer: the prepublished replay as a per-packet Python loop setting each field."""
    rig = _Rig("prepublished")
    rp = rig.program.blocks[0].replay
    template = as_dispatch(rp.packets)
    ring_packets = as_dispatch(rig.rows)
    words = rig.ring.words
    mask = rig.ring.mask
    fields = [
        (f, template[f])
        for f in (
            "workgroup_size",
            "grid_size",
            "private_segment_size",
            "group_segment_size",
            "kernel_object",
            "kernarg_address",
        )
    ]
    word = header_setup_word(
        make_header(PacketType.KERNEL_DISPATCH, True, FenceScope.AGENT, FenceScope.AGENT),
        DISPATCH_SETUP_3D,
    )
    n = rp.packet_count

    def naive() -> None:
        first = rig.ring.try_reserve(n)
        for i in range(n):
            slot = ring_packets[(first + i) & mask]
            for name, column in fields:
                slot[name] = column[i]
            slot["completion_signal"] = 0x5151 if i == n - 1 else 0
        for i in range(n):
            words[(first + i) & mask] = word
        rig.ring.ring_doorbell(first + n - 1)

    return _measure(ctx, rig, naive)


class _SecondGpu(_Context):
    """A second GPU: the same kernel loaded at another kernel object."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = attrs.evolve(self.kernel, kernel_object=0x2000)


def _finalize(ctx: BenchContext, repeated: bool) -> float:
    contexts = (_Context(), _SecondGpu())
    a, b = _stand_in(_BASE, 1 << 20), _stand_in(_BASE + (1 << 20), 1 << 20)
    config = DispatchConfig((1, 1, 1))
    shared = (
        (BufferRef(a, 0, 64), BufferRef(b, 0, 64)),
        (BufferRef(b, 0, 64), BufferRef(a, 0, 64)),
    )
    commands: list[tuple] = []
    for i in range(DISPATCHES):
        if repeated:
            refs, constants = shared[i & 1], b"\4\0\0\0"
        else:
            refs = (BufferRef(a, 64 * i, 64), BufferRef(b, 64 * i, 64))
            constants = (i).to_bytes(4, "little")
        commands.append((CMD_DISPATCH, None, 0, config, constants, refs, 0))
        commands.append((CMD_BARRIER,))

    def once() -> float:
        t0 = ctx.now()
        build_programs(commands, CommandBufferMode.ONE_SHOT, contexts)
        return (ctx.now() - t0) / DISPATCHES * 1e6

    return ctx.median(once, max(ctx.repeats, 15))


@benchmark("aql.finalize.repeated", "us/dispatch", needs_device=False)
def finalize_repeated(ctx: BenchContext) -> float:
    """end() of a one-shot 512 dispatch+barrier chain over two bindings tuples (the
    cb.record shape), lowered for two GPUs; host cost per dispatch."""
    return _finalize(ctx, True)


@benchmark("aql.finalize.distinct", "us/dispatch", needs_device=False)
def finalize_distinct(ctx: BenchContext) -> float:
    """The same with every dispatch distinct (own offsets and constants): no record is
    shared, every one is lowered."""
    return _finalize(ctx, False)
