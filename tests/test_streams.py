"""Many streams sharing one model (streams=B): exactness against single-stream learners,
UORO's unbiasedness for the mean loss, masks, per-stream resets, validation, divergence,
checkpoints."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unbiasedness import assert_unbiased, is_rejected

import uoro

VOCAB, HIDDEN, LENGTH, B = 3, 4, 10, 3
CELLS = ["rnn", "gru", "lstm", "mingru", "minlstm", "indrnn"]


def make(cell="gru", algorithm="uoro", streams=B, seed=0, **options):
    base = dict(optimizer="sgd", lr=0.0, dtype="float64", seed=seed)
    base.update(options)
    return uoro.Learner(cell, VOCAB, HIDDEN, algorithm=algorithm, streams=streams, **base)


def data(seed=0, length=LENGTH, streams=B):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, VOCAB, (length, streams)),
        rng.integers(0, VOCAB, (length, streams)),
    )


def theta_for(cell):
    return 3.0 * make(cell, "rtrl", streams=1).theta  # saturating gates: a real test


def single_stream_grads(cell, algorithm, xs, ys, theta, **options):
    """Per-stream gradients (T, B, P) of single-stream learners on each column."""
    out = []
    for b in range(xs.shape[1]):
        learner = make(cell, algorithm, streams=1, **options)
        learner.theta = theta
        out.append(learner.gradients(xs[:, b], ys[:, b])[1])
    return np.stack(out, axis=1)


# Deterministic estimators: with B streams, the mean of the single-stream gradients.
EXACT = [
    ("rtrl", {}),
    ("tbptt", {"truncation": LENGTH}),
    ("tbptt_chunk", {"truncation": 5}),
    ("snap1", {}),
    # OK with rank ≥ every block's cols holds the influence exactly: no random reduction.
    ("ok", {"rank": 8}),
]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("algorithm,options", EXACT)
def test_exact_gradient_is_the_mean_of_the_streams(cell, algorithm, options):
    xs, ys = data()
    theta = theta_for(cell)
    learner = make(cell, algorithm, **options)
    learner.theta = theta
    losses, grads = learner.gradients(xs, ys)
    assert losses.shape == (LENGTH, B) and grads.shape == (LENGTH, theta.size)
    singles = single_stream_grads(cell, algorithm, xs, ys, theta, **options)
    np.testing.assert_allclose(grads, singles.mean(axis=1), rtol=0, atol=1e-10)
    assert np.abs(grads).max() > 1e-3  # not vacuous


@pytest.mark.parametrize("algorithm,options", EXACT)
def test_masked_gradient_is_the_mean_over_streams_present(algorithm, options):
    xs, ys = data(1)
    mask = np.random.default_rng(2).random((LENGTH, B)) < 0.6
    mask[3] = False  # a tick without any stream
    theta = theta_for("gru")
    learner = make("gru", algorithm, **options)
    learner.theta = theta
    losses, grads = learner.gradients(xs, ys, mask)
    assert np.isnan(losses[~mask]).all() and np.isfinite(losses[mask]).all()
    np.testing.assert_array_equal(grads[3], 0.0)
    # Each stream on its own sees only its present ticks.
    per_stream = []
    for b in range(B):
        single = make("gru", algorithm, streams=1, **options)
        single.theta = theta
        full = np.zeros((LENGTH, theta.size))
        ticks = np.flatnonzero(mask[:, b])
        full[ticks] = single.gradients(xs[ticks, b], ys[ticks, b])[1]
        per_stream.append(full)
    expected = np.stack(per_stream, axis=1).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)[:, None]
    np.testing.assert_allclose(grads, expected, rtol=0, atol=1e-10)


# SnAp-1's sweep over streams at sizes with whole tiles (three packets of rows), single
# packets and rows below a packet, on dense cells, a dense stack (the layer-wise rule) and
# element-wise cells (exact RTRL through SnAp-1's sweep).
SWEEPS = [
    ("rnn", 1, "snap1"),
    ("gru", 1, "snap1"),
    ("lstm", 1, "snap1"),
    ("gru", 2, "layerwise"),
    ("minlstm", 1, "rtrl"),
    ("indrnn", 1, "rtrl"),
]


@pytest.mark.parametrize("cell,layers,algorithm", SWEEPS)
@pytest.mark.parametrize("hidden", [9, 17])
def test_snap1_sweep_over_streams_is_the_mean_and_keeps_each_influence(
    cell, layers, algorithm, hidden
):
    rng = np.random.default_rng(hidden)
    streams = 4
    xs, ys = rng.integers(0, VOCAB, (LENGTH, streams)), rng.integers(0, VOCAB, (LENGTH, streams))
    mask = rng.random((LENGTH, streams)) < 0.7
    mask[:, 2] = True  # one stream present at every tick

    def new(streams):
        return uoro.Learner(
            cell, VOCAB, hidden, algorithm=algorithm, layers=layers, streams=streams,
            optimizer="sgd", lr=0.0, dtype="float64",
        )  # fmt: skip

    many = new(streams)
    theta = 3.0 * many.theta  # saturating gates: diagonals far from the identity
    many.theta = theta
    grads = many.gradients(xs, ys, mask)[1]
    expected = np.zeros((LENGTH, theta.size))
    for b in range(streams):
        single = new(1)
        single.theta = theta
        ticks = np.flatnonzero(mask[:, b])
        expected[ticks] += single.gradients(xs[ticks, b], ys[ticks, b])[1]
        for name, influence in single._core.estimator_arrays.items():
            assert name == "snap_influence"
            np.testing.assert_allclose(
                many._core.estimator_arrays[f"{name}_{b}"], influence, rtol=0, atol=1e-12
            )
    expected /= mask.sum(axis=1)[:, None]
    np.testing.assert_allclose(grads, expected, rtol=0, atol=1e-10)
    assert np.abs(grads).max() > 1e-3  # not vacuous


def test_snap1_over_streams_clips_the_mean_gradient():
    xs, ys = data(21)
    twin = make("gru", "snap1")
    twin.theta = theta_for("gru")
    gradient = twin.gradients(xs[:1], ys[:1])[1][0]
    norm = float(np.linalg.norm(gradient))
    learner = make("gru", "snap1", lr=0.5, lr_scaling="none", clip_norm=0.25 * norm)
    learner.theta = theta_for("gru")
    learner.step(xs[0], ys[0])
    np.testing.assert_allclose(
        learner.theta, theta_for("gru") - 0.5 * 0.25 * gradient, rtol=0, atol=1e-12
    )


def test_stream_masked_at_every_tick_learns_like_the_batch_without_it():
    xs, ys = data(3)
    mask = np.ones((LENGTH, B), dtype=bool)
    mask[:, 1] = False
    options = dict(optimizer="adam", lr=0.05, lr_scaling="none")  # the rate as given for any B
    with_absent = make("lstm", "rtrl", **options)
    without = make("lstm", "rtrl", streams=B - 1, **options)
    before = with_absent.state[1].copy()
    with_absent.fit(xs, ys, mask)
    without.fit(xs[:, [0, 2]], ys[:, [0, 2]])
    np.testing.assert_allclose(with_absent.theta, without.theta, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(with_absent.state[1], before)
    jacobians = with_absent._core.estimator_arrays
    np.testing.assert_array_equal(jacobians["jacobian_1"], 0.0)


def test_masked_stream_keeps_its_state_and_sensitivity():
    xs, ys = data(4)
    for algorithm, options in EXACT[:1] + [("tbptt", {"truncation": 3})]:
        learner = make("gru", algorithm, **options)
        learner.fit(xs, ys)
        state = learner.state
        arrays = learner._core.estimator_arrays
        window = learner._core.window
        mask = np.array([True, False, True])
        learner.step(xs[0], ys[0], mask)
        np.testing.assert_array_equal(learner.state[1], state[1])
        assert not np.array_equal(learner.state[0], state[0])
        for name, value in learner._core.estimator_arrays.items():
            if name.endswith("_1"):
                np.testing.assert_array_equal(value, arrays[name])
        if window.size:
            rows = len(window) // B
            np.testing.assert_array_equal(
                learner._core.window[rows : 2 * rows], window[rows : 2 * rows]
            )


def test_uoro_masked_stream_keeps_its_state():
    xs, ys = data(5)
    learner = make("gru", "uoro", optimizer="adam", lr=0.01)
    learner.fit(xs, ys)
    state = learner.state
    learner.fit(xs, ys, np.tile([True, True, False], (LENGTH, 1)))
    np.testing.assert_array_equal(learner.state[2], state[2])


def uoro_stream_estimates(cell, n, **options):
    xs, ys = data(6, length=8)
    theta = theta_for(cell)
    reference = make(cell, "rtrl")
    reference.theta = theta
    n_cell = reference._core.n_cell_params
    exact = reference.gradients(xs, ys)[1][-1][:n_cell]
    estimates = []
    for i in range(n):
        learner = make(cell, "uoro", seed=1 + i, **options)
        learner.theta = theta
        estimates.append(learner.gradients(xs, ys)[1][-1][:n_cell])
    return np.stack(estimates), exact


@pytest.mark.parametrize("cell,rank", [("gru", 1), ("lstm", 1), ("gru", 3)])
def test_uoro_over_streams_is_unbiased_for_the_mean_loss(cell, rank):
    """As one system (stream_groups=1); tests/test_stream_groups.py covers groups."""
    estimates, exact = uoro_stream_estimates(cell, 20_000, rank=rank, stream_groups=1)
    assert_unbiased(estimates, exact)
    assert is_rejected(estimates, 1.15 * exact)
    assert is_rejected(estimates, 0.85 * exact)


def memory_stream_estimates(cell, n, memory, mask=None):
    """Memory-T UORO's gradient at the close of the last window against the exact one:
    RTRL's per-tick gradients of the tick's mean loss, summed over that window."""
    xs, ys = data(15, length=3 * memory)
    theta = theta_for(cell)
    reference = make(cell, "rtrl")
    reference.theta = theta
    n_cell = reference._core.n_cell_params
    exact = reference.gradients(xs, ys, mask)[1][-memory:, :n_cell].sum(axis=0)
    estimates = []
    for i in range(n):
        learner = make(cell, "uoro", seed=1 + i, memory=memory)
        learner.theta = theta
        grads = learner.gradients(xs, ys, mask)[1]
        assert not grads[-2].any()  # mid-window: nothing applied
        estimates.append(grads[-1][:n_cell])
    return np.stack(estimates), exact


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_memory_uoro_over_streams_is_unbiased_for_the_mean_loss(cell):
    estimates, exact = memory_stream_estimates(cell, 20_000, memory=3)
    assert_unbiased(estimates, exact)
    assert is_rejected(estimates, 1.15 * exact)
    assert is_rejected(estimates, 0.85 * exact)


def test_memory_uoro_with_a_full_history_window_is_exact():
    """With the window spanning the whole sequence nothing goes through (s̃, θ̃): the
    estimate is the exact gradient, masks included."""
    xs, ys = data(16, length=6)
    mask = np.random.default_rng(16).random((6, B)) < 0.7
    mask[:, 0] = True  # stream 0 closes the window at the last tick
    theta = theta_for("gru")
    reference = make("gru", "rtrl")
    reference.theta = theta
    exact = reference.gradients(xs, ys, mask)[1].sum(axis=0)
    learner = make("gru", "uoro", memory=6)
    learner.theta = theta
    grads = learner.gradients(xs, ys, mask)[1]
    np.testing.assert_array_equal(grads[:-1], 0.0)
    np.testing.assert_allclose(grads[-1], exact, rtol=0, atol=1e-10)


def test_uoro_readout_gradient_is_exact_over_streams():
    xs, ys = data(7)
    exact = make("gru", "rtrl").gradients(xs, ys)[1]
    estimate = make("gru", "uoro").gradients(xs, ys)[1]
    n_cell = make("gru", "rtrl")._core.n_cell_params
    np.testing.assert_allclose(estimate[:, n_cell:], exact[:, n_cell:], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "algorithm,options", [("uoro", {"rank": 2}), ("uoro", {"memory": 4}), *EXACT]
)
def test_reset_of_one_stream_leaves_the_others_untouched(algorithm, options):
    xs, ys = data(8)
    learner = make("lstm", algorithm, optimizer="adam", lr=0.01, **options)
    learner.fit(xs, ys)
    before = learner.state_dict()
    learner.reset_state(streams=[1])
    after = learner.state_dict()
    np.testing.assert_array_equal(after["state"][1], 0.0)
    np.testing.assert_array_equal(after["state"][[0, 2]], before["state"][[0, 2]])
    for name in learner._core.estimator_arrays:
        if name == "s_tilde":  # (rank·B, S): rank r, stream b in row r·B + b
            rows = np.arange(len(after[name])) % B == 1
            np.testing.assert_array_equal(after[name][rows], 0.0)
            np.testing.assert_array_equal(after[name][~rows], before[name][~rows])
        elif name.endswith("_1"):
            np.testing.assert_array_equal(after[name], 0.0)
        else:
            np.testing.assert_array_equal(after[name], before[name])
    counters = np.array(after["window_counters"]).reshape(B, 3)
    if algorithm.startswith("tbptt") or options.get("memory"):
        np.testing.assert_array_equal(counters[1], 0)
        np.testing.assert_array_equal(
            counters[[0, 2]], np.array(before["window_counters"]).reshape(B, 3)[[0, 2]]
        )
    # Selections by index and by mask agree; all by default.
    a, b = make("gru", algorithm, **options), make("gru", algorithm, **options)
    a.fit(xs, ys)
    b.fit(xs, ys)
    a.reset_state(streams=2)
    b.reset_state(streams=np.array([False, False, True]))
    np.testing.assert_array_equal(a.state, b.state)
    a.reset_state()
    np.testing.assert_array_equal(a.state, 0.0)


@pytest.mark.parametrize(
    "algorithm,options",
    [
        ("uoro", {}),
        ("uoro", {"rank": 2, "clip_norm": 0.5}),
        ("uoro", {"memory": 4}),
        ("kf_rtrl", {}),
        ("ok", {"rank": 2}),
        *EXACT,
    ],
)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_checkpoints_resume_bit_exactly(tmp_path, algorithm, options, optimizer):
    xs, ys = data(9, length=23)
    mask = np.random.default_rng(9).random((23, B)) < 0.8
    learner = make("gru", algorithm, optimizer=optimizer, lr=0.01, dtype="float32", **options)
    learner.fit(xs[:11], ys[:11], mask[:11])
    path = tmp_path / "streams.npz"
    learner.save(path)
    copies = [uoro.load(path), pickle.loads(pickle.dumps(learner))]
    rest = learner.fit(xs[11:], ys[11:], mask[11:])
    for copy in copies:
        assert copy.streams == B
        np.testing.assert_array_equal(copy.fit(xs[11:], ys[11:], mask[11:]), rest)
        np.testing.assert_array_equal(copy.theta, learner.theta)
        np.testing.assert_array_equal(copy.state, learner.state)


def test_step_fit_predict_evaluate_shapes_and_agreement():
    xs, ys = data(10)
    a = make("gru", "uoro", optimizer="adam", lr=0.01)
    b = make("gru", "uoro", optimizer="adam", lr=0.01)
    stepped = np.stack([a.step(xs[t], ys[t]) for t in range(LENGTH)])
    np.testing.assert_array_equal(stepped, b.fit(xs, ys))
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.prediction.shape == (B, VOCAB)
    assert a.predict(xs[0]).shape == (B, VOCAB)
    np.testing.assert_allclose(a.predict(xs[0]).sum(axis=1), 1.0)
    state = a.state
    assert a.evaluate(xs, ys).shape == (LENGTH, B)
    np.testing.assert_array_equal(a.state, state)
    assert a.samples_seen == LENGTH and a.steps == LENGTH


def test_dense_inputs_and_squared_error():
    rng = np.random.default_rng(11)
    xs, ys = rng.normal(size=(LENGTH, B, VOCAB)), rng.normal(size=(LENGTH, B, 2))
    learner = uoro.Learner(
        "rnn", VOCAB, HIDDEN, 2, loss="squared_error", algorithm="rtrl", streams=B,
        dtype="float64", optimizer="sgd", lr=0.0,
    )  # fmt: skip
    _, grads = learner.gradients(xs, ys)
    singles = []
    for b in range(B):
        single = uoro.Learner(
            "rnn", VOCAB, HIDDEN, 2, loss="squared_error", algorithm="rtrl",
            dtype="float64", optimizer="sgd", lr=0.0,
        )  # fmt: skip
        singles.append(single.gradients(xs[:, b], ys[:, b])[1])
    np.testing.assert_allclose(grads, np.mean(singles, axis=0), rtol=0, atol=1e-10)


def assert_unchanged(learner, before):
    after = learner.state_dict()
    for name, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(after[name], value, err_msg=name)
        else:
            assert after[name] == value, name


BAD_TICKS = [
    (
        np.array([0, 1]),
        np.array([0, 1, 2]),
        None,
        ValueError,
        r"x of tokens must have shape \(3,\), got \(2,\)",
    ),
    (np.array([0, 1, 3]), np.array([0, 1, 2]), None, IndexError, r"x\[2\] = 3 is out of range"),
    (np.array([0, 1, 2]), np.array([0, -1, 2]), None, IndexError, r"y\[1\] = -1"),
    (np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([1, 0, 1]), TypeError, "mask must hold"),
    (np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([True, False]), ValueError, "mask must"),
    (np.zeros((3, 2)), np.array([0, 1, 2]), None, ValueError, r"x must have shape \(3, 3\)"),
]


@pytest.mark.parametrize("x,y,mask,error,message", BAD_TICKS)
def test_bad_ticks_raise_and_change_nothing(x, y, mask, error, message):
    learner = make("gru", "tbptt", truncation=3, optimizer="adam", lr=0.01)
    learner.fit(*data(12))
    before = learner.state_dict()
    with pytest.raises(error, match=message):
        learner.step(x, y, mask)
    assert_unchanged(learner, before)


def test_bad_chunks_name_the_tick_and_stream():
    learner = make("gru", "uoro")
    xs, ys = data(13)
    before = learner.state_dict()
    bad = xs.copy()
    bad[7, 2] = VOCAB
    with pytest.raises(IndexError, match=r"xs\[7, 2\] = 3"):
        learner.fit(bad, ys)
    dense = uoro.Learner("gru", 2, 3, 1, loss="squared_error", streams=2)
    values = np.zeros((4, 2, 2), dtype=np.float32)
    values[1, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"xs\[1, 1\] contains NaN"):
        dense.fit(values, np.zeros((4, 2, 1), dtype=np.float32))
    # ...unless that entry is masked out: padding of ragged streams is not read.
    mask = np.ones((4, 2), dtype=bool)
    mask[1, 1] = False
    dense.fit(values, np.zeros((4, 2, 1), dtype=np.float32), mask)
    with pytest.raises(ValueError, match="mask applies to learners with streams > 1"):
        make(streams=1).fit(xs[:, 0], ys[:, 0], mask=np.ones(LENGTH, dtype=bool))
    assert_unchanged(learner, before)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="streams must be"):
        make(streams=0)
    with pytest.raises(IndexError, match="stream index 3"):
        make().reset_state(streams=3)


def test_a_diverging_stream_refuses_the_whole_tick():
    learner = uoro.Learner("rnn", 2, 3, 1, loss="squared_error", streams=3, on_divergence="skip")
    ok = np.zeros((3, 2), dtype=np.float32)
    learner.step(ok, np.zeros((3, 1), dtype=np.float32))
    before = learner.state_dict()
    huge = ok.copy()
    huge[1] = 3e38
    learner.step(huge, np.zeros((3, 1), dtype=np.float32))
    assert learner.skipped_steps == 1
    after = learner.state_dict()
    for name in ("theta", "state", "s_tilde", "theta_tilde", "adam_m"):
        np.testing.assert_array_equal(after[name], before[name])
    raising = uoro.Learner("rnn", 2, 3, 1, loss="squared_error", streams=3)
    with pytest.raises(uoro.DivergenceError):
        raising.step(huge, np.zeros((3, 1), dtype=np.float32))


def test_one_stream_is_the_single_stream_learner():
    """streams=1 is today's learner: same class, same shapes, same numbers."""
    xs, ys = data(14, streams=1)
    for algorithm, options in [("uoro", {"rank": 2}), ("snap1", {}), *EXACT]:
        a = make("gru", algorithm, streams=1, optimizer="adam", lr=0.01, **options)
        b = uoro.Learner(
            "gru", VOCAB, HIDDEN, algorithm=algorithm, optimizer="adam", lr=0.01,
            dtype="float64", **options,
        )  # fmt: skip
        np.testing.assert_array_equal(a.fit(xs[:, 0], ys[:, 0]), b.fit(xs[:, 0], ys[:, 0]))
        np.testing.assert_array_equal(a.theta, b.theta)


