"""The experiments of Tallec & Ollivier (2017), Section 4, one configuration at a time.

Each run feeds a stream to a :class:`~uoro.Learner` in chunks (one ``fit`` call per chunk)
and returns a :class:`Curve`: per-chunk mean losses, the cumulative online average (mean
over every step so far, the quantity of the paper's figures), θ for influence balancing,
and the "recent" loss (mean over the last 10⁵ steps, the paper's Table 1).

Losses are in bits per character for the token tasks (distant brackets, aⁿbⁿ, text) and
the task's own loss ``½(s¹ − 1)²`` for influence balancing.

Two choices translate the paper into this library's terms:

* **Truncated BPTT is the chunked form** (``algorithm="tbptt_chunk"``): once every T steps,
  θ is updated with the gradient of the chunk's summed loss. The paper states that on
  influence balancing (23 units, 13 minus) "truncated BPTT requires T ≥ 200 to converge".
  In the online form (every step backpropagates through the last T steps) the truncated
  steady-state sensitivity of s¹ to θ, Σ_{k<T} (Aᵏx)₁, already has the right sign from
  T ≈ 42 on, so T = 100 would converge; in the chunked form the average over the chunk's
  positions, (1/T) Σ_{m≤T} Σ_{k<m} (Aᵏx)₁, is still positive (wrong) at T = 100 and turns
  negative only between T = 100 and 150. Only the chunked form matches the paper's claim,
  and the paper calls memory-T UORO's cost "similar to T-truncated BPTT", which holds for
  the chunked form. The online form stays available (``algorithm="tbptt"``).
* **The learning-rate schedule counts samples**, as in the paper (``η_t = η/(1 + α√t)``
  with t the number of characters processed), whereas the learner counts parameter
  updates. Algorithms that update once per window of T samples (memory-T UORO, chunked
  truncated BPTT) are therefore given ``lr_decay = α·√T``, which yields the same η at
  every sample.
"""

from __future__ import annotations

import csv
import functools
import gc
import math
import multiprocessing
import os
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from uoro import datasets, influence
from uoro.learner import Learner

EXPERIMENTS = ("influence", "brackets", "anbn", "text")
TOKEN_EXPERIMENTS = ("brackets", "anbn", "text")
RECENT_WINDOW = 100_000
DEFAULT_CHUNK = 10_000
BITS_PER_NAT = 1.0 / math.log(2.0)

# ---- the paper's settings (Section 4) -----------------------------------------------------

#: Influence balancing, Fig. 1a: n = 23 units, 13 minus signs, SGD, η_t = η / (1 + √t).
INFLUENCE_UNITS = 23
INFLUENCE_MINUS = 13
INFLUENCE_LR_DECAY = 1.0
#: The paper only says "for suitable values of η": this grid is searched for UORO and the
#: same grid is run for every truncation (see docs/results.md for the search).
INFLUENCE_LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
#: The η of a single influence run unless given: the search's choice for UORO.
INFLUENCE_LR = 3e-4
INFLUENCE_TRUNCATIONS = (1, 10, 100)

#: Distant brackets (1, 5, 10), Fig. 1b: GRU and LSTM, 64 units, UORO vs 4-truncated BPTT,
#: Adam with γ = 1e-3 and α = 0.015.
BRACKETS = {"s": 1, "k": 5, "a": 10}
BRACKETS_LR = 1e-3
BRACKETS_LR_DECAY = 0.015
BRACKETS_TRUNCATION = 4

#: aⁿbⁿ(1, 32), Fig. 3 and Table 1: GRU and LSTM, 64 units, UORO (plain, memory-2,
#: memory-16) vs truncated BPTT (T = 1, 2, 16), Adam with γ = 1e-3 and α = 0.03.
ANBN = {"k": 1, "l": 32}
ANBN_LR = 1e-3
ANBN_LR_DECAY = 0.03
ANBN_MEMORIES = (1, 2, 16)
ANBN_TRUNCATIONS = (1, 2, 16)

PAPER_CELLS = ("gru", "lstm")
PAPER_HIDDEN = 64

