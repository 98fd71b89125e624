"""Gradient quality against cost: how close each online estimator's per-step gradient is to
exact RTRL's, and what it costs per sample, side by side.

For each task (aⁿbⁿ(1, 32), distant brackets (1, 5, 10)), network and hidden size, a plain
UORO learner (float64, Adam, the paper's η and α) learns from the stream; its parameters and
recurrent state are taken at three points: untrained, halfway through and at the end. At
each point every estimator runs frozen (lr = 0) from those parameters and that state over
the same next samples, in lockstep with exact RTRL, and its gradient of the cell's
parameters (the readout's is exact for all) is compared with RTRL's, ignoring a burn-in
during which every estimator's memory (and RTRL's Jacobian) fills up from empty:

  - `cosine`:    mean over steps of cos(g, g_exact);
  - `rel_error`: mean over steps of ‖g − g_exact‖ / ‖g_exact‖ (and `rel_error_median`);
  - on a stack, `cosine_l0`, `cosine_l1`, ...: the cosine restricted to one layer's cell
    parameters (those named `..._l0`, `..._l1`, ...);

memory-T UORO at its windows' ends, against the sum of RTRL's gradients over the window.
At a few probe steps, also the cosine of UORO's mean of K independent estimates (K seeds),
which tends to 1 as K grows since UORO is unbiased (slowly where the exact gradient is small
against UORO's noise, as on a trained network), beside the K single estimates' mean cosine;
for the deterministic estimators (SnAp-1, the layer-wise rule, truncated BPTT) the mean is
the estimate: their bias stays.

Networks: a built-in cell's name (`gru`, `lstm`, `rnn`, and the element-wise `mingru`,
`minlstm`, `indrnn`), or `cell:L` for a stack of L layers of it (`mingru:2`), each layer
`--hidden` units wide. Every estimator that applies runs: SnAp-1 on one layer (it is
refused on stacks), the layer-wise rule on stacks (on one layer it is SnAp-1). The
reference is exact RTRL: on one element-wise layer it costs O(|θ|) per step, about what
UORO costs; on a stack it keeps the full Jacobian, O(S²·|θ|) with S = layers × hidden, so
keep stacks moderate (32 or 64 units). The element-wise cells (alone or stacked) start
slow, as in bench_long_range.py and as they are used: minGRU's z bias −4, minLSTM's f/i
biases ±4, IndRNN's recurrent weights in [0.964, 1] (in every layer of a stack); with the
default init they forget about half their state per step, the exact gradient is nearly the
one-step one and the comparison says little. GRU, LSTM and RNN keep the default init.

Cost: µs per sample inside `fit` (float32, Adam: what a user runs) and its ratio to the
forward-only pass of the same learner, timed back to back as in bench_step.py (its 13-symbol
random stream, so once per network and size, not per task).

Writes DIR/gradient_quality.csv (one row per task, network, hidden, point and estimator) and
DIR/gradient_quality.png (cosine against µs per sample), and prints markdown tables.

    python benchmarks/gradient_quality.py [--out DIR] [--quick] [--cells gru lstm mingru:2 ...]
                                          [--hidden 32 64] [--steps N]
                                          [--estimators uoro kf_rtrl "ok r=2" ...]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

# NumPy's BLAS threads spin after each call and would share the cores with the learner.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import uoro  # noqa: E402
from uoro import experiments  # noqa: E402
from uoro.learner import ELEMENTWISE_CELLS, MAX_LAYERS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_long_range  # noqa: E402
import bench_step  # noqa: E402

REFERENCE = "rtrl"
ESTIMATORS: dict[str, dict] = {
    REFERENCE: {"algorithm": "rtrl"},
    "uoro": {"algorithm": "uoro"},
    "uoro r=2": {"algorithm": "uoro", "rank": 2},
    "uoro r=4": {"algorithm": "uoro", "rank": 4},
    "uoro r=16": {"algorithm": "uoro", "rank": 16},
    "uoro memory=4": {"algorithm": "uoro", "memory": 4},
    "uoro memory=16": {"algorithm": "uoro", "memory": 16},
    "snap1": {"algorithm": "snap1"},
    "layerwise": {"algorithm": "layerwise"},
    "tbptt T=1": {"algorithm": "tbptt", "truncation": 1},
    "tbptt T=4": {"algorithm": "tbptt", "truncation": 4},
    "tbptt T=16": {"algorithm": "tbptt", "truncation": 16},
    "kf_rtrl": {"algorithm": "kf_rtrl"},
    "ok r=1": {"algorithm": "ok", "rank": 1},
    "ok r=2": {"algorithm": "ok", "rank": 2},
    "ok r=4": {"algorithm": "ok", "rank": 4},
}
TASKS = {
    "anbn": (lambda: uoro.datasets.anbn(**experiments.ANBN), experiments.ANBN_LR_DECAY),
    "brackets": (
        lambda: uoro.datasets.distant_brackets(**experiments.BRACKETS),
        experiments.BRACKETS_LR_DECAY,
    ),
}
POINTS = ("start", "middle", "end")
STOCHASTIC = ("uoro", "kf_rtrl", "ok")  # random estimates (the others are deterministic)
CELLS = ("rnn", "gru", "lstm", *ELEMENTWISE_CELLS)
LAYER_COSINES = tuple(f"cosine_l{layer}" for layer in range(MAX_LAYERS))
COLUMNS = (
    "task", "cell", "layers", "hidden", "point", "samples_seen", "loss", "estimator",
    "cosine", *LAYER_COSINES, "rel_error", "rel_error_median", "compared", "probe_cosine",
    "probe_cosine_mean_of_k", "us_per_sample", "forward_us", "over_forward",
)  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    steps: int = 200_000  # samples the UORO learner learns from (the end point)
    chunk: int = 128  # steps per `gradients` call; a multiple of every window
    burn_in: int = 256  # steps run before comparing (a multiple of `chunk`)
    compared: int = 2048  # steps compared after the burn-in (a multiple of `chunk`)
    probes: int = 4  # steps at which UORO's mean of K estimates is taken ...
    probe_gap: int = 64  # ... this far apart, from the end of the burn-in
    seeds: int = 100  # K
    timing_budget_s: float = 0.1  # per timed pass; see bench_step.measure
    timing_repeats: int = 3

    def probe_steps(self) -> np.ndarray:
        return self.burn_in + self.probe_gap * np.arange(self.probes)


QUICK = Sizes(
    steps=4_000, chunk=16, burn_in=64, compared=256, probe_gap=16, seeds=20, timing_budget_s=0.01
)


def network_spec(spec: str) -> tuple[str, int]:
    """A cell and its number of layers: "gru" -> ("gru", 1), "mingru:2" -> ("mingru", 2)."""
    cell, colon, layers = spec.partition(":")
    depth = int(layers) if layers.isdigit() else 0 if colon else 1
    if cell not in CELLS or not 1 <= depth <= MAX_LAYERS:
        raise ValueError(
            f"{spec!r}: expected a cell ({', '.join(CELLS)}), optionally ':L' layers "
            f"(1 to {MAX_LAYERS})"
        )
    return cell, depth


def network_name(cell: str, layers: int) -> str:
    return cell if layers == 1 else f"{cell}:{layers}"


def applicable(estimators: dict[str, dict], layers: int) -> dict[str, dict]:
    """The estimators that apply to a network of `layers` layers: SnAp-1 is refused on a
    stack, and on one layer the layer-wise rule is SnAp-1, so each runs where the other
    does not."""
    left_out = "snap1" if layers > 1 else "layerwise"
    return {name: o for name, o in estimators.items() if o["algorithm"] != left_out}


def slow_start(learner: uoro.Learner, cell: str, layers: int, hidden: int) -> None:
    """The element-wise cells' slow start (bench_long_range.SLOW_INIT), in every layer of a
    stack (its parameters are named `bias_l0`, ...); other cells keep their init."""
    if cell not in ELEMENTWISE_CELLS:
        return
    init = bench_long_range.SLOW_INIT[cell]
    if layers > 1:  # "bias[:n]" -> "bias_l0[:n]", "bias_l1[:n]", ...
        init = {
            f"{name}_l{layer}{bracket}{rows}": value
            for layer in range(layers)
            for (name, bracket, rows), value in ((k.partition("["), v) for k, v in init.items())
        }
    bench_long_range.initialize(learner, init, hidden, seed=0)


def layer_positions(network: dict) -> list[np.ndarray]:
    """Per layer of a stack, the positions in θ of its cell parameters (named `..._l0`,
    `..._l1`, ...); none for a single layer."""
    if network.get("layers", 1) == 1:
        return []
    learner = uoro.Learner(**network, dtype="float64")
    learner.theta = np.arange(learner.n_params, dtype=np.float64)
    named = learner.parameters()
    return [
        np.sort(
            np.concatenate([v.ravel() for k, v in named.items() if k.endswith(f"_l{layer}")])
        ).astype(np.int64)
        for layer in range(network["layers"])
    ]


def frozen(network: dict, options: dict, theta: np.ndarray, state: np.ndarray, seed: int = 0):
    """A float64 learner at `theta` and `state` that never moves its parameters."""
    learner = uoro.Learner(
        **network, **options, optimizer="sgd", lr=0.0, dtype="float64", seed=seed
    )
    learner.theta = theta
    learner.state = state
    return learner


def window(options: dict) -> int:
    """Steps per gradient: memory-T UORO and chunked tBPTT give one per window."""
    if options["algorithm"] == "tbptt_chunk":
        return options["truncation"]
    return options.get("memory", 1)


def agreement(estimate: np.ndarray, exact: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the cosine of the estimate with the exact gradient, and its relative error."""
    exact_norm = np.linalg.norm(exact, axis=1)
    # An all-zero estimate has no direction: cosine 0 rather than 0/0.
    estimate_norm = np.maximum(np.linalg.norm(estimate, axis=1), np.finfo(float).tiny)
    cosine = np.einsum("ij,ij->i", estimate, exact) / (estimate_norm * exact_norm)
    return cosine, np.linalg.norm(estimate - exact, axis=1) / exact_norm


