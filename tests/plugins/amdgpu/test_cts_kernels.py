"""The CTS kernels in the AMDGPU format (kernels/src/cts_kernels.cl): code objects for every
shipped target, their HAL layouts, and their behaviour on the soft agent (bounded by the
explicit count constant; fail_status traps as a queue fault)."""

import numpy as np
import pytest
from hal_amdgpu.code_object import parse_hsaco, reflect_hal_layout
from hal_amdgpu.kernels import available_targets, code_object_path
from hal_amdgpu.plugin import _cts_hsaco

import hal_core
from hal_core import BufferParams, BufferUsage, DispatchConfig, MemoryType, StatusCode

ANY = hal_core.QueueAffinity.ANY
TIMEOUT = 10.0
# name -> (bindings, constants, required workgroup size): the contract of cts_kernels.c.
CONTRACT = {
    "scale_and_offset": (2, 3, (64, 1, 1)),
    "negate": (2, 1, (64, 1, 1)),
    "double": (2, 1, (64, 1, 1)),
    "write_workgroup_ids": (1, 0, (1, 1, 1)),
    "write_workgroup_count": (1, 3, (1, 1, 1)),
    "noop": (0, 0, (1, 1, 1)),
    "fail_status": (0, 2, (1, 1, 1)),
}


@pytest.mark.parametrize("target", available_targets("cts_kernels"))
def test_code_objects_match_the_contract(target):
    co = parse_hsaco(code_object_path("cts_kernels", target).read_bytes())
    assert co.target.processor == target
    for name, (bindings, constants, wg) in CONTRACT.items():
        kernel = co.kernel(name)
        layout = reflect_hal_layout(kernel)
        assert (layout.binding_count, layout.constant_count) == (bindings, constants), name
        assert kernel.reqd_workgroup_size == wg, name


def test_cts_format_follows_the_soft_gpus(monkeypatch):
    monkeypatch.delenv("HAL_AMDGPU_SOFT_GPUS", raising=False)
    assert parse_hsaco(_cts_hsaco("cts_kernels")).target.processor == "gfx1100"
    monkeypatch.setenv("HAL_AMDGPU_SOFT_GPUS", "gfx90a")
    assert parse_hsaco(_cts_hsaco("cts_kernels")).target.processor == "gfx90a"
    with pytest.raises(hal_core.NotFoundError):
        _cts_hsaco("no_such_library")


@pytest.fixture
def device():
    dev = hal_core.create_device("amdgpu://0?hsa=soft")
    yield dev
    dev.close()


def _buffer(device, data: bytes):
    buf = device.allocator.allocate_buffer(
        BufferParams(
            usage=BufferUsage.DEFAULT | BufferUsage.TRANSFER | BufferUsage.MAPPING_SCOPED,
            type=MemoryType.DEVICE_LOCAL | MemoryType.HOST_VISIBLE,
        ),
        len(data),
    )
    buf.write(data)
    return buf


def _exe(device):
    return device.create_executable_cache("t").prepare("hsaco", _cts_hsaco("cts_kernels"))


def test_count_bounds_the_elements_written(device):
    exe = _exe(device)
    src = _buffer(device, np.arange(1, 9, dtype=np.float32).tobytes())
    dst = _buffer(device, b"\xff" * 32)
    sem = device.create_semaphore(0)
    count = np.array([3], np.uint32).tobytes()
    device.queue_dispatch(
        ANY, (), [(sem, 1)], exe, "negate", DispatchConfig.static(1), count, [src, dst]
    )
    sem.wait(1, TIMEOUT)
    out = np.frombuffer(dst.read(), np.float32)
    assert out[:3].tolist() == [-1, -2, -3]
    assert dst.read()[12:] == b"\xff" * 20  # nothing past the count


def test_workgroup_ids_are_linear_over_three_axes(device):
    exe = _exe(device)
    out = _buffer(device, b"\xff" * 4 * 13)
    sem = device.create_semaphore(0)
    device.queue_dispatch(
        ANY,
        (),
        [(sem, 1)],
        exe,
        "write_workgroup_ids",
        DispatchConfig.static(2, 3, 2),
        b"",
        [out],
    )
    sem.wait(1, TIMEOUT)
    assert np.frombuffer(out.read(), np.uint32).tolist() == list(range(12)) + [0xFFFFFFFF]


def test_fail_status_traps_as_a_queue_fault(device):
    """A trapping kernel is a fatal queue fault (HSA_STATUS_ERROR_EXCEPTION -> DATA_LOSS):
    its signals fail and the device still closes."""
    exe = _exe(device)
    sem = device.create_semaphore(0)
    device.queue_dispatch(
        1,
        (),
        [(sem, 1)],
        exe,
        "fail_status",
        DispatchConfig.static(4),
        np.array([7, 2], np.uint32).tobytes(),
        [],
    )
    with pytest.raises(hal_core.HalError) as info:
        sem.wait(1, TIMEOUT)
    assert info.value.code == StatusCode.DATA_LOSS
    # The other queue is unaffected.
    ok = device.create_semaphore(0)
    device.queue_dispatch(2, (), [(ok, 1)], exe, "noop", DispatchConfig.static(1), b"", [])
    ok.wait(1, TIMEOUT)
