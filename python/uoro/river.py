"""River estimators backed by a `uoro.Learner`.

[River](https://riverml.xyz) is a library for online machine learning on streams of
feature dicts. This module wraps a recurrent `uoro.Learner` in River's estimator
interfaces, so it can sit at the end of a River pipeline and be scored with
`river.evaluate.progressive_val_score`:

- `RecurrentRegressor` (a `river.base.Regressor`): one real-valued target per sample,
  squared-error readout.
- `RecurrentClassifier` (a `river.base.Classifier`): one class label per sample, softmax
  readout; `predict_proba_one` gives the class probabilities.
- `RecurrentMultiTargetRegressor` (a `river.base.MultiTargetRegressor`): a dict of
  real-valued targets per sample, one readout unit each.
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
first ``x`` given to ``learn_one`` (or the columns of the first frame given to
``learn_many``), in sorted order (the order of a dict's keys never matters). A
non-numeric value raises `TypeError` naming it, and changes nothing. Encode categorical
features beforehand, e.g. with ``river.preprocessing.OneHotEncoder(categories=...)``.
The regressors and the classifier standardize their features (and the regressors their
targets) themselves, by running statistics (``standardize=True``, the default), so raw
values of any scale can go in; River's ``StandardScaler`` in front does no harm.

**Missing and new features.** Real streams lose a feature now and then; a pipeline should
not die of it. A feature is *missing* from a sample when its key is absent or its value is
``None`` or NaN (as in a pandas frame). ``missing=`` says what the network reads instead:

- ``"mean"`` (the default): the running mean of that feature's values learned so far
  (0 before the first);
- ``"last"``: the last value learned (0 before the first);
- ``"zero"``: 0;
- ``"raise"``: the sample is refused with `ValueError` naming the missing features, and
  nothing changes.

A feature the model does not read (*unknown*: not among the fixed names) is handled by
``unknown=``: ``"ignore"`` (the default) drops it, ``"raise"`` refuses the sample with
`ValueError` and changes nothing. ``learn_one`` counts what it filled in and dropped, per
feature, in ``missing_counts`` and ``unknown_counts`` and, the first time each happens,
says so with one `FeatureWarning`; ``predict_one`` fills in the same way but counts
nothing, so predicting changes nothing. The statistics a policy needs are those of the
samples learned, not predicted.

The input does not grow when a new feature appears (as some feature-incremental models
do): the sensitivities every estimator carries (UORO's θ̃, RTRL's Jacobian, Adam's
moments) are sized by the parameters, and resizing them mid-stream would be a second,
rarely exercised code path through every estimator. Name every feature you expect with
``features=`` instead: a feature named there that has not yet appeared is simply missing
until it does, which is what a zero-initialised new input would have learned from anyway.

**Mini-batches.** `RecurrentRegressor` and `RecurrentClassifier` are River mini-batch
estimators. ``learn_many(X, y)`` takes a pandas frame of consecutive samples (a chunk of
the stream, in row order; ``y`` in the same order) and learns them in one call into the
core: the result is that of ``learn_one`` row by row, bit for bit, with the same
policies. ``predict_many(X)`` (and ``predict_proba_many``) is ``predict_one`` on every row,
each from the current state, as River's contract for mini-batch estimators has it; it
changes nothing. (To score a chunk as a continuation of the stream, learn it.) A
sample's bad value anywhere in the frame is refused before anything is learned.

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

import collections
import copy
import math
import numbers
import random
import warnings
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

from uoro.learner import DivergenceError, Learner

__all__ = [
    "FeatureWarning",
    "RecurrentClassifier",
    "RecurrentForecaster",
    "RecurrentMultiTargetRegressor",
    "RecurrentRegressor",
]

_PLAIN_NUMBERS = (float, int, bool)
_NO_ROW = np.zeros(0)  # the raw features of a sample without any
_MISSING_POLICIES = ("mean", "last", "zero", "raise")
_UNKNOWN_POLICIES = ("ignore", "raise")


class FeatureWarning(UserWarning):
    """An estimator filled in missing features or dropped unknown ones, by its
    ``missing=`` / ``unknown=`` policy; raised once per estimator and kind, the rest is
    counted in ``missing_counts`` / ``unknown_counts``."""


class _Imputer:
    """Fills the missing features (NaN) of a sample by a policy, and keeps what the policy
    needs: per feature the count and running mean of the values learned, the last value
    learned, and how often the feature was missing."""

    def __init__(self, policy: str, n_features: int) -> None:
        self.policy = policy
        self.seen = np.zeros(n_features, dtype=np.int64)
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)  # sum of squared deviations from the mean
        self.last = np.zeros(n_features)
        self.missing = np.zeros(n_features, dtype=np.int64)

    def filled(self, row: np.ndarray) -> np.ndarray:
        """``row`` with its gaps filled; changes nothing."""
        gaps = np.isnan(row)
        if not gaps.any():
            return row
        if self.policy == "zero":
            return np.where(gaps, 0.0, row)
        return np.where(gaps, self.mean if self.policy == "mean" else self.last, row)

    def update(self, row: np.ndarray) -> None:
        """Takes in a learned sample (gaps still NaN)."""
        self.seen, self.mean, self.m2 = self._updated(row)
        gaps = np.isnan(row)
        if gaps.any():
            self.missing += gaps
            self.last = np.where(gaps, self.last, row)
        else:
            self.last = row.copy()

    def _updated(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The count, mean and squared deviations once ``row`` is taken in (Welford's
        update on the features it gives); changes nothing."""
        gaps = np.isnan(row)
        if not gaps.any():  # the common case: fewer operations, the same values
            count = self.seen + 1
            delta = row - self.mean
            mean = self.mean + delta / count
            return count, mean, self.m2 + delta * (row - mean)
        seen = ~gaps
        count = self.seen + seen
        delta = np.where(seen, row - self.mean, 0.0)
        mean = self.mean + delta / np.maximum(count, 1)
        m2 = self.m2 + np.where(seen, delta * (row - mean), 0.0)
        return count, mean, m2

    def standardized(self, values: np.ndarray, including: np.ndarray) -> np.ndarray:
        """``(values - mean) / std`` by the statistics of the samples learned so far and
        ``including`` (the raw sample ``values`` belong to: bounded by √n, so a first
        sample of any scale cannot blow a step up); a std of 1 until two values differ.
        Changes nothing."""
        count, mean, m2 = self._updated(including)
        return (values - mean) / _std(count, m2)

    def std(self) -> np.ndarray:
        return _std(self.seen, self.m2)


