"""A player run many times (as ``hal bench`` and ``hal replay bench`` run it) replays the
same program every time: the prebound plan reads nothing that one run leaves behind, and
its upload fast path refuses what a mapping refuses."""

from __future__ import annotations

import numpy as np
import pytest
from _replay_capture import CORPUS, CORPUS_NAMES, Capture, payload, ref, ref_fields, timepoints

import hal_core as hal
from hal_core.bench import BenchContext
from hal_core.bench.replay import median_execute_us
from hal_core.replay import OperationCode, PayloadType, Player, ReplayFile

ITERATIONS = 5


@pytest.fixture(params=["local-task://", "local-sync://"])
def device(request):
    with hal.create_device(request.param) as d:
        yield d


def _outputs(player: Player) -> dict[int, bytes]:
    """Every buffer the last run left readable, by captured id."""
    out = {}
    for buffer_id in player.buffer_ids():
        try:
            out[buffer_id] = player.buffer_contents(buffer_id)
        except hal.FailedPreconditionError:
            pass  # released by a queue_dealloca
    return out


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_n_benchmark_iterations_give_the_outputs_of_one_run(device, name):
    if not device.create_executable_cache().can_prepare("embedded-elf-x86_64"):
        pytest.skip(f"{device.uri} cannot load IREE's embedded-elf-x86_64 executables")
    once = Player(CORPUS / f"{name}.ireereplay", device)
    once.run()
    reference = _outputs(once)
    expected = np.load(CORPUS / f"{name}.expected0.npy").tobytes()
    assert reference[once.output_buffer_ids[-1]] == expected
    once.close()

    bench = Player(CORPUS / f"{name}.ireereplay", device)
    for _ in range(ITERATIONS):
        assert bench.run("execute") > 0
        assert _outputs(bench) == reference


def test_the_replay_benchmark_loop_leaves_iree_s_result():
    """What ``replay.mlp`` times (a warm-up and the repeats of the execute scope), then
    the capture's output as IREE computed it."""
    with hal.create_device("local-task://") as device:
        if not device.create_executable_cache().can_prepare("embedded-elf-x86_64"):
            pytest.skip("local-task cannot load IREE's embedded-elf-x86_64 executables")
        player = Player(CORPUS / "mlp.ireereplay", device)
        assert median_execute_us(BenchContext(device, "local-task://", repeats=3), player) > 0
        expected = np.load(CORPUS / "mlp.expected0.npy").tobytes()
        assert player.buffer_contents(player.output_buffer_ids[-1]) == expected


def _upload_into(access: int) -> bytes:
    """A capture allocating buffer 10 with memory ``access`` and uploading 8 bytes into it
    through a mapping."""
    c = Capture()
    c.device()
    alloc = payload(
        PayloadType.ALLOCATOR_ALLOCATE_BUFFER,
        allocation_size=16,
        queue_affinity=(1 << 64) - 1,
        usage=0x0B000C03,
        type=0x32,
        access=access,
    )
    c.op(
        OperationCode.ALLOCATOR_ALLOCATE_BUFFER,
        alloc,
        PayloadType.ALLOCATOR_ALLOCATE_BUFFER,
        device=1,
        obj=2,
        rel=10,
    )
    body = (
        payload(
            PayloadType.BUFFER_RANGE_DATA,
            byte_offset=4,
            byte_length=8,
            data_length=8,
            memory_access=6,
        )
        + b"ABCDEFGH"
    )
    c.op(OperationCode.BUFFER_UNMAP_RANGE, body, PayloadType.BUFFER_RANGE_DATA, device=1, obj=10)
    return c.data()


def test_uploads_land_at_their_offset_every_run(device):
    player = Player(ReplayFile(_upload_into(7)), device)
    for _ in range(3):
        player.run()
        assert player.buffer_contents(10) == bytes(4) + b"ABCDEFGH" + bytes(4)