#: The initialization of the authors' published code, by cell, as (σ, forget-gate bias):
#: input weights drawn from N(0, σ²) (``None``: this library's default, PyTorch's
#: uniform init), and a constant added to the LSTM forget gate's bias. There, each GRU and
#: RNN gate reads the token through its own embedding table drawn from N(0, 1): exactly a
#: one-hot input weight matrix with that law. Their LSTM embeds the token (N(0, 1), 64
#: dimensions), maps it through one linear layer per gate (U(±1/8) at 64 units), and adds
#: −0.3 to the forget gate's pre-activation: the composed input weights have variance
#: 64 · (1/8)² / 3 = 1/3, hence σ = 1/√3. The token tasks use these unless told otherwise
#: (docs/results.md measures the difference).
PAPER_INIT: dict[str, tuple[float | None, float]] = {
    "gru": (1.0, 0.0),
    "rnn": (1.0, 0.0),
    "lstm": (1.0 / math.sqrt(3.0), -0.3),
    # Not in the paper: the library's default init.
    "mingru": (None, 0.0),
    "minlstm": (None, 0.0),
    "indrnn": (None, 0.0),
}
#: Tag of the random stream the input weights are drawn from (besides the run's seed).
_INPUT_INIT_STREAM = 0x1A7E

#: Table 1 of the paper: recent loss (bits/char, last 10⁵ characters) on aⁿbⁿ(1, 32).
PAPER_TABLE1 = {
    ("lstm", "UORO"): 0.147,
    ("gru", "UORO"): 0.155,
    ("lstm", "UORO memory-2"): 0.149,
    ("gru", "UORO memory-2"): 0.174,
    ("lstm", "UORO memory-16"): 0.154,
    ("gru", "UORO memory-16"): 0.149,
    ("lstm", "tBPTT T=1"): 0.178,
    ("gru", "tBPTT T=1"): 0.231,
    ("lstm", "tBPTT T=2"): 0.149,
    ("gru", "tBPTT T=2"): 0.285,
    ("lstm", "tBPTT T=16"): 0.144,
    ("gru", "tBPTT T=16"): 0.207,
}


