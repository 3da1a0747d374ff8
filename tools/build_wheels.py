"""Build a wheelhouse of every distribution in this checkout, offline.

    python tools/build_wheels.py DIST            # hal-core, the plugins and the examples
    pip install --no-index --find-links DIST 'hal-core[all]'

None of ``hal-core``, ``hal-local-cpu``, ``hal-amdgpu`` or ``hal-profilers`` is on PyPI:
this wheelhouse is how they travel to another environment or machine. The wheels are built
with ``pip wheel --no-deps --no-build-isolation`` (so no package index is contacted; the
build needs ``setuptools>=64`` and ``wheel`` installed, both part of the ``test`` extra),
each from a scratch copy of its project so that the checkout gets no ``build/`` or
``*.egg-info`` directories. The wheelhouse holds only this checkout's distributions: their
third-party dependencies (numpy, pluggy, attrs, cffi, msgpack, iree-base-runtime) come from
the target environment or, with ``--with-deps`` while an index is reachable, are added to
the wheelhouse too for a fully offline install elsewhere.

Exit status: 0 when every wheel was built, 1 when a build failed (pip's output is shown),
2 for a usage error.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The projects, root first: plugins and examples depend on ``hal-core==<version>``.
PROJECTS = (
    ".",
    "plugins/local_cpu",
    "plugins/amdgpu",
    "plugins/profilers",
    "examples/hal-example-driver",
    "examples/hal-example-profiler",
)

# Never copied into a build: other projects nested in the root, tests, VCS and build output.
_SKIP_AT_ROOT = {"plugins", "examples", "tests", "tools", "docs", ".git", ".ci"}
_SKIP_ANYWHERE = ("__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".hypothesis")


def _copy_project(src: Path, dst: Path, *, is_root: bool) -> None:
    """Copy one project's sources (no build output) to ``dst``."""
    skip_anywhere = shutil.ignore_patterns(*_SKIP_ANYWHERE)

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = set(skip_anywhere(directory, names))
        if is_root and Path(directory) == src:
            ignored |= _SKIP_AT_ROOT & set(names)
            ignored |= {n for n in names if n.startswith(".") and n not in (".gitignore",)}
        return ignored

    shutil.copytree(src, dst, ignore=ignore, symlinks=True)


def build_wheels(dist: Path, *, with_deps: bool = False, quiet: bool = True) -> list[Path]:
    """Build every project's wheel into ``dist`` (created if missing) and return the wheel
    paths. Raises ``subprocess.CalledProcessError`` when a build fails."""
    dist.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hal-wheels-") as scratch:
        sources = []
        for rel in PROJECTS:
            dst = Path(scratch) / ("hal-core" if rel == "." else Path(rel).name)
            _copy_project(ROOT / rel, dst, is_root=rel == ".")
            sources.append(str(dst))
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "-w", str(dist)]
        if not with_deps:
            cmd += ["--no-deps", "--no-index"]
        else:
            # hal-core's own wheel satisfies the plugins' ``hal-core==`` pin, not the index.
            cmd += ["--find-links", str(dist)]
        if quiet:
            cmd.append("-q")
        if with_deps:
            # One project at a time, root first: the plugins resolve hal-core from the
            # wheel just built.
            for src in sources:
                subprocess.run([*cmd, src], check=True)
        else:
            subprocess.run([*cmd, *sources], check=True)  # one pip process builds them all
    return sorted(dist.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/build_wheels.py",
        description="Build wheels of hal-core, its plugins and examples into DIST (offline).",
    )
    parser.add_argument("dist", type=Path, help="the wheelhouse directory (created if missing)")
    parser.add_argument(
        "--with-deps",
        action="store_true",
        help="also put the third-party dependencies' wheels into DIST (needs a package index)",
    )
    args = parser.parse_args(argv)
    if args.dist.exists() and not args.dist.is_dir():
        parser.error(f"{args.dist} exists and is not a directory")
    try:
        wheels = build_wheels(args.dist, with_deps=args.with_deps)
    except subprocess.CalledProcessError as exc:
        print(f"build_wheels: {' '.join(exc.cmd)} failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    for w in wheels:
        print(w)
    print(
        f"install offline with: pip install --no-index --find-links {args.dist} 'hal-core[all]'",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
