"""River estimators backed by a `uoro.Learner`.

[River](https://riverml.xyz) is a library for online machine learning on streams of
feature dicts. This module wraps a recurrent `uoro.Learner` in River's estimator
interfaces, so it can sit at the end of a River pipeline and be scored with
`river.evaluate.progressive_val_score`:

- `RecurrentRegressor` (a `river.base.Regressor`): one real-valued target per sample,
  squared-error readout.
- `RecurrentClassifier` (a `river.base.Classifier`): one class label per sample, softmax
  readout; `predict_proba_one` gives the class probabilities.
- `RecurrentForecaster` (a `river.time_series.base.Forecaster`): a univariate series,
  optionally with exogenous features, forecast any number of steps ahead.

River (0.25 or later) is an optional dependency: importing this module without it raises
an `ImportError` saying how to install it (``pip install "uoro[river]"``).

**A recurrent model reads a stream, not a set of independent samples.** Each estimator
holds a recurrent state: the network's summary of every sample it has learned from so far,
in order. The two calls relate as follows.

- ``learn_one(x, y)`` reads ``x``, advances the recurrent state with it, predicts ``y``
  from the new state, and updates the parameters from that prediction's loss (one
  `uoro.Learner.step`). The sequence of ``learn_one`` calls *is* the sequence the model
  reads: call it once per sample, in stream order.
- ``predict_one(x)`` (and ``predict_proba_one(x)``) returns exactly the prediction that
  ``learn_one(x, y)`` would make for this sample, from the current state and parameters,
  and changes nothing (`uoro.Learner.predict`): the state, the parameters, the feature
  and label mappings all stay as they were, so predictions can be asked for any number
  of times, or not at all, without changing what the model learns.

So progressive validation, which calls ``predict_one(x_t)`` then ``learn_one(x_t, y_t)``
for t = 1, 2, …, scores at every step the model's honest online prediction of ``y_t``
from ``x_1 … x_t`` and ``y_1 … y_{t-1}``. With a ``delay`` in `progressive_val_score`,
``learn_one`` calls still arrive in stream order, but predictions are then made from the
state of the last sample learned, which lags behind by the delay.

**Features.** ``x`` is a dict of real numbers (``bool``, ``int``, ``float`` or numpy
scalars). A recurrent network has a fixed input width, so the feature names are fixed
once: by the ``features`` argument if given (in that order), otherwise by the keys of the
first ``x`` given to ``learn_one``, in sorted order (the order of a dict's keys never
matters). Afterwards every ``x`` must have exactly these keys: a missing or unknown key,
or a non-numeric value, raises `ValueError` / `TypeError` naming it, and changes nothing.
Encode categorical features beforehand, e.g. with
``river.preprocessing.OneHotEncoder(categories=...)``, which emits every category's key
at every step. Scale real-valued inputs to order one (e.g. ``StandardScaler``); for the
regressor's target, wrap it in ``river.preprocessing.TargetStandardScaler``.

**Sequences.** ``reset_state()`` zeroes the recurrent state, e.g. where one sequence
ends and an unrelated one begins; the parameters keep what they learned.

**Never stuck.** A pipeline must not die halfway through a stream, so these estimators
default to ``on_divergence="reset"``: a step that would explode (typically UORO's
sensitivities, when the learned dynamics turn expansive) forgets the estimator's memory
and is redone, and learning goes on. ``learner.resets`` counts how often that happened.

**Many keyed streams.** These estimators are single-stream: River's ``learn_one`` sees
one sample at a time, in one order, so one estimator reads one stream. When a pipeline
carries many keyed streams (one per sensor, user or symbol) that should share one model,
use `uoro.Learner` with ``streams=B`` directly: give each key a column b, collect one
sample per key per tick (a ``mask`` marks the keys without one), and call
``learner.step(x, y, mask)`` per tick or ``learner.fit(xs, ys, mask)`` per chunk; every
key keeps its own recurrent state and ``reset_state(streams=b)`` starts a new sequence
for one key. ``examples/many_streams.py`` does this for several streams of a paper task.
One estimator per key (e.g. River's ``compose`` helpers keyed by group) is the choice
when the streams should not share a model.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np

try:
    from river import base as _river_base
    from river.time_series import base as _river_time_series
except ImportError as error:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "uoro.river needs the optional dependency 'river' (River, online machine learning "
        'for Python); install it with: pip install "uoro[river]" (or: pip install river)'
    ) from error

from uoro.learner import Learner

__all__ = ["RecurrentClassifier", "RecurrentForecaster", "RecurrentRegressor"]

_PLAIN_NUMBERS = (float, int, bool)
_UNSUPPORTED_CHECKS = frozenset(
    # River's checks feed samples whose feature sets change from one call to the next;
    # a recurrent network has a fixed input width and refuses them by design.
    [
        "check_emerging_features",
        "check_disappearing_features",
        "check_radically_disappearing_features",
    ]
)


class _Recurrent:
    """What the three estimators share: the learner's options, the feature mapping, the
    lazily built learner and the recurrent state's life cycle."""

    _LOSS = "squared_error"

    def _init_recurrent(
        self, features: Iterable[Hashable] | None, options: dict[str, Any], output_size: int
    ) -> None:
        for name, value in options.items():
            setattr(self, name, value)
        self.features = features
        self._options = dict(options)
        if options["seed"] is None:  # River's convention: no seed, a fresh random one
            self._options["seed"] = random.SystemRandom().getrandbits(63)
        self._output_size = output_size
        self._names: tuple[Hashable, ...] | None = None
        self._name_set: frozenset[Hashable] = frozenset()
        if features is not None:
            if isinstance(features, (str, bytes)) or not isinstance(features, Iterable):
                raise TypeError(f"features must be a sequence of feature names; got {features!r}")
            self._set_names(tuple(features))
        self._learner: Learner | None = None
        # Build one learner now, so that a bad option fails here and not at the first sample.
        self._make_learner(max(self._n_inputs(len(self._names or ())), 1))

    # ---- the learner

    @property
    def learner(self) -> Learner | None:
        """The underlying `uoro.Learner`, built at the first ``learn_one`` (None before).
        Its `uoro.Learner.prediction` is what the last ``learn_one`` predicted."""
        return self._learner

    @property
    def feature_names(self) -> tuple[Hashable, ...] | None:
        """The feature names, in the order they enter the network (None until fixed)."""
        return self._names

    def reset_state(self) -> None:
        """Zeroes the recurrent state (a new sequence starts); the parameters stay."""
        if self._learner is not None:
            self._learner.reset_state()

    def _n_inputs(self, n_features: int) -> int:
        return n_features

    def _make_learner(self, input_size: int, *, forward_only: bool = False) -> Learner:
        """A learner of this estimator's configuration; ``forward_only``: one that has the
        same parameter layout but the cheapest estimator, to run the network forward."""
        o = dict(self._options)
        if forward_only:
            o.update(algorithm="uoro", rank=1, memory=1, truncation=None)
        return Learner(
            o["cell"],
            input_size,
            o["hidden_size"],
            self._output_size,
            layers=o["layers"],
            loss=self._LOSS,
            algorithm=o["algorithm"],
            rank=o["rank"],
            memory=o["memory"],
            truncation=o["truncation"],
            optimizer=o["optimizer"],
            lr=o["lr"],
            lr_decay=o["lr_decay"],
            clip_norm=o["clip_norm"],
            on_divergence=o["on_divergence"],
            dtype=o["dtype"],
            seed=o["seed"],
        )

    def _learner_for(self, names: tuple[Hashable, ...]) -> Learner:
        """The learner; a learner is created (and the feature names fixed) on first use."""
        if self._learner is None:
            if self._names is None:
                self._set_names(names)
            self._learner = self._make_learner(self._n_inputs(len(names)))
        return self._learner

    def _peek_learner(self, names: tuple[Hashable, ...]) -> Learner:
        """The learner if it exists; otherwise the one ``learn_one`` would build (same seed,
        same initial parameters), without keeping it: predicting changes nothing."""
        if self._learner is not None:
            return self._learner
        return self._make_learner(self._n_inputs(len(names)))

    # ---- features

    def _set_names(self, names: tuple[Hashable, ...]) -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"features must not repeat a name; got {names!r}")
        self._names = names
        self._name_set = frozenset(names)

    def _names_of(self, x: Mapping[Hashable, Any]) -> tuple[Hashable, ...]:
        """The fixed names, or those ``x`` would fix: its keys, sorted."""
        if self._names is not None:
            return self._names
        _check_mapping(x)
        try:
            return tuple(sorted(x))  # type: ignore[type-var]  # any orderable keys
        except TypeError:  # keys of mixed types
            return tuple(sorted(x, key=lambda k: (type(k).__name__, repr(k))))

    def _vector(self, x: Mapping[Hashable, Any], names: tuple[Hashable, ...]) -> np.ndarray:
        """The features of ``x`` in the order of ``names``, in the learner's dtype."""
        _check_mapping(x)
        if set(x.keys()) != (self._name_set if names is self._names else set(names)):
            missing = [k for k in names if k not in x]
            unknown = [k for k in x if k not in set(names)]
            origin = (
                "by the features argument"
                if self.features is not None
                else "at the first learn_one"
            )
            raise ValueError(
                f"{type(self).__name__} reads the features {list(names)} (fixed {origin}); "
                f"this x lacks {missing} and has unknown {unknown}. A recurrent network has a "
                "fixed input width: give every feature at every step"
            )
        values = [x[k] for k in names]
        for name, value in zip(names, values):
            if type(value) not in _PLAIN_NUMBERS and not isinstance(
                value, (numbers.Real, np.bool_)
            ):
                raise TypeError(
                    f"feature {name!r} is {value!r} ({type(value).__name__}); "
                    f"{type(self).__name__} reads real numbers only: encode other values "
                    "first, e.g. categories with river.preprocessing.OneHotEncoder"
                )
        return np.array(values, dtype=self._options["dtype"])

    # ---- River conventions

    def _unit_test_skips(self) -> set[str]:
        return set(_UNSUPPORTED_CHECKS)


def _check_mapping(x: Any) -> None:
    if not isinstance(x, Mapping):
        raise TypeError(f"x must be a dict of features; got {type(x).__name__}")


def _learner_options(locals_: dict[str, Any]) -> dict[str, Any]:
    names = (
        "cell",
        "hidden_size",
        "layers",
        "algorithm",
        "rank",
        "memory",
        "truncation",
        "optimizer",
        "lr",
        "lr_decay",
        "clip_norm",
        "on_divergence",
        "dtype",
        "seed",
    )
    return {name: locals_[name] for name in names}


class RecurrentRegressor(_Recurrent, _river_base.Regressor):
    """A recurrent network that learns a real-valued target online (River regressor).

    ``learn_one(x, y)`` advances the recurrent state with ``x`` and learns ``y`` by one
    `uoro.Learner.step` with a squared-error readout; ``predict_one(x)`` is the prediction
    that step would make, and changes nothing (see `uoro.river`).

    Args:
        features: the feature names, in the order they enter the network. None (the
            default): the keys of the first ``x`` given to ``learn_one``, sorted.
        cell: ``"rnn"``, ``"gru"``, ``"lstm"`` or an element-wise cell, ``"mingru"``,
            ``"minlstm"``, ``"indrnn"`` (see `uoro.Learner`).
        hidden_size: number of hidden units.
        layers: depth of a stack of the cell (1 to 3; see `uoro.Learner`).
        algorithm: the gradient estimator: ``"uoro"`` (default), ``"rtrl"``, ``"tbptt"``
            or ``"tbptt_chunk"`` (see `uoro.Learner`).
        rank: UORO's rank (independent rank-one estimates averaged per step).
        memory: memory-T UORO's window.
        truncation: the window of ``"tbptt"`` / ``"tbptt_chunk"``.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: base learning rate η.
        lr_decay: α of the schedule ``η_t = η / (1 + α √t)``.
        clip_norm: if given, gradients are rescaled to at most this norm.
        on_divergence: ``"reset"`` (default: an exploding step forgets the estimator's
            memory and is redone, so a pipeline never stops learning; resets are counted
            in ``learner.resets``), ``"raise"`` (`uoro.DivergenceError`) or ``"skip"``
            (see `uoro.Learner`).
        dtype: ``"float32"`` or ``"float64"``.
        seed: seeds the initial parameters and UORO's random signs: the same seed gives
            the same run. None draws a fresh seed for each new estimator (and clone).

    Example:
        ```python
        from river import evaluate, metrics, preprocessing
        from uoro.river import RecurrentRegressor

        model = preprocessing.StandardScaler() | RecurrentRegressor(hidden_size=16)
        # stream: (x, y) pairs in time order, x a dict of numbers, y a float
        evaluate.progressive_val_score(stream, model, metrics.MAE())
        ```
    """

    def __init__(
        self,
        features: tuple[Hashable, ...] | None = None,
        *,
        cell: str = "gru",
        hidden_size: int = 16,
        layers: int = 1,
        algorithm: str = "uoro",
        rank: int = 1,
        memory: int = 1,
        truncation: int | None = None,
        optimizer: str = "adam",
        lr: float = 0.01,
        lr_decay: float = 0.1,
        clip_norm: float | None = None,
        on_divergence: str = "reset",
        dtype: str = "float32",
        seed: int | None = 0,
    ) -> None:
        self._init_recurrent(features, _learner_options(locals()), output_size=1)

    def learn_one(self, x: dict[Hashable, Any], y: float) -> None:
        """Advances the state with ``x`` and learns the target ``y`` (a real number)."""
        names = self._names_of(x)
        vector = self._vector(x, names)
        target = _real_target(y, self._options["dtype"])
        self._learner_for(names).step(vector, target)

    def predict_one(self, x: dict[Hashable, Any]) -> float:
        """The prediction ``learn_one(x, y)`` would make for this sample; changes nothing."""
        names = self._names_of(x)
        vector = self._vector(x, names)
        return float(self._peek_learner(names).predict(vector)[0])


