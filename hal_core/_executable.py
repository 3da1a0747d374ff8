"""Executables, their functions, and executable caches.

An ``ExecutableCache`` (``Device.create_executable_cache(identifier)``) prepares
executables from a plugin-defined *format* string and its data. The backend declares what
it can prepare with ``executable_formats()`` and builds a backend executable with
``prepare_executable(format, data, params)`` (see ``hal_core.backend``); hal_core wraps it in
``Executable``, which answers function lookups and reflection the same way for every
backend.

Functions are addressed by ordinal (an int, fast, not stable across loads) or by name
(stable). Thread-safe: executables are immutable after preparation.
"""

from __future__ import annotations

import enum
from typing import Any, final

import attrs

from ._construction import INTERNAL, require_internal, sealed
from ._status import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    UnimplementedError,
)

__all__ = [
    "CachingMode",
    "Executable",
    "ExecutableCache",
    "FunctionFlags",
    "FunctionInfo",
    "FunctionParameter",
    "ParameterType",
]


class CachingMode(enum.IntFlag):
    """IREE's ``iree_hal_executable_caching_mode_t`` bits (hints to the cache)."""

    NONE = 0
    ALIAS_PROVIDED_DATA = 1 << 0
    ALLOW_PERSISTENT_CACHING = 1 << 1
    ALLOW_OPTIMIZATION = 1 << 2
    ENABLE_DEBUGGING = 1 << 3
    ENABLE_COVERAGE = 1 << 4
    ENABLE_PROFILING = 1 << 5
    DISABLE_VERIFICATION = 1 << 6


class FunctionFlags(enum.IntFlag):
    NONE = 0
    SEQUENTIAL = 1 << 0
    WORKGROUP_SIZE_DYNAMIC = 1 << 1


class ParameterType(enum.IntEnum):
    CONSTANT = 0
    BINDING = 1
    BUFFER_PTR = 2


@attrs.frozen
class FunctionParameter:
    """One reflected parameter: a 32-bit-word ``CONSTANT`` at byte ``offset`` of the
    constants, or a ``BINDING`` whose ``offset`` is its binding ordinal."""

    type: ParameterType
    name: str
    size: int
    offset: int
    flags: int = 0


def _size3(value: Any) -> tuple[int, int, int]:
    t = tuple(int(v) for v in value)
    if len(t) != 3 or any(v < 1 for v in t):
        raise InvalidArgumentError(f"workgroup size must be three ints >= 1, got {value!r}")
    return t


@attrs.frozen
class FunctionInfo:
    """What a function needs: ``binding_count`` buffers, ``constant_count`` 32-bit
    constants, its ``workgroup_size``, reflected ``parameters``, and the bytes of
    workgroup-local memory the backend supplies each workgroup (``local_memory_size``)."""

    name: str
    binding_count: int
    constant_count: int
    workgroup_size: tuple[int, int, int] = attrs.field(default=(1, 1, 1), converter=_size3)
    flags: FunctionFlags = FunctionFlags.NONE
    parameters: tuple[FunctionParameter, ...] = ()
    local_memory_size: int = 0

    @property
    def parameter_count(self) -> int:
        return len(self.parameters)


def default_parameters(
    binding_count: int,
    constant_count: int,
    binding_names: Any = None,
    constant_names: Any = None,
) -> tuple[FunctionParameter, ...]:
    """Parameters for a function that reflects only counts (names optional)."""
    out = []
    for i in range(constant_count):
        name = constant_names[i] if constant_names and i < len(constant_names) else f"c{i}"
        out.append(FunctionParameter(ParameterType.CONSTANT, name, 4, 4 * i))
    for i in range(binding_count):
        name = binding_names[i] if binding_names and i < len(binding_names) else f"b{i}"
        out.append(FunctionParameter(ParameterType.BINDING, name, 8, i))
    return tuple(out)


