"""Dispatch constants from typed values, laid out by the function's reflected parameters.

``pack_constants`` turns what a user naturally has (numpy scalars and arrays, Python
numbers, a mapping of parameter names to values) into the constant bytes a dispatch
takes. Where the function reflects its ``CONSTANT`` parameters (``FunctionInfo.parameters``
with byte ``offset`` and ``size``), each value is placed at its parameter's offset and must
have its size; otherwise values are packed back to back. Bytes and uint32 sequences pass
through unchanged, as ``queue_dispatch`` takes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._command_buffer import constants_bytes
from ._executable import FunctionParameter, ParameterType
from ._status import InvalidArgumentError

__all__ = ["pack_constants"]

_INT_DTYPES: dict[int, tuple[Any, Any]] = {
    1: (np.uint8, np.int8),
    2: (np.uint16, np.int16),
    4: (np.uint32, np.int32),
    8: (np.uint64, np.int64),
}
_FLOAT_DTYPES: dict[int, Any] = {2: np.float16, 4: np.float32, 8: np.float64}


def pack_constants(executable: Any, function: int | str, constants: Any) -> bytes:
    """The constant bytes for dispatching ``function`` of ``executable`` with ``constants``.

    ``constants`` is bytes-like, a numpy array (its raw bytes), a sequence of values or a
    mapping ``{parameter name: value}``. Values are numpy scalars or arrays (their bytes),
    Python ints (two's complement of the parameter's size), floats (IEEE of the
    parameter's size: 4 bytes float32, 8 float64) or bools. INVALID_ARGUMENT names the
    parameter when a value does not fit, when values are missing or left over, or when a
    name is unknown.
    """
    if constants.__class__ is bytes:
        return constants
    if isinstance(constants, (bytes, bytearray, memoryview, np.ndarray)):
        return constants_bytes(constants)
    params = _constant_parameters(executable, function)
    if isinstance(constants, Mapping):
        if not params:
            raise InvalidArgumentError(
                "constants by name need a function that reflects its parameters; this one "
                "does not: pass the values in order"
            )
        return _pack_by_name(params, constants)
    try:
        values = list(constants)
    except TypeError:
        raise InvalidArgumentError(
            "dispatch constants must be bytes, a numpy array, a sequence of values or a "
            f"mapping of parameter names to values, got {type(constants).__name__}"
        ) from None
    words = all(v.__class__ is int for v in values)
    if not params:
        return constants_bytes(values) if words else _pack_sequential(values)
    if words and 4 * len(values) == _layout_size(params) and len(values) != len(params):
        return constants_bytes(values)  # raw uint32 words, as queue_dispatch takes them
    return _pack_in_order(params, values)


def _constant_parameters(executable: Any, function: int | str) -> list[FunctionParameter]:
    info_of = getattr(executable, "function_info", None)
    if info_of is None:
        raise InvalidArgumentError(f"dispatch needs an Executable, got {type(executable).__name__}")
    info = info_of(function)
    return sorted(
        (p for p in info.parameters if p.type == ParameterType.CONSTANT), key=lambda p: p.offset
    )


def _value_bytes(value: Any, size: int | None, what: str) -> bytes:
    """``value`` as bytes; Python scalars take ``size`` bytes (4 when None)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return np.ascontiguousarray(value).tobytes()
    n = 4 if size is None else size
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        dtypes = _INT_DTYPES.get(n)
        if dtypes is None:
            raise InvalidArgumentError(f"{what} is {n} bytes: no integer type of that size")
        unsigned, signed = dtypes
        dtype = signed if value < 0 else unsigned
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise InvalidArgumentError(f"{what} value {value} does not fit in {n} bytes")
        return np.array(value, dtype).tobytes()
    if isinstance(value, float):
        ftype = _FLOAT_DTYPES.get(n)
        if ftype is None:
            raise InvalidArgumentError(f"{what} is {n} bytes: no float type of that size")
        return np.array(value, ftype).tobytes()
    raise InvalidArgumentError(
        f"{what} must be a numpy scalar or array, an int, a float or a bool, got "
        f"{type(value).__name__}"
    )


def _pack_sequential(values: list[Any]) -> bytes:
    out = b"".join(_value_bytes(v, None, f"constant {i}") for i, v in enumerate(values))
    if len(out) % 4:
        raise InvalidArgumentError(
            f"dispatch constants must be a multiple of 4 bytes; the values give {len(out)}"
        )
    return out


def _layout_size(params: list[FunctionParameter]) -> int:
    return max(p.offset + p.size for p in params)


def _pack_in_order(params: list[FunctionParameter], values: list[Any]) -> bytes:
    out = bytearray(_layout_size(params))
    p = 0
    for i, value in enumerate(values):
        if p >= len(params):
            raise InvalidArgumentError(
                f"{len(values)} constant values given; the function takes "
                f"{len(params)} ({', '.join(q.name for q in params)})"
            )
        first = params[p]
        data = _value_bytes(value, first.size, f"constant {first.name!r}")
        # An array spans the following parameters when they are adjacent and their sizes
        # add up to it exactly; a scalar fills exactly one.
        spans = isinstance(value, np.ndarray) and value.ndim > 0
        end = first.offset + first.size
        p += 1
        while spans and p < len(params) and end < first.offset + len(data):
            if params[p].offset != end:
                break
            end += params[p].size
            p += 1
        if end != first.offset + len(data):
            raise InvalidArgumentError(
                f"constant {first.name!r} (value {i}) is {first.size} bytes; got "
                f"{len(data)} bytes from {type(value).__name__}"
                f"{'' if not hasattr(value, 'dtype') else ' of ' + str(value.dtype)}"
            )
        out[first.offset : end] = data
    if p < len(params):
        missing = ", ".join(q.name for q in params[p:])
        raise InvalidArgumentError(f"dispatch constants missing: {missing}")
    return bytes(out)


def _pack_by_name(params: list[FunctionParameter], values: Mapping[str, Any]) -> bytes:
    by_name = {p.name: p for p in params}
    unknown = [k for k in values if k not in by_name]
    if unknown:
        raise InvalidArgumentError(
            f"unknown constant names {unknown}; the function takes {list(by_name)}"
        )
    missing = [name for name in by_name if name not in values]
    if missing:
        raise InvalidArgumentError(f"dispatch constants missing: {', '.join(missing)}")
    out = bytearray(_layout_size(params))
    for name, value in values.items():
        p = by_name[name]
        data = _value_bytes(value, p.size, f"constant {name!r}")
        if len(data) != p.size:
            raise InvalidArgumentError(
                f"constant {name!r} is {p.size} bytes; got {len(data)} bytes from "
                f"{type(value).__name__}"
            )
        out[p.offset : p.offset + p.size] = data
    return bytes(out)
