"""The backend contract: every shipped backend meets its Protocols, hal_core binds them once,
and nothing in hal_core probes a backend object outside the binder."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import hal_core
from hal_core import InvalidArgumentError, NotFoundError, UnimplementedError
from hal_core.backend import (
    MANDATORY_OP_KINDS,
    OPTIONAL_OP_KINDS,
    AllocaSubmitSupport,
    AllocationPoolSupport,
    AllocatorBackend,
    ClosableDriverBackend,
    CommandBufferSupport,
    DeviceBackend,
    DeviceQuerySupport,
    DriverBackend,
    DriverInfoBackend,
    ExecutableSupport,
    ProfilingSupport,
    QueueFlushSupport,
    QueueOpKind,
    TopologySupport,
    device_from_backend,
    signature_mismatches,
)

URIS = ["local-task://", "local-sync://", "amdgpu://0?hsa=soft", "example://"]

# What each shipped backend declares, beyond the mandatory DeviceBackend.
CAPABILITIES: dict[str, set[type]] = {
    "local-task://": {
        ExecutableSupport,
        CommandBufferSupport,
        AllocationPoolSupport,
        AllocaSubmitSupport,
        DeviceQuerySupport,
        TopologySupport,
        ProfilingSupport,
    },
    "amdgpu://0?hsa=soft": {
        ExecutableSupport,
        CommandBufferSupport,
        AllocationPoolSupport,
        DeviceQuerySupport,
        TopologySupport,
        ProfilingSupport,
    },
    "example://": set(),
}
CAPABILITIES["local-sync://"] = CAPABILITIES["local-task://"]
OPTIONAL = (
    ExecutableSupport,
    CommandBufferSupport,
    AllocationPoolSupport,
    AllocaSubmitSupport,
    DeviceQuerySupport,
    QueueFlushSupport,
    TopologySupport,
    ProfilingSupport,
)
# The contract entries each capability binds.
ENTRIES: dict[type, tuple[str, ...]] = {
    ExecutableSupport: ("executable_formats", "prepare_executable"),
    CommandBufferSupport: ("finalize_command_buffer",),
    AllocationPoolSupport: ("query_queue_pool_backend",),
    AllocaSubmitSupport: ("submit_alloca",),
    DeviceQuerySupport: ("query_i64",),
    QueueFlushSupport: ("flush",),
    TopologySupport: ("query_capabilities", "refine_topology_edge", "assign_topology_info"),
    ProfilingSupport: ("profiling", "profiling_begin", "profiling_end"),
}


@pytest.fixture(params=URIS)
def device(request: pytest.FixtureRequest) -> Any:
    try:
        dev = hal_core.create_device(request.param)
    except hal_core.UnavailableError as exc:
        pytest.skip(f"{request.param} is unavailable: {exc}")
    yield dev
    dev.close()


def test_every_backend_meets_the_mandatory_protocols(device: Any) -> None:
    backend = device.backend
    assert isinstance(backend, DeviceBackend)
    assert isinstance(backend.allocator, AllocatorBackend)
    assert signature_mismatches(backend, DeviceBackend) == []
    assert signature_mismatches(backend.allocator, AllocatorBackend) == []
    assert isinstance(backend.queue_count, int) and backend.queue_count >= 1


def test_every_backend_declares_exactly_its_capabilities(device: Any) -> None:
    backend = device.backend
    declared = {p for p in OPTIONAL if isinstance(backend, p)}
    uri = device.uri
    assert declared == CAPABILITIES[uri], uri
    for protocol in OPTIONAL:
        assert signature_mismatches(backend, protocol) == [], protocol.__name__
        # The binder resolved the capability once: bound entries exactly when declared.
        for entry in ENTRIES[protocol]:
            bound = getattr(device._contract, entry)
            assert (bound is not None) == (protocol in declared), (uri, entry)


def test_every_driver_meets_the_driver_protocols(device: Any) -> None:
    driver = hal_core.registry().driver(device.driver_name)
    backend = driver.backend
    assert isinstance(backend, DriverBackend)
    assert signature_mismatches(backend, DriverBackend) == []
    optional = ((DriverInfoBackend, "dump_device_info"), (ClosableDriverBackend, "close"))
    for protocol, entry in optional:
        assert signature_mismatches(backend, protocol) == []
        assert (getattr(driver._contract, entry) is not None) == isinstance(backend, protocol)


def test_op_kinds_are_mandatory_or_belong_to_a_capability() -> None:
    assert MANDATORY_OP_KINDS.isdisjoint(OPTIONAL_OP_KINDS)
    assert MANDATORY_OP_KINDS | set(OPTIONAL_OP_KINDS) == set(QueueOpKind)


class _Allocator:
    def heaps(self) -> list:
        return []

    def query_buffer_compatibility(self, params: Any, size: int) -> Any:
        raise UnimplementedError("no memory")

    def allocate(self, params: Any, size: int) -> Any:
        raise UnimplementedError("no memory")

    def import_host(self, params: Any, array: Any) -> Any:
        raise UnimplementedError("no memory")


class _Minimal:
    """The mandatory contract and nothing else."""

    queue_count = 1

    def __init__(self) -> None:
        self.allocator = _Allocator()
        self.ops: list = []

    def submit(self, op: Any) -> None:
        self.ops.append(op)

    def close(self, timeout: float | None) -> None:
        pass


def test_a_minimal_backend_has_every_optional_entry_unbound() -> None:
    device = device_from_backend(_Minimal(), driver_name="minimal", uri="minimal://")
    try:
        assert isinstance(device.backend, DeviceBackend)
        assert not any(isinstance(device.backend, p) for p in OPTIONAL)
        for entries in ENTRIES.values():
            for entry in entries:
                assert getattr(device._contract, entry) is None
        device.queue_flush()  # no flush capability: nothing to push out
        assert device.query_i64("hal.device", "concurrency") == 1
        with pytest.raises(NotFoundError):
            device.query_i64("hal.executable.format", "x")
        with pytest.raises(UnimplementedError):
            device.query_queue_pool_backend(1)
        assert device.create_executable_cache().formats() == ()
    finally:
        device.close()


def test_a_backend_lacking_a_mandatory_member_is_refused_naming_it() -> None:
    backend = _Minimal()
    backend.submit = None  # type: ignore[assignment]
    del backend.allocator
    with pytest.raises(InvalidArgumentError, match="lacks allocator"):
        device_from_backend(backend, driver_name="broken", uri="broken://")


def test_signature_mismatches_names_a_wrong_arity() -> None:
    class Wrong(_Minimal):
        def close(self) -> None:  # type: ignore[override]
            pass

    problems = signature_mismatches(Wrong(), DeviceBackend)
    assert len(problems) == 1 and "close" in problems[0]


def _probes(path: Path) -> list[str]:
    """``getattr`` / ``hasattr`` calls in ``path`` whose object is a backend."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and node.args
            and "backend" in ast.unparse(node.args[0])
        ):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_hal_core_probes_backends_only_in_the_binder() -> None:
    root = Path(hal_core.__file__).parent
    skip = {root / "_backend_contract.py", root / "_plugin_checks.py"}
    # _plugin_checks validates what a plugin's factory returned before any Driver exists;
    # bench modules look at benchmark subjects, not at a device's contract.
    found = [
        probe
        for path in sorted(root.rglob("*.py"))
        if path not in skip and "bench" not in path.parts
        for probe in _probes(path)
    ]
    assert found == []
