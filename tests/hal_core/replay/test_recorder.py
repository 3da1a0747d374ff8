"""The recorder: hal-core programs captured in IREE's format are read by IREE's tools and
replayed by ours with the same results."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from _replay_capture import CORPUS

import hal_core as hal
from hal_core import BufferRef, DispatchConfig
from hal_core.replay import (
    OperationCode,
    Player,
    Recorder,
    RecordType,
    ReplayFile,
    Substitution,
    json_records,
)

ANY = (1 << 64) - 1
needs_dump = pytest.mark.skipif(
    shutil.which("iree-dump-replay") is None, reason="iree-dump-replay not installed"
)


def _elf(device) -> bool:
    return device.create_executable_cache().can_prepare("embedded-elf-x86_64")


def _record_corpus_replay(device, name, path):
    """A hal-core program using IREE-format executables: the corpus replay itself, run
    through a recording device."""
    with Recorder(device, path) as rec:
        with rec.scope("execute"):
            player = Player(CORPUS / f"{name}.ireereplay", rec.device)
            player.run()
            return rec.read_buffer(player.buffer(player.output_buffer_ids[-1]))


@pytest.mark.parametrize("name", ["mlp", "dynamic"])
def test_recorded_iree_format_program_replays_here_and_in_iree(name, tmp_path):
    path = tmp_path / f"{name}.ireereplay"
    with hal.create_device("local-task://") as device:
        if not _elf(device):
            pytest.skip("local-task cannot load IREE's embedded-elf-x86_64 executables yet")
        out = _record_corpus_replay(device, name, path)
    expected = np.load(CORPUS / f"{name}.expected0.npy").tobytes()
    assert out == expected
    with hal.create_device("local-sync://") as device:
        player = Player(path, device)
        player.run()
        assert player.buffer_contents(player.output_buffer_ids[-1]) == expected
    if shutil.which("iree-dump-replay"):
        theirs = subprocess.run(
            ["iree-dump-replay", "--format=jsonl", str(path)], capture_output=True, text=True
        )
        assert theirs.returncode == 0, theirs.stderr
        ours = list(json_records(ReplayFile.open(path)))
        assert [json.loads(x) for x in theirs.stdout.splitlines()] == ours
    if shutil.which("iree-run-replay"):
        done = subprocess.run(
            ["iree-run-replay", "--device=local-task", str(path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr


def _kernels():
    from hal_local_cpu.executable_python import kernel

    @kernel(bindings=2, constants=1, name="scale")
    def scale(bindings, constants, workgroup_id, workgroup_count):
        src = bindings[0].view(np.float32)
        bindings[1].view(np.float32)[:] = src * np.float32(constants.view(np.float32)[0])

    return {"scale": scale}


def _program(device, read):
    """A hal-core program with a hal-core-only executable format and every kind of call
    the recorder writes. Returns what it read back."""
    exe = device.create_executable_cache().prepare("local-cpu-python", _kernels())
    src = device.allocator.allocate_buffer(None, 64)
    dst = device.allocator.allocate_buffer(None, 64)
    tmp = device.allocator.allocate_buffer(None, 64)
    src.write(np.arange(16, dtype=np.float32).tobytes())
    s = device.create_semaphore()
    device.queue_fill(ANY, [], [(s, 1)], tmp, 0, 64, b"\x00\x00\x80\x3f")
    device.queue_update(ANY, [(s, 1)], [(s, 2)], b"\x00" * 8, 0, tmp, 0, 8)
    file = device.import_file(bytes(range(64)))
    device.queue_read(ANY, [(s, 2)], [(s, 3)], file, 0, tmp, 8, 8)
    cb = device.create_command_buffer(binding_capacity=1)
    cb.begin()
    cb.dispatch(
        exe,
        "scale",
        DispatchConfig.static(1),
        np.float32([2.0]).view(np.uint32),
        [src, BufferRef.indirect(0)],
    )
    cb.execution_barrier()
    cb.fill_buffer(BufferRef(tmp, 32, 4), b"\x01\x02\x03\x04")
    cb.copy_buffer(BufferRef(src, 0, 16), BufferRef(tmp, 48, 16))
    cb.end()
    device.queue_execute(ANY, [(s, 3)], [(s, 4)], cb, [dst])
    device.queue_dispatch(
        ANY,
        [(s, 4)],
        [(s, 5)],
        exe,
        0,
        DispatchConfig.static(1),
        np.float32([0.5]).view(np.uint32),
        [dst, src],
    )
    t = device.queue_alloca(ANY, [(s, 5)], [(s, 6)], None, 64)
    device.queue_copy(ANY, [(s, 6)], [(s, 7)], tmp, 0, t, 0, 64)
    device.queue_copy(ANY, [(s, 7)], [(s, 8)], t, 0, dst, 0, 64)
    device.queue_dealloca(ANY, [(s, 8)], [(s, 9)], t)
    device.queue_barrier(ANY, [(s, 9)], [(s, 10)])
    s.wait(10, timeout=10)
    return read(src) + read(dst) + read(tmp)


@pytest.fixture
def device():
    with hal.create_device("local-task://") as d:
        yield d


def test_hal_core_only_formats_capture_is_valid_and_replays_with_substitution(device, tmp_path):
    direct = _program(device, lambda b: bytes(b.read()))
    path = tmp_path / "python.ireereplay"
    with Recorder(device, path) as rec:
        recorded = _program(rec.device, rec.read_buffer)
    assert recorded == direct
    f = ReplayFile.open(path)
    ops = {r.operation_code for r in f.records() if r.record_type == RecordType.OPERATION}
    for op in (
        "DEVICE_QUEUE_FILL",
        "DEVICE_QUEUE_UPDATE",
        "DEVICE_QUEUE_READ",
        "DEVICE_QUEUE_COPY",
        "DEVICE_QUEUE_EXECUTE",
        "DEVICE_QUEUE_DISPATCH",
        "DEVICE_QUEUE_ALLOCA",
        "DEVICE_QUEUE_DEALLOCA",
        "COMMAND_BUFFER_DISPATCH",
        "COMMAND_BUFFER_COPY_BUFFER",
    ):
        assert OperationCode[op] in ops
    if shutil.which("iree-dump-replay"):
        done = subprocess.run(
            ["iree-dump-replay", "--format=jsonl", str(path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert [json.loads(x) for x in done.stdout.splitlines()] == list(json_records(f))
    # No bytes for Python kernels: replayable with a substitution.
    player = Player(f, device)
    with pytest.raises(hal.HalError):
        player.run()
    player = Player(f, device, substitutions=[Substitution(_kernels(), None, "local-cpu-python")])
    player.run()
    outs = player.output_buffer_ids
    assert b"".join(player.buffer_contents(i) for i in outs) == direct


def test_objects_made_outside_the_recorder_are_invalid_argument(device, tmp_path):
    with Recorder(device, tmp_path / "x.ireereplay") as rec:
        foreign = device.allocator.allocate_buffer(None, 16)
        s = rec.device.create_semaphore()
        with pytest.raises(hal.InvalidArgumentError, match="not allocated through the recorder"):
            rec.device.queue_fill(ANY, [], [(s, 1)], foreign, 0, 16, b"\x00")
        with pytest.raises(hal.InvalidArgumentError, match="not created through the recorder"):
            rec.device.queue_barrier(ANY, [], [(device.create_semaphore(), 1)])


def test_host_calls_are_recorded_as_unsupported(device, tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    path = tmp_path / "hc.ireereplay"
    with Recorder(device, path) as rec:
        s = rec.device.create_semaphore()
        rec.device.queue_host_call(ANY, [], [(s, 1)], lambda *a: None)
        s.wait(1, timeout=10)
    f = ReplayFile.open(path)
    assert any(r.record_type == RecordType.UNSUPPORTED for r in f.records())
    with pytest.raises(hal.UnimplementedError, match="device.queue_host_call"):
        Player(f, device)


def test_an_unfinished_capture_reads_to_its_end(device, tmp_path):
    path = tmp_path / "open.ireereplay"
    rec = Recorder(device, path)
    rec.device.create_semaphore()
    rec.writer._file.flush()
    data = path.read_bytes()
    assert int.from_bytes(data[16:24], "little") == 0
    assert len(ReplayFile(data).record_list()) == 5  # session, device, allocator, create, object
    rec.close()
    rec.close()
    with pytest.raises(hal.FailedPreconditionError):
        rec.writer.record(RecordType.SESSION)


def test_recording_a_device_group_replays_on_a_group(tmp_path):
    path = tmp_path / "group.ireereplay"
    group = hal.create_device_group(["local-task://", "local-sync://"])
    try:
        with Recorder(group, path) as rec:
            assert len(rec.devices) == 2
            for dev, byte in zip(rec.devices, (b"\x31", b"\x32")):
                buf = dev.allocator.allocate_buffer(None, 8)
                s = dev.create_semaphore()
                dev.queue_fill(ANY, [], [(s, 1)], buf, 0, 8, byte)
                s.wait(1, timeout=10)
                rec.read_buffer(buf)
    finally:
        group.close()
    group = hal.create_device_group(["local-sync://", "local-task://"])
    try:
        player = Player(path, group)
        player.run()
        first, second = player.output_buffer_ids
        assert player.buffer(first).device is group.devices[0]
        assert player.buffer_contents(first) == b"\x31" * 8
        assert player.buffer(second).device is group.devices[1]
        assert player.buffer_contents(second) == b"\x32" * 8
    finally:
        group.close()


def test_bytes_are_captured_before_the_device_writes_them(device, tmp_path):
    """A buffer first written by a queue_fill and read by a copy submitted while the fill
    still waits: its bytes must be captured at the fill, not at the copy (that snapshot
    would hold the pre-fill bytes, and the replay would write them over the fill)."""
    import time

    from hal_local_cpu.executable_python import kernel

    @kernel(bindings=1, constants=0, name="slow")
    def slow(bindings, constants, workgroup_id, workgroup_count):
        time.sleep(0.2)  # a long kernel: the fill waits on it while the copy is submitted

    path = tmp_path / "race.ireereplay"
    with Recorder(device, path) as rec:
        dev = rec.device
        exe = dev.create_executable_cache().prepare("local-cpu-python", {"slow": slow})
        other = dev.allocator.allocate_buffer(None, 16)
        tmp = dev.allocator.allocate_buffer(None, 16)
        dst = dev.allocator.allocate_buffer(None, 16)
        s = dev.create_semaphore()
        dev.queue_dispatch(ANY, [], [(s, 1)], exe, 0, DispatchConfig.static(1), b"", [other])
        dev.queue_fill(ANY, [(s, 1)], [(s, 2)], tmp, 0, 16, b"\x01")
        dev.queue_copy(ANY, [(s, 2)], [(s, 3)], tmp, 0, dst, 0, 16)
        s.wait(3, timeout=10)
        assert rec.read_buffer(dst) == b"\x01" * 16
    sub = Substitution({"slow": slow}, None, "local-cpu-python")
    player = Player(path, device, substitutions=[sub])
    player.run()
    assert player.buffer_contents(player.output_buffer_ids[-1]) == b"\x01" * 16
