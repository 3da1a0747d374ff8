"""CTS: dispatch in command buffers: constants and bindings, multiple entry points,
multiple workgroups, indirect workgroup counts, pipelines, reuse, and kernel failures.

Kernels are the backend's ``cts_kernels`` library in each executable format it provides
(see ``dispatch_support``)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import hal_core as hal
from hal_core import (
    BufferRef,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    DispatchFlags,
    QueueAffinity,
)

from .context import TIMEOUT
from .dispatch_support import (  # noqa: F401
    Refs,
    count_constant,
    dbuffer,
    executable,
    f32,
    pytest_generate_tests,
    read_f32,
    read_u32,
    record,
    scale_offset_constants,
    submit_and_wait,
    u32,
)

pytestmark = pytest.mark.hal_requires("dispatch")

ANY = QueueAffinity.ANY
ONE = DispatchConfig.static(1)
COUNT_4 = count_constant(4)
SCALE_3_OFFSET_10 = scale_offset_constants(3.0, 10.0, 4)


def test_dispatch_scale_and_offset(cts, exe_format, ref_mode):
    exe = executable(cts, exe_format)
    refs = Refs(ref_mode)
    src = dbuffer(cts, 16, f32([1, 2, 3, 4]))
    dst = dbuffer(cts, 16)
    cb = refs.command_buffer(cts)
    cb.begin()
    cb.dispatch(exe, "scale_and_offset", ONE, SCALE_3_OFFSET_10, [refs(src), refs(dst)])
    cb.end()
    refs.execute(cts, cb)
    assert read_f32(cts, dst) == [13, 16, 19, 22]


def test_dispatch_constants_as_words(cts, exe_format):
    exe = executable(cts, exe_format)
    src = dbuffer(cts, 16, f32([1, 2, 3, 4]))
    dst = dbuffer(cts, 16)
    words = np.array([0.5, -1.0], np.float32).view(np.uint32).tolist() + [4]
    cb = record(cts, lambda cb: cb.dispatch(exe, "scale_and_offset", ONE, words, [src, dst]))
    submit_and_wait(cts, cb)
    assert read_f32(cts, dst) == [-0.5, 0, 0.5, 1.0]


def test_dispatch_mixed_direct_and_indirect_bindings(cts, exe_format):
    if not cts.has_tag("indirect"):
        pytest.skip("needs the indirect tag")
    exe = executable(cts, exe_format)
    src = dbuffer(cts, 16, f32([1, 2, 3, 4]))
    dst = dbuffer(cts, 16)
    cb = record(
        cts,
        lambda cb: cb.dispatch(
            exe, "scale_and_offset", ONE, SCALE_3_OFFSET_10, [src, BufferRef.indirect(0)]
        ),
        capacity=1,
    )
    submit_and_wait(cts, cb, [dst])
    assert read_f32(cts, dst) == [13, 16, 19, 22]


def test_multi_entrypoint(cts, exe_format):
    exe = executable(cts, exe_format)
    src = dbuffer(cts, 16, f32([1, -2, 3, -4]))
    neg = dbuffer(cts, 16)
    dbl = dbuffer(cts, 16)

    def rec(cb):
        cb.dispatch(exe, "negate", ONE, COUNT_4, [src, neg])
        cb.dispatch(exe, exe.lookup_function("double"), ONE, COUNT_4, [src, dbl])

    submit_and_wait(cts, record(cts, rec))
    assert read_f32(cts, neg) == [-1, 2, -3, 4]
    assert read_f32(cts, dbl) == [2, -4, 6, -8]


@pytest.mark.parametrize("counts", [(32, 1, 1), (4, 4, 2), (2, 1, 16)])
def test_multi_workgroup(cts, exe_format, counts):
    exe = executable(cts, exe_format)
    out = dbuffer(cts, 4 * 32, b"\xff" * 128)
    cb = record(
        cts, lambda cb: cb.dispatch(exe, "write_workgroup_ids", DispatchConfig(counts), b"", [out])
    )
    submit_and_wait(cts, cb)
    assert read_u32(cts, out) == list(range(32))


def test_large_workgroup_count_over_tiles(cts, exe_format):
    exe = executable(cts, exe_format)
    n = 64 * 20
    values = np.arange(n, dtype=np.float32)
    src = dbuffer(cts, 4 * n, values.tobytes())
    dst = dbuffer(cts, 4 * n)
    cb = record(
        cts, lambda cb: cb.dispatch(exe, "double", DispatchConfig.static(20), u32([n]), [src, dst])
    )
    submit_and_wait(cts, cb)
    assert np.array_equal(np.frombuffer(cts.read_bytes(dst), np.float32), values * 2)


# -- indirect parameters ----------------------------------------------------------------------


def _ids_dispatch_indirect(exe, params_ref, out, flags=DispatchFlags.DYNAMIC_INDIRECT_PARAMETERS):
    return lambda cb: cb.dispatch(
        exe, "write_workgroup_ids", DispatchConfig.indirect(params_ref), b"", [out], flags
    )


@pytest.mark.parametrize(
    "flags", [DispatchFlags.DYNAMIC_INDIRECT_PARAMETERS, DispatchFlags.STATIC_INDIRECT_PARAMETERS]
)
def test_indirect_parameters_from_queue_update(cts, exe_format, flags):
    exe = executable(cts, exe_format)
    params = dbuffer(cts, 12, u32([4, 2, 1]))
    out = dbuffer(cts, 4 * 16, b"\xff" * 64)
    submit_and_wait(
        cts, record(cts, _ids_dispatch_indirect(exe, BufferRef(params, 0, 12), out, flags))
    )
    assert read_u32(cts, out) == list(range(8)) + [0xFFFFFFFF] * 8


def test_indirect_parameters_from_update_in_command_buffer(cts, exe_format, ref_mode):
    exe = executable(cts, exe_format)
    refs = Refs(ref_mode)
    params = dbuffer(cts, 12)
    out = dbuffer(cts, 4 * 16, b"\xff" * 64)
    cb = refs.command_buffer(cts)
    cb.begin()
    cb.update_buffer(u32([3, 1, 1]), 0, refs(params, 0, 12))
    cb.execution_barrier()
    cb.dispatch(
        exe,
        "write_workgroup_ids",
        DispatchConfig.indirect(refs(params, 0, 12)),
        b"",
        [refs(out)],
        DispatchFlags.DYNAMIC_INDIRECT_PARAMETERS,
    )
    cb.end()
    refs.execute(cts, cb)
    assert read_u32(cts, out)[:4] == [0, 1, 2, 0xFFFFFFFF]


def test_indirect_parameters_from_fill(cts, exe_format):
    exe = executable(cts, exe_format)
    params = dbuffer(cts, 12)
    out = dbuffer(cts, 4 * 8, b"\xff" * 32)

    def rec(cb):
        cb.fill_buffer(BufferRef(params, 0, 12), 1, 4)  # counts (1, 1, 1)
        cb.execution_barrier()
        _ids_dispatch_indirect(exe, BufferRef(params, 0, 12), out)(cb)

    submit_and_wait(cts, record(cts, rec))
    assert read_u32(cts, out)[:2] == [0, 0xFFFFFFFF]


def test_indirect_parameters_from_previous_dispatch(cts, exe_format):
    exe = executable(cts, exe_format)
    params = dbuffer(cts, 12)
    out = dbuffer(cts, 4 * 16, b"\xff" * 64)

    def rec(cb):
        cb.dispatch(exe, "write_workgroup_count", ONE, u32([5, 2, 1]), [params])
        cb.execution_barrier()
        _ids_dispatch_indirect(exe, BufferRef(params), out)(cb)  # whole-buffer ref

    submit_and_wait(cts, record(cts, rec))
    assert read_u32(cts, out) == list(range(10)) + [0xFFFFFFFF] * 6


def test_indirect_parameters_in_suballocated_buffer(cts, exe_format):
    """The parameters sit at offset 16 of a larger allocation, reached through a
    subspan: the subspan's base offset must be honoured."""
    exe = executable(cts, exe_format)
    whole = dbuffer(cts, 64, u32([9, 9, 9, 9, 2, 2, 1] + [9] * 9))
    params = whole.subspan(16, 12)
    out = dbuffer(cts, 4 * 8, b"\xff" * 32)
    submit_and_wait(cts, record(cts, _ids_dispatch_indirect(exe, BufferRef(params, 0, 12), out)))
    assert read_u32(cts, out) == [0, 1, 2, 3] + [0xFFFFFFFF] * 4


