"""The ``uoro`` command line: ``uoro experiment influence|brackets|anbn|text``.

Each invocation runs one configuration (or, with ``--preset paper``, the paper's set for
that figure) for every seed, and writes into ``--out``: one CSV per run, a summary CSV and
one PNG with all the curves; it prints a summary table at the end.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from uoro import experiments
from uoro.experiments import Curve, RunConfig, RunFailure

#: Options a preset fixes; giving one alongside ``--preset`` is an error.
PRESET_FIXED = (
    "cell",
    "hidden",
    "algorithm",
    "truncation",
    "memory",
    "rank",
    "lr",
    "lr_decay",
    "optimizer",
    "init",
    "units",
    "minus",
    "repeat",
    "gap",
    "alphabet",
    "min_n",
    "max_n",
)


class StepCount(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A positive integer, also written as ``1e6`` or ``2_000_000``."""

    name = "COUNT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).replace("_", ""))
            except ValueError:
                self.fail(f"{value!r} is not a number (e.g. 100000 or 1e6)", param, ctx)
        if not math.isfinite(number) or number < 1 or number != int(number):
            self.fail(f"{value!r} is not a whole number >= 1", param, ctx)
        return int(number)


class Seeds(click.ParamType):  # type: ignore[type-arg]
    """``N`` for the seeds 0..N-1, or a comma-separated list of seeds (``7,`` for just 7)."""

    name = "N|LIST"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        if not re.fullmatch(r"\d+|\d+(\s*,\s*\d+)*\s*,?", text):
            self.fail(f"{value!r} is neither a count (3) nor a list of seeds (0,4,7)", param, ctx)
        if "," not in text:
            count = int(text)
            if count < 1:
                self.fail("a count of seeds must be >= 1", param, ctx)
            return tuple(range(count))
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
        if len(set(seeds)) != len(seeds):
            self.fail(f"seed listed twice in {value!r}", param, ctx)
        return seeds


STEP_COUNT = StepCount()
SEEDS = Seeds()
POSITIVE = click.IntRange(min=1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="uoro", prog_name="uoro")
def main() -> None:
    """Online learning of recurrent networks with UORO (Tallec & Ollivier, 2017)."""


@main.group()
def experiment() -> None:
    """Reproduce the experiments of the paper's Section 4.

    Every run feeds its stream in chunks to the learner and records, per chunk, the mean
    loss and the cumulative online loss (mean over all steps so far); at the end, the
    "recent" loss over the last 10^5 steps. Token tasks report bits per character.
    """


def _learning_options(
    lr: float, lr_decay: float, steps: int, chunk: int = experiments.DEFAULT_CHUNK
) -> list[Callable[..., Any]]:
    return [
        click.option(
            "--algorithm",
            type=click.Choice(["uoro", "rtrl", "tbptt", "tbptt_chunk", "snap1", "kf_rtrl", "ok"]),
            default="uoro",
            show_default=True,
            help="Gradient estimator: uoro; rtrl (exact, small nets only); "
            "snap1 (SnAp-1: RTRL keeping only one-step influences); "
            "kf_rtrl / ok (unbiased Kronecker-factored influence, quieter than uoro); "
            "tbptt_chunk = truncated BPTT as in the paper, one update per "
            "T steps on the chunk's summed loss; tbptt = online truncated "
            "BPTT, every step through the last T steps.",
        ),
        click.option(
            "--truncation",
            type=POSITIVE,
            default=None,
            help="T of truncated BPTT (required with tbptt and tbptt_chunk).",
        ),
        click.option(
            "--memory",
            type=POSITIVE,
            default=1,
            show_default=True,
            help="Memory-T UORO: exact gradient inside windows of T steps.",
        ),
        click.option(
            "--rank",
            type=POSITIVE,
            default=1,
            show_default=True,
            help="Rank of the UORO estimate, or OK's Kronecker terms per block.",
        ),
        click.option(
            "--lr",
            type=click.FloatRange(min=0, min_open=True),
            default=lr,
            show_default=True,
            help="Base learning rate (η, or Adam's γ).",
        ),
        click.option(
            "--lr-decay",
            type=click.FloatRange(min=0),
            default=lr_decay,
            show_default=True,
            help="α of the schedule η_t = lr / (1 + α√t), t counted in samples.",
        ),
        click.option(
            "--steps",
            type=STEP_COUNT,
            default=steps,
            show_default=True,
            help="Samples to learn from per run; 1e6 notation accepted.",
        ),
        click.option(
            "--seeds",
            type=SEEDS,
            default="1",
            show_default=True,
            help="N runs with seeds 0..N-1, or a comma-separated list (0,4,7; "
            "'7,' for seed 7 alone). Seeds the learner and the synthetic data.",
        ),
        click.option(
            "--jobs",
            type=POSITIVE,
            default=1,
            show_default=True,
            help="Runs in parallel, in separate processes (with --scheduler local: "
            "its worker processes).",
        ),
        click.option(
            "--scheduler",
            metavar="ADDRESS|local",
            default=None,
            help="Send the runs to a Dask cluster: the address of its scheduler "
            "(tcp://host:8786), or 'local' to start one on this machine. Each run is one "
            "task; the CSV rows come back here. Needs pip install 'uoro[distributed]'.",
        ),
        click.option(
            "--chunk",
            type=STEP_COUNT,
            default=chunk,
            show_default=True,
            help="Samples per learning call: one CSV row each.",
        ),
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("uoro-results"),
            show_default=True,
            help="Directory for the CSVs and the PNG (created if missing).",
        ),
        click.option(
            "--progress/--no-progress",
            default=True,
            show_default=True,
            help="Show a progress bar with the running loss.",
        ),
    ]


