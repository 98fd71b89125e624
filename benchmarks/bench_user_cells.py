"""What a cell of your own costs: µs per learning step of a GRU-64 written as a NumPy cell
and as a PyTorch module (`uoro.cells.from_torch`), against the built-in GRU, in one run.

GRU-64 on a 13-symbol one-hot stream, float32, UORO + Adam inside `fit`, one stream. For
each user cell the time spent inside its functions is measured too (a timing wrapper
around them); the rest is what the library adds: the C++ estimator and, around the
calls, the conversions of arrays. With PyTorch installed, a straightforward
PyTorch-autograd UORO step (benchmarks/bench_torch.py) is timed beside them.

    python benchmarks/bench_user_cells.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import uoro  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))
from bench_step import machine  # noqa: E402
from own_cell import NumpyGRU  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

VOCAB, HIDDEN = 13, 64


class Timed:
    """A cell whose functions add their time to `seconds` (the cell's own cost)."""

    def __init__(self, cell) -> None:
        self.cell, self.seconds = cell, 0.0
        for name in ("input_size", "state_size", "initial_parameters", "batched"):
            setattr(self, name, getattr(cell, name))
        if hasattr(cell, "hidden_size"):
            self.hidden_size = cell.hidden_size

    def _timed(self, fn, *args):
        began = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - began

    def forward(self, *args):
        return self._timed(self.cell.forward, *args)

    def jvp_state(self, *args):
        return self._timed(self.cell.jvp_state, *args)

    def vjp(self, *args):
        return self._timed(self.cell.vjp, *args)


def learner(cell) -> uoro.Learner:
    return uoro.Learner(cell, VOCAB, HIDDEN, lr=1e-3, seed=0, on_divergence="skip")


def measure(make_cell, steps: int, repeats: int) -> dict:
    data = np.random.default_rng(1).integers(0, VOCAB, steps + 1)
    xs, ys = data[:-1], data[1:]
    best = {"us": np.inf, "callbacks_us": np.nan}
    for _ in range(repeats):
        cell = make_cell()
        model = learner(cell)
        model.fit(xs[:8], ys[:8])  # warm up
        if isinstance(cell, Timed):
            cell.seconds = 0.0
        began = time.perf_counter()
        model.fit(xs, ys)
        us = (time.perf_counter() - began) / steps * 1e6
        if us < best["us"]:
            best["us"] = us
            if isinstance(cell, Timed):
                best["callbacks_us"] = cell.seconds / steps * 1e6
    return best


def torch_uoro_us(steps: int, repeats: int) -> float:
    from bench_torch import TorchUoro

    data = np.random.default_rng(1).integers(0, VOCAB, steps + 1).tolist()
    best = np.inf
    for _ in range(repeats):
        net = TorchUoro(learner("gru"))
        began = time.perf_counter()
        for x, y in zip(data[:-1], data[1:]):
            net.step(x, y)
        best = min(best, (time.perf_counter() - began) / steps * 1e6)
    return float(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, for a smoke test")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    repeats = 1 if args.quick else args.repeats
    rows = {"built-in GRU": measure(lambda: "gru", int(20_000 * scale), repeats)}
    rows["NumPy GRU cell"] = measure(
        lambda: Timed(NumpyGRU(VOCAB, HIDDEN)), int(600 * scale), repeats
    )
    if torch is not None:
        torch.set_num_threads(1)

        def torch_cell():
            torch.manual_seed(0)
            return Timed(uoro.cells.from_torch(torch.nn.GRUCell(VOCAB, HIDDEN)))

        rows["PyTorch GRUCell (from_torch)"] = measure(
            torch_cell, max(int(200 * scale), 10), repeats
        )
        rows["PyTorch-autograd UORO step"] = {
            "us": torch_uoro_us(max(int(400 * scale), 10), repeats),
            "callbacks_us": np.nan,
        }
    builtin = rows["built-in GRU"]["us"]
    print(f"{machine()}; GRU-64, float32, UORO + Adam, one stream, best of {repeats}\n")
    print("| cell | µs/step | × built-in | in the cell's functions µs | added by the library |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        inside = row["callbacks_us"]
        added = "–" if np.isnan(inside) else f"{(row['us'] - inside) / inside:.0%}"
        inside_text = "–" if np.isnan(inside) else f"{inside:,.1f}"
        print(
            f"| {name} | {row['us']:,.1f} | {row['us'] / builtin:,.0f}× | {inside_text} | {added} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine(), "rows": rows}, indent=2, default=float)
        )


if __name__ == "__main__":
    main()
