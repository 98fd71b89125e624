"""Why the default many-streams UORO's per-tick cosine dips at small B: its gradient of a
tick's mean loss split into what the streams share and what each stream's estimate adds.

The default for ``streams=B`` keeps one independent UORO estimate per stream
(``stream_groups=B``), so its gradient of the tick's mean loss is ĝ = mean_b ĝ_b, with
ĝ_b the estimate of stream b's own gradient g_b, and ḡ = mean_b g_b the exact one. Here
each stream runs in its own one-stream learner from the same θ (float64, untrained, the
parameters never move; streams of seeds 0, 1, ..., as in streams_gradient_quality.py):
exact RTRL gives g_b, UORO with sign seed 1000 + b gives ĝ_b: the estimator the
many-streams learner runs on each stream, with other draws of its signs. After a
burn-in, per B (the first B streams) and summed over the scored ticks t, for the cell's
parameters:

  - `shared`: Σ_t ‖ḡ‖² / Σ_t mean_b ‖g_b‖², the part of one stream's gradient the B
    streams agree on: 1/B if their gradients were uncorrelated, 1 if equal;
  - `noise`:  Σ_t mean_b ‖ĝ_b − g_b‖² / Σ_t mean_b ‖g_b‖², one estimate's noise against
    its signal (independent of B: each stream's estimate is its own);
  - `snr`:    Σ_t ‖ḡ‖² / Σ_t ‖ĝ − ḡ‖², the mean gradient against the averaged noise;
  - `cosine_mean`, `cosine_median`: over the ticks of cos(ĝ, ḡ) (the former is what
    streams_gradient_quality.py reports);
  - `cosine_pooled`: Σ_t ĝ·ḡ / √(Σ_t ‖ĝ‖² Σ_t ‖ḡ‖²), the ratio whose square is the
    share of ĝ's energy that points along ḡ over the run: what an SGD step's expected
    progress E[ĝ·ḡ] − (η L / 2) E‖ĝ‖² depends on.

With uncorrelated noises, snr ≈ B · shared / noise = (1 + (B − 1) ρ) / noise for a mean
correlation ρ between streams' gradients (derivation in docs/concepts.md): it grows with
B whenever ρ ≥ 0.

Prints the machine line, then a markdown table per task (rows: B).

    python benchmarks/streams_noise_split.py [--quick] [--cell gru] [--hidden 32]
        [--streams 1 2 4 8 16 32 64] [--ticks 256] [--burn-in 128] [--tasks anbn brackets]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# NumPy's BLAS threads spin after each call and would share the cores with the learner.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step  # noqa: E402
from streams_gradient_quality import (  # noqa: E402
    CELLS,
    TASK_NAMES,
    TASKS,
    frozen,
    network_for,
    positive,
    stream_pairs,
)

STREAMS = (1, 2, 4, 8, 16, 32, 64)
SIGN_SEED = 1000  # stream b's UORO signs come from seed SIGN_SEED + b


def per_stream_gradients(
    task: str, cell: str, hidden: int, streams: int, burn_in: int, ticks: int
) -> tuple[np.ndarray, np.ndarray]:
    """(exact, estimate), each (ticks, streams, cell parameters): per stream b, one-stream
    RTRL's and UORO's gradients of its own loss at every scored tick, all from θ of seed 0."""
    xs, ys = stream_pairs(task, streams, burn_in + ticks)
    network = network_for(task, cell, hidden)
    reference = frozen(network, {"algorithm": "rtrl"}, 1, 0)
    theta, n_cell = reference.theta, reference._core.n_cell_params
    exact, estimate = [], []
    for b in range(streams):
        rtrl = frozen(network, {"algorithm": "rtrl"}, 1, 0, theta)
        uoro = frozen(network, {"algorithm": "uoro"}, 1, SIGN_SEED + b, theta)
        exact.append(rtrl.gradients(xs[:, b], ys[:, b])[1][burn_in:, :n_cell])
        estimate.append(uoro.gradients(xs[:, b], ys[:, b])[1][burn_in:, :n_cell])
    return np.stack(exact, axis=1), np.stack(estimate, axis=1)


def split(exact: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """The module's quantities for the B streams of (ticks, B, P) gradients."""
    mean_exact, mean_estimate = exact.mean(axis=1), estimate.mean(axis=1)
    one_stream = (exact**2).sum(axis=-1).mean(axis=1).sum()  # Σ_t mean_b ‖g_b‖²
    signal = (mean_exact**2).sum()
    dot = (mean_exact * mean_estimate).sum(axis=-1)
    cosine = dot / (np.linalg.norm(mean_exact, axis=-1) * np.linalg.norm(mean_estimate, axis=-1))
    return {
        "shared": float(signal / one_stream),
        "noise": float(((estimate - exact) ** 2).sum(axis=-1).mean(axis=1).sum() / one_stream),
        "snr": float(signal / ((mean_estimate - mean_exact) ** 2).sum()),
        "cosine_mean": float(cosine.mean()),
        "cosine_median": float(np.median(cosine)),
        "cosine_pooled": float(dot.sum() / np.sqrt((mean_estimate**2).sum() * signal)),
    }


def run(
    tasks: list[str], cell: str, hidden: int, streams: tuple[int, ...], burn_in: int, ticks: int
) -> list[dict]:
    rows = []
    for task in tasks:
        exact, estimate = per_stream_gradients(task, cell, hidden, max(streams), burn_in, ticks)
        for b in streams:
            values = split(exact[:, :b], estimate[:, :b])
            rows.append({"task": task, "cell": cell, "hidden": hidden, "streams": b, **values})
    return rows


def table(rows: list[dict], task: str) -> str:
    lines = [
        "| B | shared ‖ḡ‖² / ‖g_b‖² | noise ‖ĝ_b − g_b‖² / ‖g_b‖² | SNR | cosine, mean of ticks "
        "| median | pooled |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["task"] == task:
            lines.append(
                f"| {r['streams']} | {r['shared']:.3f} | {r['noise']:.2f} | {r['snr']:.3f} "
                f"| {r['cosine_mean']:.3f} | {r['cosine_median']:.3f} | {r['cosine_pooled']:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--cell", default="gru", choices=CELLS)
    parser.add_argument("--hidden", type=positive, help="hidden units (default 32; quick 8)")
    parser.add_argument("--streams", nargs="+", type=positive, help="the B (default 1 2 4 ... 64)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--ticks", type=positive, help="scored ticks (default 256; quick 16)")
    parser.add_argument("--burn-in", type=int, help="ticks before scoring (default 128; quick 8)")
    args = parser.parse_args()
    hidden = args.hidden or (8 if args.quick else 32)
    streams = tuple(args.streams or ((1, 2, 4) if args.quick else STREAMS))
    ticks = args.ticks or (16 if args.quick else 256)
    burn_in = args.burn_in if args.burn_in is not None else (8 if args.quick else 128)
    if burn_in < 0:
        parser.error("--burn-in must be >= 0")
    began = time.perf_counter()
    rows = run(args.tasks, args.cell, hidden, streams, burn_in, ticks)
    m = bench_step.machine()
    print(
        f"\n{m['cpu']}, {m['cores']} cores, Python {m['python']}; untrained "
        f"{args.cell.upper()}-{hidden}, float64, {ticks} ticks after a {burn_in}-tick burn-in; "
        "one independent UORO estimate per stream (the default for streams=B)"
    )
    for task in args.tasks:
        print(f"\n{TASK_NAMES[task]}:\n\n{table(rows, task)}")
    print(f"\nDone in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