def _model_options() -> list[Callable[..., Any]]:
    return [
        click.option(
            "--cell",
            type=click.Choice(["rnn", "gru", "lstm", "mingru", "minlstm", "indrnn"]),
            default="gru",
            show_default=True,
            help="Recurrent cell.",
        ),
        click.option(
            "--hidden",
            type=POSITIVE,
            default=experiments.PAPER_HIDDEN,
            show_default=True,
            help="Hidden units.",
        ),
        click.option(
            "--optimizer",
            type=click.Choice(["adam", "sgd"]),
            default="adam",
            show_default=True,
            help="Optimizer (Adam with β1 = 0.9, β2 = 0.999).",
        ),
        click.option(
            "--init",
            type=click.Choice(["paper", "library"]),
            default="paper",
            show_default=True,
            help="Initialization: 'paper' = as the authors' code (input weights from "
            "N(0, 1) for GRU and RNN; N(0, 1/3) and −0.3 on the forget-gate bias for LSTM), the "
            "rest as 'library' = PyTorch's uniform init U(±1/√hidden).",
        ),
    ]


def _preset_option(description: str) -> Callable[..., Any]:
    return click.option(
        "--preset",
        type=click.Choice(["paper"]),
        default=None,
        help=f"Run the paper's configurations: {description} Fixes every "
        "model and learning option; --steps, --seeds, --jobs, --scheduler, --chunk, "
        "--out still apply.",
    )


def _braces(values: Sequence[float]) -> str:
    return "{" + ", ".join(f"{value:g}" for value in values) + "}"


def _apply(options: Sequence[Callable[..., Any]]) -> Callable[[Any], Any]:
    def decorate(function: Any) -> Any:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


@experiment.command("influence", short_help="Influence balancing (Fig. 1a).")
@_apply(
    [
        _preset_option(
            f"UORO and truncated BPTT T ∈ {_braces(experiments.INFLUENCE_TRUNCATIONS)}, each for "
            f"η ∈ {_braces(experiments.INFLUENCE_LR_GRID)}, SGD, α = 1, 23 units, 13 minus "
            "(Fig. 1a)."
        ),
        click.option(
            "--units",
            type=POSITIVE,
            default=experiments.INFLUENCE_UNITS,
            show_default=True,
            help="n, units of the linear dynamics.",
        ),
        click.option(
            "--minus",
            type=click.IntRange(min=0),
            default=experiments.INFLUENCE_MINUS,
            show_default=True,
            help="Units with a −θ input (the far ones).",
        ),
        *_learning_options(
            experiments.INFLUENCE_LR, experiments.INFLUENCE_LR_DECAY, 100_000, chunk=1_000
        ),
    ]
)
@click.pass_context
def influence_command(
    ctx: click.Context, /, preset: str | None, units: int, minus: int, **options: Any
) -> None:
    """Influence balancing (Fig. 1a): one scalar θ, plain SGD, loss ½(s¹ − 1)², log-scale plot.

    θ helps the shallowest unit in the short term and hurts it in the long run: truncated
    gradients get its sign wrong and drive θ away from the optimum.
    """
    if minus > units:
        raise click.BadParameter(
            f"must be <= --units ({units}); got {minus}", param_hint="'--minus'"
        )
    _run_experiment(ctx, "influence", preset, {"n": units, "n_minus": minus}, options)


