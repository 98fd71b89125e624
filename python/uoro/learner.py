"""The `Learner`: a recurrent cell, a readout, a gradient estimator and an optimizer
that learn online from one sample at a time."""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from typing import Any

import numpy as np

from uoro import _core, cells

DivergenceError = _core.DivergenceError
FORMAT_VERSION = 2  # 2: the divergence counters (samples_seen, resets, ...)

CELLS = ("rnn", "gru", "lstm", "mingru", "minlstm", "indrnn", "influence")
# Cells whose units recur only on themselves: exact RTRL costs O(|θ|) on them.
ELEMENTWISE_CELLS = ("mingru", "minlstm", "indrnn")
LOSSES = ("cross_entropy", "squared_error")
ALGORITHMS = ("uoro", "rtrl", "tbptt", "tbptt_chunk", "snap1", "layerwise", "kf_rtrl", "ok")
# OK keeps at most this many Kronecker terms per weight block.
MAX_OK_RANK = 16
OPTIMIZERS = ("sgd", "adam")
DTYPES = ("float32", "float64")
DIVERGENCE_POLICIES = ("raise", "skip", "reset")
# Stacks of layers are built for these depths (each depth is compiled for each cell).
MAX_LAYERS = 3


def DEFAULT_STREAM_GROUPS(streams: int) -> int:  # noqa: N802 (a rule, read as a constant)
    """UORO's independent estimates over B streams when ``stream_groups`` is not given:
    one per stream. Its cosine with the exact gradient rises with B where one system's
    falls, and over 10⁶ samples it learned faster per second at B = 4, 16 and 64 (README,
    "Many streams learn faster")."""
    return streams


LR_SCALINGS = ("none", "sqrt", "linear")
DEFAULT_LR_SCALING = "sqrt"  # for streams > 1 when lr_scaling is not given


