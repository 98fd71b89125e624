"""Soak: every cell × algorithm at an aggressive learning rate with no decay, for a long
stream, under ``on_divergence="reset"``. Reports per run the resets (and how many of
them zeroed the state), the samples dropped and whether θ stayed finite.

The stream is a noisy sine whose period and amplitude switch between four regimes every
1,500 samples (squared error, one input); the learners have 16 hidden units, so that
exact RTRL finishes too.

    python benchmarks/soak.py [--samples 1e6] [--lr 0.1] [--json FILE]

`tests/test_soak.py` (marked slow) runs it and asserts: zero samples dropped, θ finite.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import uoro

CELLS = ("rnn", "gru", "lstm")
ALGORITHMS: dict[str, dict[str, object]] = {
    "uoro": {"algorithm": "uoro"},
    "uoro r=2": {"algorithm": "uoro", "rank": 2},
    "uoro memory=4": {"algorithm": "uoro", "memory": 4},
    "rtrl": {"algorithm": "rtrl"},
    "tbptt T=4": {"algorithm": "tbptt", "truncation": 4},
    "tbptt_chunk T=4": {"algorithm": "tbptt_chunk", "truncation": 4},
}
REGIMES = [(20.0, 1.0), (8.0, 0.5), (30.0, 1.2), (12.0, 0.8)]
CHUNK = 100_000  # samples per `fit` call: the stream is made chunk by chunk


def regime_signal(
    start: int, n: int, phase: float, rng: np.random.Generator, regime: int = 1500
) -> tuple[np.ndarray, float]:
    """Samples start .. start + n of the switching sine, continuing from `phase`; returns
    them and the phase to continue from."""
    index = (np.arange(start, start + n) // regime) % len(REGIMES)
    period = np.array([p for p, _ in REGIMES])[index]
    amplitude = np.array([a for _, a in REGIMES])[index]
    phases = phase + np.cumsum(2 * np.pi / period)
    return amplitude * np.sin(phases) + 0.1 * rng.standard_normal(n), float(phases[-1])


def soak(cell: str, options: dict[str, object], samples: int, lr: float, seed: int = 0) -> dict:
    """One long run; the reset counters, drops, finiteness and the loss at the end."""
    learner = uoro.Learner(
        cell,
        1,
        16,
        1,
        loss="squared_error",
        lr=lr,
        lr_decay=0.0,
        on_divergence="reset",
        seed=seed,
        **options,  # type: ignore[arg-type]
    )
    rng = np.random.default_rng(seed)
    phase, previous = 0.0, np.zeros(1)
    finite, last_losses, last_targets = True, np.zeros(0), np.zeros(0)
    began = time.perf_counter()
    for start in range(0, samples, CHUNK):
        n = min(CHUNK, samples - start)
        chunk, phase = regime_signal(start, n, phase, rng)
        values = np.concatenate([previous, chunk]).astype(np.float32)
        previous = values[-1:].astype(np.float64)
        last_losses = learner.fit(values[:-1, None], values[1:, None])
        last_targets = values[1:]
        finite = finite and bool(np.isfinite(learner.theta).all())
    return {
        "cell": cell,
        "options": options,
        "samples": learner.samples_seen,
        "resets": learner.resets,
        "state_resets": learner.state_resets,
        "dropped": learner.skipped_steps,
        "theta_finite": finite,
        "final_loss": float(last_losses[-10_000:].mean()),
        # The same samples' loss when predicting zero, as a yardstick.
        "zero_loss": float(0.5 * (last_targets[-10_000:].astype(np.float64) ** 2).mean()),
        "seconds": time.perf_counter() - began,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=float, default=1e6)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    print(f"{int(args.samples):,} samples per run, lr {args.lr}, no decay, hidden 16, float32")
    print(
        "| cell | algorithm | resets (of which state) | dropped | θ finite "
        "| loss, last 10⁴ samples | predicting 0 |"
    )
    print("|---|---|---:|---:|---|---:|---:|")
    for cell in CELLS:
        for name, options in ALGORITHMS.items():
            row = soak(cell, options, int(args.samples), args.lr)
            row["algorithm"] = name
            rows.append(row)
            print(
                f"| {cell} | {name} | {row['resets']} ({row['state_resets']}) | "
                f"{row['dropped']} | {row['theta_finite']} | {row['final_loss']:.4f} | "
                f"{row['zero_loss']:.4f} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
