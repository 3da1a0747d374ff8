"""Reusable command buffers as CUDA graphs.

A reusable command buffer (not ONE_SHOT) whose commands name their buffers directly, with
every buffer's memory committed at ``end()``, and which neither updates from host bytes
nor reads a workgroup count from a buffer, is turned into a CUDA graph once, at ``end()``:
its stream replay (``CudaProgram.run``) is captured on the device's capture stream
(thread-local capture mode, so other threads' CUDA calls are unaffected) and instantiated.
Each execution is then one ``cuGraphLaunch``. The graph bakes in the buffers' device
addresses, so each execution first checks that every buffer still has the memory it was
captured with (``buffer_storage`` raises FAILED_PRECONDITION for a deallocated one, as the
stream replay would); a buffer whose memory changed (a transient re-committed) makes that
execution replay as stream launches instead.

Programs that do not qualify replay as stream launches (binding tables, host-byte updates,
indirect workgroup counts, one-shot command buffers where instantiating costs more than it
saves). Re-recording a command buffer of the same shape builds a new graph: updating an
instantiated one (``cuGraphExecUpdate``) is not done yet.
"""

from __future__ import annotations

import weakref
from typing import Any

from hal_core import BufferRef
from hal_core.backend import buffer_storage

from .cuda_api import CudaContext, check
from .stream_ops import STEP_COPY, STEP_DISPATCH, STEP_FILL, CudaProgram

CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1


def _destroy(ctx: CudaContext, graph: Any, graph_exec: Any) -> None:
    try:
        ctx.make_current()
        ctx.api.cuGraphExecDestroy(graph_exec)
        ctx.api.cuGraphDestroy(graph)
    except Exception:
        pass


class CapturedGraph:
    """An instantiated graph of one program and the memory it was captured with.
    Launching is thread-safe (CUDA orders launches of one graph exec)."""

    __slots__ = ("graph_exec", "buffers", "_finalizer", "__weakref__")

    def __init__(self, ctx: CudaContext, graph: Any, graph_exec: Any, buffers: list) -> None:
        self.graph_exec = graph_exec
        self.buffers = buffers
        self._finalizer = weakref.finalize(self, _destroy, ctx, graph, graph_exec)

    def still_valid(self) -> bool:
        """Whether every buffer still has the memory the graph was captured with;
        FAILED_PRECONDITION for one that was deallocated."""
        for buffer, address in self.buffers:
            if buffer_storage(buffer).address != address:
                return False
        return True


def _direct_buffers(program: CudaProgram) -> list | None:
    """The distinct buffers the program names with their storage addresses, or None when
    it does not qualify (an indirect reference or a buffer without committed memory)."""
    seen: dict[int, tuple[Any, int]] = {}
    for step in program.steps:
        kind = step[0]
        if kind == STEP_DISPATCH:
            refs = step[1].refs
        elif kind == STEP_FILL:
            refs = (step[1],)
        elif kind == STEP_COPY:
            refs = (step[1], step[2])
        else:
            return None  # host-byte updates: pageable copies cannot be captured
        for ref in refs:
            buffer = ref.buffer if ref.__class__ is BufferRef else ref
            if buffer is None:
                return None
            if id(buffer) in seen:
                continue
            try:
                address = buffer_storage(buffer).address
            except Exception:
                return None  # a transient not committed yet
            seen[id(buffer)] = (buffer, address)
    return list(seen.values())


def capture(ctx: CudaContext, program: CudaProgram, stream: Any) -> CapturedGraph | None:
    """The program as an instantiated graph, or None when it does not qualify or CUDA
    refuses to capture it (it then replays as stream launches)."""
    if not program.steps or program.needs_host_sync:
        return None
    buffers = _direct_buffers(program)
    if buffers is None:
        return None
    api = ctx.api
    ctx.make_current()
    mode = api.CUstreamCaptureMode(CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
    if api.cuStreamBeginCapture(stream, mode)[0]:
        return None  # no capture on this driver or stream: replay as stream launches
    try:
        program.run(api, (), stream)
    except Exception:
        api.cuStreamEndCapture(stream)  # leaves the stream usable; the graph is dropped
        return None
    graph = check(api.cuStreamEndCapture(stream), "cuStreamEndCapture")
    result = api.cuGraphInstantiate(graph, 0)
    if result[0]:
        api.cuGraphDestroy(graph)
        return None
    return CapturedGraph(ctx, graph, result[1], buffers)
