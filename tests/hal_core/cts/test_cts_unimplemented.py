"""A CTS test ending in UNIMPLEMENTED is a skip with the reason, never a failure; other
errors still fail. Tags that gate nothing are gone."""

from __future__ import annotations

import textwrap

import pytest
from test_cts_plugin import CONFTEST

from hal_core.cts.config import KNOWN_TAGS, TAG_GATES, CtsBackend

pytest_plugins = ["pytester"]

SUITE = textwrap.dedent(
    """
    import hal_core


    def test_raises_unimplemented(cts):
        raise hal_core.UnimplementedError("fake-sync has no frobnicate op")


    def test_semaphore_failed_unimplemented(cts):
        sem = cts.semaphore(0)
        sem.fail(hal_core.StatusCode.UNIMPLEMENTED, "the op kind is optional")
        cts.wait(sem, 1)


    def test_other_error_fails(cts):
        raise hal_core.InvalidArgumentError("a real bug")


    def test_unimplemented_outside_the_cts():
        raise hal_core.UnimplementedError("not a CTS test: stays a failure")
    """
)


def test_unimplemented_is_a_skip_naming_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_fake=SUITE)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-rsf", "--hal-device=fake-sync://"
    )
    result.assert_outcomes(passed=0, skipped=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*UNIMPLEMENTED on fake-sync://: *fake-sync has no frobnicate op*",
            "*UNIMPLEMENTED on fake-sync://: *the op kind is optional*",
        ]
    )
    text = result.stdout.str()
    assert "FAILED test_fake.py::test_other_error_fails" in text
    assert "FAILED test_fake.py::test_unimplemented_outside_the_cts" in text


def test_every_tag_gates_a_suite() -> None:
    assert set(TAG_GATES) == KNOWN_TAGS
    for gone in ("events", "host_calls", "mapping"):
        with pytest.raises(ValueError, match="unknown CTS tags"):
            CtsBackend(driver="x", tags={gone})


def test_every_known_tag_is_required_by_some_cts_test() -> None:
    """A tag no suite requires would be a promise that gates nothing."""
    import ast
    from pathlib import Path

    import hal_core.cts

    used: set[str] = set()
    for path in Path(hal_core.cts.__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name.endswith("hal_requires") or name.endswith("has_tag"):
                    used.update(a.value for a in node.args if isinstance(a, ast.Constant))
    assert used == KNOWN_TAGS
