"""uoro's River estimators against River's own models, on the real streams River ships.

Every dataset here is bundled inside the ``river`` package (nothing is downloaded) and is
scored as River scores it:

  - regression, by progressive validation (``river.evaluate.progressive_val_score``:
    predict each sample, then learn it), MAE and RMSE:
      - ``TrumpApproval`` (1,001 days, six features);
      - ``ChickWeights`` (578 weighings, features time, chick and diet). The stream is
        the 50 chicks' series interleaved (ordered by time, then chick); it is scored
        as River's regression track scores it, as one stream in that order, so a
        recurrent model reads all the chicks' weighings of a day one after the other;
  - binary classification, by progressive validation, accuracy and log loss (the
    models' predicted probabilities): ``Phishing`` (1,250 pages, nine features) and
    ``Bananas`` (5,300 points, two features);
  - forecasting, by ``river.evaluate.evaluate`` (what ``river.time_series.evaluate``
    became): at every step the model forecasts the next 1..h values, then learns the
    current one; the table gives the MAE averaged over the horizons +1..+h and the
    MAE at +1. ``AirlinePassengers`` (144 months, h = 12) and ``WaterFlow`` (1,268
    hours, h = 24): the horizons of River's forecasting track. The series alone is
    read (its timestamps are dropped), as River's SNARIMAX and Holt-Winters examples
    read it.

River's models take the settings River's documentation uses for that dataset where it
gives them (the docstring examples of the installed package), otherwise those of
River's benchmark configuration (``benchmarks/config.py`` of River's repository):

  - TrumpApproval: ``StandardScaler | LinearRegression(intercept_lr=0.1)``
    (``linear_model.LinearRegression``), ``StandardScaler |
    HoeffdingAdaptiveTreeRegressor(grace_period=50, model_selector_decay=0.3)``;
    ChickWeights: ``StandardScaler | LinearRegression()`` and ``StandardScaler |
    HoeffdingAdaptiveTreeRegressor()`` (benchmarks); both: ``StandardScaler |
    KNNRegressor()`` and the running mean of the targets (``dummy.StatisticRegressor``);
  - Phishing: ``StandardScaler | LogisticRegression(optimizer=SGD(0.1))``; Bananas:
    ``SGD(0.005)`` (benchmarks); both: ``StandardScaler | KNNClassifier()``,
    ``HoeffdingAdaptiveTreeClassifier()`` and the class frequencies
    (``dummy.PriorClassifier``);
  - AirlinePassengers: ``HoltWinters(alpha=0.3, beta=0.1, gamma=0.6, seasonality=12,
    multiplicative=True)`` and ``SNARIMAX(p=12, d=1, q=12, m=12, sd=1)``;
  - WaterFlow: ``HoltWinters(alpha=0.3, beta=0.1)``, alone and behind River's anomaly
    filter as the ``anomaly.ThresholdFilter`` example has it (a ``GaussianScorer`` over
    a week, threshold 0.995); River documents no SNARIMAX for it: here the
    AirlinePassengers recipe with a daily period (p = q = m = 24, d = sd = 1), its
    regressor's SGD step lowered from River's default 0.01 to 0.001, with which the
    multi-step forecasts diverge (MAE ~1e238).

uoro's estimators (``uoro.river``) read the same inputs through ``StandardScaler``; the
regressor's target goes through ``TargetStandardScaler`` (as ``uoro.river`` advises), the
forecaster standardizes the series itself, the classifier is told the two classes.
Rows: the estimator's defaults (GRU-16 with UORO, Adam, lr 0.01, decay 0.1), then the
same GRU with truncated BPTT (T = 16), with SnAp-1 and with exact RTRL, and minGRU-16 with
exact RTRL (exact at O(|θ|) per step on an element-wise cell); on the forecasting
streams also the forecaster told the season (``seasonality=`` 12 months, 24 hours), and
on WaterFlow the defaults behind the same anomaly filter as Holt-Winters. deep-river's
LSTM estimators (window 10, lr 1e-3, as in ``bench_river_peers.py``) are added for
regression and classification when ``import deep_river`` works.

Seeded models (uoro's, the Hoeffding trees', k-NN's search graph, deep-river's) run with
seeds 0..N-1 (``--seeds N``) and show the mean ± standard deviation over the seeds; the
others run once. µs/sample is the wall time of the whole scoring loop (every predict or
forecast and every learn, with the metric updates) over the samples, measured in this
run; on a busy machine it moves with the load. ``--limit N`` scores the first N samples
of each dataset only (forecasting needs N > 2h: h samples are learned before the first
forecast, whose targets are the h after).

    python benchmarks/bench_real_streams.py [--datasets NAME,...] [--models KEY,...]
                                            [--seeds N] [--limit N] [--json FILE]
                                            [--no-progress]
"""