class _RunningScalar:
    """A single target's running mean and std (Welford), in Python floats: a regressor's
    target is standardized twice per sample, where NumPy's per-call cost would dominate."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def _updated(self, value: float) -> tuple[int, float, float]:
        count = self.count + 1
        delta = value - self.mean
        mean = self.mean + delta / count
        return count, mean, self.m2 + delta * (value - mean)

    def update(self, value: float) -> None:
        self.count, self.mean, self.m2 = self._updated(value)

    def standardized(self, value: float) -> float:
        """``value`` standardized by the values learned and itself (bounded by √n)."""
        count, mean, m2 = self._updated(value)
        return (value - mean) / _scalar_std(count, m2)

    def std(self) -> float:
        return _scalar_std(self.count, self.m2)


def _scalar_std(count: int, m2: float) -> float:
    std = math.sqrt(m2 / (count - 1)) if count > 1 else 0.0
    return std if std > 0 else 1.0


def _std(count: np.ndarray, m2: np.ndarray) -> np.ndarray:
    if count.min() > 1:  # the common case
        std = np.sqrt(m2 / (count - 1))
        return std if std.all() else np.where(std > 0, std, 1.0)
    std = np.sqrt(m2 / np.maximum(count - 1, 1))
    return np.where((count > 1) & (std > 0), std, 1.0)


class _Recurrent:
    """What the three estimators share: the learner's options, the feature mapping, the
    lazily built learner and the recurrent state's life cycle."""

    _LOSS = "squared_error"

    def _init_recurrent(
        self,
        features: Iterable[Hashable] | None,
        options: dict[str, Any],
        output_size: int,
        missing: str,
        unknown: str,
        standardize_features: bool = False,
    ) -> None:
        if missing not in _MISSING_POLICIES:
            raise ValueError(f"missing must be one of {_MISSING_POLICIES}; got {missing!r}")
        if unknown not in _UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {_UNKNOWN_POLICIES}; got {unknown!r}")
        self.missing = missing
        self.unknown = unknown
        self._standardize_features = bool(standardize_features)
        self._imputer: _Imputer | None = None
        self._unknown_counts: dict[Hashable, int] = {}
        self._warned: set[str] = set()
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

    @property
    def missing_counts(self) -> dict[Hashable, int]:
        """Per feature, how many learned samples lacked it (and had it filled in by the
        ``missing`` policy); features never missing are left out."""
        if self._imputer is None or self._names is None:
            return {}
        return {name: int(n) for name, n in zip(self._names, self._imputer.missing) if n}

    @property
    def unknown_counts(self) -> dict[Hashable, int]:
        """Per feature the model does not read, how many learned samples gave it (and had
        it dropped by ``unknown="ignore"``)."""
        return dict(self._unknown_counts)

    def reset_state(self) -> None:
        """Zeroes the recurrent state (a new sequence starts); the parameters stay."""
        if self._learner is not None:
            self._learner.reset_state()

    def _n_inputs(self, n_features: int) -> int:
        return n_features

    def _make_learner(self, input_size: int, *, forward_only: bool = False) -> Learner:
        """A learner of this estimator's configuration; ``forward_only``: one that has the
        same parameter layout but the cheapest estimator and a learning rate of 0, to run
        the network forward."""
        o = dict(self._options)
        if o["algorithm"] == "snap1" and o["layers"] > 1:  # SnAp-1 within each layer
            o["algorithm"] = "layerwise"
        if forward_only:  # its steps advance the state and leave θ as it is (lr 0)
            o.update(algorithm="uoro", rank=1, memory=1, truncation=None)
            o.update(optimizer="sgd", lr=0.0, lr_decay=0.0, clip_norm=None)
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
        self._imputer = _Imputer(self.missing, len(names))

    def _names_of(self, x: Mapping[Hashable, Any]) -> tuple[Hashable, ...]:
        """The fixed names, or those ``x`` would fix: its keys, sorted."""
        if self._names is not None:
            return self._names
        _check_mapping(x)
        return _sorted_names(x)

    def _imputer_for(self, names: tuple[Hashable, ...]) -> _Imputer:
        """The imputer of the fixed names, or the one ``names`` would start with."""
        if names is self._names and self._imputer is not None:
            return self._imputer
        return _Imputer(self.missing, len(names))

    def _row(
        self, x: Mapping[Hashable, Any], names: tuple[Hashable, ...]
    ) -> tuple[np.ndarray, list[Hashable]]:
        """The features of ``x`` in the order of ``names`` (float64, NaN where missing) and
        the unknown features it gives a value for; refuses what the policies refuse."""
        _check_mapping(x)
        row = np.array([_number(name, x.get(name), self) for name in names], dtype=np.float64)
        known = self._name_set if names is self._names else frozenset(names)
        unknown = [k for k in x.keys() - known if not _is_missing(x[k])]
        self._refuse(names, row, unknown)
        return row, unknown

    def _refuse(self, names: tuple[Hashable, ...], values: np.ndarray, unknown: Any) -> None:
        """Refuses infinite values always, and gaps or unknown features as the policies
        say (``values``: one row or a frame's rows)."""
        infinite = np.isinf(values)
        if infinite.any():
            first = tuple(np.argwhere(infinite)[0])
            raise ValueError(
                f"feature {names[first[-1]]!r} is {values[first]}; "
                f"{type(self).__name__} reads finite numbers (NaN or None: missing)"
            )
        gaps = np.isnan(values)
        refused_gaps = self.missing == "raise" and gaps.any()
        refused_unknown = self.unknown == "raise" and len(unknown) > 0
        if not (refused_gaps or refused_unknown):
            return
        columns = gaps.reshape(-1, len(names)).T  # one row or a frame's rows
        lacking = [k for k, column in zip(names, columns) if column.any()]
        unknown_names = sorted(unknown, key=repr)
        origin = "by the features argument" if self.features is not None else "when first learned"
        raise ValueError(
            f"{type(self).__name__} reads the features {list(names)} (fixed {origin}); "
            f"this x lacks {lacking} and has unknown {unknown_names}, refused by "
            f"missing={self.missing!r}, unknown={self.unknown!r} (missing='mean', 'last' or "
            "'zero' fills a missing feature in; unknown='ignore' drops an unknown one)"
        )

    def _sample(
        self, x: Mapping[Hashable, Any], names: tuple[Hashable, ...]
    ) -> tuple[np.ndarray, np.ndarray, list[Hashable]]:
        """The network's input for ``x`` (gaps filled, the learner's dtype), its raw row
        and its unknown features."""
        row, unknown = self._row(x, names)
        return self._network_input(self._imputer_for(names), row), row, unknown

    def _network_input(self, imputer: _Imputer, row: np.ndarray) -> np.ndarray:
        """What the network reads for a raw row: gaps filled, standardized if the
        estimator standardizes its features, in the learner's dtype."""
        filled = imputer.filled(row)
        if self._standardize_features:
            filled = imputer.standardized(filled, including=row)
        return filled.astype(self._options["dtype"])

    def _learned_one(self, row: np.ndarray, unknown: list[Hashable]) -> None:
        """Accounts for a sample the learner took: the policies' statistics and counts."""
        assert self._imputer is not None
        self._imputer.update(row)
        self._note(bool(np.isnan(row).any()), {name: 1 for name in unknown})

    def _note(self, filled: bool, unknown: Mapping[Hashable, int]) -> None:
        for name, count in unknown.items():
            self._unknown_counts[name] = self._unknown_counts.get(name, 0) + count
        if filled and "missing" not in self._warned:
            self._warned.add("missing")
            fill = {"mean": "running mean", "last": "last value", "zero": "zero"}[self.missing]
            warnings.warn(
                f"{type(self).__name__}: a sample lacked features {list(self.missing_counts)}, "
                f"read as their {fill} (missing={self.missing!r}); this is said once, "
                "missing_counts counts every time",
                FeatureWarning,
                stacklevel=4,
            )
        if unknown and "unknown" not in self._warned:
            self._warned.add("unknown")
            warnings.warn(
                f"{type(self).__name__}: a sample gave features it does not read, "
                f"{sorted(unknown, key=repr)}, ignored (unknown='ignore'; the model reads "
                f"{list(self._names or ())}); this is said once, unknown_counts counts "
                "every time",
                FeatureWarning,
                stacklevel=4,
            )

    # ---- mini-batches (pandas frames)

    def _names_of_frame(self, X: Any) -> tuple[Hashable, ...]:
        pd = _pandas()
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"X must be a pandas DataFrame; got {type(X).__name__}")
        if X.columns.has_duplicates:
            raise ValueError(f"X must not repeat a column; got {list(X.columns)}")
        return self._names if self._names is not None else _sorted_names(X.columns)

    def _frame_rows(
        self, X: Any, names: tuple[Hashable, ...]
    ) -> tuple[np.ndarray, dict[Hashable, np.ndarray]]:
        """The frame's rows as `_row` makes them, and per unknown column the rows that
        give it a value."""
        rows = np.full((len(X), len(names)), np.nan)
        for i, name in enumerate(names):
            if name in X.columns:
                rows[:, i] = _column(X[name], name, self)
        known = set(names)
        unknown = {}
        for column in X.columns:
            if column not in known:
                given = X[column].notna().to_numpy()
                if given.any():
                    unknown[column] = given
        self._refuse(names, rows, unknown)
        return rows, unknown

    def _fit_rows(
        self,
        names: tuple[Hashable, ...],
        rows: np.ndarray,
        unknown: dict[Hashable, np.ndarray],
        targets: np.ndarray,
        on_learned: Any = None,
    ) -> None:
        """Learns the rows in one `uoro.Learner.fit`, exactly as `learn_one` would one by
        one: each row's gaps are filled by the statistics of the rows before it."""
        imputer = copy.deepcopy(self._imputer_for(names))
        inputs = np.empty(rows.shape, dtype=self._options["dtype"])
        for t, row in enumerate(rows):
            inputs[t] = self._network_input(imputer, row)
            imputer.update(row)
        learner = self._learner_for(names)
        try:
            learner.fit(inputs, targets)
        except DivergenceError as error:  # on_divergence="raise": the rows before stay learned
            applied = int(error.index)  # type: ignore[attr-defined]  # the refused row
            # The estimator's own imputer is still the chunk's starting point.
            start = self._imputer
            assert start is not None
            for row in rows[:applied]:
                start.update(row)
            self._commit_rows(start, rows[:applied], unknown, applied, on_learned)
            raise
        self._commit_rows(imputer, rows, unknown, len(rows), on_learned)

    def _commit_rows(
        self,
        imputer: _Imputer,
        rows: np.ndarray,
        unknown: dict[Hashable, np.ndarray],
        applied: int,
        on_learned: Any,
    ) -> None:
        self._imputer = imputer
        counts = {k: int(given[:applied].sum()) for k, given in unknown.items()}
        self._note(bool(np.isnan(rows).any()), {k: n for k, n in counts.items() if n})
        if on_learned is not None:
            on_learned(applied)


