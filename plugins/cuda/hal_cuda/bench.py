"""``hal bench`` entries for NVIDIA GPUs: hal-cuda's dispatch paths and their peers.

hal-side (``--device cuda://N``; skipped on any other device, with the reason):

* ``cb.replay.cuda``: ``cb.replay``'s shape on the GPU (the generic entry needs native CPU
  kernels): submit+wait of a prebuilt reusable command buffer of 512 single-workgroup
  ``noop`` dispatches (hal-cuda's CTS kernels, PTX); us per dispatch.
* ``dispatch.direct``: 512 ``queue_dispatch`` calls of the CTS ``negate`` kernel in place
  on a 16-byte device buffer (one workgroup, 4 elements), each waiting on the previous
  one's timeline value and signalling the next, then a host wait on the last; us per op.
* ``replay.chain512`` / ``iree.replay.chain512``: hal-core's ``Player`` and IREE's
  ``iree-benchmark-replay --replay_scope=execute`` on the same capture: IREE's CUDA runtime
  running the 512-dispatch chain (``tests/plugins/cuda/iree_executables/chain512.vmfb``),
  captured once per ``hal bench`` run by ``iree-run-module --device_replay_output`` (needs
  ``iree-base-runtime`` on the GPU machine); us per dispatch.

Peers (run when PyTorch or NVIDIA's ``cuda-bindings`` is importable and the device under
test is a ``cuda://`` device, on the GPU it names; skipped otherwise, with the reason):

* ``torch.event_edge`` / ``cuda.event_edge``: ``edge.e2e``'s chain with CUDA events: 512
  edges alternating between two streams, each ``wait_event`` on the previous edge's event
  then ``record`` of its own (PyTorch's ``torch.cuda`` API / the raw driver calls
  ``cuStreamWaitEvent`` + ``cuEventRecord`` through ``cuda.bindings``), from the first call
  until the host's synchronize on the last event returns; us per edge.
* ``torch.eager.add``: 512 in-place ``add_`` of a 4-element float32 tensor on one stream,
  then ``torch.cuda.synchronize()``; us per op.
* ``torch.graph.capture``: capture and instantiate (``torch.cuda.graph``) a 512-node chain
  of those in-place adds; us per node. ``torch.graph.replay``: ``replay()`` of that graph
  then synchronize; us per node.

Every entry takes the median over ``--repeats`` samples after one untimed warm-up, with
the cyclic GC paused during each sample (``BenchContext.median``), as the generic entries
do. Nothing here imports torch or CUDA at module import: each entry imports what it needs
and is skipped (``BenchmarkSkipped``) when it is missing.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hal_core import (
    BufferParams,
    BufferUsage,
    DispatchConfig,
    QueueAffinity,
)
from hal_core.bench import BenchContext, BenchmarkSkipped, benchmark
from hal_core.bench.command_buffers import noop_replay_us

from .kernels import CTS_LIBRARY, load_ptx

#: Chain lengths: as edge.e2e (EDGES) and cb.replay (DISPATCHES), per sample.
EDGES = 512
DISPATCHES = 512
_TIMEOUT = 60.0
_ANY = QueueAffinity.ANY
_COUNT_4 = (4).to_bytes(4, "little")  # negate's element-count constant (4 float32s)
#: A source checkout to take the replay fixtures from when hal-cuda is installed from a
#: wheel (an editable install finds its own checkout).
CHECKOUT_ENV = "HAL_SOURCE_CHECKOUT"
#: An existing capture of chain512.vmfb on the GPU (``tools/iree_cuda_peer.sh`` writes
#: one) for the replay entries to use instead of capturing their own.
CAPTURE_ENV = "HAL_CUDA_CHAIN512_CAPTURE"
_CHAIN512_VMFB = Path("tests", "plugins", "cuda", "iree_executables", "chain512.vmfb")
_CHAIN_INPUTS = (  # 4x4 float32 x and w, the 256-step corpus chain's inputs
    Path("tests", "replay_corpus", "chain.input0.npy"),
    Path("tests", "replay_corpus", "chain.input1.npy"),
)

__all__ = ["CAPTURE_ENV", "CHECKOUT_ENV", "DISPATCHES", "EDGES"]


def _cuda_ordinal(uri: str) -> int:
    """The GPU index a ``cuda://`` URI names (0 for ``cuda://``, a list or a UUID, whose
    first GPU the peers cannot resolve without the driver: they use GPU 0 then)."""
    scheme, _, rest = uri.partition("://")
    if scheme != "cuda":
        raise BenchmarkSkipped(f"a CUDA peer; the device under test is {uri!r}, not cuda://")
    head = rest.split("?", 1)[0].split(",", 1)[0]
    return int(head) if head.isdigit() else 0


def _require_cuda_device(ctx: BenchContext) -> None:
    if ctx.device is None or ctx.device.driver_name != "cuda":
        raise BenchmarkSkipped(f"runs on a cuda:// device only, not {ctx.uri!r}")


def _torch(ctx: BenchContext) -> Any:
    """``torch`` with the GPU of the device under test current, or BenchmarkSkipped."""
    ordinal = _cuda_ordinal(ctx.uri)
    try:  # imported by name: torch is optional and not type-checked here
        torch = importlib.import_module("torch")
    except ImportError as exc:
        raise BenchmarkSkipped(f"PyTorch is not importable ({exc})") from None
    if not torch.cuda.is_available() or ordinal >= torch.cuda.device_count():
        raise BenchmarkSkipped(f"PyTorch sees no CUDA GPU {ordinal}")
    torch.cuda.set_device(ordinal)
    return torch


# -- hal-side entries ---------------------------------------------------------------------------


def _cts_executable(ctx: BenchContext) -> Any:
    """hal-cuda's CTS kernels (PTX) prepared on the device under test."""
    _require_cuda_device(ctx)
    return ctx.device.create_executable_cache("bench").prepare("ptx", load_ptx(CTS_LIBRARY))


