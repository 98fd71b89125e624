"""A long-range task truncated BPTT cannot learn: delayed recall, learned online.

The stream is `uoro.datasets.delayed_recall` (8 symbols, delay 100, jitter 20 by default):
the symbol to remember arrives as a *marked* token (its own id, distinct from the same
symbol shown as a distractor), and 100 to 120 steps later a QUERY's target is that
symbol; every other target is a blank class, predictable without memory. Because the
mark is in the token, even a cell whose gates read only the current input (minGRU,
minLSTM, IndRNN) can tell the symbol to store from the distractors. The only gradient
that teaches a network to store it comes from the query's loss at least `delay` steps
later, beyond the window of truncated BPTT with T = 16 or 64, within reach of exact
online gradients (RTRL; exact at O(|θ|) cost on the element-wise cells), of unbiased
estimates of them (UORO) and, for a stack of two element-wise layers, of the layer-wise
rule (`algorithm="layerwise"`: each layer's sensitivity to its own parameters exact, the
error reaching the lower layer through the current step only, so biased: what the lower
layer's parameters do to the upper layer's memory is dropped).

Slow start. With the `Learner`'s default initialization (uniform ±1/√n) a minGRU's
update gate is z ≈ 0.5 on every input, so a write survives ~0.5^100 ≈ 1e-30 of itself
after 100 steps, and even the exact gradient of the query's loss with respect to what
happened at the marked step is ~0: nothing is learned. Element-wise recurrences are
usually started slow (LRU draws its decays near 1; an LSTM gets a forget-gate bias).
Every configuration here starts with the same leak, about σ(-4) ≈ 1.8 % of its
memory per step (so ~16 % of a write survives 100 steps); `SLOW_INIT` sets, after
constructing the `Learner` (the other parameters keep their default draws):

  - minGRU, h' = (1-z)⊙h + z⊙h̃ with z = σ(W_z x + b_z): the z bias (``bias[:n]``)
    -4, so z ≈ σ(-4) on every input until learning opens it where a write pays;
  - minLSTM, h' = (f⊙h + i⊙h̃)/(f+i): the f bias (``bias[:n]``) +4 and the i bias
    (``bias[n:2n]``) -4, so the write share i/(f+i) ≈ σ(-4), as minGRU's z;
  - GRU (PyTorch's convention h' = (1-z)⊙n + z⊙h): the update gate's input bias
    (``bias_ih[n:2n]``) +4 and its recurrent bias (``bias_hh[n:2n]``) 0, so z ≈ σ(4):
    the same leak;
  - IndRNN, h' = tanh(W x + b + w⊙h): the per-unit recurrent weight w (``weight_hh``)
    uniform on [1 - 2σ(-4), 1] ≈ [0.964, 1]: the same leak on average, spread over
    the units as LRU spreads its decays;
  - a stack (the 2-layer minGRU and minLSTM, `layers=2`): its cell's slow start in every
    layer, the same entries under each layer's PyTorch-style name (``bias_l0[:n]``,
    ``bias_l1[:n]``; see `stack_init`), so each layer leaks as the single cell does.

`--default-init` skips it (every configuration then starts from the default draws).
Each configuration (a dict of `uoro.Learner` options plus its "init", `CONFIGS` below:
GRU with UORO, SnAp-1 and truncated BPTT (T = 16, 64); minGRU, minLSTM and IndRNN with
RTRL; 2-layer minGRU and minLSTM stacks with the layer-wise rule) learns the same stream
online from scratch (cross-entropy, Adam with a constant learning rate, the gradient's
norm clipped, float32; the same settings for every configuration), and the table gives,
for each:

  - its mean loss over the last 10 % of the run (nats per step) and over the query steps
    of that stretch alone;
  - its query accuracy there: how often the most probable class at a QUERY is the
    remembered symbol, next to chance (1/symbols): a network without memory of the
    symbol, whatever it learned, recalls at chance;
  - µs per sample: the wall time of `learner.fit(xs, ys)` over the first 90 % of the
    run, fitted in chunks of 10,000 samples, divided by those samples. Over the last
    10 % each chunk is fitted up to each QUERY, whose step runs alone so that its
    prediction can be read, and that stretch is not timed.

The learning curves (in the results, `--json`, and drawn by `--plot FILE`): for each chunk,
the samples seen at its end, its mean loss over all steps and over its query steps alone;
the query loss falls below ln(symbols), the memoryless query loss, only as the network
learns to store the symbol. They are read from the losses `fit` and `step` return, after
the timer stops.

A configuration whose cell this build does not have (the `Learner` constructor's
unknown-cell ValueError) is skipped with a note; any other error stops the run.

    python benchmarks/bench_long_range.py [--samples N] [--quick] [--configs NAME ...]
                                          [--hidden H] [--lr LR] [--clip-norm C]
                                          [--default-init] [--seed S]
                                          [--symbols K] [--delay D] [--jitter J]
                                          [--no-progress] [--json FILE] [--plot FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

# NumPy's BLAS threads spin after each call and would share the cores with the learner.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import uoro  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step  # noqa: E402

# The slow start (see the module's docstring): every cell leaks about σ(-SLOW) of its
# memory per step at first. Each entry maps a parameter name, optionally with a slice
# of rows in units of the hidden size n, to a constant or to (low, high), independent
# uniform draws; see `initialize`.
SLOW = 4.0
LEAK = 1 / (1 + math.exp(SLOW))  # σ(-4) ≈ 0.018
SLOW_INIT: dict[str, dict] = {
    "gru": {"bias_ih[n:2n]": SLOW, "bias_hh[n:2n]": 0.0},  # update gate z ≈ σ(4): keep h
    "mingru": {"bias[:n]": -SLOW},  # update gate z ≈ σ(-4): keep h
    "minlstm": {"bias[:n]": SLOW, "bias[n:2n]": -SLOW},  # f ≈ σ(4), i ≈ σ(-4)
    "indrnn": {"weight_hh": (round(1 - 2 * LEAK, 3), 1.0)},  # w ≈ 0.982 on average
}


def stack_init(init: dict, layers: int) -> dict:
    """A single cell's `init` for every layer of a `layers`-layer stack of it: a stack
    names its cell's parameters with the layer's suffix, as PyTorch does, so
    ``{"bias[:n]": -4}`` becomes ``{"bias_l0[:n]": -4, "bias_l1[:n]": -4}`` for two
    layers (uniform draws stay independent per layer). One layer: `init` itself, a
    single cell's names having no suffix."""
    if layers == 1:
        return dict(init)
    stacked = {}
    for layer in range(layers):
        for key, value in init.items():
            name, bracket, rows = key.partition("[")
            stacked[f"{name}_l{layer}{bracket}{rows}"] = value
    return stacked


# Name -> `uoro.Learner` options (the cell and the gradient estimator are all that differ)
# plus "init", the parameters set after construction.
CONFIGS: dict[str, dict] = {
    "gru-uoro": {"cell": "gru", "algorithm": "uoro", "init": SLOW_INIT["gru"]},
    "gru-snap1": {"cell": "gru", "algorithm": "snap1", "init": SLOW_INIT["gru"]},
    "gru-tbptt16": {
        "cell": "gru",
        "algorithm": "tbptt",
        "truncation": 16,
        "init": SLOW_INIT["gru"],
    },
    "gru-tbptt64": {
        "cell": "gru",
        "algorithm": "tbptt",
        "truncation": 64,
        "init": SLOW_INIT["gru"],
    },
    "mingru-rtrl": {"cell": "mingru", "algorithm": "rtrl", "init": SLOW_INIT["mingru"]},
    "minlstm-rtrl": {"cell": "minlstm", "algorithm": "rtrl", "init": SLOW_INIT["minlstm"]},
    "indrnn-rtrl": {"cell": "indrnn", "algorithm": "rtrl", "init": SLOW_INIT["indrnn"]},
    "mingru2-layerwise": {
        "cell": "mingru",
        "layers": 2,
        "algorithm": "layerwise",
        "init": stack_init(SLOW_INIT["mingru"], 2),
    },
    "minlstm2-layerwise": {
        "cell": "minlstm",
        "layers": 2,
        "algorithm": "layerwise",
        "init": stack_init(SLOW_INIT["minlstm"], 2),
    },
}
TASK = {"symbols": 8, "delay": 100, "jitter": 20}
SAMPLES, QUICK_SAMPLES = 1_000_000, 20_000
LR, CLIP_NORM = 1e-3, 1.0  # Adam's η and the gradient's largest norm, for every configuration
CHUNK = 10_000  # samples per `fit` call: the stream is never held whole
TAIL = 0.1  # the share of the run, at its end, that the loss and accuracy are taken over
COLUMNS = (
    "configuration", "Learner options", "init", "parameters", "loss, last 10 % (nats/step)",
    "query loss, last 10 % (nats)", "query accuracy, last 10 %", "chance", "µs/sample",
)  # fmt: skip


def unknown_cell(error: ValueError, cell: object) -> bool:
    """Whether `error` is the Learner's refusal of a cell name it does not know."""
    message = str(error)
    return message.startswith("cell must be one of") and message.endswith(f"got {cell!r}")


