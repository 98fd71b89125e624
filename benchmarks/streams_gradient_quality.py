"""Gradient quality as the number of streams B grows: how close each online estimator's
per-tick gradient of the tick's mean loss is to the exact one, and what a sample costs.

With ``streams=B`` a learner updates θ once per tick with the gradient of the mean loss
over its B streams. For each task (aⁿbⁿ(1, 32), distant brackets (1, 5, 10)) and each B,
B independently seeded copies of the task's stream (seeds 0, 1, ..., B − 1; one per
column, so the streams of a smaller B are those of a larger one) feed an untrained
network (float64; GRU-32 by default) whose parameters and streams are the same for every
estimator: exact RTRL over the B streams is the reference, and every estimator runs in
lockstep with it through `gradients` (the parameters never move), from the zero state,
its gradient of the cell's parameters (the readout's is exact for all) compared with
RTRL's at every tick after a burn-in (128 ticks by default, run through `gradients` too)
during which every estimator's memory fills up from empty:

  - `cosine`:    mean over the scored ticks of cos(g, g_exact);
  - `rel_error`: mean over the scored ticks of ‖g − g_exact‖ / ‖g_exact‖ (and
    `rel_error_median`); `exact_norm`: the mean ‖g_exact‖;
  - `cosine_full`: the cosine over all of θ, the readout's exact gradient included.

The `rtrl` row is a second, independent RTRL learner against the reference: cosine 1 and
error 0 check the comparison (same θ, same streams, ticks paired). UORO's random signs
come from the learner's seed; with ``--seeds K`` every UORO row is the mean over K seeds
(θ copied from the reference, as a seed also picks the initial θ).

Cost: µs per sample inside `fit` (float32, Adam: what a user runs) for each estimator and
B, on the task's B streams: µs per tick divided by B, best of a few short timed runs of a
fresh learner, each first fed a few ticks untimed (as in bench_streams.py).

Prints, per task, a markdown table (rows: estimator; columns: the cosine at each B, then
µs per sample at each B) and the relative errors, after the machine line; ``--json PATH``
also writes the rows and the machine.

    python benchmarks/streams_gradient_quality.py [--quick] [--json PATH] [--cell gru]
        [--hidden 32] [--streams 1 4 16 64] [--ticks 512] [--burn-in 128] [--seeds K]
        [--tasks anbn brackets]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# NumPy's BLAS threads spin after each call and would share the cores with the learner.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import uoro  # noqa: E402
from uoro import experiments  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step  # noqa: E402
from gradient_quality import agreement  # noqa: E402

REFERENCE = "rtrl"
# UORO rows with G = 1 treat the B streams as one system; "G=B" gives every stream its
# own estimate (stream_groups, a value "B" or "B/k" resolved per B by `for_streams`).
ESTIMATORS: dict[str, dict] = {
    "uoro r=1": {"algorithm": "uoro", "stream_groups": 1},
    "uoro r=4": {"algorithm": "uoro", "rank": 4, "stream_groups": 1},
    "uoro r=16": {"algorithm": "uoro", "rank": 16, "stream_groups": 1},
    "uoro G=B/4": {"algorithm": "uoro", "stream_groups": "B/4"},
    "uoro G=B": {"algorithm": "uoro", "stream_groups": "B"},
    "uoro G=B r=2": {"algorithm": "uoro", "stream_groups": "B", "rank": 2},
    "snap1": {"algorithm": "snap1"},
    "tbptt T=4": {"algorithm": "tbptt", "truncation": 4},
    "tbptt T=16": {"algorithm": "tbptt", "truncation": 16},
    REFERENCE: {"algorithm": "rtrl"},  # against the reference: the sanity row
}
TASKS = {
    "anbn": lambda seed: uoro.datasets.anbn(**experiments.ANBN, seed=seed),
    "brackets": lambda seed: uoro.datasets.distant_brackets(**experiments.BRACKETS, seed=seed),
}
TASK_NAMES = {"anbn": "aⁿbⁿ(1, 32)", "brackets": "distant brackets (1, 5, 10)"}
CELLS = ("rnn", "gru", "lstm")  # SnAp-1 and truncated BPTT apply to all three
STREAMS = (1, 4, 16, 64)
WARM_TICKS = 8  # ticks a timed learner runs untimed first


@dataclass(frozen=True)
class Sizes:
    burn_in: int = 128  # ticks run, not scored, while the estimators' memories fill
    ticks: int = 512  # ticks scored after the burn-in
    chunk: int = 128  # ticks per `gradients` call (bounds the gradients held at once)
    seeds: int = 1  # UORO sign seeds averaged over
    timing_budget_s: float = 0.2  # per timed `fit`
    timing_repeats: int = 3  # the best kept


QUICK = Sizes(burn_in=16, ticks=32, chunk=16, timing_budget_s=0.01, timing_repeats=1)
QUICK_HIDDEN, QUICK_STREAMS = 8, (1, 4)


def stream_pairs(task: str, streams: int, ticks: int) -> tuple[np.ndarray, np.ndarray]:
    """(xs, ys) of shape (ticks, streams): column b is the task's stream of seed b."""
    columns = [TASKS[task](b).pairs(ticks) for b in range(streams)]
    return (
        np.stack([xs for xs, _ in columns], axis=1),
        np.stack([ys for _, ys in columns], axis=1),
    )