@final
@sealed
class Executable:
    """A prepared executable: functions by ordinal or name, with reflection.

    Created by ``ExecutableCache.prepare`` (no public constructor). Final. Immutable and
    thread-safe. ``close()`` (idempotent) forbids new dispatches; command buffers and
    submissions that already use it keep its code loaded until they are released.
    """

    __slots__ = ("format", "backend", "functions", "_by_name", "_closed", "__weakref__")

    def __init__(self, format: str, backend: Any, *, _token: object = None) -> None:
        """Internal: ``ExecutableCache.prepare`` passes ``_token=INTERNAL``."""
        require_internal(_token, "Executable", "ExecutableCache.prepare(format, data)")
        self.format = format
        self.backend = backend
        self.functions: tuple[FunctionInfo, ...] = tuple(backend.functions)
        self._by_name = {f.name: i for i, f in enumerate(self.functions)}
        self._closed = False

    def __repr__(self) -> str:
        from . import _reprs as R  # (not a hot path)

        try:
            state = " closed" if self._closed else ""
            names = R.names(f.name for f in self.functions)
            return f"<hal_core.Executable {self.format!r} [{names}]{state}>"
        except Exception:
            return "<hal_core.Executable>"

    @property
    def function_count(self) -> int:
        return len(self.functions)

    @property
    def closed(self) -> bool:
        return self._closed

    def lookup_function(self, name: str) -> int:
        """The ordinal of function ``name``; NOT_FOUND lists the names that exist."""
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise NotFoundError(
                f"executable has no function named {name!r}; it exports {sorted(self._by_name)}"
            ) from None

    def function_info(self, function: int | str) -> FunctionInfo:
        """Info of a function by ordinal or name (OUT_OF_RANGE / NOT_FOUND)."""
        if function.__class__ is not int:
            if isinstance(function, str):
                function = self.lookup_function(function)
            else:
                raise InvalidArgumentError(
                    f"function must be an ordinal or a name, got {type(function).__name__}"
                )
        if not 0 <= function < len(self.functions):
            raise OutOfRangeError(
                f"function ordinal {function} is outside 0..{len(self.functions) - 1}"
            )
        return self.functions[function]

    def function_parameters(self, function: int | str) -> tuple[FunctionParameter, ...]:
        return self.function_info(function).parameters

    def lookup_global(self, name: str) -> Any:
        """Executables of this HAL export no globals yet."""
        raise UnimplementedError(f"executable globals are not implemented (looked up {name!r})")

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "Executable":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@final
@sealed
class ExecutableCache:
    """Prepares executables for one device (``Device.create_executable_cache``; no public
    constructor). Final.

    Thread-safe; ``prepare`` blocks while the backend loads or compiles. ``identifier``
    partitions caches (e.g. one per program).
    """

    __slots__ = ("device", "identifier", "_closed")

    def __init__(self, device: Any, identifier: str, *, _token: object = None) -> None:
        """Internal: ``Device.create_executable_cache`` passes ``_token=INTERNAL``."""
        require_internal(_token, "ExecutableCache", "Device.create_executable_cache()")
        self.device = device
        self.identifier = identifier
        self._closed = False

    def formats(self) -> tuple[str, ...]:
        """The formats the device can prepare."""
        fn = self.device._contract.executable_formats
        return tuple(fn()) if fn is not None else ()

    def can_prepare(self, format: str, caching_mode: int = 0) -> bool:
        """Whether ``prepare(format, ...)`` could succeed. Never raises."""
        try:
            return isinstance(format, str) and format in self.formats()
        except Exception:
            return False

    def prepare(
        self,
        format: str,
        data: Any,
        *,
        caching_mode: int = 0,
        constants: Any = (),
    ) -> Executable:
        """Load ``data`` (bytes, a path, or a format-specific object) as an executable.

        NOT_FOUND when the device has no loader for ``format`` (``formats()`` lists
        them); INVALID_ARGUMENT when ``data`` is not a valid executable of that format.
        """
        if self._closed:
            raise FailedPreconditionError("executable cache is closed")
        if not isinstance(format, str):
            raise InvalidArgumentError(f"format must be a string, got {type(format).__name__}")
        if format not in self.formats():
            raise NotFoundError(
                f"no executable loader for format {format!r} on {self.device.uri}; "
                f"available: {list(self.formats())}"
            )
        params = {"caching_mode": CachingMode(caching_mode), "constants": tuple(constants)}
        backend = self.device._contract.prepare_executable(format, data, params)
        return Executable(format, backend, _token=INTERNAL)

    def close(self) -> None:
        self._closed = True

    def __repr__(self) -> str:
        from . import _reprs as R  # (not a hot path)

        try:
            state = " closed" if self._closed else ""
            ident = self.identifier if len(self.identifier) <= 32 else self.identifier[:29] + "..."
            return f"<hal_core.ExecutableCache {ident!r} on {R.device_name(self.device)}{state}>"
        except Exception:
            return "<hal_core.ExecutableCache>"

    def __enter__(self) -> "ExecutableCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
