"""One broken plugin never breaks another, through real entry points.

A temporary distribution (a ``.dist-info`` with ``entry_points.txt`` on ``PYTHONPATH``)
installs one broken plugin of each kind next to the real ones. Each check runs in a fresh
interpreter, as a user would meet it: ``hal info`` still works and shows every error on its
plugin, ``create_device("local-task://")`` still works, and the CTS of the other backends
still runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGINS = {
    # entry-point name -> module source
    "zz_exits": """
        import sys
        sys.exit("this plugin refuses to load")
    """,
    "zz_interrupts": """
        raise KeyboardInterrupt
    """,
    "zz_str_drivers": """
        from hal_core import hookimpl

        @hookimpl
        def hal_drivers():
            return "local-task"
    """,
    "zz_dict_drivers": """
        from hal_core import hookimpl
        from hal_core.backend import DriverFactory

        @hookimpl
        def hal_drivers():
            return {"x": DriverFactory("x", "X", object)}
    """,
    "zz_garbage_factory": """
        from hal_core import hookimpl
        from hal_core.backend import DriverFactory

        @hookimpl
        def hal_drivers():
            return [DriverFactory("garbage", "returns garbage", lambda: "not a driver")]
    """,
    "zz_cts_garbage": """
        from hal_core import hookimpl

        @hookimpl
        def hal_cts_backends():
            return [object(), 42]
    """,
    "zz_cts_typo": """
        from hal_core import hookimpl
        from hal_core.backend import DriverFactory
        from hal_core.cts.config import CtsBackend

        def _create():
            from hal_local_cpu.driver import LocalDriverBackend

            return LocalDriverBackend("typo-sync", synchronous=True)

        @hookimpl
        def hal_drivers():
            return [DriverFactory("typo-sync", "local-sync under another name", _create)]

        @hookimpl
        def hal_cts_backends():
            return [CtsBackend(driver="typo-sync", tags={"async_queue", "file_ioo"})]
    """,
    "zz_profiler_garbage": """
        from hal_core import hookimpl

        @hookimpl
        def hal_profilers():
            return ["metrics", None]
    """,
    "zz_unknown_hook": """
        from hal_core import hookimpl

        @hookimpl
        def hal_driver():
            return []
    """,
}

EXPECTED_ERRORS = {
    "zz_exits": "import failed: SystemExit: this plugin refuses to load",
    "zz_interrupts": "import failed: KeyboardInterrupt",
    "zz_str_drivers": "hal_drivers: returned str 'local-task'; expected a list",
    "zz_dict_drivers": "hal_drivers: returned dict",
    "zz_cts_garbage": "hal_cts_backends: item 0 rejected: object",
    "zz_cts_typo": "unknown CTS tags 'file_ioo' (did you mean 'file_io'?)",
    "zz_profiler_garbage": "hal_profilers: item 0 rejected: str 'metrics'",
    "zz_unknown_hook": "registration: unknown hook 'hal_driver' (did you mean 'hal_drivers'",
}


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("broken_plugins")
    lines = ["[hal_core.plugins]"]
    for name, source in PLUGINS.items():
        module = f"hal_isolation_{name}"
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        lines.append(f"{name} = {module}")
    info = site / "hal_isolation_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hal-isolation-plugins\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


def _run(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    for name in ("HAL_PLUGINS", "HAL_DISABLE_PLUGINS", "HAL_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


def test_hal_info_works_and_shows_each_error_on_its_plugin(broken_site: Path) -> None:
    result = _run(broken_site, "-m", "hal_core", "info", "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    plugins = {p["name"]: p for p in data["plugins"]}
    for name, expected in EXPECTED_ERRORS.items():
        errors = plugins[name]["errors"]
        assert any(expected in e for e in errors), (name, errors)
    assert not plugins["zz_exits"]["loaded"] and not plugins["zz_interrupts"]["loaded"]
    assert plugins["zz_cts_typo"]["loaded"]  # its driver works; its CTS config was rejected
    assert plugins["local_cpu"]["errors"] == []
    drivers = {d["name"]: d for d in data["drivers"]}
    assert drivers["local-task"]["available"]
    assert drivers["local-task"]["cts"]["uri"] == "local-task://"
    assert "file_ioo" in drivers["typo-sync"]["cts_error"]
    # The garbage factory fails its own driver, recorded on its plugin.
    assert not drivers["garbage"]["available"]
    assert "returned str 'not a driver'" in drivers["garbage"]["reason"]
    assert any("driver garbage" in e for e in plugins["zz_garbage_factory"]["errors"])
    assert {p["name"] for p in data["profilers"]} >= {"metrics-log"}


def test_hal_info_text_shows_the_errors(broken_site: Path) -> None:
    result = _run(broken_site, "-m", "hal_core", "info")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "zz_exits" in result.stdout and "NOT LOADED" in result.stdout
    assert "error: import failed: SystemExit" in result.stdout
    assert "CTS: REJECTED:" in result.stdout


def test_other_drivers_keep_working(broken_site: Path) -> None:
    program = textwrap.dedent(
        """
        import hal_core as hal

        with hal.create_device("local-task://") as device:
            sem = device.create_semaphore(0)
            buf = device.allocator.allocate_buffer(
                hal.BufferParams(usage=hal.BufferUsage.DEFAULT | hal.BufferUsage.TRANSFER), 64
            )
            device.queue_fill(
                hal.QueueAffinity.ANY, [], [(sem, 1)], buf, 0, 64, 7, pattern_length=1
            )
            sem.wait(1, 10)
            assert buf.read(0, 64) == bytes([7]) * 64
        for uri, expected in [
            ("garbage://", "InternalError"),
            ("local-tsak://", "NotFoundError"),
        ]:
            try:
                hal.create_device(uri)
            except hal.HalError as exc:
                assert type(exc).__name__ == expected, exc
                print(uri, exc)
        print("OK")
        """
    )
    result = _run(broken_site, "-c", program)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")
    garbage, typo = result.stdout.splitlines()[:2]
    assert "plugin 'zz_garbage_factory' is broken" in garbage
    assert "(did you mean 'local-task'" in typo
    assert "failed to load or had hook results rejected" in typo and "hal info" in typo


def test_cts_of_other_backends_runs_and_the_rejected_config_fails_loudly(
    broken_site: Path, tmp_path: Path
) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = _run(
        broken_site,
        "-m",
        "pytest",
        "-c",
        str(tmp_path / "pytest.ini"),
        "-p",
        "no:cacheprovider",
        "-q",
        "-rE",
        "--pyargs",
        "hal_core.cts.test_semaphore",
        "--hal-device=local-sync",
        "--hal-device=typo-sync",
        "-k",
        "test_signal or test_query",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
        cwd=tmp_path,
    )
    out = result.stdout
    assert "INTERNALERROR" not in out, out[-3000:]
    # The same tests run on both devices: every one passes on local-sync and errors on
    # typo-sync with the rejection (instead of running untagged, silently skipping).
    counts = {
        word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|error)", out.splitlines()[-1])
    }
    assert set(counts) == {"passed", "error"}, out[-3000:]
    assert counts["passed"] > 0 and counts["error"] == counts["passed"], out[-3000:]
    summary = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(summary) == counts["error"]
    assert all("[typo-sync" in line for line in summary), summary
    # One rejection per error section; the -rE summary lines repeat it only when pytest
    # does not truncate them (it never does with CI set), so count section lines alone.
    rejections = re.findall(
        r"^CTS for 'typo-sync': .* was rejected: .*'file_ioo'", out, flags=re.MULTILINE
    )
    assert len(rejections) == counts["error"], out[-3000:]
