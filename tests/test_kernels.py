"""Every analytic kernel against central finite differences of the forward pass."""

from __future__ import annotations

import numpy as np
import pytest

from uoro import _core

CELLS = ["rnn", "gru", "lstm", "mingru", "minlstm", "indrnn"]
# Stacks are cells too: their kernels compose the layers' (see cpp/include/uoro/stack.hpp).
STACKS = ["rnn_l3", "gru_l2", "lstm_l2", "mingru_l2", "minlstm_l3", "indrnn_l2"]
INPUT, HIDDEN = 3, 5
STEP = 1e-6


def kernels(cell: str, dtype: str = "f64"):
    return getattr(_core, f"Kernels_{cell}_{dtype}")(INPUT, HIDDEN)


def point(k, seed: int = 0):
    """A random point (theta, x, s) with weights large enough to leave the linear regime."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-0.8, 0.8, k.n_params)
    x = rng.normal(size=INPUT)
    s = rng.normal(size=k.state_size)
    return theta, x, s


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def fd_jacobian(f, z: np.ndarray) -> np.ndarray:
    """Central-difference Jacobian of f at z, one column per coordinate of z."""
    cols = []
    for i in range(z.size):
        e = np.zeros_like(z)
        e[i] = STEP
        cols.append((f(z + e) - f(z - e)) / (2 * STEP))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("cell", CELLS + STACKS)
def test_jvp_state_matches_finite_differences(cell):
    k = kernels(cell)
    theta, x, s = point(k)
    s_tilde = np.random.default_rng(1).normal(size=k.state_size)
    fd = (k.forward(theta, x, s + STEP * s_tilde) - k.forward(theta, x, s - STEP * s_tilde)) / (
        2 * STEP
    )
    assert rel_err(k.jvp_state(theta, x, s, s_tilde), fd) < 1e-6


@pytest.mark.parametrize("cell", CELLS + STACKS)
def test_vjp_state_matches_finite_differences(cell):
    k = kernels(cell)
    theta, x, s = point(k)
    c = np.random.default_rng(2).normal(size=k.state_size)
    jac = fd_jacobian(lambda z: k.forward(theta, x, z), s)
    assert rel_err(k.vjp_state(theta, x, s, c), c @ jac) < 1e-6


@pytest.mark.parametrize("cell", CELLS + STACKS)
def test_vjp_params_matches_finite_differences(cell):
    k = kernels(cell)
    theta, x, s = point(k)
    c = np.random.default_rng(3).normal(size=k.state_size)
    jac = fd_jacobian(lambda th: k.forward(th, x, s), theta)
    assert rel_err(k.vjp_params(theta, x, s, c), c @ jac) < 1e-6


def test_lstm_cell_state_part():
    """The LSTM's c-half of the state: tangents and cotangents that live only on c."""
    k = kernels("lstm")
    theta, x, s = point(k, seed=4)
    only_c = np.concatenate([np.zeros(HIDDEN), np.random.default_rng(5).normal(size=HIDDEN)])
    fd = (k.forward(theta, x, s + STEP * only_c) - k.forward(theta, x, s - STEP * only_c)) / (
        2 * STEP
    )
    assert rel_err(k.jvp_state(theta, x, s, only_c), fd) < 1e-6
    jac_s = fd_jacobian(lambda z: k.forward(theta, x, z), s)
    jac_theta = fd_jacobian(lambda th: k.forward(th, x, s), theta)
    assert rel_err(k.vjp_state(theta, x, s, only_c), only_c @ jac_s) < 1e-6
    assert rel_err(k.vjp_params(theta, x, s, only_c), only_c @ jac_theta) < 1e-6


@pytest.mark.parametrize("cell", CELLS)
def test_hidden_vjp_matches_finite_differences(cell):
    k = kernels(cell)
    _, _, s = point(k, seed=6)
    dh = np.random.default_rng(7).normal(size=HIDDEN)
    jac = fd_jacobian(k.hidden, s)
    assert rel_err(k.hidden_vjp(s, dh), dh @ jac) < 1e-6


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_readout_gradients_match_finite_differences(loss):
    rng = np.random.default_rng(8)
    n_out = 4
    theta = rng.normal(size=n_out * (HIDDEN + 1))
    h = rng.normal(size=HIDDEN)
    y = 2 if loss == "cross_entropy" else rng.normal(size=n_out)
    kind = getattr(_core.Loss, loss)

    def value(th, hh):
        return _core.readout_f64(kind, n_out, th, hh, y)[0]

    _, d_theta, d_h, output = _core.readout_f64(kind, n_out, theta, h, y)
    assert rel_err(d_theta, fd_jacobian(lambda th: np.array([value(th, h)]), theta)[0]) < 1e-6
    assert rel_err(d_h, fd_jacobian(lambda hh: np.array([value(theta, hh)]), h)[0]) < 1e-6
    if loss == "cross_entropy":
        assert output.sum() == pytest.approx(1.0)
        assert value(theta, h) == pytest.approx(-np.log(output[y]))


@pytest.mark.parametrize("cell", CELLS)
def test_float32_kernels_agree_with_float64(cell):
    k64, k32 = kernels(cell), kernels(cell, "f32")
    theta, x, s = point(k64, seed=9)
    v = np.random.default_rng(10).normal(size=k64.state_size)
    f32 = [a.astype(np.float32) for a in (theta, x, s, v)]
    for name in ("jvp_state", "vjp_state", "vjp_params"):
        wide = getattr(k64, name)(theta, x, s, v)
        narrow = getattr(k32, name)(*f32)
        assert narrow.dtype == np.float32
        assert rel_err(narrow.astype(np.float64), wide) < 1e-5, name
    assert rel_err(k32.forward(*f32[:3]).astype(np.float64), k64.forward(theta, x, s)) < 1e-5


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cells_follow_pytorch_equations(cell):
    """Forward equals a NumPy transcription of torch.nn.GRUCell / LSTMCell, with the
    weights set through their PyTorch names, so trained weights move between the two."""
    import uoro

    learner = uoro.Learner(cell, INPUT, HIDDEN, 2, loss="squared_error", dtype="float64")
    rng = np.random.default_rng(11)
    params = {k: rng.normal(size=v.shape) for k, v in learner.parameters().items()}
    learner.set_parameters(params)
    w_ih, w_hh, b_ih, b_hh = (params[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    x = rng.normal(size=INPUT)
    h = rng.normal(size=HIDDEN)
    gi, gh = w_ih @ x + b_ih, w_hh @ h + b_hh
    if cell == "gru":
        r = sigmoid(gi[:HIDDEN] + gh[:HIDDEN])
        z = sigmoid(gi[HIDDEN : 2 * HIDDEN] + gh[HIDDEN : 2 * HIDDEN])
        n = np.tanh(gi[2 * HIDDEN :] + r * gh[2 * HIDDEN :])
        expected = (1 - z) * n + z * h
        state = h
    else:
        c = rng.normal(size=HIDDEN)
        i, f, g, o = np.split(gi + gh, 4)
        c_next = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        expected = np.concatenate([sigmoid(o) * np.tanh(c_next), c_next])
        state = np.concatenate([h, c])
    learner.state = state
    learner.step(x, np.zeros(2))
    np.testing.assert_allclose(learner.state, expected, rtol=1e-12, atol=1e-12)
    readout = params["readout.weight"] @ expected[:HIDDEN] + params["readout.bias"]
    np.testing.assert_allclose(learner.prediction, readout, rtol=1e-12, atol=1e-12)