def test_old_checkpoints_without_streams_load():
    learner = make(streams=1)
    state = learner.state_dict()
    del state["config"]["streams"]
    copy = uoro.Learner.from_state_dict(state)
    assert copy.streams == 1


@settings(max_examples=40, deadline=None)
@given(
    streams=st.integers(1, 4),
    ticks=st.integers(0, 5),
    algorithm=st.sampled_from(["uoro", "uoro memory", "rtrl", "tbptt"]),
    data_seed=st.integers(0, 2**16),
    token_shift=st.sampled_from([0, 0, 0, -1, VOCAB]),
)
def test_fuzz_shapes_masks_and_tokens(streams, ticks, algorithm, data_seed, token_shift):
    rng = np.random.default_rng(data_seed)
    options = {"tbptt": {"truncation": 2}, "uoro memory": {"memory": 2}}.get(algorithm, {})
    algorithm = algorithm.split()[0]
    learner = make("gru", algorithm, streams=streams, optimizer="adam", lr=0.01, **options)
    xs = rng.integers(0, VOCAB, (ticks, streams))
    ys = rng.integers(0, VOCAB, (ticks, streams))
    mask = rng.random((ticks, streams)) < 0.7
    if ticks and token_shift:
        t, b = rng.integers(ticks), rng.integers(streams)
        xs[t, b] = token_shift if token_shift > 0 else -1
        mask[t, b] = bool(rng.integers(2))
    before = learner.state_dict()
    bad_present = ticks and token_shift and mask[t, b]
    if streams == 1:
        xs, ys, mask = xs[:, 0], ys[:, 0], None
        bad_present = ticks and token_shift
    if bad_present:
        with pytest.raises(IndexError, match="out of range"):
            learner.fit(xs, ys, mask)
        assert_unchanged(learner, before)
        return
    losses = learner.fit(xs, ys, mask)
    assert losses.shape == ((ticks, streams) if streams > 1 else (ticks,))
    if mask is not None:
        assert np.isnan(losses[~mask]).all() and np.isfinite(losses[mask]).all()
        assert learner.samples_seen == int(mask.any(axis=1).sum())
