"""Your own model: cells written by the user run through the same C++ estimators.

The built-in GRU, LSTM and RNN re-written in NumPy (examples/own_cell.py) give the
built-in cells' exact gradients (RTRL, full-window truncated BPTT) to 1e-10 and UORO's
trajectory with the same signs, on one stream and on several; bad callbacks and
exceptions leave the learner exactly as it was; checkpoints need the same cell layout.
"""

from __future__ import annotations

import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import uoro
from uoro import cells

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from own_cell import NumpyGRU, NumpyLSTM, NumpyRNN  # noqa: E402
from unbiasedness import assert_unbiased, is_rejected  # noqa: E402

VOCAB, HIDDEN, LENGTH = 4, 5, 12
NUMPY_CELLS = {"gru": NumpyGRU, "lstm": NumpyLSTM, "rnn": NumpyRNN}


def tokens(seed: int, length: int = LENGTH, streams: int | None = None):
    rng = np.random.default_rng(seed)
    shape = (length + 1,) if streams is None else (length + 1, streams)
    data = rng.integers(0, VOCAB, shape)
    return data[:-1], data[1:]


def pair(cell: str, algorithm: str, *, batched: bool = False, streams: int = 1, **options):
    """A built-in learner and the same model as a NumPy cell, with the same θ."""
    options = dict(dtype="float64", seed=3, algorithm=algorithm, streams=streams, **options)
    builtin = uoro.Learner(cell, VOCAB, HIDDEN, **options)
    user = uoro.Learner(NUMPY_CELLS[cell](VOCAB, HIDDEN, batched=batched), **options)
    user.theta = builtin.theta
    return builtin, user


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("batched", [False, True])
def test_rtrl_on_a_numpy_cell_is_the_builtin_gradient(cell, batched):
    builtin, user = pair(cell, "rtrl", batched=batched)
    xs, ys = tokens(1)
    losses_b, grads_b = builtin.gradients(xs, ys)
    losses_u, grads_u = user.gradients(xs, ys)
    np.testing.assert_allclose(losses_u, losses_b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grads_u, grads_b, rtol=0, atol=1e-10)
    assert np.abs(grads_b).max() > 1e-3  # the comparison is not between zeros


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("batched", [False, True])
def test_ok_and_kf_rtrl_on_a_numpy_cell(cell, batched):
    """A user cell is one block of all its parameters with the input factor [1], so its
    influence is a single Kronecker term: OK's one term holds it exactly (RTRL), and
    KF-RTRL's random combination stays unbiased around it."""
    builtin, user = pair(cell, "rtrl", batched=batched)
    xs, ys = tokens(1)
    exact = builtin.gradients(xs, ys)[1]
    ok = uoro.Learner(
        NUMPY_CELLS[cell](VOCAB, HIDDEN, batched=batched), dtype="float64", algorithm="ok"
    )
    ok.theta = builtin.theta
    np.testing.assert_allclose(ok.gradients(xs, ys)[1], exact, rtol=0, atol=1e-10)
    kf = uoro.Learner(
        NUMPY_CELLS[cell](VOCAB, HIDDEN, batched=batched), dtype="float64", algorithm="kf_rtrl"
    )
    kf.theta = builtin.theta
    estimate = kf.gradients(xs, ys)[1]
    np.testing.assert_allclose(estimate[0], exact[0], rtol=0, atol=1e-12)  # no past yet
    assert np.abs(estimate[-1] - exact[-1]).max() > 1e-6  # a random estimate after that


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_full_window_truncated_bptt_on_a_numpy_cell_is_the_builtin_gradient(cell):
    builtin, user = pair(cell, "tbptt_chunk", truncation=LENGTH)
    xs, ys = tokens(2)
    grads_b = builtin.gradients(xs, ys)[1]
    grads_u = user.gradients(xs, ys)[1]
    np.testing.assert_allclose(grads_u, grads_b, rtol=0, atol=1e-10)
    assert np.abs(grads_b[-1]).max() > 1e-3


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("options", [{}, {"rank": 2}, {"memory": 3}])
def test_uoro_on_a_numpy_cell_follows_the_builtin_trajectory(cell, options):
    """Same seed, same signs: UORO on the NumPy cell learns exactly as on the built-in
    cell, up to rounding (Adam, 40 steps)."""
    builtin, user = pair(cell, "uoro", optimizer="adam", lr=0.01, **options)
    initial = user.theta
    xs, ys = tokens(3, length=40)
    np.testing.assert_allclose(user.fit(xs, ys), builtin.fit(xs, ys), rtol=0, atol=1e-9)
    np.testing.assert_allclose(user.theta, builtin.theta, rtol=0, atol=1e-9)
    assert np.abs(user.theta - initial).max() > 1e-3  # it learned