# ---- configurations -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    """One run: the task, the learner and how long to learn.

    ``dataset`` holds the task's parameters as (name, value) pairs: ``n``, ``n_minus``
    (influence), ``s``, ``k``, ``a`` (brackets), ``k``, ``l`` (aⁿbⁿ), ``path`` (text).
    ``lr_decay`` is α of ``η_t = lr / (1 + α√t)`` with t counted in samples.
    ``input_std``: if set, the cell's input weights are drawn from N(0, input_std²) instead
    of the library's default init; ``forget_bias`` is added to an LSTM's forget-gate bias
    (see ``PAPER_INIT``, which the token tasks' helpers fill in unless given).
    ``cell``, ``hidden``, ``input_std``, ``forget_bias`` and ``optimizer`` are ignored by
    influence balancing (its own dynamics, SGD). ``seed`` seeds the learner and the data
    stream.
    """

    experiment: str
    algorithm: str = "uoro"
    truncation: int | None = None
    memory: int = 1
    rank: int = 1
    lr: float = 1e-3
    lr_decay: float = 0.0
    steps: int = 100_000
    seed: int = 0
    cell: str = "gru"
    hidden: int = PAPER_HIDDEN
    optimizer: str = "adam"
    input_std: float | None = None
    forget_bias: float = 0.0
    dataset: tuple[tuple[str, Any], ...] = ()
    chunk: int = DEFAULT_CHUNK

    def __post_init__(self) -> None:
        if self.experiment not in EXPERIMENTS:
            raise ValueError(f"experiment must be one of {EXPERIMENTS}; got {self.experiment!r}")
        for name in ("steps", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        std = self.input_std
        if std is not None and not (math.isfinite(std) and std > 0):
            raise ValueError(f"input_std must be a finite number > 0 or None; got {self.input_std}")
        if not math.isfinite(self.forget_bias):
            raise ValueError(f"forget_bias must be a finite number; got {self.forget_bias}")
        if self.forget_bias != 0.0 and self.cell != "lstm":
            raise ValueError(f"forget_bias applies to the lstm cell only; got cell {self.cell!r}")

    @property
    def data(self) -> dict[str, Any]:
        """The task's parameters as a dict."""
        return dict(self.dataset)

    @property
    def window(self) -> int:
        """Samples per parameter update: T for memory-T UORO and chunked tBPTT, else 1."""
        if self.algorithm == "uoro":
            return self.memory
        if self.algorithm == "tbptt_chunk":
            return self.truncation or 1
        return 1

    @property
    def algorithm_label(self) -> str:
        """The estimator as the paper names it, e.g. ``UORO memory-16`` or ``tBPTT T=4``."""
        if self.algorithm == "uoro":
            parts = ["UORO"]
            if self.memory > 1:
                parts.append(f"memory-{self.memory}")
            if self.rank > 1:
                parts.append(f"rank-{self.rank}")
            return " ".join(parts)
        if self.algorithm == "rtrl":
            return "RTRL"
        if self.algorithm == "snap1":
            return "SnAp-1"
        prefix = "tBPTT" if self.algorithm == "tbptt_chunk" else "online tBPTT"
        return f"{prefix} T={self.truncation}"

    @property
    def label(self) -> str:
        """A readable name of the configuration (without the seed)."""
        if self.experiment == "influence":
            return f"{self.algorithm_label} η={self.lr:g}"
        return f"{self.cell.upper()} {self.algorithm_label} η={self.lr:g}"

    @property
    def slug(self) -> str:
        """A file-name stem naming the configuration and the seed."""
        data = self.data
        if self.experiment == "text":
            dataset = Path(str(data["path"])).stem
        else:
            dataset = "".join(
                f"{_SLUG_NAMES.get(name, name)}{value}" for name, value in self.dataset
            )
        algorithm = self.algorithm.replace("_", "-")
        if self.truncation is not None:
            algorithm += f"-T{self.truncation}"
        if self.memory > 1:
            algorithm += f"-m{self.memory}"
        if self.rank > 1:
            algorithm += f"-r{self.rank}"
        model = "" if self.experiment == "influence" else f"-{self.cell}{self.hidden}"
        if self.input_std is not None and self.experiment != "influence":
            model += f"-in{self.input_std:.3g}"
        if self.forget_bias != 0.0:
            model += f"-fb{self.forget_bias:g}"
        return (
            f"{self.experiment}-{dataset}{model}-{algorithm}-lr{self.lr:g}"
            f"-a{self.lr_decay:g}-seed{self.seed}"
        )


_SLUG_NAMES = {"n_minus": "minus"}


def make_config(experiment: str, dataset: dict[str, Any], **fields: Any) -> RunConfig:
    """A run of ``experiment`` on ``dataset``; a token task gets the paper's init
    (``PAPER_INIT``) for its cell unless ``input_std`` or ``forget_bias`` are given."""
    if experiment in TOKEN_EXPERIMENTS:
        input_std, forget_bias = PAPER_INIT[fields.get("cell", RunConfig.cell)]
        fields.setdefault("input_std", input_std)
        fields.setdefault("forget_bias", forget_bias)
    return RunConfig(experiment, dataset=tuple(dataset.items()), **fields)


def influence_config(**fields: Any) -> RunConfig:
    """An influence-balancing run; ``fields`` override the paper's defaults."""
    data = {
        "n": fields.pop("n", INFLUENCE_UNITS),
        "n_minus": fields.pop("n_minus", INFLUENCE_MINUS),
    }
    fields = {"lr": INFLUENCE_LR, "lr_decay": INFLUENCE_LR_DECAY, "optimizer": "sgd", **fields}
    return make_config("influence", data, **fields)


def brackets_config(**fields: Any) -> RunConfig:
    """A distant-brackets run; ``fields`` override the paper's defaults (incl. s, k, a)."""
    data = {name: fields.pop(name, value) for name, value in BRACKETS.items()}
    fields = {"lr": BRACKETS_LR, "lr_decay": BRACKETS_LR_DECAY, **fields}
    return make_config("brackets", data, **fields)


def anbn_config(**fields: Any) -> RunConfig:
    """An aⁿbⁿ run; ``fields`` override the paper's defaults (incl. k, l)."""
    data = {name: fields.pop(name, value) for name, value in ANBN.items()}
    fields = {"lr": ANBN_LR, "lr_decay": ANBN_LR_DECAY, **fields}
    return make_config("anbn", data, **fields)


def text_config(path: str | Path, **fields: Any) -> RunConfig:
    """A next-character run on a UTF-8 text file (repeated endlessly)."""
    fields = {"lr": BRACKETS_LR, "lr_decay": BRACKETS_LR_DECAY, **fields}
    return make_config("text", {"path": str(path)}, **fields)


def paper_configs(
    experiment: str, *, steps: int, seeds: Sequence[int] = (0,), chunk: int = DEFAULT_CHUNK
) -> list[RunConfig]:
    """The paper's set of configurations for the figure of ``experiment``, for each seed.

    - influence (Fig. 1a): UORO and tBPTT T ∈ {1, 10, 100}, each over the η grid
      ``INFLUENCE_LR_GRID``, SGD, η_t = η/(1 + √t), 23 units, 13 minus signs.
    - brackets (Fig. 1b): GRU and LSTM-64, UORO and tBPTT T = 4, Adam γ = 1e-3, α = 0.015.
    - anbn (Fig. 3, Table 1): GRU and LSTM-64, UORO (plain, memory-2, memory-16) and tBPTT
      T ∈ {1, 2, 16}, Adam γ = 1e-3, α = 0.03.
    """
    common = {"steps": steps, "chunk": chunk}
    algorithms: list[dict[str, Any]]
    if experiment == "influence":
        algorithms = [{"algorithm": "uoro"}] + [
            {"algorithm": "tbptt_chunk", "truncation": t} for t in INFLUENCE_TRUNCATIONS
        ]
        configs = [
            influence_config(lr=lr, **algorithm, **common)
            for algorithm in algorithms
            for lr in INFLUENCE_LR_GRID
        ]
    elif experiment == "brackets":
        algorithms = [
            {"algorithm": "uoro"},
            {"algorithm": "tbptt_chunk", "truncation": BRACKETS_TRUNCATION},
        ]
        configs = [
            brackets_config(cell=cell, **algorithm, **common)
            for cell in PAPER_CELLS
            for algorithm in algorithms
        ]
    elif experiment == "anbn":
        algorithms = [{"algorithm": "uoro", "memory": m} for m in ANBN_MEMORIES] + [
            {"algorithm": "tbptt_chunk", "truncation": t} for t in ANBN_TRUNCATIONS
        ]
        configs = [
            anbn_config(cell=cell, **algorithm, **common)
            for cell in PAPER_CELLS
            for algorithm in algorithms
        ]
    else:
        raise ValueError(f"no paper preset for {experiment!r}; presets: influence, brackets, anbn")
    return [replace(config, seed=seed) for seed in seeds for config in configs]


# ---- running --------------------------------------------------------------------------------


@dataclass
class Curve:
    """The learning curve of one run.

    Row i describes the chunk ending after ``steps[i]`` samples: its mean ``loss``, the
    ``cumulative_loss`` (mean over all samples so far), ``theta`` at its end (influence
    balancing only) and the wall time since the start. ``recent_loss`` is the mean over the
    last ``recent_window`` samples (10⁵, or fewer in a shorter run). A run whose loss, its
    running sum or θ stops being a finite number, or whose step the learner refuses as
    exploding, is stopped and reported as diverged at sample ``diverged_at`` (1-based); the
    rows then cover the chunks before.
    """

    config: RunConfig
    unit: str
    steps: np.ndarray
    loss: np.ndarray
    cumulative_loss: np.ndarray
    elapsed_seconds: np.ndarray
    theta: np.ndarray | None = None
    recent_loss: float = math.nan
    recent_window: int = 0
    diverged_at: int | None = None
    references: dict[str, float] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def steps_done(self) -> int:
        return int(self.steps[-1]) if len(self.steps) else 0

    @property
    def final_cumulative_loss(self) -> float:
        return float(self.cumulative_loss[-1]) if len(self.cumulative_loss) else math.nan

    @property
    def final_theta(self) -> float | None:
        return None if self.theta is None or not len(self.theta) else float(self.theta[-1])

    @property
    def wall_seconds(self) -> float:
        return float(self.elapsed_seconds[-1]) if len(self.elapsed_seconds) else 0.0

    @property
    def status(self) -> str:
        return f"diverged at {self.diverged_at}" if self.diverged else "ok"


#: Called after each chunk with (samples in the chunk, chunk's mean loss, cumulative loss).
Progress = Callable[[int, float, float], None]


def make_learner(config: RunConfig) -> Learner:
    """The learner of ``config``, its schedule converted to count samples (see module doc)."""
    options: dict[str, Any] = {
        "algorithm": config.algorithm,
        "seed": config.seed,
        "lr": config.lr,
        "lr_decay": config.lr_decay * math.sqrt(config.window),
    }
    if config.truncation is not None:
        options["truncation"] = config.truncation
    if config.memory != 1:
        options["memory"] = config.memory
    if config.rank != 1:
        options["rank"] = config.rank
    if config.experiment == "influence":
        data = config.data
        return influence.learner(n=data["n"], n_minus=data["n_minus"], **options)
    vocabulary_size = len(make_stream(config).vocabulary)
    learner = Learner(
        config.cell, vocabulary_size, config.hidden, optimizer=config.optimizer, **options
    )
    if config.input_std is not None or config.forget_bias != 0.0:
        params = learner.parameters()
        if config.input_std is not None:
            weights = params["weight_ih"]
            # Its own stream, so that the rest of the init stays the learner's seeded default.
            rng = np.random.default_rng([config.seed, _INPUT_INIT_STREAM])
            params["weight_ih"] = (config.input_std * rng.standard_normal(weights.shape)).astype(
                weights.dtype
            )
        if config.forget_bias != 0.0:  # PyTorch's gate order i, f, g, o
            n = config.hidden
            params["bias_ih"][n : 2 * n] += params["bias_ih"].dtype.type(config.forget_bias)
        learner.set_parameters(params)
    return learner


def make_stream(config: RunConfig) -> datasets.TokenStream:
    """The token stream of a token task (seeded by ``config.seed``)."""
    data = config.data
    if config.experiment == "brackets":
        return datasets.distant_brackets(data["s"], data["k"], data["a"], seed=config.seed)
    if config.experiment == "anbn":
        return datasets.anbn(data["k"], data["l"], seed=config.seed)
    if config.experiment == "text":
        return datasets.text_stream(data["path"])
    raise ValueError(f"{config.experiment!r} is not a token task")


def _references(stream: datasets.TokenStream) -> dict[str, float]:
    """Reference rates in bits/char: the optimum and, where known, the rate of a model
    that does not remember what the task asks it to (the paper's "memoryless optimum")."""
    references = {}
    if hasattr(stream, "entropy_rate_bits"):
        references["entropy rate"] = float(stream.entropy_rate_bits())
    if hasattr(stream, "memoryless_entropy_bits"):
        references["memoryless"] = float(stream.memoryless_entropy_bits())
    elif isinstance(stream, datasets.DistantBracketsStream):
        # The s repeated letters then cost log2(a) bits each, like the fresh ones.
        s, k, a = stream.s, stream.k, stream.a
        references["memoryless"] = (2 * s + k) * math.log2(a) / (2 * s + k + 5)
    return references


def run(config: RunConfig, progress: Progress | None = None) -> Curve:
    """Runs one configuration for ``config.steps`` samples and returns its learning curve."""
    learner = make_learner(config)
    is_influence = config.experiment == "influence"
    if is_influence:
        data = config.data
        inputs, targets = influence.stream(config.chunk, data["n"], data["n_minus"])

        def constant_chunk(n: int) -> tuple[np.ndarray, np.ndarray]:
            return inputs[:n], targets[:n]

        next_chunk: Callable[[int], tuple[np.ndarray, np.ndarray]] = constant_chunk
        scale, unit, references = 1.0, "loss ½(s¹−1)²", {}
    else:
        stream = make_stream(config)
        next_chunk = stream.pairs
        scale, unit, references = BITS_PER_NAT, "bits/char", _references(stream)

    rows: list[tuple[int, float, float, float, float]] = []
    recent: deque[np.ndarray] = deque()
    recent_count = 0
    done, total = 0, 0.0
    diverged_at: int | None = None
    theta = math.nan
    start = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):
        while done < config.steps:
            xs, ys = next_chunk(min(config.chunk, config.steps - done))
            if len(xs) == 0:
                break
            try:
                losses = np.asarray(learner.fit(xs, ys), dtype=np.float64) * scale
            except ArithmeticError as error:
                # The core refuses a step that would explode; the chunk's losses are lost.
                diverged_at = done + _failed_sample(error, len(xs)) + 1
                break
            finite = np.isfinite(losses)
            if not finite.all():
                first_bad = int(np.argmin(finite))
                diverged_at = done + first_bad + 1
                losses = losses[:first_bad]
            if is_influence:
                theta = float(learner.parameters()["theta"][0])
            if losses.size:
                chunk_mean = float(losses.mean())
                total += float(losses.sum())
                done += losses.size
                cumulative = total / done
                rows.append((done, chunk_mean, cumulative, theta, time.perf_counter() - start))
                recent.append(losses)
                recent_count += losses.size
                while recent_count - len(recent[0]) >= RECENT_WINDOW:
                    recent_count -= len(recent.popleft())
                if progress is not None:
                    progress(losses.size, chunk_mean, cumulative)
                if diverged_at is None and not (
                    math.isfinite(chunk_mean)
                    and math.isfinite(cumulative)
                    and (math.isfinite(theta) or not is_influence)
                ):
                    diverged_at = done
            if diverged_at is not None:
                break

    table = np.array(rows, dtype=np.float64).reshape(-1, 5)
    tail = np.concatenate(list(recent))[-RECENT_WINDOW:] if recent else np.empty(0)
    with np.errstate(over="ignore", invalid="ignore"):
        recent_loss = float(tail.mean()) if tail.size else math.nan
    return Curve(
        config=config,
        unit=unit,
        steps=table[:, 0].astype(np.int64),
        loss=table[:, 1],
        cumulative_loss=table[:, 2],
        elapsed_seconds=table[:, 4],
        theta=table[:, 3] if is_influence else None,
        recent_loss=recent_loss,
        recent_window=int(tail.size),
        diverged_at=diverged_at,
        references=references,
    )


