"""The Learner: it learns, it is deterministic, its optimizer is the documented one, and
its conveniences do what they say."""

from __future__ import annotations

import gc
import inspect
import pickle
import weakref

import numpy as np
import pytest

import uoro

CELLS = ["rnn", "gru", "lstm"]
# Period 8: after a 0 the next token depends on what came three steps earlier.
PATTERN = np.array([0, 1, 0, 2, 0, 1, 0, 3])


def conditional_entropy_nats(stream: np.ndarray) -> float:
    """H(next | current): the best loss of a predictor that sees only the current token."""
    pairs = np.stack([stream[:-1], stream[1:]], axis=1)
    total = 0.0
    for current in np.unique(pairs[:, 0]):
        nxt = pairs[pairs[:, 0] == current, 1]
        p = np.bincount(nxt) / nxt.size
        p = p[p > 0]
        total += nxt.size / len(pairs) * float(-(p * np.log(p)).sum())
    return total


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_learns_a_periodic_stream(cell, dtype):
    stream = np.tile(PATTERN, 1500)
    memoryless = conditional_entropy_nats(stream)
    assert memoryless == pytest.approx(0.5 * 1.5 * np.log(2), rel=1e-3)
    learner = uoro.Learner(cell, 4, 16, lr=3e-3, dtype=dtype, seed=0)
    losses = learner.fit(stream[:-1], stream[1:])
    assert losses.dtype == np.dtype(dtype)
    assert losses[:200].mean() > memoryless
    assert losses[-1000:].mean() < 0.4 * memoryless


def test_same_seed_is_bit_identical_and_seeds_differ():
    stream = np.tile(PATTERN, 50)
    runs = []
    for seed in (7, 7, 8):
        learner = uoro.Learner("gru", 4, 8, seed=seed)
        runs.append(
            (
                learner.fit(stream[:-1], stream[1:]),
                learner.theta,
                learner._core.estimator_arrays["s_tilde"],
            )
        )
    assert np.array_equal(runs[0][0], runs[1][0])
    assert np.array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_different_seeds_draw_different_signs_on_same_parameters():
    a, b = uoro.Learner("gru", 4, 8, seed=1), uoro.Learner("gru", 4, 8, seed=2)
    b.theta = a.theta
    a.step(0, 1)
    b.step(0, 1)
    # After one step s̃ = ρ1 ν: its signs are the drawn signs.
    assert not np.array_equal(
        np.sign(a._core.estimator_arrays["s_tilde"]),
        np.sign(b._core.estimator_arrays["s_tilde"]),
    )


def test_step_and_fit_agree():
    stream = np.tile(PATTERN, 20)
    a, b = uoro.Learner("lstm", 4, 8, seed=3), uoro.Learner("lstm", 4, 8, seed=3)
    chunk = a.fit(stream[:-1], stream[1:])
    single = [b.step(int(x), int(y)) for x, y in zip(stream[:-1], stream[1:])]
    np.testing.assert_array_equal(chunk, np.array(single, dtype=np.float32))
    np.testing.assert_array_equal(a.theta, b.theta)


def test_one_stream_step_is_a_builtin_with_the_methods_arguments_and_errors():
    """A one-stream `step` is the core's own builtin (no Python frame in between): it
    takes x, y, mask as the method does, refuses what the method refuses without
    changing anything, and dies with its learner."""
    a, b = uoro.Learner("gru", 4, 6, seed=1), uoro.Learner("gru", 4, 6, seed=1)
    assert list(inspect.signature(a.step).parameters) == ["x", "y", "mask"]
    assert a.step(1, 2) == b.step(x=1, y=2)
    assert a.step(np.int64(3), np.int32(0), None) == b.step(3, y=0, mask=None)
    assert a.step(2, 1) == uoro.Learner.step(b, 2, 1)  # the method, called on the class
    np.testing.assert_array_equal(a.theta, b.theta)
    before, seen = a.theta, a.samples_seen
    refused = [
        (ValueError, "mask applies to learners with streams > 1", (1, 2, [True]), {}),
        (TypeError, "missing required argument 'y'", (1,), {}),
        (TypeError, "unexpected keyword argument 'z'", (1, 2), {"z": 3}),
        (TypeError, "multiple values for argument 'x'", (1, 2), {"x": 3}),
        (TypeError, "at most 3 arguments", (1, 2, None, 4), {}),
        (IndexError, r"y token 9 is out of range \[0, 4\)", (1, 9), {}),
        (TypeError, "y must be an int class index", (1, 0.5), {}),
        (ValueError, r"x must have shape \(4,\)", ([0.5, 1.0], 2), {}),
    ]
    for error, message, args, kwargs in refused:
        with pytest.raises(error, match=message):
            a.step(*args, **kwargs)
    np.testing.assert_array_equal(a.theta, before)
    assert a.samples_seen == seen
    # A pickled copy steps its own core; the original is left as it was.
    copy = pickle.loads(pickle.dumps(a))
    copy.step(1, 2)
    np.testing.assert_array_equal(a.theta, before)
    assert copy.samples_seen == seen + 1 and a.samples_seen == seen
    # The builtin holds the core, not the learner: nothing keeps a dropped learner alive.
    gone = weakref.ref(a)
    del a, copy
    gc.collect()
    assert gone() is None