def test_online_truncated_bptt_on_a_numpy_cell_is_the_builtin_gradient():
    """With θ fixed (`gradients`), every step's window gradient is the built-in one. While
    θ changes inside a window the two differ slightly: the built-in cell backpropagates
    through the gates it stored at forward time, a user cell's vjp recomputes them from
    the stored input and state at the current θ."""
    builtin, user = pair("gru", "tbptt", truncation=4)
    xs, ys = tokens(4, length=30)
    np.testing.assert_allclose(user.gradients(xs, ys)[1], builtin.gradients(xs, ys)[1], atol=1e-10)


@pytest.mark.parametrize("algorithm", ["rtrl", "uoro", "tbptt"])
@pytest.mark.parametrize("batched", [False, True])
def test_a_numpy_cell_over_many_streams_follows_the_builtin(algorithm, batched):
    extra = {"truncation": 3, "lr": 0.0} if algorithm == "tbptt" else {}
    builtin, user = pair("gru", algorithm, batched=batched, streams=3, **extra)
    xs, ys = tokens(5, length=20, streams=3)
    mask = np.random.default_rng(5).random((20, 3)) < 0.8
    if algorithm == "tbptt":  # θ fixed: see the single-stream test above
        grads_u, grads_b = user.gradients(xs, ys, mask)[1], builtin.gradients(xs, ys, mask)[1]
        np.testing.assert_allclose(grads_u, grads_b, rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        user.fit(xs, ys, mask), builtin.fit(xs, ys, mask), rtol=0, atol=1e-9, equal_nan=True
    )
    np.testing.assert_allclose(user.theta, builtin.theta, rtol=0, atol=1e-9)
    np.testing.assert_allclose(user.state, builtin.state, rtol=0, atol=1e-9)


def uoro_estimate(cell, seed, theta, xs, ys):
    """UORO's gradient of the last step's loss (cell part), from θ, with its own signs."""
    learner = uoro.Learner(cell, dtype="float64", seed=seed)
    learner.theta = theta
    return learner.gradients(xs, ys)[1][-1][: learner._core.n_cell_params]


def test_uoro_on_a_numpy_cell_is_unbiased():
    """Unbiased against RTRL on the same cell (a 15 % inflated reference fails)."""
    cell = NumpyGRU(VOCAB, 3)
    xs, ys = tokens(6, length=6)
    reference = uoro.Learner(cell, dtype="float64", algorithm="rtrl")
    n_cell = reference._core.n_cell_params
    exact = reference.gradients(xs, ys)[1][-1][:n_cell]
    estimates = np.stack([uoro_estimate(cell, 1 + i, reference.theta, xs, ys) for i in range(6000)])
    assert_unbiased(estimates, exact)
    assert is_rejected(estimates, 1.15 * exact)
    assert is_rejected(estimates, 0.85 * exact)


# ---- named parameters


class NamedGRU:
    """NumpyGRU with its θ as named arrays (C order), as a user would write it."""

    def __init__(self, batched: bool = False):
        self.inner = NumpyGRU(VOCAB, HIDDEN, batched=batched)
        self.input_size, self.state_size, self.batched = VOCAB, HIDDEN, batched
        sizes = [r * c for r, c in self.inner.blocks.shapes]
        flat = self.inner.initial_parameters
        self.initial_parameters = {
            "input_block": flat[: sizes[0]].reshape(VOCAB + 1, -1),
            "hidden_block": flat[sizes[0] :],
        }

    def _flat(self, theta):
        return np.concatenate([theta["input_block"].reshape(-1), theta["hidden_block"]])

    def forward(self, x, s, theta):
        return self.inner.forward(x, s, self._flat(theta))

    def jvp_state(self, x, s, theta, s_dot):
        return self.inner.jvp_state(x, s, self._flat(theta), s_dot)

    def vjp(self, x, s, theta, c):
        c_s, c_theta = self.inner.vjp(x, s, self._flat(theta), c)
        split = theta["input_block"].size
        lead = c_theta.shape[:-1]
        return c_s, {
            "input_block": c_theta[..., :split].reshape(lead + (VOCAB + 1, -1)),
            "hidden_block": c_theta[..., split:],
        }