def _check_mapping(x: Any) -> None:
    if not isinstance(x, Mapping):
        raise TypeError(f"x must be a dict of features; got {type(x).__name__}")


def _sorted_names(keys: Iterable[Hashable]) -> tuple[Hashable, ...]:
    try:
        return tuple(sorted(keys))  # type: ignore[type-var]  # any orderable keys
    except TypeError:  # keys of mixed types
        return tuple(sorted(keys, key=lambda k: (type(k).__name__, repr(k))))


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _number(name: Hashable, value: Any, owner: Any) -> Any:
    """A feature's value as a real number (NaN if missing); refuses anything else."""
    if value is None:
        return math.nan
    if type(value) not in _PLAIN_NUMBERS and not isinstance(value, (numbers.Real, np.bool_)):
        raise TypeError(
            f"feature {name!r} is {value!r} ({type(value).__name__}); "
            f"{type(owner).__name__} reads real numbers only: encode other values "
            "first, e.g. categories with river.preprocessing.OneHotEncoder"
        )
    return value


def _column(column: Any, name: Hashable, owner: Any) -> np.ndarray:
    """A frame's column as float64 (NaN where missing), refusing what `_number` refuses."""
    pd = _pandas()
    if pd.api.types.is_bool_dtype(column) or (
        pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_complex_dtype(column)
    ):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.array([_number(name, v, owner) for v in column], dtype=np.float64)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as error:  # pragma: no cover - pandas comes with uoro[river]
        raise ImportError(
            'learn_many / predict_many take pandas frames: pip install "uoro[river]" '
            "(or: pip install pandas)"
        ) from error
    return pandas


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


