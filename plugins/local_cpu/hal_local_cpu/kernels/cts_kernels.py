"""The CTS dispatch kernels in the local-cpu Python format: twins of ``cts_kernels.c``
with the same names, bindings, constants and results (64-element tiles per workgroup,
bounded by the explicit ``count`` constant clamped to the binding lengths)."""

from __future__ import annotations

from typing import NoReturn

import numpy as np

from hal_local_cpu.executable_python import kernel

TILE = 64
Grid = tuple[int, int, int]


def _count(count: int, *arrays: np.ndarray) -> int:
    return min(int(count), *(len(a) for a in arrays))


def _tile(n: int, x: int) -> slice:
    return slice(min(n, x * TILE), min(n, x * TILE + TILE))


@kernel(
    bindings=2,
    constants=3,
    binding_names=("input", "output"),
    constant_names=("scale", "offset", "count"),
)
def scale_and_offset(
    bindings: list[np.ndarray], constants: np.ndarray, workgroup_id: Grid, workgroup_count: Grid
) -> None:
    src = bindings[0].view(np.float32)
    dst = bindings[1].view(np.float32)
    scale, offset = constants[:2].view(np.float32)
    t = _tile(_count(constants[2], src, dst), workgroup_id[0])
    dst[t] = src[t] * scale + offset


@kernel(bindings=2, constants=1, constant_names=("count",))
def negate(
    bindings: list[np.ndarray], constants: np.ndarray, workgroup_id: Grid, workgroup_count: Grid
) -> None:
    src = bindings[0].view(np.float32)
    dst = bindings[1].view(np.float32)
    t = _tile(_count(constants[0], src, dst), workgroup_id[0])
    dst[t] = -src[t]


@kernel(bindings=2, constants=1, constant_names=("count",), name="double")
def double_values(
    bindings: list[np.ndarray], constants: np.ndarray, workgroup_id: Grid, workgroup_count: Grid
) -> None:
    src = bindings[0].view(np.float32)
    dst = bindings[1].view(np.float32)
    t = _tile(_count(constants[0], src, dst), workgroup_id[0])
    dst[t] = src[t] * np.float32(2.0)


@kernel(bindings=1)
def write_workgroup_ids(
    bindings: list[np.ndarray], constants: np.ndarray, workgroup_id: Grid, workgroup_count: Grid
) -> int | None:
    x, y, z = workgroup_id
    cx, cy, _ = workgroup_count
    i = x + y * cx + z * cx * cy
    out = bindings[0].view(np.uint32)
    if i >= len(out):
        return 11  # OUT_OF_RANGE, as the native twin
    out[i] = i
    return None


@kernel(bindings=1, constants=3)
def write_workgroup_count(
    bindings: list[np.ndarray], constants: np.ndarray, workgroup_id: Grid, workgroup_count: Grid
) -> None:
    bindings[0].view(np.uint32)[:3] = constants[:3]


@kernel
def noop(
    bindings: list[np.ndarray], constants: np.ndarray, workgroup_id: Grid, workgroup_count: Grid
) -> None:
    return None


@kernel(constants=2)
def fail_status(
    bindings: list[np.ndarray], constants: np.ndarray, workgroup_id: Grid, workgroup_count: Grid
) -> int:
    x, y, z = workgroup_id
    cx, cy, _ = workgroup_count
    return int(constants[0]) if x + y * cx + z * cx * cy == constants[1] else 0


@kernel(constants=0)
def raise_error(
    bindings: list[np.ndarray], constants: np.ndarray, workgroup_id: Grid, workgroup_count: Grid
) -> NoReturn:
    """Python only: raises, to test that kernel exceptions fail the signal semaphores."""
    raise ZeroDivisionError("raise_error kernel was asked to fail")