def _failed_sample(error: ArithmeticError, chunk_length: int) -> int:
    """The index in its chunk of the sample the core refused, from the error's message
    ("sample 7759 of the chunk ..."); the chunk's first sample if it does not say."""
    match = re.search(r"sample (\d+) of the chunk", str(error))
    return min(int(match[1]), chunk_length - 1) if match else 0


def run_influence(progress: Progress | None = None, **fields: Any) -> Curve:
    """Runs influence balancing (see :func:`influence_config` for the fields)."""
    return run(influence_config(**fields), progress)


def run_brackets(progress: Progress | None = None, **fields: Any) -> Curve:
    """Runs distant brackets (see :func:`brackets_config` for the fields)."""
    return run(brackets_config(**fields), progress)


def run_anbn(progress: Progress | None = None, **fields: Any) -> Curve:
    """Runs aⁿbⁿ (see :func:`anbn_config` for the fields)."""
    return run(anbn_config(**fields), progress)


def run_text(path: str | Path, progress: Progress | None = None, **fields: Any) -> Curve:
    """Runs next-character prediction on a text file (see :func:`text_config`)."""
    return run(text_config(path, **fields), progress)


# ---- many runs: processes here or a Dask cluster --------------------------------------------

#: Seconds :func:`connect` waits for a Dask scheduler to answer.
SCHEDULER_TIMEOUT = 10.0


