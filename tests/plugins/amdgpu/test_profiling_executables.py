"""amdgpu profiling names the dispatches of user executables: a recorded command buffer
retains the user's ``Executable``, whose kernels live on the amdgpu executable behind it;
the session registers them so each dispatch event carries its executable and ordinal and
the executable's metadata is recorded (it used to fall back to "unknown", ordinal
0xFFFFFFFF)."""

import numpy as np
from hal_amdgpu.kernels import code_object_path

import hal_core
from hal_core import CommandBufferMode, DispatchConfig
from hal_core.profiling import ProfilingDataFamily as F
from hal_core.profiling import ProfilingOptions, StatisticsSink

TIMEOUT = 10


def test_dispatch_events_name_the_user_executable():
    device = hal_core.create_device("amdgpu://?hsa=soft")
    try:
        exe = device.create_executable_cache("cts").prepare(
            "hsaco", code_object_path("scale_and_offset", "gfx1100")
        )
        ordinal = exe.lookup_function("scale_and_offset")
        src = device.allocator.allocate_buffer(None, 256)
        dst = device.allocator.allocate_buffer(None, 256)
        cb = device.create_command_buffer(CommandBufferMode.DEFAULT)
        cb.begin()
        constants = np.array([2.0, 1.0], np.float32).view(np.uint32).tolist() + [64]
        cb.dispatch(exe, ordinal, DispatchConfig.static(1), constants, [src, dst])
        cb.end()
        stats = StatisticsSink()
        device.profiling_begin(
            ProfilingOptions(F.DISPATCH_EVENTS | F.EXECUTABLE_METADATA, sinks=[stats])
        )
        sem = device.create_semaphore(0)
        device.queue_execute(1, [], [(sem, 1)], cb)
        sem.wait(1, TIMEOUT)
        device.profiling_end()
        dispatches = stats.capture.records("dispatch-events")
        assert len(dispatches) == 1
        assert int(dispatches[0]["function_ordinal"]) == ordinal
        exe_id = int(dispatches[0]["executable_id"])
        executables = stats.capture.records("executables")
        assert exe_id in {int(r["executable_id"]) for r in executables}
    finally:
        device.close()
