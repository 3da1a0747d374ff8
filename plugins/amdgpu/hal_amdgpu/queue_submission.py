"""The records of one amdgpu queue submission: ``_Sub`` (a submission in flight through
wait resolution, parking and publication, built by ``HostQueueSet.submit``) and ``_Blit``
(the encoded packet of a single fill, copy or small update). Owned by one ``HostQueue``;
touched under its lock or by the thread that admits it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from hal_core.backend import QueueOp

from .block_format import BlockProgram

if TYPE_CHECKING:
    from .host_queue import HostQueue

__all__ = ["_Blit", "_Sub"]


class _Sub:
    """One submission in flight through resolution, parking and publication."""

    __slots__ = (
        "op",
        "program",
        "block",
        "binding_ptrs",
        "static_ptrs",
        "barriers",
        "action",
        "resources",
        "signals",
        "acquire",
        "table",
        "counts",
        "blit",
    )

    def __init__(self, op: QueueOp) -> None:
        self.op = op
        self.program: BlockProgram | None = None
        self.block = 0
        self.binding_ptrs: np.ndarray | None = None
        self.static_ptrs: np.ndarray | None = None
        self.barriers: list[tuple["HostQueue", int]] = []
        self.action: Callable[[], None] | None = None
        self.resources: Any = None
        self.signals: tuple = op.signals
        self.acquire = 0
        self.table: tuple = ()
        self.counts: tuple[int, int, int] | None = None
        #: Single transfer fast path: ``_Blit`` once pointers are resolved at admission.
        self.blit: Any = None


class _Blit:
    """An encoded single-transfer packet: kernarg image, staged body, self-pointer slot."""

    __slots__ = ("image", "row", "self_offset")

    def __init__(self, image: np.ndarray, row: np.ndarray, self_offset: int) -> None:
        self.image = image
        self.row = row
        self.self_offset = self_offset
