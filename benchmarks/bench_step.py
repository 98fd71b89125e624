"""Time per learning step, next to the forward-only step of the same cell, in one run.

For every cell, hidden size, algorithm and dtype this measures, per sample:
  - `fit`:     a learning step inside one chunked call (10⁴ samples by default);
  - `step`:    one `Learner.step(x, y)` call from Python, everything included;
  - `forward`: the forward-only step (cell + readout, no learning) inside a chunked
               call (`Learner.evaluate`), the floor a learning step is compared with.
Each is the best of several interleaved repeats (these machines are noisy; the ratio of
two numbers measured side by side is what to trust). Writes a markdown table to stdout
and, with --json, the numbers and the machine they ran on.

    python benchmarks/bench_step.py [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

import uoro

VOCAB = 13  # the 13-symbol one-hot stream of the distant-brackets task


def best_time_per_sample(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def measure(cell: str, hidden: int, algorithm: str, dtype: str, n: int, repeats: int, rank: int = 1):
    options = dict(algorithm=algorithm, rank=rank, dtype=dtype, lr=1e-3, seed=0)
    learner = uoro.Learner(cell, VOCAB, hidden, **options)
    tokens = np.random.default_rng(0).integers(0, VOCAB, n + 1)
    xs, ys = tokens[:-1], tokens[1:]
    pairs = list(zip(xs.tolist(), ys.tolist()))
    step = learner.step

    def python_loop():
        for x, y in pairs:
            step(x, y)

    learner.fit(xs, ys)  # warm caches and reach a typical regime
    fit_us = best_time_per_sample(lambda: learner.fit(xs, ys), n, repeats)
    step_us = best_time_per_sample(python_loop, n, repeats)
    forward_us = best_time_per_sample(lambda: learner.evaluate(xs, ys), n, repeats)
    return {
        "cell": cell, "hidden": hidden, "algorithm": algorithm if rank == 1 else f"{algorithm}-r{rank}",
        "dtype": dtype, "params": learner.n_params, "fit_us": fit_us, "step_us": step_us,
        "forward_us": forward_us, "fit_over_forward": fit_us / forward_us,
        "samples_per_s_fit": 1e6 / fit_us, "samples_per_s_step": 1e6 / step_us,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| cell | hidden | algorithm | dtype | µs/sample in `fit` | µs per `step` call "
        "| µs forward-only | fit / forward |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['cell']} | {r['hidden']} | {r['algorithm']} | {r['dtype']} | {r['fit_us']:.2f} "
            f"| {r['step_us']:.2f} | {r['forward_us']:.2f} | {r['fit_over_forward']:.1f}× |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples and repeats (a smoke run)")
    parser.add_argument("--json", help="also write the results and machine description here")
    parser.add_argument("--dtypes", default="float32,float64")
    args = parser.parse_args()
    n, repeats = (2_000, 2) if args.quick else (10_000, 5)
    rows = []
    for dtype in args.dtypes.split(","):
        for cell in ("rnn", "gru", "lstm"):
            for hidden in (64, 256):
                rows.append(measure(cell, hidden, "uoro", dtype, n, repeats))
    machine = {
        "machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version(),
        "system": platform.platform(), "uoro": uoro.__version__, "samples": n, "repeats": repeats,
    }
    print(table(rows))
    print(f"\n{machine['system']}, {machine['machine']}, Python {machine['python']}, "
          f"best of {repeats} × {n} samples")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
