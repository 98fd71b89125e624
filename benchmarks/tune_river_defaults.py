"""How the River estimators' defaults were chosen: a grid of settings, scored on the first
half of each real stream, reported on the second half.

Each candidate (cell, gradient estimator, width, optimizer, learning rate and its decay) is run on
every stream of its task in `bench_real_streams.py` (regression: TrumpApproval and
ChickWeights; classification: Phishing and Bananas; forecasting: AirlinePassengers and
WaterFlow), through the same pipelines and by the same scoring loops, with several
seeds. A candidate's error on a stream (MAE; 1 − accuracy; the MAE averaged over the
horizons) is divided by that of the best River model on the same half of the same
stream, so that streams of different scales weigh alike; the candidate's score is the
mean of these ratios over the task's streams, **on the first half only**. The
candidate with the lowest score is the default; its ratios on the second half (the
model still learns through the first: the stream is one progressive run) are what the
README reports. A ratio below 1 beats every River model on that half.

    python benchmarks/tune_river_defaults.py [--tasks regression,...] [--seeds N]
                                             [--json FILE] [--no-progress]

It prints, per task, the candidates ranked by their first-half score and the chosen one's
ratios on both halves.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import click

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real_streams as bench  # noqa: E402

#: The settings tried, per task: every combination of these (estimators that do not
#: apply to a cell are left out: exact RTRL is tried on the element-wise cell only,
#: where it costs O(|θ|)).
GRID = {
    "cell_algorithm": [
        ("gru", "uoro"),
        ("gru", "snap1"),
        ("gru", "tbptt"),
        ("lstm", "snap1"),
        ("mingru", "rtrl"),
    ],
    "hidden_size": [16, 32],
    # Plain SGD's steps shrink with the gradient, Adam's do not: each gets its own rates.
    "optimizer_lr": [("adam", lr) for lr in (0.003, 0.01, 0.03)]
    + [("sgd", lr) for lr in (0.03, 0.1, 0.3)],
    "lr_decay": [0.0, 0.1],
}
TASKS = (bench.REGRESSION, bench.CLASSIFICATION, bench.FORECASTING)


def candidates() -> list[dict[str, Any]]:
    out = []
    for (cell, algorithm), hidden, (optimizer, lr), decay in itertools.product(*GRID.values()):
        options: dict[str, Any] = {
            "cell": cell,
            "algorithm": algorithm,
            "hidden_size": hidden,
            "optimizer": optimizer,
            "lr": lr,
            "lr_decay": decay,
        }
        if algorithm == "tbptt":
            options["truncation"] = 16
        out.append(options)
    return out


def error(task: str, scores: dict[str, float]) -> float:
    """The error a ratio is taken of: lower is better for every task."""
    if task == bench.CLASSIFICATION:
        return 1.0 - scores["Accuracy"]
    return scores["MAE_mean" if task == bench.FORECASTING else "MAE"]


def uoro_model(stream: bench.Stream, options: dict[str, Any]) -> bench.Model:
    """The benchmark's uoro row for ``stream`` with ``options``."""
    return bench.Model("candidate", str(options), bench.uoro_factory(stream, options), True)


def halves(stream: bench.Stream, model: bench.Model, samples: list, seeds: int) -> list[float]:
    """The model's mean error over seeds on the first and the second half."""
    runs = [bench.score(stream, model.make(seed), samples) for seed in range(seeds)]
    return [
        statistics.fmean(error(stream.task, run[part]) for run in runs)
        for part in ("scores_first_half", "scores_second_half")
    ]


def tune(task: str, seeds: int, progress: bool, limit: int | None = None) -> dict[str, Any]:
    """Every candidate's ratios on each stream of ``task`` (the first ``limit`` samples
    of each, if given), ranked by their mean on the first half."""
    streams = [s for s in bench.STREAMS.values() if s.task == task]
    data = {s.name: bench.samples_of(s, limit) for s in streams}
    best_river = {}  # per stream, the best River model's error on each half
    for stream in streams:
        rivers = [
            halves(stream, m, data[stream.name], 1 if not m.seeded else seeds)
            for m in bench.river_models(stream)
        ]
        best_river[stream.name] = [min(r[i] for r in rivers) for i in (0, 1)]
    results = []
    grid = candidates()
    bar = bench._progress(len(grid) * len(streams), progress)
    try:
        for options in grid:
            ratios = {}
            for stream in streams:
                bar.set_description(f"{task}: {stream.name}")
                model = uoro_model(stream, options)
                first, second = halves(stream, model, data[stream.name], seeds)
                river_first, river_second = best_river[stream.name]
                ratios[stream.name] = (first / river_first, second / river_second)
                bar.update(1)
            score = statistics.fmean(r[0] for r in ratios.values())
            results.append({"options": options, "ratios": ratios, "score": score})
    finally:
        bar.close()
    results.sort(key=lambda r: r["score"])
    return {"task": task, "best_river": best_river, "candidates": results}


def report(tuned: dict[str, Any], top: int = 10) -> str:
    names = list(tuned["best_river"])
    lines = [
        f"{tuned['task']}: error / best River model's error, first half (second half)",
        "| rank | options | " + " | ".join(names) + " | mean, first half |",
        "|---:|---|" + "---:|" * (len(names) + 1),
    ]
    for rank, r in enumerate(tuned["candidates"][:top], 1):
        o = r["options"]
        label = f"{o['cell']}-{o['hidden_size']} {o['algorithm']} {o['optimizer']}"
        label += f" lr {o['lr']:g} decay {o['lr_decay']:g}"
        cells = [f"{r['ratios'][n][0]:.3f} ({r['ratios'][n][1]:.3f})" for n in names]
        lines.append(f"| {rank} | {label} | " + " | ".join(cells) + f" | {r['score']:.3f} |")
    return "\n".join(lines) + "\n"


@click.command(help="Chooses the River estimators' defaults: see the module docstring.")
@click.option(
    "--tasks",
    default=",".join(TASKS),
    show_default=True,
    help="Comma-separated: regression, classification, forecasting.",
)
@click.option("--seeds", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
@click.option("--progress/--no-progress", default=True)
def main(tasks: str, seeds: int, json_path: str | None, progress: bool) -> None:
    chosen = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in TASKS]
    if unknown:
        raise click.BadParameter(f"{unknown}; choose from {', '.join(TASKS)}")
    out = [tune(task, seeds, progress) for task in chosen]
    for tuned in out:
        print(report(tuned))
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
