"""``FakeDriver`` with several GPUs that can see each other: 64-bit stream memory
operations (``cuStreamWaitValue64`` / ``cuStreamWriteValue64``), peer access
(``cuDeviceCanAccessPeer``, ``cuCtxEnablePeerAccess``), one primary context per GPU, and
the function handle of every kernel launch (``launched_functions``).

Stream work still runs at once on the calling thread, so a value wait cannot hold
anything here: ``cuStreamWaitValue64`` records ``(stream, address, value, flags)`` in
``value_waits`` (tests read the word at ``address`` to see what the GPU would see);
``cuStreamWriteValue64`` writes the word. The GPU tests run the real thing.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from fake_cuda_driver import NOT_SUPPORTED, FakeDriver

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
        return (0,)

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
