"""One packet-processor thread per software queue: the command processor of the soft agent.

Invariants: packets are consumed strictly in order from ``read_dispatch_id``; a slot is
processed only once its header type is not INVALID (the producer's release store of the
header publishes the packet, the doorbell store wakes us); after a packet completes its
completion signal (if any) is decremented, its header is reset to INVALID and
``read_dispatch_id`` advances, in that order. Packets run one at a time, so the BARRIER bit
is always honoured. Waits (barrier-AND/OR, barrier-value, an empty ring) block on the
system condition variable, which every signal store notifies. A dispatch without a host
twin, a twin fault or an injected fault stops the queue and reports through the queue's
error callback, as a hardware queue error would; later packets are not processed.

PM4-IB vendor packets (``AmdFormat`` 1) run through ``soft_hsa.pm4``, which executes the
PM4 subset the host queues and profiling emit (``WAIT_REG_MEM64``, ``ACQUIRE_MEM``,
``COPY_DATA`` of the GPU clock, ``NOP`` in an indirect buffer) from the real encodings and
faults the queue on anything else.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..aql_packets import (
    BARRIER_DTYPE,
    BARRIER_VALUE_DTYPE,
    KERNEL_DISPATCH_DTYPE,
    PM4_IB_DTYPE,
    AmdFormat,
    PacketType,
)
from ..hsa_cdef import ffi
from ..hsa_enums import HsaStatus
from .host_twins import HostTwinContext
from .memory import SoftAllocation, SoftMemoryFault
from .pm4 import run_pm4_ib

if TYPE_CHECKING:
    from .runtime import SoftHsaRuntime

__all__ = ["SoftQueue"]

_WRITE_ID_WORD = 56 // 8
_READ_ID_WORD = 128 // 8
_INVALID_HEADER = int(PacketType.INVALID)


class SoftQueue:
    """An ``amd_queue_t``-shaped descriptor, its ring, doorbell signal and thread."""

    def __init__(
        self,
        runtime: "SoftHsaRuntime",
        agent: int,
        size: int,
        callback: Any,
        data: Any,
        queue_id: int,
    ) -> None:
        self.runtime = runtime
        self.agent = agent
        self.size = size
        self.mask = size - 1
        self.callback = callback
        self.data = data
        mem = runtime.memory
        self.descriptor: SoftAllocation = mem.allocate(256, 64)
        self.ring: SoftAllocation = mem.allocate(size * 64, 64)
        self.doorbell = runtime.signals.create(0)
        self.address = self.descriptor.address
        q: Any = ffi.cast("amd_queue_t*", self.address)  # cffi's stubs give cdata no fields
        q.hsa_queue.type = 0
        q.hsa_queue.features = 1
        q.hsa_queue.base_address = ffi.cast("void*", self.ring.address)
        q.hsa_queue.doorbell_signal.handle = self.doorbell
        q.hsa_queue.size = size
        q.hsa_queue.id = queue_id
        q.read_dispatch_id_field_base_byte_offset = 128
        self._ids = self.descriptor.array.view(np.uint64)
        self._headers = self.ring.array.view(np.uint16)[::32]
        self._headers[:] = _INVALID_HEADER
        self._dispatch = self.ring.array.view(KERNEL_DISPATCH_DTYPE)
        self._barrier = self.ring.array.view(BARRIER_DTYPE)
        self._barrier_value = self.ring.array.view(BARRIER_VALUE_DTYPE)
        self._pm4_ib = self.ring.array.view(PM4_IB_DTYPE)
        self._stop = False
        self.error: int | None = None
        #: ``hsa_amd_profiling_set_profiler_enabled``: when set, each packet's completion
        #: signal gets ``start_ts``/``end_ts`` (amd_signal_t bytes 32/40) from the agent's
        #: clock (``time.monotonic_ns``, the clock ``hsa_system_get_info(TIMESTAMP)`` reads
        #: at TIMESTAMP_FREQUENCY = 1 GHz) before it is decremented.
        self.profiling_enabled = False
        self._thread = threading.Thread(
            target=self._run, name=f"soft-hsa-agent{agent}-queue{queue_id}", daemon=True
        )
        self._thread.start()

    @property
    def read_index(self) -> int:
        return int(self._ids[_READ_ID_WORD])

    @property
    def write_index(self) -> int:
        return int(self._ids[_WRITE_ID_WORD])

    def destroy(self) -> None:
        cond = self.runtime.signals.cond
        with cond:
            self._stop = True
            cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self.runtime.signals.destroy(self.doorbell)
        self.runtime.memory.free(self.ring.address)
        self.runtime.memory.free(self.descriptor.address)

    # -- the processor ----------------------------------------------------------------

    def _run(self) -> None:
        cond = self.runtime.signals.cond
        while True:
            with cond:
                while (
                    not self._stop and self._headers[self.read_index & self.mask] == _INVALID_HEADER
                ):
                    cond.wait()
                if self._stop:
                    return
            slot = self.read_index & self.mask
            start_ts = time.monotonic_ns() if self.profiling_enabled else 0
            status = self._process(slot)
            if status is None:  # stopped while waiting
                return
            if status != HsaStatus.SUCCESS:
                self._fail(status)
                return
            self._retire(slot, start_ts)

    def _retire(self, slot: int, start_ts: int = 0) -> None:
        completion = int(self._barrier[slot]["completion_signal"])
        signals = self.runtime.signals
        if completion and signals.is_valid(completion):
            if start_ts:
                words = signals.words(completion)
                if words is not None:  # start_ts / end_ts: int64 words 4 and 5
                    words[4] = start_ts
                    words[5] = time.monotonic_ns()
            signals.add(completion, -1)
        with signals.cond:
            self._headers[slot] = _INVALID_HEADER
            self._ids[_READ_ID_WORD] = self._ids[_READ_ID_WORD] + 1
            signals.cond.notify_all()

    def _fail(self, status: int) -> None:
        self.error = int(status)
        if self.callback is not None and self.callback != ffi.NULL:
            self.callback(int(status), ffi.cast("hsa_queue_t*", self.address), self.data)

    def _process(self, slot: int) -> int | None:
        header = int(self._headers[slot])
        kind = header & 0xFF
        if kind == PacketType.KERNEL_DISPATCH:
            return self._kernel_dispatch(slot)
        if kind in (PacketType.BARRIER_AND, PacketType.BARRIER_OR):
            deps = [int(h) for h in self._barrier[slot]["dep_signal"] if int(h)]
            return self._wait_deps(deps, all_of=kind == PacketType.BARRIER_AND)
        if kind == PacketType.VENDOR_SPECIFIC:
            packet = self._barrier_value[slot]
            amd_format = int(packet["amd_format"])
            if amd_format == AmdFormat.PM4_IB:
                rt = self.runtime
                return run_pm4_ib(
                    self._pm4_ib[slot]["ib_jump_cmd"],
                    rt.memory,
                    self.agent,
                    rt.signals.cond,
                    rt.signals.is_valid,
                    self._stopped,
                )
            if amd_format != AmdFormat.BARRIER_VALUE:
                return HsaStatus.ERROR_INVALID_PACKET_FORMAT
            return self._wait_value(
                int(packet["signal"]),
                int(packet["value"]),
                int(packet["mask"]),
                int(packet["cond"]),
            )
        return HsaStatus.ERROR_INVALID_PACKET_FORMAT

    def _stopped(self) -> bool:
        return self._stop

    def _wait_until(self, predicate: Any) -> bool:
        cond = self.runtime.signals.cond
        with cond:
            while not self._stop and not predicate():
                cond.wait()
            return not self._stop

    def _wait_deps(self, deps: list[int], all_of: bool) -> int | None:
        signals = self.runtime.signals
        found = [signals.words(h) for h in deps]
        words = [w for w in found if w is not None]
        if len(words) != len(found):
            return HsaStatus.ERROR_INVALID_SIGNAL
        if not deps:
            return HsaStatus.SUCCESS
        if all_of:
            ok = self._wait_until(lambda: all(int(w[1]) == 0 for w in words))
        else:
            ok = self._wait_until(lambda: any(int(w[1]) == 0 for w in words))
        return HsaStatus.SUCCESS if ok else None

    def _wait_value(self, handle: int, value: int, mask: int, condition: int) -> int | None:
        signals = self.runtime.signals
        words = signals.words(handle)
        if words is None or condition > 3:
            return HsaStatus.ERROR_INVALID_PACKET_FORMAT
        ok = self._wait_until(lambda: signals.satisfied(int(words[1]) & mask, condition, value))
        return HsaStatus.SUCCESS if ok else None

    def _kernel_dispatch(self, slot: int) -> int:
        rt = self.runtime
        packet = self._dispatch[slot]
        fault = rt.take_injected_fault()
        if fault is not None:
            return fault
        target = rt.kernel_objects.get(int(packet["kernel_object"]))
        if target is None or target.agent != self.agent:
            return HsaStatus.ERROR_INVALID_CODE_OBJECT
        kernel = target.kernel
        twin = rt.host_twins.get(kernel.name)
        if twin is None:
            return HsaStatus.ERROR_INVALID_CODE_OBJECT
        kernarg_address = int(packet["kernarg_address"])
        try:
            args, by_offset = _decode_kernargs(rt, kernel, kernarg_address, self.agent)
            ctx = HostTwinContext(
                kernel,
                args,
                tuple(int(v) for v in packet["grid_size"]),
                tuple(max(1, int(v)) for v in packet["workgroup_size"]),
                self.agent,
                rt.memory,
                kernarg_address,
                by_offset,
            )
            twin(ctx)
        except SoftMemoryFault:
            return HsaStatus.AMD_ERROR_MEMORY_APERTURE_VIOLATION
        except Exception:  # a broken twin is an exception on the "device"
            return HsaStatus.ERROR_EXCEPTION
        return HsaStatus.SUCCESS


def _decode_kernargs(
    rt: "SoftHsaRuntime", kernel: Any, address: int, agent: int
) -> tuple[dict[str, Any], dict[int, Any]]:
    """The kernargs as ``(by name, by offset)``. Every argument is in the offset map;
    named ones are also under their name, nameless hidden ones under their value kind
    (unique per kernel). Nameless explicit arguments (compilers such as IREE's emit no
    names) are only reachable by offset: keying them by value kind would collapse every
    ``global_buffer`` into one entry."""
    raw = rt.memory.view(address, max(1, kernel.kernarg_segment_size), agent)
    by_name: dict[str, Any] = {}
    by_offset: dict[int, Any] = {}
    for arg in kernel.args:
        chunk = bytes(raw[arg.offset : arg.offset + arg.size])
        value: Any = int.from_bytes(chunk, "little") if arg.size in (1, 2, 4, 8) else chunk
        by_offset[arg.offset] = value
        if arg.name:
            by_name[arg.name] = value
        elif arg.hidden:
            by_name[arg.value_kind] = value
    return by_name, by_offset
