"""The recording fast paths of hal-cuda's ``end()`` agree with the general ones, over the
stand-in driver. ``CudaProgram`` reads a recording of dispatches sharing one launch
template (barriers and debug labels aside) without a per-command loop
(``stream_ops._one_template``), and ``kernel_layouts.OneTemplateLayout`` writes the binding
words of such a program from one row per reference tuple. Pinned, for random recordings: the
program's steps, stages, templates, parameter words, shape and launches equal those the
command-at-a-time path builds; the layout writes exactly the words resolving each
reference one by one writes; and executions make the same graph calls and launch the
same kernels with the same parameters."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hal_cuda import cuda_api, kernel_graphs, kernel_layouts, stream_ops
from hal_cuda import driver as cuda_driver
from hal_cuda.kernels import CTS_LIBRARY, load_ptx
from hal_cuda.stream_ops import CudaProgram

from hal_core import (
    BufferBinding,
    BufferParams,
    BufferRef,
    BufferUsage,
    CommandBufferMode,
    CommandCategory,
    DispatchConfig,
    QueueAffinity,
)
from hal_core.backend import buffer_storage, device_from_backend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_cuda_driver import FakeDriver, install  # noqa: E402

ANY = QueueAffinity.ANY
TIMEOUT = 10.0
USAGE = BufferUsage.DEFAULT | BufferUsage.TRANSFER
ONE_SHOT = CommandBufferMode.ONE_SHOT | CommandBufferMode.UNVALIDATED
LAUNCH_FIELDS = (
    "function",
    "grid",
    "block",
    "count_ref",
    "refs",
    "words",
    "first",
    "shared",
    "executable_id",
    "ordinal",
    "direct",
    "function_ptr",
)


@pytest.fixture
def fake(monkeypatch: Any) -> Any:
    api = FakeDriver()
    install(monkeypatch, api)
    yield api
    api.release()
    cuda_api.reset_for_tests()


@pytest.fixture
def dev(fake: Any) -> Any:
    backend = cuda_driver.CudaDriverBackend().create_device_by_path("0", {})
    device = device_from_backend(backend, driver_name="cuda", uri="cuda://0")
    yield device
    device.close()


def _general(monkeypatch: Any) -> None:
    """Make ``CudaProgram`` read every recording one command at a time."""
    monkeypatch.setattr(stream_ops, "_one_template", lambda commands: None)


class _Recording:
    """Random recordings over a few buffers, configs and constants of one executable."""

    def __init__(self, dev: Any, seed: int) -> None:
        self.rng = random.Random(seed)
        self.exe = dev.create_executable_cache("fast").prepare("ptx", load_ptx(CTS_LIBRARY))
        self.buffers = [
            dev.allocator.allocate_buffer(BufferParams(usage=USAGE), 64) for _ in range(3)
        ]
        config = DispatchConfig.static(1)
        # The same config object, an equal one, and another grid.
        self.configs = [config, config, config, DispatchConfig.static(1), DispatchConfig.static(2)]
        self.constants = [b"\4\0\0\0", b"\4\0\0\0", b"\2\0\0\0", b""]

    def _refs(self) -> tuple:
        rng, a, b, c = self.rng, *self.buffers
        choices: list[tuple] = [
            (a, b),
            (b, a),
            (BufferRef(c, 16, 16), a),
            (BufferRef.indirect(0, 8, 8), b),
            (a,),  # fewer than the function binds (UNVALIDATED)
            (a, b, c),  # more than it binds
        ]
        return choices[rng.randrange(len(choices))]

    def record(self, dev: Any, mode: int, uniform: bool) -> Any:
        """A recording of 1..40 dispatches with barriers and debug labels between;
        ``uniform``: every dispatch names the same function, config and constants."""
        rng = self.rng
        cb = dev.create_command_buffer(mode, CommandCategory.ANY, ANY, 1)
        cb.begin()
        config, constants = self.configs[0], self.constants[0]
        tuples = [self._refs() for _ in range(rng.randrange(1, 4))]
        chain = rng.random() < 0.4  # a barrier after every dispatch (but maybe the last)
        cycle = rng.random() < 0.4  # the tuples in turn (a period of 1 to 3)
        n = rng.randrange(1, 41)
        for i in range(n):
            if not uniform:
                config = rng.choice(self.configs)
                constants = rng.choice(self.constants)
            what = rng.random()
            if chain:
                what = 0.7 if i == n - 1 and rng.random() < 0.5 else 0.3
            if what < 0.05:
                cb.begin_debug_group("label")
                cb.end_debug_group()
            if cycle:
                refs = tuples[i % len(tuples)]
            else:
                refs = rng.choice(tuples) if rng.random() < 0.8 else self._refs()
            cb.dispatch(self.exe, "negate", config, constants, refs)
            if what < 0.6:
                cb.execution_barrier()
            elif what < 0.65:
                cb.execution_barrier()
                cb.execution_barrier()
        if rng.random() < 0.1:
            cb.fill_buffer(self.buffers[0], b"\1")  # not kernel-only: the general path
        cb.end()
        return cb


def _launch_view(launch: Any, address: int) -> tuple:
    """A ``Launch``'s fields, its parameter pointer relative to its block."""
    return (*(getattr(launch, f) for f in LAUNCH_FIELDS), launch.params - address)


