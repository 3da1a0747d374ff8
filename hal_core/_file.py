"""Files for ``queue_read`` / ``queue_write``: memory-backed and file-descriptor-backed.

A ``File`` is created by ``Device.import_file`` or its classmethods ``File.from_memory`` /
``File.from_fd`` (the constructor is internal; the class is final). Backends move bytes
with ``read_into`` and ``write_from``, which take numpy uint8 arrays and never hold the
GIL-free part of a copy longer than one ``os.preadv``/``os.pwritev`` call.
"""

from __future__ import annotations

import operator
import os
import weakref
from typing import Any, final

import numpy as np

from ._construction import INTERNAL, require_internal, sealed
from ._memory import MemoryAccess
from ._status import (
    FailedPreconditionError,
    InvalidArgumentError,
    OutOfRangeError,
    PermissionDeniedError,
    error_for,
)

__all__ = ["File"]


def _fd_access(fd: int) -> MemoryAccess | None:
    """READ/WRITE bits an open descriptor allows (None where the OS cannot say)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the OS reports misuse at I/O time instead
        return None
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        return None
    if flags == os.O_RDONLY:
        return MemoryAccess.READ
    if flags == os.O_WRONLY:
        return MemoryAccess.WRITE
    return MemoryAccess.READ | MemoryAccess.WRITE


def _access(access: Any) -> MemoryAccess:
    """``access`` as MemoryAccess bits with READ and/or WRITE (INVALID_ARGUMENT else)."""
    try:
        bits = MemoryAccess(operator.index(access))
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"file access must be MemoryAccess bits, got {access!r}"
        ) from None
    if not bits & (MemoryAccess.READ | MemoryAccess.WRITE):
        raise InvalidArgumentError(f"file access {bits!r} allows neither READ nor WRITE")
    return bits


@final
@sealed
class File:
    """A byte range on the host that queue_read/queue_write move data through.

    Memory-backed files wrap a buffer-protocol object without copying (the caller keeps
    it alive); fd-backed files use positional I/O on a duplicate of the descriptor, so
    the caller may close its own descriptor. ``close()`` is idempotent.
    """

    __slots__ = ("access", "_memory", "_fd", "_closed", "_finalizer", "__weakref__")

    def __init__(
        self, access: MemoryAccess, memory: np.ndarray | None, fd: int, *, _token: object = None
    ) -> None:
        """Internal: ``from_memory`` / ``from_fd`` pass ``_token=INTERNAL``."""
        require_internal(
            _token, "File", "Device.import_file(source), File.from_memory(data) or File.from_fd(fd)"
        )
        self.access = MemoryAccess(access)
        self._memory = memory
        self._fd = fd
        self._closed = False
        # Safety net: a dropped, unclosed fd-backed file still releases its descriptor.
        self._finalizer = weakref.finalize(self, os.close, fd) if fd >= 0 else None

    @classmethod
    def from_memory(cls, data: Any, access: MemoryAccess = MemoryAccess.READ) -> "File":
        access = _access(access)
        try:
            view = memoryview(data)
        except TypeError:
            raise InvalidArgumentError(
                f"a memory file needs a buffer-protocol object, got {type(data).__name__}"
            ) from None
        if access & MemoryAccess.WRITE and view.readonly:
            raise InvalidArgumentError("a writable memory file needs writable memory")
        array = np.frombuffer(view.cast("B"), dtype=np.uint8)
        if view.readonly:
            array = array.view()
        return cls(access, array, -1, _token=INTERNAL)

    @classmethod
    def from_fd(cls, fd: int | Any, access: MemoryAccess = MemoryAccess.READ) -> "File":
        access = _access(access)
        if hasattr(fd, "fileno"):
            fd = fd.fileno()
        try:
            fd = operator.index(fd)
        except TypeError:
            raise InvalidArgumentError(f"expected a file descriptor, got {fd!r}") from None
        if fd < 0:
            raise InvalidArgumentError(f"expected a file descriptor, got {fd!r}")
        try:
            dup = os.dup(fd)
        except OSError as exc:
            raise InvalidArgumentError(f"file descriptor {fd} is not open: {exc}") from None
        # Refuse access the descriptor cannot give now, rather than failing a queue op
        # with an OS error later.
        mode = _fd_access(dup)
        wanted = MemoryAccess(access) & (MemoryAccess.READ | MemoryAccess.WRITE)
        if mode is not None and (wanted & mode) != wanted:
            os.close(dup)
            raise PermissionDeniedError(
                f"file descriptor {fd} was opened for {mode!r} but {MemoryAccess(access)!r} "
                "was requested; reopen it with a matching mode (e.g. os.O_RDWR)"
            )
        return cls(access, None, dup, _token=INTERNAL)

    @property
    def is_memory(self) -> bool:
        return self._memory is not None

    @property
    def length(self) -> int:
        self._check_open()
        if self._memory is not None:
            return int(self._memory.nbytes)
        return os.fstat(self._fd).st_size

    def check_open(self) -> None:
        """FAILED_PRECONDITION once ``close()`` ran: queue operations check this at the
        call, and reads and writes already queued fail their signals with it."""
        if self._closed:
            raise FailedPreconditionError("file is closed; import it again to use it")

    _check_open = check_open

    def check_access(self, access: MemoryAccess, what: str) -> None:
        if (self.access & access) != access:
            raise PermissionDeniedError(
                f"{what} needs file access {MemoryAccess(access)!r}; the file allows "
                f"{self.access!r}"
            )

    def read_into(self, offset: int, out: np.ndarray) -> None:
        """Fill ``out`` with file bytes at ``offset``; OUT_OF_RANGE past the end."""
        self._check_open()
        n = out.nbytes
        if self._memory is not None:
            if offset < 0 or offset + n > self._memory.nbytes:
                raise OutOfRangeError(
                    f"file read [{offset}, {offset + n}) exceeds the file of "
                    f"{self._memory.nbytes} bytes"
                )
            out[:] = self._memory[offset : offset + n]
            return
        done = 0
        view = out.data  # the array's memoryview (not a copy)
        while done < n:
            try:
                got = os.preadv(self._fd, [view[done:]], offset + done)
            except OSError as exc:
                raise error_for(13, f"file read failed: {exc}") from None
            if got == 0:
                raise OutOfRangeError(
                    f"file read [{offset}, {offset + n}) passed the end of the file "
                    f"after {done} bytes"
                )
            done += got

    def write_from(self, offset: int, data: np.ndarray) -> None:
        """Write ``data`` at ``offset``. Memory files cannot grow (OUT_OF_RANGE); fd files
        extend as the OS allows."""
        self._check_open()
        n = data.nbytes
        if self._memory is not None:
            if offset < 0 or offset + n > self._memory.nbytes:
                raise OutOfRangeError(
                    f"file write [{offset}, {offset + n}) exceeds the memory file of "
                    f"{self._memory.nbytes} bytes"
                )
            self._memory[offset : offset + n] = data
            return
        done = 0
        view = np.ascontiguousarray(data).data
        while done < n:
            try:
                done += os.pwritev(self._fd, [view[done:]], offset + done)
            except OSError as exc:
                raise error_for(13, f"file write failed: {exc}") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()
            self._fd = -1
        self._memory = None

    def __repr__(self) -> str:
        from . import _reprs as R  # (not a hot path)

        try:
            if self._closed:
                backing = "closed"
            elif self._memory is not None:
                backing = f"memory {R.size(len(self._memory))}"
            else:
                backing = f"fd {self._fd}"
            return f"<hal_core.File {backing} {self.access.name or int(self.access)}>"
        except Exception:
            return "<hal_core.File>"

    def __enter__(self) -> "File":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
