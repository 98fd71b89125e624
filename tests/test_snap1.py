"""SnAp-1 against exact RTRL: exact where each unit's recurrence involves only itself,
biased (but close) elsewhere; learns; works with every learner guarantee."""

from __future__ import annotations

import numpy as np
import pytest
from test_estimators import HIDDEN, frozen, nonlinear_theta, sequence

import uoro
from uoro import influence

CELLS = ["rnn", "gru", "lstm"]


def per_unit_recurrence(cell: str) -> np.ndarray:
    """`nonlinear_theta` with the recurrent weight matrices made diagonal: every unit's
    state depends on its own past only, so ∂F/∂s is block-diagonal per unit."""
    learner = frozen(cell, "rtrl", theta=nonlinear_theta(cell))
    params = learner.parameters()
    hh = params["weight_hh"]
    gates = hh.shape[0] // HIDDEN
    mask = np.tile(np.eye(HIDDEN), (gates, 1))
    params["weight_hh"] = hh * mask
    learner.set_parameters(params)
    return learner.theta


@pytest.mark.parametrize("cell", CELLS)
def test_snap1_is_exact_when_units_recur_only_on_themselves(cell):
    xs, ys = sequence()
    theta = per_unit_recurrence(cell)
    exact = frozen(cell, "rtrl", theta=theta).gradients(xs, ys)
    snap = frozen(cell, "snap1", theta=theta).gradients(xs, ys)
    np.testing.assert_array_equal(snap[0], exact[0])
    np.testing.assert_allclose(snap[1], exact[1], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("cell", CELLS)
def test_snap1_is_biased_but_close_with_dense_recurrence(cell):
    xs, ys = sequence()
    theta = nonlinear_theta(cell)
    exact = frozen(cell, "rtrl", theta=theta).gradients(xs, ys)[1]
    snap = frozen(cell, "snap1", theta=theta).gradients(xs, ys)[1]
    # The first step has no past: exact. Later the cross-unit influences are missing.
    np.testing.assert_allclose(snap[0], exact[0], rtol=1e-10, atol=1e-13)
    gap = np.linalg.norm(snap[-1] - exact[-1]) / np.linalg.norm(exact[-1])
    assert gap > 1e-4, "dropping the off-diagonal influences must lose something"
    cosines = [
        snap[t] @ exact[t] / (np.linalg.norm(snap[t]) * np.linalg.norm(exact[t]))
        for t in range(len(exact))
    ]
    assert min(cosines) > 0.5, cosines


def test_snap1_is_deterministic_and_needs_no_random_signs():
    xs, ys = sequence()
    a = frozen("gru", "snap1", seed=1, theta=nonlinear_theta("gru")).gradients(xs, ys)[1]
    b = frozen("gru", "snap1", seed=2, theta=nonlinear_theta("gru")).gradients(xs, ys)[1]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_snap1_learns_a_pattern_that_needs_memory(cell):
    # "aab" repeated: after an "a" the next token depends on the token before it.
    tokens = np.array([0, 0, 1] * 1500)
    learner = uoro.Learner(cell, 2, 8, algorithm="snap1", lr=0.02, seed=0)
    losses = learner.fit(tokens[:-1], tokens[1:])
    assert losses[-300:].mean() < 0.05, losses[-300:].mean()


def test_snap1_on_the_influence_cell_is_rtrl():
    # Its one parameter reaches every unit in one step: SnAp-1 keeps all of ∂s/∂θ.
    xs, ys = influence.stream(300)
    snap = influence.learner(theta=0.1, algorithm="snap1", lr=1e-3)
    exact = influence.learner(theta=0.1, algorithm="rtrl", lr=1e-3)
    np.testing.assert_array_equal(snap.fit(xs, ys), exact.fit(xs, ys))
    np.testing.assert_array_equal(snap.theta, exact.theta)


def test_snap1_reset_state_zeroes_the_influence_and_checkpoints_hold_it():
    xs, ys = sequence()
    learner = frozen("lstm", "snap1", theta=nonlinear_theta("lstm"))
    learner.gradients(xs, ys)
    state = learner.state_dict()
    assert state["snap_influence"].shape == (2, learner._core.n_cell_params)  # h and c
    assert state["snap_influence"].any()
    learner.reset_state()
    assert not learner.state_dict()["snap_influence"].any()
