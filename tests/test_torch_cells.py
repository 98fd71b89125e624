"""PyTorch modules as cells (`uoro.cells.from_torch`): torch's GRUCell and LSTMCell give
the built-in cells' gradients; a stacked GRU, which the built-ins cannot express, gets
RTRL gradients that match finite differences through the whole history and an unbiased
UORO; learned values go back into the module."""

from __future__ import annotations

import numpy as np
import pytest

import uoro
from uoro import cells

torch = pytest.importorskip("torch")  # in the test extras: present in CI

from unbiasedness import assert_unbiased, is_rejected  # noqa: E402

VOCAB, HIDDEN = 4, 5


def tokens(seed, length=10, streams=None):
    shape = (length + 1,) if streams is None else (length + 1, streams)
    data = np.random.default_rng(seed).integers(0, VOCAB, shape)
    return data[:-1], data[1:]


def named(learner, vector):
    """A flat gradient as the learner's named parameters."""
    theta = learner.theta
    learner.theta = vector
    out = learner.parameters()
    learner.theta = theta
    return out


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("streams", [1, 3])
def test_torch_cells_give_the_builtin_gradients(kind, streams):
    torch.manual_seed(0)
    module = (torch.nn.GRUCell if kind == "gru" else torch.nn.LSTMCell)(VOCAB, HIDDEN)
    options = dict(dtype="float64", algorithm="rtrl", streams=streams, seed=1)
    user = uoro.Learner(cells.from_torch(module), **options)
    builtin = uoro.Learner(kind, VOCAB, HIDDEN, **options)
    builtin.set_parameters(user.parameters())  # torch's names are the built-in names
    xs, ys = tokens(2, streams=None if streams == 1 else streams)
    losses_u, grads_u = user.gradients(xs, ys)
    losses_b, grads_b = builtin.gradients(xs, ys)
    np.testing.assert_allclose(losses_u, losses_b, atol=1e-12)
    for t in (0, len(xs) - 1):
        g_u, g_b = named(user, grads_u[t]), named(builtin, grads_b[t])
        for name in g_b:
            np.testing.assert_allclose(g_u[name], g_b[name], rtol=0, atol=1e-10, err_msg=name)
    assert np.abs(grads_b).max() > 1e-3


class StackedGRU(torch.nn.Module):
    """Two GRU layers; the state is [h1; h2] and the readout sees the top layer."""

    def __init__(self, inputs, hidden):
        super().__init__()
        self.hidden = hidden
        self.lower = torch.nn.GRUCell(inputs, hidden)
        self.upper = torch.nn.GRUCell(hidden, hidden)

    def forward(self, x, s):
        h1 = self.lower(x, s[:, : self.hidden])
        h2 = self.upper(h1, s[:, self.hidden :])
        return torch.cat([h2, h1], dim=1)


def stacked_cell(hidden=HIDDEN):
    torch.manual_seed(3)
    module = StackedGRU(VOCAB, hidden).double()
    return cells.from_torch(module, input_size=VOCAB, state_size=2 * hidden, hidden_size=hidden)


def test_rtrl_on_a_stacked_gru_matches_finite_differences_through_the_whole_history():
    cell = stacked_cell()
    learner = uoro.Learner(cell, dtype="float64", algorithm="rtrl", seed=4)
    xs, ys = tokens(5, length=12)
    theta = learner.theta
    gradient = learner.gradients(xs, ys)[1].sum(axis=0)  # of the summed loss

    def total_loss(t):
        probe = uoro.Learner(cell, dtype="float64", seed=4)
        probe.theta = t
        return probe.evaluate(xs, ys).sum()

    rng = np.random.default_rng(6)
    for _ in range(3):
        direction = rng.normal(size=theta.size)
        eps = 1e-5
        numeric = (total_loss(theta + eps * direction) - total_loss(theta - eps * direction)) / (
            2 * eps
        )
        assert numeric == pytest.approx(gradient @ direction, rel=1e-6, abs=1e-9)


def test_uoro_on_a_stacked_gru_is_unbiased_against_rtrl():
    cell = stacked_cell(hidden=2)
    xs, ys = tokens(7, length=4)
    reference = uoro.Learner(cell, dtype="float64", algorithm="rtrl")
    n_cell = reference._core.n_cell_params
    exact = reference.gradients(xs, ys)[1][-1][:n_cell]

    def estimate(seed):
        learner = uoro.Learner(cell, dtype="float64", seed=seed)
        learner.theta = reference.theta
        return learner.gradients(xs, ys)[1][-1][:n_cell]

    estimates = np.stack([estimate(1 + i) for i in range(3000)])
    assert_unbiased(estimates, exact)
    assert is_rejected(estimates, 1.15 * exact)
    assert is_rejected(estimates, 0.85 * exact)


def test_learned_values_go_back_into_the_module(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.GRUCell(VOCAB, HIDDEN)  # float32 module, float64 learner
    cell = cells.from_torch(module)
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    learner = uoro.Learner(cell, dtype="float64", lr=0.05)
    learner.fit(*tokens(8, length=50))
    for name, value in module.state_dict().items():  # untouched while learning
        assert torch.equal(value, before[name])
    cell.to_torch(learner)
    params = learner.parameters()
    for name, value in module.named_parameters():
        assert value.dtype == torch.float32
        np.testing.assert_allclose(value.detach().numpy(), params[name], rtol=1e-6)
    # checkpoints with the torch cell resume exactly
    learner.save(tmp_path / "torch.npz")
    restored = uoro.load(tmp_path / "torch.npz", cell=cell)
    xs, ys = tokens(9, length=20)
    np.testing.assert_array_equal(restored.fit(xs, ys), learner.fit(xs, ys))


def test_from_torch_needs_sizes_it_cannot_read():
    class Bare(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, x, s):
            return torch.tanh(s * self.w + x)

    with pytest.raises(ValueError, match="Bare has no input_size: give input_size="):
        cells.from_torch(Bare())
    with pytest.raises(ValueError, match="Bare has no hidden_size: give state_size="):
        cells.from_torch(Bare(), input_size=3)
    cell = cells.from_torch(Bare(), input_size=3, state_size=3)
    learner = uoro.Learner(cell, loss="squared_error", output_size=1)
    assert learner.step(np.ones(3, np.float32), np.ones(1, np.float32)) >= 0