@benchmark("cb.replay.cuda", "us/dispatch")
def cb_replay_cuda(ctx: BenchContext) -> float:
    """cb.replay on a GPU: submit+wait of a prebuilt command buffer of 512 PTX no-ops."""
    return noop_replay_us(ctx, _cts_executable(ctx))


@benchmark("dispatch.direct", "us/op")
def dispatch_direct(ctx: BenchContext) -> float:
    """512 chained queue_dispatch calls of an in-place 4-element negate; us per op."""
    exe = _cts_executable(ctx)
    fn = exe.lookup_function("negate")
    buf = ctx.device.allocator.allocate_buffer(
        BufferParams(usage=BufferUsage.DEFAULT | BufferUsage.TRANSFER), 16
    )
    bindings = (buf, buf)
    config = DispatchConfig.static(1)
    sem = ctx.device.create_semaphore()
    dispatch = ctx.device.queue_dispatch
    value = [0]

    def once() -> float:
        v = value[0]
        t0 = ctx.now()
        for _ in range(DISPATCHES):
            dispatch(1, ((sem, v),), ((sem, v + 1),), exe, fn, config, _COUNT_4, bindings)
            v += 1
        sem.wait(v, _TIMEOUT)
        t1 = ctx.now()
        value[0] = v
        return (t1 - t0) / DISPATCHES * 1e6

    return ctx.median(once)


# -- PyTorch peers ------------------------------------------------------------------------------


@benchmark("torch.event_edge", "us/edge", needs_device=False)
def torch_event_edge(ctx: BenchContext) -> float:
    """Peer of edge.e2e: 512 event edges alternating two torch streams; us per edge."""
    torch = _torch(ctx)
    streams = (torch.cuda.Stream(), torch.cuda.Stream())
    head = torch.cuda.Event()
    events = [torch.cuda.Event() for _ in range(EDGES)]

    def once() -> float:
        head.record(streams[0])
        head.synchronize()  # a signalled head, as edge.e2e's
        prev = head
        t0 = ctx.now()
        for i in range(EDGES):
            stream = streams[i & 1]
            stream.wait_event(prev)
            prev = events[i]
            prev.record(stream)
        prev.synchronize()
        return (ctx.now() - t0) / EDGES * 1e6

    return ctx.median(once)


@benchmark("torch.eager.add", "us/op", needs_device=False)
def torch_eager_add(ctx: BenchContext) -> float:
    """Peer of dispatch.direct: 512 in-place adds on a 4-float tensor, then sync; us/op."""
    torch = _torch(ctx)
    x = torch.zeros(4, device="cuda")
    torch.cuda.synchronize()

    def once() -> float:
        t0 = ctx.now()
        for _ in range(DISPATCHES):
            x.add_(1.0)
        torch.cuda.synchronize()
        return (ctx.now() - t0) / DISPATCHES * 1e6

    return ctx.median(once)


