"""The hal_profilers hook, end to end with the example distribution under examples/."""

import importlib
import json
import os
import sys

import pytest

import hal_core
from hal_core.profiling import (
    ProfilerFactory,
    ProfilingOptions,
    available_profilers,
    create_profiler,
    describe_profilers,
)
from hal_core.profiling import (
    ProfilingDataFamily as F,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "hal-example-profiler")


@pytest.fixture
def example_registered():
    """The example profiler: from its installed entry point when CI installed it
    (pip install -e examples/hal-example-profiler), else registered in-process."""
    if any(p.name == "op-histogram" for p in available_profilers()):
        yield "entry point"
        return
    sys.path.insert(0, EXAMPLE)
    try:
        plugin = importlib.import_module("hal_example_profiler.plugin")
        hal_core.registry().register_plugin(plugin, name="example_profiler_test")
        yield "in-process"
    finally:
        hal_core.registry().unregister_plugin("example_profiler_test")
        sys.path.remove(EXAMPLE)


def test_example_profiler_end_to_end(example_registered, tmp_path):
    out = tmp_path / "ops.json"
    rows = {r["name"]: r for r in describe_profilers()}
    assert rows["op-histogram"]["data_families"] == "queue-events,host-execution-events"
    sink, families = create_profiler("op-histogram", {"output": str(out)})
    assert families == F.QUEUE_EVENTS | F.HOST_EXECUTION_EVENTS
    with hal_core.create_device("local-task://") as device:
        device.profiling_begin(ProfilingOptions(families, sinks=[sink]))
        sem = device.create_semaphore()
        buf = device.allocator.allocate_buffer(hal_core.BufferParams(), 64)
        device.queue_fill(1, [], [(sem, 1)], buf, 0, 64, b"\x01")
        device.queue_barrier(2, [(sem, 1)], [(sem, 2)])
        sem.wait(2, 20)
        device.profiling_end()
    result = json.loads(out.read_text())
    assert result["queues"] == {"0": {"FILL": 1}, "1": {"BARRIER": 1}}
    assert result["status"] == 0 and result["host_execution_ns"]["FILL"] >= 0


def test_profiler_errors(example_registered):
    with pytest.raises(hal_core.InvalidArgumentError, match="needs an output file"):
        create_profiler("op-histogram", {})
    with pytest.raises(hal_core.NotFoundError, match="no profiler named 'nope'.*op-histogram"):
        create_profiler("nope")


def test_broken_profiler_plugin_is_isolated():
    class Broken:
        @hal_core.hookimpl
        def hal_profilers(self):
            raise RuntimeError("plugin bug")

    class Crashing:
        @hal_core.hookimpl
        def hal_profilers(self):
            def create(options):
                raise KeyError("boom")

            return [ProfilerFactory("crashy", create)]

    reg = hal_core.registry()
    reg.register_plugin(Broken(), name="broken_profiler_test")
    reg.register_plugin(Crashing(), name="crashing_profiler_test")
    try:
        names = [p.name for p in available_profilers()]
        assert "crashy" in names
        with pytest.raises(hal_core.UnavailableError, match="'crashy'.*failed to start: KeyError"):
            create_profiler("crashy")
    finally:
        reg.unregister_plugin("broken_profiler_test")
        reg.unregister_plugin("crashing_profiler_test")


def test_factory_validation():
    with pytest.raises(hal_core.InvalidArgumentError, match="non-empty name"):
        ProfilerFactory("", lambda o: None)
    with pytest.raises(hal_core.InvalidArgumentError, match="create must be callable"):
        ProfilerFactory("x", 3)