def warmed_up_pair(optimizer: str, output_size: int = 4, **options):
    """Two learners with identical estimator state after 5 non-updating steps; returns them,
    the next sample and the gradient estimate that sample will produce."""
    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, 4, 6), rng.integers(0, 4, 6)
    make = lambda: uoro.Learner(
        "gru", 4, 6, output_size, optimizer=optimizer, dtype="float64", seed=5, **options
    )  # noqa: E731
    a, b = make(), make()
    a.gradients(xs[:5], ys[:5])
    grad = b.gradients(xs, ys)[1][-1]
    return a, (int(xs[5]), int(ys[5])), grad


def test_sgd_update_applies_the_estimate_with_the_schedule():
    learner, sample, grad = warmed_up_pair("sgd", lr=0.1, lr_decay=0.5)
    learner._core.steps = 4  # η_t = η / (1 + α √t) at t = 4
    assert learner.learning_rate == pytest.approx(0.1 / (1 + 0.5 * 2))
    before = learner.theta
    learner.step(*sample)
    np.testing.assert_allclose(learner.theta - before, -0.05 * grad, rtol=1e-10, atol=1e-15)
    assert learner.steps == 5


def test_gradient_clipping_rescales_to_the_norm():
    learner, sample, grad = warmed_up_pair("sgd", lr=1.0, clip_norm=1e-3)
    assert np.linalg.norm(grad) > 1e-3
    before = learner.theta
    learner.step(*sample)
    np.testing.assert_allclose(
        learner.theta - before, -1e-3 * grad / np.linalg.norm(grad), rtol=1e-9, atol=1e-15
    )