class RecurrentClassifier(_Recurrent, _river_base.Classifier):
    """A recurrent network that learns class labels online (River classifier).

    ``learn_one(x, y)`` advances the recurrent state with ``x`` and learns the label ``y``
    by one `uoro.Learner.step` with a softmax readout and cross-entropy loss;
    ``predict_proba_one(x)`` is the distribution that step would predict, and changes
    nothing (see `uoro.river`). ``predict_one(x)`` is its most probable label.

    Labels map to the network's outputs in one of two ways:

    - ``classes`` given: the labels are exactly these, in this order, from the start; a
      label outside them raises `ValueError`. ``predict_proba_one`` always returns all of
      them, even before any learning.
    - ``classes=None`` (the default): labels are learned as they come, the first one seen
      taking output 0, the next new one output 1, and so on, up to ``max_classes`` (the
      network has ``max_classes`` outputs from the start); one more distinct label raises
      `ValueError`. ``predict_proba_one`` returns the labels seen so far, with the softmax
      renormalized over them (an empty dict before the first label, when ``predict_one``
      returns None).

    Args:
        classes: the labels (hashable, distinct, at least two), or None to learn them on
            the fly.
        max_classes: with ``classes=None``, how many distinct labels may appear.
        features: the feature names, in the order they enter the network. None (the
            default): the keys of the first ``x`` given to ``learn_one``, sorted.
        cell: ``"rnn"``, ``"gru"``, ``"lstm"`` or an element-wise cell, ``"mingru"``,
            ``"minlstm"``, ``"indrnn"`` (see `uoro.Learner`).
        hidden_size: number of hidden units.
        layers: depth of a stack of the cell (1 to 3; see `uoro.Learner`).
        algorithm: the gradient estimator: ``"uoro"`` (default), ``"rtrl"``, ``"tbptt"``
            or ``"tbptt_chunk"`` (see `uoro.Learner`).
        rank: UORO's rank (independent rank-one estimates averaged per step).
        memory: memory-T UORO's window.
        truncation: the window of ``"tbptt"`` / ``"tbptt_chunk"``.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: base learning rate η.
        lr_decay: α of the schedule ``η_t = η / (1 + α √t)``.
        clip_norm: if given, gradients are rescaled to at most this norm.
        on_divergence: ``"reset"`` (default: an exploding step forgets the estimator's
            memory and is redone, so a pipeline never stops learning; resets are counted
            in ``learner.resets``), ``"raise"`` (`uoro.DivergenceError`) or ``"skip"``
            (see `uoro.Learner`).
        dtype: ``"float32"`` or ``"float64"``.
        seed: seeds the initial parameters and UORO's random signs: the same seed gives
            the same run. None draws a fresh seed for each new estimator (and clone).

    Example:
        ```python
        from river import evaluate, metrics, preprocessing
        from uoro.river import RecurrentClassifier

        # x = {"token": previous symbol}, y = next symbol
        model = (preprocessing.OneHotEncoder(categories={"token": set("abc")})
                 | RecurrentClassifier(classes=("a", "b", "c")))
        evaluate.progressive_val_score(stream, model, metrics.Accuracy())
        ```
    """

    def __init__(
        self,
        classes: tuple[Hashable, ...] | None = None,
        max_classes: int = 16,
        features: tuple[Hashable, ...] | None = None,
        *,
        cell: str = "gru",
        hidden_size: int = 16,
        layers: int = 1,
        algorithm: str = "uoro",
        rank: int = 1,
        memory: int = 1,
        truncation: int | None = None,
        optimizer: str = "adam",
        lr: float = 0.01,
        lr_decay: float = 0.1,
        clip_norm: float | None = None,
        on_divergence: str = "reset",
        dtype: str = "float32",
        seed: int | None = 0,
    ) -> None:
        self.classes = classes
        self.max_classes = max_classes
        if classes is not None:
            if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
                raise TypeError(f"classes must be a sequence of labels; got {classes!r}")
            labels = list(classes)
            if len(labels) < 2 or len(set(labels)) != len(labels):
                raise ValueError(f"classes must hold at least two distinct labels; got {classes!r}")
            n_outputs = len(labels)
        else:
            if (
                isinstance(max_classes, bool)
                or not isinstance(max_classes, numbers.Integral)
                or max_classes < 2
            ):
                raise ValueError(f"max_classes must be an integer >= 2; got {max_classes!r}")
            labels = []
            n_outputs = int(max_classes)
        self._labels: list[Hashable] = labels
        self._index: dict[Hashable, int] = {label: i for i, label in enumerate(labels)}
        self._init_recurrent(features, _learner_options(locals()), output_size=n_outputs)

    _LOSS = "cross_entropy"

    @property
    def _multiclass(self) -> bool:
        return True

    @property
    def labels(self) -> tuple[Hashable, ...]:
        """The labels known so far, by output index."""
        return tuple(self._labels)

    def learn_one(self, x: dict[Hashable, Any], y: Hashable) -> None:
        """Advances the state with ``x`` and learns the label ``y``."""
        names = self._names_of(x)
        vector = self._vector(x, names)
        known = self._index.get(y)
        new_label = known is None
        if known is not None:
            index = known
        else:
            if self.classes is not None:
                raise ValueError(f"label {y!r} is not one of classes {tuple(self._labels)!r}")
            if len(self._labels) >= self._output_size:
                raise ValueError(
                    f"label {y!r} would be distinct label number {len(self._labels) + 1}, "
                    f"beyond max_classes={self.max_classes}; known labels: "
                    f"{tuple(self._labels)!r}"
                )
            index = len(self._labels)
        self._learner_for(names).step(vector, index)
        if new_label:  # only once the step succeeded
            self._labels.append(y)
            self._index[y] = index

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[Any, float]:
        """The probability of each known label for this sample, as ``learn_one(x, y)``
        would predict it; changes nothing."""
        names = self._names_of(x)
        vector = self._vector(x, names)
        if not self._labels:
            return {}
        probabilities = self._peek_learner(names).predict(vector)[: len(self._labels)]
        probabilities = probabilities.astype(np.float64)
        total = probabilities.sum()
        return {label: float(p / total) for label, p in zip(self._labels, probabilities)}


