"""Online forecasting of a noisy sine whose regime changes.

The signal is a sine plus Gaussian noise; every ``--regime`` steps its period and
amplitude jump to new values. A GRU with a squared-error readout reads the signal one
value at a time and predicts the next value; it learns at every step and never sees a
value twice. Every ``--report`` steps the script prints the mean squared error of the
forecasts just made, beside two yardsticks: repeating the last value, and the noise
variance (the error of a perfect forecaster). After each regime change the error jumps,
then falls again as the network adapts.

The learning rate stays constant (the signal keeps changing, so the learner must keep
adapting), which calls for a small one with plain UORO: its gradient estimate is
unbiased but noisy. Memory-T UORO (``--memory 8``) is exact inside windows of 8 steps,
hence less noisy, and tolerates a larger rate (``--lr 3e-3``).

    python examples/forecast_signal.py
    python examples/forecast_signal.py --memory 8 --lr 3e-3
    python examples/forecast_signal.py --steps 200000 --noise 0.05 --algorithm tbptt
"""

from __future__ import annotations

import argparse

import numpy as np

import uoro

# (period, amplitude) of each regime, cycled.
REGIMES = [(20.0, 1.0), (8.0, 0.5), (30.0, 1.2), (12.0, 0.8)]


def signal(steps: int, regime: int, noise: float, seed: int) -> np.ndarray:
    """The noisy sine: phase continuous across regime changes, so only its speed and
    amplitude jump."""
    rng = np.random.default_rng(seed)
    period = np.array([REGIMES[(t // regime) % len(REGIMES)][0] for t in range(steps)])
    amplitude = np.array([REGIMES[(t // regime) % len(REGIMES)][1] for t in range(steps)])
    phase = np.cumsum(2 * np.pi / period)
    return amplitude * np.sin(phase) + noise * rng.standard_normal(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60_000, help="values to read")
    parser.add_argument("--regime", type=int, default=15_000, help="steps between regime changes")
    parser.add_argument(
        "--report", type=int, default=5_000, help="print the error every this many steps"
    )
    parser.add_argument("--noise", type=float, default=0.1, help="noise standard deviation")
    parser.add_argument("--hidden", type=int, default=32, help="hidden units")
    parser.add_argument("--algorithm", default="uoro", choices=["uoro", "tbptt", "rtrl"])
    parser.add_argument("--memory", type=int, default=1, help="memory-T UORO's window")
    parser.add_argument("--truncation", type=int, default=8, help="for --algorithm tbptt")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    values = signal(args.steps + 1, args.regime, args.noise, args.seed)
    xs = values[:-1, None].astype(np.float32)  # input: the current value
    ys = values[1:, None].astype(np.float32)  # target: the next one

    learner = uoro.Learner(
        "gru",
        input_size=1,
        hidden_size=args.hidden,
        output_size=1,
        loss="squared_error",
        algorithm=args.algorithm,
        truncation=args.truncation if args.algorithm == "tbptt" else None,
        memory=args.memory if args.algorithm == "uoro" else 1,
        lr=args.lr,
        seed=args.seed,
    )
    print(learner)
    print(f"noise variance (a perfect forecaster's error): {args.noise**2:.4f}")
    print(f"{'steps':>17}  {'mse':>7}  {'last value':>10}")

    for start in range(0, args.steps, args.report):
        stop = min(start + args.report, args.steps)
        losses = learner.fit(xs[start:stop], ys[start:stop])  # ½(o - y)² per step
        mse = 2 * float(losses.mean())
        naive = float(np.mean((ys[start:stop] - xs[start:stop]) ** 2))
        change = "  <- regime change" if start and start % args.regime < args.report else ""
        print(f"{start + 1:>8,}-{stop:<8,} {mse:>7.4f}  {naive:>10.4f}{change}")

    print(
        f"final: mse {mse:.4f} over the last {stop - start:,} steps "
        f"(last value {naive:.4f}, noise variance {args.noise**2:.4f})"
    )


if __name__ == "__main__":
    main()
