"""UORO over many streams in groups (stream_groups=G): each group an independent UORO
estimate of its own streams' sensitivity. Unbiased for the tick's mean loss (masks and
uneven groups included), quieter as G grows, exact checkpoints, clipping that sees the
gradient the pass applies, and clear errors for options it does not apply to."""

from __future__ import annotations

import numpy as np
import pytest
from test_streams import HIDDEN, VOCAB, assert_unchanged, theta_for
from unbiasedness import assert_unbiased, is_rejected

import uoro

B = 4


def make(cell="gru", algorithm="uoro", streams=B, seed=0, **options):
    base = dict(optimizer="sgd", lr=0.0, dtype="float64", seed=seed)
    base.update(options)
    return uoro.Learner(cell, VOCAB, HIDDEN, algorithm=algorithm, streams=streams, **base)


def data(seed=0, length=8, streams=B):
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, (length, streams)), rng.integers(0, VOCAB, (length, streams))


def estimates(cell, n, mask=None, data_seed=6, length=8, **options):
    """n estimates (seeds 1..n) of the last tick's mean-loss gradient of the cell's
    parameters, and the exact one (RTRL over the same streams)."""
    xs, ys = data(data_seed, length)
    theta = theta_for(cell)
    reference = make(cell, "rtrl")
    reference.theta = theta
    n_cell = reference._core.n_cell_params
    exact = reference.gradients(xs, ys, mask)[1][-1][:n_cell]
    out = []
    for i in range(n):
        learner = make(cell, "uoro", seed=1 + i, **options)
        learner.theta = theta
        out.append(learner.gradients(xs, ys, mask)[1][-1][:n_cell])
    return np.stack(out), exact


@pytest.mark.parametrize(
    "cell,options",
    [
        ("gru", {"stream_groups": B}),  # one stream per group: the fused pass
        ("lstm", {"stream_groups": 2}),
        ("gru", {"stream_groups": 3}),  # uneven groups (1, 1, 2 streams)
        ("gru", {"stream_groups": 2, "rank": 2}),  # rank > 1: the separate pass
    ],
)
def test_grouped_uoro_is_unbiased_for_the_mean_loss(cell, options):
    found, exact = estimates(cell, 20_000, **options)
    assert_unbiased(found, exact)
    assert is_rejected(found, 1.15 * exact)
    assert is_rejected(found, 0.85 * exact)


def test_grouped_uoro_is_unbiased_with_streams_left_out():
    """Absent streams keep their state and draw no signs; a group may be wholly absent."""
    mask = np.random.default_rng(3).random((8, B)) < 0.6
    mask[-1] = [True, False, False, True]  # groups (0, 1) and (2, 3) half present
    mask[-3, :2] = False  # group 0 absent from a tick
    found, exact = estimates("gru", 20_000, mask=mask, stream_groups=2)
    assert_unbiased(found, exact)
    assert is_rejected(found, 1.15 * exact)
    assert is_rejected(found, 0.85 * exact)


def test_per_stream_uoro_is_unbiased_across_its_exact_norm_ticks():
    """One estimate per stream keeps θ̃_b = σ_b·t_b and follows ‖θ̃_b‖² by its expectation,
    summing it exactly every 16 ticks: unbiased at tick 20 (15 lazy ticks, an exact one,
    four lazy again), with streams left out."""
    mask = np.random.default_rng(4).random((20, B)) < 0.8
    found, exact = estimates("gru", 20_000, mask=mask, length=20, stream_groups=B)
    assert_unbiased(found, exact)
    assert is_rejected(found, 1.15 * exact)
    assert is_rejected(found, 0.85 * exact)


def tracked_and_summed(learner):
    """Per stream: the tracked ‖θ̃_b‖² and σ_b²‖t_b‖², summed from the stored θ̃."""
    arrays = learner._core.estimator_arrays
    summed = arrays["theta_tilde_scale"] ** 2 * (arrays["theta_tilde"] ** 2).sum(axis=1)
    return arrays["theta_tilde_norm2"], summed


def step_to_an_exact_tick(learner, xs, ys, least):
    """Steps the learner through xs, ys until it has taken at least `least` ticks and the
    last was an exact-norm tick; returns the ticks taken."""
    t = 0
    while t < least or learner._core.estimator_arrays["lazy_ticks"][0] != 0:
        learner.step(xs[t], ys[t])
        t += 1
    return t


