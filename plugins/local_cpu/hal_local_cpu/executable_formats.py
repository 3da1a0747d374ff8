"""The executable formats the local CPU backend prepares, and their loaders.

* ``local-cpu-native``: a shared library with the C ABI of ``hal_cpu_abi.h`` (bytes or a
  path), see ``executable_native``.
* ``local-cpu-python``: numpy kernels (a module, module name, mapping or object), see
  ``executable_python``.
* ``embedded-elf-x86_64`` and ``system-elf-x86_64`` (x86-64 hosts only): IREE's llvm-cpu
  output, see ``iree_elf``.
"""

from __future__ import annotations

from typing import Any

from hal_core import NotFoundError

from . import executable_native, executable_python, iree_elf
from .elf_validation import EM_X86_64, host_machine

__all__ = ["FORMATS", "prepare_executable"]

FORMATS = {
    executable_native.FORMAT: executable_native.load_native_executable,
    executable_python.FORMAT: executable_python.load_python_executable,
}
if host_machine() == EM_X86_64:
    FORMATS[iree_elf.EMBEDDED_FORMAT] = iree_elf.load_embedded_elf
    FORMATS[iree_elf.SYSTEM_FORMAT] = iree_elf.load_system_elf


def prepare_executable(format: str, data: Any, params: dict[str, Any]) -> Any:
    """Load ``data`` in ``format`` with ``params["constants"]`` (executable-level
    constants). NOT_FOUND for other formats; loaders raise INVALID_ARGUMENT for bad data
    and UNIMPLEMENTED for constants a format has no place for."""
    loader = FORMATS.get(format)
    if loader is None:
        raise NotFoundError(
            f"local CPU backend cannot prepare format {format!r}; it knows {sorted(FORMATS)}"
        )
    return loader(data, params.get("constants", ()))
