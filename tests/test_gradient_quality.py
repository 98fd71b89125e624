"""The gradient-quality study on a tiny configuration: every column there, values sane."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gradient_quality as gq  # noqa: E402

import uoro  # noqa: E402

TINY = gq.Sizes(
    steps=600,
    chunk=16,
    burn_in=32,
    compared=64,
    probes=3,
    probe_gap=16,
    seeds=50,
    timing_budget_s=0.002,
    timing_repeats=1,
)
NETWORK = {"cell": "gru", "input_size": 3, "hidden_size": 5}
ONE_LAYER = gq.applicable(gq.ESTIMATORS, layers=1)  # all but the layer-wise rule


@pytest.fixture(scope="module")
def rows():
    return gq.run(["anbn"], ["gru"], [5], TINY)


def test_a_row_per_point_and_estimator_with_every_column(rows):
    assert len(rows) == len(gq.POINTS) * len(ONE_LAYER)
    assert {(r["point"], r["estimator"]) for r in rows} == {
        (p, e) for p in gq.POINTS for e in ONE_LAYER
    }
    for row in rows:
        assert set(row) == set(gq.COLUMNS)
    assert [r["samples_seen"] for r in rows if r["estimator"] == "uoro"] == [0, 300, 600]


def test_values_are_sane(rows):
    for row in rows:
        assert -1 <= row["cosine"] <= 1 + 1e-12, row
        assert row["rel_error"] >= 0, row
        # Timings of a tiny network on a shared machine: only their presence is certain.
        assert row["us_per_sample"] > 0 and row["forward_us"] > 0 and row["over_forward"] > 0
        assert math.isfinite(row["loss"]), row
        assert all(math.isnan(row[c]) for c in gq.LAYER_COSINES), row  # one layer
        options = gq.ESTIMATORS[row["estimator"]]
        assert row["compared"] == TINY.compared // gq.window(options), row
        assert math.isfinite(row["probe_cosine"]) == (gq.window(options) == 1), row
        # Taken for plain UORO and, trivially, for the deterministic estimators.
        mean_taken = row["estimator"] == "uoro" or options["algorithm"] not in gq.STOCHASTIC
        assert math.isfinite(row["probe_cosine_mean_of_k"]) == mean_taken, row


def test_rtrl_against_itself_has_cosine_one_and_no_error(rows):
    for row in rows:
        if row["estimator"] == "rtrl":
            assert row["cosine"] == pytest.approx(1, abs=1e-12)
            assert row["rel_error"] == 0
            assert row["probe_cosine_mean_of_k"] == pytest.approx(1, abs=1e-12)


def test_the_mean_of_many_uoro_estimates_is_closer_than_one(rows):
    for row in rows:
        if row["estimator"] == "uoro":
            assert row["probe_cosine_mean_of_k"] > max(row["probe_cosine"], 0.8), row


def test_more_work_per_step_gives_a_better_gradient(rows):
    def mean_cosine(estimator: str) -> float:
        return float(np.mean([r["cosine"] for r in rows if r["estimator"] == estimator]))

    assert mean_cosine("uoro") < mean_cosine("uoro r=16")
    assert mean_cosine("tbptt T=1") < mean_cosine("tbptt T=16")


def test_a_full_window_truncation_on_a_shorter_history_is_rtrl():
    learner = uoro.Learner(**NETWORK, dtype="float64", seed=3)
    theta = 3.0 * learner.theta  # saturating gates: the past matters
    state = np.random.default_rng(0).normal(size=learner.state.size)
    xs, ys = uoro.datasets.anbn().pairs(48)
    estimators = {
        "rtrl": gq.ESTIMATORS["rtrl"],
        "tbptt T=64": {"algorithm": "tbptt", "truncation": 64},
        "tbptt T=2": {"algorithm": "tbptt", "truncation": 2},
        "tbptt_chunk T=16": {"algorithm": "tbptt_chunk", "truncation": 16},
    }
    sizes = gq.Sizes(chunk=16, burn_in=0, probes=2, probe_gap=8)
    results, loss = gq.compare_at_point(NETWORK, theta, state, xs, ys, sizes, estimators)
    assert results["tbptt T=64"]["cosine"] == pytest.approx(1, abs=1e-10)
    assert results["tbptt T=64"]["rel_error"] < 1e-9
    assert results["tbptt T=2"]["rel_error"] > 1e-3  # a short window loses something
    # The first chunk starts from zero sensitivity, as RTRL does: exact there.
    assert results["tbptt_chunk T=16"]["compared"] == 3
    assert results["tbptt_chunk T=16"]["rel_error"] > 0
    assert loss > 0


def test_windows_must_fit_the_chunks():
    xs, ys = uoro.datasets.anbn().pairs(48)
    learner = uoro.Learner(**NETWORK, dtype="float64")
    with pytest.raises(ValueError, match="whole windows"):
        gq.compare_at_point(
            NETWORK,
            learner.theta,
            learner.state,
            xs,
            ys,
            gq.Sizes(chunk=12, burn_in=0),
            {"rtrl": gq.ESTIMATORS["rtrl"], "memory=8": {"algorithm": "uoro", "memory": 8}},
        )


def test_the_outputs(rows, tmp_path):
    gq.write_csv(rows, tmp_path / "quality.csv")
    with open(tmp_path / "quality.csv") as f:
        read = list(csv.DictReader(f))
    assert tuple(read[0]) == gq.COLUMNS and len(read) == len(rows)
    gq.plot(rows, tmp_path / "quality.png")
    assert (tmp_path / "quality.png").stat().st_size > 10_000
    table = gq.markdown_tables(rows, TINY.seeds)
    for name in ONE_LAYER:
        assert f"| gru | 5 | {name} |" in table
    assert "| gru | 5 | forward only |" in table
    assert "mean of 50" in table


def test_on_an_elementwise_stack_the_layerwise_rule_is_exact_for_the_top_layer(tmp_path):
    estimators = {name: gq.ESTIMATORS[name] for name in ("rtrl", "snap1", "layerwise")}
    rows = gq.run(["anbn"], ["mingru:2"], [4], TINY, estimators)
    # SnAp-1 is refused on a stack: the layer-wise rule runs instead.
    assert [r["estimator"] for r in rows] == ["rtrl", "layerwise"] * len(gq.POINTS)
    for row in rows:
        assert (row["cell"], row["layers"]) == ("mingru", 2) and math.isnan(row["cosine_l2"])
        if row["estimator"] == "rtrl":
            for column in ("cosine", "cosine_l0", "cosine_l1"):
                assert row[column] == pytest.approx(1, abs=1e-12), row
        else:
            assert row["cosine_l1"] == pytest.approx(1, abs=1e-9), row
            assert row["cosine_l0"] < 1 - 1e-6, row  # biased below the top layer
    table = gq.markdown_tables(rows, TINY.seeds)
    assert "| network | hidden | estimator | layer 0 | layer 1 |" in table
    assert "| mingru:2 | 4 | layerwise |" in table
    gq.plot(rows, tmp_path / "stack.png")
