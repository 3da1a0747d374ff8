"""What a backend tells the CTS about itself (returned from the ``hal_cts_backends`` hook)."""

from __future__ import annotations

from typing import Any, Callable

import attrs

__all__ = ["CtsBackend", "KNOWN_TAGS"]

KNOWN_TAGS = frozenset(
    {"async_queue", "file_io", "host_calls", "mapping", "indirect", "dispatch", "events"}
)


def _frozen_tags(tags: Any) -> frozenset[str]:
    tags = frozenset(tags)
    unknown = tags - KNOWN_TAGS
    if unknown:
        raise ValueError(f"unknown CTS tags {sorted(unknown)}; known: {sorted(KNOWN_TAGS)}")
    return tags


def _reasons(value: Any) -> dict[str, str]:
    value = dict(value)
    for pattern, reason in value.items():
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"CTS exclusion {pattern!r} needs a non-empty reason")
    return value


@attrs.frozen
class CtsBackend:
    """A backend's CTS configuration.

    * ``driver``: the driver name; ``uri`` defaults to ``<driver>://``.
    * ``tags``: capabilities suites may require (``KNOWN_TAGS``).
    * ``executable_formats``: format name -> callable(kernel_name) returning the
      executable bytes (or a path) of a CTS kernel in that format.
    * ``unsupported``: glob on ``suite.test`` -> reason (skipped).
    * ``expected_failures``: glob -> reason (xfail; ``HAL_CTS_VERIFY_XFAILS=1`` makes an
      unexpected pass fail).
    """

    driver: str
    tags: frozenset[str] = attrs.field(factory=frozenset, converter=_frozen_tags)
    uri: str = ""
    executable_formats: dict[str, Callable[[str], Any]] = attrs.field(factory=dict)
    unsupported: dict[str, str] = attrs.field(factory=dict, converter=_reasons)
    expected_failures: dict[str, str] = attrs.field(factory=dict, converter=_reasons)

    @property
    def device_uri(self) -> str:
        return self.uri or f"{self.driver}://"