def cell_gradients(learner: uoro.Learner, xs: np.ndarray, ys: np.ndarray, chunk: int):
    """Yields (first step, losses, cell gradients) chunk by chunk: a whole run's gradients
    of an LSTM-64 would take gigabytes."""
    n_cell = learner._core.n_cell_params
    for start in range(0, len(xs), chunk):
        losses, grads = learner.gradients(xs[start : start + chunk], ys[start : start + chunk])
        yield start, losses, grads[:, :n_cell]


def compare_at_point(
    network: dict,
    theta: np.ndarray,
    state: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    sizes: Sizes,
    estimators: dict[str, dict] = ESTIMATORS,
) -> tuple[dict[str, dict], float]:
    """Every estimator against exact RTRL over xs, ys from (theta, state); returns per
    estimator its cosine (on a stack, also per layer), relative error, number of gradients
    compared and probe cosines, and the mean loss over the compared steps. The reference
    itself is run once: its own row checks the comparison (cosine 1, error 0)."""
    for name, options in estimators.items():
        if sizes.chunk % window(options) or len(xs) % window(options):
            raise ValueError(f"{name}: the chunks and the run must hold whole windows")
    runners = {
        name: frozen(network, options, theta, state)
        for name, options in estimators.items()
        if name != REFERENCE
    }
    layers = layer_positions(network)
    cosines: dict[str, list] = {name: [] for name in estimators}
    layer_cosines: dict[str, list] = {name: [[] for _ in layers] for name in estimators}
    errors: dict[str, list] = {name: [] for name in estimators}
    probe_cosines: dict[str, list] = {name: [] for name in estimators}
    probes = sizes.probe_steps()
    probe_exact, compared_losses = [], []
    exact_runner = frozen(network, estimators[REFERENCE], theta, state)
    for start, losses, exact in cell_gradients(exact_runner, xs, ys, sizes.chunk):
        steps = start + np.arange(len(exact))
        compared = steps >= sizes.burn_in
        at_probe = np.isin(steps, probes)
        compared_losses.append(losses[compared])
        probe_exact.append(exact[at_probe])
        for name, options in estimators.items():
            if name == REFERENCE:
                estimate = exact
            else:
                estimate = runners[name].gradients(xs[steps], ys[steps])[1][:, : exact.shape[1]]
            t = window(options)
            if t > 1:  # windows are counted from the point, so a chunk holds whole ones
                estimate = estimate[t - 1 :: t]
                target = exact.reshape(-1, t, exact.shape[1]).sum(axis=1)
                keep = compared[t - 1 :: t]
            else:
                target, keep = exact, compared
            cosine, error = agreement(estimate, target)
            if t == 1:
                probe_cosines[name].append(cosine[at_probe])
            cosines[name].append(cosine[keep])
            errors[name].append(error[keep])
            for layer, positions in enumerate(layers):
                in_layer = agreement(estimate[:, positions], target[:, positions])[0]
                layer_cosines[name][layer].append(in_layer[keep])
    results = {
        name: {
            "cosine": float(np.mean(np.concatenate(cosines[name]))),
            **{
                column: float(np.mean(np.concatenate(layer_cosines[name][layer])))
                if layer < len(layers)
                else float("nan")
                for layer, column in enumerate(LAYER_COSINES)
            },
            "rel_error": float(np.mean(np.concatenate(errors[name]))),
            # A step whose exact gradient nearly vanishes can dominate the mean.
            "rel_error_median": float(np.median(np.concatenate(errors[name]))),
            "compared": int(sum(c.size for c in cosines[name])),
            "probe_cosine": float(np.mean(np.concatenate(probe_cosines[name])))
            if probe_cosines[name]
            else float("nan"),
            "probe_cosine_mean_of_k": float("nan"),
        }
        for name in estimators
    }
    # The mean of K copies of a deterministic estimate is that estimate.
    for name, options in estimators.items():
        if options["algorithm"] not in STOCHASTIC:
            results[name]["probe_cosine_mean_of_k"] = results[name]["probe_cosine"]
    if "uoro" in estimators:
        single, mean = uoro_mean_of_k(
            network, estimators["uoro"], theta, state, xs, ys, np.concatenate(probe_exact), sizes
        )
        results["uoro"].update(probe_cosine=single, probe_cosine_mean_of_k=mean)
    return results, float(np.mean(np.concatenate(compared_losses)))


