"""What a backend tells the CTS about itself (returned from the ``hal_cts_backends`` hook)."""

from __future__ import annotations

from typing import Any, Callable

import attrs

__all__ = ["CtsBackend", "KNOWN_TAGS", "TAG_GATES", "config_for_driver"]

TAG_GATES: dict[str, str] = {
    "async_queue": "queue ops that complete after submit returns (parked waits, "
    "out-of-order signalling)",
    "file_io": "queue_read / queue_write (the file suite)",
    "indirect": "binding-table (indirect) references in command buffers",
    "dispatch": "DISPATCH and EXECUTE of recordings that dispatch (needs executable formats)",
    "allocation_pools": "explicit allocation pools for queue_alloca (query_queue_pool_backend: "
    "passthrough, TLSF and fixed-block pools, transients parked on an exhausted pool); "
    "queue_alloca with the default allocation is mandatory",
}
"""Each CTS tag and what it gates. Host calls, mapping and semaphores are mandatory for
every backend, so no tag gates them."""

KNOWN_TAGS = frozenset(TAG_GATES)


def _frozen_tags(tags: Any) -> frozenset[str]:
    """The tags as a frozenset; ValueError naming each unknown tag (with a near-miss
    suggestion), since a misspelt tag would silently skip every test it gates. Raised
    from a plugin's ``hal_cts_backends`` hook, the registry records it on the plugin."""
    if isinstance(tags, str):
        raise ValueError(f"CTS tags must be a collection of tag names, got the str {tags!r}")
    tags = frozenset(tags)
    unknown = tags - KNOWN_TAGS
    if unknown:
        from .._plugin_checks import did_you_mean

        named = ", ".join(
            f"{t!r}{did_you_mean(str(t), KNOWN_TAGS)}" for t in sorted(unknown, key=str)
        )
        raise ValueError(f"unknown CTS tags {named}; known: {sorted(KNOWN_TAGS)}")
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

    def describe(self) -> dict[str, Any]:
        """Plain data for ``hal info``: the URI the CTS uses, tags, executable formats and
        the exclusions with their reasons."""
        return {
            "uri": self.device_uri,
            "tags": sorted(self.tags),
            "executable_formats": sorted(self.executable_formats),
            "unsupported": dict(self.unsupported),
            "expected_failures": dict(self.expected_failures),
        }


def config_for_driver(driver: str) -> CtsBackend | str | None:
    """The CTS configuration registered for ``driver`` (the last one wins), the error (a
    str) when the plugin that provides ``driver`` had its ``hal_cts_backends`` result
    rejected, or None when no plugin configures it."""
    from .._registry import registry

    reg = registry()
    for _plugin, cfg in reversed(reg.hook_results("hal_cts_backends")):
        if cfg.driver == driver:
            return cfg
    owner = next((r.plugin for r in reg.driver_records() if r.name == driver), None)
    for plugin in reg.plugins():
        problems = plugin.hook_errors.get("hal_cts_backends")
        if plugin.name == owner and problems:
            return (
                f"the CTS configuration of plugin {owner!r} (which provides driver "
                f"{driver!r}) was rejected: {'; '.join(problems)}"
            )
    return None
