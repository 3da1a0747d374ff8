"""Substitutions carrying the replacement build's workgroup counts: parsing, the player
dispatching with them instead of the captured counts, and the CLI's ``--workgroup-count``."""

from __future__ import annotations

import numpy as np
import pytest
from _replay_capture import CORPUS

import hal_core as hal
from hal_core.cli.main import main
from hal_core.replay import (
    Player,
    Substitution,
    parse_workgroup_count,
    with_workgroup_counts,
)

CHAIN_FUNCTION = "chain_dispatch_0_matmul_4x4x4_f32"


def test_parse_workgroup_count():
    assert parse_workgroup_count("f=2,3,4") == ("f", (2, 3, 4))
    assert parse_workgroup_count("f=0x10") == ("f", (16, 1, 1))
    assert parse_workgroup_count("f=2,3") == ("f", (2, 3, 1))
    for bad in ("f", "=1,1,1", "f=", "f=1,1,1,1", "f=a,1,1", "f=0,1,1", "f=1,-1,1"):
        with pytest.raises(hal.InvalidArgumentError, match="workgroup count"):
            parse_workgroup_count(bad)


def test_with_workgroup_counts():
    subs = [Substitution(b"x", 4, "f1", workgroup_counts={"a": (1, 1, 1)}), Substitution(b"y")]
    out = with_workgroup_counts(subs, ["b=2,1,1", "a=3,1,1"])
    assert [s.workgroup_counts for s in out] == [
        {"a": (3, 1, 1), "b": (2, 1, 1)},
        {"a": (3, 1, 1), "b": (2, 1, 1)},
    ]
    assert (out[0].executable_id, out[0].format, out[0].data) == (4, "f1", b"x")
    assert with_workgroup_counts(subs, []) == subs
    with pytest.raises(hal.InvalidArgumentError, match="--substitute"):
        with_workgroup_counts([], ["a=1,1,1"])
    assert subs[0].dispatch_counts(["z", "a"]) == [None, (1, 1, 1)]
    assert subs[0].dispatch_counts(["z"]) is None
    assert subs[1].dispatch_counts(["a"]) is None


def _counting_chain(seen: list[tuple[int, ...]]):
    from hal_local_cpu.executable_python import kernel

    @kernel(bindings=3, constants=2, name=CHAIN_FUNCTION)
    def step(bindings, constants, workgroup_id, workgroup_count):
        if workgroup_id == (0, 0, 0):
            seen.append(tuple(workgroup_count))
        src, dst = int(constants[0]), int(constants[1])
        a = bindings[0][src : src + 64].view(np.float32).reshape(4, 4)
        w = bindings[1][:64].view(np.float32).reshape(4, 4)
        bindings[2][dst : dst + 64].view(np.float32).reshape(4, 4)[:] = a @ w

    return {CHAIN_FUNCTION: step}


@pytest.mark.parametrize("uri", ["local-task://", "local-sync://"])
def test_the_player_dispatches_with_the_substitutes_counts(uri):
    seen: list[tuple[int, ...]] = []
    with hal.create_device(uri) as device:
        plain = Substitution(_counting_chain(seen), None, "local-cpu-python")
        Player(CORPUS / "chain.ireereplay", device, substitutions=[plain]).run()
        assert set(seen) == {(1, 1, 1)} and len(seen) == 256  # the captured counts
        seen.clear()
        counted = Substitution(
            _counting_chain(seen),
            None,
            "local-cpu-python",
            workgroup_counts={CHAIN_FUNCTION: (3, 2, 1), "not_in_this_executable": (9, 9, 9)},
        )
        player = Player(CORPUS / "chain.ireereplay", device, substitutions=[counted])
        for _ in range(2):  # the second run reuses the prepared executable and its counts
            player.run()
        assert set(seen) == {(3, 2, 1)} and len(seen) == 512


def test_cli_workgroup_count_errors_are_one_line(capsys):
    chain = str(CORPUS / "chain.ireereplay")
    assert main(["replay", "run", chain, "--workgroup-count", "f=1,1,1"]) == 2
    assert "give --substitute too" in capsys.readouterr().err
    argv = ["replay", "run", chain, "--substitute", "all=x", "--workgroup-count", "f=0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hal replay: INVALID_ARGUMENT") and "\n" not in err
