"""Time per learning step against a PyTorch implementation of the same learner, in one run.

GRU-64 on a 13-symbol one-hot stream, linear readout, cross-entropy, Adam (lr 1e-3),
float32, one thread, batch 1. Per sample:
  - `PyTorch UORO`:   Algorithm 1 of the paper in eager PyTorch (autograd, `GRUCell`),
                      one Python call per sample;
  - `PyTorch tBPTT`:  online truncated BPTT, every sample's loss backpropagated through
                      the last T = 4 steps (a reference);
  - `uoro fit`:       this library's UORO step inside one chunked call;
  - `uoro step`:      one `Learner.step(x, y)` call from Python, everything included.
Both learners start from the same parameters. Every time is the best of several repeats,
the measurements interleaved. Before timing, the PyTorch UORO learner is run on a short
repeating pattern and its loss printed, to show it learns.

Prints markdown; `--json FILE` also writes the numbers and the machine they ran on.
PyTorch is optional: without it the script says so and exits.

    python benchmarks/bench_torch.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import os

# NumPy's BLAS threads spin after each call and would share the cores with the learner.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import bench_step  # noqa: E402  (beside this file: the timer and the machine line)
import numpy as np  # noqa: E402

import uoro  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

VOCAB = 13  # a 13-symbol one-hot stream, as in the distant-brackets task
HIDDEN = 64
LR = 1e-3
EPS = 1e-7  # ε of the normalizers ρ0, ρ1
TRUNCATION = 4


def new_learner() -> uoro.Learner:
    return uoro.Learner("gru", VOCAB, HIDDEN, lr=LR, seed=0, on_divergence="skip")


class TorchNet:
    """A `GRUCell` and a linear readout, with the parameters of `learner`, and Adam."""

    def __init__(self, learner: uoro.Learner) -> None:
        self.cell = torch.nn.GRUCell(VOCAB, HIDDEN)
        self.readout = torch.nn.Linear(HIDDEN, VOCAB)
        named = learner.parameters()
        with torch.no_grad():
            for name, p in self.cell.named_parameters():
                p.copy_(torch.from_numpy(named[name]))
            for name, p in self.readout.named_parameters():
                p.copy_(torch.from_numpy(named["readout." + name]))
        self.cell_params = list(self.cell.parameters())
        self.params = self.cell_params + list(self.readout.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=LR)
        self.state = torch.zeros(1, HIDDEN)
        self.onehot = torch.eye(VOCAB)


class TorchUoro(TorchNet):
    """UORO (Algorithm 1): s̃ ⊗ θ̃ estimates ∂s/∂θ for the cell's parameters; the
    readout does not act on the state, its gradient is exact."""

    def __init__(self, learner: uoro.Learner, seed: int = 0) -> None:
        super().__init__(learner)
        self.s_tilde = torch.zeros(1, HIDDEN)
        self.theta_tilde = [torch.zeros_like(p) for p in self.cell_params]
        self.generator = torch.Generator().manual_seed(seed)

    def step(self, x: int, y: int) -> float:
        s = self.state.requires_grad_()
        # compute next state and loss
        s_next = self.cell(self.onehot[x : x + 1], s)
        loss = F.cross_entropy(self.readout(s_next), torch.tensor([y]))
        # gradient estimate: δs = ∂loss/∂s_t through this step, δθ the direct gradient
        delta_s, *delta_theta = torch.autograd.grad(loss, [s, *self.params], retain_graph=True)
        coef = (delta_s * self.s_tilde).sum()
        grads = [d + coef * tt for d, tt in zip(delta_theta, self.theta_tilde)]
        grads += delta_theta[len(self.cell_params) :]
        # tangent forward propagation s̃' = (∂F/∂s) s̃ (the double-backward trick)
        u = torch.zeros_like(s_next, requires_grad=True)
        (vjp,) = torch.autograd.grad(s_next, s, u, create_graph=True)
        (s_tilde,) = torch.autograd.grad(vjp, u, self.s_tilde)
        # δθg = νᵀ ∂F/∂θ for random signs ν
        nu = torch.randint(0, 2, (1, HIDDEN), generator=self.generator).float() * 2 - 1
        delta_theta_g = torch.autograd.grad(s_next, self.cell_params, nu)
        # normalizers and reduction
        with torch.no_grad():
            theta_tilde_norm = torch.sqrt(sum((tt * tt).sum() for tt in self.theta_tilde))
            delta_theta_g_norm = torch.sqrt(sum((d * d).sum() for d in delta_theta_g))
            rho0 = torch.sqrt(theta_tilde_norm / (s_tilde.norm() + EPS)) + EPS
            rho1 = torch.sqrt(delta_theta_g_norm / (nu.norm() + EPS)) + EPS
            self.s_tilde = rho0 * s_tilde + rho1 * nu
            self.theta_tilde = [
                tt / rho0 + d / rho1 for tt, d in zip(self.theta_tilde, delta_theta_g)
            ]
        # update θ
        for p, g in zip(self.params, grads):
            p.grad = g
        self.optimizer.step()
        self.state = s_next.detach()
        return loss.item()


class TorchTbptt(TorchNet):
    """Online truncated BPTT: every step, the current loss is backpropagated through the
    last T steps, rerun from the state that entered them, and θ updated."""

    def __init__(self, learner: uoro.Learner, truncation: int = TRUNCATION) -> None:
        super().__init__(learner)
        self.window: collections.deque = collections.deque(maxlen=truncation)

    def step(self, x: int, y: int) -> float:
        self.window.append((x, self.state))
        s = self.window[0][1]
        for token, _ in self.window:
            s = self.cell(self.onehot[token : token + 1], s)
        loss = F.cross_entropy(self.readout(s), torch.tensor([y]))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.state = s.detach()
        return loss.item()


def losses_of(step, pairs: list[tuple[int, int]]) -> list[float]:
    return [step(x, y) for x, y in pairs]


def sanity_check(steps: int) -> dict:
    """Losses of the PyTorch UORO learner (and of this library's) on a repeating pattern."""
    pattern = [0, 1, 2, 3, 4, 5, 6, 2, 4, 6]
    tokens = (pattern * (steps // len(pattern) + 2))[: steps + 1]
    window = max(steps // 10, 1)
    learner = new_learner()
    torch_losses = np.array(losses_of(TorchUoro(learner).step, list(zip(tokens, tokens[1:]))))
    uoro_losses = learner.fit(np.array(tokens[:-1]), np.array(tokens[1:]))
    return {
        "pattern": pattern,
        "steps": steps,
        "window": window,
        "torch_uoro_first": float(torch_losses[:window].mean()),
        "torch_uoro_last": float(torch_losses[-window:].mean()),
        "torch_uoro_finite": bool(np.isfinite(torch_losses).all()),
        "uoro_first": float(uoro_losses[:window].mean()),
        "uoro_last": float(uoro_losses[-window:].mean()),
    }


def measure(n_torch: int, n_uoro: int, repeats: int) -> dict:
    tokens = np.random.default_rng(1).integers(0, VOCAB, n_uoro + 1)
    xs, ys = tokens[:-1], tokens[1:]
    pairs = list(zip(xs.tolist(), ys.tolist()))
    warm = pairs[:64]
    best = dict.fromkeys(("torch_uoro_us", "torch_tbptt_us", "uoro_fit_us", "uoro_step_us"), np.inf)
    torch_finite, skipped = True, 0
    # A fresh learner for every timed pass, the four measurements interleaved.
    for _ in range(repeats):
        for key, kind in (("torch_uoro_us", TorchUoro), ("torch_tbptt_us", TorchTbptt)):
            net = kind(new_learner())
            losses_of(net.step, warm)
            losses: list[float] = []
            run = lambda step=net.step, out=losses: out.extend(losses_of(step, pairs[:n_torch]))
            best[key] = min(best[key], bench_step.per_sample_us(run, n_torch))
            torch_finite = torch_finite and bool(np.isfinite(losses).all())

        learner = new_learner()
        learner.fit(xs[:64], ys[:64])  # warm caches
        best["uoro_fit_us"] = min(
            best["uoro_fit_us"], bench_step.per_sample_us(lambda m=learner: m.fit(xs, ys), n_uoro)
        )
        skipped += learner.skipped_steps

        stepper = new_learner()
        stepper.fit(xs[:64], ys[:64])
        step = stepper.step

        def loop(step=step) -> None:
            for x, y in pairs:
                step(x, y)

        best["uoro_step_us"] = min(best["uoro_step_us"], bench_step.per_sample_us(loop, n_uoro))
        skipped += stepper.skipped_steps
    result = {k: float(v) for k, v in best.items()}
    return {
        "samples_torch": n_torch,
        "samples_uoro": n_uoro,
        "repeats": repeats,
        **result,
        "torch_uoro_over_uoro_fit": result["torch_uoro_us"] / result["uoro_fit_us"],
        "torch_uoro_over_uoro_step": result["torch_uoro_us"] / result["uoro_step_us"],
        "torch_losses_finite": torch_finite,
        "uoro_skipped_steps": skipped,
    }


def table(r: dict) -> str:
    rows = [
        ("PyTorch UORO (eager autograd)", r["torch_uoro_us"]),
        (f"PyTorch truncated BPTT, T = {TRUNCATION}", r["torch_tbptt_us"]),
        ("uoro, UORO in `fit`", r["uoro_fit_us"]),
        ("uoro, UORO per `step` call", r["uoro_step_us"]),
    ]
    lines = [
        "| implementation | µs/sample | samples/s | PyTorch UORO / this |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {us:,.2f} | {1e6 / us:,.0f} | {r['torch_uoro_us'] / us:,.1f}× |"
        for name, us in rows
    ]
    return "\n".join(lines)


def machine() -> dict:
    return {**bench_step.machine(), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter timings (a smoke run)")
    parser.add_argument("--json", help="also write the results and the machine here")
    args = parser.parse_args()
    if torch is None:
        print(
            "PyTorch (torch) cannot be imported: this benchmark compares against it, skipped. "
            "PyTorch is optional (not a dependency of uoro); `pip install torch` to run it."
        )
        return
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n_torch, n_uoro, repeats, sanity_steps = (
        (200, 2_000, 2, 500) if args.quick else (2_000, 20_000, 3, 2_000)
    )
    results: dict = {"machine": machine()}
    s = results["sanity"] = sanity_check(sanity_steps)
    print(
        f"Sanity check, repeating pattern of {len(s['pattern'])} tokens, {s['steps']:,} steps; "
        f"mean loss over the first / last {s['window']} steps: "
        f"PyTorch UORO {s['torch_uoro_first']:.3f} → {s['torch_uoro_last']:.3f}, "
        f"uoro {s['uoro_first']:.3f} → {s['uoro_last']:.3f} "
        f"(uniform guess: {np.log(VOCAB):.3f})"
    )
    r = results["timing"] = measure(n_torch, n_uoro, repeats)
    m = results["machine"]
    print(
        f"\n{m['cpu']}, {m['cores']} cores, torch {m['torch']}, numpy {m['numpy']}, "
        f"uoro {m['uoro']} (core variant {m['variant']}); "
        f"best of {repeats} repeats, one thread, batch 1, float32, GRU-{HIDDEN}, "
        f"{VOCAB}-symbol one-hot input, Adam; {n_torch:,} samples per PyTorch pass, "
        f"{n_uoro:,} per uoro pass\n"
    )
    print(table(r))
    print(
        f"\nSpeed-up of uoro over PyTorch UORO: {r['torch_uoro_over_uoro_fit']:,.0f}× in `fit`, "
        f"{r['torch_uoro_over_uoro_step']:,.0f}× per `step` call."
    )
    if r["uoro_skipped_steps"]:
        print(f"Steps refused by uoro's divergence guard: {r['uoro_skipped_steps']}")
    if not (r["torch_losses_finite"] and s["torch_uoro_finite"]):
        print("Warning: the PyTorch learners produced non-finite losses.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
