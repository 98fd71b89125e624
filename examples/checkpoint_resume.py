"""Train, save a checkpoint, load it, continue: bit-identical to never stopping.

A GRU learns the paper's aⁿbⁿ stream online. Halfway, the script saves the learner to a
``.npz`` checkpoint (parameters, recurrent state, UORO's s̃ and θ̃, Adam's moments, step
counters and the random generator: everything), loads it into a new learner, and lets
both the original and the restored learner read the rest of the stream. Their losses
and final parameters agree bit for bit, because the checkpoint holds the whole learner,
including the random signs UORO will draw next. Exit status 1 if they do not.

    python examples/checkpoint_resume.py
    python examples/checkpoint_resume.py --steps 200000 --checkpoint run.npz
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

import uoro


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=40_000, help="samples in all; the checkpoint is taken halfway"
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="where to write the checkpoint (default: a temporary file)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps < 20:
        parser.error("--steps must be at least 20")

    stream = uoro.datasets.anbn(k=1, l=32, seed=args.seed)
    xs, ys = stream.pairs(args.steps)
    half = args.steps // 2

    learner = uoro.Learner(
        "gru", input_size=3, hidden_size=32, lr=3e-3, lr_decay=0.03, seed=args.seed
    )
    first = learner.fit(xs[:half], ys[:half])
    print(
        f"trained {half:,} steps: {first[-min(half, 5000) :].mean() / math.log(2):.3f} "
        "bits/char on the most recent characters"
    )

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(args.checkpoint or Path(scratch) / "learner.npz")
        learner.save(path)
        print(f"saved checkpoint: {path.stat().st_size:,} bytes")
        restored = uoro.load(path)
    print(f"loaded: {restored!r} at step {restored.steps:,}")

    # Both continue on the rest of the stream, one sample at a time for the first few
    # (showing the per-step losses), then in one chunk.
    print(f"{'step':>8}  {'original':>10}  {'restored':>10}")
    identical = True
    for t in range(half, min(half + 5, args.steps)):
        a = learner.step(int(xs[t]), int(ys[t]))
        b = restored.step(int(xs[t]), int(ys[t]))
        identical &= a == b
        print(f"{t + 1:>8,}  {a:>10.6f}  {b:>10.6f}")
    rest = slice(min(half + 5, args.steps), args.steps)
    a_losses, b_losses = learner.fit(xs[rest], ys[rest]), restored.fit(xs[rest], ys[rest])
    identical &= bool(np.array_equal(a_losses, b_losses))
    identical &= bool(np.array_equal(learner.theta, restored.theta))
    identical &= bool(np.array_equal(learner.state, restored.state))
    print(
        f"continued to step {args.steps:,}: "
        f"{a_losses[-min(len(a_losses), 5000) :].mean() / math.log(2):.3f} bits/char recently"
    )
    print(f"bit-identical continuation: {identical}")
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