def test_per_stream_norms_are_summed_exactly_at_least_every_16_ticks():
    """After each exact tick σ_b is 1 and the tracked ‖θ̃_b‖² is the sum to rounding; the
    tick count runs up to 15 and back to 0."""
    xs, ys = data(1, length=64)
    learner = make("gru", stream_groups=B, optimizer="adam", lr=0.01)
    counts = []
    for t in range(64):
        learner.step(xs[t], ys[t])
        counts.append(int(learner._core.estimator_arrays["lazy_ticks"][0]))
        if counts[-1] == 0:
            np.testing.assert_array_equal(learner._core.estimator_arrays["theta_tilde_scale"], 1.0)
            np.testing.assert_allclose(*tracked_and_summed(learner), rtol=1e-12)
    # An exact tick every 16 at most (earlier when σ_b would leave its range: the first).
    assert all(c in (0, last + 1) for last, c in zip([-1, *counts], counts)), counts
    assert max(counts) == 15 and counts.count(0) >= 4, counts


def test_the_tracked_norm_is_the_expected_norm_over_the_ticks_signs():
    """From one state right after an exact tick, one lazy tick under 4000 sign draws: the
    mean of ‖θ̃_b′‖² is the mean of the tracked N_b′ = N_b/ρ0² + ‖a_b‖²/ρ1² (the cross
    term 2⟨θ̃_b, a_b⟩/(ρ0ρ1) is odd in the signs), within 2 % and 4 standard errors,
    where dropping ‖a_b‖²/ρ1² or the 1/ρ0² would be off by far more."""
    xs, ys = data(5, length=40)
    learner = make("gru", stream_groups=B, optimizer="adam", lr=0.01)
    t = step_to_an_exact_tick(learner, xs, ys, 20)
    state = learner.state_dict()
    words = len(state["rng_state"])
    tracked, summed = [], []
    for seed in range(4000):
        state["rng_state"] = np.random.default_rng(seed).integers(1, 2**63, words, dtype=np.uint64)
        learner.load_state_dict(state)
        learner.step(xs[t], ys[t])
        assert learner._core.estimator_arrays["lazy_ticks"][0] == 1
        found = tracked_and_summed(learner)
        tracked.append(found[0])
        summed.append(found[1])
    difference = np.array(summed) - np.array(tracked)
    mean = np.array(tracked).mean(axis=0)
    error = difference.std(axis=0) / np.sqrt(len(difference))
    assert np.all(np.abs(difference.mean(axis=0)) < 4 * error), (difference.mean(axis=0), error)
    assert np.all(np.abs(difference.mean(axis=0)) < 0.02 * mean), (difference.mean(axis=0), mean)
    assert np.all(difference.std(axis=0) > 0.05 * mean)  # the cross term is there, and averages out


def test_checkpoints_from_before_the_scaled_theta_tilde_resume_bit_exactly():
    """A checkpoint without theta_tilde_scale and lazy_ticks (from before them) holds the
    actual θ̃ and its exact norm: it loads as σ = 1 after an exact tick."""
    xs, ys = data(3, length=40)
    learner = make("gru", stream_groups=B, optimizer="adam", lr=0.01)
    t = step_to_an_exact_tick(learner, xs, ys, 2)
    state = learner.state_dict()
    del state["lazy_ticks"]
    np.testing.assert_array_equal(state.pop("theta_tilde_scale"), 1.0)
    resumed = uoro.Learner.from_state_dict(state)
    np.testing.assert_array_equal(learner.fit(xs[t:], ys[t:]), resumed.fit(xs[t:], ys[t:]))
    np.testing.assert_array_equal(learner.theta, resumed.theta)


def noise(found, exact):
    """The estimates' mean squared error relative to ‖exact‖²."""
    return float(np.mean(((found - exact) ** 2).sum(axis=1)) / (exact**2).sum())


def test_noise_falls_as_the_groups_grow():
    """Independent groups average their noise: at B = 4, four groups of one stream give
    well under half the error of one system (measured 0.22× on these seeds; two groups 0.49×)."""
    errors = {g: noise(*estimates("gru", 2_000, data_seed=9, stream_groups=g)) for g in (1, 2, 4)}
    assert errors[2] < 0.8 * errors[1], errors
    assert errors[4] < 0.5 * errors[1], errors


@pytest.mark.parametrize("rank", [1, 2])
def test_checkpoints_of_grouped_uoro_resume_bit_exactly(rank, tmp_path):
    """Rank 1 is the per-stream pass (two groups of one stream): saved between its exact
    norm ticks and resumed across the next one."""
    xs, ys = data(2, length=40)
    learner = make("lstm", optimizer="adam", lr=0.01, stream_groups=2, rank=rank)
    learner.fit(xs[:21], ys[:21])
    learner.save(tmp_path / "grouped.npz")
    assert learner._core.estimator_arrays["theta_tilde"].shape[0] == 2 * rank
    resumed = uoro.load(tmp_path / "grouped.npz")
    np.testing.assert_array_equal(learner.fit(xs[21:], ys[21:]), resumed.fit(xs[21:], ys[21:]))
    np.testing.assert_array_equal(learner.theta, resumed.theta)


