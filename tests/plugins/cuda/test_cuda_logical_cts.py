"""The CTS on a logical device over two stand-in GPUs (``cuda://`` with
``fake_cuda_peers.FakePeerDriver``), in a subprocess with the stand-in installed as
``cuda.bindings.driver``. The suites whose tests check what kernels compute (dispatch,
command buffers, executables) are left out: the stand-in runs no kernel (the GPU run
covers them, ``test_cuda_gpu_multi.py``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    from fake_cuda_peers import FakePeerDriver
    api = FakePeerDriver(gpus=2)
    package = type(sys)("cuda.bindings")
    package.driver = api
    sys.modules["cuda.bindings"] = package
    sys.modules["cuda.bindings.driver"] = api
    import pytest
    sys.exit(pytest.main([
        "-q", "-p", "no:cacheprovider", "--pyargs", "hal_core.cts",
        "--hal-device", {uri!r},
        "-k", "not dispatch and not command_buffer and not executable",
        "-o", "faulthandler_timeout=120",
    ]))
    """
)


@pytest.mark.parametrize("uri", ["cuda://", "cuda://0,1?queues=1"])
def test_cts_transfer_semaphore_file_and_pool_suites_pass_on_a_logical_device(uri: str) -> None:
    code = SCRIPT.format(here=str(HERE), uri=uri)
    try:
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=HERE
        )
    except subprocess.TimeoutExpired as exc:  # a test stuck past faulthandler's dump
        out = (exc.stdout or b"") + (exc.stderr or b"")
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        pytest.fail(f"the CTS run did not finish in 900 s:\n{text[-6000:]}")
    tail = (run.stdout + run.stderr)[-3000:]
    assert run.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail
