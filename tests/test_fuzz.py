"""Property-based fuzzing of the public API: whatever comes in, the process survives,
every rejection is a clean Python exception that changes nothing, and every accepted call
leaves a finite learner."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import uoro

CLEAN = (ValueError, TypeError, IndexError, KeyError, uoro.DivergenceError)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1e-300, -1e-45, 1e30, -1e300, 3.4e38]),
    st.integers(-(2**70), 2**70),
)
option_values = {
    "cell": st.sampled_from(["rnn", "gru", "lstm", "influence", "GRU", "", None]),
    "input_size": st.one_of(st.integers(-2, 6), st.just(2.5), st.just("3")),
    "hidden_size": st.integers(-1, 6),
    "output_size": st.one_of(st.none(), st.integers(-1, 5)),
    "loss": st.sampled_from(["cross_entropy", "squared_error", "mse"]),
    "algorithm": st.sampled_from(["uoro", "rtrl", "tbptt", "tbptt_chunk", "snap1", "bptt"]),
    "rank": st.integers(-1, 3),
    "memory": st.integers(-1, 4),
    "truncation": st.one_of(st.none(), st.integers(-1, 4)),
    "optimizer": st.sampled_from(["sgd", "adam", "rmsprop"]),
    "lr": numbers,
    "lr_decay": numbers,
    "clip_norm": st.one_of(st.none(), numbers),
    "dtype": st.sampled_from(["float32", "float64", "float16", np.float64]),
    "on_divergence": st.sampled_from(["raise", "skip", "reset", "ignore"]),
    "seed": st.integers(-1, 2**64),
}


@FUZZ
@given(st.fixed_dictionaries({}, optional=option_values))
def test_any_options_build_a_learner_or_raise_cleanly(options):
    try:
        learner = uoro.Learner(**options)
    except CLEAN:
        return
    assert np.isfinite(learner.theta).all()


def filled(shape: tuple[int, ...], dtype: type, fill: float) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.full(shape, fill).astype(dtype)


def arrays(max_side: int = 7):
    dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.bool_, np.complex64])
    shapes = st.lists(st.integers(0, max_side), min_size=0, max_size=3).map(tuple)
    return st.builds(
        filled, shapes, dtypes, st.floats(allow_nan=True, allow_infinity=True, width=32)
    )


samples = st.one_of(
    st.integers(-(2**70), 2**70),
    arrays(),
    st.floats(),
    st.none(),
    st.text(max_size=2),
    st.lists(st.floats(-2, 2), max_size=6),
)


def assert_finite(learner: uoro.Learner) -> None:
    for name, value in learner.state_dict().items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), name


def same_state(a: dict, b: dict) -> bool:
    return all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a
    )


@FUZZ
@given(
    cell=st.sampled_from(["rnn", "gru", "lstm"]),
    loss=st.sampled_from(["cross_entropy", "squared_error"]),
    algorithm=st.sampled_from([{}, {"algorithm": "tbptt", "truncation": 2}, {"memory": 2}]),
    dtype=st.sampled_from(["float32", "float64"]),
    calls=st.lists(
        st.tuples(st.sampled_from(["step", "fit", "predict", "evaluate"]), samples, samples),
        min_size=1,
        max_size=6,
    ),
)
def test_any_inputs_are_learned_or_refused_cleanly(cell, loss, algorithm, dtype, calls):
    learner = uoro.Learner(cell, 4, 3, 2, loss=loss, dtype=dtype, lr=0.5, **algorithm)
    for method, x, y in calls:
        before = learner.state_dict()
        try:
            if method == "predict":
                learner.predict(x)
            else:
                getattr(learner, method)(x, y)
        except CLEAN:
            assert same_state(learner.state_dict(), before), method
        assert_finite(learner)
