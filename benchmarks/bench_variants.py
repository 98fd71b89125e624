"""The instruction-set variants of the core side by side, in one run.

For every variant this CPU can run (see `uoro._core.VARIANTS`), the per-sample time of a
learning step inside `fit` (float32, UORO + Adam, a 13-symbol one-hot stream) for each
model, one stream and many. Each variant runs in its own process (`UORO_CPU` picks it at
import); the variants take turns, repeat by repeat, so a slow spell of the machine falls
on all of them, and every time is the best over the repeats. The speed-up is the AVX2
variant's time over each one's.

    python benchmarks/bench_variants.py [--quick] [--repeats N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import uoro

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import VOCAB, machine  # noqa: E402

# (cell, hidden, streams)
CONFIGS = (
    ("rnn", 64, 1),
    ("gru", 64, 1),
    ("lstm", 64, 1),
    ("gru", 256, 1),
    ("gru", 64, 16),
    ("gru", 64, 64),
)

# One repeat of every configuration in the variant UORO_CPU names: µs per sample.
TIMER = """
import json, sys, time
import numpy as np
import uoro
configs, samples, vocab = json.loads(sys.argv[1])
rng = np.random.default_rng(1)
out = {"variant": uoro._core.VARIANT, "us": []}
for cell, hidden, streams in configs:
    ticks = max(8, samples // streams)
    data = rng.integers(0, vocab, (ticks + 1, streams))
    xs, ys = (data[:-1], data[1:]) if streams > 1 else (data[:-1, 0], data[1:, 0])
    learner = uoro.Learner(cell, vocab, hidden, lr=1e-3, seed=0, on_divergence="skip",
                           streams=streams)
    learner.fit(xs[:8], ys[:8])  # warm up
    start = time.perf_counter()
    learner.fit(xs, ys)
    out["us"].append((time.perf_counter() - start) / (ticks * streams) * 1e6)
print(json.dumps(out))
"""


def one_repeat(variant: str, configs, samples: int) -> list[float]:
    result = subprocess.run(
        [sys.executable, "-c", TIMER, json.dumps([configs, samples, VOCAB])],
        env={**os.environ, "UORO_CPU": variant, "OPENBLAS_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(result.stdout)
    assert out["variant"] == variant, out
    return out["us"]


def measure(configs, samples: int, repeats: int) -> dict[str, list[float]]:
    """The best µs per sample of every configuration, per variant."""
    best: dict[str, list[float]] = {}
    for _ in range(repeats):
        for variant in uoro._core.runnable_variants():
            times = one_repeat(variant, configs, samples)
            best[variant] = [min(a, b) for a, b in zip(best.get(variant, times), times)]
    return best


def table(configs, best: dict[str, list[float]]) -> str:
    variants = list(best)
    reference = "avx2" if "avx2" in best else variants[-1]
    head = "| model | B | " + " | ".join(f"{v} µs/sample" for v in variants)
    head += (
        " | " + " | ".join(f"{v} speed vs {reference}" for v in variants if v != reference) + " |"
    )
    lines = [head, "|---|---:|" + "---:|" * (2 * len(variants) - 1)]
    for i, (cell, hidden, streams) in enumerate(configs):
        times = " | ".join(f"{best[v][i]:.2f}" for v in variants)
        ratios = " | ".join(
            f"{best[reference][i] / best[v][i]:.2f}×" for v in variants if v != reference
        )
        lines.append(f"| {cell.upper()}-{hidden} | {streams} | {times} | {ratios} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke test")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    configs = CONFIGS[:2] if args.quick else CONFIGS
    samples = 512 if args.quick else 20_000
    best = measure(configs, samples, args.repeats)
    info = machine()
    print(
        f"{info['cpu']}, {info['cores']} cores, {info['system']}, Python {info['python']}; "
        f"best of {args.repeats} repeats, one thread, float32, UORO + Adam in `fit`, "
        f"13-symbol one-hot input\n"
    )
    print(table(configs, best))
    if args.json:
        rows = [
            {"cell": c, "hidden": h, "streams": b, **{f"{v}_us": best[v][i] for v in best}}
            for i, (c, h, b) in enumerate(configs)
        ]
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