def _capture_chain(torch: Any, x: Any) -> Any:
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(DISPATCHES):
            x.add_(1.0)
    return graph


def _warmed_tensor(torch: Any) -> Any:
    """A 4-float tensor whose add_ already ran on a side stream, as torch asks before a
    capture (so lazy initialisation is not captured)."""
    x = torch.zeros(4, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        x.add_(1.0)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    return x


@benchmark("torch.graph.capture", "us/node", needs_device=False)
def torch_graph_capture(ctx: BenchContext) -> float:
    """Peer of cb.record.unvalidated: capture+instantiate a 512-node add chain; us/node."""
    torch = _torch(ctx)
    x = _warmed_tensor(torch)

    def once() -> float:
        t0 = ctx.now()
        graph = _capture_chain(torch, x)
        t1 = ctx.now()
        graph.reset()
        return (t1 - t0) / DISPATCHES * 1e6

    return ctx.median(once)


@benchmark("torch.graph.replay", "us/node", needs_device=False)
def torch_graph_replay(ctx: BenchContext) -> float:
    """Peer of cb.replay.cuda: replay of a 512-node captured add chain, then sync; us/node."""
    torch = _torch(ctx)
    graph = _capture_chain(torch, _warmed_tensor(torch))
    torch.cuda.synchronize()

    def once() -> float:
        t0 = ctx.now()
        graph.replay()
        torch.cuda.synchronize()
        return (ctx.now() - t0) / DISPATCHES * 1e6

    try:
        return ctx.median(once)
    finally:
        graph.reset()


# -- raw driver peer ----------------------------------------------------------------------------


def _driver() -> Any:
    try:  # imported by name: cuda-bindings is optional and ships no type information
        return importlib.import_module("cuda.bindings.driver")
    except ImportError as exc:
        raise BenchmarkSkipped(f"cuda-bindings is not importable ({exc})") from None


def _ok(cu: Any, result: Any, what: str) -> Any:
    """The values after a cuda.bindings call's CUresult; BenchmarkSkipped when the driver
    reports no GPU or no driver, RuntimeError for any other failure."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cu.CUresult.CUDA_SUCCESS:
        if what in ("cuInit", "cuDeviceGet"):
            raise BenchmarkSkipped(f"{what} failed ({err!r}): no usable CUDA driver or GPU")
        raise RuntimeError(f"{what} failed: {err!r}")
    return rest[0] if len(rest) == 1 else None


@benchmark("cuda.event_edge", "us/edge", needs_device=False)
def cuda_event_edge(ctx: BenchContext) -> float:
    """Peer of edge.e2e: the raw driver's cuStreamWaitEvent + cuEventRecord; us per edge."""
    ordinal = _cuda_ordinal(ctx.uri)
    cu = _driver()
    try:
        initialised = cu.cuInit(0)
    except Exception as exc:  # cuda-bindings raises when libcuda itself is missing
        raise BenchmarkSkipped(f"the CUDA driver library cannot be loaded: {exc}") from None
    _ok(cu, initialised, "cuInit")
    device = _ok(cu, cu.cuDeviceGet(ordinal), "cuDeviceGet")
    context = _ok(cu, cu.cuDevicePrimaryCtxRetain(device), "cuDevicePrimaryCtxRetain")
    streams: list[Any] = []
    events: list[Any] = []
    try:
        _ok(cu, cu.cuCtxPushCurrent(context), "cuCtxPushCurrent")
        flags = int(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)
        streams = [_ok(cu, cu.cuStreamCreate(flags), "cuStreamCreate") for _ in range(2)]
        no_timing = int(cu.CUevent_flags.CU_EVENT_DISABLE_TIMING)
        events = [_ok(cu, cu.cuEventCreate(no_timing), "cuEventCreate") for _ in range(EDGES + 1)]
        head, chain = events[0], events[1:]
        wait, record = cu.cuStreamWaitEvent, cu.cuEventRecord
        success = cu.CUresult.CUDA_SUCCESS

        def once() -> float:
            _ok(cu, record(head, streams[0]), "cuEventRecord")
            _ok(cu, cu.cuEventSynchronize(head), "cuEventSynchronize")
            prev = head
            t0 = ctx.now()
            for i in range(EDGES):
                stream = streams[i & 1]
                (err,) = wait(stream, prev, 0)
                if err != success:
                    raise RuntimeError(f"cuStreamWaitEvent failed: {err!r}")
                prev = chain[i]
                (err,) = record(prev, stream)
                if err != success:
                    raise RuntimeError(f"cuEventRecord failed: {err!r}")
            _ok(cu, cu.cuEventSynchronize(prev), "cuEventSynchronize")
            return (ctx.now() - t0) / EDGES * 1e6

        return ctx.median(once)
    finally:
        for event in events:
            cu.cuEventDestroy(event)
        for stream in streams:
            cu.cuStreamDestroy(stream)
        cu.cuCtxPopCurrent()
        cu.cuDevicePrimaryCtxRelease(device)


# -- IREE's CUDA capture, replayed by hal-core and by IREE --------------------------------------


def _iree_device(uri: str) -> str:
    """IREE's URI for the GPU a ``cuda://`` URI names (IREE takes an index or GPU-UUID)."""
    _cuda_ordinal(uri)  # skips a non-cuda device
    head = uri.partition("://")[2].split("?", 1)[0].split(",", 1)[0]
    return f"cuda://{head}" if head else "cuda"


def _checkout() -> Path:
    override = os.environ.get(CHECKOUT_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[3]


@functools.cache
def _chain512_capture(iree_device: str) -> Path:
    """``$HAL_CUDA_CHAIN512_CAPTURE``, or IREE's CUDA run of chain512.vmfb captured once per
    process (a temporary file that lives until exit); BenchmarkSkipped when the tools, the
    fixture or the GPU is missing."""
    given = os.environ.get(CAPTURE_ENV)
    if given:
        if not Path(given).is_file():
            raise BenchmarkSkipped(f"${CAPTURE_ENV} names {given!r}, which is not a file")
        return Path(given)
    tool = shutil.which("iree-run-module")
    if tool is None:
        raise BenchmarkSkipped(
            "iree-run-module is not on PATH (pip install iree-base-runtime==3.13.0)"
        )
    root = _checkout()
    vmfb = root / _CHAIN512_VMFB
    inputs = [root / p for p in _CHAIN_INPUTS]
    if not vmfb.is_file() or not all(p.is_file() for p in inputs):
        raise BenchmarkSkipped(
            f"{vmfb} or its inputs are missing: run from a source checkout or set "
            f"${CHECKOUT_ENV} to one"
        )
    out = Path(tempfile.mkdtemp(prefix="hal-cuda-chain512-")) / "chain512.cuda.ireereplay"
    argv = [
        tool,
        f"--device={iree_device}",
        f"--module={vmfb}",
        "--function=chain",
        *(f"--input=@{p}" for p in inputs),
        f"--device_replay_output={out}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not out.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BenchmarkSkipped(f"iree-run-module could not capture on {iree_device}: {tail[0]}")
    return out


@benchmark("replay.chain512", "us/dispatch")
def replay_chain512(ctx: BenchContext) -> float:
    """hal-core replays IREE's CUDA capture of the 512-dispatch chain (execute scope)."""
    from hal_core.bench.replay import median_execute_us
    from hal_core.replay import Player

    _require_cuda_device(ctx)
    player = Player(_chain512_capture(_iree_device(ctx.uri)), ctx.device)
    try:  # one warm-up run, then the median of whole runs, as replay.chain measures
        return median_execute_us(ctx, player) / DISPATCHES
    finally:
        player.close()


@benchmark("iree.replay.chain512", "us/dispatch")
def iree_replay_chain512(ctx: BenchContext) -> float:
    """IREE's iree-benchmark-replay on the same capture (execute scope), per dispatch."""
    from hal_core.bench.replay import parse_iree_benchmark_json

    device = _iree_device(ctx.uri)
    tool = shutil.which("iree-benchmark-replay")
    if tool is None:
        raise BenchmarkSkipped(
            "iree-benchmark-replay is not on PATH (pip install iree-base-runtime==3.13.0)"
        )
    argv = [
        tool,
        f"--device={device}",
        "--replay_scope=execute",
        "--benchmark_format=json",
        f"--benchmark_repetitions={max(1, ctx.repeats)}",
        "--benchmark_min_time=0.1s",
        str(_chain512_capture(device)),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"iree-benchmark-replay failed (rc {done.returncode}): {tail[0]}")
    return parse_iree_benchmark_json(done.stdout) / DISPATCHES
