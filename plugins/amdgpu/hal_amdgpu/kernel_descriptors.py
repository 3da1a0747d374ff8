"""Kernel descriptors and HAL kernarg images for amdgpu dispatches and blits.

``KernelDescriptor`` is what a packet needs of one kernel on one agent (resolved once per
executable), ``BuiltinKernels`` the blit kernels by element width, and
``hal_kernarg_image`` lays out the HAL kernarg ABI of one dispatch: ``u64 bindings[]``,
``u32 constants[]`` padded to 8, then the code-object-v5 hidden arguments this driver
fills at their metadata offsets.
"""

from __future__ import annotations

import struct
from typing import Sequence

import attrs
import numpy as np

from .kernarg_ring import KERNARG_BLOCK_SIZE

__all__ = [
    "KernelDescriptor",
    "BuiltinKernels",
    "hal_kernarg_image",
]

_NO_IMPLICIT = 0xFFFF

# Offsets of the code-object-v5 hidden arguments this driver fills, by value kind.
_HIDDEN_FILL = {
    "hidden_block_count_x": ("count", 0),
    "hidden_block_count_y": ("count", 1),
    "hidden_block_count_z": ("count", 2),
    "hidden_group_size_x": ("group", 0),
    "hidden_group_size_y": ("group", 1),
    "hidden_group_size_z": ("group", 2),
    "hidden_grid_dims": ("dims", 0),
    "hidden_dynamic_lds_size": ("lds", 0),
}


@attrs.frozen
class KernelDescriptor:
    """What a packet needs of one kernel on one agent (resolved once per executable).

    ``hidden_args``: ``(value_kind, offset, size)`` of the hidden arguments from the code
    object metadata; the kinds in ``_HIDDEN_FILL`` are filled, the rest stay zero.
    """

    kernel_object: int
    kernarg_size: int
    binding_count: int
    constant_count: int
    workgroup_size: tuple[int, int, int] = (1, 1, 1)
    private_segment_size: int = 0
    group_segment_size: int = 0
    explicit_size: int = 0
    hidden_args: tuple[tuple[str, int, int], ...] = ()
    name: str = ""


@attrs.frozen
class BuiltinKernels:
    """The blit kernels (1-D, grid-stride) used for FILL/COPY/UPDATE, by element width."""

    fill: dict  # {1: KernelDescriptor, 2: ..., 4: ..., 8: ...}
    copy: dict  # {1: KernelDescriptor, 4: ..., 16: ...}
    workgroup_size: int = 64
    max_workgroups: int = 1024


def hal_kernarg_image(
    desc: KernelDescriptor,
    pointers: Sequence[int],
    constants: bytes,
    workgroup_count: Sequence[int],
    workgroup_size: Sequence[int],
    dynamic_lds: int = 0,
) -> np.ndarray:
    """The HAL kernarg ABI image for one dispatch: ``u64 bindings[]``, ``u32 constants[]``
    padded to 8, then the hidden arguments at their metadata offsets. Length is a whole
    number of 64-byte blocks."""
    return np.frombuffer(
        _kernarg_image(desc, pointers, constants, workgroup_count, workgroup_size, dynamic_lds),
        np.uint8,
    )


def _kernarg_image(
    desc: KernelDescriptor,
    pointers: Sequence[int],
    constants: bytes,
    workgroup_count: Sequence[int],
    workgroup_size: Sequence[int],
    dynamic_lds: int = 0,
) -> bytearray:
    # Built in a bytearray: a handful of slice stores, no numpy call per record.
    n = len(pointers)
    size = max(desc.kernarg_size, 8 * n + len(constants))
    image = bytearray(-(-size // KERNARG_BLOCK_SIZE) * KERNARG_BLOCK_SIZE)
    if n:
        _PACK_U64[n].pack_into(image, 0, *pointers)
    if constants:
        image[8 * n : 8 * n + len(constants)] = constants
    for kind, offset, size_ in desc.hidden_args:
        fill = _HIDDEN_FILL.get(kind)
        if fill is None:
            continue
        what, axis = fill
        if what == "count":
            value = workgroup_count[axis]
        elif what == "group":
            value = workgroup_size[axis]
        elif what == "dims":
            value = 3
        else:
            value = dynamic_lds
        image[offset : offset + size_] = int(value).to_bytes(size_, "little")
    return image


class _PackCache(dict):
    def __missing__(self, n: int) -> struct.Struct:
        packer = self[n] = struct.Struct(f"<{n}Q")
        return packer


_PACK_U64 = _PackCache()


class _ImagePackCache(dict):
    """``(binding count, constant bytes, tail bytes)`` -> a packer of a whole HAL kernarg
    image: the pointers, the constants, then the shape's tail (hidden arguments)."""

    def __missing__(self, key: tuple[int, int, int]) -> struct.Struct:
        packer = self[key] = struct.Struct(f"<{key[0]}Q{key[1]}s{key[2]}s")
        return packer


_PACK_IMAGE = _ImagePackCache()
