"""Support shared by the command-buffer and dispatch CTS suites.

* ``pytest_generate_tests``: import it into a suite module to parametrize ``exe_format``
  over the executable formats of the selected backends and ``ref_mode`` over ``direct`` /
  ``indirect`` (the indirect variant needs the backend's ``indirect`` tag).
* ``executable(cts, fmt)``: the backend's CTS kernels in ``fmt``, prepared once per device;
  skips with the reason when this backend lacks the format or cannot build it (e.g. no C
  compiler).
* ``Refs``: hands out direct or indirect buffer references and builds the binding table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import hal_core
from hal_core import (
    BufferRef,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    QueueAffinity,
)

from .context import TIMEOUT

KERNELS = "cts_kernels"
"""The kernel library every backend provides for the dispatch suites (see
``hal_local_cpu/kernels/cts_kernels.c`` for the functions and their contracts)."""

DISPATCH_USAGE = (
    BufferUsage.DEFAULT | BufferUsage.TRANSFER | BufferUsage.DISPATCH_INDIRECT_PARAMETERS
)

_ANY = QueueAffinity.ANY
_prepared: dict[tuple[int, str], Any] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "exe_format" in metafunc.fixturenames:
        from .plugin import _config_for, _selected_uris

        formats: list[str] = []
        for uri in _selected_uris(metafunc.config):
            cfg = _config_for(uri)
            if isinstance(cfg, str):
                continue  # a rejected configuration: the ``cts`` fixture fails with it
            for fmt in cfg.executable_formats:
                if fmt not in formats:
                    formats.append(fmt)
        if not formats:
            metafunc.parametrize(
                "exe_format",
                [pytest.param(None, marks=pytest.mark.skip(reason="no executable formats"))],
                ids=["no-format"],
            )
        else:
            metafunc.parametrize("exe_format", formats, ids=formats)
    if "ref_mode" in metafunc.fixturenames:
        metafunc.parametrize(
            "ref_mode",
            ["direct", pytest.param("indirect", marks=pytest.mark.hal_requires("indirect"))],
        )


def executable(cts: Any, fmt: str) -> hal_core.Executable:
    key = (id(cts.device), fmt)
    exe = _prepared.get(key)
    if exe is not None:
        return exe
    source = cts.config.executable_formats.get(fmt)
    if source is None:
        pytest.skip(f"{cts.driver} does not provide CTS kernels in format {fmt!r}")
    try:
        data = source(KERNELS)
    except hal_core.UnavailableError as exc:
        pytest.skip(f"CTS kernels in {fmt!r} are unavailable: {exc}")
    except hal_core.NotFoundError as exc:
        pytest.skip(f"{cts.driver} has no {KERNELS!r} library in {fmt!r}: {exc}")
    exe = cts.device.create_executable_cache("cts").prepare(fmt, data)
    _prepared[key] = exe
    return exe


def f32(values: Any) -> bytes:
    return np.asarray(values, dtype=np.float32).tobytes()


def u32(values: Any) -> bytes:
    return np.asarray(values, dtype=np.uint32).tobytes()


def constants_f32(*values: float) -> bytes:
    return np.asarray(values, dtype=np.float32).tobytes()


def count_constant(count: int) -> bytes:
    """The ``count`` constant of the element kernels ``negate`` and ``double``: how many
    float32 elements they touch (the AMDGPU kernarg ABI has no binding lengths, so the
    count is explicit in every format)."""
    return u32([count])


def scale_offset_constants(scale: float, offset: float, count: int) -> bytes:
    """``scale_and_offset``'s constants: scale and offset (float32) and the element count."""
    return constants_f32(scale, offset) + u32([count])


def read_f32(cts: Any, buffer: hal_core.Buffer) -> list[float]:
    return np.frombuffer(cts.read_bytes(buffer), np.float32).tolist()


def read_u32(cts: Any, buffer: hal_core.Buffer) -> list[int]:
    return np.frombuffer(cts.read_bytes(buffer), np.uint32).tolist()


def dbuffer(cts: Any, size: int, data: Any = None) -> hal_core.Buffer:
    """A buffer usable for transfers, dispatch storage and indirect parameters."""
    return cts.buffer(size, data, usage=DISPATCH_USAGE)


class Refs:
    """References in one mode: ``direct`` returns ``BufferRef(buffer, ...)``; ``indirect``
    binds each distinct buffer to the next slot and returns ``BufferRef.indirect``."""

    CAPACITY = 8

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.table: list[Any] = []

    @property
    def capacity(self) -> int:
        return self.CAPACITY if self.mode == "indirect" else 0

    def __call__(
        self, buffer: hal_core.Buffer, offset: int = 0, length: int = hal_core.WHOLE_BUFFER
    ) -> BufferRef:
        if self.mode == "direct":
            return BufferRef(buffer, offset, length)
        for slot, bound in enumerate(self.table):
            if bound is buffer:
                return BufferRef.indirect(slot, offset, length)
        self.table.append(buffer)
        return BufferRef.indirect(len(self.table) - 1, offset, length)

    def command_buffer(
        self, cts: Any, mode: int = 0, categories: int = CommandCategory.ANY
    ) -> hal_core.CommandBuffer:
        return cts.device.create_command_buffer(mode, categories, _ANY, self.capacity)

    def execute(self, cts: Any, cb: hal_core.CommandBuffer) -> None:
        submit_and_wait(cts, cb, self.table if self.mode == "indirect" else None)


def submit_and_wait(cts: Any, cb: hal_core.CommandBuffer, table: Any = None) -> None:
    sem = cts.semaphore()
    cts.device.queue_execute(_ANY, (), [(sem, 1)], cb, table)
    sem.wait(1, TIMEOUT)


def record(
    cts: Any, fn: Any, *, mode: int = CommandBufferMode.ONE_SHOT, capacity: int = 0
) -> hal_core.CommandBuffer:
    """A command buffer recorded by ``fn(cb)`` between begin and end."""
    cb = cts.device.create_command_buffer(mode, CommandCategory.ANY, _ANY, capacity)
    cb.begin()
    fn(cb)
    cb.end()
    return cb