def test_checkpoints_from_before_groups_load_as_one_group():
    learner = make("gru", stream_groups=1)
    state = learner.state_dict()
    del state["config"]["stream_groups"]
    copy = uoro.Learner.from_state_dict(state)
    assert copy._options["stream_groups"] == 1


def test_clipping_sees_the_gradient_the_pass_applies():
    """SGD with clip_norm c moves θ by lr·c·g/‖g‖: the norm taken before the pass (over
    every group's θ̃) is that of the gradient the pass then writes."""
    xs, ys = data(4, length=6)
    options = dict(optimizer="sgd", lr=0.1, stream_groups=B, lr_scaling="none")
    free = make("gru", **options)
    clipped = make("gru", clip_norm=1e-3, **options)
    free.fit(xs[:-1], ys[:-1])
    clipped.fit(xs[:-1], ys[:-1])
    clipped.load_state_dict(free.state_dict() | {"config": clipped.state_dict()["config"]})
    before = free.theta.copy()
    free.fit(xs[-1:], ys[-1:])
    clipped.fit(xs[-1:], ys[-1:])
    step = free.theta - before
    assert np.linalg.norm(step) > 1e-2
    np.testing.assert_allclose(
        clipped.theta - before, step * (0.1 * 1e-3) / np.linalg.norm(step), rtol=1e-9, atol=1e-15
    )


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(stream_groups=B + 1), "at most streams"),
        (dict(stream_groups=0), "stream_groups"),
        (dict(stream_groups=2, algorithm="rtrl"), "applies to algorithm 'uoro'"),
        (dict(stream_groups=2, memory=2), "memory=1"),
        (dict(stream_groups=2, streams=1), "streams > 1"),
    ],
)
def test_bad_groups_are_refused_by_name(options, match):
    with pytest.raises(ValueError, match=match):
        make(**options)


def test_a_bad_tick_leaves_a_grouped_learner_unchanged():
    xs, ys = data(5)
    learner = make("gru", optimizer="adam", lr=0.01, stream_groups=2)
    learner.fit(xs[:4], ys[:4])
    before = learner.state_dict()
    bad = xs[4:6].copy()
    bad[1, 2] = VOCAB
    with pytest.raises(IndexError, match="out of range"):
        learner.fit(bad, ys[4:6])
    assert_unchanged(learner, before)


# ---- the rate over many streams (lr_scaling)


@pytest.mark.parametrize(
    "scaling,rate",
    [(None, 2 * 0.01), ("sqrt", 2 * 0.01), ("linear", 4 * 0.01), ("none", 0.01)],
)
def test_lr_scaling_sets_the_rate_and_counts_the_decay_in_samples(scaling, rate):
    """lr and lr_decay are one stream's: with B = 4, η·√B (or η·B) and the decay clock
    counted in samples, α·√B per tick; "none" runs them per tick as given."""
    learner = make("gru", optimizer="adam", lr=0.01, lr_decay=0.1, lr_scaling=scaling)
    assert learner.learning_rate == pytest.approx(rate, rel=1e-12)
    xs, ys = data(7, length=9)
    learner.fit(xs, ys)
    alpha = 0.1 * (1 if scaling == "none" else 2)
    assert learner.learning_rate == pytest.approx(rate / (1 + alpha * 3), rel=1e-12)


def test_the_default_rate_over_streams_is_documented_and_one_stream_is_unchanged():
    assert make("gru", lr=0.01)._options["lr_scaling"] == uoro.learner.DEFAULT_LR_SCALING
    single = make("gru", streams=1, lr=0.01, lr_decay=0.1)
    assert single._options["lr_scaling"] == "none"
    assert single.learning_rate == 0.01


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(lr_scaling="sqrt", streams=1), "applies to streams > 1"),
        (dict(lr_scaling="square"), "lr_scaling must be one of"),
    ],
)
def test_bad_lr_scaling_is_refused_by_name(options, match):
    with pytest.raises(ValueError, match=match):
        make(**options)


def test_checkpoints_from_before_lr_scaling_keep_their_rate():
    learner = make("gru", lr=0.01, lr_scaling="none", stream_groups=1)
    state = learner.state_dict()
    del state["config"]["lr_scaling"]
    copy = uoro.Learner.from_state_dict(state)
    assert copy.learning_rate == learner.learning_rate == 0.01
    assert "lr_scaling" not in repr(make("gru"))
    assert "lr_scaling='none'" in repr(learner)
