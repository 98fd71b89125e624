"""Learning curves at equal wall time: which online estimator learns the most per second?

For each task (aⁿbⁿ(1, 32), distant brackets (1, 5, 10)) and cell (GRU by default; 32
units; float32, Adam, one stream), plain UORO first learns `--samples` samples (10⁶ by
default): its `fit` seconds are the budget W. Every other estimator then learns the same
stream (same seed, same initial θ: the task's initialization in `uoro.experiments`, the
task's lr and lr_decay, ``on_divergence="reset"``) until its `fit` calls have used W
seconds (or 4 × `--samples` samples). Only the `fit` calls are timed, chunk by chunk
(see streams_learning_curves.py, whose machinery this reuses at B = 1).

Per run: samples learned, samples per second, the final loss (bits/char, mean over the
run's last 10 % of samples) and the seconds at which the loss over a trailing window of
`--samples` / 10 samples (or 10 % of the run's own samples, if fewer: the span its final loss
is taken over) first reaches UORO's final loss ("—" if never). Estimators
(`--estimators`, by name): uoro, kf_rtrl, ok r=1, ok r=2, snap1, tbptt T=16.

    python benchmarks/estimator_curves.py [--quick] [--tasks anbn brackets] [--cells gru]
        [--hidden 32] [--samples 1000000] [--estimators uoro kf_rtrl ...]
        [--json PATH] [--plot PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step  # noqa: E402
import streams_learning_curves as slc  # noqa: E402

ESTIMATORS: dict[str, dict[str, Any]] = {
    "uoro": {"algorithm": "uoro"},
    "kf_rtrl": {"algorithm": "kf_rtrl"},
    "ok r=1": {"algorithm": "ok", "rank": 1},
    "ok r=2": {"algorithm": "ok", "rank": 2},
    "snap1": {"algorithm": "snap1"},
    "tbptt T=16": {"algorithm": "tbptt", "truncation": 16},
}
BASELINE = "uoro"
CELLS = ("gru", "lstm", "rnn")


@dataclass
class Run:
    task: str
    cell: str
    hidden: int
    estimator: str
    samples: int
    wall_s: float
    samples_per_s: float
    final_loss: float  # bits/char over the run's last 10 % of samples
    time_to_baseline: float | None  # seconds until the windowed loss ≤ UORO's final loss
    resets: int
    curve: dict[str, list]


def last_tenth(samples: list[int]) -> int:
    """The span of a run's final loss: 10 % of its samples (`samples`: counts per chunk)."""
    return max(1, samples[-1] // 10)


def final_loss(curve: slc.Curve) -> float:
    return float(slc.windowed(curve.samples, curve.loss, last_tenth(curve.samples))[-1])


def run_network(task: str, cell: str, hidden: int, sizes: slc.Sizes, names: list[str]) -> list[Run]:
    theta = slc.initial_theta(task, cell, hidden, 0, "paper")
    curves: dict[str, slc.Curve] = {}
    budget = float("inf")
    for name in [BASELINE] + [n for n in names if n != BASELINE]:
        options = {**slc.base_options(task), **ESTIMATORS[name]}
        limit = sizes.samples if name == BASELINE else sizes.samples * sizes.max_factor
        curves[name] = slc.learn(task, cell, hidden, 1, options, theta, sizes, budget, limit)
        if name == BASELINE:
            budget = curves[name].seconds[-1]
        print(
            f"  {task} {cell}-{hidden} {name}: {curves[name].samples[-1]:,} samples "
            f"in {curves[name].seconds[-1]:.1f} s",
            flush=True,
        )
    target = final_loss(curves[BASELINE])
    runs = []
    for name, curve in curves.items():
        if name not in names:
            continue
        runs.append(
            Run(
                task,
                cell,
                hidden,
                name,
                curve.samples[-1],
                curve.seconds[-1],
                curve.samples[-1] / curve.seconds[-1],
                final_loss(curve),
                slc.time_to(curve, min(sizes.window, last_tenth(curve.samples)), target),
                curve.resets,
                {"samples": curve.samples, "seconds": curve.seconds, "loss": curve.loss},
            )
        )
    return runs


def markdown(runs: list[Run]) -> str:
    lines = []
    for task, cell, hidden in dict.fromkeys((r.task, r.cell, r.hidden) for r in runs):
        group = [r for r in runs if (r.task, r.cell, r.hidden) == (task, cell, hidden)]
        budget = max(r.wall_s for r in group if r.estimator == BASELINE)
        lines += [
            f"{slc.TASK_NAMES[task]}, {cell.upper()}-{hidden}, budget {budget:.1f} s "
            "(UORO's time for its samples):",
            "",
            "| estimator | samples | samples/s | bits/char, last 10 % | time to UORO's loss |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in group:
            reached = "—" if r.time_to_baseline is None else f"{r.time_to_baseline:.1f} s"
            lines.append(
                f"| {r.estimator} | {r.samples:,} | {r.samples_per_s:,.0f} "
                f"| {r.final_loss:.3f} | {reached} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(runs: list[Run], path: Path, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r.task, r.cell, r.hidden) for r in runs))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (task, cell, hidden) in zip(axes[0], groups):
        for r in runs:
            if (r.task, r.cell, r.hidden) != (task, cell, hidden):
                continue
            c = r.curve
            w = min(window, last_tenth(c["samples"]))
            ax.plot(c["seconds"], slc.windowed(c["samples"], c["loss"], w), label=r.estimator)
        ax.set_title(f"{slc.TASK_NAMES[task]}, {cell.upper()}-{hidden}")
        ax.set_xlabel("fit seconds")
        ax.set_ylabel("bits/char (trailing window)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--tasks", nargs="+", default=list(slc.TASKS), choices=list(slc.TASKS))
    parser.add_argument("--cells", nargs="+", default=["gru"], choices=CELLS)
    parser.add_argument("--hidden", type=int, help="hidden units (default 32; quick 8)")
    parser.add_argument("--samples", type=int, help="UORO's samples (default 1000000)")
    parser.add_argument(
        "--estimators", nargs="+", default=list(ESTIMATORS), choices=list(ESTIMATORS)
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows and curves here")
    parser.add_argument("--plot", metavar="PATH", help="draw the curves into this PNG")
    args = parser.parse_args()
    sizes = slc.QUICK if args.quick else slc.Sizes()
    if args.samples:
        sizes = slc.Sizes(samples=args.samples, chunk=sizes.chunk)
    hidden = args.hidden or (8 if args.quick else 32)
    began = time.perf_counter()
    runs = [
        run
        for task in args.tasks
        for cell in args.cells
        for run in run_network(task, cell, hidden, sizes, args.estimators)
    ]
    m = bench_step.machine()
    print(
        f"\n{m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}, core variant "
        f"{m['variant']}; float32, Adam, one stream, the task's lr and init\n"
    )
    print(markdown(runs))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": m, "runs": [asdict(r) for r in runs]}))
    if args.plot:
        plot(runs, Path(args.plot), sizes.window)
    print(f"done in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
