"""The CTS kernels of the local CPU backend, in both executable formats.

``executable_data(format, name)`` returns what ``ExecutableCache.prepare`` takes: for
``local-cpu-native`` the path of ``<name>.c`` compiled with the system C compiler (cached;
UNAVAILABLE without one), for ``local-cpu-python`` the twin module ``<name>.py``.
"""

from __future__ import annotations

import importlib
from typing import Any

from hal_core import NotFoundError

from ..executable_native import FORMAT as NATIVE_FORMAT
from ..executable_python import FORMAT as PYTHON_FORMAT
from ..native_build import build_shared_library, package_dir

__all__ = [
    "KERNELS",
    "cts_executable_formats",
    "executable_data",
    "native_library",
    "python_module",
]

KERNELS = ("cts_kernels",)


def _check(name: str) -> None:
    if name not in KERNELS:
        raise NotFoundError(f"no CTS kernel library named {name!r}; known: {list(KERNELS)}")


def native_library(name: str) -> str:
    """Path of the compiled native library ``name`` (compiles at first use)."""
    _check(name)
    src = package_dir() / "kernels" / f"{name}.c"
    return str(build_shared_library(name, src))


def python_module(name: str) -> Any:
    _check(name)
    return importlib.import_module(f"{__name__}.{name}")


def executable_data(format: str, name: str) -> Any:
    if format == NATIVE_FORMAT:
        return native_library(name)
    if format == PYTHON_FORMAT:
        return python_module(name)
    raise NotFoundError(f"the local CPU CTS kernels have no {format!r} form")


def cts_executable_formats() -> dict[str, Any]:
    """``CtsBackend.executable_formats``: format -> callable(kernel library name) -> data.
    The native callable compiles at first call and raises UNAVAILABLE without a C
    compiler (the CTS turns that into a skip with the reason)."""
    return {
        NATIVE_FORMAT: native_library,
        PYTHON_FORMAT: python_module,
    }