def test_indirect_zero_workgroups_is_a_no_op(cts, exe_format):
    exe = executable(cts, exe_format)
    params = dbuffer(cts, 12, u32([0, 1, 1]))
    out = dbuffer(cts, 8, b"\xff" * 8)
    submit_and_wait(cts, record(cts, _ids_dispatch_indirect(exe, BufferRef(params, 0, 12), out)))
    assert cts.read_bytes(out) == b"\xff" * 8


# -- pipelines and reuse ------------------------------------------------------------------------


def test_pipeline_update_dispatch_dispatch(cts, exe_format, ref_mode):
    exe = executable(cts, exe_format)
    refs = Refs(ref_mode)
    a = dbuffer(cts, 16)
    b = dbuffer(cts, 16)
    c = dbuffer(cts, 16)
    cb = refs.command_buffer(cts)
    cb.begin()
    cb.update_buffer(f32([1, 2, 3, 4]), 0, refs(a, 0, 16))
    cb.execution_barrier()
    cb.dispatch(exe, "scale_and_offset", ONE, SCALE_3_OFFSET_10, [refs(a), refs(b)])
    cb.execution_barrier()
    cb.dispatch(exe, "negate", ONE, COUNT_4, [refs(b), refs(c)])
    cb.end()
    refs.execute(cts, cb)
    assert read_f32(cts, c) == [-13, -16, -19, -22]


