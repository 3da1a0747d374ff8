"""The block program's lowering is pinned byte for byte.

A seeded corpus of recordings (distinct and repeated dispatches of two kernel shapes,
shared and fresh configs, direct, whole-buffer, late-bound and binding-table references,
indirect workgroup counts, fills, copies, updates, barriers; every command-buffer mode;
one and two GPUs; small and large blocks) is built and every output byte is hashed: block
binaries, replay arrays, program facts, and the prepublished storage the builder wrote.
The digest was taken from the per-command lowering before the per-kernel-shape lowering
replaced it, so any change to what ``end()`` produces fails here.
"""

from __future__ import annotations

import hashlib
import random

import attrs
from hal_amdgpu.block_program import build_program, build_programs
from hal_amdgpu.kernel_descriptors import KernelDescriptor, hal_kernarg_image
from hypothesis import given, settings
from hypothesis import strategies as st

from hal_core._command_buffer import (
    CMD_BARRIER,
    CMD_COPY,
    CMD_DISPATCH,
    CMD_FILL,
    CMD_UPDATE,
    BufferRef,
    CommandBufferMode,
    DispatchConfig,
)

from .test_block_program import _REPLAY_FIELDS, Arena, Buf, Ctx, OtherGpuCtx, _assert_same_program

#: sha256 of the corpus below as lowered before the per-shape lowering (see docstring).
GOLDEN = "31edeb86173064b4e577b108f7648c68bbb20e60f595f3881f2989d7b8c4ca18"

_WIDE = KernelDescriptor(
    kernel_object=0xB0,
    kernarg_size=128,
    binding_count=3,
    constant_count=3,
    workgroup_size=(32, 2, 1),
    private_segment_size=48,
    group_segment_size=256,
    hidden_args=(
        ("hidden_block_count_x", 64, 4),
        ("hidden_block_count_y", 68, 4),
        ("hidden_block_count_z", 72, 4),
        ("hidden_group_size_x", 76, 2),
        ("hidden_group_size_y", 78, 2),
        ("hidden_group_size_z", 80, 2),
        ("hidden_grid_dims", 82, 2),
        ("hidden_dynamic_lds_size", 84, 4),
        ("hidden_heap_v1", 88, 8),
    ),
)


class _TwoKernels(Ctx):
    """Ordinal 0 is the test suite's axpy kernel, ordinal 1 a wider one (3 bindings, 3
    constants, every filled hidden argument and one left zero)."""

    def __init__(self, arena: Arena, moved: int = 0, private: int = 0) -> None:
        super().__init__(arena)
        self.wide = attrs.evolve(
            _WIDE,
            kernel_object=_WIDE.kernel_object + moved,
            private_segment_size=_WIDE.private_segment_size + private,
        )

    def kernel_descriptor(self, executable, ordinal):
        return self.wide if ordinal == 1 else self.axpy


class _TwoKernelsOtherGpu(OtherGpuCtx):
    def __init__(self, arena: Arena, private: int = 0) -> None:
        super().__init__(arena, private)
        self.wide = attrs.evolve(
            _WIDE,
            kernel_object=_WIDE.kernel_object + 0x1000,
            private_segment_size=_WIDE.private_segment_size + private,
        )

    def kernel_descriptor(self, executable, ordinal):
        return self.wide if ordinal == 1 else self.axpy


def _recording(rng: random.Random, arena: Arena) -> list[tuple]:
    bufs = [Buf(arena, 4096, committed=i != 4) for i in range(5)]
    configs = [
        DispatchConfig((1, 1, 1)),
        DispatchConfig((3, 2, 1)),
        DispatchConfig((2, 1, 1), workgroup_size=(16, 1, 1)),
        DispatchConfig((1, 1, 1), dynamic_workgroup_local_memory=512),
    ]
    shared_pairs = [
        (BufferRef(bufs[0], 0, 64), BufferRef(bufs[1], 64, 64)),
        (BufferRef.indirect(2, 0, 128), BufferRef.indirect(3, 32, 64)),
    ]

    def ref(length: int = 64) -> BufferRef:
        kind = rng.random()
        if kind < 0.55:
            return BufferRef(bufs[rng.randrange(4)], 16 * rng.randrange(200), length)
        if kind < 0.65:
            return BufferRef(bufs[4], 16 * rng.randrange(200), length)  # late-bound
        if kind < 0.72:
            return BufferRef(bufs[rng.randrange(4)])  # whole buffer
        return BufferRef.indirect(rng.randrange(6), 16 * rng.randrange(100), length)

    cmds: list[tuple] = []
    for _ in range(rng.randrange(1, 90)):
        op = rng.random()
        if op < 0.6:
            ordinal = 1 if rng.random() < 0.3 else 0
            n, constant_count = (3, 3) if ordinal else (2, 1)
            if ordinal == 0 and rng.random() < 0.3:
                refs = shared_pairs[rng.randrange(2)]
            else:
                refs = tuple(ref() for _ in range(n))
            config = (
                configs[rng.randrange(4)]
                if rng.random() < 0.7
                else DispatchConfig((rng.randrange(1, 9), rng.randrange(1, 3), 1))
            )
            if rng.random() < 0.05:
                config = DispatchConfig.indirect(BufferRef(bufs[rng.randrange(4)], 0, 12))
            constants = bytes(rng.randrange(256) for _ in range(4 * constant_count))
            if rng.random() < 0.4:
                constants = bytes(4 * constant_count)
            cmds.append(
                (
                    CMD_DISPATCH,
                    "exe" if rng.random() < 0.8 else "exe2",
                    ordinal,
                    config,
                    constants,
                    refs,
                    0,
                )
            )
        elif op < 0.72:
            cmds.append((CMD_BARRIER,))
        elif op < 0.82:
            width = rng.choice((1, 2, 4, 8))
            cmds.append((CMD_FILL, ref(), bytes(rng.randrange(256) for _ in range(width))))
        elif op < 0.92:
            source = ref()
            cmds.append((CMD_COPY, ref(), source))
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 100)))
            cmds.append((CMD_UPDATE, ref(128), data))
    return cmds


