"""benchmarks/bench_real_streams.py on a slice of each stream: its rows and columns, not
its numbers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("river")
pytest.importorskip("click")
from click.testing import CliRunner  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_real_streams as bench  # noqa: E402

# WaterFlow forecasts 24 steps ahead and learns 24 samples before its first forecast:
# 60 samples leave a dozen forecasts to score.
LIMIT = 60

UORO_KEYS = {"uoro", "uoro-uoro", "uoro-tbptt", "uoro-snap1", "uoro-rtrl", "uoro-mingru-rtrl"}
EXPECTED = {
    "TrumpApproval": {"linear", "knn", "hoeffding-tree", "mean", "uoro-alone"} | UORO_KEYS,
    "ChickWeights": {"linear", "knn", "hoeffding-tree", "mean", "uoro-alone"} | UORO_KEYS,
    "Phishing": {"logistic", "knn", "hoeffding-tree", "prior", "uoro-alone"} | UORO_KEYS,
    "Bananas": {"logistic", "knn", "hoeffding-tree", "prior", "uoro-alone"} | UORO_KEYS,
    "AirlinePassengers": {"holt-winters", "snarimax", "uoro-seasonal"} | UORO_KEYS,
    "WaterFlow": {"holt-winters", "filtered-holt-winters", "snarimax", "filtered-uoro"}
    | {"uoro-seasonal"}
    | UORO_KEYS,
}
SCORE_KEYS = {
    "regression": {"MAE", "RMSE"},
    "classification": {"Accuracy", "LogLoss"},
    "forecasting": {"MAE_mean", "MAE_1"},
}


@pytest.fixture(scope="module")
def rows():
    return bench.run(seeds=1, limit=LIMIT)


def test_every_dataset_gets_a_row_per_model(rows):
    assert {r["dataset"] for r in rows} == set(EXPECTED)
    for dataset, keys in EXPECTED.items():
        got = [r["key"] for r in rows if r["dataset"] == dataset]
        assert len(got) == len(set(got)), f"{dataset}: a model twice"
        # deep-river's row comes on top where it is installed.
        assert set(got) - {"deep-river-lstm"} == keys, dataset


def test_every_row_has_finite_scores_and_a_time(rows):
    for r in rows:
        where = f"{r['dataset']}, {r['model']}"
        assert r["task"] == bench.STREAMS[r["dataset"]].task
        assert r["samples"] == LIMIT
        for part in ("scores", "scores_first_half", "scores_second_half"):
            assert set(r[part]) == SCORE_KEYS[r["task"]], where
            for values in r[part].values():
                assert len(values) == 1 and all(math.isfinite(v) for v in values), where
        assert len(r["us_per_sample"]) == 1 and r["us_per_sample"][0] > 0, where
        if r["key"] in UORO_KEYS | {"filtered-uoro", "uoro-seasonal", "uoro-alone"}:
            assert r["model"].startswith("uoro ") and r["seeds"] == [0], where
            assert r["resets"] is not None and all(n >= 0 for n in r["resets"]), where
        else:
            assert r["resets"] is None, where


def test_the_table_has_a_line_per_row_and_a_column_per_score(rows):
    table = bench.tables(rows)
    for task, columns in bench.SCORES.items():
        header = "| dataset | samples | model | " + " | ".join(h for _, h in columns)
        assert header + f" | {columns[0][1]}, 2nd half | µs/sample |" in table, task
    for r in rows:
        assert f" | {r['model']} | " in table
    assert table.count("\n| ") == len(rows) + len(bench.SCORES)  # and a header per task


def test_seeded_models_run_once_per_seed_and_show_their_spread():
    rows = bench.run(["TrumpApproval"], seeds=2, limit=30, keys=["linear", "uoro"])
    linear, recurrent = rows
    assert linear["seeds"] is None and len(linear["scores"]["MAE"]) == 1
    assert recurrent["seeds"] == [0, 1] and len(recurrent["scores"]["MAE"]) == 2
    assert len(recurrent["us_per_sample"]) == 2 and len(recurrent["resets"]) == 2
    table = bench.tables(rows)
    assert " ± " not in table.split(linear["model"])[1].split("\n")[0]
    assert " ± " in table.split(recurrent["model"])[1].split("\n")[0]


def test_the_command_line_prints_the_table_and_writes_the_rows(tmp_path):
    path = tmp_path / "rows.json"
    result = CliRunner().invoke(
        bench.main,
        ["--datasets", "trumpapproval,WaterFlow", "--models", "uoro,holt-winters,linear"]
        + ["--seeds", "1", "--limit", str(LIMIT), "--json", str(path), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert "| TrumpApproval | 60 | uoro GRU-16 SnAp-1 (sgd 0.1), defaults |" in result.output
    assert "| WaterFlow (h = 24) | 60 | River HoltWinters" in result.output
    report = json.loads(path.read_text())
    assert report["options"]["limit"] == LIMIT
    assert [(r["dataset"], r["key"]) for r in report["rows"]] == [
        ("TrumpApproval", "linear"),
        ("TrumpApproval", "uoro"),
        ("WaterFlow", "holt-winters"),
        ("WaterFlow", "uoro"),
    ]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--datasets", "Nope"], "choose from"),
        (["--models", "uoro,nope"], "choose from"),
        (["--datasets", "WaterFlow", "--limit", "48"], "more than 2h samples"),
    ],
)
def test_the_command_line_refuses_what_it_cannot_score(arguments, message):
    result = CliRunner().invoke(bench.main, [*arguments, "--no-progress"])
    assert result.exit_code == 2 and message in result.output


def test_a_slice_too_short_to_forecast_is_refused():
    with pytest.raises(ValueError, match="no forecast to score"):
        bench.run(["AirlinePassengers"], seeds=1, limit=24, keys=["holt-winters"])


@pytest.mark.parametrize("name", ["TrumpApproval", "Phishing", "WaterFlow"])
def test_the_scoring_loops_are_rivers_own(name):
    """The benchmark's loops (which also score each half) give River's numbers."""
    from river import evaluate, metrics

    stream = bench.STREAMS[name]
    samples = bench.samples_of(stream, 120)
    model = next(m for m in bench.models_for(stream, len(samples[0][0])) if m.key == "uoro")
    ours = bench.score(stream, model.make(0), samples)
    if stream.task == bench.FORECASTING:
        maes = evaluate.evaluate(samples, model.make(0), metrics.MAE(), horizon=stream.horizon)
        assert ours["scores"]["MAE_1"] == maes.get()[0]
        assert ours["scores"]["MAE_mean"] == pytest.approx(sum(maes.get()) / stream.horizon)
    else:
        metric = metrics.MAE() if stream.task == bench.REGRESSION else metrics.Accuracy()
        evaluate.progressive_val_score(samples, model.make(0), metric)
        assert ours["scores"][type(metric).__name__] == metric.get()
    halves = (ours["scores_first_half"], ours["scores_second_half"])
    assert all(set(h) == set(ours["scores"]) for h in halves)