from __future__ import annotations

import inspect
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

# NumPy's BLAS threads spin after each call and would share the cores with the learners.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click  # noqa: E402
from river import (  # noqa: E402
    anomaly,
    compose,
    datasets,
    dummy,
    linear_model,
    metrics,
    neighbors,
    optim,
    preprocessing,
    stats,
    time_series,
    tree,
)

import uoro  # noqa: E402
from uoro.river import RecurrentClassifier, RecurrentForecaster, RecurrentRegressor  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step  # noqa: E402

try:
    import deep_river
    import torch
    from deep_river.classification import LSTMClassifier
    from deep_river.regression import LSTMRegressor
except ImportError:  # optional: its rows are left out
    deep_river = None

REGRESSION, CLASSIFICATION, FORECASTING = "regression", "classification", "forecasting"

#: Per task, the scores of a row: (key in the row, column header).
SCORES = {
    REGRESSION: (("MAE", "MAE"), ("RMSE", "RMSE")),
    CLASSIFICATION: (("Accuracy", "accuracy"), ("LogLoss", "log loss")),
    FORECASTING: (("MAE_mean", "MAE, mean over +1..+h"), ("MAE_1", "MAE at +1")),
}

#: The deep-river rows' settings, those of bench_river_peers.py.
DEEP_RIVER = {"hidden_size": 16, "window_size": 10, "lr": 1e-3}


@dataclass(frozen=True)
class Stream:
    """A dataset River ships, and how it is scored."""

    name: str
    dataset: Callable[[], Any]  # the river.datasets class
    task: str
    horizon: int = 0  # forecasting: forecasts are scored at +1..+horizon
    classes: tuple[Any, ...] = ()  # classification: the labels
    period: int = 0  # forecasting: the season's length, in samples


STREAMS = {
    stream.name: stream
    for stream in (
        Stream("TrumpApproval", datasets.TrumpApproval, REGRESSION),
        Stream("ChickWeights", datasets.ChickWeights, REGRESSION),
        Stream("Phishing", datasets.Phishing, CLASSIFICATION, classes=(False, True)),
        Stream("Bananas", datasets.Bananas, CLASSIFICATION, classes=(False, True)),
        Stream("AirlinePassengers", datasets.AirlinePassengers, FORECASTING, 12, period=12),
        Stream("WaterFlow", datasets.WaterFlow, FORECASTING, 24, period=24),
    )
}


@dataclass(frozen=True)
class Model:
    """One row's estimator: ``make(seed)`` builds a fresh one (ignoring the seed unless
    ``seeded``)."""

    key: str  # what --models selects
    label: str  # the table's name for it
    make: Callable[[int], Any]
    seeded: bool = False


#: uoro's rows: (key, options beyond the estimator's defaults); WaterFlow adds one.
UORO_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("uoro", {}),
    ("uoro-uoro", {"algorithm": "uoro"}),
    ("uoro-tbptt", {"algorithm": "tbptt", "truncation": 16}),
    ("uoro-snap1", {"algorithm": "snap1"}),
    ("uoro-rtrl", {"algorithm": "rtrl"}),
    ("uoro-mingru-rtrl", {"cell": "mingru", "algorithm": "rtrl"}),
)

