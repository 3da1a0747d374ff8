"""The kernarg ring: a per-queue bump allocator of 64-byte blocks that never wraps an
allocation across its end.

Positions (``write_position``, ``read_position``) are unwrapped block counters; the block
of position ``p`` is ``p & (capacity-1)``. An allocation of ``n`` blocks that would cross
the end skips the tail fragment and starts at block 0; the skipped blocks count as in
flight (they lie between the read and write positions) until the allocation that skipped
them retires and the owner calls ``reclaim`` with a position at or past its end (when
nothing at all is in flight the skip is free at once).
``can_allocate`` models the same skip, so an admission check followed by ``allocate``
under the same lock always agree.

Memory: ``memory`` is the ring's bytes as a uint8 numpy array (host memory for tests, an
HSA kernarg-pool allocation on a device) and ``device_address`` the address the packet
processor sees for byte 0.

Thread-safety: not thread-safe. ``allocate`` runs under the host queue's submission lock,
``reclaim`` under its completion drain; the host queue serialises the two.
"""

from __future__ import annotations

import numpy as np

from hal_core import InvalidArgumentError, OutOfRangeError

__all__ = ["KernargRing", "KERNARG_BLOCK_SIZE", "blocks_for"]

KERNARG_BLOCK_SIZE = 64


def blocks_for(byte_length: int) -> int:
    """64-byte blocks needed for ``byte_length`` bytes of kernargs."""
    return (byte_length + KERNARG_BLOCK_SIZE - 1) // KERNARG_BLOCK_SIZE


class KernargRing:
    """Bump allocator of 64-byte kernarg blocks (see module docstring)."""

    __slots__ = (
        "memory",
        "blocks",
        "device_address",
        "capacity",
        "mask",
        "write_position",
        "read_position",
    )

    def __init__(self, memory: np.ndarray, device_address: int) -> None:
        if memory.dtype != np.uint8 or memory.ndim != 1:
            raise InvalidArgumentError(
                f"kernarg ring memory must be a 1-D uint8 array, got {memory.shape} {memory.dtype}"
            )
        capacity = memory.shape[0] // KERNARG_BLOCK_SIZE
        if capacity <= 0 or capacity & (capacity - 1) or memory.shape[0] % KERNARG_BLOCK_SIZE:
            raise InvalidArgumentError(
                f"kernarg ring size must be a power-of-two number of 64-byte blocks, got "
                f"{memory.shape[0]} bytes; pass e.g. {KERNARG_BLOCK_SIZE << 10} bytes"
            )
        if device_address % KERNARG_BLOCK_SIZE:
            raise InvalidArgumentError(
                f"kernarg ring device address {device_address:#x} is not 64-byte aligned"
            )
        self.memory = memory
        self.blocks = memory.reshape(capacity, KERNARG_BLOCK_SIZE)
        self.device_address = device_address
        self.capacity = capacity
        self.mask = capacity - 1
        self.write_position = 0
        self.read_position = 0

    def check_fits(self, block_count: int) -> None:
        """OUT_OF_RANGE when ``block_count`` blocks can never be allocated."""
        if block_count > self.capacity:
            raise OutOfRangeError(
                f"a submission needs {block_count * KERNARG_BLOCK_SIZE} bytes of kernargs "
                f"but the kernarg ring holds {self.capacity * KERNARG_BLOCK_SIZE}; create "
                "the device with a larger kernarg ring (device URI parameter kernarg_capacity=N)"
            )

    def _start_for(self, block_count: int) -> int:
        write = self.write_position
        offset = write & self.mask
        if offset + block_count > self.capacity:
            return write + (self.capacity - offset)  # skip the tail fragment
        return write

    def can_allocate(self, block_count: int) -> bool:
        """Whether ``allocate(block_count)`` would succeed now (models the tail skip)."""
        if block_count == 0:
            return True
        start = self._start_for(block_count)
        return start + block_count - self._effective_read(start) <= self.capacity

    def allocate(self, block_count: int) -> int:
        """Allocate ``block_count`` contiguous blocks; returns the unwrapped start position
        (``end = start + block_count`` is what the owner later reclaims to). -1 when the
        ring is too full right now (no state change)."""
        if block_count == 0:
            return self.write_position
        start = self._start_for(block_count)
        read = self._effective_read(start)
        if start + block_count - read > self.capacity:
            return -1
        self.read_position = read
        self.write_position = start + block_count
        return start

    def _effective_read(self, start: int) -> int:
        # With nothing in flight the skipped tail belongs to nobody, so it is free at once;
        # without this an allocation of the whole ring from a non-zero offset could never
        # be admitted (a structural request would park forever).
        if self.read_position == self.write_position:
            return start
        return self.read_position

    def view(self, start: int, block_count: int) -> np.ndarray:
        """The bytes of an allocation (contiguous: allocations never wrap)."""
        offset = (start & self.mask) * KERNARG_BLOCK_SIZE
        return self.memory[offset : offset + block_count * KERNARG_BLOCK_SIZE]

    def address(self, position: int) -> int:
        """Device address of the block at ``position``."""
        return self.device_address + (position & self.mask) * KERNARG_BLOCK_SIZE

    def reclaim(self, position: int) -> None:
        """Release everything before ``position`` (the end position recorded by the
        newest retired submission). Positions at or before the current read position are
        ignored, so reclaiming the same epoch twice is harmless."""
        if position > self.write_position:
            raise InvalidArgumentError(
                f"kernarg reclaim to {position} is past the write position "
                f"{self.write_position}; reclaim only positions returned by allocate"
            )
        if position > self.read_position:
            self.read_position = position

    @property
    def in_flight(self) -> int:
        return self.write_position - self.read_position
