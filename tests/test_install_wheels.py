"""The documented offline install: ``tools/build_wheels.py DIST`` builds every
distribution's wheel without an index, and ``pip install --no-index --find-links DIST
'hal-core[all]'`` installs them into a fresh environment, where ``hal info`` runs and
finds the plugins, and mypy finds the installed packages' inline types (``py.typed``).

The fresh venv sees this environment's third-party packages (numpy, pluggy, cffi,
iree-base-runtime, ...) through a ``.pth`` line pointing at a directory of links to
them, but not the editable ``hal-*`` installs of this checkout: pip must take those from
the wheelhouse, and nothing is fetched from an index."""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("hal_core", "hal_local_cpu", "hal_amdgpu", "hal_profilers", "hal_example_")
TIMEOUT = 240


def _is_ours(name: str) -> bool:
    n = name.lower().replace("-", "_")
    return n.startswith(OURS) or n.startswith("__editable__") or n.startswith("_hal_")


def _third_party_dir(tmp: Path) -> Path:
    """Links to every entry of this interpreter's site-packages except this checkout's
    distributions (and their editable-install hooks)."""
    deps = tmp / "third-party"
    deps.mkdir()
    for sp in site.getsitepackages():
        for entry in Path(sp).iterdir():
            if _is_ours(entry.name) or entry.suffix == ".pth" or (deps / entry.name).exists():
                continue
            (deps / entry.name).symlink_to(entry)
    return deps


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, **kw)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    if importlib.util.find_spec("wheel") is None:
        pytest.skip("building wheels offline needs the 'wheel' package (the test extra)")
    dist = tmp_path_factory.mktemp("dist")
    r = _run([sys.executable, str(ROOT / "tools" / "build_wheels.py"), str(dist)])
    assert r.returncode == 0, r.stderr
    return dist


def test_build_wheels_names_every_distribution(wheelhouse):
    names = sorted(p.name.split("-")[0] for p in wheelhouse.glob("*.whl"))
    assert names == [
        "hal_amdgpu",
        "hal_core",
        "hal_example_driver",
        "hal_example_profiler",
        "hal_local_cpu",
        "hal_profilers",
    ]
    # the checkout was built from a copy: no build output appeared in it
    assert not (ROOT / "tools" / "build").exists()


def test_offline_install_of_all_from_the_wheelhouse(wheelhouse, tmp_path):
    py, env = _fresh_venv(tmp_path)
    env_dir = tmp_path / "venv"
    # In the fresh venv this checkout is not installed yet.
    r = _run([str(py), "-c", "import hal_core"], cwd=tmp_path, env=env)
    assert r.returncode != 0 and "No module named 'hal_core'" in r.stderr
    r = _run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            "hal-core[all]",
            "hal-example-driver",
            "hal-example-profiler",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # hal info runs from the venv's console script, on the installed (not the checkout's)
    # packages, and every plugin loads.
    r = _run([str(env_dir / "bin" / "hal"), "info", "--json"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    info = json.loads(r.stdout)
    text = json.dumps(info)
    for driver in ("local-task", "local-sync", "amdgpu"):
        assert driver in text
    r = _run(
        [
            str(py),
            "-c",
            "import hal_core, hal_local_cpu, numpy as np\n"
            "print(hal_core.__file__)\n"
            "with hal_core.create_device('local-sync://') as d, d.create_stream() as s:\n"
            "    b = s.upload(np.arange(4, dtype=np.float32))\n"
            "    print(s.download(b, np.float32).tolist())\n",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    where, values = r.stdout.splitlines()
    assert Path(where).is_relative_to(env_dir) and values == "[0.0, 1.0, 2.0, 3.0]"
    # type checking a user script against the installed packages finds their py.typed
    if importlib.util.find_spec("mypy") is None:
        return
    script = tmp_path / "user.py"
    script.write_text(
        "import hal_core\n"
        "from hal_local_cpu.executable_python import kernel\n"
        "n: str = hal_core.create_device('local-sync://').queue_count\n"
    )
    r = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--python-executable",
            str(py),
            "--no-incremental",
            "--cache-dir",
            os.devnull,
            str(script),
        ],
        cwd=tmp_path,
        env=env,
    )
    # the only error is the deliberate one: an int assigned to a str
    assert "import-not-found" not in r.stdout and "import-untyped" not in r.stdout, r.stdout
    assert 'Incompatible types in assignment (expression has type "int"' in r.stdout, r.stdout


def _fresh_venv(tmp_path: Path) -> tuple[Path, dict]:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    py = env_dir / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = Path(_run([str(py), "-c", code]).stdout.strip())
    (purelib / "_third_party.pth").write_text(str(_third_party_dir(tmp_path)) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return py, env


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_readme_editable_install_type_checks(tmp_path):
    """The README's editable mode (compat) leaves a path entry mypy follows: a user script
    importing hal_core type-checks against its inline types."""
    readme = (ROOT / "README.md").read_text()
    assert "--config-settings editable_mode=compat -e" in readme
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_wheels
    finally:
        sys.path.remove(str(ROOT / "tools"))
    src = tmp_path / "hal-core"
    build_wheels._copy_project(ROOT, src, is_root=True)
    py, env = _fresh_venv(tmp_path)
    r = _run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--config-settings",
            "editable_mode=compat",
            "-e",
            str(src),
        ],
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    script = tmp_path / "user.py"
    script.write_text("import hal_core\nn: str = hal_core.create_device().queue_count\n")
    r = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--python-executable",
            str(py),
            "--no-incremental",
            "--cache-dir",
            os.devnull,
            str(script),
        ],
        cwd=tmp_path,
        env=env,
    )
    assert "import-not-found" not in r.stdout, r.stdout
    assert 'Incompatible types in assignment (expression has type "int"' in r.stdout, r.stdout
