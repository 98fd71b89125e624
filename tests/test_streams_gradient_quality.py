"""benchmarks/streams_gradient_quality.py on a tiny GRU (4 units, B = 1 and 3, 8 burn-in
and 16 scored ticks): every row and column, sane values, and its reference checked by
hand."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import streams_gradient_quality as sgq  # noqa: E402

import uoro  # noqa: E402

# chunk 8: the burn-in and the scored ticks span several `gradients` calls.
TINY = sgq.Sizes(burn_in=8, ticks=16, chunk=8, timing_budget_s=0.002, timing_repeats=1)
HIDDEN, STREAMS = 4, (1, 3)
COLUMNS = {
    "task", "cell", "hidden", "streams", "estimator", "cosine", "cosine_full", "rel_error",
    "rel_error_median", "exact_norm", "compared", "seeds", "us_per_sample",
}  # fmt: skip


@pytest.fixture(scope="module")
def rows():
    return sgq.run(["anbn"], "gru", HIDDEN, STREAMS, TINY)


def test_a_row_per_streams_and_estimator_with_every_column(rows):
    assert {(r["estimator"], r["streams"]) for r in rows} == {
        (name, b) for name in sgq.ESTIMATORS for b in STREAMS
    }
    assert len(rows) == len(sgq.ESTIMATORS) * len(STREAMS)
    for row in rows:
        assert set(row) == COLUMNS, row
        assert (row["task"], row["cell"], row["hidden"]) == ("anbn", "gru", HIDDEN)
        assert row["compared"] == TINY.ticks and row["seeds"] == 1


def test_values_are_sane(rows):
    for row in rows:
        for column in ("cosine", "cosine_full"):
            assert -1 - 1e-12 <= row[column] <= 1 + 1e-12, row
        assert row["rel_error"] >= 0 and row["rel_error_median"] >= 0, row
        assert row["exact_norm"] > 0, row
        # Timings of a tiny network on a shared machine: only their presence is certain.
        assert math.isfinite(row["us_per_sample"]) and row["us_per_sample"] > 0, row


def test_rtrl_against_itself_has_cosine_one_and_no_error(rows):
    for row in rows:
        if row["estimator"] == "rtrl":
            assert row["cosine"] == pytest.approx(1, abs=1e-12)
            assert row["cosine_full"] == pytest.approx(1, abs=1e-12)
            assert row["rel_error"] == 0


def test_tables_have_a_row_per_estimator_and_a_column_per_streams(rows):
    text = sgq.table(rows, "anbn")
    assert text.splitlines()[0] == (
        "| estimator | cosine B=1 | cosine B=3 | µs/sample B=1 | µs/sample B=3 |"
    )
    for name in sgq.ESTIMATORS:
        assert sum(line.startswith(f"| {name} |") for line in text.splitlines()) == 1
    errors = sgq.error_table(rows, "anbn")
    assert errors.splitlines()[0] == "| estimator | rel. error B=1 | rel. error B=3 |"


def test_snap1_cosine_at_one_stream_is_the_hand_computed_one(rows):
    xs, ys = sgq.stream_pairs("anbn", 1, TINY.burn_in + TINY.ticks)
    xs, ys = xs[:, 0], ys[:, 0]
    grads = {}
    for algorithm in ("snap1", "rtrl"):
        learner = uoro.Learner("gru", 3, HIDDEN, algorithm=algorithm, dtype="float64", seed=0)
        n_cell = learner._core.n_cell_params
        grads[algorithm] = learner.gradients(xs, ys)[1][TINY.burn_in :, :n_cell]
    estimate, exact = grads["snap1"], grads["rtrl"]
    by_hand = np.mean(
        [e @ g / (np.linalg.norm(e) * np.linalg.norm(g)) for e, g in zip(estimate, exact)]
    )
    [row] = [r for r in rows if (r["estimator"], r["streams"]) == ("snap1", 1)]
    assert row["cosine"] == pytest.approx(by_hand, rel=1e-12)
    assert row["cosine"] < 1 - 1e-6  # SnAp-1 is biased: a wrong reference would not show


def test_the_reference_is_the_gradient_of_the_mean_loss_over_the_streams():
    # RTRL over B = 3 streams against three one-stream RTRL learners, each on its own
    # stream: the mean of theirs, tick by tick.
    xs, ys = sgq.stream_pairs("anbn", 3, 12)
    network = sgq.network_for("anbn", "gru", HIDDEN)
    many = sgq.frozen(network, {"algorithm": "rtrl"}, 3).gradients(xs, ys)[1]
    ones = [
        sgq.frozen(network, {"algorithm": "rtrl"}, 1).gradients(xs[:, b], ys[:, b])[1]
        for b in range(3)
    ]
    np.testing.assert_allclose(many, np.mean(ones, axis=0), rtol=1e-10, atol=1e-14)


def test_uoro_over_several_sign_seeds_shares_the_reference_parameters():
    sizes = sgq.Sizes(burn_in=4, ticks=8, chunk=8, seeds=3)
    xs, ys = sgq.stream_pairs("anbn", 3, sizes.burn_in + sizes.ticks)
    network = sgq.network_for("anbn", "gru", HIDDEN)
    estimators = {name: sgq.ESTIMATORS[name] for name in ("uoro r=1", "snap1", "rtrl")}
    results = sgq.compare(network, xs, ys, sizes, estimators)
    assert results["uoro r=1"]["seeds"] == 3 and results["uoro r=1"]["compared"] == 3 * 8
    assert results["snap1"]["seeds"] == 1 and results["snap1"]["compared"] == 8
    assert results["rtrl"]["cosine"] == pytest.approx(1, abs=1e-12)


def test_the_command_line_prints_the_tables_and_writes_json(tmp_path, monkeypatch, capsys):
    path = tmp_path / "rows.json"
    argv = ["--quick", "--hidden", "4", "--streams", "1", "3", "--ticks", "16", "--burn-in", "8"]
    argv += ["--tasks", "anbn", "--json", str(path)]
    monkeypatch.setattr(sys, "argv", ["streams_gradient_quality.py", *argv])
    sgq.main()
    printed = capsys.readouterr().out
    assert "| estimator | cosine B=1 | cosine B=3 | µs/sample B=1 | µs/sample B=3 |" in printed
    assert "core variant" in printed  # the machine line
    written = json.loads(path.read_text())
    assert written["settings"]["hidden"] == 4 and written["settings"]["streams"] == [1, 3]
    assert written["machine"]["variant"] == uoro._core.VARIANT
    assert len(written["rows"]) == len(sgq.ESTIMATORS) * 2
