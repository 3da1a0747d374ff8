"""Unit tests of ``hal_core.cts.config.CtsBackend`` (what a backend tells the CTS)."""

from __future__ import annotations

import attrs
import pytest

from hal_core.cts.config import KNOWN_TAGS, CtsBackend


def test_defaults_and_device_uri():
    cfg = CtsBackend(driver="x")
    assert cfg.tags == frozenset()
    assert cfg.device_uri == "x://"
    assert CtsBackend(driver="x", uri="x://3").device_uri == "x://3"


def test_tags_are_frozen_and_checked():
    cfg = CtsBackend(driver="x", tags=["async_queue", "file_io"])
    assert cfg.tags == frozenset({"async_queue", "file_io"})
    with pytest.raises(ValueError, match="unknown CTS tags"):
        CtsBackend(driver="x", tags={"async_queue", "teleport"})
    assert "async_queue" in KNOWN_TAGS


@pytest.mark.parametrize("field", ["unsupported", "expected_failures"])
@pytest.mark.parametrize("reason", ["", "   ", None])
def test_exclusions_need_a_reason(field, reason):
    with pytest.raises(ValueError, match="non-empty reason"):
        CtsBackend(driver="x", **{field: {"semaphore.*": reason}})


def test_config_is_frozen():
    cfg = CtsBackend(driver="x")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.driver = "y"  # type: ignore[misc]
