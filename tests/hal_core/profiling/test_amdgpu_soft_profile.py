"""``hal profile`` on the amdgpu driver over its software HSA agent: the backend has no
profiling taps yet, so hal_core's generic QUEUE_EVENTS tap is what is captured."""

import json

import pytest

import hal_core
from hal_core.cli.main import main
from hal_core.profiling import ProfilingDataFamily as F
from hal_core.profiling import supported_families

pytest.importorskip("hal_amdgpu")
URI = "amdgpu://?hsa=soft"


@pytest.fixture(scope="module")
def soft_available():
    try:
        hal_core.create_device(URI).close()
    except hal_core.HalError as exc:
        pytest.skip(f"software HSA agent unavailable: {exc}")


def test_perfetto_file_for_amdgpu_soft(soft_available, tmp_path, capsys):
    with hal_core.create_device(URI) as device:
        assert supported_families(device) & F.QUEUE_EVENTS
    out = tmp_path / "amd.json"
    rc = main(
        ["profile", "--device", URI, "--format", "perfetto", "-o", str(out), "--", "edge.fill4"]
    )
    assert rc == 0, capsys.readouterr().err
    ev = json.loads(out.read_text())["traceEvents"]
    submits = [e for e in ev if e.get("cat") == "submit"]
    assert len(submits) == 2 * 512 and {e["name"] for e in submits} == {"submit fill"}
    tracks = {e["args"]["name"] for e in ev if e.get("name") == "thread_name"}
    assert "queue 0" in tracks