# 2,500 outputs: the readout (2,500 × 7) is updated in more than one chunk of columns.
@pytest.mark.parametrize("output_size", [4, 2500])
def test_adam_first_and_second_updates(output_size):
    learner, sample, grad = warmed_up_pair("adam", output_size, lr=0.01)
    before = learner.theta
    learner.step(*sample)
    # First Adam step: bias-corrected m̂ = g, v̂ = g², so Δθ = −η g / (|g| + ε).
    expected = -0.01 * grad / (np.abs(grad) + 1e-8)
    np.testing.assert_allclose(learner.theta - before, expected, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(learner._core.adam_m, 0.1 * grad, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(learner._core.adam_v, 0.001 * grad**2, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("output_size", [4, 2500])
def test_readout_gradient_is_exact(output_size):
    learner = uoro.Learner("gru", 4, 6, output_size, dtype="float64", seed=5)
    xs, ys = np.array([1, 3, 0]), np.array([2, 0, 3])
    grad = learner.gradients(xs, ys)[1][-1]
    d_out = learner.prediction.copy()
    d_out[ys[-1]] -= 1  # softmax + cross-entropy: ∂ℓ/∂o = p − e_y
    v = np.append(learner.state, 1.0)  # the readout reads [h; 1]
    readout = grad[learner._core.n_cell_params :]
    np.testing.assert_allclose(readout, np.outer(d_out, v).ravel(order="F"), rtol=1e-12, atol=0)


def test_rtrl_learner_with_adam_follows_numpy_adam():
    rng = np.random.default_rng(1)
    xs, ys = rng.integers(0, 3, 5), rng.integers(0, 3, 5)
    learner = uoro.Learner("rnn", 3, 4, algorithm="rtrl", lr=0.05, lr_decay=0.3, dtype="float64")
    probe = uoro.Learner("rnn", 3, 4, algorithm="rtrl", optimizer="sgd", lr=0.0, dtype="float64")
    theta, m, v = learner.theta, 0.0, 0.0
    for t in range(5):
        probe.theta = theta
        probe.state = learner.state
        probe._core.estimator_arrays = {"jacobian": learner._core.estimator_arrays["jacobian"]}
        g = probe.gradients(xs[t : t + 1], ys[t : t + 1])[1][0]
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        lr = 0.05 / (1 + 0.3 * np.sqrt(t))
        theta = theta - lr * (m / (1 - 0.9 ** (t + 1))) / (
            np.sqrt(v) / np.sqrt(1 - 0.999 ** (t + 1)) + 1e-8
        )
        learner.step(int(xs[t]), int(ys[t]))
        np.testing.assert_allclose(learner.theta, theta, rtol=1e-10, atol=1e-14)


def test_prediction_predict_and_evaluate():
    learner = uoro.Learner("gru", 4, 8, seed=0)
    learner.fit(PATTERN[:-1], PATTERN[1:])
    state, theta = learner.state, learner.theta
    probs = learner.predict(0)
    assert probs.shape == (4,) and probs.sum() == pytest.approx(1.0, abs=1e-6)
    losses = learner.evaluate(PATTERN[:-1], PATTERN[1:])
    np.testing.assert_array_equal(learner.state, state)  # nothing changed
    np.testing.assert_array_equal(learner.theta, theta)
    loss = learner.step(0, 1)
    np.testing.assert_allclose(learner.prediction, probs, rtol=1e-6)
    assert loss == pytest.approx(-np.log(probs[1]), rel=1e-5)
    assert losses[0] == pytest.approx(loss, rel=1e-6)


def test_reset_state_zeroes_state_and_sensitivity():
    learner = uoro.Learner("lstm", 4, 8)
    learner.fit(PATTERN[:-1], PATTERN[1:])
    learner.reset_state()
    assert not learner.state.any()
    memory = learner._core.estimator_arrays
    assert not memory["s_tilde"].any() and not memory["theta_tilde"].any()


def test_dense_float_inputs_and_squared_error():
    rng = np.random.default_rng(0)
    t = np.arange(8000)
    signal = np.sin(0.3 * t)[:, None] + 0.01 * rng.normal(size=(t.size, 1))
    learner = uoro.Learner("gru", 1, 16, 1, loss="squared_error", lr=1e-3, lr_decay=0.01)
    losses = learner.fit(signal[:-1], signal[1:])
    assert losses[-1000:].mean() < 0.05 * losses[:1000].mean()
    x = signal[0].astype(np.float32)
    assert isinstance(learner.step(x, signal[1].astype(np.float32)), float)
    assert learner.prediction.shape == (1,)
    # Lists and other dtypes are converted (once) rather than refused.
    assert np.isfinite(learner.step([0.5], [0.4]))


def test_parameters_round_trip_and_layout():
    learner = uoro.Learner("gru", 4, 8, 5)
    params = learner.parameters()
    assert {k: v.shape for k, v in params.items()} == {
        "weight_ih": (24, 4),
        "bias_ih": (24,),
        "weight_hh": (24, 8),
        "bias_hh": (24,),
        "readout.weight": (5, 8),
        "readout.bias": (5,),
    }
    assert sum(v.size for v in params.values()) == learner.n_params
    bound = 1 / np.sqrt(8)  # PyTorch's default init
    assert np.abs(learner.theta).max() <= bound
    other = uoro.Learner("gru", 4, 8, 5, seed=1)
    other.set_parameters(params)
    np.testing.assert_array_equal(other.theta, learner.theta)
    rnn = uoro.Learner("rnn", 4, 8).parameters()
    assert {k: v.shape for k, v in rnn.items()} == {
        "weight_ih": (8, 4),
        "weight_hh": (8, 8),
        "bias": (8,),
        "readout.weight": (4, 8),
        "readout.bias": (4,),
    }


def test_repr_config_and_clone():
    learner = uoro.Learner("lstm", 4, 8, lr=0.01, seed=3)
    assert (
        repr(learner)
        == "Learner(cell='lstm', input_size=4, hidden_size=8, output_size=4, lr=0.01, seed=3)"
    )
    clone = learner.clone()
    assert clone.config == learner.config
    np.testing.assert_array_equal(clone.theta, learner.theta)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"cell": "transformer"},
            ValueError,
            "cell must be one of 'rnn', 'gru', 'lstm', 'mingru', 'minlstm', 'indrnn', 'influence'; "
            "got 'transformer'",
        ),
        ({"hidden_size": 0}, ValueError, "hidden_size must be an integer >= 1; got 0"),
        ({"algorithm": "bptt"}, ValueError, "algorithm must be one of"),
        ({"lr": -1}, ValueError, "lr must be a finite number >= 0; got -1"),
        ({"lr": "fast"}, TypeError, "lr must be a real number"),
        ({"dtype": "float16"}, ValueError, "dtype must be one of"),
        ({"beta2": 1.0}, ValueError, r"beta2 must be in \[0, 1\)"),
    ],
)
def test_bad_options_are_named(kwargs, error, message):
    options = {"cell": "gru", "input_size": 4, "hidden_size": 8, **kwargs}
    with pytest.raises(error, match=message):
        uoro.Learner(**options)


