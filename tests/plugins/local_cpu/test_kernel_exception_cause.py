"""A Python kernel's exception is the ``__cause__`` of the HalError that fails the
submission: its traceback (the kernel's failing line) survives (as a note printed under
it), on a queue dispatch and in a command buffer, on local-task and local-sync, while the
failed semaphore keeps no frames and so none of the submission's buffers."""

import gc
import traceback
import weakref

import pytest
from hal_local_cpu.executable_python import kernel

import hal_core as hal
from hal_core import CommandCategory, DispatchConfig, QueueAffinity

ANY = QueueAffinity.ANY
TIMEOUT = 20.0


@kernel(bindings=1, constants=0)
def divide_by_zero(bindings, constants, workgroup_id, workgroup_count):
    bindings[0][0] = 1
    return 1 // (workgroup_id[0] * 0)  # the kernel's failing line


@pytest.fixture(params=["local-task://", "local-sync://"])
def device(request):
    with hal.create_device(request.param) as d:
        yield d


def _exe(device):
    cache = device.create_executable_cache("kernel-errors")
    return cache.prepare("local-cpu-python", {"divide_by_zero": divide_by_zero})


def _assert_chained(err: hal.HalError) -> None:
    assert err.code == hal.StatusCode.UNKNOWN
    assert "divide_by_zero" in err.message and "ZeroDivisionError" in err.message
    cause = err.__cause__
    assert isinstance(cause, ZeroDivisionError)
    text = "".join(traceback.format_exception(err))
    assert "The above exception was the direct cause" in text
    assert "the kernel's failing line" in text and "in divide_by_zero" in text


def _submit_dispatch(device, exe, buf, sem):
    device.queue_dispatch(
        ANY, [], [(sem, 1)], exe, "divide_by_zero", DispatchConfig.static(1), b"", [buf]
    )


def _submit_command_buffer(device, exe, buf, sem):
    cb = device.create_command_buffer(0, CommandCategory.ANY, ANY, 0)
    cb.begin()
    cb.dispatch(exe, exe.lookup_function("divide_by_zero"), DispatchConfig.static(1), b"", [buf])
    cb.end()
    device.queue_execute(ANY, [], [(sem, 1)], cb)


@pytest.mark.parametrize("submit", [_submit_dispatch, _submit_command_buffer])
def test_kernel_exception_is_the_cause(device, submit):
    exe = _exe(device)
    buf = device.allocator.allocate_buffer(None, 64)
    sem = device.create_semaphore()
    submit(device, exe, buf, sem)
    with pytest.raises(hal.HalError) as info:
        sem.wait(1, TIMEOUT)
    _assert_chained(info.value)
    # every waiter gets a fresh error with the same cause
    with pytest.raises(hal.HalError) as again:
        sem.wait(1, TIMEOUT)
    assert again.value is not info.value and again.value.__cause__ is info.value.__cause__
    _assert_chained(sem.failure)
    # later work on the device still runs
    ok = device.create_semaphore()
    device.queue_fill(ANY, [], [(ok, 1)], buf, 0, 64, b"\7")
    ok.wait(1, TIMEOUT)
    assert buf.read() == b"\7" * 64


@pytest.mark.parametrize("submit", [_submit_dispatch, _submit_command_buffer])
def test_failed_semaphore_does_not_keep_the_buffers(device, submit):
    exe = _exe(device)
    buf = device.allocator.allocate_buffer(None, 64)
    ref = weakref.ref(buf)
    sem = device.create_semaphore()
    submit(device, exe, buf, sem)
    with pytest.raises(hal.HalError):
        sem.wait(1, TIMEOUT)
    del buf
    gc.collect()
    assert isinstance(sem.failure.__cause__, ZeroDivisionError)
    assert ref() is None


def test_stream_surfaces_the_cause(device):
    """A stream names the failing op; its ``__cause__`` is the semaphore's failure, whose
    own cause is the kernel's exception."""
    exe = _exe(device)
    stream = device.create_stream()
    buf = device.allocator.allocate_buffer(None, 64)
    stream.dispatch(exe, "divide_by_zero", DispatchConfig.static(1), bindings=[buf])
    with pytest.raises(hal.HalError) as info:
        stream.synchronize(TIMEOUT)
    assert "stream op" in info.value.message
    _assert_chained(info.value.__cause__)


@pytest.mark.parametrize("submit", [_submit_dispatch, _submit_command_buffer])
def test_profiled_execution_chains_the_cause_too(device, submit):
    """While dispatch events are captured, programs run one record at a time through
    another path; the kernel's exception is chained there as well."""
    from hal_core.profiling import ProfilingDataFamily, ProfilingOptions, StatisticsSink

    options = ProfilingOptions(ProfilingDataFamily.DISPATCH_EVENTS, sinks=[StatisticsSink()])
    with device.profiling_begin(options):
        exe = _exe(device)
        buf = device.allocator.allocate_buffer(None, 64)
        sem = device.create_semaphore()
        submit(device, exe, buf, sem)
        with pytest.raises(hal.HalError) as info:
            sem.wait(1, TIMEOUT)
    _assert_chained(info.value)
