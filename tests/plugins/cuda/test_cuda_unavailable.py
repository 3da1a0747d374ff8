"""Without the CUDA driver API or a GPU (CI, development machines), ``cuda://`` is
UNAVAILABLE naming what was looked for and how to fix it, and ``hal info`` shows it.
Runs everywhere: the missing pieces are simulated where they are present."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hal_cuda import cuda_api
from hal_cuda.plugin import create_driver

import hal_core
from hal_core.cli.info import collect


@pytest.fixture
def fresh_api() -> Any:
    """Forget the loaded driver API before and after the test."""
    cuda_api.reset_for_tests()
    yield
    cuda_api.reset_for_tests()


def _gpu_present() -> bool:
    try:
        cuda_api.driver_api()
    except hal_core.UnavailableError:
        return False
    finally:
        cuda_api.reset_for_tests()
    return True


def test_missing_bindings_module_is_unavailable(fresh_api: Any, monkeypatch: Any) -> None:
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", None)
    # The driver is created through the plugin's factory: the registry caches drivers, so
    # on a GPU machine create_device would reuse one already loaded.
    with pytest.raises(hal_core.UnavailableError) as info:
        create_driver()
    message = str(info.value)
    assert "cuda.bindings" in message
    assert "pip install 'hal-cuda[bindings]'" in message
    # Remembered: a second try answers the same without importing again.
    with pytest.raises(hal_core.UnavailableError, match="cuda.bindings"):
        cuda_api.driver_api()


class _NoLibcuda:
    """A stand-in ``cuda.bindings.driver`` whose cuInit cannot load libcuda.so.1."""

    @staticmethod
    def cuInit(flags: int) -> Any:
        raise RuntimeError('"cuda" is an NVIDIA driver library and can only be found ...')


class _NoGpu:
    """A stand-in whose cuInit reports CUDA_ERROR_NO_DEVICE (100)."""

    @staticmethod
    def cuInit(flags: int) -> Any:
        return (100,)


def _with_stand_in(monkeypatch: Any, module: Any) -> None:
    package = type(sys)("cuda.bindings")
    package.driver = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda.bindings", package)
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", module)


def test_missing_libcuda_is_unavailable(fresh_api: Any, monkeypatch: Any) -> None:
    _with_stand_in(monkeypatch, _NoLibcuda)
    with pytest.raises(hal_core.UnavailableError) as info:
        create_driver()
    message = str(info.value)
    assert "libcuda.so.1" in message and "NVIDIA driver" in message
    assert "RuntimeError" in message


def test_cuinit_failure_is_unavailable(fresh_api: Any, monkeypatch: Any) -> None:
    _with_stand_in(monkeypatch, _NoGpu)
    with pytest.raises(hal_core.UnavailableError) as info:
        create_driver()
    message = str(info.value)
    assert "cuInit(0) failed" in message and "(100)" in message
    assert "CUDA_VISIBLE_DEVICES" in message


def test_this_machine_without_gpu_is_unavailable_and_hal_info_says_why(fresh_api: Any) -> None:
    if _gpu_present():
        pytest.skip("this machine has a usable NVIDIA GPU (the GPU tests cover it)")
    # The driver is created through the plugin's factory: the registry caches drivers, so
    # on a GPU machine create_device would reuse one already loaded.
    with pytest.raises(hal_core.UnavailableError) as info:
        create_driver()
    message = str(info.value)
    assert "cuda.bindings" in message or "libcuda.so.1" in message or "cuInit" in message
    cuda_api.reset_for_tests()
    drivers = {d["name"]: d for d in collect()["drivers"]}
    entry = drivers["cuda"]
    assert entry["available"] is False
    assert "UNAVAILABLE" in entry["reason"]
    assert entry["cts"]["uri"] == "cuda://0"


def test_error_mapping() -> None:
    assert cuda_api.cuda_error(2, "cuMemAlloc").code == hal_core.StatusCode.RESOURCE_EXHAUSTED
    assert cuda_api.cuda_error(218, "x").code == hal_core.StatusCode.INVALID_ARGUMENT
    fault = cuda_api.cuda_error(700, "stream work")
    assert fault.code == hal_core.StatusCode.INTERNAL and "sticky" in str(fault)
    assert cuda_api.cuda_error(999, "x").code == hal_core.StatusCode.INTERNAL
    with pytest.raises(hal_core.ResourceExhaustedError, match=r"cuMemAlloc failed"):
        cuda_api.check((2, None), "cuMemAlloc")
    assert cuda_api.check((0, 5), "x") == 5
    assert cuda_api.check((0,), "x") is None
    assert cuda_api.check((0, 1, 2), "x") == (1, 2)
