"""The River adapter (`uoro.river`) against River itself: progressive validation, River's
own estimator checks, the predict/learn contract, feature and label mappings, clones."""

from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from river import base as river_base
from river import (
    checks,
    compose,
    datasets,
    dummy,
    evaluate,
    linear_model,
    metrics,
    multiclass,
    preprocessing,
    stats,
)
from river.time_series.base import Forecaster

import uoro
from uoro.river import (
    RecurrentClassifier,
    RecurrentForecaster,
    RecurrentMultiTargetRegressor,
    RecurrentRegressor,
)

# ---- streams


def noisy_sine(n: int, *, period: int = 20, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.sin(2 * np.pi * t / period) + noise * rng.standard_normal(n)


def sine_pairs(n: int, **kwargs) -> list[tuple[dict, float]]:
    """x = the previous value, y = the next one: a memoryless model sees half the story."""
    s = noisy_sine(n + 1, **kwargs)
    return [({"previous": float(s[i])}, float(s[i + 1])) for i in range(n)]


def token_pairs(n: int, pattern: str = "aab") -> list[tuple[dict, str]]:
    """x = the current token, y = the next one, of a periodic token stream. After an "a"
    the next token depends on the token before it: only a model with memory gets it."""
    text = pattern * (n // len(pattern) + 2)
    return [({"token": text[i]}, text[i + 1]) for i in range(n)]


def one_hot(symbols: str = "ab") -> preprocessing.OneHotEncoder:
    return preprocessing.OneHotEncoder(categories={"token": set(symbols)})


# ---- optional dependency


def test_importing_without_river_says_how_to_install():
    code = (
        "import sys; sys.modules['river'] = None\n"
        "import uoro\n"
        "try:\n"
        "    import uoro.river\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "ImportError:" in out
    assert 'pip install "uoro[river]"' in out and "river" in out


# ---- progressive validation against River's baselines


def test_regressor_beats_river_baselines_in_progressive_validation():
    stream = sine_pairs(2000)
    model = RecurrentRegressor(seed=0)  # the defaults
    ours = evaluate.progressive_val_score(stream, model, metrics.MAE()).get()
    mean = evaluate.progressive_val_score(
        stream, dummy.StatisticRegressor(stats.Mean()), metrics.MAE()
    ).get()
    linear = evaluate.progressive_val_score(
        stream, linear_model.LinearRegression(), metrics.MAE()
    ).get()
    assert mean > 0.6 and linear > 0.2
    assert ours < 0.4 * mean, (ours, mean)
    assert ours < 0.85 * linear, (ours, linear)  # memory beats the memoryless fit
    assert model.learner.steps == 2000


def test_classifier_beats_river_baselines_in_progressive_validation():
    stream = token_pairs(2000)
    model = one_hot() | RecurrentClassifier(seed=0)  # the defaults
    ours = evaluate.progressive_val_score(stream, model, metrics.Accuracy()).get()
    prior = evaluate.progressive_val_score(
        stream, dummy.PriorClassifier(), metrics.Accuracy()
    ).get()
    memoryless = evaluate.progressive_val_score(
        stream,
        one_hot() | multiclass.OneVsRestClassifier(linear_model.LogisticRegression()),
        metrics.Accuracy(),
    ).get()
    assert prior < 0.7 and memoryless < 0.7  # "a" follows "a" two times out of three
    assert ours > 0.85, (ours, prior, memoryless)


def test_forecaster_beats_mean_and_last_value():
    class Mean(Forecaster):
        def __init__(self):
            self.mean = stats.Mean()

        def learn_one(self, y, x=None):
            self.mean.update(y)

        def forecast(self, horizon, xs=None):
            return [self.mean.get()] * horizon

    class LastValue(Forecaster):
        def __init__(self):
            self.last = 0.0

        def learn_one(self, y, x=None):
            self.last = y

        def forecast(self, horizon, xs=None):
            return [self.last] * horizon

    series = 3 + 2 * noisy_sine(1500, period=25, noise=0.1, seed=1)
    horizon = 5

    def score(model):
        errors = metrics.MAE()
        for t, y in enumerate(series):
            if t >= 50 and t + horizon <= len(series):
                for predicted, actual in zip(model.forecast(horizon), series[t : t + horizon]):
                    errors.update(float(actual), predicted)
            model.learn_one(float(y))
        return errors.get()

    ours = score(RecurrentForecaster(hidden_size=16, seed=0))
    assert ours < 0.5 * score(Mean()) and ours < 0.5 * score(LastValue()), ours


# ---- the predict/learn contract


def test_progressive_validation_scores_the_learners_own_online_predictions():
    """Each prediction progressive validation scores is exactly what `Learner.step` predicts
    for that sample when stepping the same stream: predict_one(x) then learn_one(x, y) is one
    online step, and predicting changes nothing."""
    stream = sine_pairs(300)
    model = RecurrentRegressor(hidden_size=8, dtype="float64", seed=3, standardize=False)
    scored = [
        state["Prediction"]
        for state in evaluate.iter_progressive_val_score(
            stream, model, metrics.MAE(), step=1, yield_predictions=True
        )
    ]
    reference = uoro.Learner(
        "gru",
        1,
        8,
        1,
        loss="squared_error",
        algorithm=model.algorithm,
        optimizer=model.optimizer,
        lr=model.lr,
        lr_decay=model.lr_decay,
        dtype="float64",
        seed=3,
    )
    expected = []
    for x, y in stream:
        reference.step(np.array([x["previous"]]), np.array([y]))
        expected.append(float(reference.prediction[0]))
    assert scored == expected
    np.testing.assert_array_equal(model.learner.theta, reference.theta)


def test_predict_one_is_the_prediction_of_the_next_learn_one_and_changes_nothing():
    model = RecurrentClassifier(classes=("a", "b"), hidden_size=8, seed=1)
    for x, y in token_pairs(40):
        x = {"a": float(x["token"] == "a"), "b": float(x["token"] == "b")}
        before = pickle.dumps(model)
        probabilities = model.predict_proba_one(x)
        label = model.predict_one(x)
        assert pickle.dumps(model) == before
        model.learn_one(x, y)
        assert [probabilities["a"], probabilities["b"]] == pytest.approx(
            model.learner.prediction.tolist(), rel=1e-6
        )
        assert label == max(probabilities, key=probabilities.get)


def test_predicting_before_learning_fixes_nothing():
    model = RecurrentRegressor(hidden_size=4)
    first = model.predict_one({"b": 1.0, "a": 2.0})
    assert model.learner is None and model.feature_names is None
    assert model.predict_one({"z": 1.0}) == model.predict_one({"z": 1.0})
    model.learn_one({"b": 1.0, "a": 2.0}, 0.5)
    assert model.feature_names == ("a", "b")
    assert model.learner.prediction[0] == pytest.approx(first, rel=1e-6)


def test_reset_state_starts_a_new_sequence():
    model = RecurrentRegressor(hidden_size=8)
    for x, y in sine_pairs(50):
        model.learn_one(x, y)
    assert np.any(model.learner.state != 0)
    theta = model.learner.theta
    model.reset_state()
    assert not np.any(model.learner.state)
    np.testing.assert_array_equal(model.learner.theta, theta)


# ---- features


def test_features_are_the_first_keys_sorted_and_the_dict_order_does_not_matter():
    a, b = RecurrentRegressor(hidden_size=8), RecurrentRegressor(hidden_size=8)
    for x, y in sine_pairs(30):
        x = {"previous": x["previous"], "square": x["previous"] ** 2, "bias": 1}
        shuffled = dict(reversed(list(x.items())))
        assert a.predict_one(x) == b.predict_one(shuffled)
        a.learn_one(x, y)
        b.learn_one(shuffled, y)
    assert a.feature_names == b.feature_names == ("bias", "previous", "square")


def test_features_argument_fixes_names_and_order():
    model = RecurrentRegressor(features=("y", "x"), hidden_size=4, standardize=False)
    assert model.feature_names == ("y", "x")
    model.learn_one({"x": 1.0, "y": 2.0}, 0.0)
    options = {k: getattr(model, k) for k in ("algorithm", "optimizer", "lr", "lr_decay")}
    learner = uoro.Learner("gru", 2, 4, 1, loss="squared_error", **options)
    learner.step(np.array([2.0, 1.0], dtype=np.float32), np.array([0.0], dtype=np.float32))
    np.testing.assert_array_equal(model.learner.theta, learner.theta)


@pytest.mark.parametrize(
    "x, message",
    [
        ({"a": 1.0}, r"lacks \['b'\] and has unknown \[\]"),
        ({"a": 1.0, "b": None}, r"lacks \['b'\] and has unknown \[\]"),
        ({"a": 1.0, "b": float("nan")}, r"lacks \['b'\] and has unknown \[\]"),
        ({"a": 1.0, "b": 2.0, "c": 3.0}, r"lacks \[\] and has unknown \['c'\]"),
        ({"a": 1.0, "c": 3.0}, r"lacks \['b'\] and has unknown \['c'\]"),
    ],
)
def test_refusing_policies_refuse_missing_or_unknown_features_and_change_nothing(x, message):
    model = RecurrentRegressor(hidden_size=4, missing="raise", unknown="raise")
    model.learn_one({"a": 0.5, "b": 0.25}, 1.0)
    before = pickle.dumps(model)
    for call in (lambda: model.learn_one(x, 1.0), lambda: model.predict_one(x)):
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert "fixed when first learned" in str(error.value)
        assert "missing='raise', unknown='raise'" in str(error.value)
        assert pickle.dumps(model) == before


def flickering_stream(n: int, seed: int = 0, absent_only: bool = False) -> list[tuple[dict, float]]:
    """Three features, each absent from about a fifth of the samples (absent key, None or
    NaN; absent keys only with ``absent_only``, as River's own transformers expect), and
    now and then a feature the model never saw."""
    rng = np.random.default_rng(seed)
    stream = []
    for t in range(n):
        x = {"a": float(np.sin(t / 5)), "b": float(np.cos(t / 7)), "c": float(t % 3)}
        for name in ("a", "b", "c"):
            if t > 0 and rng.random() < 0.2:
                gap = rng.integers(3)
                if gap == 0 or absent_only:
                    del x[name]
                else:
                    x[name] = None if gap == 1 else float("nan")
        if t > 0 and rng.random() < 0.1:
            x["surprise"] = 1.0
        stream.append((x, float(np.sin((t + 1) / 5))))
    return stream


def test_a_stream_with_features_dropping_in_and_out_finishes_with_counts():
    stream = flickering_stream(400, absent_only=True)
    model = preprocessing.StandardScaler() | RecurrentRegressor(hidden_size=8)
    with pytest.warns(uoro.river.FeatureWarning) as caught:
        score = evaluate.progressive_val_score(stream, model, metrics.MAE())
    regressor = model["RecurrentRegressor"]
    assert np.isfinite(score.get())
    # One warning per kind, the rest counted: every absent value, per feature.
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert "gave features it does not read, ['surprise']" in messages[0]
    assert "lacked features" in messages[1] and "running mean" in messages[1]
    expected_missing = {
        name: sum(1 for x, _ in stream if x.get(name) is None or x[name] != x[name])
        for name in ("a", "b", "c")
    }
    assert regressor.missing_counts == expected_missing
    assert regressor.unknown_counts == {"surprise": sum("surprise" in x for x, _ in stream)}
    assert regressor.feature_names == ("a", "b", "c")


@pytest.mark.parametrize("policy", ["mean", "last", "zero"])
def test_a_missing_feature_is_read_as_the_policy_says(policy):
    # Unstandardized: a filled-in value does not enter the feature's statistics.
    model = RecurrentRegressor(hidden_size=4, missing=policy, standardize=False)
    reference = RecurrentRegressor(hidden_size=4, standardize=False)
    values = [0.5, 2.0, -1.0]
    for v in values:
        model.learn_one({"a": v, "b": 1.0}, v)
        reference.learn_one({"a": v, "b": 1.0}, v)
    fill = {"mean": np.mean(values), "last": values[-1], "zero": 0.0}[policy]
    assert model.predict_one({"b": 1.0}) == reference.predict_one({"a": fill, "b": 1.0})
    with pytest.warns(uoro.river.FeatureWarning, match=f"missing='{policy}'"):
        model.learn_one({"b": 1.0}, 0.0)
    reference.learn_one({"a": fill, "b": 1.0}, 0.0)
    np.testing.assert_array_equal(model.learner.theta, reference.learner.theta)
    assert model.missing_counts == {"a": 1}


def test_predicting_with_missing_features_changes_nothing_and_counts_nothing():
    model = RecurrentRegressor(hidden_size=4)
    model.learn_one({"a": 1.0, "b": 2.0}, 0.5)
    before = pickle.dumps(model)
    model.predict_one({"b": 2.0, "new": 3.0})
    assert pickle.dumps(model) == before
    assert model.missing_counts == {} and model.unknown_counts == {}


def test_features_argument_names_a_feature_before_it_appears():
    """A feature expected later is named upfront: missing until it appears, then read."""
    model = RecurrentRegressor(features=("early", "late"), hidden_size=4)
    with pytest.warns(uoro.river.FeatureWarning, match="lacked features"):
        for t in range(5):
            model.learn_one({"early": float(t)}, float(t))
    model.learn_one({"early": 5.0, "late": 1.0}, 5.0)
    assert model.missing_counts == {"late": 5}


def test_bad_policies_are_refused():
    with pytest.raises(ValueError, match=r"missing must be one of .*'median'"):
        RecurrentRegressor(missing="median")
    with pytest.raises(ValueError, match=r"unknown must be one of .*'grow'"):
        RecurrentClassifier(unknown="grow")


# ---- mini-batches


def frame_of(stream):
    pd = pytest.importorskip("pandas")
    return pd.DataFrame([x for x, _ in stream]), pd.Series([y for _, y in stream])


@pytest.mark.parametrize("chunks", [[400], [1, 150, 249]])
def test_learn_many_equals_learn_one_row_by_row_bit_for_bit(chunks):
    stream = flickering_stream(400, seed=1)
    # Named upfront: a frame's columns include "surprise" from the first chunk on, where
    # learn_one would fix the first sample's keys.
    one, many = (RecurrentRegressor(features=("a", "b", "c"), hidden_size=8) for _ in "12")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", uoro.river.FeatureWarning)
        for x, y in stream:
            one.learn_one(x, y)
        start = 0
        for size in chunks:
            many.learn_many(*frame_of(stream[start : start + size]))
            start += size
    np.testing.assert_array_equal(one.learner.theta, many.learner.theta)
    np.testing.assert_array_equal(one.learner.state, many.learner.state)
    assert one.missing_counts == many.missing_counts
    assert one.unknown_counts == many.unknown_counts
    assert pickle.dumps(one._imputer) == pickle.dumps(many._imputer)


def test_classifier_learn_many_equals_learn_one_and_learns_labels_in_order():
    stream = token_pairs(90)
    encoder = one_hot("ab")
    rows = [(encoder.transform_one(x), y) for x, y in stream]
    one, many = RecurrentClassifier(hidden_size=8), RecurrentClassifier(hidden_size=8)
    for x, y in rows:
        one.learn_one(x, y)
    many.learn_many(*frame_of(rows[:40]))
    many.learn_many(*frame_of(rows[40:]))
    np.testing.assert_array_equal(one.learner.theta, many.learner.theta)
    assert one.labels == many.labels


def test_learn_many_refuses_bad_input_anywhere_and_changes_nothing():
    pd = pytest.importorskip("pandas")
    model = RecurrentRegressor(hidden_size=4)
    model.learn_one({"a": 0.5, "b": 0.25}, 1.0)
    before = pickle.dumps(model)
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]})
    bad = [
        (X.assign(b=[1.0, "x", 3.0]), TypeError, "feature 'b' is 'x'"),
        (X.assign(b=[1.0, 2.0, np.inf]), ValueError, "feature 'b' is inf"),
        (X, ValueError, "one target per row"),
    ]
    for frame, error, message in bad:
        y = [1.0, 2.0] if frame is X else [1.0, 2.0, 3.0]
        with pytest.raises(error, match=message):
            model.learn_many(frame, pd.Series(y))
        assert pickle.dumps(model) == before
    with pytest.raises(TypeError, match="y must be a real number"):
        model.learn_many(X, pd.Series([1.0, "two", 3.0]))
    with pytest.raises(TypeError, match="pandas DataFrame"):
        model.learn_many([{"a": 1.0}], [1.0])
    assert pickle.dumps(model) == before


