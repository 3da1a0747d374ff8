"""The runnable examples in the README and docs run as written."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/command-buffers.md", "docs/pools-and-frontiers.md"]


def _examples():
    for name in DOCS:
        text = (ROOT / name).read_text()
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", text, re.S)):
            if "import hal_core" in block:
                yield pytest.param(block, id=f"{name}#{i}")


@pytest.mark.parametrize("code", list(_examples()))
def test_example_runs(code, capsys):
    exec(compile(code, "<doc example>", "exec"), {"__name__": "__doc_example__"})
    assert capsys.readouterr().out.strip()  # every example prints its result