def test_bad_samples_raise_and_change_nothing():
    learner = uoro.Learner("gru", 4, 8)
    learner.fit(PATTERN[:-1], PATTERN[1:])
    snapshot = (
        learner.theta,
        learner.state,
        learner._core.estimator_arrays["theta_tilde"],
        learner._core.rng_state,
    )
    with pytest.raises(IndexError, match=r"x token 4 is out of range \[0, 4\)"):
        learner.step(4, 0)
    with pytest.raises(IndexError, match=r"y token -1 is out of range"):
        learner.step(0, -1)
    with pytest.raises(ValueError, match=r"x must have shape \(4,\), got \(3,\)"):
        learner.step(np.zeros(3, np.float32), 0)
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        learner.step(np.array([0, np.nan, 0, 0], np.float32), 0)
    with pytest.raises(IndexError, match=r"xs\[5\] = 9 is out of range"):
        learner.fit(np.array([0, 1, 2, 3, 0, 9, 1]), np.zeros(7, np.int64))
    with pytest.raises(ValueError, match="xs and ys must have the same length, got 3 and 2"):
        learner.fit([0, 1, 2], [0, 1])
    with pytest.raises(TypeError, match="y must be an int class index"):
        learner.step(0, 1.5)
    after = (
        learner.theta,
        learner.state,
        learner._core.estimator_arrays["theta_tilde"],
        learner._core.rng_state,
    )
    for before, now in zip(snapshot, after):
        np.testing.assert_array_equal(before, now)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("k,i", [(0, 0), (6, 2), (9, 12)])
def test_a_non_finite_input_value_is_found_wherever_it_is(bad, k, i):
    learner = uoro.Learner("gru", 13, 8, loss="squared_error", output_size=1, seed=0)
    xs = np.random.default_rng(0).normal(size=(10, 13)).astype(np.float32)
    xs[k, i] = bad
    theta = learner.theta
    with pytest.raises(ValueError, match=rf"xs\[{k}\] contains NaN or inf"):
        learner.fit(xs, np.zeros((10, 1), np.float32))
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        learner.step(xs[k], np.zeros(1, np.float32))
    np.testing.assert_array_equal(learner.theta, theta)
    assert learner.samples_seen == 0


def test_losses_convert_to_bits():
    assert uoro.to_bits(np.log(2)) == pytest.approx(1.0)
    np.testing.assert_allclose(uoro.to_bits(np.array([0.0, 2 * np.log(2)])), [0.0, 2.0])


def test_learning_leaves_the_callers_subnormal_floats_alone():
    # The core flushes subnormals to zero while it runs and must restore the mode after.
    tiny = np.array([1e-300, 1e-30], dtype=np.float64)
    learner = uoro.Learner("gru", 4, 8, seed=0)
    learner.fit(PATTERN[:-1], PATTERN[1:])
    learner.step(0, 1)
    learner.evaluate(PATTERN[:-1], PATTERN[1:])
    assert tiny[0] * 1e-10 != 0.0  # 1e-310: subnormal in float64
    assert np.float32(tiny[1]) * np.float32(1e-15) != 0.0  # 1e-45: subnormal in float32


def test_a_learning_step_without_a_target_is_refused():
    # Regression: step(x, None) with the squared-error loss read through a null target.
    learner = uoro.Learner("gru", 4, 3, 2, loss="squared_error", dtype="float64")
    theta, state = learner.theta, learner.state
    with pytest.raises(TypeError, match=r"y must be a numpy array of dtype float64"):
        learner.step(1, None)
    np.testing.assert_array_equal(learner.theta, theta)
    np.testing.assert_array_equal(learner.state, state)
    assert learner.predict(1).shape == (2,)  # predict needs no target