def uoro_mean_of_k(
    network: dict,
    options: dict,
    theta: np.ndarray,
    state: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    probe_exact: np.ndarray,
    sizes: Sizes,
) -> tuple[float, float]:
    """Plain UORO at the probe steps, K seeds: the mean cosine of one estimate with the
    exact gradient, and the cosine of the K estimates' mean."""
    probes = sizes.probe_steps()
    end = probes[-1] + 1  # no need to run past the last probe
    total = np.zeros_like(probe_exact)
    single = []
    for seed in range(1, sizes.seeds + 1):
        runner = frozen(network, options, theta, state, seed=seed)
        estimate = np.concatenate(
            [
                grads[np.isin(start + np.arange(len(grads)), probes)]
                for start, _, grads in cell_gradients(runner, xs[:end], ys[:end], sizes.chunk)
            ]
        )
        single.append(agreement(estimate, probe_exact)[0])
        total += estimate
    mean = agreement(total / sizes.seeds, probe_exact)[0]
    return float(np.mean(single)), float(np.mean(mean))


def study(
    task: str,
    cell: str,
    hidden: int,
    sizes: Sizes,
    estimators: dict[str, dict] = ESTIMATORS,
    layers: int = 1,
) -> list[dict]:
    """Trains plain UORO on the task's stream and compares the estimators that apply at
    each point; one row per point and estimator (without the timing columns)."""
    make_stream, lr_decay = TASKS[task]
    stream = make_stream()
    network = {"cell": cell, "input_size": len(stream.vocabulary), "hidden_size": hidden}
    if layers > 1:
        network["layers"] = layers
    estimators = applicable(estimators, layers)
    name = f"{network_name(cell, layers)}-{hidden}"
    trainer = uoro.Learner(
        **network, dtype="float64", lr=1e-3, lr_decay=lr_decay, on_divergence="reset"
    )
    slow_start(trainer, cell, layers, hidden)
    rows = []
    for point, target in zip(POINTS, (0, sizes.steps // 2, sizes.steps)):
        while trainer.samples_seen < target:
            trainer.fit(*stream.pairs(min(10_000, target - trainer.samples_seen)))
        began = time.perf_counter()
        theta, state, samples_seen = trainer.theta, trainer.state, trainer.samples_seen
        xs, ys = stream.pairs(sizes.burn_in + sizes.compared)
        results, loss = compare_at_point(network, theta, state, xs, ys, sizes, estimators)
        trainer.fit(xs, ys)  # the compared samples are the trainer's next ones too
        rows += [
            {"task": task, "cell": cell, "layers": layers, "hidden": hidden, "point": point}
            | {"samples_seen": samples_seen, "loss": loss, "estimator": estimator, **result}
            for estimator, result in results.items()
        ]
        print(
            f"  {task} {name} {point} ({samples_seen:,} samples, loss {loss:.3f}): "
            f"uoro cosine {results.get('uoro', {}).get('cosine', float('nan')):.3f}, "
            f"{time.perf_counter() - began:.0f} s",
            flush=True,
        )
    if trainer.resets:
        print(f"  {task} {name}: the trainer reset {trainer.resets} times", flush=True)
    return rows


def timings(
    cell: str, hidden: int, sizes: Sizes, estimators: dict[str, dict], layers: int = 1
) -> dict:
    """Per estimator that applies: µs per sample in `fit` and forward-only, and their
    ratio."""
    result = {}
    for name, options in applicable(estimators, layers).items():
        row = bench_step.measure(
            cell,
            hidden,
            "float32",
            {**options, "layers": layers},
            sizes.timing_budget_s,
            sizes.timing_repeats,
            python_loop=False,
        )
        result[name] = {
            "us_per_sample": row["fit_us"],
            "forward_us": row["forward_us"],
            "over_forward": row["fit_over_forward"],
        }
    return result


def run(
    tasks: list[str],
    networks: list[str],
    hidden_sizes: list[int],
    sizes: Sizes,
    estimators: dict[str, dict] = ESTIMATORS,
) -> list[dict]:
    """Every row of the study, timing columns included; `networks` as `--cells` takes them
    ("gru", "mingru:2")."""
    rows = []
    for cell, layers in map(network_spec, networks):
        for hidden in hidden_sizes:
            # Once per network and size: the cost does not depend on the task or the point.
            timing = timings(cell, hidden, sizes, estimators, layers)
            print(f"  {network_name(cell, layers)}-{hidden} timed", flush=True)
            for task in tasks:
                rows += [
                    row | timing[row["estimator"]]
                    for row in study(task, cell, hidden, sizes, estimators, layers)
                ]
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


QUALITY = (
    "cosine", *LAYER_COSINES, "rel_error", "rel_error_median", "probe_cosine",
    "probe_cosine_mean_of_k",
)  # fmt: skip


def averaged(rows: list[dict], by: tuple[str, ...]) -> dict[tuple, dict]:
    """Per value of the `by` columns (`network` is the cell with its layers, "mingru:2"),
    in first-seen order: the quality columns averaged over the other rows (tasks,
    points), and the timing columns (the same in all)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        row = row | {"network": network_name(row["cell"], row["layers"])}
        groups.setdefault(tuple(row[column] for column in by), []).append(row)
    return {
        key: {
            **{column: float(np.mean([r[column] for r in group])) for column in QUALITY},
            **{c: group[0][c] for c in ("us_per_sample", "forward_us", "over_forward")},
        }
        for key, group in groups.items()
    }


def markdown_tables(rows: list[dict], seeds: int) -> str:
    means = averaged(rows, by=("network", "hidden", "estimator"))
    lines = [
        "| network | hidden | estimator | cosine with exact | relative error, mean (median) "
        "| µs/sample in `fit` (float32) | × forward |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    configs = list(dict.fromkeys((network, hidden) for network, hidden, _ in means))
    for network, hidden in configs:
        forward = np.median(
            [m["forward_us"] for (n, h, _), m in means.items() if (n, h) == (network, hidden)]
        )
        lines.append(f"| {network} | {hidden} | forward only | – | – | {forward:.2f} | 1× |")
        lines += [
            f"| {network} | {hidden} | {name} | {m['cosine']:.3f} "
            f"| {m['rel_error']:.3g} ({m['rel_error_median']:.3g}) "
            f"| {m['us_per_sample']:.1f} | {m['over_forward']:.1f}× |"
            for (n, h, name), m in means.items()
            if (n, h) == (network, hidden)
        ]
    # Per layer of a stack: the layer-wise rule is exact for an element-wise top layer only.
    depth = max(r["layers"] for r in rows)
    if depth > 1:
        lines += [
            "",
            "Per layer of the stacks: the cosine of each layer's cell parameters' gradient "
            "with the exact one (mean over tasks and points):",
            "",
            "| network | hidden | estimator | "
            + " | ".join(f"layer {layer}" for layer in range(depth))
            + " |",
            "|---|---:|---|" + "---:|" * depth,
        ]
        lines += [
            f"| {n} | {h} | {name} | "
            + " | ".join(
                f"{m[column]:.3f}" if np.isfinite(m[column]) else "–"
                for column in LAYER_COSINES[:depth]
            )
            + " |"
            for (n, h, name), m in means.items()
            if np.isfinite(m[LAYER_COSINES[0]])
        ]
    # Per point: training shrinks the exact gradient, not UORO's noise.
    at_points = averaged(rows, by=("network", "hidden", "point", "estimator"))
    lines += [
        "",
        f"Cosine with the exact gradient at the probe steps (mean over tasks): one UORO "
        f"estimate, the mean of {seeds} (independent seeds), and SnAp-1's (the layer-wise "
        "rule's on stacks; deterministic):",
        "",
        f"| network | hidden | point | UORO, one | UORO, mean of {seeds} | SnAp-1 / layer-wise |",
        "|---|---:|---|---:|---:|---:|",
    ]
    points = list(dict.fromkeys(point for _, _, point, _ in at_points))
    for network, hidden in configs:
        for point in points:
            plain = at_points.get((network, hidden, point, "uoro"))
            snap = at_points.get((network, hidden, point, "snap1")) or at_points.get(
                (network, hidden, point, "layerwise")
            )
            if plain and snap:
                lines.append(
                    f"| {network} | {hidden} | {point} | {plain['probe_cosine']:.3f} "
                    f"| {plain['probe_cosine_mean_of_k']:.3f} | {snap['probe_cosine']:.3f} |"
                )
    return "\n".join(lines)


def family_colour(name: str, palette) -> tuple:
    """UORO ranks in blues, memory-T UORO in purples, truncated BPTT in oranges, the
    Kronecker estimators in reds: one hue per family, darker for more work per step."""
    families = {
        "uoro": ("Blues", ["uoro", "uoro r=2", "uoro r=4", "uoro r=16"]),
        "memory": ("Purples", ["uoro memory=4", "uoro memory=16"]),
        "tbptt": ("Oranges", ["tbptt T=1", "tbptt T=4", "tbptt T=16"]),
        "kronecker": ("Reds", ["kf_rtrl", "ok r=1", "ok r=2", "ok r=4"]),
    }
    for colormap, members in families.values():
        if name in members:
            return palette[colormap](0.45 + 0.5 * members.index(name) / max(len(members) - 1, 1))
    return {"snap1": "tab:green", "layerwise": "tab:olive", REFERENCE: "black"}.get(
        name, "tab:gray"
    )


def plot(rows: list[dict], path: Path, per_row: int = 4) -> None:
    """One panel per task × network: cosine (mean over points, bar spanning them) against
    µs per sample; a marker per hidden size. A row of panels per task, holding up to
    `per_row` networks (more networks: more rows of them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = [r | {"network": network_name(r["cell"], r["layers"])} for r in rows]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    networks = list(dict.fromkeys(r["network"] for r in rows))
    hidden_sizes = list(dict.fromkeys(r["hidden"] for r in rows))
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    markers = dict(zip(hidden_sizes, "osD^v"))
    columns = min(len(networks), per_row)
    blocks = -(-len(networks) // columns)
    figure, axes = plt.subplots(
        blocks * len(tasks),
        columns,
        figsize=(5.5 * columns, 4.2 * blocks * len(tasks)),
        squeeze=False,
        sharey=True,
    )
    for ax in axes.flat[len(networks) * len(tasks) :]:
        ax.set_visible(False)
    for k, network in enumerate(networks):
        block, j = divmod(k, columns)
        for i, task in enumerate(tasks):
            ax = axes[block * len(tasks) + i][j]
            for hidden in hidden_sizes:
                for name in estimators:
                    group = [
                        r
                        for r in rows
                        if (r["task"], r["network"], r["hidden"], r["estimator"])
                        == (task, network, hidden, name)
                    ]
                    if not group:
                        continue
                    cosines = np.array([r["cosine"] for r in group])
                    middle = cosines.mean()
                    ax.errorbar(
                        group[0]["us_per_sample"],
                        middle,
                        # Clipped: equal cosines can round to a mean just past them.
                        yerr=np.maximum([[middle - cosines.min()], [cosines.max() - middle]], 0),
                        fmt=markers[hidden],
                        color=family_colour(name, matplotlib.colormaps),
                        markersize=7,
                        capsize=2,
                        alpha=0.9,
                    )
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_title(f"{task}, {network}")
            ax.set_xlabel("µs per sample in fit (float32, Adam)")
            ax.grid(True, which="both", alpha=0.3)
            if j == 0:
                ax.set_ylabel("cosine with the exact gradient")
    handles = [
        plt.Line2D([], [], color=family_colour(n, matplotlib.colormaps), marker="o", ls="")
        for n in estimators
    ] + [plt.Line2D([], [], color="gray", marker=markers[h], ls="") for h in hidden_sizes]
    labels = estimators + [f"{h} units" for h in hidden_sizes]
    figure.legend(handles, labels, loc="center right", frameon=False)
    figure.suptitle(
        "Gradient of the cell against exact RTRL, float64: mean over the untrained, halfway "
        "and trained points, bar: their range"
    )
    figure.tight_layout(rect=(0, 0, 0.84, 1))
    figure.savefig(path, dpi=130)
    plt.close(figure)


def network_argument(spec: str) -> str:
    try:
        network_spec(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="results/gradient_quality", help="output directory")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument(
        "--cells",
        nargs="+",
        default=["gru", "lstm"],
        type=network_argument,
        metavar="CELL[:LAYERS]",
        help=f"networks: a cell ({', '.join(CELLS)}), or cell:L for a stack of L layers",
    )
    parser.add_argument("--hidden", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--steps", type=int, help="samples learned from before the end point")
    parser.add_argument(
        "--estimators",
        nargs="+",
        choices=list(ESTIMATORS),
        metavar="NAME",
        help=f"a subset of the estimators (the exact {REFERENCE!r} always runs): "
        + ", ".join(repr(name) for name in ESTIMATORS),
    )
    args = parser.parse_args()
    estimators = ESTIMATORS
    if args.estimators:
        estimators = {n: o for n, o in ESTIMATORS.items() if n == REFERENCE or n in args.estimators}
    sizes = QUICK if args.quick else Sizes()
    if args.steps is not None:
        sizes = replace(sizes, steps=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    rows = run(args.tasks, args.cells, args.hidden, sizes, estimators)
    write_csv(rows, out / "gradient_quality.csv")
    m = bench_step.machine()
    print(
        f"\n{m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}, core variant "
        f"{m['variant']}; quality in float64 over {sizes.compared:,} steps after a "
        f"{sizes.burn_in}-step burn-in, averaged over {len(args.tasks)} tasks × {len(POINTS)} "
        f"points (0, {sizes.steps // 2:,} and {sizes.steps:,} samples of UORO training); "
        f"time per sample best of {sizes.timing_repeats}, one thread, batch 1\n"
    )
    print(markdown_tables(rows, sizes.seeds))
    plot(rows, out / "gradient_quality.png")
    print(
        f"\nWrote {out / 'gradient_quality.csv'} and {out / 'gradient_quality.png'} "
        f"in {time.perf_counter() - began:.0f} s"
    )


if __name__ == "__main__":
    main()