_CELL_NAMES = {
    "gru": "GRU",
    "lstm": "LSTM",
    "rnn": "RNN",
    "mingru": "minGRU",
    "minlstm": "minLSTM",
    "indrnn": "IndRNN",
}
_ALGORITHM_NAMES = {
    "uoro": "UORO",
    "rtrl": "RTRL (exact)",
    "snap1": "SnAp-1",
    "layerwise": "layer-wise SnAp-1",
    "tbptt": "tBPTT",
    "tbptt_chunk": "chunked tBPTT",
}


ESTIMATORS = {
    REGRESSION: RecurrentRegressor,
    CLASSIFICATION: RecurrentClassifier,
    FORECASTING: RecurrentForecaster,
}


def uoro_label(options: dict[str, Any], task: str = REGRESSION) -> str:
    """E.g. ``uoro GRU-16 tBPTT(T=16)``, from the task's estimator's defaults and
    ``options``."""
    defaults = inspect.signature(ESTIMATORS[task]).parameters
    merged = {name: parameter.default for name, parameter in defaults.items()} | options
    algorithm = _ALGORITHM_NAMES[merged["algorithm"]]
    if merged["truncation"] is not None:
        algorithm += f"(T={merged['truncation']})"
    cell = _CELL_NAMES[merged["cell"]]
    optimizer = f"{merged['optimizer']} {merged['lr']:g}"
    if merged["lr_decay"]:
        optimizer += f", decay {merged['lr_decay']:g}"
    label = f"uoro {cell}-{merged['hidden_size']} {algorithm} ({optimizer})"
    return label + ("" if options else ", defaults")


def _scaled(estimator: Any) -> Any:
    return preprocessing.StandardScaler() | estimator


def _water_flow_filter() -> Any:
    """River's ``anomaly.ThresholdFilter`` example on WaterFlow: samples whose value is
    anomalous for the last week are not learned."""
    day = 24
    scorer = anomaly.GaussianScorer(window_size=7 * day, grace_period=30)
    return anomaly.ThresholdFilter(scorer, threshold=0.995)


def river_models(stream: Stream) -> list[Model]:
    """River's models for ``stream``, with the settings its documentation gives them."""
    if stream.task == REGRESSION:
        trump = stream.name == "TrumpApproval"  # the docstrings' examples use its settings
        linear = linear_model.LinearRegression(**({"intercept_lr": 0.1} if trump else {}))
        tree_options = {"grace_period": 50, "model_selector_decay": 0.3} if trump else {}
        return [
            Model(
                "linear",
                "River LinearRegression" + (" (intercept_lr 0.1)" if trump else ""),
                lambda seed: _scaled(linear.clone()),
            ),
            Model(
                "knn",
                "River KNNRegressor",
                lambda seed: _scaled(neighbors.KNNRegressor(engine=neighbors.SWINN(seed=seed))),
                seeded=True,
            ),
            Model(
                "hoeffding-tree",
                "River HoeffdingAdaptiveTreeRegressor"
                + (" (grace 50, selector decay 0.3)" if trump else ""),
                lambda seed: _scaled(
                    tree.HoeffdingAdaptiveTreeRegressor(**tree_options, seed=seed)
                ),
                seeded=True,
            ),
            Model(
                "mean",
                "River running mean of the target",
                lambda seed: dummy.StatisticRegressor(stats.Mean()),
            ),
        ]
    if stream.task == CLASSIFICATION:
        lr = 0.1 if stream.name == "Phishing" else 0.005
        return [
            Model(
                "logistic",
                f"River LogisticRegression (SGD {lr:g})",
                lambda seed: _scaled(linear_model.LogisticRegression(optimizer=optim.SGD(lr))),
            ),
            Model(
                "knn",
                "River KNNClassifier",
                lambda seed: _scaled(neighbors.KNNClassifier(engine=neighbors.SWINN(seed=seed))),
                seeded=True,
            ),
            Model(
                "hoeffding-tree",
                "River HoeffdingAdaptiveTreeClassifier",
                lambda seed: tree.HoeffdingAdaptiveTreeClassifier(seed=seed),
                seeded=True,
            ),
            Model(
                "prior",
                "River class frequencies (PriorClassifier)",
                lambda seed: dummy.PriorClassifier(),
            ),
        ]
    if stream.name == "AirlinePassengers":
        return [
            Model(
                "holt-winters",
                "River HoltWinters (α 0.3, β 0.1, γ 0.6, multiplicative, season 12)",
                lambda seed: time_series.HoltWinters(
                    alpha=0.3, beta=0.1, gamma=0.6, seasonality=12, multiplicative=True
                ),
            ),
            Model(
                "snarimax",
                "River SNARIMAX (p 12, d 1, q 12, m 12, sd 1)",
                lambda seed: time_series.SNARIMAX(p=12, d=1, q=12, m=12, sd=1),
            ),
        ]
    if stream.name == "WaterFlow":
        return [
            Model(
                "holt-winters",
                "River HoltWinters (α 0.3, β 0.1)",
                lambda seed: time_series.HoltWinters(alpha=0.3, beta=0.1),
            ),
            Model(
                "filtered-holt-winters",
                "River HoltWinters (α 0.3, β 0.1) behind an anomaly filter",
                lambda seed: _water_flow_filter() | time_series.HoltWinters(alpha=0.3, beta=0.1),
            ),
            Model(
                "snarimax",
                "River SNARIMAX (p 24, d 1, q 24, m 24, sd 1; SGD 0.001)",
                lambda seed: time_series.SNARIMAX(
                    p=24,
                    d=1,
                    q=24,
                    m=24,
                    sd=1,
                    regressor=_scaled(linear_model.LinearRegression(optimizer=optim.SGD(0.001))),
                ),
            ),
        ]
    raise ValueError(f"no River models for {stream.name!r}")