class RecurrentForecaster(_Recurrent, _river_time_series.Forecaster):
    """A recurrent network that forecasts a univariate time series online (River
    forecaster).

    At each ``learn_one(y, x)`` the network reads the input ``(y_prev, x)``, where
    ``y_prev`` is the previous value of the series (0 before the first) and ``x`` the
    optional exogenous features of this time step, advances its state, and learns to
    predict ``y``. ``forecast(horizon, xs)`` rolls the network forward from its current
    state on a copy, feeding each forecast back as the next ``y_prev``: its first value is
    exactly what the next ``learn_one`` would predict. It changes nothing.

    With ``standardize=True`` (the default) the network sees ``(y - mean) / std`` in place
    of ``y``, with the running mean and standard deviation of the values learned *before*
    the current one (a std of 1 until two values, differing, have been seen); forecasts
    are mapped back to the series' scale.

    Args:
        standardize: standardize the series with its running statistics.
        features: the feature names, in the order they enter the network. None (the
            default): the keys of the first ``x`` given to ``learn_one``, sorted.
        cell: ``"rnn"``, ``"gru"``, ``"lstm"`` or an element-wise cell, ``"mingru"``,
            ``"minlstm"``, ``"indrnn"`` (see `uoro.Learner`).
        hidden_size: number of hidden units.
        layers: depth of a stack of the cell (1 to 3; see `uoro.Learner`).
        algorithm: the gradient estimator: ``"uoro"`` (default), ``"rtrl"``, ``"tbptt"``
            or ``"tbptt_chunk"`` (see `uoro.Learner`).
        rank: UORO's rank (independent rank-one estimates averaged per step).
        memory: memory-T UORO's window.
        truncation: the window of ``"tbptt"`` / ``"tbptt_chunk"``.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: base learning rate η.
        lr_decay: α of the schedule ``η_t = η / (1 + α √t)``.
        clip_norm: if given, gradients are rescaled to at most this norm.
        on_divergence: ``"reset"`` (default: an exploding step forgets the estimator's
            memory and is redone, so a pipeline never stops learning; resets are counted
            in ``learner.resets``), ``"raise"`` (`uoro.DivergenceError`) or ``"skip"``
            (see `uoro.Learner`).
        dtype: ``"float32"`` or ``"float64"``.
        seed: seeds the initial parameters and UORO's random signs: the same seed gives
            the same run. None draws a fresh seed for each new estimator (and clone).

    Example:
        ```python
        from river import evaluate, metrics
        from uoro.river import RecurrentForecaster

        # series: (x, y) pairs in time order, x a dict of exogenous features or None
        evaluate.evaluate(series, RecurrentForecaster(), metrics.MAE(), horizon=5)
        ```
    """

    def __init__(
        self,
        standardize: bool = True,
        features: tuple[Hashable, ...] | None = None,
        *,
        cell: str = "gru",
        hidden_size: int = 16,
        layers: int = 1,
        algorithm: str = "uoro",
        rank: int = 1,
        memory: int = 1,
        truncation: int | None = None,
        optimizer: str = "adam",
        lr: float = 0.01,
        lr_decay: float = 0.1,
        clip_norm: float | None = None,
        on_divergence: str = "reset",
        dtype: str = "float32",
        seed: int | None = 0,
    ) -> None:
        self.standardize = standardize
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._previous = 0.0  # the last value learned, on the series' scale
        self._init_recurrent(features, _learner_options(locals()), output_size=1)

    def _n_inputs(self, n_features: int) -> int:
        return 1 + n_features

    def _scale(self) -> tuple[float, float]:
        if not self.standardize or self._count == 0:
            return 0.0, 1.0
        std = math.sqrt(self._m2 / (self._count - 1)) if self._count > 1 else 0.0
        return self._mean, std if std > 0 else 1.0

    def _input(
        self, previous: float, x: dict[Hashable, Any] | None, names: tuple[Hashable, ...]
    ) -> np.ndarray:
        features = self._vector({} if x is None else x, names)
        return np.concatenate([np.array([previous], dtype=features.dtype), features])

    def _names_of_optional(self, x: dict[Hashable, Any] | None) -> tuple[Hashable, ...]:
        if x is None and self._names is None:
            return ()
        return self._names_of({} if x is None else x)

    def learn_one(self, y: float, x: dict[Hashable, Any] | None = None) -> None:
        """Reads ``(previous y, x)``, advances the state and learns ``y``."""
        names = self._names_of_optional(x)
        mean, std = self._scale()
        vector = self._input((self._previous - mean) / std, x, names)
        target = _real_target(y, self._options["dtype"])
        value = float(target[0])
        target[0] = (value - mean) / std
        self._learner_for(names).step(vector, target)
        self._count += 1
        delta = value - self._mean
        self._mean += delta / self._count
        self._m2 += delta * (value - self._mean)
        self._previous = value

    def forecast(self, horizon: int, xs: list[dict[Hashable, Any]] | None = None) -> list[float]:
        """Forecasts the next ``horizon`` values; ``xs`` gives the exogenous features of
        each of those steps (required if the model has features). Changes nothing."""
        if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1; got {horizon!r}")
        if xs is not None and len(xs) != horizon:
            raise ValueError(
                f"xs must hold one dict per step of the horizon ({horizon}); got {len(xs)}"
            )
        steps = [None] * horizon if xs is None else list(xs)
        names = self._names_of_optional(steps[0])
        inputs = [self._vector({} if x is None else x, names) for x in steps]
        mean, std = self._scale()
        learner = self._peek_learner(names)
        if horizon > 1:  # roll forward on a copy of θ and the state; the model stays as is
            model, learner = (
                learner,
                self._make_learner(learner.config["input_size"], forward_only=True),
            )
            learner.theta = model.theta
            learner.state = model.state
        previous = (self._previous - mean) / std
        forecasts = []
        for h, features in enumerate(inputs):
            vector = np.concatenate([np.array([previous], dtype=features.dtype), features])
            predicted = float(learner.predict(vector)[0])
            forecasts.append(mean + std * predicted)
            if h + 1 < horizon:  # advance the copy's state (`gradients` leaves θ as it is)
                learner.gradients(vector[None, :], np.array([[predicted]], dtype=features.dtype))
            previous = predicted
        return forecasts


def _real_target(y: Any, dtype: str) -> np.ndarray:
    if isinstance(y, (str, bytes)) or not isinstance(y, (numbers.Real, np.bool_)):
        raise TypeError(f"y must be a real number; got {y!r} ({type(y).__name__})")
    return np.array([y], dtype=dtype)