@pytest.mark.parametrize("batched", [False, True])
def test_named_parameters_reach_the_functions_as_arrays(batched):
    flat = uoro.Learner(NumpyGRU(VOCAB, HIDDEN), dtype="float64", algorithm="rtrl")
    named = uoro.Learner(NamedGRU(batched), dtype="float64", algorithm="rtrl")
    np.testing.assert_array_equal(named.theta, flat.theta)
    xs, ys = tokens(7)
    np.testing.assert_allclose(named.gradients(xs, ys)[1], flat.gradients(xs, ys)[1], atol=1e-12)
    params = named.parameters()
    assert params["input_block"].shape == (VOCAB + 1, 3 * HIDDEN)
    assert set(params) == {"input_block", "hidden_block", "readout.weight", "readout.bias"}
    params["hidden_block"] = np.zeros_like(params["hidden_block"])
    named.set_parameters(params)
    assert not named.parameters()["hidden_block"].any()
    assert named.parameters()["input_block"].any()


# ---- the finite-difference tangent


class NoJvpGRU(NumpyGRU):
    jvp_state = None


def test_without_jvp_the_tangent_is_a_finite_difference_and_warns_once():
    with pytest.warns(UserWarning, match="finite difference") as record:
        learner = uoro.Learner(NoJvpGRU(VOCAB, HIDDEN), dtype="float64", seed=2)
        learner.fit(*tokens(8, length=50))
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        uoro.Learner(NoJvpGRU(VOCAB, HIDDEN), algorithm="tbptt", truncation=3)  # no tangent


@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-7), ("float32", 1e-3)])
def test_finite_difference_rtrl_is_close_to_exact_rtrl(dtype, tolerance):
    xs, ys = tokens(9, length=20)
    exact = uoro.Learner(NumpyGRU(VOCAB, HIDDEN), dtype=dtype, algorithm="rtrl")
    with pytest.warns(UserWarning, match="finite difference"):
        approx = uoro.Learner(NoJvpGRU(VOCAB, HIDDEN), dtype=dtype, algorithm="rtrl")
    g_exact, g_approx = exact.gradients(xs, ys)[1], approx.gradients(xs, ys)[1]
    relative = np.abs(g_approx - g_exact).max() / np.abs(g_exact).max()
    assert relative < tolerance, relative


def test_finite_difference_uoro_bias_is_small():
    """UORO with the finite-difference tangent against the exact RTRL gradient: the
    measured bias along the gradient stays within the test's noise (float64)."""
    cell_exact, cell_fd = NumpyGRU(VOCAB, 3), NoJvpGRU(VOCAB, 3)
    xs, ys = tokens(6, length=6)
    reference = uoro.Learner(cell_exact, dtype="float64", algorithm="rtrl")
    n_cell = reference._core.n_cell_params
    exact = reference.gradients(xs, ys)[1][-1][:n_cell]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        estimates = np.stack(
            [uoro_estimate(cell_fd, 1 + i, reference.theta, xs, ys) for i in range(6000)]
        )
    assert_unbiased(estimates, exact)
    assert is_rejected(estimates, 1.15 * exact)


# ---- bad callbacks leave the learner as it was


class Broken(NumpyGRU):
    def __init__(self, fault: str, where: str, after: int = 0, **kwargs):
        super().__init__(VOCAB, HIDDEN, **kwargs)
        self.fault, self.where, self.calls, self.after = fault, where, 0, after

    def _spoil(self, where, result):
        if where != self.where:
            return result
        self.calls += 1
        if self.calls <= self.after:
            return result
        if self.fault == "raise":
            raise KeyError("from inside the cell")
        if isinstance(result, tuple):
            return result[0], self._spoil_array(result[1])
        return self._spoil_array(result)

    def _spoil_array(self, array):
        if self.fault == "shape":
            return array[..., :-1]
        if self.fault == "dtype":
            return array.astype(np.int64)
        if self.fault == "nan":
            spoiled = array.copy()
            spoiled[..., 0] = np.nan
            return spoiled
        if self.fault == "inf":  # the last value: past the vectorized part of the check
            spoiled = array.copy()
            spoiled[..., -1] = -np.inf
            return spoiled
        return list(array)  # not an array

    def forward(self, x, s, theta):
        return self._spoil("forward", super().forward(x, s, theta))

    def jvp_state(self, x, s, theta, s_dot):
        return self._spoil("jvp_state", super().jvp_state(x, s, theta, s_dot))

    def vjp(self, x, s, theta, c):
        return self._spoil("vjp", super().vjp(x, s, theta, c))


def snapshot(learner):
    state = learner.state_dict()
    return {k: np.array(v, copy=True) for k, v in state.items() if k != "config"}


def assert_same(before, after):
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