def test_pipeline_fill_dispatch_dispatch_copy(cts, exe_format):
    exe = executable(cts, exe_format)
    a = dbuffer(cts, 16)
    b = dbuffer(cts, 16)
    c = dbuffer(cts, 16)
    out = dbuffer(cts, 16)

    def rec(cb):
        cb.fill_buffer(a, np.float32(2.0).view(np.uint32).item(), 4)
        cb.execution_barrier()
        cb.dispatch(exe, "double", ONE, COUNT_4, [a, b])
        cb.execution_barrier()
        cb.dispatch(exe, "scale_and_offset", ONE, SCALE_3_OFFSET_10, [b, c])
        cb.execution_barrier()
        cb.copy_buffer(c, out)

    submit_and_wait(cts, record(cts, rec))
    assert read_f32(cts, out) == [22, 22, 22, 22]


def test_chained_submissions_through_semaphores(cts, exe_format):
    exe = executable(cts, exe_format)
    a = dbuffer(cts, 16, f32([1, 2, 3, 4]))
    b = dbuffer(cts, 16)
    c = dbuffer(cts, 16)
    cb1 = record(cts, lambda cb: cb.dispatch(exe, "double", ONE, COUNT_4, [a, b]))
    cb2 = record(cts, lambda cb: cb.dispatch(exe, "negate", ONE, COUNT_4, [b, c]))
    head, mid, tail = cts.semaphore(), cts.semaphore(), cts.semaphore()
    cts.device.queue_execute(ANY, [(mid, 1)], [(tail, 1)], cb2)  # wait before signal
    cts.device.queue_execute(ANY, [(head, 1)], [(mid, 1)], cb1)
    assert tail.value == 0
    head.signal(1)
    tail.wait(1, TIMEOUT)
    assert read_f32(cts, c) == [-2, -4, -6, -8]


def test_reuse_with_new_bindings(cts, exe_format):
    if not cts.has_tag("indirect"):
        pytest.skip("needs the indirect tag")
    exe = executable(cts, exe_format)
    cb = cts.device.create_command_buffer(0, CommandCategory.ANY, ANY, 2)
    cb.begin()
    cb.dispatch(
        exe,
        "scale_and_offset",
        ONE,
        SCALE_3_OFFSET_10,
        [BufferRef.indirect(0), BufferRef.indirect(1)],
    )
    cb.end()
    for k in range(3):
        src = dbuffer(cts, 16, f32([k, k + 1, k + 2, k + 3]))
        dst = dbuffer(cts, 16)
        submit_and_wait(cts, cb, [src, dst])
        assert read_f32(cts, dst) == [3 * v + 10 for v in (k, k + 1, k + 2, k + 3)]


