"""The River adapter inside River pipelines, scored by progressive validation.

Two streams, each scored with ``river.evaluate.progressive_val_score`` (for every sample:
predict, score, then learn), for a recurrent model from `uoro.river` and for River's own
baselines:

1. Regression: a noisy sine, seen one value at a time; predict the next value.
   ``StandardScaler | RecurrentRegressor`` against the running mean and a linear
   regression on the current value (a model without memory).
2. Classification: the characters of a repeated phrase; predict the next character.
   ``OneHotEncoder | RecurrentClassifier`` against the class prior and a logistic
   regression on the current character. After "l" comes "l", "o" or "d": only a model
   that remembers what came before can tell which.

Needs River (``pip install "uoro[river]"``).

    python examples/river_pipeline.py
    python examples/river_pipeline.py --steps 20000
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

try:
    from river import (
        dummy,
        evaluate,
        linear_model,
        metrics,
        multiclass,
        preprocessing,
        stats,
    )

    from uoro.river import RecurrentClassifier, RecurrentRegressor
except ImportError as error:
    sys.exit(f"this example needs River: {error}")

PHRASE = "hello world, "


def sine_stream(steps: int, seed: int) -> list[tuple[dict, float]]:
    rng = np.random.default_rng(seed)
    t = np.arange(steps + 1)
    values = np.sin(2 * np.pi * t / 20) + 0.1 * rng.standard_normal(steps + 1)
    return [({"value": float(values[i])}, float(values[i + 1])) for i in range(steps)]


def phrase_stream(steps: int) -> list[tuple[dict, str]]:
    text = PHRASE * (steps // len(PHRASE) + 2)
    return [({"char": text[i]}, text[i + 1]) for i in range(steps)]


def score(name: str, stream: list, model, metric) -> None:
    result = evaluate.progressive_val_score(stream, model, metric)
    print(f"  {name:<50} {result}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5_000, help="samples in each stream")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sines = sine_stream(args.steps, args.seed)
    print(f"regression: next value of a noisy sine, {args.steps:,} samples")
    score(
        "StandardScaler | RecurrentRegressor",
        sines,
        preprocessing.StandardScaler() | RecurrentRegressor(seed=args.seed),
        metrics.MAE(),
    )
    score(
        "StandardScaler | LinearRegression",
        sines,
        preprocessing.StandardScaler() | linear_model.LinearRegression(),
        metrics.MAE(),
    )
    score("running mean", sines, dummy.StatisticRegressor(stats.Mean()), metrics.MAE())

    characters = phrase_stream(args.steps)
    symbols = sorted(set(PHRASE))

    def one_hot():  # every category's key at every step: the input width stays fixed
        return preprocessing.OneHotEncoder(categories={"char": set(symbols)})

    print(f"classification: next character of {PHRASE!r} repeated, {args.steps:,} samples")
    score(
        "OneHotEncoder | RecurrentClassifier",
        characters,
        one_hot() | RecurrentClassifier(classes=tuple(symbols), seed=args.seed),
        metrics.Accuracy(),
    )
    score(
        "OneHotEncoder | LogisticRegression (one vs rest)",
        characters,
        one_hot() | multiclass.OneVsRestClassifier(linear_model.LogisticRegression()),
        metrics.Accuracy(),
    )
    score("class prior", characters, dummy.PriorClassifier(), metrics.Accuracy())


if __name__ == "__main__":
    main()