# Consecutive dropped samples after which a learner warns that it may be stuck.
REFUSALS_BEFORE_WARNING = 100


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return str(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def _non_negative(name: str, value: Any, *, strict: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number; got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (strict and number == 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return number


class Learner:
    """A recurrent network that learns online, one sample at a time.

    Each `step(x, y)` reads one input, advances the recurrent state, predicts `y`,
    estimates the gradient of that sample's loss with respect to all parameters
    (through the whole past, without storing it) and updates the parameters.

    Args:
        cell: ``"rnn"`` (the paper's ``s' = W_x x + W_s tanh(s) + b``), ``"gru"`` or
            ``"lstm"`` (PyTorch's ``GRUCell`` / ``LSTMCell`` equations and gate order);
            the element-wise cells, whose units recur only on themselves (so exact
            ``"rtrl"`` costs O(|θ|) per step on them): ``"mingru"`` (Feng et al. 2024:
            ``z = σ(W_z x + b_z)``, ``h̃ = W_h x + b_h``, ``h' = (1 − z) ⊙ h + z ⊙ h̃``),
            ``"minlstm"`` (Feng et al. 2024: ``f, i = σ(W_f x + b_f), σ(W_i x + b_i)``,
            ``h̃ = W_h x + b_h``, ``h' = (f ⊙ h + i ⊙ h̃) / (f + i)``) and ``"indrnn"``
            (Li et al. 2018, with tanh: ``h' = tanh(W x + b + w ⊙ h)``, ``w`` one
            recurrent weight per unit);
            ``"influence"``: the paper's influence-balancing dynamics ``s' = A s + θ x``
            (eq. 18; one scalar parameter θ; ``input_size == hidden_size``), see
            `uoro.influence.learner`; or your own cell, an object following the
            `uoro.cells.Cell` protocol (its functions run inside every step; the sizes
            come from it, and ``input_size`` / ``hidden_size`` may be left out).
        input_size: size of the input vector; with integer inputs, the vocabulary size
            (tokens are one-hot encoded). Default 1.
        hidden_size: number of hidden units (the LSTM's state is ``[h; c]``, twice that).
            Default 64.
        output_size: number of classes (cross-entropy) or of real outputs (squared
            error). Defaults to ``input_size``, as in next-token prediction.
        layers: depth L (1 to 3) of a stack of the built-in cell, as PyTorch's
            ``num_layers``: layer l reads layer l − 1's new hidden output at the same step,
            the readout reads the top layer. The state is the layers' states
            concatenated, so every algorithm applies to the whole network (UORO stays
            unbiased, RTRL and a full-window truncated BPTT exact); on a stack
            ``"layerwise"`` replaces ``"snap1"``. Parameters are named as PyTorch names a stack's
            (``weight_ih_l0``, ``bias_hh_l1``, ...).
        loss: ``"cross_entropy"`` (softmax readout, integer targets, loss in nats) or
            ``"squared_error"`` (linear readout, ``0.5 * ||o - y||^2``).
        algorithm: how the gradient through the past is estimated:

            - ``"uoro"``: unbiased rank-``rank`` estimate, O(|θ|) per step; with
              ``memory=T`` (memory-T UORO) exact backpropagation inside windows of T
              steps and one update per window.
            - ``"rtrl"``: the exact gradient, O(state² · |θ|) per step: small networks.
              On the element-wise cells ∂s/∂θ has one non-zero entry per parameter and
              RTRL keeps just those: exact at O(|θ|) per step, like UORO's cost.
            - ``"snap1"``: SnAp-1 (Menick et al. 2021): RTRL keeping only the entries of
              ∂s/∂θ a parameter reaches in one step (its own unit's state), O(|θ|) per
              step like UORO; biased (the units' cross-influences are dropped) but
              without UORO's variance. The influence cell's one parameter reaches
              every unit in one step, so there SnAp-1 keeps all of ∂s/∂θ: it is RTRL.
            - ``"layerwise"``: the layer-wise online rule for stacks (Zucchet et al.
              2023): SnAp-1 within each layer, each layer's parameters keeping the
              sensitivity of their own unit, and the error reaching lower layers through
              the current step only. O(|θ|) per step. On element-wise layers each layer's
              own sensitivity is exact; what a lower layer's parameters do to the layers
              above over time is dropped, so it is biased for two layers and more (and
              equals ``"snap1"`` on one layer).
            - ``"kf_rtrl"``: KF-RTRL (Mujika et al. 2018): unbiased like UORO, with far
              less noise: each weight block's part of ∂s/∂θ is kept as one Kronecker
              product u ⊗ A (A: state × the block's rows), propagated exactly through
              ∂F/∂s and combined with the step's own influence by a random sign.
              O(state² · Σ rows) per step: between UORO and RTRL.
            - ``"ok"``: the optimal Kronecker-sum approximation (Benzing et al. 2019):
              ``rank`` Kronecker products per block, reduced each step by the
              minimum-variance unbiased rule; exact (RTRL) when ``rank`` covers the
              influence's rank, and quieter than ``"kf_rtrl"`` at ``rank=1``.
            - ``"tbptt"``: truncated BPTT, online: every step, the current loss is
              backpropagated through the last ``truncation`` steps and θ updated.
            - ``"tbptt_chunk"``: truncated BPTT, chunked: once every ``truncation``
              steps, θ is updated with the gradient of the chunk's summed loss
              (the state entering the chunk held fixed).
        rank: UORO's number of independent rank-one estimates averaged per step; OK's
            number of Kronecker products per weight block (1 to ``MAX_OK_RANK``).
        stream_groups: with ``streams=B > 1``, UORO's number of independent estimates
            over the streams: the streams split into G contiguous groups, each with its
            own θ̃ per rank, so the groups' noises average out (see "Many streams"
            below). 1 treats the B streams as one system. By default
            ``DEFAULT_STREAM_GROUPS(B)``; applies to ``"uoro"`` with ``memory=1``.
        memory: memory-T UORO's window (1 = plain UORO).
        truncation: the window T of ``"tbptt"`` / ``"tbptt_chunk"`` (required there).
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: base learning rate η.
        lr_decay: α of the schedule ``η_t = η / (1 + α √t)``, t = updates done so far.
        lr_scaling: with ``streams=B > 1``, how one stream's ``lr`` and ``lr_decay`` carry
            over to B streams: ``"sqrt"`` (the default there) η·√B and the decay clock
            in samples (α·√B per tick), ``"linear"`` η·B and the same clock, ``"none"``
            both per tick as given. `learning_rate` reports the rate in use.
        clip_norm: if given, gradients are rescaled to at most this Euclidean norm.
        beta1: Adam's β1.
        beta2: Adam's β2.
        adam_eps: Adam's ε.
        uoro_eps: ε of UORO's normalizers ρ0, ρ1.
        train_readout: if False, the readout's parameters keep the values they are given
            (the influence-balancing task reads a fixed unit).
        on_divergence: what a step does when it would write a non-finite (or exploding,
            beyond 1e18 in float32 / 1e150 in float64) loss, state, sensitivity, gradient
            or parameter:

            - ``"raise"`` (default): raises `DivergenceError`, which says what exploded
              and by how much; nothing in the learner changes. For a library call whose
              caller decides what to do.
            - ``"reset"``: never stops. The estimator forgets its memory of the past
              (UORO's s̃ and θ̃, RTRL's Jacobian, the truncation windows) and the step is
              redone, so the sample is still learned from, with its own one-step
              gradient. If the forward pass itself explodes, or the redone step still
              does, the recurrent state is zeroed too and the step redone once more; only
              if that fails is the sample dropped (`skipped_steps`). Resets are counted
              in `resets`, `state_resets` and `last_reset`. For long-running pipelines.
            - ``"skip"``: drops the sample, counts it in `skipped_steps` and changes
              nothing. Once UORO's sensitivities have exploded, every later sample is
              refused too: after 100 refusals in a row the learner warns
              (`RuntimeWarning`, once per run of refusals), naming ``"reset"``.
        dtype: ``"float32"`` or ``"float64"``.
        seed: seeds the initialization and UORO's random signs; same seed, same run.
        streams: B, the number of concurrent streams sharing this model (see "Many
            streams" below). 1 (default): one stream, and the shapes documented for
            each method.

    Many streams: with ``streams=B > 1`` every stream has its own recurrent state; all
    share the parameters, the readout and the optimizer. At each tick every stream gets
    one sample: `step` takes ``(B,)`` tokens or ``(B, input_size)`` floats (targets
    likewise) and returns the ``(B,)`` losses; `fit`, `gradients` and `evaluate` take
    ``(T, B)`` / ``(T, B, input_size)`` chunks and return ``(T, B)`` losses. The tick's
    loss is the mean over the streams present and θ is updated once per tick with the
    gradient of that mean, so B streams cost one parameter update per tick instead of
    B. An optional boolean ``mask`` (``(B,)``, or ``(T, B)`` for chunks) says which
    streams have a sample: a stream left out does not advance, adds no loss and no
    gradient (its loss entry is NaN, and its input and target entries are not read:
    any padding will do); a tick without any stream present changes nothing. UORO
    keeps one independent estimate per stream by default (``stream_groups=B``: a θ̃ per
    stream and rank, so the noise of the mean-loss gradient falls as B grows), or per
    group of streams; ``stream_groups=1`` treats the B streams as one system (one θ̃
    per rank whatever B), as the authors' batched code does. ``lr`` and ``lr_decay``
    are one stream's rates: by default (``lr_scaling="sqrt"``) the optimizer runs
    η·√B per tick and counts the decay clock in samples (α·√B per tick);
    ``lr_scaling="none"`` runs them per tick as given. Memory-T UORO keeps one window
    per stream and closes it when a stream has T steps in it (every T ticks without a
    mask); RTRL, SnAp-1 and
    truncated BPTT keep one Jacobian, influence array or window per stream. The step
    counters (`samples_seen`, `skipped_steps`, ...) count ticks.

    Parameters start as PyTorch initializes them: uniform in ±1/√hidden_size.
    """

    def __init__(
        self,
        cell: str | cells.Cell = "gru",
        input_size: int | None = None,
        hidden_size: int | None = None,
        output_size: int | None = None,
        *,
        layers: int = 1,
        loss: str = "cross_entropy",
        algorithm: str = "uoro",
        rank: int = 1,
        stream_groups: int | None = None,
        memory: int = 1,
        truncation: int | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        lr_decay: float = 0.0,
        lr_scaling: str | None = None,
        clip_norm: float | None = None,
        beta1: float = 0.9,
        beta2: float = 0.999,
        adam_eps: float = 1e-8,
        uoro_eps: float = 1e-7,
        train_readout: bool = True,
        on_divergence: str = "raise",
        dtype: str = "float32",
        seed: int = 0,
        streams: int = 1,
    ) -> None:
        self._user: cells.Description | None = None
        if isinstance(cell, str):
            cell = _choice("cell", cell, CELLS)
            input_size = 1 if input_size is None else input_size
            hidden_size = 64 if hidden_size is None else hidden_size
        else:
            self._user = cells.describe(cell)
            for name, given, own in (
                ("input_size", input_size, self._user.input_size),
                ("hidden_size", hidden_size, self._user.hidden_size),
            ):
                if given is not None and given != own:
                    raise ValueError(
                        f"{name}={given!r} differs from the cell's {name} ({own}); leave it "
                        "out with a cell object"
                    )
            input_size, hidden_size = self._user.input_size, self._user.hidden_size
        self._cell_object = None if self._user is None else cell
        self._options: dict[str, Any] = dict(
            cell="user" if self._user is not None else cell,
            input_size=_positive_int("input_size", input_size),
            hidden_size=_positive_int("hidden_size", hidden_size),
            output_size=_positive_int(
                "output_size", input_size if output_size is None else output_size
            ),
            layers=_positive_int("layers", layers),
            loss=_choice("loss", loss, LOSSES),
            algorithm=_choice("algorithm", algorithm, ALGORITHMS),
            rank=_positive_int("rank", rank),
            stream_groups=None
            if stream_groups is None
            else _positive_int("stream_groups", stream_groups),
            memory=_positive_int("memory", memory),
            truncation=None if truncation is None else _positive_int("truncation", truncation),
            optimizer=_choice("optimizer", optimizer, OPTIMIZERS),
            lr=_non_negative("lr", lr),
            lr_decay=_non_negative("lr_decay", lr_decay),
            lr_scaling=None
            if lr_scaling is None
            else _choice("lr_scaling", lr_scaling, LR_SCALINGS),
            clip_norm=None
            if clip_norm is None
            else _non_negative("clip_norm", clip_norm, strict=True),
            beta1=_non_negative("beta1", beta1),
            beta2=_non_negative("beta2", beta2),
            adam_eps=_non_negative("adam_eps", adam_eps, strict=True),
            uoro_eps=_non_negative("uoro_eps", uoro_eps, strict=True),
            train_readout=bool(train_readout),
            on_divergence=_choice("on_divergence", on_divergence, DIVERGENCE_POLICIES),
            dtype=_choice("dtype", dtype, DTYPES),
            seed=int(seed),
            streams=_positive_int("streams", streams),
        )
        for beta in ("beta1", "beta2"):
            if not self._options[beta] < 1:
                raise ValueError(f"{beta} must be in [0, 1); got {self._options[beta]!r}")
        algo = self._options["algorithm"]
        if algo.startswith("tbptt") and truncation is None:
            raise ValueError(f"algorithm {algo!r} needs truncation=T (the window length)")
        if not algo.startswith("tbptt") and truncation is not None:
            raise ValueError(f"truncation applies to 'tbptt' and 'tbptt_chunk', not {algo!r}")
        if algo not in ("uoro", "ok") and self._options["rank"] != 1:
            raise ValueError(f"rank applies to algorithms 'uoro' and 'ok', not {algo!r}")
        if algo == "ok" and self._options["rank"] > MAX_OK_RANK:
            raise ValueError(f"rank of algorithm 'ok' must be at most {MAX_OK_RANK}; got {rank!r}")
        if algo != "uoro" and self._options["memory"] != 1:
            raise ValueError(f"memory applies to algorithm 'uoro', not {algo!r}")
        if cell == "influence" and self._options["input_size"] != self._options["hidden_size"]:
            raise ValueError(
                "cell 'influence' needs input_size == hidden_size; got "
                f"{input_size} and {hidden_size}"
            )
        if self._options["layers"] > 1:
            if self._options["cell"] in ("influence", "user"):
                raise ValueError(
                    f"layers applies to the built-in neural cells, not {self._options['cell']!r}"
                    " (a user-defined cell is stacked by writing the stack as one cell: its"
                    " state is the layers' states concatenated, and every estimator applies)"
                )
            if self._options["layers"] > MAX_LAYERS:
                raise ValueError(f"layers must be at most {MAX_LAYERS}; got {layers!r}")
            if algo == "snap1":
                raise ValueError(
                    "algorithm 'snap1' is not defined on a stack (layers > 1): a lower layer's "
                    "parameters reach every unit above it in one step; use 'layerwise' "
                    "(SnAp-1 within each layer), 'rtrl' (exact), 'uoro' or 'tbptt'"
                )
        if not 0 <= self._options["seed"] < 2**64:
            raise ValueError(f"seed must be in [0, 2**64); got {seed!r}")
        if self._user is not None:
            if algo in ("snap1", "layerwise"):
                raise ValueError(
                    f"algorithm {algo!r} needs the per-unit structure of a built-in cell, which "
                    "a user cell does not declare; use 'rtrl' (exact) or 'uoro'"
                )
            self._options["cell_layout"] = self._user.layout
            cells.warn_finite_difference(self._user, algo)
        self._options["stream_groups"] = _stream_groups(self._options, stream_groups)
        self._options["lr_scaling"] = _lr_scaling(self._options["streams"], lr_scaling)
        self.streams = self._options["streams"]
        self._core = _make_core(self._options, self._user)
        self.dtype = np.dtype(self._options["dtype"])
        if self.streams == 1:
            # One sample per call: `step` is the core's builtin itself (an instance
            # attribute over the method below), with no Python frame and no pybind11
            # dispatch in between; what it cannot take as given goes through
            # `_convert_sample` once.
            squared = self._options["loss"] == "squared_error"
            self.__dict__["step"] = self._core.fast_step(
                functools.partial(_convert_sample, self.dtype, squared)
            )

    # ---- learning

    def step(self, x: Any, y: Any, mask: Any = None) -> Any:
        """Learns from one sample and returns its loss (before the update).

        ``x`` is an int token in ``[0, input_size)`` or a float array of shape
        ``(input_size,)`` in the learner's dtype; ``y`` is an int class (cross-entropy)
        or a float array of shape ``(output_size,)`` (squared error). The prediction made
        for this sample is then in `prediction`.

        With ``streams=B > 1``: one tick, ``x`` of shape ``(B,)`` (tokens) or
        ``(B, input_size)``, ``y`` likewise, an optional boolean ``mask`` ``(B,)``;
        returns the ``(B,)`` losses (NaN for streams left out).

        On a one-stream learner, ``learner.step`` is the compiled core's own function
        (set at construction, with these arguments and errors): no Python runs between
        the caller and the step unless ``x`` or ``y`` needs converting.
        """
        if self.streams > 1:
            return self._core.step(*self._convert_tick(x, y), self._mask(mask))
        return self.__dict__["step"](x, y, mask)  # the builtin set in __init__

    def fit(self, xs: Any, ys: Any, mask: Any = None) -> np.ndarray:
        """Learns from a chunk of samples in order, in one call into the core (the GIL
        is released meanwhile); returns the per-sample losses.

        ``xs`` is an int array ``(T,)`` of tokens or a float array ``(T, input_size)``;
        ``ys`` is an int array ``(T,)`` or a float array ``(T, output_size)``. The whole
        chunk is checked before the first sample is used: a bad sample anywhere raises
        (naming its index) and leaves the learner untouched. A step refused as diverging
        (``on_divergence="raise"``) stops the chunk with `DivergenceError`: the samples
        before it stay applied, and the error's ``index`` and ``losses`` give the refused
        sample's position and the losses of those applied.

        With ``streams=B > 1``: ``(T, B)`` / ``(T, B, width)`` chunks, an optional
        ``(T, B)`` boolean ``mask``, ``(T, B)`` losses; the error's ``index`` is the
        refused tick and its ``losses`` those of the ticks applied, ``(index, B)``.
        """
        return self._chunk_call(self._core.fit, xs, ys, mask)

    def gradients(self, xs: Any, ys: Any, mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Runs the estimator over a chunk without updating the parameters.

        Returns ``(losses, grads)`` where ``grads[t]`` is the gradient estimate the learner
        would apply at step t: for per-step algorithms, that of sample t's loss with
        respect to `theta`; for windowed ones (``memory > 1``, ``"tbptt_chunk"``), zero
        inside a window and, at its last step, that of the window's summed loss. The
        recurrent state and the estimator's own state advance; the parameters and the
        optimizer do not.

        With ``streams=B > 1``: losses ``(T, B)`` and ``grads[t]`` the gradient of tick
        t's mean loss over the streams present (``mask``).
        """
        return self._chunk_call(self._core.gradients, xs, ys, mask)

    def evaluate(self, xs: Any, ys: Any, mask: Any = None) -> np.ndarray:
        """Per-sample losses of a chunk, run from the current state, without learning.

        Changes nothing in the learner (its state is restored afterwards). With
        ``streams=B > 1``, chunks and ``mask`` as in `fit`; losses ``(T, B)``.
        """
        return self._chunk_call(self._core.evaluate, xs, ys, mask)

    def predict(self, x: Any) -> np.ndarray:
        """The prediction for input ``x`` from the current state, without changing it:
        class probabilities (cross-entropy) or output values (squared error). With
        ``streams=B > 1``, ``x`` holds one input per stream and the result is
        ``(B, output_size)``."""
        if self.streams > 1:
            return self._core.predict(_chunk("x", x, self.dtype))
        try:
            return self._core.predict(x)
        except TypeError:
            return self._core.predict(_convert_sample(self.dtype, False, x, None)[0])

    @property
    def prediction(self) -> np.ndarray:
        """What the last `step` predicted for its sample (probabilities or values);
        ``(B, output_size)`` with several streams (a stream left out of the last tick
        keeps its earlier prediction)."""
        return self._core.prediction

    def reset_state(self, streams: Any = None) -> None:
        """Zeroes the recurrent state (e.g. at a sequence boundary). The estimator's
        sensitivity of the state to the parameters is zeroed with it: a constant state
        does not depend on the parameters.

        ``streams`` selects whose state: a stream index, a list of indices or a boolean
        mask ``(B,)``; all by default. The other streams' states and estimator memory
        stay exactly as they were (a window in progress of a reset stream is dropped).
        """
        which = self._stream_selection(streams)
        if self.streams > 1:
            self._core.reset_state(which)
        elif which is None or which[0]:
            self._core.reset_state()

    # ---- parameters and state

    @property
    def theta(self) -> np.ndarray:
        """A copy of all parameters as one flat vector: the cell's blocks, then the
        readout's. Assign an array of the same shape and dtype to set them."""
        return self._core.theta

    @theta.setter
    def theta(self, value: Any) -> None:
        self._core.theta = self._as_dtype_vector("theta", value, self.n_params)

    @property
    def n_params(self) -> int:
        """Number of parameters (cell and readout)."""
        return int(self._core.n_params)

    @property
    def state(self) -> np.ndarray:
        """A copy of the recurrent state (``[h; c]`` for the LSTM); ``(B, state_size)``,
        one row per stream, with several streams."""
        return self._core.state

    @state.setter
    def state(self, value: Any) -> None:
        if self.streams > 1:
            array = np.ascontiguousarray(value, dtype=self.dtype)
            shape = (self.streams, int(self._core.state_size))
            if array.shape != shape:
                raise ValueError(f"state must have shape {shape}; got {array.shape}")
            self._core.state = array
            return
        self._core.state = self._as_dtype_vector("state", value, self._core.state_size)

    @property
    def steps(self) -> int:
        """Parameter updates done so far (the t of the learning-rate schedule)."""
        return int(self._core.steps)

    @property
    def samples_seen(self) -> int:
        """Samples this learner has stepped through (`step`, `fit`, `gradients`), learned
        from or dropped; the index the next sample will have. With several streams,
        ticks (with at least one stream present)."""
        return int(self._core.counters[0])

    @property
    def skipped_steps(self) -> int:
        """Samples dropped as diverging (``on_divergence="skip"``, or ``"reset"`` when
        even a reset step failed)."""
        return int(self._core.counters[1])

    @property
    def resets(self) -> int:
        """Times the ``on_divergence="reset"`` policy forgot the estimator's memory."""
        return int(self._core.counters[2])

    @property
    def state_resets(self) -> int:
        """Of `resets`, those that zeroed the recurrent state as well."""
        return int(self._core.counters[3])

    @property
    def last_reset(self) -> int | None:
        """The index (counted as `samples_seen`) of the sample whose step last reset the
        estimator, or None if none has."""
        index = int(self._core.counters[4])
        return None if index < 0 else index

    @property
    def learning_rate(self) -> float:
        """The learning rate the next update will use."""
        return float(self._core.learning_rate)

    def parameters(self) -> dict[str, np.ndarray]:
        """Copies of the parameters by name, in PyTorch's layout: ``weight_ih``
        (gates·n, input), ``weight_hh`` (gates·n, n), ``bias_ih``, ``bias_hh`` for GRU and
        LSTM (gate orders r,z,n and i,f,g,o); ``weight_ih``, ``weight_hh``, ``bias`` for
        the RNN; ``weight_ih`` (rows z, h̃ for minGRU; f, i, h̃ for minLSTM; n for
        IndRNN) and ``bias`` for the element-wise cells, and IndRNN's per-unit
        ``weight_hh`` (n,); for a user cell, the names of its ``initial_parameters`` (or ``cell``,
        one flat vector); ``readout.weight`` (output, n) and ``readout.bias``."""
        theta = self.theta
        named = {}
        if self._user is not None:
            n_cell = int(self._core.n_cell_params)
            if self._user.names is None:
                named["cell"] = theta[:n_cell].copy()
            else:
                named.update(
                    (k, v.copy()) for k, v in cells.unflatten(theta, self._user.names).items()
                )
        for name, (offset, rows, cols), columns in self._layout():
            matrix = theta[offset : offset + rows * cols].reshape(cols, rows).T
            named[name] = np.ascontiguousarray(
                matrix[:, columns].squeeze(axis=1)
                if isinstance(columns, list)
                else matrix[:, columns]
            )
        return named

    def set_parameters(self, params: dict[str, Any]) -> None:
        """Sets parameters by the names of `parameters` (all of them, same shapes), e.g.
        from a ``torch.nn.GRUCell``'s ``state_dict()`` converted to numpy plus
        ``readout.weight`` / ``readout.bias`` from a ``torch.nn.Linear``."""
        current = self.parameters()
        missing = sorted(set(current) - set(params))
        unknown = sorted(set(params) - set(current))
        if missing or unknown:
            raise KeyError(
                f"parameters must be exactly {sorted(current)}; "
                f"missing {missing}, unknown {unknown}"
            )
        theta = self.theta
        if self._user is not None:
            n_cell = int(self._core.n_cell_params)
            if self._user.names is None:
                theta[:n_cell] = self._checked_value("cell", params["cell"], current["cell"])
            else:
                views = cells.unflatten(theta, self._user.names)
                for name, view in views.items():
                    view[...] = self._checked_value(name, params[name], current[name])
        for name, (offset, rows, cols), columns in self._layout():
            value = np.asarray(params[name], dtype=self.dtype)
            if value.shape != current[name].shape:
                raise ValueError(f"{name} must have shape {current[name].shape}; got {value.shape}")
            matrix = theta[offset : offset + rows * cols].reshape(cols, rows).T
            if isinstance(columns, list):
                matrix[:, columns[0]] = value
            else:
                matrix[:, columns] = value
        self.theta = theta

    # ---- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything the learner is, as plain numpy arrays and scalars: configuration,
        parameters, recurrent state, the estimator's state (UORO's s̃ and θ̃, RTRL's
        Jacobian, the window of truncated BPTT / memory-T UORO), optimizer moments, step
        counters and the random generator. `load_state_dict` of it resumes bit-exactly."""
        core = self._core
        return {
            "format_version": FORMAT_VERSION,
            "config": dict(self._options),
            **{name: getattr(core, name) for name in _ARRAY_STATE},
            **core.estimator_arrays,
            "steps": int(core.steps),
            **dict(zip(_COUNTERS, (int(c) for c in core.counters))),
            "rng_state": np.array(core.rng_state, dtype=np.uint64),
            "window_counters": np.array(core.window_counters, dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a `state_dict` of a learner with the same configuration. Everything is
        checked before anything is written: a mismatch raises and changes nothing."""
        version = state.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"unsupported checkpoint format_version {version!r}; "
                f"this version of uoro reads {FORMAT_VERSION}"
            )
        config = dict(state.get("config", {}))
        config.setdefault("streams", 1)  # checkpoints from before many streams
        config.setdefault("stream_groups", 1)  # and from before groups of streams
        config.setdefault("lr_scaling", "none")  # and before the rate scaled with B
        # The seed only chose the initial θ and the random stream, both restored below.
        differing = sorted(
            k
            for k in set(config) | set(self._options)
            if k != "seed" and config.get(k) != self._options.get(k)
        )
        if "cell_layout" in differing or ("cell" in differing and self._user is not None):
            raise ValueError(
                "checkpoint was made with another cell layout: "
                f"{config.get('cell_layout', config.get('cell'))!r}; this learner's cell has "
                f"{self._options.get('cell_layout', self._options['cell'])!r}"
            )
        if differing:
            raise ValueError(
                f"checkpoint configuration differs from this learner's in "
                f"{differing}; build the learner with Learner.from_state_dict"
            )
        current = self.state_dict()
        # Checkpoints from before the per-stream UORO pass kept θ̃ scaled: σ = 1, exact norms.
        defaults = {"theta_tilde_scale": np.ones_like, "lazy_ticks": np.zeros_like}
        state = {**{k: make(current[k]) for k, make in defaults.items() if k in current}, **state}
        checked = {}
        estimator_arrays = tuple(self._core.estimator_arrays)
        for name in (*_ARRAY_STATE, *estimator_arrays, "rng_state", "window_counters"):
            if name not in state:
                raise KeyError(f"checkpoint lacks {name!r}")
            value = np.asarray(state[name])
            expected = current[name]
            if value.dtype != expected.dtype or value.shape != expected.shape:
                raise ValueError(
                    f"checkpoint {name!r} must be {expected.dtype} of shape "
                    f"{expected.shape}; got {value.dtype} of shape {value.shape}"
                )
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise ValueError(f"checkpoint {name!r} contains NaN or inf")
            checked[name] = np.ascontiguousarray(value)
        counts = {}
        for name in ("steps", *_COUNTERS):
            if name not in state:
                raise KeyError(f"checkpoint lacks {name!r}")
            counts[name] = int(state[name])
            least = -1 if name == "last_reset" else 0
            if counts[name] < least:
                raise ValueError(f"checkpoint {name!r} must be >= {least}; got {counts[name]}")
        if not checked["rng_state"].any():
            raise ValueError("checkpoint 'rng_state' must not be all zeros")
        window = len(checked["window"]) // self.streams
        rows = checked["window_counters"].reshape(-1, 3)
        for head, count, pending in rows.tolist():
            if not (0 <= count <= window and 0 <= pending <= window and 0 <= head < max(window, 1)):
                raise ValueError(
                    f"checkpoint 'window_counters' {checked['window_counters'].tolist()} out "
                    f"of range for a window of {window}"
                )
        core = self._core
        for name in _ARRAY_STATE:
            setattr(core, name, checked[name])
        core.estimator_arrays = {name: checked[name] for name in estimator_arrays}
        core.rng_state = [int(w) for w in checked["rng_state"]]
        core.window_counters = (
            rows.tolist() if self.streams > 1 else [int(c) for c in checked["window_counters"]]
        )
        core.steps = counts["steps"]
        try:
            core.counters = [counts[name] for name in _COUNTERS]
        except ValueError as error:  # the core's consistency check
            raise ValueError(f"checkpoint counters: {error}") from None
        self._options["seed"] = config["seed"]

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], cell: Any = None) -> Learner:
        """A learner built from a `state_dict`'s configuration and restored from it. A
        checkpoint of a learner with a user cell needs that cell again (``cell=``): the
        checkpoint holds θ and the estimator's memory, not the cell's code."""
        config = dict(state["config"])
        # Checkpoints from before groups of streams and the rate scaled with B.
        config.setdefault("stream_groups", 1)
        config.setdefault("lr_scaling", "none")
        layout = config.pop("cell_layout", None)
        if config.get("cell") == "user":
            if cell is None or isinstance(cell, str):
                raise ValueError(
                    "this checkpoint was made with a user cell: pass the same cell, "
                    f"cell=... (its layout: {layout!r})"
                )
            config["cell"] = cell
            config.pop("input_size", None)
            config.pop("hidden_size", None)
        elif cell is not None:
            raise ValueError(f"this checkpoint uses the built-in cell {config.get('cell')!r}")
        learner = cls(**config)
        learner.load_state_dict(state)
        return learner

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the `state_dict` to one ``.npz`` file of plain arrays (no pickled
        objects, so loading a file runs no code). Read it back with `uoro.load`."""
        state = self.state_dict()
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in state.items() if k != "config"}
        arrays["config"] = np.array(json.dumps(state["config"]))
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    def __getstate__(self) -> dict[str, Any]:
        state = self.state_dict()
        if self._cell_object is not None:
            state["cell_object"] = self._cell_object  # pickled with the learner
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        cell = state.pop("cell_object", None)
        with warnings.catch_warnings():  # warned when the learner was first built
            warnings.simplefilter("ignore", UserWarning)
            restored = Learner.from_state_dict(state, cell=cell)
        self.__dict__.update(restored.__dict__)

    # ---- descriptions

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments of this learner (with a user cell: ``cell`` is that
        object and ``cell_layout`` describes its sizes and parameters)."""
        config = dict(self._options)
        if self._cell_object is not None:
            config["cell"] = self._cell_object
        return config

    def clone(self) -> Learner:
        """A fresh learner with the same configuration (parameters newly initialized
        from the same seed)."""
        config = self.config
        if self._cell_object is not None:
            for key in ("cell_layout", "input_size", "hidden_size"):
                del config[key]
        return Learner(**config)

    def __repr__(self) -> str:
        defaults = Learner.__init__.__kwdefaults__ or {}
        shown = [
            f"{k}={v!r}"
            for k, v in self.config.items()
            if k != "cell_layout"
            and (
                k in ("cell", "input_size", "hidden_size", "output_size")
                or (
                    defaults.get(k, object()) != v
                    # shown only where it differs from what the default resolves to
                    and not (k == "stream_groups" and v == _stream_groups(self.config, None))
                    and not (k == "lr_scaling" and v == _lr_scaling(self.config["streams"], None))
                )
            )
        ]
        return f"Learner({', '.join(shown)})"

    # ---- helpers

    def _layout(self) -> list[tuple[str, tuple[int, ...], Any]]:
        """(name, block, column selection) for every named parameter."""
        o = self._options
        blocks = [tuple(b) for b in self._core.cell_blocks]
        readout = (self._core.n_cell_params, o["output_size"], o["hidden_size"] + 1)
        layers = o.get("layers", 1)
        if layers == 1:
            cell = self._cell_layout(blocks, o["input_size"])
        else:  # PyTorch's names for stacks: weight_ih_l0, ..., bias_hh_l1
            per_layer = len(blocks) // layers
            cell = [
                (f"{name}_l{layer}", block, columns)
                for layer in range(layers)
                for name, block, columns in self._cell_layout(
                    blocks[layer * per_layer : (layer + 1) * per_layer],
                    o["input_size"] if layer == 0 else o["hidden_size"],
                )
            ]
        return cell + [
            ("readout.weight", readout, slice(0, o["hidden_size"])),
            ("readout.bias", readout, [o["hidden_size"]]),
        ]

    def _cell_layout(
        self, blocks: list[tuple[int, ...]], n_in: int
    ) -> list[tuple[str, tuple[int, ...], Any]]:
        """(name, block, column selection) of one layer's parameters."""
        o = self._options
        cell: list[tuple[str, tuple[int, ...], Any]]
        if o["cell"] == "user":
            cell = []  # named by the cell's own parameters (see `parameters`)
        elif o["cell"] == "influence":
            cell = [("theta", blocks[0], [0])]
        elif o["cell"] in ELEMENTWISE_CELLS:
            cell = [
                ("weight_ih", blocks[0], slice(0, n_in)),
                ("bias", blocks[0], [n_in]),
            ]
            if o["cell"] == "indrnn":
                cell.append(("weight_hh", blocks[1], [0]))
        elif o["cell"] == "rnn":
            cell = [
                ("weight_ih", blocks[0], slice(0, n_in)),
                ("weight_hh", blocks[0], slice(n_in, n_in + o["hidden_size"])),
                ("bias", blocks[0], [n_in + o["hidden_size"]]),
            ]
        else:
            cell = [
                ("weight_ih", blocks[0], slice(0, n_in)),
                ("bias_ih", blocks[0], [n_in]),
                ("weight_hh", blocks[1], slice(0, o["hidden_size"])),
                ("bias_hh", blocks[1], [o["hidden_size"]]),
            ]
        return cell

    def _checked_value(self, name: str, value: Any, current: np.ndarray) -> np.ndarray:
        array = np.asarray(value, dtype=self.dtype)
        if array.shape != current.shape:
            raise ValueError(f"{name} must have shape {current.shape}; got {array.shape}")
        return array

    def _as_dtype_vector(self, name: str, value: Any, size: int) -> np.ndarray:
        array = np.ascontiguousarray(value, dtype=self.dtype)
        if array.shape != (size,):
            raise ValueError(f"{name} must have shape ({size},); got {array.shape}")
        return array

    def _convert_chunk(self, xs: Any, ys: Any) -> tuple[np.ndarray, np.ndarray]:
        return _chunk("xs", xs, self.dtype), _chunk("ys", ys, self.dtype)

    def _convert_tick(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        return _chunk("x", x, self.dtype), _chunk("y", y, self.dtype)

    def _chunk_call(self, method: Any, xs: Any, ys: Any, mask: Any) -> Any:
        if self.streams > 1:
            return method(*self._convert_chunk(xs, ys), self._mask(mask))
        self._no_mask(mask)
        return method(*self._convert_chunk(xs, ys))

    def _mask(self, mask: Any) -> np.ndarray | None:
        if mask is None:
            return None
        array = np.asarray(mask)
        if array.dtype != np.bool_:
            raise TypeError(f"mask must hold booleans; got dtype {array.dtype}")
        return np.ascontiguousarray(array)

    def _no_mask(self, mask: Any) -> None:
        if mask is not None:
            raise ValueError("mask applies to learners with streams > 1; this one has one stream")

    def _stream_selection(self, streams: Any) -> np.ndarray | None:
        """A boolean mask (B,) from an index, a list of indices or a mask; None: all."""
        if streams is None:
            return None
        b = self.streams
        array = np.asarray(streams)
        if array.dtype == np.bool_:
            if array.shape != (b,):
                raise ValueError(f"a stream mask must have shape ({b},); got {array.shape}")
            return np.ascontiguousarray(array)
        if array.dtype.kind not in "iu" or array.ndim > 1:
            raise TypeError(
                "streams must be a stream index, a list of indices or a boolean mask; "
                f"got {streams!r}"
            )
        indices = array.reshape(-1)
        bad = indices[(indices < 0) | (indices >= b)]
        if bad.size:
            raise IndexError(f"stream index {int(bad[0])} is out of range [0, {b})")
        selected = np.zeros(b, dtype=np.bool_)
        selected[indices] = True
        return selected


# The core's counters, in its order, by their checkpoint names.
_COUNTERS = (
    "samples_seen",
    "skipped_steps",
    "resets",
    "state_resets",
    "last_reset",
    "refused_in_a_row",
)

# The learner's array-valued state, by the core's attribute names; the estimator's own
# arrays (UORO's s̃ and θ̃, RTRL's Jacobian) come from `estimator_arrays`.
_ARRAY_STATE = ("theta", "state", "adam_m", "adam_v", "window")


def _stream_groups(options: dict[str, Any], given: int | None) -> int:
    """The number of independent UORO estimates over the streams: `given`, checked, or
    the default (see DEFAULT_STREAM_GROUPS)."""
    streams, algo = options["streams"], options["algorithm"]
    grouped = algo == "uoro" and options["memory"] == 1 and streams > 1
    if given is None:
        return DEFAULT_STREAM_GROUPS(streams) if grouped else 1
    if given != 1 and not grouped:
        raise ValueError(
            "stream_groups applies to algorithm 'uoro' with memory=1 and streams > 1; got "
            f"algorithm={algo!r}, memory={options['memory']}, streams={streams}"
        )
    if given > streams:
        raise ValueError(f"stream_groups must be at most streams ({streams}); got {given}")
    return given


def _lr_scaling(streams: int, given: str | None) -> str:
    if given is None:
        return DEFAULT_LR_SCALING if streams > 1 else "none"
    if given != "none" and streams == 1:
        raise ValueError(f"lr_scaling applies to streams > 1; got lr_scaling={given!r}")
    return given


def effective_rate(options: dict[str, Any]) -> tuple[float, float]:
    """The (η, α) per tick the optimizer runs, from the options' lr and lr_decay (the
    rates of one stream) and lr_scaling: η·√B or η·B, and the decay clock counted in
    samples (α·√B per tick, so η_t / η follows the samples seen, B per tick), or both
    as given ("none")."""
    streams, scaling = options["streams"], options.get("lr_scaling", "none")
    if scaling == "none":
        return options["lr"], options["lr_decay"]
    factor = math.sqrt(streams) if scaling == "sqrt" else float(streams)
    return options["lr"] * factor, options["lr_decay"] * math.sqrt(streams)


def load(path: str | os.PathLike[str], cell: Any = None) -> Learner:
    """Reads a learner written by `Learner.save`; refuses files of another format
    version, configuration, shape or dtype with a clear error. A learner with a user
    cell is read back with the same cell (``cell=``); a cell of another layout is
    refused."""
    with np.load(path, allow_pickle=False) as data:
        missing = {"format_version", "config"} - set(data.files)
        if missing:
            raise ValueError(
                f"{os.fspath(path)!r} is not a uoro checkpoint: it lacks {sorted(missing)}"
            )
        state: dict[str, Any] = {k: data[k] for k in data.files}
    state["format_version"] = int(state["format_version"])
    state["config"] = json.loads(str(state["config"]))
    return Learner.from_state_dict(state, cell=cell)


def _convert_sample(dtype: np.dtype, squared: bool, x: Any, y: Any) -> tuple[Any, Any]:
    """One sample's x and y as the core takes them: a token stays, anything else becomes
    a contiguous array of `dtype` (y too, for the squared error)."""
    if not isinstance(x, (int, np.integer)):
        x = _float_array("x", x, dtype)
    if squared and y is not None:
        y = _float_array("y", y, dtype)
    return x, y


def _float_array(name: str, value: Any, dtype: np.dtype) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers; got dtype {array.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # the core names non-finite values
        return np.ascontiguousarray(array, dtype=dtype)


def _chunk(name: str, value: Any, dtype: np.dtype) -> np.ndarray:
    """Tokens as contiguous int64, real values as contiguous `dtype`; one conversion."""
    array = np.asarray(value)
    if array.dtype.kind in "iu":
        return np.ascontiguousarray(array, dtype=np.int64)
    return _float_array(name, array, dtype)


def _make_core(o: dict[str, Any], user: cells.Description | None = None) -> Any:
    optimizer = _core.OptimizerConfig()
    optimizer.kind = getattr(_core.Optimizer, o["optimizer"])
    optimizer.lr, optimizer.lr_decay = effective_rate(o)
    optimizer.beta1 = o["beta1"]
    optimizer.beta2 = o["beta2"]
    optimizer.eps = o["adam_eps"]
    optimizer.clip_norm = o["clip_norm"] or 0.0
    config = _core.LearnerConfig()
    config.input_size = o["input_size"]
    config.hidden_size = o["hidden_size"]
    config.output_size = o["output_size"]
    config.loss = getattr(_core.Loss, o["loss"])
    # The layer-wise rule is SnAp-1 run on a stack (within each layer).
    config.algorithm = getattr(
        _core.Algorithm, "snap1" if o["algorithm"] == "layerwise" else o["algorithm"]
    )
    config.rank = o["rank"]
    config.stream_groups = o["stream_groups"]
    config.memory = o["memory"]
    config.truncation = o["truncation"] or 1
    config.uoro_eps = o["uoro_eps"]
    config.train_readout = o["train_readout"]
    config.on_divergence = {
        "raise": _core.DivergencePolicy.raise_error,
        "skip": _core.DivergencePolicy.skip,
        "reset": _core.DivergencePolicy.reset,
    }[o["on_divergence"]]
    config.optimizer = optimizer
    config.seed = o["seed"]
    suffix = "f32" if o["dtype"] == "float32" else "f64"
    layers = o.get("layers", 1)
    name = o["cell"] if layers == 1 else f"{o['cell']}_l{layers}"
    extra = () if user is None else (user.functions,)
    if o["streams"] > 1:
        core = getattr(_core, f"Streams_{name}_{suffix}")(config, o["streams"], *extra)
    else:
        core = getattr(_core, f"Learner_{name}_{suffix}")(config, *extra)
    if user is not None:  # the cell's own initial θ; the readout's as for every cell
        theta = core.theta
        theta[: user.initial.size] = user.initial
        core.theta = theta
    return core