@dataclass(frozen=True)
class RunFailure:
    """A run that raised instead of returning its curve: its configuration and the error
    as text (``"FileNotFoundError: ..."``), as it came back from the process or worker."""

    config: RunConfig
    error: str

    @property
    def name(self) -> str:
        """The run's configuration and seed, e.g. ``GRU UORO η=0.001 seed 3``."""
        return f"{self.config.label} seed {self.config.seed}"

    def __str__(self) -> str:
        return f"{self.name}: {self.error}"


class RunsFailed(RuntimeError):
    """Raised by :func:`run_many` once every run has ended, if some raised: ``failures``
    names them with their errors, ``curves`` holds the runs that finished (in the order
    of the configurations)."""

    def __init__(self, failures: Sequence[RunFailure], curves: Sequence[Curve]) -> None:
        self.failures = list(failures)
        self.curves = list(curves)
        total = len(self.failures) + len(self.curves)
        lines = "".join(f"\n  {failure}" for failure in self.failures)
        super().__init__(f"{len(self.failures)} of {total} run(s) failed:{lines}")


def connect(scheduler: str, *, workers: int | None = None, timeout: float | None = None) -> Any:
    """A ``distributed.Client`` for :func:`run_many`.

    ``scheduler`` is the address of a running Dask scheduler (``tcp://host:8786``, started
    with ``dask scheduler``; ``timeout`` seconds to answer, ``SCHEDULER_TIMEOUT`` by
    default), or ``"local"`` for a new ``LocalCluster`` on this machine: ``workers``
    processes of one thread each (Dask's default count if None), shut down when the
    client is closed. Use the client as a context manager (``with connect(...) as
    client:``). Needs the ``distributed`` extra (``pip install 'uoro[distributed]'``).
    """
    try:
        import distributed
    except ImportError as error:
        raise ImportError(
            "running on Dask needs its distributed scheduler, which is not installed: "
            "pip install 'uoro[distributed]'"
        ) from error
    if scheduler == "local":
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1 or None; got {workers}")
        # NumPy's BLAS threads would otherwise spin beside the learners on the same cores.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        return _start_client(distributed, n_workers=workers, threads_per_worker=1, processes=True)
    if workers is not None:
        raise ValueError(
            f"workers applies to scheduler='local' only (the cluster at {scheduler!r} has "
            f"its own workers); got workers={workers}"
        )
    wait = SCHEDULER_TIMEOUT if timeout is None else timeout
    try:
        return _start_client(distributed, scheduler, timeout=wait)
    except ValueError as error:
        raise ValueError(
            "scheduler must be 'local' or the address of a Dask scheduler such as "
            f"tcp://host:8786; got {scheduler!r} ({error})"
        ) from None
    except (OSError, AssertionError) as error:
        # AssertionError: Dask's client event loop failed to start in time (seen on a
        # heavily loaded machine); no connection either way.
        raise ConnectionError(
            f"no Dask scheduler answered at {scheduler!r} within {wait:g} s (expected the "
            f"address of a running 'dask scheduler', e.g. tcp://host:8786): {error}"
        ) from None


