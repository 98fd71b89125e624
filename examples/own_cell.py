"""Your own recurrent cell, written in NumPy, learning through uoro's estimators.

`NumpyGRU`, `NumpyLSTM` and `NumpyRNN` follow the `uoro.cells.Cell` protocol: the
transition and its two products (tangent and vector–Jacobian) as NumPy functions. They
compute what the built-in "gru", "lstm" and "rnn" cells compute, on the same flat
parameter layout (column-major blocks ``[W | b]``, see `uoro.Learner.parameters`), so a
learner on one of them and one on the built-in cell can be compared number for number:
this script does so on the paper's aⁿbⁿ task, and the tests do it for every estimator.
Use them as templates for a cell of your own.

Every function takes one stream (``x`` of shape ``(input_size,)``) or, with
``batched=True``, a leading stream axis ``(B, input_size)``: the same code serves both.

    python examples/own_cell.py [--steps N] [--cell gru|lstm|rnn] [--hidden H]
"""

from __future__ import annotations

import numpy as np


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def _with_one(v: np.ndarray) -> np.ndarray:
    """[v; 1] along the last axis: the input factor of a block [W | b]."""
    return np.concatenate([v, np.ones(v.shape[:-1] + (1,), v.dtype)], axis=-1)


def _outer_flat(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """u ⊗ v flattened column-major (the layout of a block), per stream."""
    return np.einsum("...j,...i->...ji", v, u).reshape(u.shape[:-1] + (-1,))


class _Blocks:
    """Column-major blocks [W | b] of shapes `shapes` in one flat θ."""

    def __init__(self, shapes: list[tuple[int, int]]) -> None:
        self.shapes = shapes
        self.size = sum(r * c for r, c in shapes)

    def split(self, theta: np.ndarray) -> list[np.ndarray]:
        out, offset = [], 0
        for rows, cols in self.shapes:
            out.append(theta[offset : offset + rows * cols].reshape(cols, rows).T)
            offset += rows * cols
        return out


class NumpyGRU:
    """PyTorch's GRUCell: r, z, n gates; h' = (1 − z) n + z h."""

    def __init__(self, input_size: int, hidden_size: int, *, batched: bool = False, seed: int = 0):
        self.input_size, self.state_size, self.batched = input_size, hidden_size, batched
        n = hidden_size
        self.blocks = _Blocks([(3 * n, input_size + 1), (3 * n, n + 1)])
        bound = 1.0 / np.sqrt(n)
        self.initial_parameters = np.random.default_rng(seed).uniform(
            -bound, bound, self.blocks.size
        )

    def _gates(self, x, s, theta):
        n = self.state_size
        w_in, w_h = self.blocks.split(theta)
        a_in = _with_one(x) @ w_in.T
        a_h = _with_one(s) @ w_h.T
        r = _sigmoid(a_in[..., :n] + a_h[..., :n])
        z = _sigmoid(a_in[..., n : 2 * n] + a_h[..., n : 2 * n])
        hn = a_h[..., 2 * n :]
        g = np.tanh(a_in[..., 2 * n :] + r * hn)
        return w_h, r, z, g, hn

    def forward(self, x, s, theta):
        _, _, z, g, _ = self._gates(x, s, theta)
        return (1 - z) * g + z * s

    def jvp_state(self, x, s, theta, s_dot):
        n = self.state_size
        w_h, r, z, g, hn = self._gates(x, s, theta)
        a_dot = s_dot @ w_h[:, :n].T
        r_dot = r * (1 - r) * a_dot[..., :n]
        z_dot = z * (1 - z) * a_dot[..., n : 2 * n]
        g_dot = (1 - g**2) * (r_dot * hn + r * a_dot[..., 2 * n :])
        return (1 - z) * g_dot + z_dot * (s - g) + z * s_dot

    def vjp(self, x, s, theta, c):
        n = self.state_size
        w_h, r, z, g, hn = self._gates(x, s, theta)
        d_pre_n = c * (1 - z) * (1 - g**2)
        d_r = d_pre_n * hn * r * (1 - r)
        d_z = c * (s - g) * z * (1 - z)
        d_in = np.concatenate([d_r, d_z, d_pre_n], axis=-1)
        d_h = np.concatenate([d_r, d_z, d_pre_n * r], axis=-1)
        c_s = c * z + d_h @ w_h[:, :n]
        c_theta = np.concatenate(
            [_outer_flat(d_in, _with_one(x)), _outer_flat(d_h, _with_one(s))], axis=-1
        )
        return c_s, c_theta


class NumpyLSTM:
    """PyTorch's LSTMCell, i, f, g, o gates; the state is [h; c], the readout sees h."""

    def __init__(self, input_size: int, hidden_size: int, *, batched: bool = False, seed: int = 0):
        self.input_size, self.hidden_size, self.batched = input_size, hidden_size, batched
        self.state_size = 2 * hidden_size
        n = hidden_size
        self.blocks = _Blocks([(4 * n, input_size + 1), (4 * n, n + 1)])
        bound = 1.0 / np.sqrt(n)
        self.initial_parameters = np.random.default_rng(seed).uniform(
            -bound, bound, self.blocks.size
        )

    def _gates(self, x, s, theta):
        n = self.hidden_size
        w_in, w_h = self.blocks.split(theta)
        a = _with_one(x) @ w_in.T + _with_one(s[..., :n]) @ w_h.T
        i, f = _sigmoid(a[..., :n]), _sigmoid(a[..., n : 2 * n])
        g, o = np.tanh(a[..., 2 * n : 3 * n]), _sigmoid(a[..., 3 * n :])
        c_next = f * s[..., n:] + i * g
        return w_h, i, f, g, o, c_next, np.tanh(c_next)

    def forward(self, x, s, theta):
        _, _, _, _, o, c_next, tc = self._gates(x, s, theta)
        return np.concatenate([o * tc, c_next], axis=-1)

    def jvp_state(self, x, s, theta, s_dot):
        n = self.hidden_size
        w_h, i, f, g, o, _, tc = self._gates(x, s, theta)
        a = s_dot[..., :n] @ w_h[:, :n].T
        i_t, f_t = i * (1 - i) * a[..., :n], f * (1 - f) * a[..., n : 2 * n]
        g_t, o_t = (1 - g**2) * a[..., 2 * n : 3 * n], o * (1 - o) * a[..., 3 * n :]
        c_t = f_t * s[..., n:] + f * s_dot[..., n:] + i_t * g + i * g_t
        return np.concatenate([o_t * tc + o * (1 - tc**2) * c_t, c_t], axis=-1)

    def vjp(self, x, s, theta, c):
        n = self.hidden_size
        w_h, i, f, g, o, _, tc = self._gates(x, s, theta)
        dh, dc = c[..., :n], c[..., n:] + c[..., :n] * o * (1 - tc**2)
        da = np.concatenate(
            [
                dc * g * i * (1 - i),
                dc * s[..., n:] * f * (1 - f),
                dc * i * (1 - g**2),
                dh * tc * o * (1 - o),
            ],
            axis=-1,
        )
        c_s = np.concatenate([da @ w_h[:, :n], dc * f], axis=-1)
        c_theta = np.concatenate(
            [_outer_flat(da, _with_one(x)), _outer_flat(da, _with_one(s[..., :n]))], axis=-1
        )
        return c_s, c_theta


class NumpyRNN:
    """The paper's RNN, s' = W_x x + W_s tanh(s) + b read out through tanh, written on
    the state h = tanh(s): h' = tanh(W_x x + W_s h + b). From a zero state both give the
    same outputs and gradients; one block [W_x | W_s | b]."""

    def __init__(self, input_size: int, hidden_size: int, *, batched: bool = False, seed: int = 0):
        self.input_size, self.state_size, self.batched = input_size, hidden_size, batched
        self.blocks = _Blocks([(hidden_size, input_size + hidden_size + 1)])
        bound = 1.0 / np.sqrt(hidden_size)
        self.initial_parameters = np.random.default_rng(seed).uniform(
            -bound, bound, self.blocks.size
        )

    def _pre(self, x, s, theta):
        (w,) = self.blocks.split(theta)
        v = _with_one(np.concatenate([x, s], axis=-1))
        return w, v, np.tanh(v @ w.T)

    def forward(self, x, s, theta):
        return self._pre(x, s, theta)[2]

    def jvp_state(self, x, s, theta, s_dot):
        w, _, h = self._pre(x, s, theta)
        return (1 - h**2) * (s_dot @ w[:, self.input_size : -1].T)

    def vjp(self, x, s, theta, c):
        w, v, h = self._pre(x, s, theta)
        d = c * (1 - h**2)
        return d @ w[:, self.input_size : -1], _outer_flat(d, v)


def main() -> None:
    import argparse
    import time

    import uoro

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5000, help="samples to learn from")
    parser.add_argument("--cell", choices=sorted(CELLS), default="gru")
    parser.add_argument("--hidden", type=int, default=16, help="hidden units")
    args = parser.parse_args()

    xs, ys = uoro.datasets.anbn(k=1, l=8, seed=0).pairs(args.steps)
    options = dict(lr=3e-3, seed=0, dtype="float64")
    builtin = uoro.Learner(args.cell, 3, args.hidden, **options)
    own = uoro.Learner(CELLS[args.cell](3, args.hidden), **options)
    own.theta = builtin.theta  # the same starting point
    began = time.perf_counter()
    own_losses = own.fit(xs, ys)
    own_us = (time.perf_counter() - began) / args.steps * 1e6
    began = time.perf_counter()
    builtin_losses = builtin.fit(xs, ys)
    builtin_us = (time.perf_counter() - began) / args.steps * 1e6
    tail = max(args.steps // 5, 1)
    print(f"aⁿbⁿ, {args.cell.upper()}-{args.hidden}, UORO + Adam, {args.steps:,} steps")
    for name, losses, us in (
        ("NumPy cell", own_losses, own_us),
        ("built-in cell", builtin_losses, builtin_us),
    ):
        bits = uoro.to_bits(losses[-tail:].mean())
        print(f"{name:>14}: {bits:.4f} bits/char over the last {tail:,} steps, {us:8.1f} µs/step")
    gap = float(np.abs(own_losses - builtin_losses).max())
    print(f"largest difference between the two runs' losses: {gap:.1e}")


CELLS = {"gru": NumpyGRU, "lstm": NumpyLSTM, "rnn": NumpyRNN}

if __name__ == "__main__":
    main()
