"""Truncated BPTT, memory-T UORO and rank-r UORO against exact gradients."""

from __future__ import annotations

import numpy as np
import pytest
from test_estimators import LENGTH, frozen, nonlinear_theta, sequence
from unbiasedness import assert_unbiased, is_rejected

from uoro import influence

CELLS = ["rnn", "gru", "lstm"]


@pytest.mark.parametrize("cell", CELLS)
def test_tbptt_with_window_covering_history_equals_rtrl(cell):
    xs, ys = sequence()
    theta = nonlinear_theta(cell)
    exact = frozen(cell, "rtrl", theta=theta).gradients(xs, ys)[1]
    full = frozen(cell, "tbptt", theta=theta, truncation=LENGTH).gradients(xs, ys)[1]
    np.testing.assert_allclose(full, exact, rtol=1e-10, atol=1e-13)
    short = frozen(cell, "tbptt", theta=theta, truncation=3).gradients(xs, ys)[1]
    np.testing.assert_allclose(short[:3], exact[:3], rtol=1e-10, atol=1e-13)
    gap = np.linalg.norm(short[-1] - exact[-1]) / np.linalg.norm(exact[-1])
    assert gap > 1e-3, "a window shorter than the history must lose something"


@pytest.mark.parametrize("cell", CELLS)
def test_tbptt_chunk_is_the_exact_gradient_of_each_chunk(cell):
    """At a chunk's end: the gradient of the chunk's summed loss with the state entering
    the chunk held fixed; zero inside a chunk."""
    xs, ys = sequence()
    theta = nonlinear_theta(cell)
    chunked = frozen(cell, "tbptt_chunk", theta=theta, truncation=4).gradients(xs, ys)[1]
    assert not chunked[[0, 1, 2, 4, 5, 6]].any()
    exact = frozen(cell, "rtrl", theta=theta).gradients(xs, ys)[1]
    np.testing.assert_allclose(chunked[3], exact[:4].sum(axis=0), rtol=1e-10, atol=1e-13)
    # The second chunk: RTRL restarted from the state entering it (sensitivity zero).
    runner = frozen(cell, "rtrl", theta=theta)
    runner.evaluate(xs, ys)  # (no side effects)
    runner.gradients(xs[:4], ys[:4])
    jacobian = runner._core.estimator_arrays["jacobian"]
    runner._core.estimator_arrays = {"jacobian": np.zeros_like(jacobian)}
    restarted = runner.gradients(xs[4:8], ys[4:8])[1].sum(axis=0)
    np.testing.assert_allclose(chunked[7], restarted, rtol=1e-10, atol=1e-13)
    assert np.linalg.norm(chunked[7] - exact[4:8].sum(axis=0)) > 1e-3 * np.linalg.norm(restarted)


def cell_estimates(cell: str, n: int, **options) -> np.ndarray:
    xs, ys = sequence()
    theta = nonlinear_theta(cell)
    n_cell = frozen(cell, "rtrl")._core.n_cell_params
    return np.stack(
        [
            frozen(cell, "uoro", seed=1 + i, theta=theta, **options).gradients(xs, ys)[1][-1][
                :n_cell
            ]
            for i in range(n)
        ]
    )


def exact_cell_gradients(cell: str) -> np.ndarray:
    xs, ys = sequence()
    reference = frozen(cell, "rtrl", theta=nonlinear_theta(cell))
    return reference.gradients(xs, ys)[1][:, : reference._core.n_cell_params]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_memory_uoro_is_unbiased(cell):
    memory = 4  # windows end at steps 3, 7, 11: the last one is estimated
    estimates = cell_estimates(cell, 20_000, memory=memory)
    window_exact = exact_cell_gradients(cell)[LENGTH - memory :].sum(axis=0)
    assert_unbiased(estimates, window_exact)
    assert is_rejected(estimates, 1.15 * window_exact)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_rank_r_uoro_is_unbiased(cell):
    estimates = cell_estimates(cell, 20_000, rank=3)
    exact = exact_cell_gradients(cell)[-1]
    assert_unbiased(estimates, exact)
    assert is_rejected(estimates, 1.15 * exact)


def test_rank_r_variance_falls_like_one_over_r():
    exact = exact_cell_gradients("gru")[-1]
    variance = []
    for rank in (1, 2, 4, 8):
        estimates = cell_estimates("gru", 6_000, rank=rank)
        variance.append(((estimates - exact) ** 2).sum(axis=1).mean())
    ratios = [variance[i] / variance[i + 1] for i in range(3)]
    assert all(1.6 < r < 2.5 for r in ratios), ratios


def test_memory_one_is_plain_uoro():
    xs, ys = sequence()
    plain = frozen("gru", "uoro", seed=3).gradients(xs, ys)[1]
    explicit = frozen("gru", "uoro", seed=3, memory=1).gradients(xs, ys)[1]
    np.testing.assert_array_equal(plain, explicit)


def influence_gradient(algorithm: str, steps: int = 400, theta: float = 0.1, **options) -> float:
    model = influence.learner(theta=theta, algorithm=algorithm, lr=0.0, **options)
    xs, ys = influence.stream(steps)
    return float(model.gradients(xs, ys)[1][-1, 0])


def test_truncation_gets_the_sign_of_a_long_term_influence_wrong():
    """Influence balancing (n = 23, 13 minus): θ raises unit 1 at first and lowers it in
    the long run. Near the start, with s¹ below its target, the exact gradient is
    positive; truncated BPTT, seeing only the short-term effect, says negative."""
    exact = influence_gradient("rtrl")
    assert exact > 0
    for window in (1, 10):
        assert influence_gradient("tbptt", truncation=window) < 0, window
    assert influence_gradient("tbptt", truncation=400) == pytest.approx(exact, rel=1e-10)


def test_influence_kernels_match_finite_differences():
    from uoro import _core

    k = _core.Kernels_influence_f64(6, 6)
    rng = np.random.default_rng(0)
    theta, x, s, v = rng.normal(size=1), rng.normal(size=6), rng.normal(size=6), rng.normal(size=6)
    step = 1e-6
    fd_jvp = (k.forward(theta, x, s + step * v) - k.forward(theta, x, s - step * v)) / (2 * step)
    np.testing.assert_allclose(k.jvp_state(theta, x, s, v), fd_jvp, rtol=1e-8)
    jac = np.stack(
        [
            (k.forward(theta, x, s + step * e) - k.forward(theta, x, s - step * e)) / (2 * step)
            for e in np.eye(6)
        ],
        axis=1,
    )
    np.testing.assert_allclose(k.vjp_state(theta, x, s, v), v @ jac, rtol=1e-8)
    d_theta = (k.forward(theta + step, x, s) - k.forward(theta - step, x, s)) / (2 * step)
    np.testing.assert_allclose(k.vjp_params(theta, x, s, v), [v @ d_theta], rtol=1e-8)
