"""Host twins of the corpus' gfx1100 kernels (IREE 3.13 builds in this directory).

The software HSA agent cannot run AMDGPU machine code; these numpy functions stand in for
the kernels of ``NAME.hip1``, registered under the kernels' names
(``SoftHsaRuntime.register_host_twin``, or ``HAL_AMDGPU_SOFT_TWINS=<this file>`` for a
separate process). Each reads what the driver wrote into the kernarg segment: the binding
pointers (IREE's bindings are nameless, reached by offset through ``explicit_args()``) and
the 32-bit constants after them (byte offsets into bindings, a dynamic length), and
computes from the memory they point at.

What each twin reproduces of its kernel:

* the math of the MLIR (shapes are compiled into the kernels, so they are here too);
* the workgroup tiling of the gfx1100 build (``lowering_config`` ``workgroup`` tile sizes):
  workgroup x enumerates the output tiles row-major, the last tiled dimension fastest, and
  writes only its tile. A dispatch with fewer workgroups than tiles leaves the other tiles
  unwritten, as the GPU would; workgroups past the last tile change nothing (on the GPU
  their stores fall outside the binding's buffer resource and are dropped, or, where the
  build has a single tile and ignores the workgroup id, repeat its values);
* the arithmetic order of the corpus' reference outputs (IREE on ``local-task``): every
  sum runs sequentially over its reduction dimensions (matmul: k; convolution: kh, kw, c;
  the dynamic program: i), each product and sum rounded to f32. That is what makes the
  replay bit-identical to IREE's outputs. The gfx1100 code itself contracts products into
  FMAs and reduces the dynamic program's sum as a tree, so a real gfx1100 would differ
  from these twins in the last bits.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from hal_amdgpu.soft_hsa.host_twins import HostTwin, HostTwinContext

F32 = np.float32


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` summing k in order, each product and partial sum rounded to f32."""
    acc = np.zeros((a.shape[0], b.shape[1]), F32)
    for k in range(a.shape[1]):
        acc += a[:, k, None] * b[None, k, :]
    return acc


def conv_hwc(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Valid 2-D convolution of ``x`` (H, W, C) with ``w`` (KH, KW, C, F), stride 1,
    summing kh, kw, c in that order, each product and partial sum rounded to f32."""
    kh_n, kw_n, c_n, f_n = w.shape
    oh, ow = x.shape[0] - kh_n + 1, x.shape[1] - kw_n + 1
    acc = np.zeros((oh, ow, f_n), F32)
    for kh in range(kh_n):
        for kw in range(kw_n):
            for c in range(c_n):
                acc += x[kh : kh + oh, kw : kw + ow, c, None] * w[kh, kw, c][None, None, :]
    return acc


def store_tiles(
    ctx: HostTwinContext, out: np.ndarray, result: np.ndarray, tile: tuple[int, ...]
) -> None:
    """Write the tiles of ``result`` into ``out`` that the dispatched workgroups own:
    workgroup ``i`` (x fastest, then y, z) owns tile ``i`` of the row-major tile grid."""
    grid = tuple(-(-n // t) for n, t in zip(result.shape, tile))
    dispatched = math.prod(ctx.workgroup_count)
    for i in range(min(dispatched, math.prod(grid))):
        at = np.unravel_index(i, grid)
        region = tuple(slice(j * t, (j + 1) * t) for j, t in zip(at, tile))
        out[region] = result[region]


def _f32s(ctx: HostTwinContext, address: int, shape: tuple[int, ...]) -> np.ndarray:
    return ctx.array(address, math.prod(shape), F32).reshape(shape)


def _matmul_twin(
    m: int,
    n: int,
    k: int,
    tile: tuple[int, int],
    *,
    transpose_b: bool = False,
    epilogue: Callable[[np.ndarray], np.ndarray] | None = None,
    offsets: bool = False,
) -> HostTwin:
    """Twin of an IREE matmul dispatch: bindings a (m x k), b (k x n, or n x k when
    ``transpose_b``), out (m x n); with ``offsets`` the constants are the byte offsets of
    two bindings (which ones depends on the kernel: see the callers)."""

    def twin(ctx: HostTwinContext) -> None:
        args = ctx.explicit_args()
        a_at, b_at, out_at = args[:3]
        if offsets:
            a_at, b_at, out_at = _offset_bindings(ctx.kernel.name, args)
        a = _f32s(ctx, a_at, (m, k))
        b = _f32s(ctx, b_at, (n, k) if transpose_b else (k, n))
        result = matmul(a, b.T if transpose_b else b)
        if epilogue is not None:
            result = epilogue(result)
        store_tiles(ctx, _f32s(ctx, out_at, (m, n)), result, tile)

    return twin


def _offset_bindings(kernel: str, args: list[int]) -> tuple[int, int, int]:
    """Binding addresses with the dispatch's offset constants applied: the chain's step
    reads its input at ``c0`` and writes at ``c1`` of one ping-pong buffer; the transient
    program's second matmul reads b at ``c0`` and writes at ``c1``."""
    a, b, out, c0, c1 = args
    if kernel.startswith("chain_"):
        return a + c0, b, out + c1
    return a, b + c0, out + c1


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, F32(0))