class RecurrentRegressor(_Recurrent, _river_base.MiniBatchRegressor):
    """A recurrent network that learns a real-valued target online (River regressor).

    ``learn_one(x, y)`` advances the recurrent state with ``x`` and learns ``y`` by one
    `uoro.Learner.step` with a squared-error readout; ``predict_one(x)`` is the prediction
    that step would make, and changes nothing (see `uoro.river`).

    The defaults were chosen by `benchmarks/tune_river_defaults.py` on the first half of
    River's bundled streams (see docs/real_streams.md).

    Args:
        features: the feature names, in the order they enter the network. None (the
            default): the keys of the first ``x`` given to ``learn_one``, sorted.
        standardize: standardize the features and the target inside the estimator, each
            by its running mean and std (those of the samples learned, the current one
            included, so that no first sample is out of scale); predictions are mapped
            back to the target's scale. River's scalers in front do no harm.
        missing: what a missing feature is read as: ``"mean"`` (its running mean),
            ``"last"`` (its last value), ``"zero"``, or ``"raise"`` (refuse the sample);
            see `uoro.river`.
        unknown: a feature the model does not read: ``"ignore"`` it or ``"raise"``.
        cell: ``"rnn"``, ``"gru"``, ``"lstm"`` or an element-wise cell, ``"mingru"``,
            ``"minlstm"``, ``"indrnn"`` (see `uoro.Learner`).
        hidden_size: number of hidden units.
        layers: depth of a stack of the cell (1 to 3; see `uoro.Learner`).
        algorithm: the gradient estimator: ``"snap1"`` (default; on a stack, the
            layer-wise rule, SnAp-1 within each layer), ``"uoro"``, ``"rtrl"`` (exact, and
            O(|θ|) on an element-wise cell), ``"tbptt"`` or ``"tbptt_chunk"`` (see
            `uoro.Learner`).
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
        standardize: bool = True,
        missing: str = "mean",
        unknown: str = "ignore",
        cell: str = "gru",
        hidden_size: int = 16,
        layers: int = 1,
        algorithm: str = "snap1",
        rank: int = 1,
        memory: int = 1,
        truncation: int | None = None,
        optimizer: str = "sgd",
        lr: float = 0.1,
        lr_decay: float = 0.0,
        clip_norm: float | None = None,
        on_divergence: str = "reset",
        dtype: str = "float32",
        seed: int | None = 0,
    ) -> None:
        self.standardize = standardize
        self._target_stats = _RunningScalar()  # the running mean and std of y
        self._init_recurrent(
            features,
            _learner_options(locals()),
            output_size=1,
            missing=missing,
            unknown=unknown,
            standardize_features=standardize,
        )

    def _target(self, stats: _RunningScalar, y: float) -> np.ndarray:
        """What the network learns for ``y``: standardized if the estimator standardizes
        (by the targets learned, this one included: bounded)."""
        target = stats.standardized(y) if self.standardize else y
        return np.array([target], dtype=self._options["dtype"])

    def _prediction(self, output: np.ndarray) -> float:
        """The prediction on the target's scale, from the network's output."""
        if not self.standardize:
            return float(output[0])
        return self._target_stats.mean + self._target_stats.std() * float(output[0])

    def learn_one(self, x: dict[Hashable, Any], y: float) -> None:
        """Advances the state with ``x`` and learns the target ``y`` (a real number)."""
        names = self._names_of(x)
        vector, row, unknown = self._sample(x, names)
        value = float(_real_target(y, "float64")[0])
        self._learner_for(names).step(vector, self._target(self._target_stats, value))
        self._learned_one(row, unknown)
        self._target_stats.update(value)

    def predict_one(self, x: dict[Hashable, Any]) -> float:
        """The prediction ``learn_one(x, y)`` would make for this sample; changes nothing."""
        names = self._names_of(x)
        vector, _, _ = self._sample(x, names)
        return self._prediction(self._peek_learner(names).predict(vector))

    def learn_many(self, X: Any, y: Any) -> None:
        """Learns the frame's rows in order (a chunk of the stream; ``y`` the targets in
        the same order) in one call into the core: the same result as ``learn_one`` row
        by row, bit for bit. Bad input anywhere refuses the whole chunk."""
        names = self._names_of_frame(X)
        rows, unknown = self._frame_rows(X, names)
        values = _real_targets(y, len(rows), "float64")
        stats = copy.deepcopy(self._target_stats)
        targets = np.empty(values.shape, dtype=self._options["dtype"])
        for t, value in enumerate(values[:, 0].tolist()):  # by those before it, and itself
            targets[t] = self._target(stats, value)
            stats.update(value)

        def update_target_stats(applied: int) -> None:
            for value in values[:applied, 0].tolist():
                self._target_stats.update(value)

        if len(rows):
            self._fit_rows(names, rows, unknown, targets, update_target_stats)

    def predict_many(self, X: Any) -> Any:
        """``predict_one`` of every row, each from the current state (River's contract);
        changes nothing. A pandas Series on ``X``'s index."""
        pd = _pandas()
        names = self._names_of_frame(X)
        rows, _ = self._frame_rows(X, names)
        learner, imputer = self._peek_learner(names), self._imputer_for(names)
        predictions = [
            self._prediction(learner.predict(self._network_input(imputer, r))) for r in rows
        ]
        return pd.Series(predictions, index=X.index, dtype=np.float64)


class RecurrentClassifier(_Recurrent, _river_base.MiniBatchClassifier):
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

    The defaults were chosen by `benchmarks/tune_river_defaults.py` on the first half of
    River's bundled streams (see docs/real_streams.md).

    Args:
        classes: the labels (hashable, distinct, at least two), or None to learn them on
            the fly.
        max_classes: with ``classes=None``, how many distinct labels may appear.
        features: the feature names, in the order they enter the network. None (the
            default): the keys of the first ``x`` given to ``learn_one``, sorted.
        standardize: standardize the features inside the estimator, each by its
            running mean and std (those of the samples learned, the current one
            included).
        missing: what a missing feature is read as: ``"mean"`` (its running mean),
            ``"last"`` (its last value), ``"zero"``, or ``"raise"`` (refuse the sample);
            see `uoro.river`.
        unknown: a feature the model does not read: ``"ignore"`` it or ``"raise"``.
        cell: ``"rnn"``, ``"gru"``, ``"lstm"`` or an element-wise cell, ``"mingru"``,
            ``"minlstm"``, ``"indrnn"`` (see `uoro.Learner`).
        hidden_size: number of hidden units.
        layers: depth of a stack of the cell (1 to 3; see `uoro.Learner`).
        algorithm: the gradient estimator: ``"snap1"`` (default; on a stack, the
            layer-wise rule, SnAp-1 within each layer), ``"uoro"``, ``"rtrl"`` (exact, and
            O(|θ|) on an element-wise cell), ``"tbptt"`` or ``"tbptt_chunk"`` (see
            `uoro.Learner`).
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
        standardize: bool = True,
        missing: str = "mean",
        unknown: str = "ignore",
        cell: str = "lstm",
        hidden_size: int = 16,
        layers: int = 1,
        algorithm: str = "snap1",
        rank: int = 1,
        memory: int = 1,
        truncation: int | None = None,
        optimizer: str = "adam",
        lr: float = 0.03,
        lr_decay: float = 0.0,
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
        self.standardize = standardize
        self._init_recurrent(
            features,
            _learner_options(locals()),
            output_size=n_outputs,
            missing=missing,
            unknown=unknown,
            standardize_features=standardize,
        )

    _LOSS = "cross_entropy"

    @property
    def _multiclass(self) -> bool:
        return True

    @property
    def labels(self) -> tuple[Hashable, ...]:
        """The labels known so far, by output index."""
        return tuple(self._labels)

    def _label_index(self, y: Hashable, pending: list[Hashable]) -> int:
        """The output of label ``y``; a new label is appended to ``pending``."""
        known = self._index.get(y)
        if known is not None:
            return known
        if y in pending:
            return len(self._labels) + pending.index(y)
        if self.classes is not None:
            raise ValueError(f"label {y!r} is not one of classes {tuple(self._labels)!r}")
        if len(self._labels) + len(pending) >= self._output_size:
            raise ValueError(
                f"label {y!r} would be distinct label number "
                f"{len(self._labels) + len(pending) + 1}, beyond max_classes="
                f"{self.max_classes}; known labels: {tuple(self._labels + pending)!r}"
            )
        pending.append(y)
        return len(self._labels) + len(pending) - 1

    def _add_labels(self, labels: list[Hashable]) -> None:
        for label in labels:
            self._index[label] = len(self._labels)
            self._labels.append(label)

    def learn_one(self, x: dict[Hashable, Any], y: Hashable) -> None:
        """Advances the state with ``x`` and learns the label ``y``."""
        names = self._names_of(x)
        vector, row, unknown = self._sample(x, names)
        new_labels: list[Hashable] = []
        index = self._label_index(y, new_labels)
        self._learner_for(names).step(vector, index)
        self._add_labels(new_labels)  # only once the step succeeded
        self._learned_one(row, unknown)

    def _probabilities(self, learner: Learner, vector: np.ndarray) -> dict[Any, float]:
        if not self._labels:
            return {}
        probabilities = learner.predict(vector)[: len(self._labels)].astype(np.float64)
        total = probabilities.sum()
        return {label: float(p / total) for label, p in zip(self._labels, probabilities)}

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[Any, float]:
        """The probability of each known label for this sample, as ``learn_one(x, y)``
        would predict it; changes nothing."""
        names = self._names_of(x)
        vector, _, _ = self._sample(x, names)
        return self._probabilities(self._peek_learner(names), vector)

    def learn_many(self, X: Any, y: Any) -> None:
        """Learns the frame's rows in order (a chunk of the stream; ``y`` the labels in
        the same order) in one call into the core: the same result as ``learn_one`` row
        by row, bit for bit. Bad input anywhere refuses the whole chunk."""
        names = self._names_of_frame(X)
        rows, unknown = self._frame_rows(X, names)
        labels = list(y)
        if len(labels) != len(rows):
            raise ValueError(f"y must hold one label per row of X ({len(rows)}); got {len(labels)}")
        pending: list[Hashable] = []
        indices = np.array([self._label_index(label, pending) for label in labels], dtype=np.int64)
        first_row = {label: labels.index(label) for label in pending}

        def add_labels_learned(applied: int) -> None:
            self._add_labels([label for label in pending if first_row[label] < applied])

        if len(rows):
            self._fit_rows(names, rows, unknown, indices, add_labels_learned)

    def predict_proba_many(self, X: Any) -> Any:
        """``predict_proba_one`` of every row, each from the current state (River's
        contract); changes nothing. A pandas DataFrame, one column per known label."""
        pd = _pandas()
        names = self._names_of_frame(X)
        rows, _ = self._frame_rows(X, names)
        learner, imputer = self._peek_learner(names), self._imputer_for(names)
        rows_proba = [self._probabilities(learner, self._network_input(imputer, r)) for r in rows]
        return pd.DataFrame(rows_proba, index=X.index, columns=list(self._labels), dtype=float)

    def predict_many(self, X: Any) -> Any:
        """``predict_one`` of every row (the most probable label; None before any label),
        each from the current state; changes nothing. A pandas Series on ``X``'s index."""
        pd = _pandas()
        probabilities = self.predict_proba_many(X)
        labels = [
            max(p, key=p.get) if p else None
            for p in probabilities.to_dict(orient="records", into=dict)
        ]
        return pd.Series(labels, index=X.index, dtype=object)


class RecurrentMultiTargetRegressor(_Recurrent, _river_base.MultiTargetRegressor):
    """A recurrent network that learns several real-valued targets at once, online (River
    multi-target regressor): ``y`` is a dict of targets, one readout unit each.

    ``learn_one(x, y)`` advances the recurrent state with ``x`` and learns every target in
    ``y`` by one `uoro.Learner.step` with a squared-error readout (the loss summed over
    the targets); ``predict_one(x)`` is the dict that step would predict, and changes
    nothing (see `uoro.river`). The target names are fixed like the features: by
    ``targets`` if given, otherwise by the keys of the first ``y``, sorted; afterwards
    every ``y`` must give every target, each a finite real number (a target cannot be
    filled in: it is what is learned), or it is refused with `ValueError` / `TypeError`
    and nothing changes.

    Args:
        targets: the target names, in readout order; None (the default): the keys of the
            first ``y`` given to ``learn_one``, sorted.
        standardize: standardize the features and every target inside the estimator, as
            `RecurrentRegressor` does.

    The other arguments (``features``, ``missing``, ``unknown`` and the learner's options
    from ``cell`` to ``seed``) are those of `RecurrentRegressor`, with its defaults.

    Example:
        ```python
        from river import evaluate, metrics, preprocessing
        from uoro.river import RecurrentMultiTargetRegressor

        model = preprocessing.StandardScaler() | RecurrentMultiTargetRegressor()
        # stream: (x, y) pairs in time order, y a dict of floats
        evaluate.progressive_val_score(stream, model, metrics.multioutput.MicroAverage(
            metrics.MAE()))
        ```
    """

    def __init__(
        self,
        targets: tuple[Hashable, ...] | None = None,
        features: tuple[Hashable, ...] | None = None,
        *,
        standardize: bool = True,
        missing: str = "mean",
        unknown: str = "ignore",
        cell: str = "gru",
        hidden_size: int = 16,
        layers: int = 1,
        algorithm: str = "snap1",
        rank: int = 1,
        memory: int = 1,
        truncation: int | None = None,
        optimizer: str = "sgd",
        lr: float = 0.1,
        lr_decay: float = 0.0,
        clip_norm: float | None = None,
        on_divergence: str = "reset",
        dtype: str = "float32",
        seed: int | None = 0,
    ) -> None:
        self.targets = targets
        self.standardize = standardize
        self._target_stats: _Imputer | None = None  # per target, its running mean and std
        self._targets: tuple[Hashable, ...] | None = None
        if targets is not None:
            if isinstance(targets, (str, bytes)) or not isinstance(targets, Iterable):
                raise TypeError(f"targets must be a sequence of target names; got {targets!r}")
            names = tuple(targets)
            if not names or len(set(names)) != len(names):
                raise ValueError(f"targets must hold distinct names, at least one; got {targets!r}")
            self._targets = names
            self._target_stats = _Imputer("zero", len(names))
        self._init_recurrent(
            features,
            _learner_options(locals()),
            output_size=len(self._targets or (None,)),
            missing=missing,
            unknown=unknown,
            standardize_features=standardize,
        )

    @property
    def target_names(self) -> tuple[Hashable, ...] | None:
        """The target names, in readout order (None until fixed)."""
        return self._targets

    def _target_vector(self, y: Any) -> tuple[tuple[Hashable, ...], np.ndarray]:
        if not isinstance(y, Mapping):
            raise TypeError(f"y must be a dict of targets; got {type(y).__name__}")
        targets = self._targets if self._targets is not None else _sorted_names(y)
        if not targets:
            raise ValueError("y must give at least one target; got an empty dict")
        if set(y.keys()) != set(targets):
            raise ValueError(
                f"{type(self).__name__} learns the targets {list(targets)}; this y lacks "
                f"{[k for k in targets if k not in y]} and has unknown "
                f"{sorted(y.keys() - set(targets), key=repr)}: a target cannot be filled in"
            )
        values = [_real_target(y[k], "float64", name=f"target {k!r}")[0] for k in targets]
        return targets, np.array(values, dtype=np.float64)

    def learn_one(self, x: dict[Hashable, Any], y: dict[Hashable, float], **kwargs: Any) -> None:
        """Advances the state with ``x`` and learns the targets ``y`` (a dict of reals)."""
        names = self._names_of(x)
        vector, row, unknown = self._sample(x, names)
        targets, values = self._target_vector(y)
        if self._targets is None:  # fixed by the first y, before the learner is built
            self._targets = targets
            self._output_size = len(targets)
            self._target_stats = _Imputer("zero", len(targets))
        assert self._target_stats is not None
        stats = self._target_stats
        target = stats.standardized(values, including=values) if self.standardize else values
        self._learner_for(names).step(vector, target.astype(self._options["dtype"]))
        self._learned_one(row, unknown)
        self._target_stats.update(values)

    def predict_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[Hashable, float]:
        """The prediction ``learn_one(x, y)`` would make for this sample, per target (an
        empty dict while the targets are not yet known); changes nothing."""
        names = self._names_of(x)
        vector, _, _ = self._sample(x, names)
        if self._targets is None:
            return {}
        predicted = self._peek_learner(names).predict(vector).astype(np.float64)
        if self.standardize and self._target_stats is not None:
            predicted = self._target_stats.mean + self._target_stats.std() * predicted
        return {k: float(v) for k, v in zip(self._targets, predicted)}


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

    With ``seasonality=m`` the network also reads the value one season back,
    ``y[t - m]`` (the previous value until a season has passed), and learns the seasonal
    difference ``y[t] - y[t - m]`` (in units of the running std) instead of ``y``: an
    untrained network forecasts the seasonal naive forecast, and what it learns is how
    this season departs from the last (trend, changing amplitude). Forecasts further
    ahead than a season read the forecasts of the season before.

    The defaults were chosen by `benchmarks/tune_river_defaults.py` on the first half of
    River's bundled streams (see docs/real_streams.md).

    Args:
        standardize: standardize the series with its running statistics.
        seasonality: the period m of a seasonal series (e.g. 12 for monthly data with
            a yearly cycle), or None (the default) for none.
        features: the feature names, in the order they enter the network. None (the
            default): the keys of the first ``x`` given to ``learn_one``, sorted.
        missing: what a missing feature is read as: ``"mean"`` (its running mean),
            ``"last"`` (its last value), ``"zero"``, or ``"raise"`` (refuse the sample);
            see `uoro.river`.
        unknown: a feature the model does not read: ``"ignore"`` it or ``"raise"``.
        cell: ``"rnn"``, ``"gru"``, ``"lstm"`` or an element-wise cell, ``"mingru"``,
            ``"minlstm"``, ``"indrnn"`` (see `uoro.Learner`).
        hidden_size: number of hidden units.
        layers: depth of a stack of the cell (1 to 3; see `uoro.Learner`).
        algorithm: the gradient estimator: ``"uoro"`` (default), ``"snap1"``, ``"rtrl"``,
            ``"tbptt"`` or ``"tbptt_chunk"`` (see `uoro.Learner`).
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
        seasonality: int | None = None,
        missing: str = "mean",
        unknown: str = "ignore",
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
        self.seasonality = seasonality
        if seasonality is not None and (
            isinstance(seasonality, bool)
            or not isinstance(seasonality, numbers.Integral)
            or seasonality < 1
        ):
            raise ValueError(f"seasonality must be None or an integer >= 1; got {seasonality!r}")
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._previous = 0.0  # the last value learned, on the series' scale
        # The last `seasonality` values learned, for the seasonal lag.
        self._history: collections.deque[float] = collections.deque(maxlen=seasonality or 1)
        self._rollout: Learner | None = None  # forecast's scratch copy, built once
        self._init_recurrent(
            features, _learner_options(locals()), output_size=1, missing=missing, unknown=unknown
        )

    def _n_inputs(self, n_features: int) -> int:
        return (1 if self.seasonality is None else 2) + n_features

    def _scale(self) -> tuple[float, float]:
        if not self.standardize or self._count == 0:
            return 0.0, 1.0
        std = math.sqrt(self._m2 / (self._count - 1)) if self._count > 1 else 0.0
        return self._mean, std if std > 0 else 1.0

    def _lag(self, ahead: int, forecasts: list[float], previous: float) -> float:
        """The seasonal lag of the value ``ahead`` steps after the last learned: the value
        one season before it (learned, or forecast earlier in the same rollout), or, before
        a season has passed, ``previous`` (the value just before it)."""
        assert self.seasonality is not None
        position = self._count + ahead - self.seasonality  # index of the lagged value
        if position < 0:
            return previous
        if position >= self._count:
            return forecasts[position - self._count]
        return self._history[position - (self._count - len(self._history))]

    def _input(
        self,
        previous: float,
        lag: float,
        x: dict[Hashable, Any] | None,
        names: tuple[Hashable, ...],
    ) -> tuple[np.ndarray, np.ndarray, list[Hashable]]:
        """The network's input, ``(previous, [lag,] x)`` standardized, its raw row and its
        unknown features."""
        mean, std = self._scale()
        series = [(previous - mean) / std]
        if self.seasonality is not None:
            series.append((lag - mean) / std)
        if not names and not x:  # the series alone: no feature handling to pay for
            return np.array(series, dtype=self._options["dtype"]), _NO_ROW, []
        features, row, unknown = self._sample({} if x is None else x, names)
        vector = np.concatenate([np.array(series, dtype=features.dtype), features])
        return vector, row, unknown

    def _base(self, lag: float) -> float:
        """What the network's output is added to (scaled by std): the mean, or, with a
        seasonality, the seasonal lag (the network learns the seasonal difference)."""
        return self._scale()[0] if self.seasonality is None else lag

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_rollout"] = None  # scratch: rebuilt when needed
        return state

    def _names_of_optional(self, x: dict[Hashable, Any] | None) -> tuple[Hashable, ...]:
        if x is None and self._names is None:
            return ()
        return self._names_of({} if x is None else x)

    def learn_one(self, y: float, x: dict[Hashable, Any] | None = None) -> None:
        """Reads ``(previous y, x)``, advances the state and learns ``y``."""
        names = self._names_of_optional(x)
        lag = self._lag(0, [], self._previous) if self.seasonality else 0.0
        vector, row, unknown = self._input(self._previous, lag, x, names)
        target = _real_target(y, self._options["dtype"])
        value = float(target[0])
        target[0] = (value - self._base(lag)) / self._scale()[1]
        self._learner_for(names).step(vector, target)
        self._learned_one(row, unknown)
        self._count += 1
        delta = value - self._mean
        self._mean += delta / self._count
        self._m2 += delta * (value - self._mean)
        self._previous = value
        self._history.append(value)

    def forecast(self, horizon: int, xs: list[dict[Hashable, Any]] | None = None) -> list[float]:
        """Forecasts the next ``horizon`` values; ``xs`` gives the exogenous features of
        each of those steps (missing ones are filled in by the ``missing`` policy).
        Changes nothing. Forecasts that overflow the network's dtype (a diverged model)
        end the rollout: they and the rest are NaN."""
        if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1; got {horizon!r}")
        if xs is not None and len(xs) != horizon:
            raise ValueError(
                f"xs must hold one dict per step of the horizon ({horizon}); got {len(xs)}"
            )
        steps = [None] * horizon if xs is None else list(xs)
        names = self._names_of_optional(steps[0])
        learner = self._peek_learner(names)
        std = self._scale()[1]
        dtype = self._options["dtype"]
        if horizon > 1:  # roll forward on a scratch copy of θ and the state
            size = learner.config["input_size"]
            if self._rollout is None or self._rollout.config["input_size"] != size:
                self._rollout = self._make_learner(size, forward_only=True)
            model, learner = learner, self._rollout
            learner.theta = model.theta
            learner.state = model.state
        previous = self._previous
        forecasts: list[float] = []
        for h, x in enumerate(steps):
            lag = self._lag(h, forecasts, previous) if self.seasonality else 0.0
            vector = self._input(previous, lag, x, names)[0]
            if not np.isfinite(vector[:2]).all():  # a forecast overflowed: it cannot be read
                forecasts += [math.nan] * (horizon - h)
                break
            predicted = float(learner.predict(vector)[0])
            if h + 1 < horizon and math.isfinite(predicted):
                # Advance the copy: its target is its own prediction, a zero loss, and
                # its lr is 0 (θ stays as it is).
                learner.step(vector, np.array([predicted], dtype=dtype))
            previous = self._base(lag) + std * predicted
            forecasts.append(previous)
        return forecasts


def _real_targets(y: Any, n: int, dtype: str) -> np.ndarray:
    values = list(y)
    if len(values) != n:
        raise ValueError(f"y must hold one target per row of X ({n}); got {len(values)}")
    targets = np.empty((n, 1), dtype=dtype)
    for t, value in enumerate(values):
        targets[t] = _real_target(value, dtype)
    return targets


def _real_target(y: Any, dtype: str, name: str = "y") -> np.ndarray:
    if isinstance(y, (str, bytes)) or not isinstance(y, (numbers.Real, np.bool_)):
        raise TypeError(f"{name} must be a real number; got {y!r} ({type(y).__name__})")
    if not math.isfinite(y):
        raise ValueError(f"{name} must be a finite real number; got {y!r}")
    return np.array([y], dtype=dtype)
