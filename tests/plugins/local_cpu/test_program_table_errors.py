"""A submission that resolves binding-table slots fills its own copy of the program's
address table, and a failing record reports the command that failed (barriers and debug
groups counted) from that submission's error slot, on both local devices and through the
native loop, the worker-spread path and the interpreter alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hal_local_cpu.executable_native import replay_available
from hal_local_cpu.kernels import native_library

import hal_core as hal
from hal_core import BindingTable, BufferRef, CommandCategory, DispatchConfig, StatusCode

T = 20.0

pytestmark = pytest.mark.skipif(not replay_available(), reason="no C compiler")


@pytest.fixture(params=["local-task://", "local-sync://"])
def device(request: pytest.FixtureRequest) -> Any:
    dev = hal.create_device(request.param)
    yield dev
    dev.close()


def _buf(device: Any, size: int) -> Any:
    return device.allocator.allocate_buffer(
        hal.BufferParams(usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.MAPPING), size
    )


@pytest.mark.parametrize("groups", [5, 64])  # 64: spread over the workers on local-task
def test_failing_record_names_its_command_and_tables_stay_per_submission(
    device: Any, groups: int
) -> None:
    native = device.create_executable_cache("t").prepare(
        "local-cpu-native", native_library("cts_kernels")
    )
    ids = native.lookup_function("write_workgroup_ids")
    cb = device.create_command_buffer(0, CommandCategory.ANY, binding_capacity=2)
    cb.begin()
    cb.dispatch(native, ids, DispatchConfig.static(4), b"", [BufferRef.indirect(0)])
    cb.execution_barrier()
    cb.dispatch(native, ids, DispatchConfig.static(groups), b"", [BufferRef.indirect(1)])
    cb.end()

    small, big, big2 = _buf(device, 16), _buf(device, 4 * groups), _buf(device, 4 * groups)
    # Too small a slot 1: command 2 (after the barrier) writes past it.
    failed = device.create_semaphore()
    device.queue_execute(1, [], [(failed, 1)], cb, BindingTable([small, small]))
    with pytest.raises(hal.HalError) as info:
        failed.wait(1, T)
    assert info.value.code == StatusCode.OUT_OF_RANGE
    assert "command 2 " in str(info.value)

    # The program is unchanged: other tables, submitted back to back, each get their own.
    sems = []
    for target in (big, big2):
        sem = device.create_semaphore()
        device.queue_execute(1, [], [(sem, 1)], cb, BindingTable([small, target]))
        sems.append(sem)
    for sem in sems:
        sem.wait(1, T)
    for target in (big, big2):
        assert np.frombuffer(target.read(), np.uint32).tolist() == list(range(groups))
    assert np.frombuffer(small.read(), np.uint32).tolist() == [0, 1, 2, 3]
