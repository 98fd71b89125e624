"""Learning curves against wall time for many streams: does one model fed B streams
(``streams=B``) reach a given loss in less wall time than the same model fed one stream?

For each task (aⁿbⁿ(1, 32), distant brackets (1, 5, 10)) and cell (GRU, LSTM; 64 units
by default; float32, Adam, UORO unless `--algorithm` says otherwise) and each B, a
learner with ``streams=B`` learns online from B independently seeded copies of the task's
stream (seeds 0, 1, ..., B − 1, one per column: stream b is the same for every B), fed
through `Learner.fit` in chunks of about `--chunk` samples (chunk // B ticks of shape
(T, B); (T,) for B = 1). The learner's options are the task's defaults in
`uoro.experiments` (lr and lr_decay: ANBN_LR, ANBN_LR_DECAY, BRACKETS_LR,
BRACKETS_LR_DECAY; lr_decay counts updates, i.e. ticks) and, with `--init paper`
(default), the task's initialization there (``PAPER_INIT``, as ``uoro experiment`` runs
them; ``--init library``: the library's own): every run starts from the same θ, that of
`--seed`. A learner never stops: ``on_divergence="reset"``; resets are counted per run.

Only the `fit` calls are timed (time.perf_counter around each; the data are drawn
before, outside the timing). After every chunk the curve records the samples so far
(ticks × B), the `fit` seconds so far and the chunk's mean loss in bits per character.
The windowed loss at a chunk's end is the mean loss per sample over the fewest trailing
whole chunks holding at least W samples, W = 10 % of `--samples` (100 000 by default);
it is undefined until W samples have been seen.

  - B = 1 (the baseline) learns `--samples` samples (10⁶ by default): its target
    L1 = its windowed loss at the end (its last 10 %), its wall time W1.
  - Every B > 1 learns until its `fit` calls have used W1 seconds (or `--samples` × 4
    samples, whichever comes first; the chunk that crosses W1 is the last).
  - For each run: samples, wall seconds, samples per second, the final windowed loss,
    the time at which its windowed loss first is ≤ L1 ("time to B = 1's loss") and that
    time / W1 ("—" if never). A ratio below 1: B streams reach B = 1's loss sooner. And
    its windowed loss once it has seen as many samples as B = 1 ("loss after B = 1's
    samples"): below L1, B streams learned more per sample than one.

Variants (B > 1 only; B = 1 is always the plain baseline): ``--variant
NAME:key=value,...`` (repeatable) adds keyword options of `uoro.Learner` to the task's,
e.g. ``--variant groups:stream_groups=16`` or ``--variant lr4x:lr=0.004``; values are
read as int, float, True/False or a string; the value ``B`` means the run's B (e.g.
``stream_groups=B``); the special key ``lr_scale=sqrt|linear|none`` multiplies the lr
(the task's, or the variant's own) by √B, B or 1. Default: one variant, ``default``,
without options (the library's defaults for ``streams=B``).

Prints the machine line, then per task and cell a markdown table (rows: variant and B).
``--seeds S S ...`` (instead of ``--seed``) runs all of that once per seed (each with
its own B = 1 target and W1), prints each seed's tables, then per task and cell a
summary: each (variant, B)'s ratio to W1 per seed and on how many seeds it was at most
0.5 (B = 1's loss in at most half of its time), and its loss after B = 1's samples per
seed beside that seed's L1; then the aim read over the seeds: the median L1, the median
of each run's loss after half of its seed's W1, and the share of all (run, B = 1 run)
pairs across seeds in which the run's loss after half of its W1 is at most that B = 1
run's L1 (above 0.5: in half of B = 1's time, B streams beat one stream's full run more
often than not).

``--json PATH`` writes every row with its curve (samples, seconds and loss per chunk)
and the machine; ``--plot PATH`` draws a PNG (needs matplotlib): one panel per task ×
cell, the windowed loss against wall seconds, one line per (variant, B), L1 dashed
(the first seed's runs).

    python benchmarks/streams_learning_curves.py [--quick] [--json PATH] [--plot PATH]
        [--tasks anbn brackets] [--cells gru lstm] [--hidden 64] [--streams 1 4 16 64]
        [--samples 1000000] [--chunk 2000] [--seed 0 | --seeds 0 1 2] [--algorithm uoro]
        [--init paper|library] [--variant NAME:key=value,...]
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

# NumPy's BLAS threads spin after each call and would share the cores with the learner.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import uoro  # noqa: E402
from uoro import experiments  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step  # noqa: E402

TASKS: dict[str, Callable[[int], uoro.datasets.TokenStream]] = {
    "anbn": lambda seed: uoro.datasets.anbn(**experiments.ANBN, seed=seed),
    "brackets": lambda seed: uoro.datasets.distant_brackets(**experiments.BRACKETS, seed=seed),
}
TASK_NAMES = {"anbn": "aⁿbⁿ(1, 32)", "brackets": "distant brackets (1, 5, 10)"}
# The task's learner options, and its run configuration (for the initialization).
TASK_OPTIONS = {
    "anbn": {"lr": experiments.ANBN_LR, "lr_decay": experiments.ANBN_LR_DECAY},
    "brackets": {"lr": experiments.BRACKETS_LR, "lr_decay": experiments.BRACKETS_LR_DECAY},
}
TASK_CONFIGS = {"anbn": experiments.anbn_config, "brackets": experiments.brackets_config}
CELLS = ("gru", "lstm", "mingru", "minlstm")  # element-wise cells: with --algorithm rtrl
DEFAULT_CELLS = ("gru", "lstm")
ALGORITHMS = ("uoro", "snap1", "rtrl")  # those that need no further option
INITS = ("paper", "library")
STREAMS = (1, 4, 16, 64)
BASELINE = "baseline"  # the variant name of the B = 1 row
LR_SCALES: dict[str, Callable[[int], float]] = {
    "none": lambda b: 1.0,
    "sqrt": lambda b: math.sqrt(b),
    "linear": lambda b: float(b),
}
# `Learner` options a variant may not set: the network and B are the benchmark's.
FIXED_OPTIONS = ("cell", "input_size", "hidden_size", "output_size", "streams")
BLOCK_SAMPLES = 200_000  # samples drawn at a time, between timed chunks


@dataclass(frozen=True)
class Sizes:
    samples: int = 1_000_000  # B = 1's run (and the window's base)
    chunk: int = 2_000  # samples per `fit` call: chunk // B ticks (at least 1)
    window_fraction: float = 0.1  # the windowed loss's span, as a fraction of `samples`
    max_factor: int = 4  # a B > 1 run stops at this many times `samples`

    @property
    def window(self) -> int:
        return max(1, round(self.samples * self.window_fraction))


QUICK = Sizes(samples=4_000, chunk=200)
QUICK_HIDDEN, QUICK_STREAMS = 8, (1, 4)


def learner_keywords() -> set[str]:
    """The keyword options `uoro.Learner` takes (read from its signature, so new options
    need no change here), less those the benchmark fixes."""
    names = set(inspect.signature(uoro.Learner.__init__).parameters) - {"self"}
    return names - set(FIXED_OPTIONS)


@dataclass(frozen=True)
class Variant:
    """Named `Learner` options for the B > 1 runs (see the module's doc)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def learner_options(self, base: dict[str, Any], streams: int) -> dict[str, Any]:
        """`base` with this variant's options for a run of `streams` streams: ``"B"``
        replaced by `streams`, the lr multiplied as ``lr_scale`` says."""
        options = dict(base)
        for key, value in self.options.items():
            if key != "lr_scale":
                options[key] = streams if value == "B" else value
        options["lr"] = options["lr"] * LR_SCALES[self.options.get("lr_scale", "none")](streams)
        return options

    @property
    def label(self) -> str:
        given = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}:{given}" if given else self.name


