"""``hal profile`` is reachable from the ``hal`` entry point."""

from hal_core.cli.main import main


def test_hal_profile_registered(capsys):
    assert main(["profile", "--device", "local-sync://", "--", "edge.e2e"]) == 0
    assert "BARRIER=" in capsys.readouterr().out