def uoro_factory(stream: Stream, options: dict[str, Any]) -> Callable[[int], Any]:
    """``make(seed)`` of uoro's estimator for the stream's task with ``options``, in the
    pipeline every uoro row uses."""
    if stream.task == REGRESSION:
        return lambda seed: _scaled(
            preprocessing.TargetStandardScaler(RecurrentRegressor(**options, seed=seed))
        )
    if stream.task == CLASSIFICATION:
        return lambda seed: _scaled(
            RecurrentClassifier(classes=stream.classes, **options, seed=seed)
        )
    return lambda seed: RecurrentForecaster(**options, seed=seed)


def uoro_models(stream: Stream) -> list[Model]:
    """uoro's estimator for the stream's task, with its defaults and the variants."""

    models = [
        Model(key, uoro_label(options, stream.task), uoro_factory(stream, options), seeded=True)
        for key, options in UORO_VARIANTS
    ]
    if stream.task != FORECASTING:  # the estimator's own standardization alone
        estimator = ESTIMATORS[stream.task]
        extra = {"classes": stream.classes} if stream.task == CLASSIFICATION else {}
        models.append(
            Model(
                "uoro-alone",
                uoro_label({}, stream.task) + ", no River scalers",
                lambda seed: estimator(**extra, seed=seed),
                seeded=True,
            )
        )
    if stream.task == FORECASTING:
        seasonal = {"seasonality": stream.period}
        models.append(
            Model(
                "uoro-seasonal",
                uoro_label(seasonal, stream.task) + f", seasonal (m = {stream.period})",
                uoro_factory(stream, seasonal),
                seeded=True,
            )
        )
    if stream.name == "WaterFlow":
        models.append(
            Model(
                "filtered-uoro",
                uoro_label({}, stream.task) + " behind an anomaly filter",
                lambda seed: _water_flow_filter() | RecurrentForecaster(seed=seed),
                seeded=True,
            )
        )
    return models


def deep_river_models(stream: Stream, n_features: int) -> list[Model]:
    """deep-river's rolling-window LSTM estimators, if deep-river is installed."""
    if deep_river is None or stream.task == FORECASTING:
        return []
    hidden, window = DEEP_RIVER["hidden_size"], DEEP_RIVER["window_size"]
    label = f"deep-river LSTM-{hidden} (window {window})"

    def make(seed: int) -> Any:
        torch.manual_seed(seed)  # deep-river draws its weights from torch's global generator
        if stream.task == REGRESSION:
            regressor = LSTMRegressor(n_features=n_features, **DEEP_RIVER)
            return _scaled(preprocessing.TargetStandardScaler(regressor))
        return _scaled(
            LSTMClassifier(
                n_features=n_features,
                n_init_classes=len(stream.classes),
                optimizer_fn="adam",
                **DEEP_RIVER,
            )
        )

    return [Model("deep-river-lstm", label, make, seeded=True)]


