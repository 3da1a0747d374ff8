"""``cuda_api.hot_calls``: the stream-work calls that keep the GIL (``ctypes.PyDLL``), with
cuda-bindings' calling convention, and everything else forwarded to the bindings. The
library here is the C runtime's, standing in for ``libcuda`` (same C calling convention);
a GPU run exercises the real one."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import Any

from hal_cuda import cuda_api

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import FakeDriver  # noqa: E402


class _Libc:
    """Every hot call resolves to C's ``abs`` of its first argument's low 32 bits, so a
    call returns what it was given: 0 for success, anything else as an error."""

    def __init__(self) -> None:
        self._lib = ctypes.PyDLL(None)

    def __getattr__(self, name: str) -> Any:
        return self._lib.abs


class _Handle:
    def __init__(self, value: int) -> None:
        self.value = value

    def __int__(self) -> int:
        return self.value


def test_a_stand_in_driver_is_used_as_it_is() -> None:
    fake = FakeDriver()
    assert cuda_api.hot_calls(fake) is fake


def test_hot_calls_return_results_as_the_bindings_do_and_forward_the_rest() -> None:
    class Bindings:
        def cuStreamSynchronize(self, stream: Any) -> tuple:
            return (0, "synchronised")

    hot = cuda_api.HotCalls(Bindings(), _Libc())
    # Not every hot call can be stood in for by abs(int); the event record can: its
    # first argument is a handle, converted with int() like a cuda-bindings handle.
    hot.cuEventRecord.argtypes = (cuda_api._Handle,)
    assert hot.cuEventRecord(_Handle(0)) == (0,)
    assert hot.cuEventRecord(7) == (7,)
    assert hot.cuEventRecord(_Handle(600)) == (600,)
    assert hot.cuStreamSynchronize(None) == (0, "synchronised")
    assert set(cuda_api._HOT_CALLS) == {
        "cuEventRecord",
        "cuEventQuery",
        "cuStreamWaitEvent",
        "cuMemsetD8Async",
        "cuMemsetD16Async",
        "cuMemsetD32Async",
        "cuMemcpyAsync",
    }
