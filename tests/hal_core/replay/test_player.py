"""The player: corpus captures replay bit-identically where IREE's CPU formats load; a
synthetic capture drives every queue operation and command; substitution; bad captures
fail with the record's byte offset; nothing hangs."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
from _replay_capture import (
    CORPUS,
    CORPUS_NAMES,
    Capture,
    payload,
    ref,
    ref_fields,
    timepoints,
)

import hal_core as hal
from hal_core.replay import (
    OperationCode,
    PayloadType,
    Player,
    ReplayFile,
    Substitution,
    parse_substitution,
)
from hal_core.replay import _format as F

ANY = (1 << 64) - 1
P = PayloadType
O = OperationCode  # noqa: E741


@pytest.fixture(params=["local-task://", "local-sync://"])
def device(request):
    with hal.create_device(request.param) as d:
        yield d


def _iree_cpu_format(device) -> bool:
    return device.create_executable_cache().can_prepare("embedded-elf-x86_64")


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_replays_bit_identical_to_iree(device, name):
    if not _iree_cpu_format(device):
        pytest.skip(f"{device.uri} cannot load IREE's embedded-elf-x86_64 executables yet")
    player = Player(CORPUS / f"{name}.ireereplay", device)
    player.run()
    expected = np.load(CORPUS / f"{name}.expected0.npy")
    got = player.buffer_contents(player.output_buffer_ids[-1])
    assert got == expected.tobytes()


def test_corpus_replays_again_and_times_the_execute_scope(device):
    if not _iree_cpu_format(device):
        pytest.skip(f"{device.uri} cannot load IREE's embedded-elf-x86_64 executables yet")
    player = Player(CORPUS / "mlp.ireereplay", device)
    expected = np.load(CORPUS / "mlp.expected0.npy").tobytes()
    for _ in range(3):
        assert player.run("execute") > 0
        assert player.buffer_contents(player.output_buffer_ids[-1]) == expected
    with pytest.raises(hal.NotFoundError, match="no-such-scope"):
        player.run("no-such-scope")


# -- substitution (runs without IREE's formats: numpy twins of the captured functions) --

CHAIN_FUNCTION = "chain_dispatch_0_matmul_4x4x4_f32"


def _chain_kernels():
    from hal_local_cpu.executable_python import kernel

    @kernel(bindings=3, constants=2, name=CHAIN_FUNCTION)
    def step(bindings, constants, workgroup_id, workgroup_count):
        src, dst = int(constants[0]), int(constants[1])
        a = bindings[0][src : src + 64].view(np.float32).reshape(4, 4)
        w = bindings[1][:64].view(np.float32).reshape(4, 4)
        bindings[2][dst : dst + 64].view(np.float32).reshape(4, 4)[:] = a @ w

    return {CHAIN_FUNCTION: step}


def test_chain_with_a_substituted_python_executable(device):
    sub = Substitution(_chain_kernels(), None, "local-cpu-python", "numpy twin")
    player = Player(CORPUS / "chain.ireereplay", device, substitutions=[sub])
    player.run()
    got = np.frombuffer(player.buffer_contents(player.output_buffer_ids[-1]), np.float32)
    expected = np.load(CORPUS / "chain.expected0.npy").ravel()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_substitution_must_match_the_captured_functions(device):
    from hal_local_cpu.executable_python import kernel

    @kernel(bindings=2, constants=2, name=CHAIN_FUNCTION)
    def wrong_shape(bindings, constants, workgroup_id, workgroup_count):
        pass

    @kernel(bindings=3, constants=2, name="other")
    def wrong_name(bindings, constants, workgroup_id, workgroup_count):
        pass

    for kernels, error, text in [
        ({CHAIN_FUNCTION: wrong_shape}, hal.InvalidArgumentError, "takes 2 bindings"),
        ({"other": wrong_name}, hal.NotFoundError, CHAIN_FUNCTION),
    ]:
        player = Player(
            CORPUS / "chain.ireereplay",
            device,
            substitutions=[Substitution(kernels, 4, "local-cpu-python")],
        )
        with pytest.raises(error, match=text) as info:
            player.run()
        assert "byte offset 1168" in str(info.value)
    player = Player(
        CORPUS / "chain.ireereplay",
        device,
        substitutions=[Substitution(b"x", None, "no-such-format")],
    )
    with pytest.raises(hal.UnimplementedError, match="no-such-format"):
        player.run()


def test_parse_substitution(tmp_path):
    path = tmp_path / "exe.so"
    path.write_bytes(b"\x7fELF")
    s = parse_substitution(f"4@embedded-elf-x86_64={path}")
    assert (s.executable_id, s.format, s.data) == (4, "embedded-elf-x86_64", b"\x7fELF")
    s = parse_substitution("all@local-cpu-python=some.module")
    assert (s.executable_id, s.format, s.data) == (None, "local-cpu-python", "some.module")
    for bad in ("4", "=x", "four=x", "4@=x", "0=x"):
        with pytest.raises(hal.InvalidArgumentError):
            parse_substitution(bad)


# -- a synthetic capture: every queue operation and command-buffer command ------------


def _kernels():
    from hal_local_cpu.executable_python import kernel

    @kernel(bindings=1, constants=1, name="add_const")
    def add_const(bindings, constants, workgroup_id, workgroup_count):
        v = bindings[0].view(np.uint32)
        v += np.uint32(constants[0])

    return {"add_const": add_const}


def _prepare_body(name: str = "add_const") -> bytes:
    fmt, data, raw = b"test-format", b"opaque", name.encode()
    meta = (
        F.EXECUTABLE_METADATA_HEADER.struct.pack(1, 0, len(raw), 0)
        + F.FUNCTION_METADATA.struct.pack(0, 1, 1, 1, 1, 1, 0, len(raw))
        + raw
    )
    head = payload(
        P.EXECUTABLE_PREPARE,
        queue_affinity=ANY,
        executable_data_length=len(data),
        executable_format_length=len(fmt),
        executable_metadata_length=len(meta),
    )
    return head + fmt + data + meta


def _queue(ptype: int, waits=(), signals=(), tail: bytes = b"", **fields) -> bytes:
    head = payload(
        ptype,
        queue_affinity=ANY,
        wait_semaphore_count=len(waits),
        signal_semaphore_count=len(signals),
        **fields,
    )
    return head + timepoints(*waits) + timepoints(*signals) + tail


def synthetic_capture() -> bytes:
    c = Capture()
    c.device()
    c.scope("init", True)
    c.scope("init", False)
    c.op(
        O.DEVICE_CREATE_EXECUTABLE_CACHE,
        payload(P.EXECUTABLE_CACHE_OBJECT),
        P.EXECUTABLE_CACHE_OBJECT,
        device=1,
        obj=1,
        rel=61,
    )
    c.op(
        O.EXECUTABLE_CACHE_PREPARE_EXECUTABLE,
        _prepare_body(),
        P.EXECUTABLE_PREPARE,
        device=1,
        obj=61,
        rel=60,
    )
    c.op(O.DEVICE_QUERY_I64, device=1, obj=1)
    c.scope("execute", True)
    c.semaphore(20)
    src = np.arange(16, dtype=np.uint32).tobytes()
    c.buffer(10, 64, src)
    c.buffer(11, 64)
    c.buffer(12, 64)
    c.buffer(14, 64)
    c.buffer(15, 64)
    # queue_fill 11 with 0xAB..., queue_update 12[0:8], queue_copy 10[0:16] -> 11[16:32]
    c.op(
        O.DEVICE_QUEUE_FILL,
        _queue(
            P.DEVICE_QUEUE_FILL,
            signals=[(20, 1)],
            tail=b"\xab\xab\xab\xab",
            pattern_length=4,
            **ref_fields("target_ref", 11, 0, 64),
        ),
        P.DEVICE_QUEUE_FILL,
        device=1,
        obj=1,
    )
    c.op(
        O.DEVICE_QUEUE_UPDATE,
        _queue(
            P.DEVICE_QUEUE_UPDATE,
            [(20, 1)],
            [(20, 2)],
            tail=b"ABCDEFGH",
            data_length=8,
            **ref_fields("target_ref", 12, 0, 8),
        ),
        P.DEVICE_QUEUE_UPDATE,
        device=1,
        obj=1,
    )
    c.op(
        O.DEVICE_QUEUE_COPY,
        _queue(
            P.DEVICE_QUEUE_COPY,
            [(20, 2)],
            [(20, 3)],
            **ref_fields("source_ref", 10, 0, 16),
            **ref_fields("target_ref", 11, 16, 16),
        ),
        P.DEVICE_QUEUE_COPY,
        device=1,
        obj=1,
    )
    # an inline file read into 12[32:48] and buffer 10[0:8] written back over its start
    file_bytes = bytes(range(100, 132))
    fobj = (
        payload(
            P.FILE_OBJECT,
            queue_affinity=ANY,
            file_length=32,
            reference_length=32,
            access=3,
            reference_type=F.FileReferenceType.INLINE_BYTES,
        )
        + file_bytes
    )
    c.op(O.DEVICE_IMPORT_FILE, fobj, P.FILE_OBJECT, device=1, obj=1, rel=30)
    c.op(
        O.DEVICE_QUEUE_READ,
        _queue(
            P.DEVICE_QUEUE_READ,
            [(20, 3)],
            [(20, 4)],
            source_file_id=30,
            source_offset=4,
            **ref_fields("target_ref", 12, 32, 16),
        ),
        P.DEVICE_QUEUE_READ,
        device=1,
        obj=1,
    )
    c.op(
        O.DEVICE_QUEUE_WRITE,
        _queue(
            P.DEVICE_QUEUE_WRITE,
            [(20, 4)],
            [(20, 5)],
            target_file_id=30,
            target_offset=0,
            **ref_fields("source_ref", 10, 0, 8),
        ),
        P.DEVICE_QUEUE_WRITE,
        device=1,
        obj=1,
    )
    # an imported host buffer with its bytes
    imp = (
        payload(
            P.ALLOCATOR_IMPORT_BUFFER,
            allocation__allocation_size=16,
            allocation__usage=0x0B000C03,
            allocation__type=0x32,
            allocation__access=7,
            allocation__queue_affinity=ANY,
            external_type=1,
            data_length=16,
        )
        + b"I" * 16
    )
    c.op(O.ALLOCATOR_IMPORT_BUFFER, imp, P.ALLOCATOR_IMPORT_BUFFER, device=1, obj=2, rel=13)
    # a reusable command buffer with two binding slots
    c.op(
        O.DEVICE_CREATE_EVENT,
        payload(P.EVENT_OBJECT, queue_affinity=ANY),
        P.EVENT_OBJECT,
        device=1,
        obj=1,
        rel=50,
    )
    c.op(
        O.DEVICE_CREATE_COMMAND_BUFFER,
        payload(
            P.COMMAND_BUFFER_OBJECT, command_categories=3, queue_affinity=ANY, binding_capacity=2
        ),
        P.COMMAND_BUFFER_OBJECT,
        device=1,
        obj=1,
        rel=40,
    )
    cb = {"device": 1, "obj": 40}
    c.op(O.COMMAND_BUFFER_BEGIN, **cb)
    c.op(O.COMMAND_BUFFER_BEGIN_DEBUG_GROUP, **cb)
    c.op(
        O.COMMAND_BUFFER_FILL_BUFFER,
        payload(
            P.COMMAND_BUFFER_FILL_BUFFER, pattern_length=2, **ref_fields("target_ref", 14, 0, 64)
        )
        + b"\x01\x02",
        P.COMMAND_BUFFER_FILL_BUFFER,
        **cb,
    )
    c.op(
        O.COMMAND_BUFFER_UPDATE_BUFFER,
        payload(
            P.COMMAND_BUFFER_UPDATE_BUFFER,
            data_length=4,
            **ref_fields("target_ref", 0, 0, 4, slot=0),
        )
        + b"\x05\x00\x00\x00",
        P.COMMAND_BUFFER_UPDATE_BUFFER,
        **cb,
    )
    c.op(
        O.COMMAND_BUFFER_SIGNAL_EVENT,
        payload(P.COMMAND_BUFFER_EVENT, event_id=50),
        P.COMMAND_BUFFER_EVENT,
        **cb,
    )
    c.op(
        O.COMMAND_BUFFER_WAIT_EVENTS,
        payload(P.COMMAND_BUFFER_WAIT_EVENTS, event_count=1) + struct.pack("<Q", 50),
        P.COMMAND_BUFFER_WAIT_EVENTS,
        **cb,
    )
    dispatch = (
        payload(
            P.DISPATCH,
            executable_id=60,
            workgroup_count__0=1,
            workgroup_count__1=1,
            workgroup_count__2=1,
            constants_length=4,
            binding_count=1,
        )
        + struct.pack("<I", 7)
        + ref(0, 0, 64, 0)
    )
    c.op(O.COMMAND_BUFFER_DISPATCH, dispatch, P.DISPATCH, **cb)
    c.op(
        O.COMMAND_BUFFER_EXECUTION_BARRIER,
        payload(
            P.COMMAND_BUFFER_EXECUTION_BARRIER,
            source_stage_mask=28,
            target_stage_mask=13,
            memory_barrier_count=1,
        )
        + b"\x00" * 8,
        P.COMMAND_BUFFER_EXECUTION_BARRIER,
        **cb,
    )
    c.op(
        O.COMMAND_BUFFER_COPY_BUFFER,
        payload(
            P.COMMAND_BUFFER_COPY_BUFFER,
            **ref_fields("source_ref", 0, 0, 64, slot=0),
            **ref_fields("target_ref", 0, 0, 64, slot=1),
        ),
        P.COMMAND_BUFFER_COPY_BUFFER,
        **cb,
    )
    c.op(O.COMMAND_BUFFER_END_DEBUG_GROUP, **cb)
    c.op(O.COMMAND_BUFFER_END, **cb)
    execute = _queue(
        P.DEVICE_QUEUE_EXECUTE,
        [(20, 5)],
        [(20, 6)],
        tail=ref(14, 0, 64) + ref(15, 0, 64),
        command_buffer_id=40,
        binding_count=2,
    )
    c.op(O.DEVICE_QUEUE_EXECUTE, execute, P.DEVICE_QUEUE_EXECUTE, device=1, obj=1, rel=40)
    # queue_dispatch on 13, a queue barrier, queue_alloca + dealloca
    qd = _queue(
        P.DISPATCH,
        [(20, 6)],
        [(20, 7)],
        tail=struct.pack("<I", 1) + ref(13, 0, 16),
        executable_id=60,
        workgroup_count__0=1,
        workgroup_count__1=1,
        workgroup_count__2=1,
        constants_length=4,
        binding_count=1,
    )
    c.op(O.DEVICE_QUEUE_DISPATCH, qd, P.DISPATCH, device=1, obj=1)
    c.op(
        O.DEVICE_QUEUE_EXECUTE,
        _queue(P.DEVICE_QUEUE_EXECUTE, [(20, 7)], [(20, 8)]),
        P.DEVICE_QUEUE_EXECUTE,
        device=1,
        obj=1,
    )
    c.op(
        O.DEVICE_QUEUE_ALLOCA,
        _queue(
            P.DEVICE_QUEUE_ALLOCA,
            [(20, 8)],
            [(20, 9)],
            allocation__allocation_size=32,
            allocation__usage=0xC03,
            allocation__type=0x30,
            allocation__access=7,
            allocation__queue_affinity=ANY,
        ),
        P.DEVICE_QUEUE_ALLOCA,
        device=1,
        obj=1,
        rel=16,
    )
    c.op(
        O.DEVICE_QUEUE_DEALLOCA,
        _queue(
            P.DEVICE_QUEUE_DEALLOCA, [(20, 9)], [(20, 10)], **ref_fields("buffer_ref", 16, 0, 32)
        ),
        P.DEVICE_QUEUE_DEALLOCA,
        device=1,
        obj=1,
    )
    c.op(O.DEVICE_QUEUE_FLUSH, device=1, obj=1)
    c.read_back(11, 64)
    c.scope("execute", False)
    return c.data()


def test_synthetic_capture_runs_every_operation(device):
    data = synthetic_capture()
    sub = Substitution(_kernels(), None, "local-cpu-python")
    player = Player(ReplayFile(data), device, substitutions=[sub])
    assert player.run("execute") > 0
    u32 = lambda i: np.frombuffer(player.buffer_contents(i), np.uint32)  # noqa: E731
    src = np.arange(16, dtype=np.uint32)
    b11 = player.buffer_contents(11)
    assert b11[:16] == b"\xab" * 16 and b11[32:] == b"\xab" * 32
    assert b11[16:32] == src[:4].tobytes()  # queue_copy
    b12 = player.buffer_contents(12)
    assert b12[:8] == b"ABCDEFGH" and b12[32:48] == bytes(range(104, 120))  # update, read
    assert bytes(player._file_images[30][:8]) == src[:2].tobytes()  # queue_write
    fill = np.frombuffer(b"\x01\x02" * 32, np.uint32)
    expect14 = fill.copy()
    expect14[0] = 5  # command-buffer update through slot 0
    expect14 += 7  # the dispatch through slot 0
    assert (u32(14) == expect14).all()
    assert (u32(15) == expect14).all()  # command-buffer copy slot 0 -> slot 1
    assert (u32(13) == np.frombuffer(b"I" * 16, np.uint32) + 1).all()  # queue_dispatch
    assert player.output_buffer_ids == [11]
    with pytest.raises(hal.FailedPreconditionError):
        player.buffer_contents(16)  # released by the queue_dealloca
    with pytest.raises(hal.NotFoundError, match="not a buffer"):
        player.buffer(999)


def test_a_wait_nobody_signals_fails_by_deadline_not_a_hang(device, monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    c = Capture()
    c.device()
    c.semaphore(20)
    c.op(
        O.DEVICE_QUEUE_EXECUTE,
        _queue(P.DEVICE_QUEUE_EXECUTE, [(20, 1)], [(20, 2)]),
        P.DEVICE_QUEUE_EXECUTE,
        device=1,
        obj=1,
    )
    player = Player(ReplayFile(c.data()), device, wait_timeout=0.2)
    with pytest.raises(hal.DeadlineExceededError, match="device.queue_execute"):
        player.run()


def test_records_naming_objects_never_created_are_data_loss(device):
    c = Capture()
    c.device()
    c.op(
        O.DEVICE_QUEUE_EXECUTE,
        _queue(P.DEVICE_QUEUE_EXECUTE, [(77, 1)], []),
        P.DEVICE_QUEUE_EXECUTE,
        device=1,
        obj=1,
    )
    with pytest.raises(hal.DataLossError, match="semaphore object 77") as info:
        Player(ReplayFile(c.data()), device).run()
    assert "byte offset" in str(info.value)


def test_more_captured_devices_than_given_is_invalid_argument(device):
    c = Capture()
    c.device()
    c.add(F.RecordType.OBJECT, object_type=F.ObjectType.DEVICE, obj=5)
    with pytest.raises(hal.InvalidArgumentError, match="device group"):
        Player(ReplayFile(c.data()), device).run()


def test_a_two_device_capture_replays_on_a_device_group():
    c = Capture()
    c.device()
    c.add(F.RecordType.OBJECT, object_type=F.ObjectType.DEVICE, obj=3)
    c.add(F.RecordType.OBJECT, object_type=F.ObjectType.ALLOCATOR, device=3, obj=4)
    c.semaphore(20)
    c.buffer(10, 16)
    alloc = payload(
        P.ALLOCATOR_ALLOCATE_BUFFER,
        allocation_size=16,
        queue_affinity=ANY,
        usage=0x0B000C03,
        type=0x32,
        access=7,
    )
    c.op(O.ALLOCATOR_ALLOCATE_BUFFER, alloc, P.ALLOCATOR_ALLOCATE_BUFFER, device=3, obj=4, rel=11)
    sem = payload(P.SEMAPHORE_OBJECT, queue_affinity=ANY)
    c.op(O.DEVICE_CREATE_SEMAPHORE, sem, P.SEMAPHORE_OBJECT, device=3, obj=3, rel=21)
    for dev, buf, sem_id, byte in ((1, 10, 20, b"\x11"), (3, 11, 21, b"\x22")):
        body = _queue(
            P.DEVICE_QUEUE_FILL,
            signals=[(sem_id, 1)],
            tail=byte,
            pattern_length=1,
            **ref_fields("target_ref", buf, 0, 16),
        )
        c.op(O.DEVICE_QUEUE_FILL, body, P.DEVICE_QUEUE_FILL, device=dev, obj=dev)
    group = hal.create_device_group(["local-task://", "local-sync://"])
    try:
        player = Player(ReplayFile(c.data()), group)
        player.run()
        assert player.buffer(10).device is group.devices[0]
        assert player.buffer(11).device is group.devices[1]
        assert player.buffer_contents(10) == b"\x11" * 16
        assert player.buffer_contents(11) == b"\x22" * 16
    finally:
        group.close()


def test_a_backend_raising_a_non_hal_error_is_internal_naming_the_record(device):
    class Faulty:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def queue_flush(self, affinity=ANY):
            raise OverflowError("backend bug")

    c = Capture()
    c.device()
    c.op(O.DEVICE_QUEUE_FLUSH, device=1, obj=1)
    with pytest.raises(hal.InternalError, match=r"device.queue_flush.*OverflowError: backend bug"):
        Player(ReplayFile(c.data()), Faulty(device)).run()


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _file_capture(
    kind: int, reference: bytes, length: int, *, digest: bytes = b"", read_tail: bytes = b""
) -> bytes:
    c = Capture()
    c.device()
    c.semaphore(20)
    c.buffer(10, 16)
    fobj = (
        payload(
            P.FILE_OBJECT,
            queue_affinity=ANY,
            file_length=length,
            reference_length=len(reference),
            access=1,
            reference_type=kind,
            validation_type=F.FileValidationType.CONTENT_DIGEST if digest else 0,
            digest_type=1 if digest else 0,
            digest=digest,
        )
        + reference
    )
    c.op(O.DEVICE_IMPORT_FILE, fobj, P.FILE_OBJECT, device=1, obj=1, rel=30)
    read = _queue(
        P.DEVICE_QUEUE_READ,
        [],
        [(20, 1)],
        tail=read_tail,
        source_file_id=30,
        source_offset=2,
        captured_data_length=len(read_tail),
        **ref_fields("target_ref", 10, 0, 8),
    )
    c.op(O.DEVICE_QUEUE_READ, read, P.DEVICE_QUEUE_READ, device=1, obj=1)
    return c.data()


def test_external_files_are_remapped_and_checked(device, tmp_path):
    content = bytes(range(50, 82))
    (tmp_path / "weights.bin").write_bytes(content)
    digest = _fnv1a64(content).to_bytes(8, "little") + bytes(24)
    data = _file_capture(
        F.FileReferenceType.EXTERNAL_PATH, b"/captured/root/weights.bin", 32, digest=digest
    )
    with pytest.raises(hal.NotFoundError, match="--file-remap"):
        Player(ReplayFile(data), device).run()
    player = Player(ReplayFile(data), device, file_remap=[("/captured/root", str(tmp_path))])
    player.run()
    assert player.buffer_contents(10)[:8] == content[2:10]
    (tmp_path / "weights.bin").write_bytes(bytes(32))
    with pytest.raises(hal.DataLossError, match="digest"):
        player.run()


def test_captured_file_ranges_come_from_the_reads(device):
    data = _file_capture(F.FileReferenceType.CAPTURED_RANGES, b"", 32, read_tail=b"ABCDEFGH")
    player = Player(ReplayFile(data), device)
    player.run()
    assert player.buffer_contents(10)[:8] == b"ABCDEFGH"