def models_for(stream: Stream, n_features: int) -> list[Model]:
    return river_models(stream) + uoro_models(stream) + deep_river_models(stream, n_features)


def model_keys() -> list[str]:
    """Every model key, over all datasets, in table order."""
    keys: dict[str, None] = {}
    for stream in STREAMS.values():
        keys.update((model.key, None) for model in models_for(stream, n_features=1))
    return list(keys)


def samples_of(stream: Stream, limit: int | None) -> list[tuple[dict, Any]]:
    """The first ``limit`` samples (all if None); a forecast series keeps only its values."""
    # Read to the end: River's file readers close their file only there (6k rows at most).
    samples = list(stream.dataset())[:limit]
    if stream.task == FORECASTING:
        return [({}, y) for _, y in samples]
    return samples


def recurrent_part(model: Any) -> Any:
    """The uoro estimator inside a River pipeline, or None."""
    # Pipelines first: River counts a pipeline as an instance of its last step's class.
    if isinstance(model, compose.Pipeline):
        parts = list(model.steps.values())
    elif isinstance(model, compose.TargetTransformRegressor):
        parts = [model.regressor]
    elif isinstance(model, (RecurrentRegressor, RecurrentClassifier, RecurrentForecaster)):
        return model
    else:
        return None
    found = [part for part in map(recurrent_part, parts) if part is not None]
    return found[0] if found else None


def _metrics(task: str) -> dict[str, Any]:
    """Fresh metrics of a task, by score key."""
    if task == REGRESSION:
        return {"MAE": metrics.MAE(), "RMSE": metrics.RMSE()}
    return {"Accuracy": metrics.Accuracy(), "LogLoss": metrics.LogLoss()}


def _progressive(model: Any, samples: list[tuple[dict, Any]], task: str) -> list[dict]:
    """Progressive validation as ``evaluate.progressive_val_score`` does it (predict, then
    learn, sample by sample), scored over the whole stream, its first half and its second
    half: the three score dicts, in that order."""
    whole, first, second = _metrics(task), _metrics(task), _metrics(task)
    half = len(samples) // 2
    for t, (x, y) in enumerate(samples):
        part = first if t < half else second
        if task == REGRESSION:
            prediction = model.predict_one(x)
            for scores in (whole, part):
                for metric in scores.values():
                    metric.update(y, prediction)
        else:  # River scores accuracy on the most probable label of the same probabilities
            probabilities = model.predict_proba_one(x)
            label = max(probabilities, key=probabilities.get) if probabilities else None
            for scores in (whole, part):
                scores["Accuracy"].update(y, label)
                scores["LogLoss"].update(y, probabilities)
        model.learn_one(x, y)
    return [{key: metric.get() for key, metric in s.items()} for s in (whole, first, second)]


def _forecasts(model: Any, samples: list[tuple[dict, Any]], horizon: int) -> list[dict]:
    """``evaluate.evaluate`` for forecasters, step for step: the first ``horizon`` samples
    are learned; then at sample t (not yet learned) the model forecasts samples
    t+1..t+horizon and learns sample t. Scored over every forecast, those made in the
    first half of the stream and those made in the second: the three score dicts."""
    maes = [[metrics.MAE() for _ in range(horizon)] for _ in range(3)]
    half = len(samples) // 2
    for t, (x, y) in enumerate(samples[: len(samples) - horizon]):
        if t >= horizon:
            ahead = samples[t + 1 : t + 1 + horizon]
            forecast = model.forecast(horizon, xs=[x_ahead for x_ahead, _ in ahead])
            for part in (maes[0], maes[1 if t < half else 2]):
                for metric, (_, truth), predicted in zip(part, ahead, forecast):
                    metric.update(truth, predicted)
        model.learn_one(y=y, x=x)
    return [
        {"MAE_mean": statistics.fmean(m.get() for m in part), "MAE_1": part[0].get()}
        for part in maes
    ]


