"""``FakeDriver`` with several GPUs that can see each other: 64-bit stream memory
operations (``cuStreamWaitValue64`` / ``cuStreamWriteValue64``), peer access
(``cuDeviceCanAccessPeer``, ``cuCtxEnablePeerAccess``), one primary context per GPU, and
the function handle of every kernel launch (``launched_functions``).

Stream work still runs at once on the calling thread (its effects on memory are not
held), but completion is: ``cuStreamWaitValue64`` records ``(stream, address, value,
flags)`` in ``value_waits`` and keeps every event recorded on that stream afterwards
(and every stream that waits on such an event) unreached until the word satisfies the
wait (``GEQ``, cyclic as on the GPU): ``cuEventQuery`` answers NOT_READY and
``cuEventSynchronize`` / ``cuStreamSynchronize`` poll the word, as a GPU polls memory.
So ops behind a word wait complete only after the word is written, in the order the GPU
would complete them. ``cuStreamWriteValue64`` writes the word. The GPU tests run the
real thing.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any

from fake_cuda_driver import NOT_READY, NOT_SUPPORTED, FakeDriver

CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS = 122
CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR = 123
CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED = 704


class FakePeerDriver(FakeDriver):
    """``gpus`` fake GPUs; ``memops`` says whether they run 64-bit stream memory
    operations, ``peer_access`` whether each reaches the others' memory."""

    def __init__(self, gpus: int = 2, memops: bool = True, peer_access: bool = True) -> None:
        super().__init__(gpus)
        self.memops = memops
        self.peer_access = peer_access
        self.value_waits: list[tuple[Any, int, int, int]] = []
        self.peers_enabled: set[tuple[int, int]] = set()
        self.launched_functions: list[int] = []
        self._current = threading.local()
        self._waits_lock = threading.Lock()
        self._stream_pending: dict[Any, list[tuple[int, int]]] = {}
        self._event_pending: dict[Any, list[tuple[int, int]]] = {}

    def word(self, address: int) -> int:
        """The 64-bit word at ``address`` (pinned host memory here)."""
        return ctypes.c_uint64.from_address(int(address)).value

    def cuDeviceGetAttribute(self, attr: int, dev: int) -> tuple:
        if int(attr) in (
            CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS,
            CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR,
        ):
            return (0, int(self.memops))
        return FakeDriver.cuDeviceGetAttribute(self, attr, dev)

    def cuDevicePrimaryCtxRetain(self, dev: int) -> tuple:
        return (0, f"ctx{int(dev)}")

    def cuCtxSetCurrent(self, ctx: Any) -> tuple:
        self._current.ctx = ctx
        return (0,)

    def cuStreamWaitValue64(self, stream: Any, address: int, value: int, flags: int) -> tuple:
        if not self.memops:
            return (NOT_SUPPORTED,)
        self.value_waits.append((stream, int(address), int(value), int(flags)))
        with self._waits_lock:
            self._stream_pending.setdefault(stream, []).append((int(address), int(value)))
        return (0,)

    # -- completion held by value waits ------------------------------------------------

    def _unmet(self, waits: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The waits whose word does not yet satisfy GEQ (cyclic 64-bit compare)."""
        return [(a, v) for a, v in waits if (self.word(a) - v) % (1 << 64) >= 1 << 63]

    def cuEventRecord(self, event: Any, stream: Any) -> tuple:
        with self._waits_lock:
            pending = self._unmet(self._stream_pending.get(stream, []))
            self._stream_pending[stream] = pending
            self._event_pending[event] = list(pending)
        return (0,)

    def cuStreamWaitEvent(self, stream: Any, event: Any, flags: int) -> tuple:
        with self._waits_lock:
            pending = self._event_pending.get(event)
            if pending:
                self._stream_pending.setdefault(stream, []).extend(pending)
        return (0,)

    def _event_unmet(self, event: Any) -> bool:
        with self._waits_lock:
            pending = self._unmet(self._event_pending.get(event, []))
            self._event_pending[event] = pending
            return bool(pending)

    def cuEventQuery(self, event: Any) -> tuple:
        result = FakeDriver.cuEventQuery(self, event)
        if result[0] or not self._event_unmet(event):
            return result
        return (NOT_READY,)

    def cuEventSynchronize(self, event: Any) -> tuple:
        FakeDriver.cuEventSynchronize(self, event)
        while self._event_unmet(event):
            time.sleep(0.0005)  # the GPU polling the word
        return (0,)

    def cuStreamSynchronize(self, stream: Any) -> tuple:
        while True:
            with self._waits_lock:
                pending = self._unmet(self._stream_pending.get(stream, []))
                self._stream_pending[stream] = pending
            if not pending:
                return (0,)
            time.sleep(0.0005)  # the GPU polling the word

    def cuStreamWriteValue64(self, stream: Any, address: int, value: int, flags: int) -> tuple:
        if not self.memops:
            return (NOT_SUPPORTED,)
        ctypes.c_uint64.from_address(int(address)).value = int(value)
        return (0,)

    def cuDeviceCanAccessPeer(self, dev: int, peer: int) -> tuple:
        return (0, int(self.peer_access and int(dev) != int(peer)))

    def cuCtxEnablePeerAccess(self, peer_ctx: Any, flags: int) -> tuple:
        current = getattr(self._current, "ctx", None)
        if not self.peer_access or current is None or current == peer_ctx:
            return (NOT_SUPPORTED,)
        pair = (int(str(current)[3:]), int(str(peer_ctx)[3:]))
        if pair in self.peers_enabled:
            return (CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED,)
        self.peers_enabled.add(pair)
        return (0,)

    def cuLaunchKernel(self, function: int, *args: Any) -> tuple:
        self.launched_functions.append(int(function))
        return FakeDriver.cuLaunchKernel(self, function, *args)