@experiment.command("brackets", short_help="Distant brackets (Fig. 1b).")
@_apply(
    [
        _preset_option(
            "GRU and LSTM with 64 units, UORO vs 4-truncated BPTT, Adam γ = 1e-3, "
            "α = 0.015, distant brackets (1, 5, 10) (Fig. 1b)."
        ),
        click.option(
            "--repeat",
            type=POSITIVE,
            default=experiments.BRACKETS["s"],
            show_default=True,
            help="s: letters between brackets, repeated later.",
        ),
        click.option(
            "--gap",
            type=click.IntRange(min=0),
            default=experiments.BRACKETS["k"],
            show_default=True,
            help="k: random letters between the two bracket pairs.",
        ),
        click.option(
            "--alphabet",
            type=click.IntRange(1, 26),
            default=experiments.BRACKETS["a"],
            show_default=True,
            help="a: size of the alphabet.",
        ),
        *_model_options(),
        *_learning_options(experiments.BRACKETS_LR, experiments.BRACKETS_LR_DECAY, 1_000_000),
    ]
)
@click.pass_context
def brackets_command(
    ctx: click.Context, /, preset: str | None, repeat: int, gap: int, alphabet: int, **options: Any
) -> None:
    """Distant brackets (s, k, a) (Fig. 1b): next-character prediction, bits per character."""
    _run_experiment(ctx, "brackets", preset, {"s": repeat, "k": gap, "a": alphabet}, options)


@experiment.command("anbn", short_help="aⁿbⁿ (Fig. 3, Table 1).")
@_apply(
    [
        _preset_option(
            "GRU and LSTM with 64 units, UORO (plain, memory-2, memory-16) vs "
            "truncated BPTT T ∈ {1, 2, 16}, Adam γ = 1e-3, α = 0.03, aⁿbⁿ(1, 32) "
            "(Fig. 3, Table 1)."
        ),
        click.option(
            "--min-n",
            type=click.IntRange(min=0),
            default=experiments.ANBN["k"],
            show_default=True,
            help="k: smallest n.",
        ),
        click.option(
            "--max-n",
            type=click.IntRange(min=0),
            default=experiments.ANBN["l"],
            show_default=True,
            help="l: largest n.",
        ),
        *_model_options(),
        *_learning_options(experiments.ANBN_LR, experiments.ANBN_LR_DECAY, 1_000_000),
    ]
)
@click.pass_context
def anbn_command(
    ctx: click.Context, /, preset: str | None, min_n: int, max_n: int, **options: Any
) -> None:
    """aⁿbⁿ(k, l) (Fig. 3, Table 1): n a's, newline, n b's, newline; bits per character."""
    if min_n > max_n:
        raise click.BadParameter(
            f"must be <= --max-n ({max_n}); got {min_n}", param_hint="'--min-n'"
        )
    _run_experiment(ctx, "anbn", preset, {"k": min_n, "l": max_n}, options)


@experiment.command("text", short_help="Next-character prediction on a text file.")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_apply(
    [
        *_model_options(),
        *_learning_options(experiments.BRACKETS_LR, experiments.BRACKETS_LR_DECAY, 1_000_000),
    ]
)
@click.pass_context
def text_command(ctx: click.Context, /, path: Path, **options: Any) -> None:
    """Next-character prediction on the UTF-8 text file PATH, repeated endlessly."""
    _run_experiment(ctx, "text", None, {"path": str(path)}, options)


# ---- running ---------------------------------------------------------------------------------


def _run_experiment(
    ctx: click.Context,
    name: str,
    preset: str | None,
    dataset: dict[str, Any],
    options: dict[str, Any],
) -> None:
    seeds, jobs, scheduler, out, progress = (
        options.pop(key) for key in ("seeds", "jobs", "scheduler", "out", "progress")
    )
    if scheduler is not None and scheduler != "local" and _given(ctx, "jobs"):
        raise click.UsageError(
            f"--jobs applies without --scheduler or with --scheduler local; the cluster at "
            f"{scheduler} runs as many runs at once as it has worker threads.",
            ctx,
        )
    if preset is not None:
        given = [f"--{key.replace('_', '-')}" for key in PRESET_FIXED if _given(ctx, key)]
        if given:
            raise click.UsageError(
                f"--preset {preset} fixes {', '.join(given)}; drop "
                f"{'it' if len(given) == 1 else 'them'}.",
                ctx,
            )
        configs = experiments.paper_configs(
            name, steps=options["steps"], seeds=seeds, chunk=options["chunk"]
        )
    else:
        if options.pop("init", "paper") == "library":  # influence has no --init
            options.update(input_std=None, forget_bias=0.0)
        base = experiments.make_config(name, dataset, **options)
        configs = [replace(base, seed=seed) for seed in seeds]
    for config in configs:
        _validate(ctx, config)

    out.mkdir(parents=True, exist_ok=True)

    def save(curve: Curve) -> None:
        experiments.write_csv(curve, out / f"{curve.config.slug}.csv")

    if scheduler is None:
        curves, failures = _run_all(configs, jobs, progress, save)
    else:
        workers = jobs if scheduler == "local" and _given(ctx, "jobs") else None
        try:
            client = experiments.connect(scheduler, workers=workers)
        except (ImportError, ValueError, ConnectionError) as error:
            raise click.UsageError(f"--scheduler {scheduler}: {error}", ctx) from None
        with client:
            curves, failures = _run_many(configs, progress, save, client=client)
    stem = name if preset is None else f"{name}-{preset}"
    if curves:
        plot = experiments.plot_curves(curves, out / f"{stem}.png", title=_title(name, configs))
        summary = experiments.write_summary(curves, out / f"{stem}-summary.csv")
        click.echo(experiments.format_summary(curves))
        click.echo(f"{len(curves)} run CSV(s), {summary.name} and {plot.name} written to {out}")
    if failures:
        lines = "".join(f"\n  {failure}" for failure in failures)
        raise click.ClickException(
            f"{len(failures)} of {len(configs)} run(s) failed (the others finished):{lines}"
        )


