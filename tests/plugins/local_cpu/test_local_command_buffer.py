"""The local CPU replay form: segments, record sharing, the no-compiler interpreter (a
model test against the native replay loop), transient buffers, and stress."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hal_local_cpu import command_buffer as lcb
from hal_local_cpu.executable_native import replay_available
from hal_local_cpu.kernels import native_library, python_module
from hypothesis import given, settings
from hypothesis import strategies as st

import hal_core as hal
from hal_core import BufferRef, CommandBufferMode, CommandCategory, DispatchConfig, QueueAffinity

ANY = QueueAffinity.ANY
TIMEOUT = 20.0
ONE = DispatchConfig.static(1)
COUNT_4 = np.array([4], np.uint32).tobytes()  # the element kernels' count constant
needs_replay = pytest.mark.skipif(
    not replay_available(), reason="no C compiler for the replay loop"
)


@pytest.fixture(scope="module", params=["local-task://", "local-sync://"])
def device(request):
    dev = hal.create_device(request.param)
    yield dev
    dev.close()


@pytest.fixture(scope="module")
def native(device):
    if not replay_available():
        pytest.skip("no C compiler")
    return device.create_executable_cache("t").prepare(
        "local-cpu-native", native_library("cts_kernels")
    )


@pytest.fixture(scope="module")
def python_exe(device):
    return device.create_executable_cache("t").prepare(
        "local-cpu-python", python_module("cts_kernels")
    )


def _buf(device, size, data=None):
    b = device.allocator.allocate_buffer(
        hal.BufferParams(usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.MAPPING), size
    )
    if data is not None:
        b.write(data)
    return b


def _run(device, cb, table=None):
    sem = device.create_semaphore()
    device.queue_execute(ANY, (), [(sem, 1)], cb, table)
    sem.wait(1, TIMEOUT)


def _record(device, fn, mode=0, capacity=0):
    cb = device.create_command_buffer(mode, CommandCategory.ANY, ANY, capacity)
    cb.begin()
    fn(cb)
    cb.end()
    return cb


@needs_replay
def test_many_native_dispatches_are_one_segment(device, native):
    noop = native.lookup_function("noop")
    cb = _record(
        device,
        lambda cb: [cb.dispatch(native, noop, ONE) or cb.execution_barrier() for _ in range(512)],
    )
    program = cb.program
    assert program.segments == ((lcb.SEG_NATIVE, 0, 512),)
    assert len(program.records) == 512  # barriers leave no record


@needs_replay
def test_repeated_bindings_share_one_span(device, native):
    a, b = _buf(device, 16), _buf(device, 16)
    ab, ba = (a, b), (b, a)
    neg = native.lookup_function("negate")

    def rec(cb):
        for i in range(100):
            cb.dispatch(native, neg, ONE, COUNT_4, ab if i & 1 else ba)

    program = _record(device, rec).program
    assert len(program.bind_base) == 4  # two spans of two bindings, shared by 100 records
    assert len(program.direct) == 2


@needs_replay
def test_segments_split_for_python_and_parallel_work(device, native, python_exe):
    out = _buf(device, 4 * 64)
    ids = native.lookup_function("write_workgroup_ids")

    def rec(cb):
        cb.dispatch(native, ids, ONE, b"", [out])
        cb.dispatch(python_exe, "noop", ONE)
        cb.dispatch(native, ids, DispatchConfig.static(64), b"", [out])
        cb.dispatch(native, ids, ONE, b"", [out])

    program = _record(device, rec).program
    kinds = [k for k, _b, _e in program.segments]
    if device.backend.workers is not None:
        assert kinds == [lcb.SEG_NATIVE, lcb.SEG_PYTHON, lcb.SEG_PARALLEL, lcb.SEG_NATIVE]
    else:
        assert kinds == [lcb.SEG_NATIVE, lcb.SEG_PYTHON, lcb.SEG_NATIVE]
    _run(device, _record(device, rec))
    assert np.frombuffer(out.read(), np.uint32).tolist() == list(range(64))


# -- the interpreter (no compiler) agrees with the native replay loop -----------------------

_ops = st.one_of(
    st.tuples(
        st.just("fill"),
        st.integers(0, 63),
        st.integers(0, 64),
        st.sampled_from([1, 2, 4]),
        st.integers(0, 255),
    ),
    st.tuples(st.just("copy"), st.integers(0, 63), st.integers(0, 63), st.integers(0, 64)),
    st.tuples(st.just("update"), st.integers(0, 63), st.binary(min_size=0, max_size=64)),
)


def _apply(device, ops, mode, indirect):
    a = _buf(device, 64, bytes(range(64)))
    b = _buf(device, 64, bytes(range(64, 128)))
    model = {0: bytearray(range(64)), 1: bytearray(range(64, 128))}
    bufs = [a, b]
    ref = (
        (lambda i, off, n: BufferRef.indirect(i, off, n))
        if indirect
        else (lambda i, off, n: BufferRef(bufs[i], off, n))
    )

    def rec(cb):
        for k, op in enumerate(ops):
            t = k & 1
            if op[0] == "fill":
                _, off, n, plen, value = op
                off -= off % plen
                n = min(n, 64 - off)
                n -= n % plen
                pattern = bytes([value]) * plen
                cb.fill_buffer(ref(t, off, n), pattern)
                model[t][off : off + n] = (pattern * 64)[:n]
            elif op[0] == "copy":
                _, so, to, n = op
                n = min(n, 64 - so, 64 - to)
                cb.copy_buffer(ref(1 - t, so, n), ref(t, to, n))
                model[t][to : to + n] = model[1 - t][so : so + n]
            else:
                _, off, data = op
                data = data[: 64 - off]
                cb.update_buffer(data, 0, ref(t, off, len(data)))
                model[t][off : off + len(data)] = data
            cb.execution_barrier()

    cb = _record(device, rec, mode, 2 if indirect else 0)
    _run(device, cb, bufs if indirect else None)
    return a.read(), b.read(), bytes(model[0]), bytes(model[1]), cb.program.native


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(_ops, max_size=12), indirect=st.booleans(), unvalidated=st.booleans())
def test_interpreter_and_native_replay_match_model(device, ops, indirect, unvalidated):
    mode = CommandBufferMode.UNVALIDATED if unvalidated else 0
    got_a, got_b, want_a, want_b, _ = _apply(device, ops, mode, indirect)
    assert (got_a, got_b) == (want_a, want_b)
    original = lcb.replay_library
    lcb.replay_library = _no_compiler
    try:
        got_a, got_b, want_a, want_b, was_native = _apply(device, ops, mode, indirect)
    finally:
        lcb.replay_library = original
    assert not was_native
    assert (got_a, got_b) == (want_a, want_b)


def _no_compiler():
    raise hal.UnavailableError("simulated: no C compiler")


@needs_replay
def test_interpreter_runs_native_dispatches(device, native, monkeypatch):
    monkeypatch.setattr(lcb, "replay_library", _no_compiler)
    src = _buf(device, 16, np.array([1, 2, 3, 4], np.float32).tobytes())
    dst = _buf(device, 16)
    out = _buf(device, 4 * 8)
    consts = np.array([3, 10], np.float32).tobytes() + COUNT_4

    def rec(cb):
        cb.dispatch(native, "scale_and_offset", ONE, consts, [src, dst])
        cb.dispatch(native, "write_workgroup_ids", DispatchConfig.static(2, 2, 2), b"", [out])

    cb = _record(device, rec)
    assert not cb.program.native
    _run(device, cb)
    assert np.frombuffer(dst.read(), np.float32).tolist() == [13, 16, 19, 22]
    assert np.frombuffer(out.read(), np.uint32).tolist() == list(range(8))
    bad = _record(
        device,
        lambda cb: cb.dispatch(
            native, "fail_status", DispatchConfig.static(3), np.array([5, 2], np.uint32).tobytes()
        ),
    )
    sem = device.create_semaphore()
    device.queue_execute(ANY, (), [(sem, 1)], bad)
    with pytest.raises(hal.NotFoundError):
        sem.wait(1, TIMEOUT)


# -- transient (queue_alloca) buffers ------------------------------------------------------


def test_static_ref_to_transient_buffer(device):
    gate, alloc_done = device.create_semaphore(), device.create_semaphore()
    buf = device.queue_alloca(ANY, [(gate, 1)], [(alloc_done, 1)], None, 32)
    assert not buf.is_committed
    cb = _record(device, lambda cb: cb.fill_buffer(buf, b"\x3c"))  # recorded before commit
    done = device.create_semaphore()
    device.queue_execute(ANY, [(alloc_done, 1)], [(done, 1)], cb)
    gate.signal(1)
    done.wait(1, TIMEOUT)
    out = bytearray(32)
    f = device.import_file(out, hal.MemoryAccess.READ | hal.MemoryAccess.WRITE)
    device.queue_write(ANY, (), [(done, 2)], buf, 0, f, 0, 32)
    done.wait(2, TIMEOUT)
    assert bytes(out) == b"\x3c" * 32
    device.queue_dealloca(ANY, (), [(done, 3)], buf)
    done.wait(3, TIMEOUT)
    # Replaying after the buffer was deallocated fails cleanly, it never touches freed memory.
    device.queue_execute(ANY, (), [(done, 4)], cb)
    with pytest.raises(hal.FailedPreconditionError):
        done.wait(4, TIMEOUT)


# -- stress ----------------------------------------------------------------------------------


@needs_replay
def test_concurrent_submitters_share_one_command_buffer(device, native):
    cb = _record(
        device,
        lambda cb: cb.dispatch(
            native, "double", ONE, COUNT_4, [BufferRef.indirect(0), BufferRef.indirect(1)]
        ),
        capacity=2,
    )
    errors = []
    n_threads, per_thread = 4, 25

    def submitter(t):
        try:
            for i in range(per_thread):
                v = float(t * 1000 + i)
                src = _buf(device, 16, np.full(4, v, np.float32).tobytes())
                dst = _buf(device, 16)
                sem = device.create_semaphore()
                device.queue_execute(ANY, (), [(sem, 1)], cb, [src, dst])
                sem.wait(1, TIMEOUT)
                got = np.frombuffer(dst.read(), np.float32).tolist()
                if got != [2 * v] * 4:
                    errors.append((t, i, got))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=submitter, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


@needs_replay
def test_failures_interleaved_with_good_work(device, native):
    out = _buf(device, 4)
    good = _record(device, lambda cb: cb.dispatch(native, "write_workgroup_ids", ONE, b"", [out]))
    bad = _record(
        device,
        lambda cb: cb.dispatch(
            native,
            "fail_status",
            DispatchConfig.static(64),
            np.array([10, 33], np.uint32).tobytes(),
        ),
    )
    sems = []
    for i in range(40):
        sem = device.create_semaphore()
        device.queue_execute(ANY, (), [(sem, 1)], bad if i % 3 == 0 else good)
        sems.append((i, sem))
    for i, sem in sems:
        if i % 3 == 0:
            with pytest.raises(hal.AbortedError, match="fail_status"):
                sem.wait(1, TIMEOUT)
        else:
            sem.wait(1, TIMEOUT)


_HANDSHAKE_KERNEL = r"""
#include <time.h>
#include "hal_cpu_abi.h"
/* binding 0: uint32 [started, go]. Sets started, spins until go (10 s cap). */
static int handshake(const hal_cpu_dispatch_state_t* s, uint32_t x, uint32_t y, uint32_t z) {
  volatile uint32_t* flags = (volatile uint32_t*)s->binding_ptrs[0];
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  flags[0] = 1;
  while (!flags[1]) {
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (t.tv_sec - t0.tv_sec > 10) return 4; /* DEADLINE_EXCEEDED */
  }
  return 0;
}
static const hal_cpu_export_t e[] = {{"handshake", handshake, 1, 0, {1, 1, 1}, 0}};
static const hal_cpu_library_t k = {1, 1, e};
const hal_cpu_library_t* hal_cpu_library_query(uint32_t v) { return &k; }
"""


@needs_replay
def test_native_workgroups_run_without_the_gil(tmp_path):
    """A kernel spins until Python writes a flag: only possible if the GIL is released
    while native workgroups run."""
    from hal_local_cpu import native_build

    src = tmp_path / "handshake.c"
    src.write_text(_HANDSHAKE_KERNEL)
    lib = native_build.build_shared_library("handshake", src)
    dev = hal.create_device("local-task://")
    try:
        exe = dev.create_executable_cache("t").prepare("local-cpu-native", str(lib))
        flags = _buf(dev, 8)
        sem = dev.create_semaphore()
        dev.queue_dispatch(ANY, (), [(sem, 1)], exe, "handshake", ONE, b"", [flags])
        with flags.map() as m:
            view = m.asarray(np.uint32)
            import time

            deadline = time.monotonic() + 10
            while view[0] == 0 and time.monotonic() < deadline:
                pass  # spin: the worker holds no GIL, so this loop runs
            assert view[0] == 1
            view[1] = 1
        sem.wait(1, TIMEOUT)
    finally:
        dev.close()


@needs_replay
@pytest.mark.parametrize("compiled", [True, False])
def test_unvalidated_dispatch_misuse_fails_cleanly(device, native, compiled, monkeypatch):
    """UNVALIDATED skips recording checks, yet a dispatch with too few bindings or
    constants, or a bad ordinal, must fail with a status, never crash the process."""
    if not compiled:
        monkeypatch.setattr(lcb, "replay_library", _no_compiler)
    mode = CommandBufferMode.UNVALIDATED
    buf = _buf(device, 16)
    few_bindings = _record(
        device, lambda cb: cb.dispatch(native, "negate", ONE, COUNT_4, [buf]), mode
    )
    sem = device.create_semaphore()
    device.queue_execute(ANY, (), [(sem, 1)], few_bindings)
    with pytest.raises(hal.InvalidArgumentError, match="binding|status"):
        sem.wait(1, TIMEOUT)
    for bad in (
        lambda cb: cb.dispatch(native, "scale_and_offset", ONE, b"", [buf, buf]),
        lambda cb: cb.dispatch(native, -1, ONE, b"", []),
        lambda cb: cb.dispatch(native, 99, ONE, b"", []),
    ):
        cb = device.create_command_buffer(mode)
        cb.begin()
        bad(cb)
        with pytest.raises((hal.InvalidArgumentError, hal.OutOfRangeError)):
            cb.end()
    ok = device.create_semaphore()
    good = _record(device, lambda cb: cb.dispatch(native, "noop", ONE), mode)
    device.queue_execute(ANY, (), [(ok, 1)], good)
    ok.wait(1, TIMEOUT)


@needs_replay
@pytest.mark.parametrize("mode", [0, CommandBufferMode.UNRETAINED])
def test_errors_name_the_failing_command(device, native, mode):
    out = _buf(device, 8)

    def rec(cb):
        cb.fill_buffer(out, b"\x01")  # command 0
        cb.execution_barrier()  # command 1: no record
        cb.begin_debug_group("g")  # command 2: no record
        cb.dispatch(native, "fail_status", ONE, np.array([9, 0], np.uint32).tobytes())  # 3
        cb.end_debug_group()

    cb = _record(device, rec, mode)
    sem = device.create_semaphore()
    device.queue_execute(ANY, (), [(sem, 1)], cb)
    with pytest.raises(
        hal.FailedPreconditionError, match=r"command 3 \(dispatch of 'fail_status'\)"
    ):
        sem.wait(1, TIMEOUT)


# -- record assembly: template/constant runs and binding spans ------------------------------
#
# ``finalize`` builds records from runs of equal (template, constants) and a per-record
# span column, with small-run and many-run (numpy) paths. These tests drive every way a
# run can open (new facts, new constants object, a transfer in between, a Python or
# parallel dispatch) and check the *results* of executing the program against a model.

_N = 64  # float32 elements per buffer

_scale_ops = st.one_of(
    st.tuples(
        st.just("scale"),
        st.integers(0, 2),  # source buffer
        st.integers(0, 2),  # target buffer
        st.integers(-3, 3),  # scale (small integers: exact in float32 either way)
        st.integers(-8, 8),  # offset
        st.integers(0, _N),  # count
        st.booleans(),  # reuse the constants object recorded for these values
        st.booleans(),  # reuse the bindings tuple recorded for this pair
        st.sampled_from(["native", "python"]),
        st.sampled_from([1, 9]),  # 9 workgroups: a parallel segment on local-task
    ),
    st.tuples(st.just("fill"), st.integers(0, 2), st.integers(-9, 9)),
    st.tuples(st.just("update"), st.integers(0, 2), st.integers(0, _N - 1), st.integers(-9, 9)),
    st.just(("barrier",)),
)


def _run_scale_ops(device, exes, ops):
    bufs = [_buf(device, 4 * _N, np.arange(_N, dtype=np.float32).tobytes()) for _ in range(3)]
    model = [np.arange(_N, dtype=np.float32) for _ in range(3)]
    consts_seen: dict = {}
    bindings_seen: dict = {}

    def rec(cb):
        for op in ops:
            if op[0] == "scale":
                _, s, t, scale, offset, count, same_c, same_b, kind, groups = op
                key = (scale, offset, count)
                consts = consts_seen.get(key) if same_c else None
                if consts is None:
                    consts = consts_seen[key] = (
                        np.array([scale, offset], np.float32).tobytes()
                        + np.array([count], np.uint32).tobytes()
                    )
                bindings = bindings_seen.get((s, t)) if same_b else None
                if bindings is None:
                    bindings = bindings_seen[(s, t)] = (bufs[s], BufferRef(bufs[t]))
                cfg = ONE if groups == 1 else DispatchConfig.static(groups)
                cb.dispatch(exes[kind], "scale_and_offset", cfg, consts, bindings)
                model[t][:count] = model[s][:count] * np.float32(scale) + np.float32(offset)
            elif op[0] == "fill":
                _, t, value = op
                cb.fill_buffer(bufs[t], np.array([value], np.float32).tobytes())
                model[t][:] = np.float32(value)
            elif op[0] == "update":
                _, t, at, value = op
                cb.update_buffer(
                    np.array([value], np.float32).tobytes(), 0, BufferRef(bufs[t], 4 * at, 4)
                )
                model[t][at] = np.float32(value)
            else:
                cb.execution_barrier()

    cb = _record(device, rec, CommandBufferMode.UNVALIDATED)
    _run(device, cb)
    return [np.frombuffer(b.read(), np.float32).tolist() for b in bufs], [m.tolist() for m in model]


@needs_replay
@settings(max_examples=20, deadline=None)
@given(ops=st.lists(_scale_ops, max_size=60))
def test_record_runs_match_model(device, native, python_exe, ops):
    got, want = _run_scale_ops(device, {"native": native, "python": python_exe}, ops)
    assert got == want


@needs_replay
def test_many_runs_take_the_bulk_path(device, native):
    # Distinct constants on every dispatch and a transfer between dispatches: hundreds of
    # runs, past the small-run fast path.
    ops = []
    for i in range(120):
        ops.append(
            ("scale", i % 3, (i + 1) % 3, 1 + i % 2, i % 5, _N - i % 7, False, True, "native", 1)
        )
        if i % 4 == 0:
            ops.append(("update", i % 3, i % _N, i % 9))
    got, want = _run_scale_ops(device, {"native": native}, ops)
    assert got == want


@needs_replay
def test_chain_records_share_runs_and_spans(device, native):
    a, b = _buf(device, 16), _buf(device, 16)
    ab, ba = (a, b), (b, a)
    neg = native.lookup_function("negate")

    def rec(cb):
        for i in range(64):
            cb.dispatch(native, neg, ONE, COUNT_4, ab if i & 1 else ba)
            cb.execution_barrier()

    records = _record(device, rec, CommandBufferMode.UNVALIDATED).program.records
    assert len(records) == 64
    # Every record carries the same decoded facts and constants pointer; only the span
    # (words 9, 10) alternates between the two binding tuples.
    fixed = np.delete(records, [9, 10], axis=1)
    assert (fixed == fixed[0]).all()
    assert records[:, 9].tolist() == [0, 2] * 32
    assert (records[:, 10] == 2).all()


@needs_replay
def test_transfer_inside_a_chain_reopens_its_run(device, native):
    # The same template, constants and bindings before and after a transfer: the
    # dispatch after it must not be swallowed by the transfer's run.
    same = ("scale", 0, 1, 2, 1, _N, True, True, "native", 1)
    ops = [same, ("fill", 0, 5), same, ("update", 0, 3, 7), same, ("barrier",), same]
    got, want = _run_scale_ops(device, {"native": native}, ops)
    assert got == want
