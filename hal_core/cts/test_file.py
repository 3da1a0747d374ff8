"""CTS: queue_read / queue_write through files (IREE's FileTest), each scenario run for a
memory-backed file and a file-descriptor-backed file (a real file under ``tmp_path``).

Whole reads, a subrange (file offset 97, buffer offset 13, 211 bytes), subrange writes,
a write->read chain ordered only by semaphores, and a large round trip. Bad input: file
access (PERMISSION_DENIED), reads past the end of the file (the signal fails with
OUT_OF_RANGE), buffer ranges (OUT_OF_RANGE); later work still runs.
"""

from __future__ import annotations

import os

import pytest

import hal_core
from hal_core import MemoryAccess, QueueAffinity, StatusCode

from .context import TIMEOUT, deterministic_bytes

pytestmark = pytest.mark.hal_requires("file_io")

ANY = QueueAffinity.ANY
RW = MemoryAccess.READ | MemoryAccess.WRITE


class FileMaker:
    """Makes files holding given bytes and reads their contents back, per kind."""

    def __init__(self, cts, kind: str, tmp_path) -> None:
        self.cts = cts
        self.kind = kind
        self.tmp_path = tmp_path
        self._count = 0
        self._backing: list = []

    def make(self, contents: bytes, access: MemoryAccess = RW):
        self._count += 1
        if self.kind == "memory":
            backing = bytearray(contents)
            self._backing.append(backing)
            return self.cts.import_file(backing, access), backing
        path = self.tmp_path / f"file{self._count}.bin"
        path.write_bytes(contents)
        flags = os.O_RDWR if access & MemoryAccess.WRITE else os.O_RDONLY
        fd = os.open(path, flags)
        try:
            file = self.cts.import_file(fd, access)
        finally:
            os.close(fd)  # the file holds its own duplicate
        return file, path

    @staticmethod
    def contents(backing) -> bytes:
        if isinstance(backing, bytearray):
            return bytes(backing)
        return backing.read_bytes()


@pytest.fixture(params=["memory", "fd"])
def files(request, cts, tmp_path):
    return FileMaker(cts, request.param, tmp_path)


def _read(cts, file, file_offset, buffer, buffer_offset, length, wait=()):
    sem = cts.semaphore(0)
    cts.device.queue_read(ANY, wait, [(sem, 1)], file, file_offset, buffer, buffer_offset, length)
    cts.wait(sem, 1)


def _write(cts, buffer, buffer_offset, file, file_offset, length):
    sem = cts.semaphore(0)
    cts.device.queue_write(ANY, [], [(sem, 1)], buffer, buffer_offset, file, file_offset, length)
    cts.wait(sem, 1)


def test_read_entire_file(cts, files):
    data = deterministic_bytes(1024, seed=30)
    file, _ = files.make(data, MemoryAccess.READ)
    assert file.length == 1024
    buf = cts.buffer(1024)
    _read(cts, file, 0, buf, 0, 1024)
    assert cts.read_bytes(buf) == data


def test_read_subrange(cts, files):
    data = deterministic_bytes(512, seed=31)
    file, _ = files.make(data, MemoryAccess.READ)
    base = deterministic_bytes(300, seed=32)
    buf = cts.buffer(300, base)
    _read(cts, file, 97, buf, 13, 211)
    expect = bytearray(base)
    expect[13:224] = data[97:308]
    assert cts.read_bytes(buf) == bytes(expect)


def test_write_subrange(cts, files):
    original = deterministic_bytes(400, seed=33)
    file, backing = files.make(original, RW)
    payload = deterministic_bytes(256, seed=34)
    buf = cts.buffer(256, payload)
    _write(cts, buf, 40, file, 97, 150)
    expect = bytearray(original)
    expect[97:247] = payload[40:190]
    assert files.contents(backing) == bytes(expect)


def test_chained_write_then_read(cts, files):
    """Buffer -> file -> buffer, ordered only by semaphores, held back by a host gate."""
    payload = deterministic_bytes(777, seed=35)
    file, backing = files.make(bytes(1000), RW)
    src, dst = cts.buffer(777, payload), cts.buffer(777)
    gate, s = cts.semaphore(0), cts.semaphore(0)
    cts.device.queue_write(ANY, [(gate, 1)], [(s, 1)], src, 0, file, 100, 777)
    cts.device.queue_read(ANY, [(s, 1)], [(s, 2)], file, 100, dst, 0, 777)
    assert s.query() == 0
    gate.signal(1)
    cts.wait(s, 2)
    assert cts.read_bytes(dst) == payload
    assert files.contents(backing)[100:877] == payload


