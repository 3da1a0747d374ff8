"""Tests of the CTS pytest plugin itself (``hal_core.cts.plugin``), through ``pytester``.

Inner runs register fake backends with a conftest that calls
``hal_core.registry().register_plugin(...)`` and unregisters at the end, so the process-wide
registry is left as it was. ``fake-sync`` is a real inline CPU device under another driver
name; ``fake-gone`` reports UNAVAILABLE like a backend whose library is missing.
"""

from __future__ import annotations

import textwrap

import pytest

import hal_core

pytest_plugins = ["pytester"]

CONFTEST = textwrap.dedent(
    """
    import hal_core
    from hal_core.backend import DriverFactory
    from hal_core.cts.config import CtsBackend
    from hal_local_cpu.driver import LocalDriverBackend

    PLUGIN_NAME = "fake-cts-plugin"


    def _gone():
        raise hal_core.UnavailableError("libfake.so.1 not found; install the fake runtime")


    class FakePlugin:
        @hal_core.hookimpl
        def hal_drivers(self):
            return [
                DriverFactory(
                    name="fake-sync",
                    full_name="fake inline device",
                    create=lambda: LocalDriverBackend("fake-sync", synchronous=True),
                ),
                DriverFactory(name="fake-gone", full_name="fake missing device", create=_gone),
            ]

        @hal_core.hookimpl
        def hal_cts_backends(self):
            return [
                CtsBackend(
                    driver="fake-sync",
                    tags={"file_io"},
                    unsupported={"fake.test_unsupported*": "fake-sync has no such feature"},
                    expected_failures={"fake.test_xfail_*": "known fake-sync bug"},
                ),
                CtsBackend(driver="fake-gone", tags={"file_io"}),
            ]


    def pytest_configure(config):
        hal_core.registry().register_plugin(FakePlugin(), name=PLUGIN_NAME)


    def pytest_unconfigure(config):
        hal_core.registry().unregister_plugin(PLUGIN_NAME)
    """
)

SUITE = textwrap.dedent(
    """
    import pytest


    def test_uses_device(cts):
        sem = cts.semaphore(0)
        cts.device.queue_barrier(cts.queue_affinities()[0], [], [(sem, 1)])
        cts.wait(sem, 1)


    @pytest.mark.hal_requires("file_io")
    def test_needs_file_io(cts):
        assert cts.has_tag("file_io")


    @pytest.mark.hal_requires("dispatch")
    def test_needs_dispatch(cts):
        raise AssertionError("must be skipped: no backend here advertises dispatch")


    def test_unsupported_feature(cts):
        raise AssertionError("must be skipped as unsupported on fake-sync")


    def test_xfail_broken(cts):
        if cts.driver == "fake-sync":
            raise AssertionError("the known bug")


    def test_xfail_fixed(cts):
        pass


    def test_not_cts():
        pass


    _first_device = {}


    def test_device_shared_a(cts):
        _first_device.setdefault(cts.driver, cts.device)


    def test_device_shared_b(cts):
        # One device per backend for the whole session.
        assert _first_device[cts.driver] is cts.device
    """
)


FOUNDATION_SUITES = (
    "test_semaphore",
    "test_semaphore_submission",
    "test_queue_transfer",
    "test_queue_host_call",
    "test_driver",
    "test_file",
)


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_fake=SUITE)
    return pytester


def _run(pytester, *args):
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rsxX", *args)
    assert "fake-cts-plugin" not in [p.name for p in hal_core.registry().plugins()]
    return result


def test_inactive_without_hal_device(suite):
    result = _run(suite)
    result.assert_outcomes(passed=1, skipped=8)
    result.stdout.fnmatch_lines(["*CTS inactive: pass --hal-device=URI*"])


def test_fake_backend_tags_unsupported_and_xfail(suite):
    result = _run(suite, "--hal-device=fake-sync")
    result.assert_outcomes(passed=5, skipped=2, xfailed=1, xpassed=1)
    result.stdout.fnmatch_lines_random(
        [
            "*fake-sync does not advertise CTS tags*'dispatch'*",
            "*unsupported on fake-sync: fake-sync has no such feature*",
            "*expected failure on fake-sync: known fake-sync bug*",
        ]
    )


def test_verify_xfails_turns_unexpected_pass_into_failure(suite, monkeypatch):
    monkeypatch.setenv("HAL_CTS_VERIFY_XFAILS", "1")
    result = _run(suite, "--hal-device=fake-sync")
    result.assert_outcomes(passed=5, skipped=2, xfailed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*test_xfail_fixed?fake-sync?*", "?XPASS(strict)? expected failure*"]
    )


def test_unavailable_backend_skips(suite):
    result = _run(suite, "--hal-device=fake-gone://", "-k", "uses_device or needs_file_io")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*device 'fake-gone://' is unavailable*libfake.so.1 not found*"])


def test_all_runs_every_registered_backend(suite):
    result = _run(suite, "--hal-device=all", "-k", "uses_device or device_shared", "-v")
    # local-task and local-sync come from the installed local_cpu plugin; other installed
    # plugins may add backends, so only the ones named here are counted exactly.
    outcomes = result.parseoutcomes()
    assert "failed" not in outcomes and "errors" not in outcomes, outcomes
    # fake-gone, for each of the three tests; an installed backend whose hardware is
    # missing here (cuda without a GPU) skips too, so only fake-gone's are counted.
    gone = [line for line in result.outlines if "[fake-gone://] SKIPPED" in line]
    assert len(gone) == 3, result.outlines
    assert outcomes["passed"] >= 9 and outcomes["passed"] % 3 == 0
    result.stdout.fnmatch_lines_random(
        [
            "*test_uses_device?fake-sync://? PASSED*",
            "*test_uses_device?local-task://? PASSED*",
            "*test_uses_device?local-sync://? PASSED*",
            "*test_uses_device?fake-gone://? SKIPPED*",
        ]
    )


def test_repeated_and_semicolon_separated_devices_are_deduplicated(suite):
    result = _run(
        suite, "--hal-device=fake-sync;local-sync", "--hal-device=fake-sync", "-k", "uses_device"
    )
    result.assert_outcomes(passed=2)


def test_unknown_required_tag_is_a_usage_error(pytester):
    pytester.makepyfile(
        test_typo="""
        import pytest

        @pytest.mark.hal_requires("asyncqueue")
        def test_typo(cts):
            pass
        """
    )
    result = _run(pytester, "--hal-device=local-sync")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown CTS tags*asyncqueue*"])


def test_pyargs_from_outside_the_repo(pytester):
    """An installed hal_core runs its CTS from any directory. ``-c`` points at an empty
    config so the checkout's own pytest settings (it is installed editable) stay out.
    ``-k`` keeps to the foundation suites: suites of other subsystems are checked by the
    project's own run, this test checks the mechanism."""
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest_subprocess(
        "-c",
        str(pytester.path / "tox.ini"),
        "-p",
        "no:cacheprovider",
        "-q",
        "--pyargs",
        "hal_core.cts",
        "--hal-device=local-sync",
        "-k",
        " or ".join(FOUNDATION_SUITES),
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
        timeout=120,
    )
    assert result.ret == 0, result.stdout.str()[-3000:]
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) > 100
    assert "failed" not in outcomes and "errors" not in outcomes