def _start_client(distributed: Any, *args: Any, **kwargs: Any) -> Any:
    """``distributed.Client(*args, **kwargs)``, with no garbage collection while it starts.

    Dask's clients start and stop their event loops under one lock that all of them share,
    and an unreachable client that was not closed closes itself when it is collected. A
    collection inside another client's start then waits forever on the lock that start
    holds (seen as a rare hang of the Dask tests: ``Client.__del__`` inside
    ``LoopRunner.start``). So garbage is collected first, where that is safe, and none
    while the client starts.
    """
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        return distributed.Client(*args, **kwargs)
    finally:
        if enabled:
            gc.enable()


def run_many(
    configs: Sequence[RunConfig],
    *,
    jobs: int = 1,
    client: Any = None,
    finished: Callable[[Curve | RunFailure], None] | None = None,
) -> list[Curve]:
    """Runs every configuration; returns the curves in the order of ``configs``.

    With ``client`` (a ``distributed.Client``, see :func:`connect`) each run is one task on
    the Dask cluster: the configuration travels to a worker, the finished curve (its CSV
    rows) comes back; nothing is written on the workers. Otherwise the runs use ``jobs``
    processes on this machine (this process if 1). ``finished`` is called with each curve,
    or :class:`RunFailure`, as soon as its run ends. A run that raises does not stop the
    others: once all have ended, :class:`RunsFailed` names every failed run and its error
    and carries the finished curves.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1; got {jobs}")
    if client is not None and jobs != 1:
        raise ValueError(f"give jobs or client, not both; got jobs={jobs} and a client")
    results: dict[int, Curve | RunFailure] = {}

    def settle(index: int, outcome: Callable[[], Curve]) -> None:
        result: Curve | RunFailure
        try:
            result = outcome()
        except Exception as error:  # reported by name, the other runs go on
            result = RunFailure(configs[index], f"{type(error).__name__}: {error}")
        results[index] = result
        if finished is not None:
            finished(result)

    if client is not None:
        _run_on_dask(configs, client, settle)
    elif jobs == 1 or len(configs) <= 1:
        for index, config in enumerate(configs):
            settle(index, functools.partial(run, config))
    else:
        # NumPy's BLAS threads would otherwise spin beside the learners on the same cores.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        context = multiprocessing.get_context("spawn")  # safe with threads, same on every OS
        with ProcessPoolExecutor(max_workers=min(jobs, len(configs)), mp_context=context) as pool:
            futures = {pool.submit(run, config): i for i, config in enumerate(configs)}
            for future in as_completed(futures):
                settle(futures[future], future.result)
    ordered = [results[index] for index in range(len(configs))]
    curves = [result for result in ordered if isinstance(result, Curve)]
    failures = [result for result in ordered if isinstance(result, RunFailure)]
    if failures:
        raise RunsFailed(failures, curves)
    return curves


def _run_on_dask(
    configs: Sequence[RunConfig], client: Any, settle: Callable[[int, Callable[[], Curve]], None]
) -> None:
    """One task per run; each result is settled (and released) as soon as it arrives."""
    from distributed import as_completed as dask_completed

    futures = {
        client.submit(run, config, key=f"uoro-run-{config.slug}-{uuid.uuid4().hex[:8]}"): i
        for i, config in enumerate(configs)
    }
    try:
        for future in dask_completed(futures):
            settle(futures[future], future.result)
            future.release()
    finally:  # interrupted: leave no task running on the cluster
        client.cancel([future for future in futures if not future.done()])


# ---- output --------------------------------------------------------------------------------


def curve_columns(curve: Curve) -> list[str]:
    """The CSV columns of ``curve``."""
    columns = ["step", "loss", "cumulative_loss"]
    if curve.theta is not None:
        columns.append("theta")
    return [*columns, "elapsed_seconds"]


def write_csv(curve: Curve, path: str | Path) -> Path:
    """Writes the rows of ``curve`` (one per chunk) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [curve.steps, curve.loss, curve.cumulative_loss]
    if curve.theta is not None:
        columns.append(curve.theta)
    columns.append(curve.elapsed_seconds)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(curve_columns(curve))
        for row in zip(*columns):
            writer.writerow([int(row[0]), *(f"{value:.10g}" for value in row[1:])])
    return path


