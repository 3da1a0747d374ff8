"""The soft agent's PM4 command processor: the subset the host queues emit, nothing else.

A PM4-IB vendor packet's ``ib_jump_cmd`` must be a type-3 ``INDIRECT_BUFFER`` (4 dwords:
header, address lo/hi, ``dword count | valid bit 23``); the indirect buffer is then
decoded packet by packet from its real encoding (``hal_amdgpu.pm4_packets``):

* ``WAIT_REG_MEM64`` with ``mem_space`` memory, operation 0 (wait) and engine ME: polls
  the 64-bit little-endian word until ``(word & mask) <function> reference`` (unsigned);
  ``function`` 0 (always) to 6 (greater).
* ``ACQUIRE_MEM``: validated for size, then nothing to do (soft memory is coherent).
* ``NOP``: skipped.

One exception: a jump whose first dword is zero carries no PM4 packet at all (the
profiling-library stand-in the tests load builds such opaque counter packets); it
completes like a barrier, with no effect on memory, so counter values seen through the
soft agent are whatever that library reports, never measured.

Anything else (another packet type or opcode, a count running past the buffer, an
address outside every allocation, an unaligned poll address, an invalid jump) is a fault:
the queue stops with ``ERROR_INVALID_PACKET_FORMAT`` (or the memory-aperture error for a
bad address), as a hardware command processor reports an illegal packet.

A wait on a signal record wakes on the signal store (every store notifies the system
condition variable); any other word is re-read each poll interval, as the command
processor does, because plain memory writes notify nobody.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from ..aql_packets import PM4_INDIRECT_BUFFER
from ..hsa_enums import HsaStatus
from ..pm4_packets import WAIT_MEM_SPACE_MEMORY, Pm4Opcode, decode_type3
from .memory import SoftMemory, SoftMemoryFault

__all__ = ["run_pm4_ib"]

_IB_VALID_BIT = 1 << 23
_ACQUIRE_BODY = 7
_WAIT_BODY = 8
#: Seconds between re-reads of a polled word that is not a signal record.
_POLL_SECONDS = 0.0005
_U64 = (1 << 64) - 1

_COMPARE: tuple[Callable[[int, int], bool], ...] = (
    lambda v, r: True,
    lambda v, r: v < r,
    lambda v, r: v <= r,
    lambda v, r: v == r,
    lambda v, r: v != r,
    lambda v, r: v >= r,
    lambda v, r: v > r,
)


def run_pm4_ib(
    jump: np.ndarray,
    memory: SoftMemory,
    agent: int,
    cond: threading.Condition,
    is_signal: Callable[[int], bool],
    stopped: Callable[[], bool],
) -> int | None:
    """Execute the indirect buffer ``jump`` (the packet's four ``ib_jump_cmd`` words)
    points at: an ``HsaStatus``, or None when the queue stopped during a wait."""
    first = int(jump[0])
    if first == 0:
        return HsaStatus.SUCCESS  # an opaque library packet: see the module docstring
    header = decode_type3(first)
    if header != (PM4_INDIRECT_BUFFER, 3) or not int(jump[3]) & _IB_VALID_BIT:
        return HsaStatus.ERROR_INVALID_PACKET_FORMAT
    address = int(jump[1]) | (int(jump[2]) << 32)
    count = int(jump[3]) & 0xFFFFF
    if address & 3 or count == 0:
        return HsaStatus.ERROR_INVALID_PACKET_FORMAT
    try:
        ib = memory.view(address, count * 4, agent).view(np.uint32)
    except SoftMemoryFault:
        return HsaStatus.AMD_ERROR_MEMORY_APERTURE_VIOLATION
    at = 0
    while at < count:
        decoded = decode_type3(int(ib[at]))
        if decoded is None:
            return HsaStatus.ERROR_INVALID_PACKET_FORMAT
        opcode, body = decoded
        if at + 1 + body > count:
            return HsaStatus.ERROR_INVALID_PACKET_FORMAT
        words = ib[at + 1 : at + 1 + body]
        if opcode == Pm4Opcode.WAIT_REG_MEM64:
            if body != _WAIT_BODY:
                return HsaStatus.ERROR_INVALID_PACKET_FORMAT
            status = _wait_reg_mem64(words, memory, agent, cond, is_signal, stopped)
            if status != HsaStatus.SUCCESS:
                return status
        elif opcode == Pm4Opcode.ACQUIRE_MEM:
            if body != _ACQUIRE_BODY:
                return HsaStatus.ERROR_INVALID_PACKET_FORMAT
        elif opcode != Pm4Opcode.NOP:
            return HsaStatus.ERROR_INVALID_PACKET_FORMAT
        at += 1 + body
    return HsaStatus.SUCCESS


def _wait_reg_mem64(
    words: np.ndarray,
    memory: SoftMemory,
    agent: int,
    cond: threading.Condition,
    is_signal: Callable[[int], bool],
    stopped: Callable[[], bool],
) -> int | None:
    control = int(words[0])
    function = control & 7
    mem_space = (control >> 4) & 3
    operation = (control >> 6) & 3
    engine = (control >> 8) & 3
    if function > 6 or mem_space != WAIT_MEM_SPACE_MEMORY or operation != 0 or engine != 0:
        return HsaStatus.ERROR_INVALID_PACKET_FORMAT
    address = int(words[1]) | (int(words[2]) << 32)
    if address & 7:
        return HsaStatus.ERROR_INVALID_PACKET_FORMAT
    reference = int(words[3]) | (int(words[4]) << 32)
    mask = int(words[5]) | (int(words[6]) << 32)
    try:
        word = memory.view(address, 8, agent).view(np.uint64)
    except SoftMemoryFault:
        return HsaStatus.AMD_ERROR_MEMORY_APERTURE_VIOLATION
    compare = _COMPARE[function]
    # A signal record's value word (byte 8) is stored under the condition lock with a
    # notify; other memory is polled at the packet's pace.
    timeout = None if is_signal(address - 8) else _POLL_SECONDS
    with cond:
        while not compare(int(word[0]) & mask & _U64, reference):
            if stopped():
                return None
            cond.wait(timeout)
    return HsaStatus.SUCCESS
