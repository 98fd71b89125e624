"""uoro's River estimators against deep-river's rolling LSTM estimators, in one run.

deep-river (River + PyTorch) is what River users reach for to put a recurrent network in
a pipeline. Its LSTM estimators keep a rolling window of the last ``window`` samples and,
for every sample, run the LSTM over that window and backpropagate through it; uoro's
estimators carry the recurrent state forward and learn online with UORO, one step per
sample. Both are scored by River's progressive validation (predict, then learn, sample by
sample) on:

  - a River time series: ``river.datasets.TrumpApproval`` (bundled, 1,001 days, six
    features), scaled with ``StandardScaler`` and ``TargetStandardScaler``; MAE;
  - a token stream: aⁿbⁿ(1, 32) from ``uoro.datasets`` (three symbols, one-hot features),
    next-symbol prediction; accuracy and cross-entropy (bits per symbol).

Both use an LSTM with the same hidden size and Adam; every other setting is each
library's default (uoro: lr 1e-2 with decay α = 0.1; deep-river: lr 1e-3, window 10,
unless given). µs/sample is the wall time of ``progressive_val_score`` (one prediction
and one learning step per sample) divided by the samples.

Optional, never installed by CI: without deep-river the script says so and exits. For
whoever runs it: install the CPU build of PyTorch first (``pip install torch
--index-url https://download.pytorch.org/whl/cpu``), which avoids gigabytes of GPU
libraries; deep-river 0.3.4 imports pytest without declaring it, so install pytest too:

    pip install ".[river]" deep-river pytest
    python benchmarks/bench_river_peers.py [--tokens 10000] [--hidden 16]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

# NumPy's BLAS threads spin after each call and would share the cores with the learners.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import uoro  # noqa: E402

try:
    import deep_river
    import torch
    from deep_river.classification import LSTMClassifier
    from deep_river.regression import LSTMRegressor
    from river import datasets, evaluate, metrics, preprocessing

    from uoro.river import RecurrentClassifier, RecurrentRegressor
except ImportError as error:  # optional: skipped without deep-river (or River, PyTorch)
    deep_river = None
    MISSING = str(error)


# The uoro rows' settings, pinned: those the River estimators had by default when the
# README's numbers were measured (the defaults have since moved to SnAp-1; see
# tune_river_defaults.py), so the rows stay what their labels say.
UORO_SETTINGS = {
    "algorithm": "uoro",
    "optimizer": "adam",
    "lr": 0.01,
    "lr_decay": 0.1,
    "standardize": False,
}


def time_series(hidden: int, window: int, lr: float) -> list[tuple[str, float, float]]:
    data = list(datasets.TrumpApproval())
    n_features = len(data[0][0])
    models = {
        f"uoro RecurrentRegressor (LSTM-{hidden}, UORO)": RecurrentRegressor(
            cell="lstm", hidden_size=hidden, **UORO_SETTINGS
        ),
        f"deep-river LSTMRegressor (LSTM-{hidden}, window {window})": LSTMRegressor(
            n_features=n_features, hidden_size=hidden, window_size=window, lr=lr
        ),
    }
    rows = []
    for name, regressor in models.items():
        model = preprocessing.StandardScaler() | preprocessing.TargetStandardScaler(regressor)
        metric = metrics.MAE()
        start = time.perf_counter()
        evaluate.progressive_val_score(data, model, metric)
        elapsed = time.perf_counter() - start
        rows.append((name, metric.get(), 1e6 * elapsed / len(data)))
    return rows


def token_stream(
    tokens: int, hidden: int, window: int, lr: float
) -> list[tuple[str, float, float, float]]:
    xs, ys = uoro.datasets.anbn(1, 32, seed=0).pairs(tokens)
    data = [({f"t{i}": float(i == x) for i in range(3)}, int(y)) for x, y in zip(xs, ys)]
    models = {
        f"uoro RecurrentClassifier (LSTM-{hidden}, UORO)": RecurrentClassifier(
            classes=(0, 1, 2), cell="lstm", hidden_size=hidden, **UORO_SETTINGS
        ),
        f"deep-river LSTMClassifier (LSTM-{hidden}, window {window})": LSTMClassifier(
            n_features=3,
            hidden_size=hidden,
            n_init_classes=3,
            optimizer_fn="adam",
            lr=lr,
            window_size=window,
        ),
    }
    rows = []
    for name, model in models.items():
        accuracy, entropy = metrics.Accuracy(), metrics.CrossEntropy()
        start = time.perf_counter()
        evaluate.progressive_val_score(data, model, accuracy + entropy)
        elapsed = time.perf_counter() - start
        bits = entropy.get() / math.log(2)
        rows.append((name, accuracy.get(), bits, 1e6 * elapsed / len(data)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000, help="aⁿbⁿ samples")
    parser.add_argument("--hidden", type=int, default=16, help="LSTM units, both libraries")
    parser.add_argument("--window", type=int, default=10, help="deep-river's rolling window")
    parser.add_argument("--lr", type=float, default=1e-3, help="deep-river's Adam lr")
    args = parser.parse_args()
    if deep_river is None:
        print(f"deep-river comparison skipped: {MISSING} (see this script's docstring)")
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(
        f"uoro {uoro.__version__} ({uoro._core.VARIANT}), deep-river "
        f"{getattr(deep_river, '__version__', '?')}, torch {torch.__version__}, one thread; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores\n"
    )
    print("TrumpApproval (1,001 samples), progressive validation\n")
    print("| estimator | MAE | µs/sample |\n|---|---:|---:|")
    for name, mae, micros in time_series(args.hidden, args.window, args.lr):
        print(f"| {name} | {mae:.3f} | {micros:,.0f} |")
    print(f"\naⁿbⁿ(1, 32), {args.tokens:,} symbols, progressive validation\n")
    print("| estimator | accuracy | bits/symbol | µs/sample |\n|---|---:|---:|---:|")
    for name, accuracy, bits, micros in token_stream(
        args.tokens, args.hidden, args.window, args.lr
    ):
        print(f"| {name} | {accuracy:.3f} | {bits:.3f} | {micros:,.0f} |")


if __name__ == "__main__":
    main()