DEFAULT_VARIANTS = (Variant("default"),)


def parse_value(text: str) -> Any:
    """int, float, True/False, else the string itself (``"B"`` included)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def parse_variant(text: str) -> Variant:
    """``"NAME:key=value,key=value"`` (or ``"NAME"``) → a `Variant`; a malformed spec
    raises `argparse.ArgumentTypeError` saying what is wrong."""
    usage = f"--variant {text!r}: expected NAME:key=value,key=value"
    name, _, given = text.partition(":")
    name = name.strip()
    if not name or "=" in name or "," in name:
        raise argparse.ArgumentTypeError(f"{usage} (a name first, then ':')")
    if name == BASELINE:
        raise argparse.ArgumentTypeError(f"{usage}: {BASELINE!r} names the B = 1 runs")
    allowed = learner_keywords() | {"lr_scale"}
    options: dict[str, Any] = {}
    for part in given.split(","):
        part = part.strip()
        if not part and not given.strip():
            continue  # "NAME:" or "NAME": no options
        key, equals, value = (s.strip() for s in part.partition("="))
        if not equals or not key or not value:
            raise argparse.ArgumentTypeError(f"{usage}; {part!r} is not key=value")
        if key in FIXED_OPTIONS:
            raise argparse.ArgumentTypeError(f"{usage}; {key!r} is set by the benchmark")
        if key not in allowed:
            raise argparse.ArgumentTypeError(
                f"{usage}; {key!r} is not an option of uoro.Learner (one of "
                f"{', '.join(sorted(allowed))})"
            )
        if key in options:
            raise argparse.ArgumentTypeError(f"{usage}; {key!r} given twice")
        if key == "lr_scale" and value not in LR_SCALES:
            raise argparse.ArgumentTypeError(
                f"{usage}; lr_scale is one of {', '.join(LR_SCALES)}, not {value!r}"
            )
        options[key] = value if key == "lr_scale" else parse_value(value)
    return Variant(name, options)


class Streams:
    """B independently seeded copies of a task's stream (column b: seed b), read tick by
    tick; drawn `BLOCK_SAMPLES` samples at a time."""

    def __init__(self, task: str, streams: int) -> None:
        self._streams = [TASKS[task](b) for b in range(streams)]
        self._xs = self._ys = np.zeros((0, streams), dtype=np.int64)

    def take(self, ticks: int) -> tuple[np.ndarray, np.ndarray]:
        """The next `ticks` ticks, (ticks, B)."""
        if len(self._xs) < ticks:
            more = max(ticks, BLOCK_SAMPLES // len(self._streams))
            columns = [stream.pairs(more) for stream in self._streams]
            self._xs = np.concatenate([self._xs, np.stack([x for x, _ in columns], axis=1)])
            self._ys = np.concatenate([self._ys, np.stack([y for _, y in columns], axis=1)])
        xs, ys = self._xs[:ticks], self._ys[:ticks]
        self._xs, self._ys = self._xs[ticks:], self._ys[ticks:]
        return xs, ys


def base_options(task: str, algorithm: str = "uoro", seed: int = 0) -> dict[str, Any]:
    """The options of every run on `task` before a variant's."""
    return {
        "algorithm": algorithm,
        "optimizer": "adam",
        "dtype": "float32",
        **TASK_OPTIONS[task],
        "on_divergence": "reset",
        "seed": seed,
    }


