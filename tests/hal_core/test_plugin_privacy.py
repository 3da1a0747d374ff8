"""Plugins and examples use only hal_core's public tiers.

Every module under ``plugins/`` and ``examples/`` is parsed (not imported: a plugin whose
library is missing is checked too) and fails this test when it

* imports a ``hal_core`` module with a private component (``hal_core._queue``,
  ``hal_core.pool._tlsf``), in any import form, or reaches one as an attribute
  (``hal_core._status``); or
* reads or writes a private attribute of a hal_core object (``sem._value``,
  ``buffer._root``, ``Semaphore._signal_from_queue``).

"A private attribute of a hal_core object" is decided by name: an attribute starting with
one underscore that hal_core's classes define (assigned on ``self``, declared in
``__slots__``, or a method / class attribute) and that the plugin's own package never
defines. A plugin's own private state (``self._lock``, ``queue._closed`` of its own
queue class) is therefore fine, whatever object it is reached through.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hal_core

ROOT = Path(__file__).resolve().parents[2]
HAL_CORE = Path(hal_core.__file__).resolve().parent


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_private_attributes(files: list[Path]) -> set[str]:
    """Private attribute names that ``files`` define on objects: ``x._a = ...``,
    ``def _a`` / ``class _a`` inside a class, ``_a = ...`` in a class body, and
    ``__slots__`` strings."""
    names: set[str] = set()
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if _is_private(node.attr):
                    names.add(node.attr)
            elif isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        if _is_private(stmt.name):
                            names.add(stmt.name)
                    targets = (
                        stmt.targets
                        if isinstance(stmt, ast.Assign)
                        else [stmt.target]
                        if isinstance(stmt, ast.AnnAssign)
                        else []
                    )
                    for target in targets:
                        if isinstance(target, ast.Name):
                            if _is_private(target.id):
                                names.add(target.id)
                            if target.id == "__slots__":
                                value = stmt.value
                                for const in ast.walk(value) if value else ():
                                    if isinstance(const, ast.Constant) and isinstance(
                                        const.value, str
                                    ):
                                        if _is_private(const.value):
                                            names.add(const.value)
    return names


def _packages() -> list[Path]:
    """Each plugin and example distribution (its directory)."""
    roots = [ROOT / "plugins", ROOT / "examples"]
    return sorted(p for r in roots if r.is_dir() for p in r.iterdir() if p.is_dir())


def _sources(package: Path) -> list[Path]:
    return sorted(
        p
        for p in package.rglob("*.py")
        if "tests" not in p.relative_to(package).parts and "build" not in p.parts
    )


def _private_module(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "hal_core" and any(_is_private(p) for p in parts[1:])


def violations(path: Path, core: set[str], own: set[str]) -> list[str]:
    """What ``path`` does against hal_core's privacy (one message per use)."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _private_module(alias.name):
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _private_module(node.module):
                found.append(f"{where}: from {node.module} import ...")
            elif node.module.split(".")[0] == "hal_core":
                for alias in node.names:
                    if _is_private(alias.name):
                        found.append(f"{where}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id == "hal_core":
                found.append(f"{where}: hal_core.{node.attr}")
            elif node.attr in core and node.attr not in own:
                found.append(f"{where}: {ast.unparse(node)}")
    return found


def _core_private_attributes() -> set[str]:
    return _defined_private_attributes(sorted(HAL_CORE.rglob("*.py")))


@pytest.mark.parametrize("package", _packages(), ids=lambda p: p.name)
def test_no_hal_core_privates(package: Path) -> None:
    sources = _sources(package)
    assert sources, f"{package} has no Python sources"
    core = _core_private_attributes()
    own = _defined_private_attributes(sources)
    found = [v for path in sources for v in violations(path, core, own)]
    assert not found, (
        "plugins use only hal_core's public tiers (hal_core, hal_core.backend, "
        "hal_core.pool, hal_core.profiling); export what is needed from "
        "hal_core.backend instead:\n" + "\n".join(found)
    )


def test_the_checker_finds_each_kind_of_violation(tmp_path: Path) -> None:
    """The rule itself: each forbidden form is reported, a plugin's own state is not."""
    source = tmp_path / "plugin.py"
    source.write_text(
        "import hal_core._queue\n"
        "from hal_core._status import error_for\n"
        "from hal_core.pool._tlsf import TlsfPool\n"
        "from hal_core import _device\n"
        "import hal_core\n"
        "class Mine:\n"
        "    __slots__ = ('_mine',)\n"
        "    def go(self, sem, buffer, other):\n"
        "        hal_core._status\n"
        "        sem._signal_from_queue(1)\n"
        "        x = sem._value + buffer._root.size\n"
        "        other._mine = self._mine\n"
        "        return x\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        core = _core_private_attributes()
        own = _defined_private_attributes([source])
        found = violations(source, core, own)
    finally:
        ROOT = saved
    text = "\n".join(found)
    for expected in (
        "import hal_core._queue",
        "from hal_core._status import",
        "from hal_core.pool._tlsf import",
        "from hal_core import _device",
        "hal_core._status",
        "sem._signal_from_queue",
        "sem._value",
        "buffer._root",
    ):
        assert expected in text, f"{expected!r} not reported in:\n{text}"
    assert "_mine" not in text  # the plugin's own private attribute
