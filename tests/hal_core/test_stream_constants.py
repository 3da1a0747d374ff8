"""Typed dispatch constants: laid out by the function's reflected parameters, or packed
back to back where a function reflects none; errors name the parameter."""

from __future__ import annotations

import numpy as np
import pytest

import hal_core as hal
from hal_core import FunctionInfo, FunctionParameter, ParameterType
from hal_core._typed_constants import pack_constants

C = ParameterType.CONSTANT


class _Exe:
    """Just the reflection ``pack_constants`` reads (``Executable.function_info``)."""

    def __init__(self, *params: FunctionParameter) -> None:
        count = sum(p.size for p in params if p.type == C) // 4
        self.info = FunctionInfo("f", 1, count, parameters=params)

    def function_info(self, function):
        return self.info


SCALE = _Exe(
    FunctionParameter(C, "scale", 4, 0),
    FunctionParameter(C, "offset", 4, 4),
    FunctionParameter(C, "count", 4, 8),
    FunctionParameter(ParameterType.BINDING, "io", 8, 0),
)
WIDE = _Exe(FunctionParameter(C, "n", 4, 0), FunctionParameter(C, "x", 8, 4))
BARE = _Exe()


def _want(*parts) -> bytes:
    return b"".join(np.asarray(v, dt).tobytes() for v, dt in parts)


def test_values_in_parameter_order():
    want = _want((2.0, np.float32), (0.5, np.float32), (7, np.uint32))
    assert pack_constants(SCALE, 0, (2.0, 0.5, 7)) == want
    assert pack_constants(SCALE, 0, [np.float32(2), np.float32(0.5), np.uint32(7)]) == want
    assert pack_constants(SCALE, 0, [np.float32([2.0, 0.5]), 7]) == want  # spans two
    assert pack_constants(SCALE, 0, {"count": 7, "scale": 2.0, "offset": 0.5}) == want


def test_raw_forms_pass_through():
    raw = bytes(range(12))
    assert pack_constants(SCALE, 0, raw) is raw
    assert pack_constants(SCALE, 0, bytearray(raw)) == raw
    assert pack_constants(SCALE, 0, np.frombuffer(raw, np.uint32)) == raw
    assert pack_constants(SCALE, 0, [1, 2, 3]) == _want(([1, 2, 3], np.uint32))


def test_sizes_follow_the_parameters():
    assert pack_constants(WIDE, 0, (3, -1)) == _want((3, np.uint32), (-1, np.int64))
    assert pack_constants(WIDE, 0, (3, 1.5)) == _want((3, np.uint32), (1.5, np.float64))
    # Three uint32 words for a 4 + 8 byte layout are the raw words queue_dispatch takes.
    assert pack_constants(WIDE, 0, [1, 2, 3]) == _want(([1, 2, 3], np.uint32))


def test_without_reflection_values_pack_back_to_back():
    assert pack_constants(BARE, 0, (1.0, np.int32(-2), True)) == _want(
        (1.0, np.float32), (-2, np.int32), (1, np.uint32)
    )
    with pytest.raises(hal.InvalidArgumentError, match="multiple of 4"):
        pack_constants(BARE, 0, (np.uint16(1),))
    with pytest.raises(hal.InvalidArgumentError, match="in order"):
        pack_constants(BARE, 0, {"a": 1})


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ((np.float64(2.0), 0.5, 7), r"'scale' \(value 0\) is 4 bytes; got 8"),
        ((2.0, 0.5), "missing: count"),
        ((2.0, 0.5, 7, 8), "4 constant values given; the function takes 3"),
        ({"scale": 1.0, "offset": 1.0, "cnt": 1}, r"unknown constant names \['cnt'\]"),
        ({"scale": 1.0, "offset": 1.0}, "missing: count"),
        ({"scale": np.float64(1), "offset": 1.0, "count": 1}, "'scale' is 4 bytes; got 8"),
        ((2.0, 0.5, 1 << 40), "does not fit in 4 bytes"),
        ((2.0, 0.5, "7"), "got str"),
        (3.5, "got float"),
    ],
)
def test_errors_name_the_parameter(values, match):
    with pytest.raises(hal.InvalidArgumentError, match=match):
        pack_constants(SCALE, 0, values)


def test_an_executable_is_required():
    with pytest.raises(hal.InvalidArgumentError, match="needs an Executable"):
        pack_constants(object(), 0, (1.0,))
