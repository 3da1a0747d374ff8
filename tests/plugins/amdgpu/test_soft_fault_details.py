"""The software agent's queue faults say what faulted: a dispatch of a kernel with no host
twin names the kernel in the error its signals fail with."""

from __future__ import annotations

import sys
import threading

import pytest
from hal_amdgpu.plugin import _cts_hsaco
from hal_amdgpu.soft_hsa import SoftHsaRuntime

import hal_core
from hal_core import DispatchConfig

TIMEOUT = 30.0


@pytest.fixture
def default_hooks(monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)


def test_a_kernel_without_a_host_twin_is_named_in_the_fault(default_hooks, monkeypatch):
    with hal_core.create_device("amdgpu://0?hsa=soft") as device:
        runtime = device.backend.hsa.lib
        monkeypatch.delitem(runtime.host_twins, "noop")  # restored for later tests
        exe = device.create_executable_cache("t").prepare("hsaco", _cts_hsaco("cts_kernels"))
        sem = device.create_semaphore(0)
        device.queue_dispatch(1, (), [(sem, 1)], exe, "noop", DispatchConfig.static(1))
        with pytest.raises(hal_core.HalError, match="INVALID_CODE_OBJECT") as info:
            sem.wait(1, TIMEOUT)
        text = str(info.value)
        assert "kernel 'noop' has no host twin" in text and "HAL_AMDGPU_SOFT_TWINS" in text
        # Said once: the next error on that thread is not about it.
        assert runtime.take_fault_detail() is None


def test_the_missing_twin_is_remembered_per_thread():
    runtime = SoftHsaRuntime()
    assert runtime.host_twins.get("no_such_kernel") is None
    other: list = []
    thread = threading.Thread(target=lambda: other.append(runtime.take_fault_detail()))
    thread.start()
    thread.join()
    assert other == [None]  # another thread's lookup is not this thread's fault
    assert "no_such_kernel" in (runtime.take_fault_detail() or "")
    assert runtime.take_fault_detail() is None
    assert runtime.host_twins.get("noop") is not None and runtime.take_fault_detail() is None