def test_large_round_trip(cts, files):
    size = 4 * 1024 * 1024 + 5
    payload = deterministic_bytes(size, seed=36)
    file, backing = files.make(bytes(size), RW)
    src, dst = cts.buffer(size, payload), cts.buffer(size)
    s = cts.semaphore(0)
    cts.device.queue_write(ANY, [], [(s, 1)], src, 0, file, 0, size)
    cts.device.queue_read(ANY, [(s, 1)], [(s, 2)], file, 0, dst, 0, size)
    cts.wait(s, 2)
    assert cts.read_bytes(dst) == payload
    assert files.contents(backing) == payload


def test_device_agnostic_readback_matches_mapping(cts):
    """The CTS's own readback through ``queue_write`` into a memory file (what backends
    without host-visible memory rely on) agrees with a mapped read."""
    data = deterministic_bytes(300, seed=42)
    buf = cts.buffer(300, data)
    assert cts.read_bytes(buf, via_queue=True) == data
    assert cts.read_bytes(buf, 17, 100, via_queue=True) == data[17:117]


# --------------------------------------------------------------------------- bad input


def _later_work_runs(cts, files):
    data = deterministic_bytes(64, seed=37)
    file, _ = files.make(data, MemoryAccess.READ)
    buf = cts.buffer(64)
    _read(cts, file, 0, buf, 0, 64)
    assert cts.read_bytes(buf) == data


def test_access_is_enforced(cts, files):
    read_only, _ = files.make(bytes(64), MemoryAccess.READ)
    buf = cts.buffer(64)
    with pytest.raises(hal_core.PermissionDeniedError, match="WRITE"):
        cts.device.queue_write(ANY, [], [], buf, 0, read_only, 0, 64)
    write_only, _ = files.make(bytes(64), MemoryAccess.WRITE)
    with pytest.raises(hal_core.PermissionDeniedError, match="READ"):
        cts.device.queue_read(ANY, [], [], write_only, 0, buf, 0, 64)
    _later_work_runs(cts, files)


def test_fd_opened_read_only_cannot_be_imported_for_write(cts, tmp_path):
    path = tmp_path / "read-only.bin"
    path.write_bytes(bytes(64))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(hal_core.PermissionDeniedError, match="O_RDWR"):
            cts.device.import_file(fd, RW)
        file = cts.import_file(fd, MemoryAccess.READ)  # what the fd allows still works
    finally:
        os.close(fd)
    buf = cts.buffer(64, deterministic_bytes(64, seed=39))
    _read(cts, file, 0, buf, 0, 64)
    assert cts.read_bytes(buf) == bytes(64)


def test_read_past_end_of_file_fails_the_signal(cts, files):
    file, _ = files.make(bytes(100), MemoryAccess.READ)
    buf = cts.buffer(64, deterministic_bytes(64, seed=38))
    sem = cts.semaphore(0)
    cts.device.queue_read(ANY, [], [(sem, 1)], file, 80, buf, 0, 64)
    with pytest.raises(hal_core.OutOfRangeError) as info:
        sem.wait(1, TIMEOUT)
    assert info.value.code == StatusCode.OUT_OF_RANGE
    assert sem.value >= hal_core.FAILURE_VALUE
    _later_work_runs(cts, files)


def test_buffer_ranges_are_checked(cts, files):
    file, _ = files.make(bytes(256), RW)
    buf = cts.buffer(64)
    with pytest.raises(hal_core.OutOfRangeError):
        cts.device.queue_read(ANY, [], [], file, 0, buf, 32, 64)
    with pytest.raises(hal_core.OutOfRangeError):
        cts.device.queue_write(ANY, [], [], buf, 60, file, 0, 8)
    with pytest.raises(hal_core.InvalidArgumentError):
        cts.device.queue_read(ANY, [], [], file, -1, buf, 0, 8)
    with pytest.raises(hal_core.InvalidArgumentError, match="File"):
        cts.device.queue_read(ANY, [], [], b"not a file", 0, buf, 0, 8)
    _later_work_runs(cts, files)


def test_closed_file_fails_the_op(cts, files):
    file, _ = files.make(bytes(64), MemoryAccess.READ)
    file.close()
    file.close()  # idempotent
    buf = cts.buffer(64)
    sem = cts.semaphore(0)
    try:
        cts.device.queue_read(ANY, [], [(sem, 1)], file, 0, buf, 0, 64)
    except hal_core.HalError as exc:  # rejected at call time
        assert exc.code in (StatusCode.INVALID_ARGUMENT, StatusCode.FAILED_PRECONDITION)
    else:  # or the signal carries the error
        with pytest.raises(hal_core.HalError) as info:
            sem.wait(1, TIMEOUT)
        assert info.value.code in (StatusCode.INVALID_ARGUMENT, StatusCode.FAILED_PRECONDITION)
    _later_work_runs(cts, files)
