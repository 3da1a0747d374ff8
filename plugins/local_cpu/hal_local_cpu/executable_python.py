"""Python executables (format ``local-cpu-python``): numpy kernels for quick work and as
reference implementations.

A kernel is a function marked with ``@kernel(bindings=..., constants=...)``::

    @kernel(bindings=2, constants=2)
    def scale_and_offset(bindings, constants, workgroup_id, workgroup_count):
        src = bindings[0].view(np.float32)
        ...

It is called once per workgroup with ``bindings`` (a list of writable uint8 numpy views of
the bound ranges), ``constants`` (a read-only uint32 numpy array), ``workgroup_id`` and
``workgroup_count`` (3-tuples). Returning None or 0 is success; returning a non-zero IREE
status code or raising fails the submission's signal semaphores with that code (UNKNOWN
for non-HAL exceptions). The HalError they fail with names the kernel and the workgroup and
has the kernel's own exception as ``__cause__``, its traceback kept as a note printed
under it (frames are not kept: a failed semaphore must not keep the submission's buffers
or its caller's locals alive). Kernels run with the GIL held, one workgroup at a time.

The executable data is a module, an importable module name, a mapping of name -> kernel,
or any object whose attributes include kernels. Exports are its marked functions, in
definition order for modules and mappings, sorted by name otherwise.
"""

from __future__ import annotations

import importlib
import types
from typing import Any, Callable

import attrs

from hal_core import InvalidArgumentError, UnimplementedError
from hal_core.backend import FunctionInfo, default_parameters

__all__ = ["FORMAT", "KernelSpec", "PythonExecutable", "kernel", "load_python_executable"]

FORMAT = "local-cpu-python"


@attrs.frozen
class KernelSpec:
    name: str
    binding_count: int
    constant_count: int
    workgroup_size: tuple[int, int, int] = (1, 1, 1)
    binding_names: tuple[str, ...] = ()
    constant_names: tuple[str, ...] = ()


def kernel(
    fn: Callable[..., Any] | None = None,
    *,
    bindings: int = 0,
    constants: int = 0,
    workgroup_size: tuple[int, int, int] = (1, 1, 1),
    name: str | None = None,
    binding_names: tuple[str, ...] = (),
    constant_names: tuple[str, ...] = (),
) -> Any:
    """Mark ``fn`` as a kernel export (usable bare or with arguments)."""

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        # A marker attribute on the function object (functions declare no attributes).
        f.__hal_kernel__ = KernelSpec(  # type: ignore[attr-defined]
            name or f.__name__,
            int(bindings),
            int(constants),
            # Element-wise int(): the length is the caller's 3 (mypy sees tuple[int, ...]).
            tuple(int(v) for v in workgroup_size),  # type: ignore[arg-type]
            tuple(binding_names),
            tuple(constant_names),
        )
        return f

    return mark(fn) if fn is not None else mark


class PythonExecutable:
    """The backend side of a Python executable: function infos and the callables."""

    __slots__ = ("functions", "fns", "__weakref__")

    is_native = False
    record_op = 5  # command_buffer.OP_PYDISPATCH

    def __init__(self, exports: list[tuple[KernelSpec, Callable[..., Any]]]) -> None:
        self.functions = tuple(
            FunctionInfo(
                name=spec.name,
                binding_count=spec.binding_count,
                constant_count=spec.constant_count,
                workgroup_size=spec.workgroup_size,
                parameters=default_parameters(
                    spec.binding_count,
                    spec.constant_count,
                    spec.binding_names,
                    spec.constant_names,
                ),
            )
            for spec, _fn in exports
        )
        self.fns = tuple(fn for _spec, fn in exports)


def load_python_executable(data: Any, constants: tuple = ()) -> PythonExecutable:
    """INVALID_ARGUMENT when ``data`` holds no kernels, cannot be imported, or exports a
    name twice; UNIMPLEMENTED for executable-level constants (kernels have no argument
    for them: pass dispatch constants)."""
    if constants:
        raise UnimplementedError(
            f"{FORMAT} executables take no executable-level constants; pass them as "
            "dispatch constants"
        )
    if isinstance(data, str):
        try:
            data = importlib.import_module(data)
        except ImportError as exc:
            raise InvalidArgumentError(
                f"cannot import Python kernel module {data!r}: {exc}"
            ) from None
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, types.ModuleType):
        items = list(vars(data).items())
    else:
        items = []
        for n in sorted(dir(data)):
            # Arbitrary objects compute attributes on access (properties, numpy views):
            # one that raises is not a kernel, and must not turn into a non-HAL error.
            try:
                items.append((n, getattr(data, n, None)))
            except Exception:
                continue
    exports = []
    seen = set()
    for _attr, value in items:
        spec = getattr(value, "__hal_kernel__", None)
        if not isinstance(spec, KernelSpec) or not callable(value):
            continue
        if spec.name in seen:
            raise InvalidArgumentError(f"Python executable exports {spec.name!r} twice")
        seen.add(spec.name)
        exports.append((spec, value))
    if not exports:
        raise InvalidArgumentError(
            f"{type(data).__name__} {getattr(data, '__name__', '')!r} holds no kernels; mark "
            "functions with hal_local_cpu.kernel(bindings=..., constants=...)"
        )
    return PythonExecutable(exports)