def score(stream: Stream, model: Any, samples: list[tuple[dict, Any]]) -> dict[str, Any]:
    """Scores a fresh ``model`` on ``samples`` as River does; its scores over the whole
    stream and over each half, µs per sample and, for a uoro estimator, the learner's
    divergence resets."""
    # A private copy: nothing a model does to an x can reach the next model's run.
    samples = [(dict(x), y) for x, y in samples]
    start = time.perf_counter()
    if stream.task == FORECASTING:
        whole, first, second = _forecasts(model, samples, stream.horizon)
    else:
        whole, first, second = _progressive(model, samples, stream.task)
    seconds = time.perf_counter() - start
    recurrent = recurrent_part(model)
    return {
        "scores": whole,
        "scores_first_half": first,
        "scores_second_half": second,
        "us_per_sample": 1e6 * seconds / len(samples),
        "resets": None if recurrent is None else recurrent.learner.resets,
    }


def run(
    stream_names: Sequence[str] = tuple(STREAMS),
    *,
    seeds: int = 3,
    limit: int | None = None,
    keys: Sequence[str] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Scores every model (those of ``keys`` only, if given) on every named stream; one
    row per (stream, model), seeded models over seeds 0..seeds-1."""
    plan = []
    for name in stream_names:
        stream = STREAMS[name]
        samples = samples_of(stream, limit)
        if stream.task == FORECASTING and len(samples) <= 2 * stream.horizon:
            raise ValueError(
                f"{name}: {len(samples)} samples leave no forecast to score at horizon "
                f"{stream.horizon}; it needs more than {2 * stream.horizon}"
            )
        for model in models_for(stream, n_features=len(samples[0][0])):
            if keys is None or model.key in keys:
                plan.append((stream, samples, model))
    bar = _progress(sum(seeds if model.seeded else 1 for *_, model in plan), progress)
    rows = []
    try:
        for stream, samples, model in plan:
            bar.set_description(f"{stream.name}: {model.key}")
            runs = []
            for seed in range(seeds if model.seeded else 1):
                runs.append(score(stream, model.make(seed), samples))
                bar.update(1)
            rows.append(_row(stream, model, len(samples), runs))
    finally:
        bar.close()
    return rows


def _row(stream: Stream, model: Model, samples: int, runs: list[dict[str, Any]]) -> dict:
    """A table row: the runs' scores, times and resets, one entry per seed."""
    return {
        "dataset": stream.name,
        "task": stream.task,
        "horizon": stream.horizon or None,
        "samples": samples,
        "key": model.key,
        "model": model.label,
        "seeds": list(range(len(runs))) if model.seeded else None,
        **{
            part: {key: [run[part][key] for run in runs] for key, _ in SCORES[stream.task]}
            for part in ("scores", "scores_first_half", "scores_second_half")
        },
        "us_per_sample": [run["us_per_sample"] for run in runs],
        "resets": None if runs[0]["resets"] is None else [run["resets"] for run in runs],
    }


class _NoBar:
    def set_description(self, text: str) -> None:
        pass

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, show: bool) -> Any:
    """A tqdm bar on stderr when asked for and tqdm is installed; else nothing."""
    if show:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, unit="run", leave=False)
    return _NoBar()


def score_text(value: float) -> str:
    return f"{value:#.4g}"  # 4 significant digits, trailing zeros kept: 41.00, 0.8896


