"""The CTS pytest plugin (entry point ``pytest11: hal_core_cts``).

Inactive unless ``--hal-device=URI`` is given (repeatable; ``all`` means every backend that
registered a CTS configuration). Suites are the ``test_*.py`` modules of ``hal_core.cts``
(and any backend's own modules written the same way); their tests take the ``cts``
fixture, which is parametrized over the chosen devices, and every such test gets the
tag, ``unsupported`` and ``expected_failures`` handling below. One
device per URI is created for the whole session. A backend that reports UNAVAILABLE skips;
``unsupported`` entries skip with their reason; ``expected_failures`` are xfail (strict with
``HAL_CTS_VERIFY_XFAILS=1``). A test that ends in UNIMPLEMENTED (the backend does not
implement an optional op kind or feature, raised at the call or failing a semaphore) is a
skip naming the reason, never a failure; each tag gates the suites listed in
``config.KNOWN_TAGS``.

Plugins are isolated: a plugin whose ``hal_cts_backends`` hook raises or returns garbage
has that recorded on it (``hal info`` shows it) and every other backend's configuration
still applies; the tests of a driver whose own plugin's CTS configuration was rejected
fail with that error instead of running untagged (which would silently skip every tagged
test). ``--hal-device`` values given on the command line replace those of the ini file's
``addopts`` (so a run inside the checkout tests only the named devices), and a URI naming
no registered driver is one usage error before collection.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
from typing import Any

import pytest

from .config import KNOWN_TAGS, CtsBackend, config_for_driver

_DEVICES_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hal-cts", "HAL conformance test suite")
    group.addoption(
        "--hal-device",
        action="append",
        default=[],
        metavar="URI",
        help="run the HAL CTS against this device URI (repeatable; 'all' for every backend)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "hal_requires(*tags): CTS test needs the backend to advertise these tags"
    )
    config.stash[_DEVICES_KEY] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    # After every pytest_configure (a conftest may register the plugin under test there),
    # before any module is collected.
    _check_device_uris(session.config)


def _backend_configs() -> list[CtsBackend]:
    from .._registry import iter_hook_results

    return [cfg for _plugin, cfg in iter_hook_results("hal_cts_backends")]


def _config_for(uri: str) -> CtsBackend | str:
    """``config_for_driver`` of ``uri``'s driver; a bare configuration when no plugin
    configures it."""
    from .._uri import DeviceUri

    driver = DeviceUri.parse(uri).scheme
    found = config_for_driver(driver)
    return CtsBackend(driver=driver) if found is None else found


def _explicit_device_options(config: pytest.Config) -> list[str] | None:
    """The ``--hal-device`` values given on the command line (or in PYTEST_ADDOPTS), or
    None when there are none and the ini file's ``addopts`` decide."""
    args = list(config.invocation_params.args)
    args += shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    values: list[str] = []
    found = False
    for i, arg in enumerate(args):
        if arg.startswith("--hal-device="):
            found = True
            values.append(arg.split("=", 1)[1])
        elif arg == "--hal-device" and i + 1 < len(args):
            found = True
            values.append(args[i + 1])
    return values if found else None


def _device_options(config: pytest.Config) -> list[str]:
    explicit = _explicit_device_options(config)
    return explicit if explicit is not None else list(config.getoption("--hal-device") or [])


def _selected_uris(config: pytest.Config) -> list[str]:
    uris: list[str] = []
    for value in _device_options(config):
        for uri in value.split(";"):
            uri = uri.strip()
            if not uri:
                continue
            if uri == "all":
                uris.extend(cfg.device_uri for cfg in _backend_configs())
            else:
                uris.append(uri)
    seen: list[str] = []
    for uri in uris:
        if uri not in seen:
            seen.append(uri)
    return seen


