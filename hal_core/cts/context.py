"""Helpers every CTS suite uses: semaphores, buffers with data, device-agnostic readback."""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

import hal_core
from hal_core import BufferParams, BufferUsage, MemoryAccess, MemoryType

from .config import CtsBackend

TIMEOUT = 20.0
"""Seconds every CTS host wait allows before failing (never sleeps)."""


class HostThread:
    """A helper thread for threaded CTS scenarios: runs ``fn(*args)`` once and keeps its
    result or exception. ``join()`` waits at most ``timeout`` seconds (a thread that is
    still running fails the test instead of hanging it) and re-raises the thread's
    exception in the test's thread."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            self.result = fn(*args)
        except BaseException as exc:  # handed to the joining test thread
            self.error = exc

    def join(self, timeout: float = TIMEOUT) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"CTS helper thread still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result

    def joined_error(self, timeout: float = TIMEOUT) -> BaseException | None:
        """Join and return the thread's exception (None if it returned normally)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"CTS helper thread still running after {timeout} s")
        return self.error


class CtsContext:
    """What a CTS test gets from the ``cts`` fixture: the shared device of one backend,
    its configuration, and helpers. Resources a test creates through the helpers
    (threads, files) are cleaned up after the test."""

    def __init__(self, device: hal_core.Device, config: CtsBackend) -> None:
        self.device = device
        self.config = config
        self._files: list[hal_core.File] = []
        self._threads: list[HostThread] = []

    @property
    def driver(self) -> str:
        return self.config.driver

    def has_tag(self, tag: str) -> bool:
        return tag in self.config.tags

    def semaphore(self, initial: int = 0) -> hal_core.Semaphore:
        return self.device.create_semaphore(initial)

    def wait(self, sem: hal_core.Semaphore, value: int, timeout: float = TIMEOUT) -> None:
        sem.wait(value, timeout)

    def buffer(
        self,
        size: int,
        data: bytes | np.ndarray | None = None,
        *,
        usage: BufferUsage = BufferUsage.DEFAULT | BufferUsage.TRANSFER,
        memory_type: MemoryType = MemoryType.DEVICE_LOCAL,
    ) -> hal_core.Buffer:
        """A device buffer of ``size`` bytes, zeroed or holding ``data``."""
        buffer = self.device.allocator.allocate_buffer(
            BufferParams(usage=usage | BufferUsage.TRANSFER, type=memory_type), size
        )
        if data is not None:
            # numpy's stubs give ndarray the buffer protocol only from Python 3.12.
            payload = np.frombuffer(memoryview(data).cast("B"), np.uint8)  # type: ignore[arg-type]
            sem = self.semaphore()
            self.device.queue_update(
                hal_core.QueueAffinity.ANY, (), [(sem, 1)], payload, 0, buffer, 0, payload.nbytes
            )
            self.wait(sem, 1)
        return buffer

    def read_bytes(
        self,
        buffer: hal_core.Buffer,
        offset: int = 0,
        length: int | None = None,
        *,
        via_queue: bool = False,
    ) -> bytes:
        """Buffer contents: mapped when host-visible and mappable, else (or with
        ``via_queue``) through a ``queue_write`` into a memory file, which works on any
        backend."""
        if length is None:
            length = buffer.byte_length - offset
        mappable = buffer.memory_type.has(MemoryType.HOST_VISIBLE) and bool(
            buffer.allowed_usage & (BufferUsage.MAPPING_SCOPED | BufferUsage.MAPPING_PERSISTENT)
        )
        if mappable and not via_queue:
            return buffer.read(offset, length)
        out = bytearray(length)
        file = self.device.import_file(out, MemoryAccess.READ | MemoryAccess.WRITE)
        sem = self.semaphore()
        self.device.queue_write(
            hal_core.QueueAffinity.ANY, (), [(sem, 1)], buffer, offset, file, 0, length
        )
        self.wait(sem, 1)
        file.close()
        return bytes(out)

    def queue_affinities(self) -> list[int]:
        return [1 << i for i in range(self.device.queue_count)]

    def thread(self, fn: Callable[..., Any], *args: Any) -> HostThread:
        """Start ``fn(*args)`` on a helper thread (joined with a timeout at cleanup)."""
        t = HostThread(fn, *args)
        self._threads.append(t)
        return t

    def import_file(self, source: Any, access: MemoryAccess) -> hal_core.File:
        """``device.import_file`` whose file is closed after the test."""
        f = self.device.import_file(source, access)
        self._files.append(f)
        return f

    def cleanup(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()
        threads, self._threads = self._threads, []
        for t in threads:
            t.joined_error()


def deterministic_bytes(length: int, seed: int = 0) -> bytes:
    """Reproducible test data (no randomness between runs)."""
    mixed = (np.arange(length, dtype=np.uint32) * 2654435761 + seed) >> 13
    return mixed.astype(np.uint8).tobytes()