SUMMARY_COLUMNS = (
    "configuration",
    "seed",
    "steps",
    "unit",
    "cumulative_loss",
    "recent_loss",
    "recent_window",
    "theta",
    "status",
    "wall_seconds",
)


def summary_rows(curves: Sequence[Curve]) -> list[dict[str, Any]]:
    """One dict per run with the columns of ``SUMMARY_COLUMNS``."""
    return [
        {
            "configuration": curve.config.label,
            "seed": curve.config.seed,
            "steps": curve.steps_done,
            "unit": curve.unit,
            "cumulative_loss": curve.final_cumulative_loss,
            "recent_loss": curve.recent_loss,
            "recent_window": curve.recent_window,
            "theta": "" if curve.final_theta is None else curve.final_theta,
            "status": curve.status,
            "wall_seconds": round(curve.wall_seconds, 2),
        }
        for curve in curves
    ]


def write_summary(curves: Sequence[Curve], path: str | Path) -> Path:
    """Writes :func:`summary_rows` as CSV; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(summary_rows(curves))
    return path


def format_summary(curves: Sequence[Curve]) -> str:
    """A plain-text table: one line per run with its cumulative and recent loss."""
    show_theta = any(curve.theta is not None for curve in curves)
    header = ["configuration", "seed", "steps", "cumulative", "recent", "window"]
    header += ["θ"] if show_theta else []
    header += ["status", "seconds"]
    lines = [header]
    for row in summary_rows(curves):
        line = [
            row["configuration"],
            str(row["seed"]),
            str(row["steps"]),
            _number(row["cumulative_loss"]),
            _number(row["recent_loss"]),
            str(row["recent_window"]),
        ]
        if show_theta:
            line.append("" if row["theta"] == "" else _number(row["theta"]))
        line += [row["status"], f"{row['wall_seconds']:.1f}"]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    units = sorted({curve.unit for curve in curves})
    text = "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines
    )
    return f"{text}\n(losses in {', '.join(units)})" if units else text


def _number(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 or not math.isfinite(value) else f"{value:.3e}"


def plot_curves(curves: Sequence[Curve], path: str | Path, title: str | None = None) -> Path:
    """Draws the curves in one PNG: one panel per cell (token tasks: cumulative loss solid,
    per-chunk loss faint) or per estimator (influence balancing: per-chunk loss against
    steps, both on log scales, one line per η; × marks a divergence). Seeds of a
    configuration share a colour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    if not curves:
        raise ValueError("nothing to plot: no curves")
    is_influence = curves[0].config.experiment == "influence"
    vary_lr = len({curve.config.lr for curve in curves}) > 1

    def panel_of(config: RunConfig) -> str:
        return config.algorithm_label if is_influence else config.cell.upper()

    def line_of(config: RunConfig) -> str:
        if is_influence:
            return f"η={config.lr:g}"
        return config.algorithm_label + (f" η={config.lr:g}" if vary_lr else "")

    panels = list(dict.fromkeys(panel_of(curve.config) for curve in curves))
    lines = list(dict.fromkeys(line_of(curve.config) for curve in curves))
    colours = {line: f"C{i % 10}" for i, line in enumerate(lines)}
    columns = min(len(panels), 2)
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(6.0 * columns, 4.2 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=is_influence)
    for axis in axes.ravel()[len(panels) :]:
        axis.set_visible(False)
    for panel, axis in zip(panels, axes.ravel()):
        labelled: set[str] = set()
        members = [curve for curve in curves if panel_of(curve.config) == panel]
        if is_influence:
            # log10 on a linear axis: matplotlib's log scale overflows past 1e308 when
            # placing ticks over the ~300 decades a diverging run spans.
            axis.set_xscale("log")
            axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"$10^{{{value:g}}}$"))
        for curve in members:
            line = line_of(curve.config)
            label = None if line in labelled else line
            labelled.add(line)
            colour = colours[line]
            if is_influence:
                with np.errstate(divide="ignore", invalid="ignore"):
                    decades = np.log10(np.where(curve.loss > 0, curve.loss, np.nan))
                axis.plot(curve.steps, decades, color=colour, label=label, lw=1.2)
                if curve.diverged and len(curve.steps):
                    axis.plot(curve.steps[-1], decades[-1], "x", color=colour, ms=8)
            else:
                axis.plot(curve.steps, curve.cumulative_loss, color=colour, label=label, lw=1.6)
                axis.plot(curve.steps, curve.loss, color=colour, alpha=0.25, lw=0.8)
        if is_influence:
            axis.set_ylabel("loss ½(s¹−1)², per-chunk mean (log scale)")
        else:
            for (name, value), style in zip(members[0].references.items(), ("--", ":")):
                axis.axhline(value, color="black", ls=style, lw=0.9, label=f"{name} {value:.3f}")
            axis.set_ylabel("bits/char: cumulative (solid), per chunk (faint)")
            _token_limits(axis, members)
        axis.set_title(panel)
        axis.set_xlabel("steps (characters)" if not is_influence else "steps")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def _token_limits(axis: Any, curves: Sequence[Curve]) -> None:
    """Bottom at 0, top above the curves once past their first 2 % (the initial loss
    of log2(vocabulary) bits would flatten everything else)."""
    values = [
        np.concatenate(
            [
                curve.cumulative_loss[len(curve.steps) // 50 + 1 :],
                curve.loss[len(curve.steps) // 50 + 1 :],
            ]
        )
        for curve in curves
    ]
    finite = np.concatenate(values) if values else np.empty(0)
    finite = finite[np.isfinite(finite)]
    references = [value for curve in curves for value in curve.references.values()]
    top = max([*finite.tolist(), *references], default=math.nan)
    if math.isfinite(top) and top > 0:
        axis.set_ylim(0.0, 1.1 * top)