def test_an_upload_into_a_read_only_buffer_is_refused_as_a_mapping_is(device):
    player = Player(ReplayFile(_upload_into(1)), device)  # access READ only
    with pytest.raises(hal.PermissionDeniedError, match="memory access") as info:
        player.run()
    assert "buffer.unmap_range" in str(info.value) and "byte offset" in str(info.value)


# -- reusable recordings ---------------------------------------------------------------

ANY = (1 << 64) - 1
P = PayloadType
O = OperationCode  # noqa: E741


def _recording_capture(where: str, *, mode: int = 0, direct: bool = False) -> bytes:
    """Command buffer 40 (fill slot 0 with 0x5A5A, copy slot 0 to slot 1) recorded ``where``
    ("setup": unscoped, "init" or "execute"), then executed in ``execute`` with buffers 10
    and 11 bound; ``direct``: the fill names buffer 12 (allocated in the setup) instead."""
    c = Capture()
    c.device()
    c.buffer(12, 64)
    scoped = where in ("init", "execute")
    if scoped:
        c.scope(where, True)
    c.op(
        O.DEVICE_CREATE_COMMAND_BUFFER,
        payload(
            P.COMMAND_BUFFER_OBJECT,
            mode=mode,
            command_categories=3,
            queue_affinity=ANY,
            binding_capacity=2,
        ),
        P.COMMAND_BUFFER_OBJECT,
        device=1,
        obj=1,
        rel=40,
    )
    cb = {"device": 1, "obj": 40}
    c.op(O.COMMAND_BUFFER_BEGIN, **cb)
    target = ref_fields("target_ref", 12, 0, 64) if direct else ref_fields("target_ref", 0, 0, 64)
    c.op(
        O.COMMAND_BUFFER_FILL_BUFFER,
        payload(P.COMMAND_BUFFER_FILL_BUFFER, pattern_length=2, **target) + b"\x5a\x5a",
        P.COMMAND_BUFFER_FILL_BUFFER,
        **cb,
    )
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
            **ref_fields("source_ref", 12 if direct else 0, 0, 64),
            **ref_fields("target_ref", 0, 0, 64, slot=1),
        ),
        P.COMMAND_BUFFER_COPY_BUFFER,
        **cb,
    )
    c.op(O.COMMAND_BUFFER_END, **cb)
    if scoped and where != "execute":
        c.scope(where, False)
    if where != "execute":
        c.scope("execute", True)
    c.semaphore(20)
    c.buffer(10, 64)
    c.buffer(11, 64)
    body = payload(
        P.DEVICE_QUEUE_EXECUTE,
        queue_affinity=ANY,
        signal_semaphore_count=1,
        command_buffer_id=40,
        binding_count=2,
    )
    body += timepoints((20, 1)) + ref(10, 0, 64) + ref(11, 0, 64)
    c.op(O.DEVICE_QUEUE_EXECUTE, body, P.DEVICE_QUEUE_EXECUTE, device=1, obj=1, rel=40)
    c.read_back(11, 64)
    c.scope("execute", False)
    return c.data()


@pytest.mark.parametrize(
    "where, mode, direct, timed, reused",
    [
        ("setup", 0, False, "execute", True),
        ("init", 0, False, "execute", True),
        ("init", 0, False, "init", False),  # the timed scope is replayed in full
        ("execute", 0, False, "execute", False),
        ("setup", 0, False, None, False),  # timing the whole stream: all of it, every run
        ("setup", 1, False, "execute", False),  # ONE_SHOT
        ("setup", 0, True, "execute", False),  # names a buffer of the run directly
    ],
)
def test_recordings_outside_the_timed_scope_are_recorded_once(
    device, where, mode, direct, timed, reused
):
    player = Player(ReplayFile(_recording_capture(where, mode=mode, direct=direct)), device)
    seen = []
    for _ in range(3):
        player.run(timed)
        assert player.buffer_contents(11) == b"\x5a" * 64
        seen.append(player.objects[40])
    assert len({id(s) for s in seen}) == (1 if reused else 3)
    player.close()
    player.run(timed)
    assert player.objects[40] is not seen[0]  # close() dropped the recording