def test_reuse_many_dispatches(cts, exe_format):
    exe = executable(cts, exe_format)
    n = 32
    src = dbuffer(cts, 4 * n, f32(np.arange(n)))
    outs = [dbuffer(cts, 4) for _ in range(n)]

    def rec(cb):
        for i in range(n):
            cb.dispatch(exe, "negate", ONE, count_constant(1), [BufferRef(src, 4 * i, 4), outs[i]])

    cb = record(cts, rec, mode=0)
    assert cb.dispatch_count == n
    for _ in range(2):
        submit_and_wait(cts, cb)
    assert [read_f32(cts, o)[0] for o in outs] == [-float(i) for i in range(n)]


def test_concurrent_submissions_of_one_command_buffer(cts, exe_format):
    if not cts.has_tag("indirect"):
        pytest.skip("needs the indirect tag")
    exe = executable(cts, exe_format)
    cb = cts.device.create_command_buffer(0, CommandCategory.ANY, ANY, 2)
    cb.begin()
    cb.dispatch(exe, "double", ONE, COUNT_4, [BufferRef.indirect(0), BufferRef.indirect(1)])
    cb.end()
    head = cts.semaphore()
    pairs = []
    sems = []
    for k in range(4):
        src = dbuffer(cts, 16, f32([k] * 4))
        dst = dbuffer(cts, 16)
        sem = cts.semaphore()
        cts.device.queue_execute(ANY, [(head, 1)], [(sem, 1)], cb, [src, dst])
        pairs.append((k, dst))
        sems.append(sem)
    head.signal(1)
    hal.wait_all([(s, 1) for s in sems], TIMEOUT)
    for k, dst in pairs:
        assert read_f32(cts, dst) == [2 * k] * 4


def test_unretained_command_buffer(cts, exe_format):
    exe = executable(cts, exe_format)
    src = dbuffer(cts, 16, f32([1, 2, 3, 4]))
    dst = dbuffer(cts, 16)
    cb = record(
        cts,
        lambda cb: cb.dispatch(exe, "negate", ONE, COUNT_4, [src, dst]),
        mode=CommandBufferMode.UNRETAINED | CommandBufferMode.ONE_SHOT,
    )
    assert cb.commands == []  # the recording does not hold the caller's buffers
    submit_and_wait(cts, cb)
    assert read_f32(cts, dst) == [-1, -2, -3, -4]
    # Nor does anything else the command buffer keeps (its validation state included):
    # buffers the caller drops are gone at once.
    pair = [dbuffer(cts, 16), dbuffer(cts, 16)]
    kept = record(
        cts,
        lambda cb: cb.dispatch(exe, "negate", ONE, COUNT_4, list(pair)),
        mode=CommandBufferMode.UNRETAINED,
    )
    watch = [weakref.ref(buffer) for buffer in pair]
    pair.clear()
    gc.collect()
    assert [w() for w in watch] == [None, None]
    kept.close()


# -- bad input ---------------------------------------------------------------------------------


