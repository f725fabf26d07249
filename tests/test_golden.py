"""Golden regression: a tiny deterministic training whose losses and scores were pinned before the
"one house" refactor (tests/golden.json, made by `python -m tests.golden DIR` on main at 962a0f9; kd_graph re-pinned 2026-11-29
after the in-graph teacher fix: its student had been trained with gradients summed over steps).

Same config, same thread count (1): teacher, baseline, KD with the teacher in the graph and KD from
the cache with unlabelled images give the same per-epoch losses and validation scores (4 decimals).
"""

import json
from pathlib import Path

import pytest

from tests.golden import golden

PINNED = json.loads((Path(__file__).with_name("golden.json")).read_text())


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return golden(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("run", sorted(PINNED))
def test_golden_numbers_do_not_move(result, run):
    want, got = PINNED[run], result[run]
    assert got["params"] == want["params"]
    for key, values in want["history"].items():
        assert got["history"][key] == pytest.approx(values, abs=1.5e-4), (run, key)
    assert got["val"] == pytest.approx(want["val"], abs=1.5e-4), run
