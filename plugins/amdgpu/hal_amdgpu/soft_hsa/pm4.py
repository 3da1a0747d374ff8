"""The soft agent's PM4 command processor: the subset the host queues emit, nothing else.

A PM4-IB vendor packet's ``ib_jump_cmd`` must be a type-3 ``INDIRECT_BUFFER`` (4 dwords:
header, address lo/hi, ``dword count | valid bit 23``); the indirect buffer is then
decoded packet by packet from its real encoding (``hal_amdgpu.pm4_packets``):

* ``WAIT_REG_MEM64`` with ``mem_space`` memory, operation 0 (wait) and engine ME: polls
  the 64-bit little-endian word until ``(word & mask) <function> reference`` (unsigned);
  ``function`` 0 (always) to 6 (greater).
* ``ACQUIRE_MEM``: validated for size, then nothing to do (soft memory is coherent).
* ``COPY_DATA`` of the GPU clock (source select 9, 64-bit count, destination memory or
  TC_L2, any cache-policy bits): writes the agent's clock (``time.monotonic_ns``, the
  clock ``hsa_system_get_info(TIMESTAMP)`` reads and profiling signals carry) as a
  little-endian u64 to the 8-byte-aligned destination.
* ``NOP``: skipped.

Anything else (another packet type or opcode, another ``COPY_DATA`` source or
destination, a count running past the buffer, an address outside every allocation, an
unaligned poll or destination address, an invalid jump, a jump of all zeros) is a fault:
the queue stops with ``ERROR_INVALID_PACKET_FORMAT`` (or the memory-aperture error for a
bad address), as a hardware command processor reports an illegal packet.

A wait on a signal record wakes on the signal store (every store notifies the system
condition variable); any other word is re-read each poll interval, as the command
processor does, because plain memory writes notify nobody.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from ..aql_packets import PM4_INDIRECT_BUFFER
from ..hsa_enums import HsaStatus
from ..pm4_packets import (
    COPY_COUNT_64,
    COPY_DST_MEMORY,
    COPY_DST_TC_L2,
    COPY_SRC_GPU_CLOCK,
    WAIT_MEM_SPACE_MEMORY,
    Pm4Opcode,
    decode_type3,
)
from .memory import SoftMemory, SoftMemoryFault

__all__ = ["run_pm4_ib"]

_IB_VALID_BIT = 1 << 23
_ACQUIRE_BODY = 7
_WAIT_BODY = 8
_COPY_BODY = 5
#: COPY_DATA fields the clock read checks: source select, destination select, count size.
_COPY_SRC_MASK = 0xF
_COPY_DST_MASK = 0xF << 8
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
    header = decode_type3(int(jump[0]))
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
        status = _run_packet(opcode, body, words, memory, agent, cond, is_signal, stopped)
        if status != HsaStatus.SUCCESS:
            return status
        at += 1 + body
    return HsaStatus.SUCCESS


def _run_packet(
    opcode: int,
    body: int,
    words: np.ndarray,
    memory: SoftMemory,
    agent: int,
    cond: threading.Condition,
    is_signal: Callable[[int], bool],
    stopped: Callable[[], bool],
) -> int | None:
    """One decoded packet of the subset the driver emits; anything else (or a body of
    another length) is an invalid packet."""
    if opcode == Pm4Opcode.WAIT_REG_MEM64:
        if body != _WAIT_BODY:
            return HsaStatus.ERROR_INVALID_PACKET_FORMAT
        return _wait_reg_mem64(words, memory, agent, cond, is_signal, stopped)
    if opcode == Pm4Opcode.ACQUIRE_MEM:
        return HsaStatus.SUCCESS if body == _ACQUIRE_BODY else HsaStatus.ERROR_INVALID_PACKET_FORMAT
    if opcode == Pm4Opcode.COPY_DATA:
        if body != _COPY_BODY:
            return HsaStatus.ERROR_INVALID_PACKET_FORMAT
        return _copy_clock(words, memory, agent)
    return HsaStatus.SUCCESS if opcode == Pm4Opcode.NOP else HsaStatus.ERROR_INVALID_PACKET_FORMAT


def _copy_clock(words: np.ndarray, memory: SoftMemory, agent: int) -> int:
    """``COPY_DATA`` of the 64-bit GPU clock into memory; the only form the driver emits."""
    control = int(words[0])
    if (
        control & _COPY_SRC_MASK != COPY_SRC_GPU_CLOCK
        or control & _COPY_DST_MASK not in (COPY_DST_MEMORY, COPY_DST_TC_L2)
        or not control & COPY_COUNT_64
    ):
        return HsaStatus.ERROR_INVALID_PACKET_FORMAT
    address = int(words[3]) | (int(words[4]) << 32)
    if address & 7:
        return HsaStatus.ERROR_INVALID_PACKET_FORMAT
    try:
        word = memory.view(address, 8, agent).view(np.uint64)
    except SoftMemoryFault:
        return HsaStatus.AMD_ERROR_MEMORY_APERTURE_VIOLATION
    word[0] = time.monotonic_ns()
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