def _program_view(program: CudaProgram) -> dict:
    address = program.parameters.address
    steps = [
        (step[0], _launch_view(step[1], address)) if step[0] == stream_ops.STEP_DISPATCH else step
        for step in program.steps
    ]
    return {
        "stages": program.stages,
        "templates": program.templates,
        "commands": program.commands,
        "firsts": program.firsts,
        "words": program.parameters.words.tolist(),
        "needs_host_sync": program.needs_host_sync,
        "kernel_shape": program.kernel_shape,
        "single": program.single is not None,
        "steps": [repr(s) if s[0] != stream_ops.STEP_DISPATCH else s for s in steps],
    }


@pytest.mark.parametrize("uniform", [True, False])
def test_programs_equal_the_general_paths(dev: Any, monkeypatch: Any, uniform: bool) -> None:
    recordings = _Recording(dev, 7 if uniform else 8)
    taken = 0
    for _ in range(150):
        cb = recordings.record(dev, CommandBufferMode.UNVALIDATED, uniform)
        commands = cb.commands
        if stream_ops._one_template(commands) is not None:
            taken += 1
        fast = CudaProgram(commands)
        with monkeypatch.context() as m:
            _general(m)
            general = CudaProgram(commands)
        assert _program_view(fast) == _program_view(general)
    if uniform:
        assert taken > 100  # the fast path was exercised (fills fall back)


def test_layouts_write_what_resolving_each_reference_writes(dev: Any) -> None:
    """The layout ``binding_layout`` picks (one-template or general) and the general one
    write exactly what resolving each reference writes, and name the same dispatches
    for changed words."""
    recordings = _Recording(dev, 11)
    table = (BufferBinding(recordings.buffers[2]),)
    kinds: set[str] = set()
    for _ in range(200):
        cb = recordings.record(dev, CommandBufferMode.UNVALIDATED, recordings.rng.random() < 0.7)
        program = CudaProgram(cb.commands)
        if program.kernel_shape is None:
            continue
        words = program.parameters.words
        written = []
        picked = kernel_layouts.binding_layout(program)
        kinds.add(type(picked).__name__)
        for layout in (picked, kernel_layouts.Layout(program)):
            words[:] = 0
            layout.write(program, table)
            written.append(words.copy())
        words[:] = 0
        picked._write_one_by_one(program, table)
        assert np.array_equal(written[0], words)
        assert np.array_equal(written[1], words)
        changed = np.array(sorted(recordings.rng.sample(range(len(words) - 1), 3)))
        assert picked.steps_of(changed) == kernel_layouts.Layout(program).steps_of(changed)
    assert kinds == {"Layout", "OneTemplateLayout"}


def _normalised(params: list, buffers: list) -> list:
    """Launch parameter words with buffer addresses as (buffer index, offset)."""
    bases = [buffer_storage(b).address + b.byte_offset for b in buffers]
    out: list = []
    for word in params:
        for i, base in enumerate(bases):
            if base <= word < base + 64:
                out.append((i, word - base))
                break
        else:
            out.append(word)
    return out


def _graph_calls(fake: FakeDriver) -> dict[str, int]:
    wanted = ("Graph", "cuLaunchKernel")
    return {n: c for n, c in fake.calls_on("MainThread").items() if any(w in n for w in wanted)}


def _executions(dev: Any, fake: FakeDriver, recordings: _Recording, seed: int) -> list:
    """Per execution of a one-shot recording (seen, instantiated, untouched, then with
    the table's buffer moved: nodes set): the graph calls made and the launches."""
    dev.backend.graph_cache.kernel.close()
    dev.backend.graph_cache.kernel = kernel_graphs.KernelGraphs(dev.backend.ctx)
    out = []
    moved = (BufferBinding(recordings.buffers[1]),)
    tables = [(BufferBinding(recordings.buffers[2]),)] * 3 + [moved]
    sem = dev.create_semaphore()
    for value, table in enumerate(tables, 1):
        recordings.rng.seed(seed)
        cb = recordings.record(dev, ONE_SHOT, True)
        fake.reset_calls()
        fake.launches.clear()
        dev.queue_execute(ANY, (), [(sem, value)], cb, table)
        sem.wait(value, TIMEOUT)
        launches = [
            (x.name, x.grid, x.block, x.shared, _normalised(x.params, recordings.buffers))
            for x in fake.launches
        ]
        out.append((_graph_calls(fake), launches))
    return out


def test_executions_make_the_same_graph_calls_and_launches(
    dev: Any, fake: FakeDriver, monkeypatch: Any
) -> None:
    recordings = _Recording(dev, 5)
    for seed in range(12):
        fast = _executions(dev, fake, recordings, seed)
        with monkeypatch.context() as m:
            _general(m)
            general = _executions(dev, fake, recordings, seed)
        assert fast == general
        assert fast[0][1]  # kernels ran
