"""A backend whose CTS configuration was rejected: the dispatch suites' parametrization
(``dispatch_support.pytest_generate_tests``) must not crash collection; the ``cts``
fixture fails that backend's tests with the rejection instead."""

from __future__ import annotations

import textwrap

import hal_core

pytest_plugins = ["pytester"]

CONFTEST = textwrap.dedent(
    """
    import hal_core
    from hal_core.backend import DriverFactory
    from hal_local_cpu.driver import LocalDriverBackend

    PLUGIN_NAME = "rejected-cts-plugin"


    class RejectedPlugin:
        @hal_core.hookimpl
        def hal_drivers(self):
            return [
                DriverFactory(
                    name="fake-rejected",
                    full_name="fake device with a broken CTS configuration",
                    create=lambda: LocalDriverBackend("fake-rejected", synchronous=True),
                )
            ]

        @hal_core.hookimpl
        def hal_cts_backends(self):
            raise RuntimeError("the configuration could not be built")


    def pytest_configure(config):
        hal_core.registry().register_plugin(RejectedPlugin(), name=PLUGIN_NAME)


    def pytest_unconfigure(config):
        hal_core.registry().unregister_plugin(PLUGIN_NAME)
    """
)

SUITE = textwrap.dedent(
    """
    from hal_core.cts.dispatch_support import pytest_generate_tests  # noqa: F401


    def test_with_format(cts, exe_format):
        pass


    def test_plain(cts):
        pass
    """
)


def test_rejected_configuration_fails_tests_instead_of_collection(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_rejected=SUITE)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-rsxX", "--hal-device=fake-rejected"
    )
    assert "rejected-cts-plugin" not in [p.name for p in hal_core.registry().plugins()]
    # No format to parametrize with: the format test is skipped; the other fails at its
    # ``cts`` fixture, naming the rejection.
    result.assert_outcomes(skipped=1, errors=1)
    result.stdout.fnmatch_lines(["*CTS configuration of plugin 'rejected-cts-plugin'*rejected*"])