_MODES = (
    CommandBufferMode.ONE_SHOT,
    CommandBufferMode.DEFAULT,
    CommandBufferMode.UNVALIDATED,
    CommandBufferMode.DEFAULT | CommandBufferMode.UNRETAINED,
)


def _hash_program(h: "hashlib._Hash", program, labels: dict[int, str]) -> None:
    h.update(
        repr(
            (
                program.mode,
                sorted(program.strategy_counts.items()),
                program.dispatch_count,
                program.packet_count,
                program.max_block_packets,
                program.max_block_kernarg_blocks,
                sorted(program.slot_extents.items()),
                len(program.static_buffers),
                program.range_error,
                sorted({labels.get(id(r), "own") for r in program.retained}),
            )
        ).encode()
    )
    for block in program.blocks:
        h.update(block.data.tobytes())
        for field in _REPLAY_FIELDS:
            value = getattr(block.replay, field)
            h.update(value.dtype.str.encode())
            h.update(repr(value.shape).encode())
            h.update(value.tobytes())
        h.update(repr(block.replay.indirect).encode())


def corpus_digest() -> str:
    h = hashlib.sha256()
    for seed in range(120):
        rng = random.Random(seed)
        arena = Arena(1 << 22)
        cmds = _recording(rng, arena)
        mode = _MODES[seed % len(_MODES)]
        gpus = seed % 3
        first = _TwoKernels(arena)
        contexts = (first,) if gpus == 0 else (first, _TwoKernelsOtherGpu(arena, 16 * (gpus - 1)))
        caps = {"block_packet_capacity": (3, 8, 1024)[seed % 3 if seed % 7 else 2]}
        if seed % 5 == 4:
            caps["block_kernarg_capacity"] = 1024
        labels: dict[int, str] = {}
        for cmd in cmds:
            if cmd[0] == CMD_DISPATCH:
                labels[id(cmd[1])] = cmd[1]
                refs = list(cmd[5])
            else:
                refs = [r for r in cmd[1:] if isinstance(r, BufferRef)]
            for r in refs:
                if r.buffer is not None:
                    labels[id(r.buffer)] = f"buf@{r.buffer.offset}"
        programs = build_programs(cmds, mode, contexts, **caps)
        for program in programs:
            _hash_program(h, program, labels)
        h.update(arena.mem.tobytes())
    return h.hexdigest()


def test_lowering_is_byte_identical_to_the_pinned_corpus():
    assert corpus_digest() == GOLDEN


# -- distinct dispatches sharing a launch shape ----------------------------------------------

#: Hidden arguments inside the constants' bytes: the image is built whole per dispatch (the
#: hidden values land over the constants, as a lone dispatch's image has them).
_OVERLAPPING = KernelDescriptor(
    kernel_object=0xC0,
    kernarg_size=64,
    binding_count=1,
    constant_count=2,
    workgroup_size=(8, 1, 1),
    hidden_args=(("hidden_block_count_x", 12, 4), ("hidden_grid_dims", 24, 2)),
)


class _ThreeKernels(_TwoKernels):
    def kernel_descriptor(self, executable, ordinal):
        return _OVERLAPPING if ordinal == 2 else super().kernel_descriptor(executable, ordinal)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, 3),
            st.integers(0, 63),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2),
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_property_shared_shapes_lower_like_lone_dispatches(ops):
    """Each dispatch's queue kernargs equal ``hal_kernarg_image`` of that dispatch alone,
    and sharing config objects (one launch shape) or not (one shape each) changes no byte."""
    arena = Arena(1 << 20)
    ctx = _ThreeKernels(arena)
    bufs = [Buf(arena, 4096) for _ in range(4)]
    configs = [
        DispatchConfig((1, 1, 1)),
        DispatchConfig((4, 2, 1)),
        DispatchConfig((3, 1, 1), workgroup_size=(16, 2, 1)),
    ]
    shared, fresh, expected = [], [], []
    for ordinal, buf, offset, value, config_index, as_buffer in ops:
        n, constant_count = ((2, 1), (3, 3), (1, 2))[ordinal]
        refs = tuple(
            bufs[(buf + k) % 4]
            if as_buffer and k == 0
            else BufferRef(bufs[(buf + k) % 4], 16 * (offset + k), 64)
            for k in range(n)
        )
        constants = b"".join(
            ((value + k) % 2**32).to_bytes(4, "little") for k in range(constant_count)
        )
        config = configs[config_index]
        shared.append((CMD_DISPATCH, "exe", ordinal, config, constants, refs, 0))
        fresh.append((CMD_DISPATCH, "exe", ordinal, attrs.evolve(config), constants, refs, 0))
        desc = ctx.kernel_descriptor("exe", ordinal)
        wg = config.workgroup_size if any(config.workgroup_size) else desc.workgroup_size
        pointers = [
            (r.address if r.__class__ is Buf else r.buffer.address + r.offset) for r in refs
        ]
        expected.append(
            hal_kernarg_image(desc, pointers, constants, config.workgroup_count, wg).tobytes()
        )
    one = build_program(shared, CommandBufferMode.ONE_SHOT, ctx)
    each = build_program(fresh, CommandBufferMode.ONE_SHOT, ctx)
    _assert_same_program(one, each)
    assert len(one.blocks) == 1
    assert one.blocks[0].replay.kernarg_template.tobytes() == b"".join(expected)
