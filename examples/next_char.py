"""Online next-character prediction on a text file.

A GRU reads the text one character at a time (looping over it), predicts the next
character, learns from the answer and moves on. Every ``--report`` characters it prints
the average loss of the characters just read, in bits per character, beside the unigram
entropy of the text: the best a model without memory could do. The default text is
``sample.txt`` beside this script.

The default estimator is memory-16 UORO: exact backpropagation inside windows of 16
characters and UORO's unbiased estimate for everything older. ``--memory 1`` gives plain
UORO, whose noisier estimate learns a 37-symbol text markedly slower at the same learning
rate; ``--algorithm tbptt`` gives truncated BPTT for comparison.

    python examples/next_char.py                     # the sample text
    python examples/next_char.py my_text.txt --steps 500000 --hidden 128
    python examples/next_char.py --memory 1 --rank 4 # plain UORO, averaging 4 estimates
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path

import numpy as np

import uoro

SAMPLE = Path(__file__).resolve().parent / "sample.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "text",
        nargs="?",
        default=str(SAMPLE),
        help="a UTF-8 text file (default: the sample text beside this script)",
    )
    parser.add_argument("--steps", type=int, default=100_000, help="characters to read")
    parser.add_argument(
        "--report", type=int, default=10_000, help="print the loss every this many characters"
    )
    parser.add_argument("--cell", default="gru", choices=["rnn", "gru", "lstm"])
    parser.add_argument("--hidden", type=int, default=64, help="hidden units")
    parser.add_argument(
        "--algorithm",
        default="uoro",
        choices=["uoro", "tbptt"],
        help="gradient estimator (tbptt uses --truncation)",
    )
    parser.add_argument(
        "--memory", type=int, default=16, help="memory-T UORO's window (1: plain UORO)"
    )
    parser.add_argument("--rank", type=int, default=1, help="UORO's rank")
    parser.add_argument("--truncation", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--lr-decay", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    stream = uoro.datasets.text_stream(args.text)
    vocabulary = stream.vocabulary
    text = Path(args.text).read_text(encoding="utf-8")
    counts = np.array(list(Counter(text).values()), dtype=float)
    unigram = float(-(counts / counts.sum() * np.log2(counts / counts.sum())).sum())
    print(
        f"text: {Path(args.text).name}, {len(text)} characters, "
        f"{len(vocabulary)} distinct; unigram entropy {unigram:.3f} bits/char"
    )

    if args.algorithm == "uoro":
        estimator = dict(memory=args.memory, rank=args.rank)
    else:
        estimator = dict(truncation=args.truncation)
    learner = uoro.Learner(
        args.cell,
        input_size=len(vocabulary),
        hidden_size=args.hidden,
        algorithm=args.algorithm,
        lr=args.lr,
        lr_decay=args.lr_decay,
        seed=args.seed,
        **estimator,
    )
    print(learner)

    done = 0
    losses = []
    while done < args.steps:
        chunk = min(args.report, args.steps - done)
        xs, ys = stream.pairs(chunk)  # ys[i] is the character after xs[i]
        loss = learner.fit(xs, ys)  # one online step per character, in one C++ call
        losses.append(loss)
        done += chunk
        print(f"step {done:>9,}  bits/char {loss.mean() / math.log(2):.3f}")

    everything = np.concatenate(losses)
    recent = everything[-min(len(everything), 10_000) :]
    print(
        f"final: {recent.mean() / math.log(2):.3f} bits/char over the last {len(recent):,} "
        f"characters ({everything.mean() / math.log(2):.3f} over all {len(everything):,}; "
        f"unigram entropy {unigram:.3f})"
    )


if __name__ == "__main__":
    main()
