"""The replay benchmarks are registered and IREE's benchmark JSON is parsed right."""

from __future__ import annotations

import json
import shutil

import pytest

import hal_core as hal
from hal_core.bench import all_benchmarks
from hal_core.bench.replay import parse_iree_benchmark_json


def test_replay_benchmarks_are_registered():
    names = set(all_benchmarks())
    assert {"replay.chain", "replay.mlp"} <= names
    if shutil.which("iree-benchmark-replay"):
        assert {"iree.replay.chain", "iree.replay.mlp"} <= names


def test_parse_iree_benchmark_json():
    rows = [
        {"run_type": "iteration", "real_time": 0.2, "time_unit": "ms"},
        {"run_type": "iteration", "real_time": 0.1, "time_unit": "ms"},
        {"run_type": "iteration", "real_time": 0.3, "time_unit": "ms"},
    ]
    assert parse_iree_benchmark_json(json.dumps({"benchmarks": rows})) == pytest.approx(200.0)
    rows.append(
        {"run_type": "aggregate", "aggregate_name": "median", "real_time": 150, "time_unit": "us"}
    )
    assert parse_iree_benchmark_json(json.dumps({"benchmarks": rows})) == 150.0
    with pytest.raises(hal.UnavailableError, match="no benchmark rows"):
        parse_iree_benchmark_json('{"benchmarks": []}')