def _given(ctx: click.Context, key: str) -> bool:
    source = ctx.get_parameter_source(key)
    return source is not None and source not in (
        click.core.ParameterSource.DEFAULT,
        click.core.ParameterSource.DEFAULT_MAP,
    )


def _validate(ctx: click.Context, config: RunConfig) -> None:
    """Builds the learner once so that a bad combination fails before anything runs."""
    if config.algorithm.startswith("tbptt") and config.truncation is None:
        raise click.UsageError(f"--algorithm {config.algorithm} needs --truncation T.", ctx)
    try:
        experiments.make_learner(config)
    except (ValueError, TypeError) as error:
        raise click.UsageError(str(error), ctx) from None


def _title(name: str, configs: Sequence[RunConfig]) -> str:
    data = configs[0].data
    if name == "influence":
        return f"Influence balancing, {data['n']} units, {data['n_minus']} minus"
    if name == "brackets":
        return f"Distant brackets ({data['s']}, {data['k']}, {data['a']})"
    if name == "anbn":
        return f"aⁿbⁿ({data['k']}, {data['l']})"
    return f"Text: {Path(str(data['path'])).name}"


def _run_all(
    configs: Sequence[RunConfig], jobs: int, show_progress: bool, finished: Callable[[Curve], None]
) -> tuple[list[Curve], list[RunFailure]]:
    """Runs every configuration, in ``jobs`` processes if more than one; ``finished`` is
    called on each curve as soon as its run ends (so a long study keeps what it has). A run
    that raises is reported by name and the others go on."""
    from tqdm import tqdm

    if jobs > 1 and len(configs) > 1:
        return _run_many(configs, show_progress, finished, jobs=jobs)
    curves, failures = [], []
    for config in configs:
        with tqdm(
            total=config.steps,
            desc=config.label,
            unit="step",
            unit_scale=True,
            disable=not show_progress,
            dynamic_ncols=True,
        ) as bar:

            def report(count: int, chunk_loss: float, cumulative: float) -> None:
                bar.set_postfix_str(
                    f"loss {chunk_loss:.4g}, cumulative {cumulative:.4g}", refresh=False
                )
                bar.update(count)

            try:
                curve = experiments.run(config, report)
            except Exception as error:  # reported by name, the other runs go on
                failures.append(RunFailure(config, f"{type(error).__name__}: {error}"))
                curve = None
        if curve is None:
            _report_finished(failures[-1], tqdm.write if show_progress else None)
            continue
        curves.append(curve)
        finished(curve)
        _report_finished(curve, tqdm.write if show_progress else None)
    return curves, failures


def _run_many(
    configs: Sequence[RunConfig],
    show_progress: bool,
    finished: Callable[[Curve], None],
    *,
    jobs: int = 1,
    client: Any = None,
) -> tuple[list[Curve], list[RunFailure]]:
    """Runs in processes or on a Dask cluster with :func:`experiments.run_many`; the bar
    counts finished runs."""
    from tqdm import tqdm

    with tqdm(total=len(configs), desc="runs", unit="run", disable=not show_progress) as bar:

        def settle(result: Curve | RunFailure) -> None:
            if isinstance(result, Curve):
                finished(result)
            _report_finished(result, tqdm.write if show_progress else None)
            bar.update(1)

        try:
            return experiments.run_many(configs, jobs=jobs, client=client, finished=settle), []
        except experiments.RunsFailed as error:
            return error.curves, error.failures


def _report_finished(curve: Curve | RunFailure, write: Callable[[str], None] | None) -> None:
    if write is None:
        return
    if isinstance(curve, RunFailure):
        write(f"FAILED {curve}")
        return
    theta = "" if curve.final_theta is None else f", θ {curve.final_theta:.4g}"
    write(
        f"{curve.config.label} seed {curve.config.seed}: {curve.steps_done} steps, "
        f"cumulative {curve.final_cumulative_loss:.4g}, recent {curve.recent_loss:.4g} "
        f"{curve.unit}{theta}, {curve.status}, {curve.wall_seconds:.1f} s"
    )
