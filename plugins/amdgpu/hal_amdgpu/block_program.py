"""Command buffers as an immutable block program, built once at ``end()``.

A recording (``hal_core`` command tuples) becomes a chain of *blocks*. Each block is one
binary record (a uint8 array) laid out as:

``[64-byte BLOCK_HEADER][COMMAND records, 96 bytes each][rodata][BINDING_SOURCE records]``

The header states the facts recorded once (packet count, kernarg bytes, dispatch and
indirect counts, the terminator); command records carry the opcode, flags (barrier,
acquire/release scope, queue-kernarg use), the kernarg strategy and the dispatch geometry;
binding-source records say where each binding pointer comes from (a baked static pointer,
a binding-table slot, or a static buffer resolved at submit); rodata holds kernarg
templates and UPDATE payloads. Every block ends in BRANCH (to the next block) or RETURN.

From those records the builder also derives, once, the *replay arrays* the block
processor uses (``BlockReplay``): a packet-body template (rows of 64 bytes with INVALID
first words), the header words, which packets take queue kernargs and where, the kernarg
template, and the patch vectors (qword index, slot, offset) for dynamic pointers. Replay is
then a handful of vectorised numpy operations per block; no Python loop over packets.

Kernarg strategies per dispatch (and per blit command), chosen at record time:

* PREPUBLISHED: reusable command buffer, no dynamic or late-bound pointers. Kernargs are
  written once at ``end()`` into host-coherent, device-visible storage owned by the program;
  the packet's ``kernarg_address`` is baked into the template and replay writes no kernargs.
* PATCHED_TEMPLATE: some pointers come from the binding table: replay copies the template
  into the queue's kernarg ring and patches those qwords.
* DYNAMIC_BINDINGS: every binding comes from the binding table (same mechanism, recorded
  separately because it is the all-dynamic case).
* HAL: one-shot command buffers (not worth prepublishing): template copy into queue
  kernargs, static pointers baked, any dynamic ones patched.

Dynamic references keep their binding-table slot for the program's lifetime (the patch
vectors index ``binding_ptrs[slot]`` directly).

How ``end()`` stays cheap (``build_programs``): the recording is read once into *facts*:
the distinct lowered commands plus, per packet, which one it is, its command index and its
barrier bit. Dispatches naming the same executable, function, config object and flags
share a *launch shape*, worked out once: the kernel descriptor and its checks, geometry,
segment sizes, the kernarg image with the hidden arguments filled, and the packed packet
and command-record bytes. A distinct dispatch then costs its own pointers and constants
(one struct pack before the shape's image tail) and a reference check per binding; one
recorded again with the same constants and bindings tuple objects (a recording keeps
them alive, so identity is stable) reuses the first one's record, a dict lookup. Lowering
then works on whole-program numpy arrays (records, packet rows and
kernarg templates gathered from per-record tables, block-relative fields from cumulative
sums) and blocks are slices of them. For a multi-GPU device the facts and the lowering are
shared: another GPU whose kernel descriptors differ only in kernel objects gets copies with
the kernel objects patched and its own prepublished storage; one that differs further is
lowered from its own facts. The output is byte-for-byte what a per-command, per-GPU
lowering produces.

Thread-safety: a ``BlockProgram`` is immutable after ``build_program(s)``; any number of
queues may replay it concurrently (blocks of one program may view one shared array).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .block_format import DEFAULT_BLOCK_PACKET_CAPACITY, BlockProgram
from .block_lowering import _lower_program, _retarget
from .block_recording import ProgramContext, _Facts, _kernel_objects_if_compatible, _record_facts

__all__ = ["build_program", "build_programs"]


def build_program(
    commands: Sequence[tuple],
    mode: int,
    context: ProgramContext,
    *,
    block_packet_capacity: int = DEFAULT_BLOCK_PACKET_CAPACITY,
    block_kernarg_capacity: int = 1 << 62,
) -> BlockProgram:
    """Lower a recording to a block program. INVALID_ARGUMENT for shapes the AQL path
    cannot express (naming the command); UNIMPLEMENTED for dispatch forms no backend
    implements yet (indirect or custom arguments)."""
    return build_programs(
        commands,
        mode,
        (context,),
        block_packet_capacity=block_packet_capacity,
        block_kernarg_capacity=block_kernarg_capacity,
    )[0]


def build_programs(
    commands: Sequence[tuple],
    mode: int,
    contexts: Sequence[ProgramContext],
    *,
    block_packet_capacity: int = DEFAULT_BLOCK_PACKET_CAPACITY,
    block_kernarg_capacity: int = 1 << 62,
) -> tuple[BlockProgram, ...]:
    """One block program per context (one per GPU of a device), identical to calling
    ``build_program`` for each, but the recording is read once: the GPU-independent facts
    are shared and only kernel objects (and the prepublished storage) differ per GPU.
    ``buffer_address`` must not depend on the context (HSA has one address space); a
    context whose kernel descriptors differ beyond the kernel object is lowered from its
    own facts. Errors as ``build_program``, raised before any storage is allocated."""
    facts = _record_facts(commands, mode, contexts[0])
    # Every error is raised here, before any prepublished storage is allocated.
    plans: list[tuple[Any, Any]] = []
    for context in contexts[1:]:
        objects = _kernel_objects_if_compatible(facts, contexts[0], context)
        plans.append(
            (context, objects if objects is not None else _record_facts(commands, mode, context))
        )
    first, lowered = _lower_program(
        facts, contexts[0], block_packet_capacity, block_kernarg_capacity
    )
    programs = [first]
    for context, plan in plans:
        if plan.__class__ is _Facts:
            programs.append(
                _lower_program(plan, context, block_packet_capacity, block_kernarg_capacity)[0]
            )
        else:
            programs.append(_retarget(first, lowered, facts, np.asarray(plan, np.uint64), context))
    return tuple(programs)
