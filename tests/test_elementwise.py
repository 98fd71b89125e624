"""The element-wise cells (minGRU, minLSTM, IndRNN): their equations against a PyTorch
transcription, and exact RTRL at O(|θ|) on them, against autograd through the whole
history, one stream and many."""

from __future__ import annotations

import numpy as np
import pytest
from test_estimators import frozen, nonlinear_theta, sequence
from unbiasedness import assert_unbiased, is_rejected

import uoro

torch = pytest.importorskip("torch")

ELEMENTWISE = ["mingru", "minlstm", "indrnn"]
VOCAB, HIDDEN, LENGTH, STREAMS = 3, 4, 12, 3


def torch_step(cell: str, p: dict, x, h):
    """One step of the cell as its docstring states it, in PyTorch."""
    n = h.shape[-1]
    a = x @ p["weight_ih"].T + p["bias"]
    if cell == "mingru":
        z, candidate = torch.sigmoid(a[..., :n]), a[..., n:]
        return (1 - z) * h + z * candidate
    if cell == "minlstm":
        f, i = torch.sigmoid(a[..., :n]), torch.sigmoid(a[..., n : 2 * n])
        return (f * h + i * a[..., 2 * n :]) / (f + i)
    return torch.tanh(a + p["weight_hh"] * h)


def autograd_gradients(learner: uoro.Learner, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(T, P): for every step t, the gradient of step t's loss (the mean over the streams
    for (T, B) tokens) through the whole history, laid out as the learner's θ."""
    cell = learner.config["cell"]
    names = learner.parameters()
    tokens = xs.reshape(len(xs), -1)
    targets = torch.as_tensor(ys.reshape(len(ys), -1))
    grads = []
    for t in range(len(xs)):
        p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in names.items()}
        h = torch.zeros(tokens.shape[1], HIDDEN, dtype=torch.float64)
        for step in range(t + 1):
            x = torch.nn.functional.one_hot(torch.as_tensor(tokens[step]), VOCAB).double()
            h = torch_step(cell, p, x, h)
        logits = h @ p["readout.weight"].T + p["readout.bias"]
        loss = torch.nn.functional.cross_entropy(logits, targets[t])  # mean over streams
        loss.backward()
        layout = learner.clone()  # θ's layout, filled with the gradient by name
        layout.set_parameters({k: v.grad.numpy() for k, v in p.items()})
        grads.append(layout.theta)
    return np.stack(grads)


@pytest.mark.parametrize("cell", ELEMENTWISE)
def test_forward_follows_the_documented_equations(cell):
    learner = frozen(cell, "rtrl", theta=nonlinear_theta(cell))
    p = {k: torch.tensor(v) for k, v in learner.parameters().items()}
    xs, _ = sequence()
    kernels = getattr(uoro._core, f"Kernels_{cell}_f64")(VOCAB, HIDDEN)
    h = np.random.default_rng(0).normal(size=HIDDEN)
    x = np.eye(VOCAB)[xs[0]]
    expected = torch_step(cell, p, torch.tensor(x), torch.tensor(h)).numpy()
    theta = learner.theta[: kernels.n_params]
    np.testing.assert_allclose(kernels.forward(theta, x, h), expected, rtol=1e-14)


@pytest.mark.parametrize("cell", ELEMENTWISE)
def test_rtrl_equals_autograd_through_the_whole_history(cell):
    xs, ys = sequence()
    learner = frozen(cell, "rtrl", theta=nonlinear_theta(cell))
    grads = learner.gradients(xs, ys)[1]
    exact = autograd_gradients(learner, xs, ys)
    np.testing.assert_allclose(grads, exact, rtol=0, atol=1e-10 * np.abs(exact).max())
    # Not vacuous: the recurrent memory carries gradient from far back.
    first_only = frozen(cell, "tbptt", theta=learner.theta, truncation=1).gradients(xs, ys)[1]
    assert np.abs(first_only[-1] - exact[-1]).max() > 1e-3


@pytest.mark.parametrize("cell", ELEMENTWISE)
def test_rtrl_equals_autograd_over_many_streams(cell):
    rng = np.random.default_rng(3)
    xs, ys = rng.integers(0, VOCAB, (LENGTH, STREAMS)), rng.integers(0, VOCAB, (LENGTH, STREAMS))
    learner = frozen(cell, "rtrl", theta=nonlinear_theta(cell), streams=STREAMS)
    grads = learner.gradients(xs, ys)[1]
    exact = autograd_gradients(learner, xs, ys)
    np.testing.assert_allclose(grads, exact, rtol=0, atol=1e-10 * np.abs(exact).max())