def learner_for(
    options: dict, stream, hidden: int, lr: float, seed: int, clip_norm: float | None = None
) -> uoro.Learner:
    return uoro.Learner(
        input_size=stream.input_size,
        hidden_size=hidden,
        output_size=stream.output_size,
        loss="cross_entropy",
        optimizer="adam",
        lr=lr,
        lr_decay=0.0,
        clip_norm=clip_norm,
        dtype="float32",
        seed=seed,
        on_divergence="reset",  # a long run goes on; the resets are reported
        **options,
    )


_ROWS = re.compile(r"(?P<name>[\w.]+)(?:\[(?P<start>\d*n?):(?P<stop>\d*n?)\])?")


def _bound(text: str, hidden: int) -> int | None:
    """A slice bound in units of the hidden size: "" (open), "7", "n", "2n"."""
    if not text:
        return None
    if text.endswith("n"):
        return int(text[:-1] or 1) * hidden
    return int(text)


def initialize(learner: uoro.Learner, init: dict, hidden: int, seed: int) -> None:
    """Sets the parameters `init` names, the others kept; e.g. ``{"bias[:n]": -4.0}``
    sets the first `hidden` entries of ``bias``, ``{"weight_hh": (0.9, 1.0)}`` draws all
    of ``weight_hh`` uniformly from [0.9, 1.0) (a generator seeded with `seed`)."""
    params = learner.parameters()
    rng = np.random.default_rng(seed)
    for key, value in init.items():
        match = _ROWS.fullmatch(key)
        if match is None or match["name"] not in params:
            raise KeyError(f"init: {key!r} names no parameter of {sorted(params)}")
        rows = slice(_bound(match["start"] or "", hidden), _bound(match["stop"] or "", hidden))
        target = params[match["name"]][rows]
        if isinstance(value, (tuple, list)):
            low, high = value
            target[...] = rng.uniform(low, high, size=target.shape)
        else:
            target[...] = value
    learner.set_parameters(params)


def run_config(
    name: str,
    options: dict,
    *,
    samples: int,
    hidden: int,
    lr: float,
    seed: int,
    task: dict,
    clip_norm: float | None = None,
    default_init: bool = False,
    chunk: int = CHUNK,
    progress: bool = False,
) -> dict | None:
    """Learns `samples` of the task's stream online; None if this build lacks the cell.

    `options` are `uoro.Learner` options plus, optionally, "init" (see `initialize`),
    which `default_init` ignores. The result's "curve" has, per chunk of `chunk` samples
    (the head's and the tail's, in order): "samples" seen at its end, its mean "loss" over
    all steps, its mean "query_loss" over its query steps (NaN if it has none) and their
    number, "queries".
    """
    learner_options = {k: v for k, v in options.items() if k != "init"}
    init = {} if default_init else options.get("init", {})
    stream = uoro.datasets.delayed_recall(**task, seed=seed)
    try:
        learner = learner_for(learner_options, stream, hidden, lr, seed, clip_norm)
    except ValueError as error:
        if unknown_cell(error, options.get("cell")):
            return None
        raise
    if init:
        initialize(learner, init, hidden, seed)
    tail = min(samples, max(1, math.ceil(TAIL * samples)))
    head = samples - tail
    fit_seconds = tail_seconds = 0.0
    tail_losses: list[np.ndarray] = []
    query_losses: list[float] = []
    correct = 0
    curve: dict[str, list] = {"samples": [], "loss": [], "query_loss": [], "queries": []}
    seen = 0

    def record(losses: np.ndarray, query: np.ndarray) -> None:
        """One chunk's point of the curve: its losses, `query` those of its queries."""
        nonlocal seen
        seen += len(losses)
        curve["samples"].append(seen)
        curve["loss"].append(float(np.mean(losses)))
        curve["query_loss"].append(float(np.mean(query)) if len(query) else math.nan)
        curve["queries"].append(len(query))

    bar = _progress(name, samples, progress)
    try:
        for start in range(0, head, chunk):
            xs, ys = stream.take(min(chunk, head - start))
            began = time.perf_counter()
            losses = learner.fit(xs, ys)
            fit_seconds += time.perf_counter() - began
            record(losses, losses[stream.query_mask(xs)])  # after the timer: not timed
            bar.update(len(xs))
        for start in range(0, tail, chunk):
            xs, ys = stream.take(min(chunk, tail - start))
            pieces, queries_before = len(tail_losses), len(query_losses)
            began = time.perf_counter()
            done = 0
            for q in np.flatnonzero(stream.query_mask(xs)).tolist():
                if q > done:
                    tail_losses.append(learner.fit(xs[done:q], ys[done:q]))
                query_losses.append(float(learner.step(int(xs[q]), int(ys[q]))))
                correct += int(np.argmax(learner.prediction) == ys[q])
                done = q + 1
            if done < len(xs):
                tail_losses.append(learner.fit(xs[done:], ys[done:]))
            tail_seconds += time.perf_counter() - began
            query = np.array(query_losses[queries_before:])
            record(np.concatenate([*tail_losses[pieces:], query]), query)
            bar.update(len(xs))
    finally:
        bar.close()
    queries = len(query_losses)
    return {
        "name": name,
        "options": learner_options,
        "init": init,
        "cell": options.get("cell"),
        "hidden": hidden,
        "params": learner.n_params,
        "samples": samples,
        "timed_samples": head if head else tail,
        "loss_tail": float(np.concatenate([*tail_losses, np.array(query_losses)]).mean()),
        "query_loss_tail": float(np.mean(query_losses)) if queries else math.nan,
        "query_accuracy_tail": correct / queries if queries else math.nan,
        "queries_tail": queries,
        "chance": 1 / stream.symbols,
        "us_per_sample": (fit_seconds / head if head else tail_seconds / tail) * 1e6,
        "seconds": fit_seconds + tail_seconds,
        "resets": learner.resets,
        "skipped_steps": learner.skipped_steps,
        "curve": curve,
    }


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(name: str, total: int, show: bool):
    """A tqdm bar on stderr when asked for and tqdm is installed; else nothing."""
    if show:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=name, unit="sample", unit_scale=True, leave=False)
    return _NoBar()


