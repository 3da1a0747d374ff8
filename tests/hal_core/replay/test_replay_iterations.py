"""A player run many times (as ``hal bench`` and ``hal replay bench`` run it) replays the
same program every time: the prebound plan reads nothing that one run leaves behind, and
its upload fast path refuses what a mapping refuses."""

from __future__ import annotations

import numpy as np
import pytest
from _replay_capture import CORPUS, CORPUS_NAMES, Capture, payload

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