def _check_device_uris(config: pytest.Config) -> None:
    """One usage error, before collection, for a ``--hal-device`` given on the command
    line that is not a URI or names no registered driver (with the registry's near-miss
    suggestion). The ini file's defaults are not checked: a backend named there but not
    installed fails its own tests only."""
    if not _explicit_device_options(config):
        return
    from .._registry import registry
    from .._status import HalError
    from .._uri import DeviceUri

    reg = registry()
    known = reg.driver_names()
    for uri in _selected_uris(config):
        try:
            scheme = DeviceUri.parse(uri).scheme
        except HalError as exc:
            raise pytest.UsageError(f"--hal-device={uri}: {exc.message}") from None
        if scheme not in known:
            try:
                reg.driver(scheme)
            except HalError as exc:
                raise pytest.UsageError(f"--hal-device={uri}: {exc.message}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cts" not in metafunc.fixturenames:
        return
    uris = _selected_uris(metafunc.config)
    if not uris:
        if _device_options(metafunc.config):
            reason = "CTS: --hal-device=all found no backend with a CTS configuration"
        else:
            reason = "CTS inactive: pass --hal-device=URI"
        metafunc.parametrize(
            "cts",
            [pytest.param(None, marks=pytest.mark.skip(reason=reason))],
            indirect=True,
            ids=["no-device"],
        )
        return
    metafunc.parametrize("cts", uris, indirect=True, ids=uris, scope="function")


def _test_names(item: pytest.Function) -> list[str]:
    module = item.module.__name__.rsplit(".", 1)[-1]
    suite = module[5:] if module.startswith("test_") else module
    name = getattr(item, "originalname", item.name)
    return [f"{suite}.{name}", f"{suite}.{item.name}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    verify = os.environ.get("HAL_CTS_VERIFY_XFAILS", "") in ("1", "true", "yes")
    configs: dict[str, CtsBackend | str] = {}
    # Every test parametrized by the ``cts`` fixture is a CTS item, whether it is one of
    # hal_core's suites or a backend's own suite written against the same fixture.
    for item in items:
        if not isinstance(item, pytest.Function) or not hasattr(item, "callspec"):
            continue
        uri = item.callspec.params.get("cts")
        if not isinstance(uri, str):
            continue
        found = configs.get(uri)
        if found is None:
            found = configs[uri] = _config_for(uri)
        if isinstance(found, str):
            continue  # the ``cts`` fixture fails these tests with the error
        cfg = found
        names = _test_names(item)
        for marker in item.iter_markers("hal_requires"):
            unknown = set(marker.args) - KNOWN_TAGS
            if unknown:
                # A misspelt tag would silently skip the test on every backend.
                raise pytest.UsageError(
                    f"{item.nodeid}: hal_requires names unknown CTS tags {sorted(unknown)}; "
                    f"known tags: {sorted(KNOWN_TAGS)}"
                )
            missing = set(marker.args) - cfg.tags
            if missing:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"{cfg.driver} does not advertise CTS tags {sorted(missing)}"
                    )
                )
        for pattern, reason in cfg.unsupported.items():
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                item.add_marker(pytest.mark.skip(reason=f"unsupported on {cfg.driver}: {reason}"))
        for pattern, reason in cfg.expected_failures.items():
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                item.add_marker(
                    pytest.mark.xfail(
                        reason=f"expected failure on {cfg.driver}: {reason}", strict=verify
                    )
                )


def _device_for(config: pytest.Config, uri: str) -> Any:
    import hal_core

    from .._status import UnavailableError

    cache = config.stash[_DEVICES_KEY]
    entry = cache.get(uri)
    if entry is None:
        try:
            entry = hal_core.create_device(uri)
        except UnavailableError as exc:
            entry = exc
        cache[uri] = entry
    if isinstance(entry, BaseException):
        pytest.skip(f"device {uri!r} is unavailable: {entry}")
    return entry


@pytest.fixture
def cts(request: pytest.FixtureRequest) -> Any:
    """The CTS context for one device: ``cts.device``, ``cts.config`` and helpers."""
    from .context import CtsContext

    uri = request.param
    cfg = _config_for(uri)
    if isinstance(cfg, str):
        pytest.fail(f"CTS for {uri!r}: {cfg}", pytrace=False)
    device = _device_for(request.config, uri)
    ctx = CtsContext(device, cfg)
    yield ctx
    ctx.cleanup()


def _cts_uri(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    uri = callspec.params.get("cts") if callspec is not None else None
    return uri if isinstance(uri, str) else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """A CTS test that fails with UNIMPLEMENTED becomes a skip naming what is missing:
    optional op kinds and features are the backend's choice, not a conformance failure."""
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or call.excinfo is None or not report.failed:
        return
    uri = _cts_uri(item)
    if uri is None:
        return
    from .._status import UnimplementedError

    if call.excinfo.errisinstance(UnimplementedError):
        path, line, _name = item.location
        report.outcome = "skipped"
        report.longrepr = (path, (line or 0) + 1, f"UNIMPLEMENTED on {uri}: {call.excinfo.value}")


def pytest_unconfigure(config: pytest.Config) -> None:
    cache = config.stash.get(_DEVICES_KEY, {})
    for entry in cache.values():
        if not isinstance(entry, BaseException):
            entry.close()
    cache.clear()
