"""Many streams, one model: several streams of the paper's distant-brackets task learned
by one `uoro.Learner(streams=B)`.

Each stream is its own distant-brackets text (a different seed); every stream misses a
random share of the ticks (``--gaps``), as keyed streams in a pipeline do, and the mask
says which streams have a character at each tick. The learner keeps one recurrent state
per stream and updates the shared parameters once per tick with the gradient of the
tick's mean loss. Every ``--report`` ticks the script prints the bits per character of
the predictions just made; at the end it compares with B separate single-stream
learners trained on the same characters: their loss, and the wall time of both.

    python examples/many_streams.py
    python examples/many_streams.py --streams 32 --steps 20000 --gaps 0.3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import uoro


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8, help="B, the number of streams")
    parser.add_argument("--steps", type=int, default=4000, help="ticks (samples per stream)")
    parser.add_argument("--gaps", type=float, default=0.1, help="share of ticks a stream misses")
    parser.add_argument("--report", type=int, default=1000, help="ticks between reports")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    b, ticks = args.streams, args.steps

    streams = [uoro.datasets.distant_brackets(seed=args.seed + i) for i in range(b)]
    vocab = len(streams[0].vocabulary)
    pairs = [s.pairs(ticks) for s in streams]
    xs = np.stack([x for x, _ in pairs], axis=1)  # (T, B): one column per stream
    ys = np.stack([y for _, y in pairs], axis=1)
    mask = np.random.default_rng(args.seed).random((ticks, b)) >= args.gaps
    print(
        f"{b} streams of distant brackets, {ticks:,} ticks, {args.gaps:.0%} of ticks "
        f"missing per stream; GRU-{args.hidden}, UORO + Adam, lr={args.lr}"
    )

    options = dict(hidden_size=args.hidden, lr=args.lr, seed=args.seed)
    shared = uoro.Learner("gru", vocab, streams=b, **options)
    losses = np.empty((ticks, b))
    elapsed = 0.0
    for start in range(0, ticks, args.report):
        end = min(start + args.report, ticks)
        began = time.perf_counter()
        losses[start:end] = shared.fit(xs[start:end], ys[start:end], mask[start:end])
        elapsed += time.perf_counter() - began
        chunk = losses[start:end][mask[start:end]]  # NaN where a stream had no character
        print(f"tick {end:>8,}  bits/char {uoro.to_bits(chunk.mean()):.3f}")
    learned = int(mask.sum())

    # The same characters, one learner per stream (each sees only its own ticks).
    separate = [uoro.Learner("gru", vocab, **options) for _ in range(b)]
    separate_losses = np.full((ticks, b), np.nan)
    separate_elapsed = 0.0
    for i, learner in enumerate(separate):
        present = np.flatnonzero(mask[:, i])
        began = time.perf_counter()
        separate_losses[present, i] = learner.fit(xs[present, i], ys[present, i])
        separate_elapsed += time.perf_counter() - began

    tail = slice(max(0, ticks - args.report), ticks)
    one = uoro.to_bits(np.nanmean(losses[tail]))
    many = uoro.to_bits(np.nanmean(separate_losses[tail]))
    print(
        f"final: one model over {b} streams: {one:.3f} bits/char over the last "
        f"{tail.stop - tail.start:,} ticks, {learned / elapsed:,.0f} samples/s"
    )
    print(
        f"       {b} separate learners:   {many:.3f} bits/char, "
        f"{learned / separate_elapsed:,.0f} samples/s"
    )


if __name__ == "__main__":
    main()