def test_dispatch_bad_arguments(cts, exe_format):
    exe = executable(cts, exe_format)
    src = dbuffer(cts, 16)
    dst = dbuffer(cts, 16)
    no_storage = cts.device.allocator.allocate_buffer(
        hal.BufferParams(usage=hal.BufferUsage.TRANSFER), 16
    )
    cb = cts.device.create_command_buffer(0, CommandCategory.ANY, ANY, 1)
    cb.begin()
    with pytest.raises(hal.NotFoundError, match="no_such"):
        cb.dispatch(exe, "no_such", ONE, b"", [src, dst])
    with pytest.raises(hal.InvalidArgumentError, match="multiple of 4"):
        cb.dispatch(exe, "scale_and_offset", ONE, b"\x00" * 6, [src, dst])
    with pytest.raises(hal.InvalidArgumentError, match="takes 3 constants"):
        cb.dispatch(exe, "scale_and_offset", ONE, b"\x00" * 4, [src, dst])
    with pytest.raises(hal.InvalidArgumentError, match="uses 2 bindings"):
        cb.dispatch(exe, "negate", ONE, COUNT_4, [src])
    with pytest.raises(hal.PermissionDeniedError, match="DISPATCH_STORAGE"):
        cb.dispatch(exe, "negate", ONE, COUNT_4, [src, no_storage])
    with pytest.raises(hal.OutOfRangeError):
        cb.dispatch(exe, "negate", ONE, COUNT_4, [src, BufferRef(dst, 8, 16)])
    with pytest.raises(hal.OutOfRangeError, match="binding_capacity"):
        cb.dispatch(exe, "negate", ONE, COUNT_4, [src, BufferRef.indirect(3)])
    with pytest.raises(hal.InvalidArgumentError, match="DispatchConfig"):
        cb.dispatch(exe, "negate", (1, 1, 1), COUNT_4, [src, dst])
    with pytest.raises(hal.PermissionDeniedError, match="DISPATCH_INDIRECT_PARAMETERS"):
        cb.dispatch(
            exe,
            "write_workgroup_ids",
            DispatchConfig.indirect(BufferRef(no_storage, 0, 12)),
            b"",
            [dst],
        )
    with pytest.raises(hal.InvalidArgumentError, match="aligned"):
        cb.dispatch(
            exe, "write_workgroup_ids", DispatchConfig.indirect(BufferRef(src, 2, 12)), b"", [dst]
        )
    with pytest.raises(hal.InvalidArgumentError, match="12 bytes"):
        cb.dispatch(
            exe, "write_workgroup_ids", DispatchConfig.indirect(BufferRef(src, 0, 8)), b"", [dst]
        )
    with pytest.raises(hal.UnimplementedError):
        cb.dispatch(exe, "negate", ONE, COUNT_4, [src, dst], DispatchFlags.CUSTOM_DIRECT_ARGUMENTS)
    cb.dispatch(exe, "negate", ONE, COUNT_4, [src, dst])  # still recordable
    cb.end()
    submit_and_wait(cts, cb, [src])


def test_dispatch_wrong_category(cts, exe_format):
    exe = executable(cts, exe_format)
    buf = dbuffer(cts, 16)
    cb = cts.device.create_command_buffer(0, CommandCategory.TRANSFER)
    cb.begin()
    with pytest.raises(hal.FailedPreconditionError, match="DISPATCH"):
        cb.dispatch(exe, "negate", ONE, COUNT_4, [buf, buf])
    cb.end()


def test_kernel_error_status_fails_signals(cts, exe_format):
    exe = executable(cts, exe_format)
    out = dbuffer(cts, 8)
    cb = record(
        cts,
        lambda cb: cb.dispatch(exe, "fail_status", DispatchConfig.static(8), u32([7, 5]), []),
    )
    sem = cts.semaphore()
    sem2 = cts.semaphore()
    cts.device.queue_execute(ANY, (), [(sem, 1), (sem2, 4)], cb)
    with pytest.raises(hal.PermissionDeniedError):
        sem.wait(1, TIMEOUT)
    with pytest.raises(hal.PermissionDeniedError):
        sem2.wait(4, TIMEOUT)
    # Later submissions still work.
    ok = record(cts, lambda cb: cb.fill_buffer(out, b"\x09"))
    submit_and_wait(cts, ok)
    assert cts.read_bytes(out) == b"\x09" * 8


def test_kernel_out_of_range_status(cts, exe_format):
    """write_workgroup_ids returns OUT_OF_RANGE when its output is too small."""
    exe = executable(cts, exe_format)
    out = dbuffer(cts, 8)
    cb = record(
        cts,
        lambda cb: cb.dispatch(exe, "write_workgroup_ids", DispatchConfig.static(4), b"", [out]),
    )
    sem = cts.semaphore()
    cts.device.queue_execute(ANY, (), [(sem, 1)], cb)
    with pytest.raises(hal.OutOfRangeError):
        sem.wait(1, TIMEOUT)


def test_python_kernel_exception_fails_signals(cts, exe_format):
    exe = executable(cts, exe_format)
    try:
        fn = exe.lookup_function("raise_error")
    except hal.NotFoundError:
        pytest.skip(f"{exe_format} has no raising kernel (only Python kernels can raise)")
    cb = record(cts, lambda cb: cb.dispatch(exe, fn, ONE, b"", []))
    sem = cts.semaphore()
    cts.device.queue_execute(ANY, (), [(sem, 1)], cb)
    with pytest.raises(hal.HalError, match="ZeroDivisionError") as info:
        sem.wait(1, TIMEOUT)
    assert info.value.code == hal.StatusCode.UNKNOWN
    submit_and_wait(cts, record(cts, lambda cb: cb.execution_barrier()))
