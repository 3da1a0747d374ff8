"""Host memory with real addresses for the software HSA agent.

Every allocation (pool memory, signal records, queue descriptors and rings, loaded code
objects) is a numpy byte array kept alive here, keyed by its address, so that the driver
can write packets and kernargs through raw pointers exactly as on hardware. Lookups map an
address range back to its allocation (bounds and agent-access checks for kernel twins).

Thread-safety: one lock guards the allocation table; array contents are not locked (they
are ordered by HSA signals, as device memory is).
"""

from __future__ import annotations

import bisect
import threading

import attrs
import numpy as np

from ..hsa_cdef import ffi

__all__ = ["SoftAllocation", "SoftMemory", "SoftMemoryFault"]


class SoftMemoryFault(Exception):
    """A kernel twin touched memory it may not: the packet processor reports it through
    the queue error callback as a memory-aperture violation."""


@attrs.define(eq=False)
class SoftAllocation:
    address: int
    size: int
    array: np.ndarray
    owner_agent: int
    """Agent handle whose pool this came from (0 for runtime-internal memory)."""
    pool: int = 0
    allowed_agents: set[int] = attrs.field(factory=set)
    accessible_by_all: bool = False
    locked_host: bool = False


class SoftMemory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._by_start: dict[int, SoftAllocation] = {}

    def allocate(
        self,
        size: int,
        alignment: int = 64,
        *,
        owner_agent: int = 0,
        pool: int = 0,
        accessible_by_all: bool = False,
    ) -> SoftAllocation:
        """Zero-filled memory whose address is ``alignment``-aligned (size 0 gets 1 byte so
        every allocation has a distinct address)."""
        nbytes = max(1, int(size))
        raw = np.zeros(nbytes + alignment, dtype=np.uint8)
        start = (-raw.ctypes.data) % alignment
        array = raw[start : start + nbytes]
        alloc = SoftAllocation(
            int(array.ctypes.data),
            int(size),
            array,
            owner_agent,
            pool,
            accessible_by_all=accessible_by_all,
        )
        if owner_agent:
            alloc.allowed_agents.add(owner_agent)
        self._insert(alloc)
        return alloc

    def register_host(self, address: int, size: int, agents: set[int]) -> SoftAllocation:
        """Track caller-owned host memory (``hsa_amd_memory_lock``)."""
        # cffi's stubs do not declare its buffer objects as supporting the buffer protocol.
        array = np.frombuffer(
            ffi.buffer(ffi.cast("uint8_t*", address), max(1, size)),  # type: ignore[call-overload]
            dtype=np.uint8,
        )
        alloc = SoftAllocation(
            address, size, array, 0, locked_host=True, allowed_agents=set(agents)
        )
        self._insert(alloc)
        return alloc

    def _insert(self, alloc: SoftAllocation) -> None:
        with self._lock:
            bisect.insort(self._starts, alloc.address)
            self._by_start[alloc.address] = alloc

    def free(self, address: int) -> SoftAllocation | None:
        with self._lock:
            alloc = self._by_start.pop(address, None)
            if alloc is not None:
                del self._starts[bisect.bisect_left(self._starts, address)]
            return alloc

    def find(self, address: int, size: int = 1) -> SoftAllocation | None:
        """The allocation holding ``[address, address+size)``, or None."""
        with self._lock:
            i = bisect.bisect_right(self._starts, address) - 1
            if i < 0:
                return None
            alloc = self._by_start[self._starts[i]]
        if address + size <= alloc.address + max(1, alloc.size):
            return alloc
        return None

    def view(self, address: int, size: int, agent: int = 0) -> np.ndarray:
        """A uint8 view of ``[address, address+size)``; SoftMemoryFault when the range is
        not inside one allocation or ``agent`` (non-zero) was not granted access."""
        alloc = self.find(address, size)
        if alloc is None:
            raise SoftMemoryFault(
                f"access to [{address:#x}, {address + size:#x}) is outside every allocation"
            )
        if agent and not (alloc.accessible_by_all or agent in alloc.allowed_agents):
            raise SoftMemoryFault(
                f"agent {agent} accessed {address:#x} (allocation at {alloc.address:#x} of "
                f"{alloc.size} bytes) without being granted access"
            )
        offset = address - alloc.address
        return alloc.array[offset : offset + size]

    def live_count(self) -> int:
        with self._lock:
            return len(self._starts)