def _relu_squared(x: np.ndarray) -> np.ndarray:
    r = np.maximum(x, F32(0))
    return r * r


def _conv_twin(
    in_shape: tuple[int, int, int],
    filter_shape: tuple[int, int, int, int],
    tile: tuple[int, int, int],
    epilogue: Callable[[np.ndarray], np.ndarray] | None = None,
) -> HostTwin:
    """Twin of an IREE NHWC/HWCF convolution dispatch with N = 1 (bindings: input, filter,
    output; the unit batch dimension is folded away in the kernel)."""

    def twin(ctx: HostTwinContext) -> None:
        x_at, w_at, out_at = ctx.explicit_args()
        result = conv_hwc(_f32s(ctx, x_at, in_shape), _f32s(ctx, w_at, filter_shape))
        if epilogue is not None:
            result = epilogue(result)
        store_tiles(ctx, _f32s(ctx, out_at, result.shape), result, tile)

    return twin


def _dynamic_twin(ctx: HostTwinContext) -> None:
    """Twin of dynamic_dispatch_0_reduction_D_f32: y[i] = x[i]*x[i] - sum(x) for the
    length passed as two 32-bit constants (low, high). One workgroup reduces the whole
    input (the build does not distribute it), so any workgroup count gives the same."""
    x_at, y_at, low, high = ctx.explicit_args()
    n = int(low) | int(high) << 32
    if n == 0:
        return
    x = ctx.array(x_at, n, F32)
    # add.accumulate sums strictly in order, in f32 (sum() would pair elements up).
    total = np.add.accumulate(x, dtype=F32)[-1]
    ctx.array(y_at, n, F32)[:] = x * x - total


HOST_TWINS: dict[str, HostTwin] = {
    # mlp: relu(x @ w1) then @ w2 (workgroup tiles from the gfx1100 lowering configs).
    "mlp_dispatch_0_matmul_4x32x16_f32": _matmul_twin(4, 32, 16, (32, 128), epilogue=_relu),
    "mlp_dispatch_1_matmul_4x8x32_f32": _matmul_twin(4, 8, 32, (8, 4)),
    # chain: one 4x4 step of a ping-pong chain (offsets as constants).
    "chain_dispatch_0_matmul_4x4x4_f32": _matmul_twin(4, 4, 4, (4, 4), offsets=True),
    # dynamic: the push-constant length.
    "dynamic_dispatch_0_reduction_D_f32": _dynamic_twin,
    # transient: relu(q @ k^T)^2, then two matmuls through transient buffers.
    "transient_dispatch_0_matmul_32x32x16_f32": _matmul_twin(
        32, 32, 16, (32, 128), transpose_b=True, epilogue=_relu_squared
    ),
    "transient_dispatch_1_matmul_32x16x32_f32": _matmul_twin(32, 16, 32, (32, 128), offsets=True),
    # conv: conv 3x3 + relu, conv 3x3 (tiles over oh, ow, f).
    "conv_dispatch_0_conv_8x8x8x3x3x3_f32": _conv_twin(
        (10, 10, 3), (3, 3, 3, 8), (1, 4, 8), epilogue=_relu
    ),
    "conv_dispatch_1_conv_6x6x4x3x3x8_f32": _conv_twin((8, 8, 8), (3, 3, 8, 4), (1, 8, 4)),
}