FAULTS = {
    "shape": (ValueError, r"Broken\.{where}.* returned shape"),
    "dtype": (TypeError, r"Broken\.{where}.* must return an array of floats"),
    "nan": (ValueError, r"Broken\.{where}.* returned NaN or inf"),
    "inf": (ValueError, r"Broken\.{where}.* returned NaN or inf"),
    "list": (TypeError, r"Broken\.{where}.* must return a numpy array"),
    "raise": (KeyError, "from inside the cell"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize(
    "where,algorithm,options",
    [
        ("forward", "uoro", {}),
        ("jvp_state", "uoro", {"rank": 2}),
        ("vjp", "uoro", {}),
        ("jvp_state", "uoro", {"memory": 3}),
        ("vjp", "uoro", {"memory": 3}),
        ("vjp", "rtrl", {}),
        ("vjp", "tbptt", {"truncation": 3}),
        ("vjp", "tbptt_chunk", {"truncation": 3}),
    ],
)
@pytest.mark.parametrize("streams", [1, 3])
def test_a_bad_callback_names_itself_and_changes_nothing(fault, where, algorithm, options, streams):
    """The fault strikes after some good steps, when the estimator has memory to lose (in
    the middle of a tick's streams for an unbatched cell); the steps before it stay
    applied and the failing one changes nothing: the learner equals one that made only
    the good steps."""

    def make():
        cell = Broken(fault, where, after=10**9)
        return cell, uoro.Learner(
            cell, dtype="float64", algorithm=algorithm, streams=streams, seed=5, **options
        )

    cell, learner = make()
    xs, ys = tokens(10, length=7, streams=None if streams == 1 else streams)
    learner.fit(xs, ys)
    cell.after = cell.calls + (1 if streams > 1 else 0)
    x, y = (xs[0], ys[0]) if streams > 1 else (int(xs[0]), int(ys[0]))
    error, pattern = FAULTS[fault]
    applied = 0
    with pytest.raises(error, match=pattern.format(where=where)):
        for _ in range(3):  # memory-T and chunked windows close within 3 steps
            learner.step(x, y)
            applied += 1
    _, replay = make()
    replay.fit(xs, ys)
    for _ in range(applied):
        replay.step(x, y)
    assert_same(snapshot(replay), snapshot(learner))


def test_a_failing_step_is_retried_cleanly():
    cell = Broken("raise", "vjp", after=10**9)
    learner = uoro.Learner(cell, dtype="float64", rank=2)
    twin = uoro.Learner(NumpyGRU(VOCAB, HIDDEN), dtype="float64", rank=2)
    xs, ys = tokens(11, length=10)
    learner.fit(xs, ys)
    twin.fit(xs, ys)
    cell.after = cell.calls
    with pytest.raises(KeyError):
        learner.step(1, 2)
    cell.after = 10**9
    assert learner.step(1, 2) == twin.step(1, 2)
    np.testing.assert_array_equal(learner.theta, twin.theta)


def test_the_exception_propagates_unchanged():
    class Boom(Exception):
        pass

    class Raising(NumpyGRU):
        def forward(self, x, s, theta):
            raise Boom("mine")

    learner = uoro.Learner(Raising(VOCAB, HIDDEN))
    with pytest.raises(Boom, match="mine"):
        learner.fit(*tokens(12))
    assert learner.samples_seen == 0


def test_vjp_must_return_a_pair():
    class Single(NumpyGRU):
        def vjp(self, x, s, theta, c):
            return super().vjp(x, s, theta, c)[0]

    with pytest.raises(TypeError, match=r"Single\.vjp must return a tuple \(c_s, c_theta\)"):
        uoro.Learner(Single(VOCAB, HIDDEN)).step(0, 1)


def test_theta_reaches_the_functions_read_only():
    class Writer(NumpyGRU):
        def forward(self, x, s, theta):
            theta[0] = 1.0
            return super().forward(x, s, theta)

    learner = uoro.Learner(Writer(VOCAB, HIDDEN))
    before = learner.theta
    with pytest.raises(ValueError, match="read-only"):
        learner.step(0, 1)
    np.testing.assert_array_equal(learner.theta, before)


# ---- the protocol is checked at construction


class Minimal:
    input_size = 2
    state_size = 3
    initial_parameters = np.ones(4)

    def forward(self, x, s, theta):
        return np.tanh(s + theta[:3] * x[0])

    def vjp(self, x, s, theta, c):
        d = c * (1 - self.forward(x, s, theta) ** 2)
        return d, np.concatenate([d * x[0], [0.0]])


@pytest.mark.parametrize(
    "change,error,pattern",
    [
        ({"state_size": 0}, ValueError, r"Minimal\.state_size must be an integer >= 1"),
        ({"input_size": "3"}, ValueError, r"Minimal\.input_size must be an integer"),
        ({"hidden_size": 4}, ValueError, r"hidden_size must be <= state_size \(3\)"),
        ({"vjp": None}, TypeError, r"Minimal must have a method vjp"),
        ({"batched": "yes"}, TypeError, r"Minimal\.batched must be True or False"),
        ({"initial_parameters": np.ones((2, 2))}, ValueError, r"must be a non-empty 1-D array"),
        ({"initial_parameters": np.array([1.0, np.nan])}, ValueError, r"contains NaN or inf"),
        ({"initial_parameters": np.array(["a"])}, TypeError, r"must hold real numbers"),
    ],
)
def test_a_cell_breaking_the_protocol_is_refused_by_name(change, error, pattern):
    cell = Minimal()
    for key, value in change.items():
        setattr(cell, key, value)
    with pytest.raises(error, match=pattern):
        uoro.Learner(cell, algorithm="tbptt", truncation=2)


def test_sizes_given_beside_a_cell_must_agree_and_snap1_is_refused():
    with pytest.raises(ValueError, match=r"input_size=5 differs from the cell's input_size \(2\)"):
        uoro.Learner(Minimal(), 5, algorithm="tbptt", truncation=2)
    with pytest.raises(ValueError, match="'snap1' needs the per-unit structure"):
        uoro.Learner(NumpyGRU(VOCAB, HIDDEN), algorithm="snap1")
    learner = uoro.Learner(Minimal(), 2, 3, algorithm="tbptt", truncation=2)
    assert learner.n_params == 4 + 2 * 4
    assert "Minimal" in repr(learner)


def test_the_readout_sees_the_first_hidden_size_entries():
    builtin, user = pair("lstm", "rtrl")
    assert user._core.state_size == 2 * HIDDEN
    assert user.n_params == builtin.n_params
    user.step(1, 2)
    builtin.step(1, 2)
    np.testing.assert_allclose(user.prediction, builtin.prediction, atol=1e-14)


# ---- checkpoints


@pytest.mark.parametrize("streams", [1, 3])
def test_checkpoints_of_a_user_cell_resume_exactly(tmp_path, streams):
    learner = uoro.Learner(
        NumpyGRU(VOCAB, HIDDEN), dtype="float64", memory=3, streams=streams, seed=4
    )
    xs, ys = tokens(13, length=20, streams=None if streams == 1 else streams)
    learner.fit(xs[:10], ys[:10])
    path = tmp_path / "user.npz"
    learner.save(path)
    with pytest.raises(ValueError, match="made with a user cell: pass the same cell"):
        uoro.load(path)
    with pytest.raises(ValueError, match="another cell layout"):
        uoro.load(path, cell=NumpyGRU(VOCAB, HIDDEN + 1))
    other = uoro.Learner(
        NumpyLSTM(VOCAB, HIDDEN), dtype="float64", memory=3, streams=streams, seed=4
    )
    with pytest.raises(ValueError, match="another cell layout"):
        other.load_state_dict(learner.state_dict())
    restored = uoro.load(path, cell=NumpyGRU(VOCAB, HIDDEN))
    pickled = pickle.loads(pickle.dumps(learner))
    expected = learner.fit(xs[10:], ys[10:])
    np.testing.assert_array_equal(restored.fit(xs[10:], ys[10:]), expected)
    np.testing.assert_array_equal(pickled.fit(xs[10:], ys[10:]), expected)
    np.testing.assert_array_equal(restored.theta, learner.theta)
    clone = learner.clone()
    assert clone.config["cell_layout"] == learner.config["cell_layout"]


def test_a_builtin_checkpoint_refuses_a_cell_object(tmp_path):
    uoro.Learner("gru", VOCAB, HIDDEN).save(tmp_path / "gru.npz")
    with pytest.raises(ValueError, match="built-in cell 'gru'"):
        uoro.load(tmp_path / "gru.npz", cell=NumpyGRU(VOCAB, HIDDEN))


def test_describe_reports_the_layout():
    description = cells.describe(NamedGRU())
    assert description.layout["parameters"][0] == ["input_block", [VOCAB + 1, 3 * HIDDEN]]
    assert description.functions.param_size == description.initial.size
    assert isinstance(NumpyGRU(VOCAB, HIDDEN), cells.Cell)


def test_a_user_cell_is_not_stacked_by_layers_and_the_error_says_how():
    with pytest.raises(ValueError, match="writing the stack as one cell"):
        uoro.Learner(NumpyGRU(VOCAB, HIDDEN), VOCAB, HIDDEN, layers=2)
