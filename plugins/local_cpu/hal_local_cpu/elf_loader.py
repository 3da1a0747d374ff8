"""Loading validated shared objects from private copies, and releasing them.

Every executable format of this backend that is a shared object goes through
``load_library``: the bytes (or the file at a path, read once) are validated by
``elf_validation`` and written once to a fresh private file that only this process knows;
the loader maps that file, which is unlinked at once, so nothing another process does to
the caller's file afterwards can change (or truncate) the mapped code. ``LoadedLibrary``
owns the handle: ``release()`` (idempotent, also run when the library object is collected)
closes it, so the mappings go away with the last executable that uses them.
"""

from __future__ import annotations

import os
import tempfile
import threading
import weakref
from typing import Any, cast

from hal_core import InvalidArgumentError

from .abi_cdefs import ffi
from .elf_validation import ElfImage, validate_elf

__all__ = ["LoadedLibrary", "load_library", "read_executable_bytes"]


def read_executable_bytes(data: Any, what: str) -> tuple[bytes, str]:
    """``(bytes, description)`` of executable ``data``: a contiguous buffer, or a path
    (read once). INVALID_ARGUMENT for anything else."""
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        try:
            with open(path, "rb") as f:
                return f.read(), repr(path)
        except (OSError, ValueError) as exc:
            raise InvalidArgumentError(f"cannot read executable file {path!r}: {exc}") from None
    try:
        blob = bytes(memoryview(data).cast("B"))
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{what} data must be bytes or a path (bytes: any contiguous buffer), got "
            f"{type(data).__name__}"
        ) from None
    return blob, f"<{what} of {len(blob)} bytes>"


class LoadedLibrary:
    """A loaded shared object: the cffi library, its validated ``image`` and the address
    the loader placed it at (``base``). ``release()`` closes it; the caller guarantees that
    no code or data of the library is in use by then (executables release theirs when
    they are collected, and programs keep their executables alive)."""

    __slots__ = ("lib", "image", "base", "_finalizer", "__weakref__")

    def __init__(self, lib: Any, image: ElfImage, base: int) -> None:
        self.lib = lib
        self.image = image
        self.base = base
        self._finalizer = weakref.finalize(self, _close, lib)
        # Never at interpreter exit: a daemon thread may still be running its code.
        self._finalizer.atexit = False

    def release(self) -> None:
        self._finalizer()

    @property
    def released(self) -> bool:
        return not self._finalizer.alive

    def contains(self, ptr: int, size: int) -> bool:
        return self.image.contains(self.base, ptr, size)

    def is_code(self, ptr: int) -> bool:
        return self.image.is_code(self.base, ptr)

    def string(self, ptr: int, what: str, limit: int = 4096) -> str:
        """The NUL-terminated string at ``ptr``, which must lie inside the image."""
        region = self.image.region(self.base, ptr)
        if region is None:
            raise InvalidArgumentError(f"{what} points outside the library ({ptr:#x})")
        raw = cast(bytes, ffi.string(ffi.cast("char*", ptr), min(limit, region[0])))  # char*
        if len(raw) >= min(limit, region[0]):
            raise InvalidArgumentError(f"{what} is not a NUL-terminated string")
        return raw.decode("utf-8", "replace")


_close_lock = threading.Lock()


def _close(lib: Any) -> None:
    with _close_lock:
        try:
            ffi.dlclose(lib)
        except (OSError, ValueError):
            pass  # already closed


def load_library(blob: bytes, what: str, symbol: str, machine: int | None = None) -> LoadedLibrary:
    """Validate ``blob`` and load it from a private copy. ``symbol`` must be a defined
    code symbol; the returned library's ``base`` is derived from its address.

    INVALID_ARGUMENT when the bytes are malformed, lack ``symbol``, or the loader
    refuses them; INCOMPATIBLE for another machine.
    """
    image = validate_elf(blob, what, machine)
    value = image.symbols.get(symbol)
    if value is None:
        raise InvalidArgumentError(
            f"{what} is a shared library but does not export {symbol}; exports "
            f"{sorted(image.symbols)[:8]}"
        )
    if image.functions is not None and value not in image.functions:
        raise InvalidArgumentError(f"{what}: {symbol} does not start a function")
    # The loader returns an already-loaded library for a name it has seen, so each load
    # gets a fresh, uniquely named file (a reused /proc/self/fd/N name would hand back an
    # earlier, different library).
    fd, path = tempfile.mkstemp(prefix="hal-local-cpu-", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        try:
            lib = ffi.dlopen(path)
        except OSError as exc:
            raise InvalidArgumentError(f"cannot load {what} as a shared library: {exc}") from None
    finally:
        os.unlink(path)
    try:
        fn = getattr(lib, symbol)
        base = int(ffi.cast("intptr_t", fn)) - value
    except (AttributeError, TypeError) as exc:
        _close(lib)
        raise InvalidArgumentError(f"{what}: cannot resolve {symbol}: {exc}") from None
    loaded = LoadedLibrary(lib, image, base)
    if not loaded.is_code(base + value):
        loaded.release()
        raise InvalidArgumentError(f"{what}: {symbol} is not code")
    return loaded
