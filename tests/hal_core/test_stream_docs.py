"""The stream examples of the README and docs/streams.md run and print what their
comments say (tests/test_docs_examples.py runs the README's too, checking only that they
print)."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _stream_examples():
    for name in ("README.md", "docs/streams.md"):
        text = (ROOT / name).read_text()
        blocks = re.findall(r"```python\n(.*?)```", text, re.S)
        found = [b for b in blocks if "create_stream" in b]
        assert found, f"{name} has no stream example"
        for i, block in enumerate(found):
            yield pytest.param(block, id=f"{name}#{i}")


@pytest.mark.parametrize("code", list(_stream_examples()))
def test_stream_example_prints_what_it_says(code, capsys):
    assert len(code.splitlines()) < 20
    exec(compile(code, "<stream example>", "exec"), {"__name__": "__doc_example__"})
    printed = capsys.readouterr().out.split()
    promised = re.search(r"print\(.*#\s*(.*)$", code, re.M)
    assert promised is not None, "the example's print line says what it prints"
    assert printed == promised.group(1).split()