def micros_text(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def spread(values: list[float], text: Callable[[float], str] = score_text) -> str:
    """``mean ± std`` of several runs' values; a single run's value alone."""
    mean = text(statistics.fmean(values))
    if len(values) < 2:
        return mean
    std = statistics.stdev(values)
    if 10 <= std < 1e6:
        return f"{mean} ± {std:,.0f}"
    return f"{mean} ± {std:.2g}"  # small, or a diverged run's


def tables(rows: list[dict[str, Any]]) -> str:
    """One markdown table per task, the rows in run order."""
    titles = {
        REGRESSION: "Regression, progressive validation",
        CLASSIFICATION: "Binary classification, progressive validation",
        FORECASTING: "Forecasting, River's evaluate.evaluate (h = the horizon)",
    }
    out = []
    for task, title in titles.items():
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        (primary, primary_header), *_ = SCORES[task]
        headers = ["dataset", "samples", "model", *(h for _, h in SCORES[task])]
        headers += [f"{primary_header}, 2nd half", "µs/sample"]
        out += [f"{title}\n", "| " + " | ".join(headers) + " |"]
        out.append("|---|---:|---|" + "---:|" * (len(headers) - 3))
        for r in task_rows:
            dataset = r["dataset"] + (f" (h = {r['horizon']})" if r["horizon"] else "")
            cells = [dataset, f"{r['samples']:,}", r["model"]]
            cells += [spread(r["scores"][key]) for key, _ in SCORES[task]]
            cells.append(spread(r["scores_second_half"][primary]))
            cells.append(spread(r["us_per_sample"], micros_text))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    resets = [r for r in rows if r["resets"] and any(r["resets"])]
    for r in resets:
        out.append(f"{r['dataset']}, {r['model']}: divergence resets per seed {r['resets']}")
    return "\n".join(out).rstrip() + "\n"


def _names(choices: Sequence[str]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback: a comma-separated list of ``choices`` (any case), None if absent."""
    by_lower = {choice.lower(): choice for choice in choices}

    def parse(ctx: click.Context, param: click.Parameter, text: str | None) -> Any:
        if text is None:
            return None
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name.lower() not in by_lower]
        if unknown or not names:
            raise click.BadParameter(f"{unknown or text!r}; choose from {', '.join(choices)}")
        return [by_lower[name.lower()] for name in names]

    return parse


MODEL_KEYS = model_keys()


@click.command(
    help="uoro's River estimators against River's own models on the streams River ships. "
    "What is scored and how: the docstring of benchmarks/bench_real_streams.py.",
    context_settings={"max_content_width": 100},
)
@click.option(
    "--datasets",
    "stream_names",
    callback=_names(list(STREAMS)),
    help=f"Comma-separated; default all: {', '.join(STREAMS)}.",
)
@click.option(
    "--models",
    "keys",
    callback=_names(MODEL_KEYS),
    help=f"Comma-separated model keys; default all: {', '.join(MODEL_KEYS)}.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Seeds of each seeded model (0..N-1).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="Score only the first N samples of each dataset (default: all).",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), help="Also write the rows here."
)
@click.option("--progress/--no-progress", default=True, help="A progress bar on stderr.")
def main(
    stream_names: list[str] | None,
    keys: list[str] | None,
    seeds: int,
    limit: int | None,
    json_path: str | None,
    progress: bool,
) -> None:
    stream_names = stream_names or list(STREAMS)
    too_short = [
        name
        for name in stream_names
        if limit is not None and STREAMS[name].horizon and limit <= 2 * STREAMS[name].horizon
    ]
    if too_short:
        horizons = ", ".join(f"{name} h = {STREAMS[name].horizon}" for name in too_short)
        raise click.BadParameter(
            f"forecasting needs more than 2h samples ({horizons})", param_hint="--limit"
        )
    machine = bench_step.machine()
    versions = {"river": _version("river"), "deep-river": _version("deep-river")}
    print(
        f"uoro {uoro.__version__} ({machine['variant']}), river {versions['river']}, "
        f"deep-river {versions['deep-river'] or 'not installed'}; {machine['cpu']}, "
        f"{machine['cores']} cores; {seeds} seed(s) per seeded model"
        + (f"; first {limit:,} samples of each dataset" if limit else "")
        + "\n"
    )
    rows = run(stream_names, seeds=seeds, limit=limit, keys=keys, progress=progress)
    print(tables(rows))
    if json_path:
        report = {
            "machine": machine,
            "versions": versions,
            "options": {"datasets": stream_names, "models": keys, "seeds": seeds, "limit": limit},
            "rows": rows,
        }
        Path(json_path).write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