@pytest.mark.parametrize("cell", ELEMENTWISE)
def test_rtrl_equals_full_window_truncated_bptt(cell):
    xs, ys = sequence()
    theta = nonlinear_theta(cell)
    exact = frozen(cell, "rtrl", theta=theta).gradients(xs, ys)[1]
    full = frozen(cell, "tbptt", theta=theta, truncation=LENGTH).gradients(xs, ys)[1]
    np.testing.assert_allclose(exact, full, rtol=0, atol=1e-12 * np.abs(full).max())


@pytest.mark.parametrize("cell", ELEMENTWISE)
def test_rtrl_memory_is_one_value_per_cell_parameter(cell):
    """O(|θ|): the sensitivity kept is one entry per cell parameter, not state × |θ|."""
    learner = uoro.Learner(cell, 7, 256, algorithm="rtrl")
    n_cell = learner._core.n_cell_params
    kept = {k: v for k, v in learner.state_dict().items() if k in ("jacobian", "snap_influence")}
    assert sum(v.size for v in kept.values()) == n_cell
    xs = np.arange(200) % 7
    learner.fit(xs, (xs + 1) % 7)  # and it steps


@pytest.mark.parametrize("cell", ELEMENTWISE)
def test_snap1_is_rtrl_on_them(cell):
    xs, ys = sequence()
    theta = nonlinear_theta(cell)
    a = frozen(cell, "rtrl", theta=theta).gradients(xs, ys)
    b = frozen(cell, "snap1", theta=theta).gradients(xs, ys)
    np.testing.assert_array_equal(a[1], b[1])


def test_uoro_is_unbiased_on_an_elementwise_cell():
    xs, ys = sequence()
    theta = nonlinear_theta("minlstm")
    reference = frozen("minlstm", "rtrl", theta=theta)
    n_cell = reference._core.n_cell_params
    exact = reference.gradients(xs, ys)[1][-1][:n_cell]
    estimates = np.stack(
        [
            frozen("minlstm", "uoro", seed=1 + i, theta=theta).gradients(xs, ys)[1][-1][:n_cell]
            for i in range(20_000)
        ]
    )
    assert_unbiased(estimates, exact)
    assert is_rejected(estimates, 1.15 * exact)
    assert is_rejected(estimates, 0.85 * exact)


@pytest.mark.parametrize("cell", ELEMENTWISE)
@pytest.mark.parametrize("streams", [1, 3])
def test_checkpoints_resume_bit_exactly(cell, streams, tmp_path):
    rng = np.random.default_rng(5)
    shape = (60,) if streams == 1 else (60, streams)
    xs, ys = rng.integers(0, VOCAB, shape), rng.integers(0, VOCAB, shape)
    make = lambda: uoro.Learner(  # noqa: E731
        cell, VOCAB, 6, algorithm="rtrl", lr=1e-2, seed=2, streams=streams
    )
    straight = make()
    straight_losses = straight.fit(xs, ys)
    first = make()
    first.fit(xs[:25], ys[:25])
    first.save(tmp_path / "ckpt.npz")
    resumed = uoro.load(tmp_path / "ckpt.npz")
    np.testing.assert_array_equal(resumed.fit(xs[25:], ys[25:]), straight_losses[25:])
    np.testing.assert_array_equal(resumed.theta, straight.theta)


@pytest.mark.parametrize("cell", ELEMENTWISE)
def test_learns_a_pattern_that_needs_memory(cell):
    # "aab" repeated: after an "a" the next token depends on the token before it.
    tokens = np.array([0, 0, 1] * 1500)
    learner = uoro.Learner(cell, 2, 8, algorithm="rtrl", lr=0.02, seed=0)
    losses = learner.fit(tokens[:-1], tokens[1:])
    assert losses[-300:].mean() < 0.05, losses[-300:].mean()


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_minlstm_stays_defined_when_both_gates_saturate_shut(dtype):
    """f + i underflows to 0 when both gates shut (a_f, a_i = −200): the normalized gate
    f̂ = f / (f + i) is computed as σ(log f − log i), here σ(0) = 1/2."""
    k = getattr(uoro._core, f"Kernels_minlstm_{dtype}")(1, 2)
    weights = np.zeros((6, 2))  # column-major block [weight_ih | bias], rows f, i, h̃
    weights[:4, 1] = -200.0
    weights[4:, 1] = 1.0
    theta = weights.flatten(order="F").astype(np.float32 if dtype == "f32" else np.float64)
    h = np.array([3.0, -1.0], dtype=theta.dtype)
    x = np.zeros(1, dtype=theta.dtype)
    np.testing.assert_allclose(k.forward(theta, x, h), 0.5 * h + 0.5, rtol=1e-6)
    c = np.ones(2, dtype=theta.dtype)
    for name in ("jvp_state", "vjp_state", "vjp_params"):
        assert np.isfinite(getattr(k, name)(theta, x, h, c)).all(), name
