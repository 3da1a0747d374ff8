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


def test_kernel_launches_pass_converted_pointers_without_argtypes(monkeypatch: Any) -> None:
    """``HotCalls.launch`` is ``cuLaunchKernel`` without ``argtypes``: a program launching
    through it hands C the function, the stream and the parameter array as pointers and
    the sizes as ints. A C callback with cuLaunchKernel's signature stands in for
    ``libcuda`` and receives exactly what the bindings would have passed; an error it
    returns becomes the HalError of a failed launch."""
    from hal_cuda import driver as cuda_driver
    from hal_cuda.kernels import CTS_LIBRARY, load_ptx

    import hal_core
    from hal_core import BufferParams, BufferRef, BufferUsage, DispatchConfig
    from hal_core.backend import CMD_DISPATCH, buffer_storage, device_from_backend

    fake = FakeDriver()
    package = type(sys)("cuda.bindings")
    package.driver = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda.bindings", package)
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", fake)
    monkeypatch.setattr(cuda_driver, "_contexts", {})
    cuda_api.reset_for_tests()
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    dev = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    try:
        exe = dev.create_executable_cache("raw").prepare("ptx", load_ptx(CTS_LIBRARY))
        ordinal = exe.lookup_function("negate")
        usage = BufferUsage.DEFAULT | BufferUsage.TRANSFER
        buf = dev.allocator.allocate_buffer(BufferParams(usage=usage), 16)
        ref = BufferRef(buf, 0, 16)
        config = DispatchConfig.static(3, 2, 1)
        command = (CMD_DISPATCH, exe, ordinal, config, (4).to_bytes(4, "little"), (ref, ref), 0)
        # ONE_SHOT: stream launches (a reusable program would run as a CUDA graph).
        one_shot = int(hal_core.CommandBufferMode.ONE_SHOT)
        program = backend.finalize_command_buffer([command], one_shot, 0)
        launch = program.single

        received: list[tuple] = []
        words: list[list[int]] = []
        result = [0]
        pointer, uint = ctypes.c_void_p, ctypes.c_uint
        signature = ctypes.CFUNCTYPE(
            ctypes.c_int,
            pointer,
            uint,
            uint,
            uint,
            uint,
            uint,
            uint,
            uint,
            pointer,
            pointer,
            pointer,
        )

        def launch_kernel(*args: Any) -> int:
            received.append(args)
            slots = (ctypes.c_uint64 * 3).from_address(args[9])
            words.append([ctypes.c_uint64.from_address(p).value for p in slots])
            return result[0]

        callback = signature(launch_kernel)

        class Library(_Libc):
            cuLaunchKernel = callback

        hot = cuda_api.HotCalls(fake, Library())
        stream = 0x5A5A0000
        program.run(hot, (), stream)
        address = buffer_storage(buf).address + buf.byte_offset
        block = launch.block
        assert received == [
            (int(launch.function), 3, 2, 1, *block, launch.shared, stream, launch.params, None)
        ]
        assert words == [[address, address, 4]]
        assert fake.launches == []  # nothing went through the bindings' call

        result[0] = 1  # CUDA_ERROR_INVALID_VALUE
        try:
            program.run(hot, (), stream)
        except hal_core.HalError as exc:
            assert exc.code == hal_core.StatusCode.INVALID_ARGUMENT
            assert "cuLaunchKernel" in str(exc)
        else:
            raise AssertionError("a failed launch did not raise")

        # Without the raw launch, the bindings' call is used as before.
        program.run(cuda_api.HotCalls(fake, Library(), raw_launch=False), (), stream)
        assert len(received) == 2 and len(fake.launches) == 1
    finally:
        dev.close()
        cuda_api.reset_for_tests()
