"""Gradient estimators against exact gradients: RTRL against finite differences through
the whole history, UORO's mean against RTRL."""

from __future__ import annotations

import numpy as np
import pytest
from unbiasedness import assert_unbiased, is_rejected

import uoro

CELLS = ["rnn", "gru", "lstm"]
VOCAB, HIDDEN, LENGTH = 3, 4, 12


def frozen(cell: str, algorithm: str, seed: int = 0, theta=None, **options) -> uoro.Learner:
    """A float64 learner whose parameters never move (lr = 0)."""
    learner = uoro.Learner(
        cell,
        VOCAB,
        HIDDEN,
        algorithm=algorithm,
        optimizer="sgd",
        lr=0.0,
        dtype="float64",
        seed=seed,
        **options,
    )
    if theta is not None:
        learner.theta = theta
    return learner


def sequence(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, LENGTH), rng.integers(0, VOCAB, LENGTH)


def nonlinear_theta(cell: str) -> np.ndarray:
    # Three times PyTorch's init scale: saturating gates, long memory, a real test.
    return 3.0 * frozen(cell, "rtrl").theta


@pytest.mark.parametrize("cell", CELLS)
def test_rtrl_equals_finite_differences_through_history(cell):
    xs, ys = sequence()
    theta = nonlinear_theta(cell)
    _, grads = frozen(cell, "rtrl", theta=theta).gradients(xs, ys)
    probe = frozen(cell, "rtrl", theta=theta)
    step = 1e-6
    for t in (0, LENGTH // 2, LENGTH - 1):
        fd = np.empty(theta.size)
        for p in range(theta.size):
            e = np.zeros_like(theta)
            e[p] = step
            probe.theta = theta + e
            up = probe.evaluate(xs[: t + 1], ys[: t + 1])[t]
            probe.theta = theta - e
            down = probe.evaluate(xs[: t + 1], ys[: t + 1])[t]
            fd[p] = (up - down) / (2 * step)
        err = np.linalg.norm(grads[t] - fd) / np.linalg.norm(fd)
        assert err < 1e-6, f"step {t}: relative error {err:.2e}"


@pytest.mark.parametrize("cell", CELLS)
def test_rtrl_gradient_with_dense_inputs(cell):
    """Dense float inputs and a squared-error readout take the same exact path."""
    rng = np.random.default_rng(1)
    xs, ys = rng.normal(size=(6, VOCAB)), rng.normal(size=(6, 2))
    make = lambda: uoro.Learner(
        cell,
        VOCAB,
        HIDDEN,
        2,
        loss="squared_error",
        algorithm="rtrl",
        optimizer="sgd",
        lr=0.0,
        dtype="float64",
    )  # noqa: E731
    learner = make()
    theta = learner.theta
    g = learner.gradients(xs, ys)[1][-1]
    probe = make()
    p = int(np.argmax(np.abs(g[: probe._core.n_cell_params])))  # a recurrent, sizeable one
    e = np.zeros_like(theta)
    e[p] = 1e-6
    probe.theta = theta + e
    up = probe.evaluate(xs, ys)[-1]
    probe.theta = theta - e
    down = probe.evaluate(xs, ys)[-1]
    assert g[p] == pytest.approx((up - down) / 2e-6, rel=1e-6)


def uoro_estimates(
    cell: str, n: int, algorithm: str = "uoro", **options
) -> tuple[np.ndarray, np.ndarray]:
    """n estimates of the last step's gradient (cell parameters) by a random estimator
    (UORO by default) with different sign seeds, and the exact RTRL gradient, on the same
    θ and data."""
    xs, ys = sequence()
    theta = nonlinear_theta(cell)
    reference = frozen(cell, "rtrl", theta=theta)
    n_cell = reference._core.n_cell_params
    exact = reference.gradients(xs, ys)[1][-1][:n_cell]
    estimates = np.stack(
        [
            frozen(cell, algorithm, seed=1 + i, theta=theta, **options).gradients(xs, ys)[1][-1][
                :n_cell
            ]
            for i in range(n)
        ]
    )
    return estimates, exact


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_uoro_is_unbiased(cell):
    estimates, exact = uoro_estimates(cell, 40_000)
    assert_unbiased(estimates, exact)
    assert is_rejected(estimates, 1.15 * exact)
    assert is_rejected(estimates, 0.85 * exact)


def test_uoro_readout_gradient_is_exact():
    xs, ys = sequence()
    exact = frozen("gru", "rtrl").gradients(xs, ys)[1]
    estimate = frozen("gru", "uoro").gradients(xs, ys)[1]
    n_cell = frozen("gru", "rtrl")._core.n_cell_params
    np.testing.assert_allclose(estimate[:, n_cell:], exact[:, n_cell:], rtol=1e-12, atol=1e-14)


def test_first_step_gradient_is_exact():
    """From s = 0 the first step has no past: UORO's θ̃ = 0 term vanishes."""
    xs, ys = sequence()
    exact = frozen("lstm", "rtrl").gradients(xs[:1], ys[:1])[1]
    estimate = frozen("lstm", "uoro").gradients(xs[:1], ys[:1])[1]
    np.testing.assert_allclose(estimate, exact, rtol=1e-12, atol=1e-14)