def test_predict_many_is_predict_one_per_row_and_changes_nothing():
    stream = flickering_stream(60, seed=2)
    X, y = frame_of(stream)
    model = RecurrentRegressor(hidden_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", uoro.river.FeatureWarning)
        model.learn_many(X[:40], y[:40])
    before = pickle.dumps(model)
    predictions = model.predict_many(X[40:])
    assert list(predictions.index) == list(X.index[40:])
    assert predictions.tolist() == [model.predict_one(x) for x, _ in stream[40:]]
    assert pickle.dumps(model) == before
    classifier = RecurrentClassifier(hidden_size=4)
    rows = [(one_hot("ab").transform_one(x), y) for x, y in token_pairs(30)]
    Xc, yc = frame_of(rows)
    assert classifier.predict_many(Xc).tolist() == [None] * 30  # no label yet
    classifier.learn_many(Xc, yc)
    before = pickle.dumps(classifier)
    assert classifier.predict_many(Xc).tolist() == [classifier.predict_one(x) for x, _ in rows]
    proba = classifier.predict_proba_many(Xc)
    assert list(proba.columns) == ["a", "b"]
    assert proba.iloc[3].to_dict() == classifier.predict_proba_one(rows[3][0])
    assert pickle.dumps(classifier) == before


def test_learn_many_stops_where_a_refused_divergence_stops_it():
    """With on_divergence="raise", rows before the refused one stay learned, with their
    statistics and labels; the rest is not."""
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame({"a": [1.0, None, 1e4, 1.0], "b": [0.0, 1.0, 1.0, 1.0]})
    model = RecurrentRegressor(hidden_size=4, on_divergence="raise", lr=1e4, lr_decay=0.0)
    y = pd.Series([0.0, 0.0, 1e30, 0.0])
    try:
        with pytest.warns(uoro.river.FeatureWarning):
            model.learn_many(X, y)
    except uoro.DivergenceError as error:
        assert error.index == 2
        assert model.learner.steps == 2
        assert model._imputer.seen.tolist() == [1, 2]  # row 1 lacked "a"
        assert model.missing_counts == {"a": 1}
    else:
        pytest.fail("expected a divergence")


def test_non_numeric_features_and_targets_are_refused():
    model = RecurrentRegressor(hidden_size=4)
    with pytest.raises(TypeError, match=r"feature 'colour' is 'red' \(str\).*OneHotEncoder"):
        model.learn_one({"colour": "red"}, 1.0)
    with pytest.raises(TypeError, match="x must be a dict"):
        model.learn_one([1.0, 2.0], 1.0)
    with pytest.raises(TypeError, match="y must be a real number"):
        model.learn_one({"a": 1.0}, "1.0")
    assert model.learner is None
    model.learn_one({"a": np.float32(1), "b": np.int64(2), "c": True}, np.float64(0.5))
    assert model.feature_names == ("a", "b", "c")


def test_bad_options_fail_at_construction():
    with pytest.raises(ValueError, match="cell must be one of"):
        RecurrentRegressor(cell="transformer")
    with pytest.raises(ValueError, match="needs truncation"):
        RecurrentClassifier(algorithm="tbptt")
    with pytest.raises(ValueError, match="repeat"):
        RecurrentRegressor(features=("a", "a"))
    with pytest.raises(TypeError, match="features must be a sequence"):
        RecurrentRegressor(features="ab")
    with pytest.raises(ValueError, match="at least two distinct labels"):
        RecurrentClassifier(classes=("a", "a"))
    with pytest.raises(ValueError, match="max_classes"):
        RecurrentClassifier(max_classes=1)


# ---- labels


def test_fixed_classes_cover_all_labels_from_the_start():
    model = RecurrentClassifier(classes=("x", "y", "z"), hidden_size=4)
    probabilities = model.predict_proba_one({"a": 1.0})
    assert list(probabilities) == ["x", "y", "z"]
    assert sum(probabilities.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"label 'w' is not one of classes \('x', 'y', 'z'\)"):
        model.learn_one({"a": 1.0}, "w")
    model.learn_one({"a": 1.0}, "z")
    assert model.learner.steps == 1


def test_labels_learned_on_the_fly_up_to_max_classes():
    model = RecurrentClassifier(max_classes=3, hidden_size=4)
    assert model.predict_proba_one({"a": 1.0}) == {}
    assert model.predict_one({"a": 1.0}) is None
    for label in ["cat", "dog", "cat", 7]:
        model.learn_one({"a": 1.0}, label)
    assert model.labels == ("cat", "dog", 7)
    assert model.learner.config["output_size"] == 3
    probabilities = model.predict_proba_one({"a": 0.0})
    assert list(probabilities) == ["cat", "dog", 7]
    assert sum(probabilities.values()) == pytest.approx(1.0)
    before = pickle.dumps(model)
    with pytest.raises(
        ValueError,
        match=r"label 'eel' would be distinct label number 4, "
        r"beyond max_classes=3",
    ):
        model.learn_one({"a": 1.0}, "eel")
    assert pickle.dumps(model) == before


def test_renormalized_over_seen_labels():
    model = RecurrentClassifier(max_classes=5, hidden_size=4, seed=2, standardize=False)
    model.learn_one({"a": 1.0}, True)
    model.learn_one({"a": 0.0}, False)
    raw = model.learner.predict(np.array([1.0], dtype=np.float32))
    probabilities = model.predict_proba_one({"a": 1.0})
    assert probabilities[True] == pytest.approx(raw[0] / raw[:2].sum(), rel=1e-6)
    assert probabilities[np.bool_(False)] == pytest.approx(raw[1] / raw[:2].sum(), rel=1e-6)


# ---- the forecaster


def test_forecast_starts_with_the_next_learn_ones_prediction_and_changes_nothing():
    model = RecurrentForecaster(hidden_size=8, dtype="float64", seed=4)
    series = 10 + 5 * noisy_sine(120, seed=2)
    for y in series[:100]:
        model.learn_one(float(y))
    before = pickle.dumps(model)
    forecasts = model.forecast(horizon=6)
    assert pickle.dumps(model) == before
    assert len(forecasts) == 6 and model.forecast(6) == forecasts
    assert model.forecast(1) == forecasts[:1]
    mean, std = float(np.mean(series[:100])), float(np.std(series[:100], ddof=1))
    model.learn_one(float(series[100]))
    assert forecasts[0] == pytest.approx(mean + std * model.learner.prediction[0], rel=1e-9)


def test_forecast_rolls_forward_by_feeding_forecasts_back():
    model = RecurrentForecaster(
        hidden_size=8, optimizer="sgd", lr=0.05, dtype="float64", standardize=False, seed=5
    )
    for y in noisy_sine(60):
        model.learn_one(float(y))
    forecasts = model.forecast(3)
    # With SGD, learning a value with zero error leaves θ alone and just moves the state on:
    # learning the forecasts one by one replays the forecast's roll-out.
    rollout = copy.deepcopy(model)
    for expected in forecasts:
        assert rollout.forecast(1)[0] == pytest.approx(expected, rel=1e-12)
        theta = rollout.learner.theta
        rollout.learn_one(rollout.forecast(1)[0])
        np.testing.assert_array_equal(rollout.learner.theta, theta)


def test_forecaster_with_exogenous_features():
    model = RecurrentForecaster(hidden_size=4)
    for t in range(20):
        model.learn_one(float(t % 3), {"phase": t % 3 / 3, "one": 1.0})
    assert model.feature_names == ("one", "phase")
    assert model.learner.config["input_size"] == 3
    forecasts = model.forecast(2, xs=[{"phase": 0.0, "one": 1.0}, {"phase": 1 / 3, "one": 1.0}])
    assert len(forecasts) == 2
    with pytest.raises(ValueError, match="one dict per step"):
        model.forecast(2, xs=[{"phase": 0.0, "one": 1.0}])
    # Without xs the features are missing: read as their running means, or refused.
    means = {"one": 1.0, "phase": np.mean([t % 3 / 3 for t in range(20)])}
    assert model.forecast(1) == model.forecast(1, xs=[means])
    refusing = RecurrentForecaster(hidden_size=4, missing="raise")
    refusing.learn_one(1.0, {"phase": 0.0, "one": 1.0})
    with pytest.raises(ValueError, match="lacks"):
        refusing.forecast(1)
    with pytest.raises(ValueError, match="horizon"):
        model.forecast(0)


# ---- River's conventions


def _river_datasets(model, scale: int = 1):
    """River's own check datasets for each kind of estimator, minus those needing
    scikit-learn (multi-output), which these estimators are not."""
    if isinstance(model, Forecaster):
        yield [
            ({"time": float(t), "period": float(t % 4)}, 10.0 + 2 * t + (t % 4))
            for t in range(1, 9)
        ]
    elif isinstance(model, river_base.MultiTargetRegressor):
        categories = {"zurich-class", "largest-spot-size", "spot-distribution"}
        encode = compose.Select(*categories) | preprocessing.OneHotEncoder()
        encoded = []
        for x, y in datasets.SolarFlare().take(200 * scale):
            numeric = {k: float(v) for k, v in x.items() if k not in categories}
            encode.learn_one(x)
            encoded.append(({**encode.transform_one(x), **numeric}, y))
        yield encoded
    elif isinstance(model, river_base.Regressor):
        yield datasets.TrumpApproval().take(200 * scale)
    elif isinstance(model, river_base.Classifier):
        yield datasets.Phishing().take(200 * scale)
        yield ((x, np.bool_(y)) for x, y in datasets.Phishing().take(200 * scale))
        yield datasets.ImageSegments().take(200 * scale)


@pytest.mark.parametrize(
    "model",
    [
        RecurrentRegressor(),
        RecurrentClassifier(),
        RecurrentForecaster(),
        RecurrentMultiTargetRegressor(),
    ],
    ids=type,
)
def test_river_check_estimator(model, monkeypatch):
    monkeypatch.setattr(checks, "_yield_datasets", _river_datasets)
    ran = []
    for check in checks.yield_checks(model):
        if check.__name__ in model._unit_test_skips():
            continue
        with warnings.catch_warnings():  # River's checks drop features on purpose
            warnings.simplefilter("ignore", uoro.river.FeatureWarning)
            check(model.clone())
        ran.append(check.__name__)
    assert "check_clone_is_idempotent" in ran and "check_pickling_supports_roundtrip" in ran
    if isinstance(model, Forecaster):
        assert "check_forecast" in ran
    elif isinstance(model, river_base.MultiTargetRegressor):
        assert "check_emerging_features" in ran and "check_pickling" in ran
    else:
        assert "check_shuffle_features_no_impact" in ran and "check_pickling" in ran
        assert "check_learn_many_matches_learn_one" in ran
        assert "check_predict_many_matches_predict_one" in ran
        assert "check_emerging_features" in ran and "check_disappearing_features" in ran
    assert model._unit_test_skips() == set()


@pytest.mark.parametrize(
    "model",
    [
        RecurrentRegressor(cell="minlstm", layers=2, algorithm="rtrl"),  # raw, unscaled inputs
        RecurrentClassifier(cell="mingru", algorithm="rtrl"),
        RecurrentForecaster(cell="gru", layers=2),
    ],
    ids=type,
)
def test_river_checks_pass_with_elementwise_cells_and_stacks(model, monkeypatch):
    monkeypatch.setattr(checks, "_yield_datasets", _river_datasets)
    for check in checks.yield_checks(model):
        if check.__name__ not in model._unit_test_skips():
            with warnings.catch_warnings():  # River's checks drop features on purpose
                warnings.simplefilter("ignore", uoro.river.FeatureWarning)
                check(model.clone())
    assert model.clone()._make_learner(3).config["layers"] == model.layers


def test_river_pipeline_and_isinstance():
    pipeline = preprocessing.StandardScaler() | RecurrentRegressor(hidden_size=4)
    assert isinstance(pipeline, river_base.Regressor)
    pipeline.learn_one({"a": 1.0, "b": 2.0}, 3.0)
    assert isinstance(pipeline.predict_one({"a": 1.0, "b": 2.0}), float)
    assert isinstance(RecurrentClassifier(), river_base.Classifier)
    assert isinstance(RecurrentForecaster(), Forecaster)


# ---- clone, repr, pickle, seeds


def test_repr_lists_the_parameters_and_survives_clone():
    model = RecurrentClassifier(classes=("a", "b"), cell="lstm", hidden_size=12, lr=0.005)
    text = repr(model)
    assert text.startswith("RecurrentClassifier (")
    for part in (
        'cell="lstm"',
        "hidden_size=12",
        "lr=0.005",
        "classes=('a', 'b')",
        'algorithm="snap1"',
        "seed=0",
    ):
        assert part in text
    assert repr(model.clone()) == text
    assert str(model) == "RecurrentClassifier"


def test_clone_is_fresh_and_takes_new_parameters():
    model = RecurrentRegressor(hidden_size=8, seed=1)
    fresh = model.predict_one({"a": 0.3})
    for x, y in sine_pairs(100):
        model.learn_one({"a": x["previous"]}, y)
    assert model.predict_one({"a": 0.3}) != fresh
    clone = model.clone()
    assert clone.learner is None and clone.feature_names is None
    assert clone.predict_one({"a": 0.3}) == fresh
    other = model.clone({"hidden_size": 5, "algorithm": "tbptt", "truncation": 3})
    other.learn_one({"a": 0.3}, 1.0)
    assert other.learner.config["hidden_size"] == 5
    assert other.learner.config["algorithm"] == "tbptt"
    assert model.learner.config["hidden_size"] == 8


def test_pickle_and_deepcopy_continue_bit_identically():
    model = RecurrentRegressor(hidden_size=8)
    stream = sine_pairs(200)
    for x, y in stream[:100]:
        model.learn_one(x, y)
    copies = [
        pickle.loads(pickle.dumps(model)),
        copy.deepcopy(model),
        model.clone(include_attributes=True),
    ]
    for x, y in stream[100:]:
        expected = model.predict_one(x)
        model.learn_one(x, y)
        for other in copies:
            assert other.predict_one(x) == expected
            other.learn_one(x, y)
    for other in copies:
        np.testing.assert_array_equal(other.learner.theta, model.learner.theta)


def test_seed_none_draws_a_fresh_seed_per_estimator():
    a, b = RecurrentRegressor(seed=None), RecurrentRegressor(seed=None)
    assert a._is_stochastic and not RecurrentRegressor()._is_stochastic
    x = {"a": 1.0}
    assert a.predict_one(x) != b.predict_one(x)
    assert a.predict_one(x) == a.predict_one(x)
    assert a.clone().seed is None


def test_learning_is_fast_enough_for_a_stream():
    """The adapter adds only dict handling to a learner step: thousands of samples per
    second through a River pipeline, even on a slow shared machine."""
    import time

    stream = sine_pairs(3000)
    model = RecurrentRegressor(hidden_size=16)
    start = time.perf_counter()
    for x, y in stream:
        model.predict_one(x)
        model.learn_one(x, y)
    assert time.perf_counter() - start < 3.0


# ---- several targets


def two_target_pairs(n: int) -> list[tuple[dict, dict]]:
    """The sine's next value and its negation: both need the memory of the last two."""
    return [(x, {"next": y, "negated": -y}) for x, y in sine_pairs(n)]


def test_multi_target_regressor_learns_all_targets_as_one_learner_step():
    stream = two_target_pairs(50)
    model = RecurrentMultiTargetRegressor(hidden_size=4, standardize=False)
    for x, y in stream:
        model.learn_one(x, y)
    assert model.target_names == ("negated", "next")
    options = {k: getattr(model, k) for k in ("algorithm", "optimizer", "lr", "lr_decay")}
    learner = uoro.Learner("gru", 1, 4, 2, loss="squared_error", seed=0, **options)
    for x, y in stream:
        target = np.array([y["negated"], y["next"]], dtype=np.float32)
        learner.step(np.array([x["previous"]], dtype=np.float32), target)
    np.testing.assert_array_equal(model.learner.theta, learner.theta)
    prediction = model.predict_one(stream[0][0])
    assert list(prediction) == ["negated", "next"]


def test_multi_target_regressor_beats_the_running_mean():
    stream = two_target_pairs(3000)
    model = RecurrentMultiTargetRegressor(hidden_size=16)
    score = evaluate.progressive_val_score(
        stream, model, metrics.multioutput.MicroAverage(metrics.MAE())
    )
    means = {k: stats.Mean() for k in ("next", "negated")}
    errors = []
    for _, y in stream:
        errors += [abs(y[k] - means[k].get()) for k in means]
        for k in means:
            means[k].update(y[k])
    assert score.get() < 0.3 * np.mean(errors)


def test_multi_target_regressor_refuses_bad_targets_and_changes_nothing():
    model = RecurrentMultiTargetRegressor(targets=("u", "v"), hidden_size=4)
    assert list(model.predict_one({"a": 1.0})) == ["u", "v"]  # named upfront: known before
    model.learn_one({"a": 1.0}, {"u": 0.5, "v": -0.5})
    before = pickle.dumps(model)
    bad = [
        ({"u": 0.5}, ValueError, r"lacks \['v'\] and has unknown \[\]"),
        ({"u": 0.5, "v": 1.0, "w": 2.0}, ValueError, r"unknown \['w'\]"),
        ({"u": 0.5, "v": "high"}, TypeError, "target 'v' must be a real number"),
        ({"u": 0.5, "v": float("nan")}, ValueError, "target 'v' must be a finite"),
        (0.5, TypeError, "y must be a dict of targets"),
    ]
    for y, error, message in bad:
        with pytest.raises(error, match=message):
            model.learn_one({"a": 1.0}, y)
        assert pickle.dumps(model) == before
    fresh = RecurrentMultiTargetRegressor()
    assert fresh.predict_one({"a": 1.0}) == {}
    with pytest.raises(ValueError, match="distinct names"):
        RecurrentMultiTargetRegressor(targets=("u", "u"))


# ---- seasonal forecasting


def seasonal_series(n: int, period: int = 12) -> list[float]:
    """A growing series whose seasonal swing grows with it (as airline traffic)."""
    t = np.arange(n)
    level = 100 + 2 * t
    return list(level * (1 + 0.3 * np.sin(2 * np.pi * t / period)))


def test_an_untrained_seasonal_forecaster_forecasts_the_seasonal_naive():
    """A network whose readout is zero learns nothing of its own: the forecasts are the
    values one season back, then, beyond a season, those forecasts again."""
    series = seasonal_series(30, period=4)
    model = RecurrentForecaster(seasonality=4, hidden_size=4, lr=0.0)
    for value in series[:2]:  # less than a season: the lag is the previous value
        model.learn_one(value)
    zero_readout = {"readout.weight": np.zeros((1, 4)), "readout.bias": np.zeros(1)}
    model.learner.set_parameters({**model.learner.parameters(), **zero_readout})
    first, second = (float(np.float32(v)) for v in series[:2])
    # The previous value, then the forecast before it, then a season back: the first.
    assert model.forecast(3) == [second, second, first]
    for value in series[2:20]:
        model.learn_one(value)
    season = [float(np.float32(v)) for v in series[16:20]]
    assert model.forecast(10) == season + season + season[:2]


def test_seasonality_closes_on_a_seasonal_series():
    series = seasonal_series(600)
    errors = {}
    for seasonality in (None, 12):
        model = RecurrentForecaster(seasonality=seasonality)
        total = 0.0
        for t, value in enumerate(series[:-12]):
            if t >= 300:
                total += np.mean(np.abs(np.array(model.forecast(12)) - series[t : t + 12]))
            model.learn_one(value)
        errors[seasonality] = total
    assert errors[12] < 0.5 * errors[None]


def test_bad_seasonality_is_refused():
    for bad in (0, -3, 2.5, True, "12"):
        with pytest.raises(ValueError, match="seasonality must be None or an integer"):
            RecurrentForecaster(seasonality=bad)


def test_a_forecast_that_overflows_ends_the_rollout_in_nan_without_raising():
    model = RecurrentForecaster(hidden_size=4)
    for value in (0.0, 10.0, 20.0):
        model.learn_one(value)
    # A readout whose output overflows float32: the first forecast is infinite.
    sign = np.sign(model.learner.state)[None, :]
    huge = {"readout.weight": 3e38 * sign, "readout.bias": np.full(1, 3e38)}
    model.learner.set_parameters({**model.learner.parameters(), **huge})
    before = pickle.dumps(model)
    forecasts = model.forecast(4)
    assert forecasts[0] == math.inf and all(math.isnan(f) for f in forecasts[1:])
    assert pickle.dumps(model) == before


# ---- standardization inside the estimator


@pytest.mark.parametrize("model_class", [RecurrentRegressor, RecurrentMultiTargetRegressor])
def test_standardized_estimators_do_not_care_about_the_scale_of_features_or_targets(model_class):
    """Features and targets are standardized by their running statistics, so an affine
    change of units changes the predictions only by the same change (and rounding)."""
    stream = sine_pairs(300)
    multi = model_class is RecurrentMultiTargetRegressor

    def predictions(scale: float, shift: float) -> np.ndarray:
        model = model_class(dtype="float64", seed=1)
        out = []
        for x, y in stream:
            x = {"previous": scale * x["previous"] + shift, "constant": 7.0}
            y = scale * y + shift
            prediction = model.predict_one(x)
            out.append(prediction["y"] if multi and prediction else prediction or 0.0)
            model.learn_one(x, {"y": y} if multi else y)
        return np.array(out[2:])  # a std exists once two targets differ

    unit = predictions(1.0, 0.0)
    np.testing.assert_allclose((predictions(1000.0, -50.0) + 50.0) / 1000.0, unit, atol=1e-7)


def test_a_first_target_of_any_scale_does_not_blow_the_first_step_up():
    model = RecurrentRegressor(seed=0)
    for t in range(50):
        model.learn_one({"a": 1e6 * t}, 1e9 + 1e6 * t)
    assert model.learner.resets == 0 and np.isfinite(model.learner.theta).all()
    assert abs(model.predict_one({"a": 5e7}) - (1e9 + 5e7)) < 1e7