def initial_theta(task: str, cell: str, hidden: int, seed: int, init: str) -> np.ndarray:
    """The θ every run starts from: the task's initialization in `uoro.experiments`
    (``"paper"``) or the library's (``"library"``), from `seed`."""
    if init == "paper":
        config = TASK_CONFIGS[task](cell=cell, hidden=hidden, seed=seed)
        return experiments.make_learner(config).theta
    return uoro.Learner(cell, vocabulary_size(task), hidden, seed=seed).theta


def vocabulary_size(task: str) -> int:
    return len(TASKS[task](0).vocabulary)


def new_learner(
    task: str, cell: str, hidden: int, streams: int, options: dict[str, Any], theta: np.ndarray
) -> uoro.Learner:
    learner = uoro.Learner(cell, vocabulary_size(task), hidden, streams=streams, **options)
    learner.theta = theta
    return learner


@dataclass
class Curve:
    samples: list[int]  # samples learned so far, at each chunk's end
    seconds: list[float]  # `fit` seconds so far
    loss: list[float]  # the chunk's mean loss, bits/char
    resets: int = 0  # the divergence guard's resets (and dropped ticks, below)
    skipped_ticks: int = 0


def learn(
    task: str,
    cell: str,
    hidden: int,
    streams: int,
    options: dict[str, Any],
    theta: np.ndarray,
    sizes: Sizes,
    budget_s: float,
    max_samples: int,
) -> Curve:
    """One run: a fresh learner over `streams` streams, chunk by chunk, until its `fit`
    calls have used `budget_s` seconds or it has learned `max_samples` samples."""
    learner = new_learner(task, cell, hidden, streams, options, theta)
    data = Streams(task, streams)
    chunk_ticks = max(1, sizes.chunk // streams)
    max_ticks = max(1, max_samples // streams)
    curve = Curve([], [], [])
    ticks, seconds = 0, 0.0
    while ticks < max_ticks and seconds < budget_s:
        xs, ys = data.take(min(chunk_ticks, max_ticks - ticks))
        if streams == 1:
            xs, ys = xs[:, 0], ys[:, 0]
        start = time.perf_counter()
        losses = learner.fit(xs, ys)
        seconds += time.perf_counter() - start
        ticks += len(xs)
        curve.samples.append(ticks * streams)
        curve.seconds.append(seconds)
        finite = losses[np.isfinite(losses)]
        loss = float(finite.mean()) if finite.size else float("nan")
        curve.loss.append(loss * experiments.BITS_PER_NAT)
    curve.resets = learner.resets
    curve.skipped_ticks = learner.skipped_steps
    return curve


def windowed(samples: Any, loss: Any, window: int) -> np.ndarray:
    """At each chunk's end: the mean loss per sample over the fewest trailing whole chunks
    holding at least `window` samples (NaN while fewer samples have been seen)."""
    ends = np.asarray(samples, dtype=np.int64)
    sizes = np.diff(ends, prepend=0)
    starts = ends - sizes
    total = np.concatenate([[0.0], np.cumsum(sizes * np.asarray(loss, dtype=float))])
    first = np.searchsorted(starts, ends - window, side="right") - 1
    out = np.full(len(ends), np.nan)
    full = first >= 0
    i, j = np.flatnonzero(full), first[full]
    out[full] = (total[i + 1] - total[j]) / (ends[i] - starts[j])
    return out


def time_to(curve: Curve, window: int, target: float) -> float | None:
    """The `fit` seconds at the first chunk's end where the windowed loss is ≤ `target`."""
    reached = np.flatnonzero(windowed(curve.samples, curve.loss, window) <= target)
    return float(curve.seconds[reached[0]]) if reached.size else None


@dataclass
class Run:
    task: str
    cell: str
    hidden: int
    variant: str
    streams: int
    seed: int  # the learners' seed (the initial θ, the signs)
    options: dict[str, Any]  # the Learner's keyword options (besides the network, B)
    chunk_ticks: int
    samples: int
    wall_s: float  # `fit` seconds
    samples_per_s: float
    final_loss: float | None  # windowed, bits/char (None: fewer samples than the window)
    target_loss: float  # L1: B = 1's final windowed loss
    baseline_wall_s: float  # W1
    time_to_target_s: float | None  # first windowed loss ≤ L1 (None: never)
    ratio_to_baseline: float | None  # time_to_target_s / W1
    # The windowed loss at the first chunk's end with at least as many samples as B = 1
    # learned (None: fewer): below L1, B streams learned more per sample than one.
    loss_at_baseline_samples: float | None
    resets: int
    skipped_ticks: int
    curve_samples: list[int]
    curve_seconds: list[float]
    curve_loss: list[float]  # per chunk, bits/char (not windowed)


def make_run(
    curve: Curve,
    sizes: Sizes,
    target: float,
    baseline_s: float,
    baseline_samples: int,
    **labels: Any,
) -> Run:
    losses = windowed(curve.samples, curve.loss, sizes.window)
    final = losses[-1]
    reached = time_to(curve, sizes.window, target)
    at = int(np.searchsorted(curve.samples, baseline_samples))
    return Run(
        **labels,
        chunk_ticks=max(1, sizes.chunk // labels["streams"]),
        samples=curve.samples[-1],
        wall_s=curve.seconds[-1],
        samples_per_s=curve.samples[-1] / curve.seconds[-1],
        final_loss=None if np.isnan(final) else float(final),
        target_loss=target,
        baseline_wall_s=baseline_s,
        time_to_target_s=reached,
        ratio_to_baseline=None if reached is None else reached / baseline_s,
        loss_at_baseline_samples=(
            float(losses[at]) if at < len(losses) and np.isfinite(losses[at]) else None
        ),
        resets=curve.resets,
        skipped_ticks=curve.skipped_ticks,
        curve_samples=curve.samples,
        curve_seconds=curve.seconds,
        curve_loss=curve.loss,
    )


def check_variants(
    tasks: list[str], cells: list[str], hidden: int, streams: tuple[int, ...],
    variants: tuple[Variant, ...], algorithm: str = "uoro", seed: int = 0,
) -> None:  # fmt: skip
    """Builds every (variant, B) learner once, so that options the library refuses stop
    the benchmark before it runs (`ValueError` / `TypeError` naming the variant)."""
    for task in tasks:
        for cell in cells:
            base = base_options(task, algorithm, seed)
            for variant in variants:
                for b in streams:
                    if b == 1:
                        continue
                    options = variant.learner_options(base, b)
                    try:
                        uoro.Learner(cell, vocabulary_size(task), hidden, streams=b, **options)
                    except (TypeError, ValueError) as error:
                        raise type(error)(f"variant {variant.label!r} at B={b}: {error}") from None


def run(
    tasks: list[str],
    cells: list[str],
    hidden: int,
    streams: tuple[int, ...],
    sizes: Sizes,
    variants: tuple[Variant, ...] = DEFAULT_VARIANTS,
    algorithm: str = "uoro",
    seed: int = 0,
    init: str = "paper",
) -> list[Run]:
    """Per task and cell: B = 1's run (variant `BASELINE`), then one run per variant and
    B > 1 (in that order)."""
    rows = []
    for task in tasks:
        for cell in cells:
            theta = initial_theta(task, cell, hidden, seed, init)
            base = base_options(task, algorithm, seed)
            runs = [(BASELINE, 1, base)] + [
                (variant.name, b, variant.learner_options(base, b))
                for variant in variants
                for b in streams
                if b > 1
            ]
            target, w1, n1 = math.nan, math.inf, 0
            for name, b, options in runs:
                # B = 1: `sizes.samples`; B > 1: as long as B = 1 (or the sample cap).
                cap = sizes.samples * (1 if b == 1 else sizes.max_factor)
                curve = learn(task, cell, hidden, b, options, theta, sizes, w1, cap)
                if b == 1:
                    target = float(windowed(curve.samples, curve.loss, sizes.window)[-1])
                    w1, n1 = curve.seconds[-1], curve.samples[-1]
                labels = {"task": task, "cell": cell, "hidden": hidden, "variant": name}
                labels.update(streams=b, seed=seed, options=options)
                rows.append(make_run(curve, sizes, target, w1, n1, **labels))
                report(rows[-1])
    return rows


def report(row: Run) -> None:
    print(
        f"  {row.task} {row.cell.upper()}-{row.hidden} {row.variant} B={row.streams} "
        f"seed {row.seed}: "
        f"{row.samples:,} samples in {fmt_s(row.wall_s)} s, final {fmt(row.final_loss, 3)} "
        f"bits/char, at B = 1's loss after {fmt_s(row.time_to_target_s)} s",
        flush=True,
    )


def fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def fmt_s(value: float | None) -> str:
    """Seconds: 3 significant digits below 10 s, else one decimal."""
    if value is None:
        return "—"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def table(rows: list[Run], task: str, cell: str, seed: int | None = None) -> str:
    """Rows: (variant, B); columns as in the module's doc (of one seed's runs, if given)."""
    mine = [r for r in rows if (r.task, r.cell) == (task, cell) and seed in (None, r.seed)]
    lines = [
        "| variant | B | samples | wall s | samples/s | final loss (bits/char) "
        "| time to B = 1's loss (s) | ratio to W1 | loss after B = 1's samples |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in mine:
        ratio = "—" if r.ratio_to_baseline is None else f"{r.ratio_to_baseline:.2f}"
        lines.append(
            f"| {r.variant} | {r.streams} | {r.samples:,} | {fmt_s(r.wall_s)} "
            f"| {r.samples_per_s:,.0f} | {fmt(r.final_loss, 3)} "
            f"| {fmt_s(r.time_to_target_s)} | {ratio} | {fmt(r.loss_at_baseline_samples, 3)} |"
        )
    return "\n".join(lines)


def loss_by(row: Run, seconds: float, window: int) -> float:
    """The run's windowed loss at its last chunk's end within `seconds` of `fit` (NaN
    before a whole window)."""
    losses = windowed(row.curve_samples, row.curve_loss, window)
    within = np.flatnonzero(np.asarray(row.curve_seconds) <= seconds)
    return float(losses[within[-1]]) if within.size else math.nan


def seed_summary(rows: list[Run], task: str, cell: str, seeds: list[int], window: int) -> str:
    """Per (variant, B > 1): its ratio to W1 on each seed ("—": never) and on how many
    seeds it was at most 0.5; then its loss after as many samples as B = 1 learned, with
    B = 1's L1 in brackets, on each seed; then the same aim read over the seeds instead
    of seed by seed: each run's loss after half of its seed's W1 against every seed's L1
    (one seed's B = 1 run can be lucky, so pairing runs by seed also compares luck)."""
    runs: dict[tuple[str, int], dict[int, Run]] = {}  # (variant, B) → seed → its run
    for r in rows:
        if (r.task, r.cell) == (task, cell) and r.streams > 1:
            runs.setdefault((r.variant, r.streams), {})[r.seed] = r
    lines = [
        "| variant | B | " + " | ".join(f"seed {s}" for s in seeds) + " | at most 0.5 of W1 |",
        "|---|---:|" + "---:|" * (len(seeds) + 1),
    ]
    for (variant, b), at in runs.items():
        ratios = {seed: r.ratio_to_baseline for seed, r in at.items()}
        met = sum(ratios[s] is not None and ratios[s] <= 0.5 for s in seeds)
        lines.append(
            f"| {variant} | {b} | " + " | ".join(fmt(ratios[s], 2) for s in seeds)
            + f" | {met} of {len(seeds)} |"
        )  # fmt: skip
    lines += [
        "",
        "| variant | B | " + " | ".join(f"seed {s}: loss after B = 1's samples (L1)" for s in seeds)
        + " |",
        "|---|---:|" + "---:|" * len(seeds),
    ]  # fmt: skip
    for (variant, b), at in runs.items():
        lines.append(
            f"| {variant} | {b} | "
            + " | ".join(
                f"{fmt(at[s].loss_at_baseline_samples, 3)} ({at[s].target_loss:.3f})" for s in seeds
            )
            + " |"
        )
    baselines = {r.seed: r for r in rows if (r.task, r.cell, r.streams) == (task, cell, 1)}
    targets = np.array([baselines[s].target_loss for s in seeds])
    lines += [
        "",
        "| variant | B | median L1 | median loss after half of W1 | runs × B = 1 runs below |",
        "|---|---:|---:|---:|---:|",
    ]
    for (variant, b), at in runs.items():
        half = np.array([loss_by(at[s], 0.5 * baselines[s].wall_s, window) for s in seeds])
        below = float(np.mean(half[:, None] <= targets[None, :]))
        lines.append(
            f"| {variant} | {b} | {np.median(targets):.3f} | {np.median(half):.3f} | {below:.2f} |"
        )
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or a clear error without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError(
            "--plot needs matplotlib (pip install 'uoro[experiments]'): " + str(error)
        ) from error
    return plt


def plot(rows: list[Run], path: str | Path, window: int) -> None:
    """One panel per task × cell: the windowed loss against wall seconds, one line per
    (variant, B), B = 1's final loss dashed."""
    plt = pyplot()
    panels = list(dict.fromkeys((r.task, r.cell, r.hidden) for r in rows))
    columns = min(2, len(panels))
    lines = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(6.4 * columns, 4.2 * lines), squeeze=False)
    for ax, (task, cell, hidden) in zip(axes.flat, panels):
        mine = [r for r in rows if (r.task, r.cell, r.seed) == (task, cell, rows[0].seed)]
        for r in mine:
            loss = windowed(r.curve_samples, r.curve_loss, window)
            label = f"B = 1 ({BASELINE})" if r.streams == 1 else f"{r.variant}, B = {r.streams}"
            ax.plot(np.asarray(r.curve_seconds), loss, label=label)
        ax.axhline(mine[0].target_loss, color="k", linestyle="--", linewidth=0.8)
        ax.set_title(f"{TASK_NAMES[task]}, {cell.upper()}-{hidden}")
        ax.set_xlabel("wall seconds in fit")
        ax.set_ylabel(f"loss over the last {window:,} samples (bits/char)")
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and curves here")
    parser.add_argument("--plot", metavar="PATH", help="draw the curves into this PNG")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--cells", nargs="+", default=list(DEFAULT_CELLS), choices=list(CELLS))
    parser.add_argument("--hidden", type=positive, help="hidden units (default 64; quick 8)")
    parser.add_argument(
        "--streams", nargs="+", type=positive, help="the B (default 1 4 16 64; quick 1 4)"
    )
    parser.add_argument(
        "--samples", type=positive, help="B = 1's samples (default 1000000; quick 4000)"
    )
    parser.add_argument("--chunk", type=positive, help="samples per fit (default 2000; quick 200)")
    seed = parser.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, default=0, help="the learners' seed (default 0)")
    seed.add_argument(
        "--seeds", nargs="+", type=int, help="run once per seed and summarize (instead of --seed)"
    )
    parser.add_argument("--algorithm", default="uoro", choices=ALGORITHMS)
    parser.add_argument(
        "--init", default="paper", choices=INITS, help="the task's init (default) or the library's"
    )
    parser.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        metavar="NAME:key=value,...",
        help="Learner options for the B > 1 runs (repeatable; default: 'default', none)",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    for name in ("samples", "chunk"):
        if getattr(args, name) is not None:
            sizes = replace(sizes, **{name: getattr(args, name)})
    hidden = args.hidden or (QUICK_HIDDEN if args.quick else 64)
    streams = tuple(sorted({1, *(args.streams or (QUICK_STREAMS if args.quick else STREAMS))}))
    variants = tuple(args.variant or DEFAULT_VARIANTS)
    names = [v.name for v in variants]
    if len(set(names)) < len(names):
        parser.error(f"--variant names must differ; got {', '.join(names)}")
    if args.plot:
        try:
            pyplot()
        except RuntimeError as error:
            parser.error(str(error))
    seeds = list(dict.fromkeys(args.seeds)) if args.seeds else [args.seed]
    try:
        check_variants(args.tasks, args.cells, hidden, streams, variants, args.algorithm, seeds[0])
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    began = time.perf_counter()
    rows = [
        row
        for seed in seeds
        for row in run(
            args.tasks, args.cells, hidden, streams, sizes, variants, args.algorithm, seed,
            args.init,
        )
    ]  # fmt: skip
    m = bench_step.machine()
    seed_text = ("seeds " if len(seeds) > 1 else "seed ") + ", ".join(map(str, seeds))
    print(
        f"\n{m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}, core variant "
        f"{m['variant']}; float32, {args.algorithm.upper()} + Adam, {args.init} init, "
        f"{seed_text}, one thread; B = 1 learns {sizes.samples:,} samples, every B > 1 as "
        f"long (in `fit` seconds), at most {sizes.max_factor}× the samples; losses over the "
        f"last {sizes.window:,} samples; chunks of {sizes.chunk:,} samples"
    )
    print("Variants: " + "; ".join(v.label for v in variants))
    for seed in seeds:
        for task in args.tasks:
            for cell in args.cells:
                [baseline] = [
                    r for r in rows if (r.task, r.cell, r.streams, r.seed) == (task, cell, 1, seed)
                ]
                print(
                    f"\n{TASK_NAMES[task]}, {cell.upper()}-{hidden} (lr "
                    f"{TASK_OPTIONS[task]['lr']:g}, lr_decay {TASK_OPTIONS[task]['lr_decay']:g}"
                    f"{f', seed {seed}' if len(seeds) > 1 else ''}): B = 1's loss L1 = "
                    f"{baseline.target_loss:.3f} bits/char after W1 = {fmt_s(baseline.wall_s)} s"
                    "\n\n" + table(rows, task, cell, seed)
                )
    if len(seeds) > 1:
        for task in args.tasks:
            for cell in args.cells:
                print(
                    f"\n{TASK_NAMES[task]}, {cell.upper()}-{hidden}, time to B = 1's loss / W1 "
                    "per seed:\n\n" + seed_summary(rows, task, cell, seeds, sizes.window)
                )
    guarded = [f"{r.task} {r.cell} {r.variant} B={r.streams}" for r in rows if r.resets]
    if guarded:
        print("\nRuns the divergence guard reset: " + ", ".join(guarded))
    if args.json:
        with open(args.json, "w") as f:
            settings = {"hidden": hidden, "streams": list(streams), "tasks": args.tasks}
            settings |= {"cells": args.cells, "seeds": seeds, "algorithm": args.algorithm}
            settings |= {"init": args.init, "window": sizes.window, **asdict(sizes)}
            settings["variants"] = [asdict(v) for v in variants]
            rows_out = [asdict(r) for r in rows]
            json.dump({"machine": m, "settings": settings, "rows": rows_out}, f, indent=2)
    if args.plot:
        plot(rows, args.plot, sizes.window)
    print(f"\nDone in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