def options_text(options: dict) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in options.items())


def init_text(init: dict) -> str:
    """E.g. ``bias[:n]=-4, weight_hh~U[0.964, 1]``; "default" for no init."""
    if not init:
        return "default"
    return ", ".join(
        f"{key}~U[{value[0]:g}, {value[1]:g}]"
        if isinstance(value, (tuple, list))
        else f"{key}={value:g}"
        for key, value in init.items()
    )


def table(rows: list[dict]) -> str:
    def number(value: float, digits: int) -> str:
        return "–" if math.isnan(value) else f"{value:.{digits}f}"

    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|---|" + "---:|" * (len(COLUMNS) - 3)]
    lines += [
        f"| {r['name']} | `{options_text(r['options'])}` | `{init_text(r['init'])}` "
        f"| {r['params']:,} "
        f"| {number(r['loss_tail'], 4)} | {number(r['query_loss_tail'], 3)} "
        f"| {number(r['query_accuracy_tail'], 3)} ({r['queries_tail']}) "
        f"| {r['chance']:.3f} | {r['us_per_sample']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines)


def plot(results: dict, path: str | Path) -> None:
    """The learning curves of `results` (what `main` returns): each configuration's query
    loss per chunk against the samples seen, over the memoryless query loss ln(symbols).
    The x axis is linear: the curves of a long-range task stay flat, then fall late. The y
    axis is logarithmic: the first chunks' query loss, while the network predicts blank
    everywhere, runs far above ln(symbols), and recall shows as a fall by decades below
    it (1, 0.1, 0.01 nats); a linear axis would flatten one or the other."""
    import matplotlib

    matplotlib.use("Agg")  # a file, no display
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    task, settings = results["task"], results["settings"]
    figure, ax = plt.subplots(figsize=(9, 5))
    for row in results["rows"]:
        curve = row["curve"]
        ax.plot(
            curve["samples"],
            curve["query_loss"],
            marker=".",
            markersize=4,
            label=f"{row['name']} (accuracy {row['query_accuracy_tail']:.2f})",
        )
    memoryless = math.log(task["symbols"])
    ax.axhline(
        memoryless, color="black", linestyle="--", linewidth=1,
        label=f"no memory: ln {task['symbols']} = {memoryless:.2f}",
    )  # fmt: skip
    ax.set_yscale("log")
    # Plain text (1e-02, 10, 6), not 10^-2 and 6×10^0; minor ticks labelled only when the
    # curves span a decade or so, as by default.
    ax.yaxis.set_major_formatter(ticker.LogFormatter())
    ax.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False))
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
    ax.set_xlabel("samples learned from")
    ax.set_ylabel(f"mean query loss per {settings['chunk']:,}-sample chunk (nats)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(
        title="query accuracy: last 10 %", loc="upper left", bbox_to_anchor=(1.01, 1),
        frameon=False,
    )  # fmt: skip
    clipping = f"clip {settings['clip_norm']:g}" if settings["clip_norm"] else "no clipping"
    start = "default init" if settings["default_init"] else f"slow start σ(-{SLOW:g})"
    ax.set_title(
        f"Delayed recall, {task['symbols']} symbols, delay {task['delay']} to "
        f"{task['delay'] + task['jitter']}, learned online\nhidden {settings['hidden']}, "
        f"Adam lr {settings['lr']:g}, {clipping}, {start}, float32, seed {settings['seed']}"
    )
    figure.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(figure)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--samples", type=int, help=f"samples per configuration (default {SAMPLES:,})"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SAMPLES:,} samples (a smoke run)"
    )
    parser.add_argument(
        "--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), metavar="NAME",
        help=f"configurations to run (default all: {', '.join(CONFIGS)})",
    )  # fmt: skip
    parser.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    parser.add_argument("--lr", type=float, default=LR, help=f"Adam's η (default {LR:g})")
    parser.add_argument(
        "--clip-norm", type=float, default=CLIP_NORM,
        help=f"largest gradient norm; 0: no clipping (default {CLIP_NORM:g})",
    )  # fmt: skip
    parser.add_argument(
        "--default-init", action="store_true",
        help="the Learner's default initialization, no configuration's init",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="stream and learner seed")
    parser.add_argument("--symbols", type=int, default=TASK["symbols"])
    parser.add_argument("--delay", type=int, default=TASK["delay"])
    parser.add_argument("--jitter", type=int, default=TASK["jitter"])
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", help="also write the results and the machine here")
    parser.add_argument(
        "--plot", metavar="FILE", help="also draw the learning curves (query loss) in this PNG"
    )
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = QUICK_SAMPLES if args.quick else SAMPLES
    if args.samples < 1:
        parser.error(f"--samples must be >= 1, got {args.samples}")
    if not args.clip_norm >= 0:
        parser.error(f"--clip-norm must be >= 0, got {args.clip_norm}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    task = {"symbols": args.symbols, "delay": args.delay, "jitter": args.jitter}
    stream = uoro.datasets.delayed_recall(**task)  # checks the task's arguments up front
    rows, skipped = [], []
    for name in dict.fromkeys(args.configs):
        options = CONFIGS[name]
        row = run_config(
            name,
            options,
            samples=args.samples,
            hidden=args.hidden,
            lr=args.lr,
            seed=args.seed,
            task=task,
            clip_norm=args.clip_norm or None,
            default_init=args.default_init,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
        if row is None:
            skipped.append(name)
            print(f"  {name}: skipped, this build has no cell {options.get('cell')!r}", flush=True)
            continue
        rows.append(row)
        print(
            f"  {name}: query accuracy {row['query_accuracy_tail']:.3f}, "
            f"{row['us_per_sample']:.2f} µs/sample, {row['seconds']:.0f} s",
            flush=True,
        )
    m = bench_step.machine()
    clipping = f"gradient norm clipped at {args.clip_norm:g}" if args.clip_norm else "no clipping"
    start = "default initialization" if args.default_init else f"slow start (leak σ(-{SLOW:g}))"
    print(
        f"\n{m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}, "
        f"core variant {m['variant']}; {stream!r}, {args.samples:,} samples per "
        f"configuration, hidden {args.hidden}, Adam lr {args.lr:g} (constant), {clipping}, "
        f"{start}, float32, seed {args.seed}\n"
    )
    print(table(rows))
    print(
        f"\nQuery accuracy: over the queries of the last 10 % (their number in brackets). "
        f"Without memory of the symbol: {stream.memoryless_loss():.4f} nats/step, "
        f"{math.log(stream.symbols):.3f} nats per query, accuracy {1 / stream.symbols:.3f}; "
        "perfect recall: 0 nats."
    )
    if skipped:
        print(f"Skipped (cell not in this build): {', '.join(skipped)}.")
    resets = [f"{r['name']}: {r['resets']}" for r in rows if r["resets"]]
    if resets:
        print("Estimator resets after a diverging step: " + "; ".join(resets) + ".")
    results = {
        "machine": m,
        "task": task,
        "settings": {
            "samples": args.samples,
            "hidden": args.hidden,
            "lr": args.lr,
            "clip_norm": args.clip_norm or None,
            "default_init": args.default_init,
            "seed": args.seed,
            "chunk": CHUNK,
            "tail": TAIL,
        },
        "rows": rows,
        "skipped": skipped,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.plot:
        plot(results, args.plot)
    return results


if __name__ == "__main__":
    main()