def chunk_for(xs: np.ndarray, streams: int) -> np.ndarray:
    """A (T, B) chunk as the learner takes it: (T,) for one stream."""
    return xs[:, 0] if streams == 1 else xs


def network_for(task: str, cell: str, hidden: int) -> dict:
    return {"cell": cell, "input_size": len(TASKS[task](0).vocabulary), "hidden_size": hidden}


def for_streams(options: dict, streams: int) -> dict:
    """The options with a value "B" replaced by the number of streams and "B/k" by
    max(1, B // k)."""

    def value(v):
        if isinstance(v, str) and (v == "B" or v.startswith("B/")):
            return streams if v == "B" else max(1, streams // int(v[2:]))
        return v

    return {k: value(v) for k, v in options.items()}


def frozen(
    network: dict, options: dict, streams: int, seed: int = 0, theta: np.ndarray | None = None
) -> uoro.Learner:
    """A float64 learner over `streams` streams that never moves its parameters (θ from
    `theta` if given, else the seed's initial θ)."""
    learner = uoro.Learner(
        **network,
        **for_streams(options, streams),
        optimizer="sgd",
        lr=0.0,
        dtype="float64",
        seed=seed,
        streams=streams,
    )
    if theta is not None:
        learner.theta = theta
    return learner


def compare(
    network: dict,
    xs: np.ndarray,
    ys: np.ndarray,
    sizes: Sizes,
    estimators: dict[str, dict] = ESTIMATORS,
    seed: int = 0,
) -> dict[str, dict]:
    """Every estimator against exact RTRL over the (T, B) chunk xs, ys, T = burn-in +
    scored ticks, from the seed's initial θ and the zero state; per estimator its mean
    cosine (cell parameters, and all of θ), relative error (mean, median), the mean norm
    of the exact gradient and the number of gradients compared."""
    streams = xs.shape[1]
    reference = frozen(network, {"algorithm": "rtrl"}, streams, seed)
    theta = reference.theta
    n_cell = reference._core.n_cell_params
    runners = {
        name: [
            frozen(network, options, streams, seed + k, theta)
            for k in range(sizes.seeds if options["algorithm"] == "uoro" else 1)
        ]
        for name, options in estimators.items()
    }
    for group in runners.values():
        for runner in group:  # the seed picks θ: the same for every estimator
            assert np.array_equal(runner.theta, theta)
    scores: dict[str, dict[str, list]] = {
        name: {"cosine": [], "cosine_full": [], "rel_error": []} for name in estimators
    }
    norms = []
    for start in range(0, len(xs), sizes.chunk):
        chunk_xs = chunk_for(xs[start : start + sizes.chunk], streams)
        chunk_ys = chunk_for(ys[start : start + sizes.chunk], streams)
        exact = reference.gradients(chunk_xs, chunk_ys)[1]
        scored = start + np.arange(len(exact)) >= sizes.burn_in
        exact = exact[scored]
        norms.append(np.linalg.norm(exact[:, :n_cell], axis=1))
        for name, group in runners.items():
            for runner in group:  # every runner advances through the burn-in too
                estimate = runner.gradients(chunk_xs, chunk_ys)[1][scored]
                cosine, error = agreement(estimate[:, :n_cell], exact[:, :n_cell])
                scores[name]["cosine"].append(cosine)
                scores[name]["rel_error"].append(error)
                scores[name]["cosine_full"].append(agreement(estimate, exact)[0])
    exact_norm = float(np.mean(np.concatenate(norms)))
    results = {}
    for name, score in scores.items():
        values = {k: np.concatenate(v) for k, v in score.items()}
        results[name] = {
            "cosine": float(np.mean(values["cosine"])),
            "cosine_full": float(np.mean(values["cosine_full"])),
            "rel_error": float(np.mean(values["rel_error"])),
            # A tick whose exact gradient nearly vanishes can dominate the mean.
            "rel_error_median": float(np.median(values["rel_error"])),
            "exact_norm": exact_norm,
            "compared": int(values["cosine"].size),
            "seeds": len(runners[name]),
        }
    return results


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def us_per_sample(
    task: str, network: dict, options: dict, streams: int, budget_s: float, repeats: int
) -> float:
    """µs per sample in `fit` (float32, Adam) over the task's B streams: a tick's µs / B,
    the best of `repeats` timed runs of about `budget_s` each, every one a fresh learner
    first fed WARM_TICKS ticks untimed."""

    def fresh() -> uoro.Learner:
        learner = uoro.Learner(
            **network,
            **for_streams(options, streams),
            lr=1e-3,
            seed=0,
            on_divergence="skip",
            streams=streams,
        )
        learner.fit(chunk_for(warm_xs, streams), chunk_for(warm_ys, streams))
        return learner

    warm_xs, warm_ys = stream_pairs(task, streams, WARM_TICKS)
    probe = fresh()
    probe_s = seconds(lambda: probe.fit(chunk_for(warm_xs, streams), chunk_for(warm_ys, streams)))
    ticks = int(np.clip(budget_s / (probe_s / WARM_TICKS), 16, 20_000))
    xs, ys = stream_pairs(task, streams, WARM_TICKS + ticks)
    xs, ys = chunk_for(xs[WARM_TICKS:], streams), chunk_for(ys[WARM_TICKS:], streams)
    best = np.inf
    for _ in range(repeats):
        learner = fresh()
        best = min(best, seconds(lambda m=learner: m.fit(xs, ys)))
    return float(best / (ticks * streams) * 1e6)


def run(
    tasks: list[str],
    cell: str,
    hidden: int,
    streams: tuple[int, ...],
    sizes: Sizes,
    estimators: dict[str, dict] = ESTIMATORS,
    timed: bool = True,
) -> list[dict]:
    """One row per task, B and estimator: `compare`'s columns and, if `timed`,
    `us_per_sample` (else NaN)."""
    rows = []
    for task in tasks:
        network = network_for(task, cell, hidden)
        for b in streams:
            began = time.perf_counter()
            xs, ys = stream_pairs(task, b, sizes.burn_in + sizes.ticks)
            results = compare(network, xs, ys, sizes, estimators)
            compared_s = time.perf_counter() - began
            budget = sizes.timing_budget_s, sizes.timing_repeats
            for name, result in results.items():
                cost = float("nan")
                if timed:
                    cost = us_per_sample(task, network, estimators[name], b, *budget)
                rows.append(
                    {"task": task, "cell": cell, "hidden": hidden, "streams": b}
                    | {"estimator": name, **result, "us_per_sample": cost}
                )
            print(
                f"  {task} {cell.upper()}-{hidden} B={b}: compared in {compared_s:.1f} s, "
                f"timed in {time.perf_counter() - began - compared_s:.1f} s",
                flush=True,
            )
    return rows


def lookup(rows: list[dict], task: str) -> tuple[list[str], list[int], dict[tuple, dict]]:
    mine = [r for r in rows if r["task"] == task]
    estimators = list(dict.fromkeys(r["estimator"] for r in mine))
    streams = list(dict.fromkeys(r["streams"] for r in mine))
    return estimators, streams, {(r["estimator"], r["streams"]): r for r in mine}


def table(rows: list[dict], task: str) -> str:
    """Rows: estimator; columns: the cosine at each B, then µs per sample at each B."""
    estimators, streams, by = lookup(rows, task)
    lines = [
        "| estimator | "
        + " | ".join(f"cosine B={b}" for b in streams)
        + " | "
        + " | ".join(f"µs/sample B={b}" for b in streams)
        + " |",
        "|---|" + "---:|" * (2 * len(streams)),
    ]
    for name in estimators:
        cosines = [f"{by[name, b]['cosine']:.3f}" for b in streams]
        costs = [
            "–" if np.isnan(by[name, b]["us_per_sample"]) else f"{by[name, b]['us_per_sample']:.2f}"
            for b in streams
        ]
        lines.append(f"| {name} | " + " | ".join(cosines + costs) + " |")
    return "\n".join(lines)


def error_table(rows: list[dict], task: str) -> str:
    """Rows: estimator; columns: the relative error's mean (median) at each B."""
    estimators, streams, by = lookup(rows, task)
    lines = [
        "| estimator | " + " | ".join(f"rel. error B={b}" for b in streams) + " |",
        "|---|" + "---:|" * len(streams),
    ]
    for name in estimators:
        cells = [
            f"{by[name, b]['rel_error']:.3g} ({by[name, b]['rel_error_median']:.3g})"
            for b in streams
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    norms = ", ".join(f"B={b}: {by[estimators[0], b]['exact_norm']:.3g}" for b in streams)
    return "\n".join(lines) + f"\n\nMean ‖exact gradient‖ of the cell: {norms}."


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the machine here")
    parser.add_argument("--cell", default="gru", choices=CELLS)
    parser.add_argument("--hidden", type=positive, help="hidden units (default 32; quick 8)")
    parser.add_argument(
        "--streams", nargs="+", type=positive, help="the B (default 1 4 16 64; quick 1 4)"
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--ticks", type=positive, help="scored ticks (default 512)")
    parser.add_argument("--burn-in", type=int, help="ticks before scoring (default 128)")
    parser.add_argument("--seeds", type=positive, help="UORO sign seeds averaged (default 1)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    for field, value in (("ticks", args.ticks), ("burn_in", args.burn_in), ("seeds", args.seeds)):
        if value is not None:
            sizes = replace(sizes, **{field: value})
    if sizes.burn_in < 0:
        parser.error("--burn-in must be >= 0")
    hidden = args.hidden or (QUICK_HIDDEN if args.quick else 32)
    streams = tuple(args.streams or (QUICK_STREAMS if args.quick else STREAMS))
    began = time.perf_counter()
    rows = run(args.tasks, args.cell, hidden, streams, sizes)
    m = bench_step.machine()
    print(
        f"\n{m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}, core variant "
        f"{m['variant']}; untrained {args.cell.upper()}-{hidden}, cosine of the cell's "
        f"gradient of the tick's mean loss with exact RTRL's over the same B streams, float64, "
        f"mean over {sizes.ticks} ticks after a {sizes.burn_in}-tick burn-in"
        + (f" (UORO: and over {sizes.seeds} sign seeds)" if sizes.seeds > 1 else "")
        + f"; µs per sample in `fit` (float32, Adam) best of {sizes.timing_repeats}, "
        "one thread"
    )
    for task in args.tasks:
        print(f"\n{TASK_NAMES[task]}:\n\n{table(rows, task)}\n\n{error_table(rows, task)}")
    if args.json:
        with open(args.json, "w") as f:
            settings = {"cell": args.cell, "hidden": hidden, "streams": list(streams)}
            settings |= {"tasks": args.tasks, **asdict(sizes)}
            json.dump({"machine": m, "settings": settings, "rows": rows}, f, indent=2)
    print(f"\nDone in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
