"""Time per learning step, next to the forward-only step of the same cell, in one run.

Per sample, for each configuration:
  - `fit`:     a learning step inside one chunked call;
  - `step`:    one `Learner.step(x, y)` call from Python, everything included
               (measured for plain UORO only);
  - `forward`: the forward-only step (cell + readout, no learning) inside a chunked
               call (`Learner.evaluate`): the floor a learning step is compared with.
and the heap memory one learner holds (`bytes_per_learner`, counted by the C allocator;
where it cannot be read, "–"). Every time is the best of several repeats, the three
measurements interleaved; `fit / forward` is the median over the repeats of the ratio
of a `fit` and the forward pass timed right after it, which a slow spell of a shared
machine spanning both cancels out of. That ratio is what to trust on a noisy machine.

Suites: `core` (UORO for every cell × hidden size × dtype), `algorithms` (every
estimator, float32: times and heap), `elementwise` (the element-wise cells' UORO beside
their exact RTRL, which costs O(|θ|) on them, and two-layer stacks with UORO and the
layer-wise rule; GRU as the reference point; float32), `scaling` (UORO early and late in
a long stream, truncated BPTT against its window), `reference` (the library against
hand-written UORO + Adam steps, compiled here with `-O3 -march=native`, for GRU-64,
LSTM-64, RNN-64 and GRU-256: for each cell the fastest one-stream step we could write,
`reference/<cell>_uoro_adam_fused.cpp`, and for the GRU also the straightforward one,
`reference/gru_uoro_adam.cpp`; then, for the GRU, where a step's time goes, the
library's C++ step and its parts each timed alone, `reference/step_parts.cpp`, beside
the fused reference's phases; needs a C++ compiler and Eigen's headers, e.g.
`pip install cmeel-eigen`), `latency` (the distribution of one
`Learner.step(x, y)` call's wall time, each call timed alone, beside `fit`'s per-sample
time on the same tokens in the same run: p50, p90, p99, p99.9 and the timer's own
cost). `--cells` names the cells the `core`, `algorithms` and
`elementwise` suites cover (default: rnn, gru, lstm for the first two; gru, mingru,
minlstm, indrnn for the third). Prints markdown; `--json FILE` also writes the numbers
and the machine they ran on.

    python benchmarks/bench_step.py
        [--suite core|algorithms|elementwise|scaling|reference|latency|all]
        [--cells CELL,...] [--quick] [--repeats N] [--json FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# NumPy's BLAS threads spin after each call and would share the cores with the learner.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import uoro  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "cpp"))
from run_core_checks import compiler, eigen_include  # noqa: E402

VOCAB = 13  # a 13-symbol one-hot stream, as in the distant-brackets task
CELLS = ("rnn", "gru", "lstm")
# Units recur only on themselves: exact RTRL costs O(|θ|) per step on them.
ELEMENTWISE_CELLS = ("mingru", "minlstm", "indrnn")
ALL_CELLS = CELLS + ELEMENTWISE_CELLS
SIZES = (64, 256)
ALGORITHMS = (
    ("uoro", {}),
    ("uoro with sgd", {"optimizer": "sgd"}),  # the difference to "uoro" is Adam's cost
    ("uoro r=2", {"rank": 2}),
    ("uoro r=4", {"rank": 4}),
    ("uoro memory=4", {"memory": 4}),
    ("uoro memory=16", {"memory": 16}),
    ("tbptt T=1", {"algorithm": "tbptt", "truncation": 1}),
    ("tbptt T=4", {"algorithm": "tbptt", "truncation": 4}),
    ("tbptt T=16", {"algorithm": "tbptt", "truncation": 16}),
    ("tbptt_chunk T=4", {"algorithm": "tbptt_chunk", "truncation": 4}),
    ("snap1", {"algorithm": "snap1"}),
    ("rtrl", {"algorithm": "rtrl"}),
)


def per_sample_us(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n * 1e6


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def heap_bytes_in_use() -> int | None:
    """Bytes the C allocator has handed out and not taken back (glibc), or None. Garbage
    is collected first: unreachable objects freed between two readings would otherwise
    be counted against what was allocated between them."""
    gc.collect()
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def bytes_per_learner(cell: str, hidden: int, dtype: str, options: dict) -> float | None:
    """Heap memory one learner holds (its arrays, the core object; glibc's count of bytes
    in use), averaged over several learners alive at once."""
    before = heap_bytes_in_use()
    learners = []
    for _ in range(8):
        learner = uoro.Learner(cell, VOCAB, hidden, dtype=dtype, **options)
        learner.step(0, 1)
        learners.append(learner)
    after = heap_bytes_in_use()
    return None if before is None or after is None else (after - before) / len(learners)


def measure(
    cell: str,
    hidden: int,
    dtype: str,
    options: dict,
    budget_s: float,
    repeats: int,
    python_loop: bool,
) -> dict:
    # A fresh learner for every timed pass: long runs on random tokens can drive a network
    # into exploding sensitivities, whose refused steps (skipped and counted) cost less.
    def fresh() -> uoro.Learner:
        learner = uoro.Learner(
            cell, VOCAB, hidden, dtype=dtype, lr=1e-3, seed=0, on_divergence="skip", **options
        )
        learner.fit(probe[:-1], probe[1:])  # warm caches
        return learner

    probe = np.random.default_rng(0).integers(0, VOCAB, 65)
    learner = fresh()
    probe_us = per_sample_us(lambda: learner.fit(probe[:-1], probe[1:]), 64)
    n = int(np.clip(budget_s / (probe_us * 1e-6), 64, 20_000))
    tokens = np.random.default_rng(1).integers(0, VOCAB, n + 1)
    xs, ys = tokens[:-1], tokens[1:]
    pairs = list(zip(xs.tolist(), ys.tolist()))

    best = {"fit_us": np.inf, "step_us": np.inf, "forward_us": np.inf}
    ratios = []  # fit / forward of each repeat, timed back to back
    skipped = 0
    for _ in range(repeats):
        learner = fresh()
        fit_us = per_sample_us(lambda m=learner: m.fit(xs, ys), n)
        forward_us = per_sample_us(lambda m=learner: m.evaluate(xs, ys), n)
        best["fit_us"] = min(best["fit_us"], fit_us)
        best["forward_us"] = min(best["forward_us"], forward_us)
        ratios.append(fit_us / forward_us)
        skipped += learner.skipped_steps
        if python_loop:
            stepper = fresh()
            step = stepper.step

            def loop(step=step) -> None:
                for x, y in pairs:
                    step(x, y)

            best["step_us"] = min(best["step_us"], per_sample_us(loop, n))
            skipped += stepper.skipped_steps
    return {
        "cell": cell,
        "hidden": hidden,
        "dtype": dtype,
        "params": learner.n_params,
        "samples": n,
        **{k: float(v) for k, v in best.items()},
        "fit_over_forward": float(np.median(ratios)),
        "skipped_steps": skipped,
        "samples_per_s": float(1e6 / best["fit_us"]),
        "bytes_per_learner": bytes_per_learner(cell, hidden, dtype, options),
    }


def core_suite(budget_s: float, repeats: int, cells=CELLS) -> list[dict]:
    rows = []
    for dtype in ("float32", "float64"):
        for cell in cells:
            for hidden in SIZES:
                rows.append(measure(cell, hidden, dtype, {}, budget_s, repeats, python_loop=True))
                print(f"  {cell}-{hidden} {dtype}: {rows[-1]['fit_us']:.2f} µs", flush=True)
    return rows


def algorithms_suite(budget_s: float, repeats: int, cells=CELLS) -> list[dict]:
    rows = []
    for cell in cells:
        for hidden in SIZES:
            for name, options in ALGORITHMS:
                if options.get("algorithm") == "rtrl" and hidden > 64 and cell in CELLS:
                    continue  # S²·|θ| per step: a reference for small networks only
                row = measure(
                    cell, hidden, "float32", options, budget_s, repeats, python_loop=False
                )
                rows.append({"algorithm": name, **row})
                print(f"  {cell}-{hidden} {name}: {row['fit_us']:.2f} µs", flush=True)
    return rows


# The `elementwise` suite: per model, the algorithms timed side by side (the first one,
# UORO, is what the others are compared with). RTRL on a dense cell costs S²·|θ| per step:
# timed at 64 units only.
ELEMENTWISE_DEFAULT_CELLS = ("gru", *ELEMENTWISE_CELLS)
ELEMENTWISE_ALGORITHMS = (("uoro", {}), ("rtrl", {"algorithm": "rtrl"}))
STACKS = (  # two-layer stacks at 64 units
    ("minlstm", {"layers": 2}),
    ("gru", {"layers": 2}),
)
STACK_ALGORITHMS = (("uoro", {}), ("layerwise", {"algorithm": "layerwise"}))


def model_name(cell: str, hidden: int, layers: int = 1) -> str:
    return f"{cell}-{hidden}" + (f" ×{layers} layers" if layers > 1 else "")


def measure_side_by_side(
    cell: str,
    hidden: int,
    algorithms,
    budget_s: float,
    repeats: int,
    options: dict | None = None,
) -> list[dict]:
    """One model under several algorithms, float32, timed in turn within every repeat (the
    order rotated from repeat to repeat), each `fit` followed by the forward-only pass.
    Besides `measure`'s columns, `over_first`: the median over the repeats of this
    algorithm's `fit` time over the first algorithm's in the same repeat."""
    options = options or {}
    probe = np.random.default_rng(0).integers(0, VOCAB, 65)
    setups = []
    for name, extra in algorithms:
        settings = {**options, **extra}

        def fresh(settings=settings) -> uoro.Learner:
            learner = uoro.Learner(
                cell, VOCAB, hidden, lr=1e-3, seed=0, on_divergence="skip", **settings
            )
            learner.fit(probe[:-1], probe[1:])  # warm caches
            return learner

        learner = fresh()
        probe_us = per_sample_us(lambda m=learner: m.fit(probe[:-1], probe[1:]), 64)
        n = int(np.clip(budget_s / (probe_us * 1e-6), 64, 20_000))
        tokens = np.random.default_rng(1).integers(0, VOCAB, n + 1)
        setups.append((name, settings, fresh, n, tokens[:-1], tokens[1:]))

    fits = [[] for _ in setups]
    forwards = [[] for _ in setups]
    skipped = [0] * len(setups)
    params = [0] * len(setups)
    for repeat in range(repeats):
        for k in range(len(setups)):
            i = (k + repeat) % len(setups)
            _, _, fresh, n, xs, ys = setups[i]
            learner = fresh()
            fits[i].append(per_sample_us(lambda m=learner, x=xs, y=ys: m.fit(x, y), n))
            forwards[i].append(per_sample_us(lambda m=learner, x=xs, y=ys: m.evaluate(x, y), n))
            skipped[i] += learner.skipped_steps
            params[i] = learner.n_params
    rows = []
    for i, (name, settings, _, n, _, _) in enumerate(setups):
        fit, forward = np.array(fits[i]), np.array(forwards[i])
        rows.append(
            {
                "model": model_name(cell, hidden, settings.get("layers", 1)),
                "cell": cell,
                "hidden": hidden,
                "layers": settings.get("layers", 1),
                "algorithm": name,
                "dtype": "float32",
                "params": params[i],
                "samples": n,
                "fit_us": float(fit.min()),
                "forward_us": float(forward.min()),
                "fit_over_forward": float(np.median(fit / forward)),
                "over_first": float(np.median(fit / np.array(fits[0]))),
                "samples_per_s": float(1e6 / fit.min()),
                "skipped_steps": skipped[i],
                "bytes_per_learner": bytes_per_learner(cell, hidden, "float32", settings),
            }
        )
    return rows


def elementwise_suite(
    budget_s: float,
    repeats: int,
    cells=ELEMENTWISE_DEFAULT_CELLS,
    sizes=SIZES,
    stacks=STACKS,
    stack_hidden: int = 64,
) -> list[dict]:
    """UORO beside exact RTRL for each cell and size (RTRL on a dense cell at 64 units
    only), then the stacks (two layers of `stack_hidden` units) with UORO and the
    layer-wise rule."""
    rows = []
    for hidden in sizes:
        for cell in cells:
            algorithms = [
                (name, options)
                for name, options in ELEMENTWISE_ALGORITHMS
                if not (options.get("algorithm") == "rtrl" and hidden > 64 and cell in CELLS)
            ]
            rows += measure_side_by_side(cell, hidden, algorithms, budget_s, repeats)
            print("  " + progress(rows[-len(algorithms) :]), flush=True)
    for cell, options in stacks:
        pair = measure_side_by_side(
            cell, stack_hidden, STACK_ALGORITHMS, budget_s, repeats, options
        )
        rows += pair
        print("  " + progress(pair), flush=True)
    return rows


def progress(rows: list[dict]) -> str:
    return f"{rows[0]['model']}: " + ", ".join(
        f"{r['algorithm']} {r['fit_us']:.2f} µs" for r in rows
    )


def elementwise_table(rows: list[dict]) -> str:
    lines = [
        "| model | algorithm | parameters | µs/sample in `fit` | µs forward-only "
        "| fit / forward | × UORO | KiB per learner |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['algorithm']} | {r['params']:,} | {r['fit_us']:.2f} "
        f"| {r['forward_us']:.2f} | {r['fit_over_forward']:.1f}× | {r['over_first']:.2f}× "
        f"| {kib(r['bytes_per_learner'])} |"
        for r in rows
    ]
    return "\n".join(lines)


def scaling_suite(repeats: int, long_run: int) -> dict:
    """UORO's cost per sample early and late in a long stream; truncated BPTT's cost per
    sample against its window T (GRU-64, float32). Early and late passes, and the windows,
    are timed in alternation, so a slow spell of the machine hits both sides."""
    tokens = np.random.default_rng(2).integers(0, VOCAB, 10_001)
    xs, ys = tokens[:-1], tokens[1:]

    def fresh_learner(**options) -> uoro.Learner:
        return uoro.Learner("gru", VOCAB, 64, seed=0, on_divergence="skip", **options)

    learner = fresh_learner()
    for _ in range(long_run // xs.size):
        learner.fit(xs, ys)
    early, late = np.inf, np.inf
    for _ in range(repeats):
        new = fresh_learner()
        early = min(early, per_sample_us(lambda m=new: m.fit(xs, ys), xs.size))
        late = min(late, per_sample_us(lambda: learner.fit(xs, ys), xs.size))
    windows = [1, 2, 4, 8, 16, 32, 64]
    models = [fresh_learner(algorithm="tbptt", truncation=w) for w in windows]
    chunk = (xs[:2_000], ys[:2_000])  # the same for every window
    tbptt = [np.inf] * len(windows)
    for _ in range(repeats):
        for i, model in enumerate(models):
            tbptt[i] = min(tbptt[i], per_sample_us(lambda m=model: m.fit(*chunk), 2_000))
    slope, intercept = np.polyfit(windows, tbptt, 1)
    fitted = slope * np.array(windows) + intercept
    r2 = (
        1
        - ((np.array(tbptt) - fitted) ** 2).sum() / ((np.array(tbptt) - np.mean(tbptt)) ** 2).sum()
    )
    return {
        "uoro_early_us": float(early),
        "uoro_late_us": float(late),
        "uoro_late_after": long_run,
        "tbptt_windows": windows,
        "tbptt_us": [float(t) for t in tbptt],
        "tbptt_slope_us": float(slope),
        "tbptt_intercept_us": float(intercept),
        "tbptt_r2": float(r2),
    }


# The hand-written references in reference/, per cell, by name: the fastest one-stream
# step we could write ("fused"), and for the GRU also the straightforward one ("plain")
# (see each file's header).
REFERENCES = {
    "gru": {"plain": "gru_uoro_adam.cpp", "fused": "gru_uoro_adam_fused.cpp"},
    "lstm": {"fused": "lstm_uoro_adam_fused.cpp"},
    "rnn": {"fused": "rnn_uoro_adam_fused.cpp"},
}
# The models (cell, hidden) on which the reference suite times the library against them.
REFERENCE_MODELS = (("gru", 64), ("lstm", 64), ("rnn", 64), ("gru", 256))


LATENCY_MODELS = (("gru", 64), ("lstm", 64), ("rnn", 64), ("gru", 256))


def latency_suite(calls: int, repeats: int, models=LATENCY_MODELS) -> list[dict]:
    """`step_latency` per model (float32, UORO + Adam)."""
    rows = []
    for cell, hidden in models:
        rows.append(step_latency(cell, hidden, calls, repeats))
        r = rows[-1]
        print(
            f"  {model_name(cell, hidden)}: step p50 {r['step_p50_us']:.2f} µs, "
            f"fit {r['fit_us']:.2f} µs",
            flush=True,
        )
    return rows


def step_latency(cell: str, hidden: int, calls: int, repeats: int) -> dict:
    """Every one of `calls` `step` calls timed alone (perf_counter_ns around it) on a
    fresh, warmed learner, and `fit`'s per-sample time over the same tokens, in `repeats`
    rounds of one of each (fresh learners, the order alternating from round to round).
    The percentiles pool the rounds' step runs and `fit_us` is the best round's;
    `p50_over_fit_us` is the median over the rounds of the round's median `step` less its
    `fit`, which a slow spell of the machine spanning a round cancels out of. `timer_ns`
    is the median cost of the two clock reads alone, included in every call's time."""
    tokens = np.random.default_rng(1).integers(0, VOCAB, calls + 1)
    xs, ys = tokens[:-1], tokens[1:]
    pairs = list(zip(xs.tolist(), ys.tolist()))

    # "reset": a float32 RNN-64 on these tokens leaves the stable regime after about 10⁵
    # samples, and with "skip" every later step would be a refused one, cheaper than a step.
    def fresh() -> uoro.Learner:
        learner = uoro.Learner(cell, VOCAB, hidden, lr=1e-3, seed=0, on_divergence="reset")
        learner.fit(xs[:64], ys[:64])  # warm caches
        return learner

    clock = time.perf_counter_ns
    timer = np.empty(10_000, dtype=np.int64)
    for i in range(timer.size):
        start = clock()
        timer[i] = clock() - start

    def fit_round() -> float:
        learner = fresh()
        return per_sample_us(lambda: learner.fit(xs, ys), calls)

    def step_round() -> np.ndarray:
        step = fresh().step
        times = np.empty(calls, dtype=np.int64)
        gc.disable()  # a collection inside a timed call would be Python's, not ours
        try:
            for i, (x, y) in enumerate(pairs):
                start = clock()
                step(x, y)
                times[i] = clock() - start
        finally:
            gc.enable()
        return times / 1e3

    fits, samples = [], []
    for r in range(repeats):
        if r % 2:
            samples.append(step_round())
            fits.append(fit_round())
        else:
            fits.append(fit_round())
            samples.append(step_round())
    differences = [float(np.median(t) - f) for t, f in zip(samples, fits)]
    pooled = np.concatenate(samples)
    p50, p90, p99, p999 = np.percentile(pooled, [50, 90, 99, 99.9])
    return {
        "cell": cell,
        "hidden": hidden,
        "calls": int(pooled.size),
        "fit_us": float(min(fits)),
        "step_mean_us": float(pooled.mean()),
        "step_p50_us": float(p50),
        "step_p90_us": float(p90),
        "step_p99_us": float(p99),
        "step_p999_us": float(p999),
        "step_max_us": float(pooled.max()),
        "timer_ns": float(np.median(timer)),
        "round_differences_us": differences,
        "p50_over_fit_us": float(np.median(differences)),
    }


def latency_table(rows: list[dict]) -> str:
    lines = [
        "| model | µs/sample `fit` | `step` p50 µs | p90 | p99 | p99.9 | max "
        "| p50 − `fit` µs, median of rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {model_name(r['cell'], r['hidden'])} | {r['fit_us']:.2f} | {r['step_p50_us']:.2f} "
            f"| {r['step_p90_us']:.2f} | {r['step_p99_us']:.2f} | {r['step_p999_us']:.2f} "
            f"| {r['step_max_us']:.1f} | {r['p50_over_fit_us']:+.2f} |"
        )
    return "\n".join(lines)


def compile_reference(source: str, directory: Path) -> Path:
    """Compiles reference/`source` for this machine (-O3 -march=native) into `directory`."""
    binary = directory / Path(source).stem
    subprocess.run(
        [
            compiler(),
            "-std=c++17",
            "-O3",
            "-march=native",
            "-DNDEBUG",
            "-fno-math-errno",
            "-I",
            str(HERE.parent / "cpp" / "include"),
            "-isystem",
            str(eigen_include()),
            str(HERE / "reference" / source),
            "-o",
            str(binary),
        ],
        check=True,
    )
    return binary


def build_reference(directory: Path) -> Path:
    """Compiles the plain hand-written GRU reference step for this machine."""
    return compile_reference(REFERENCES["gru"]["plain"], directory)


def build_references(
    directory: Path, cells: tuple[str, ...] = tuple(REFERENCES)
) -> dict[str, dict[str, Path]]:
    """Compiles every reference step of `cells`, the same way: {cell: {name: binary}}.
    The compilers run side by side, one per core."""
    jobs = [(cell, name, source) for cell in cells for name, source in REFERENCES[cell].items()]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        built = list(pool.map(lambda job: compile_reference(job[2], directory), jobs))
    binaries: dict[str, dict[str, Path]] = {cell: {} for cell in cells}
    for (cell, name, _), binary in zip(jobs, built):
        binaries[cell][name] = binary
    return binaries


def reference_suite(budget_s: float, repeats: int, models=REFERENCE_MODELS) -> list[dict]:
    """Per model (cell, hidden), the library's UORO + Adam step inside `fit` against each
    hand-written reference of that cell (same model, same arithmetic, no checks), float32.
    Timed in back-to-back rounds, 3 × `repeats` of them, the library and every reference
    once per round in an order rotated from round to round; a ratio reported is the median
    of the rounds' ratios, which a slow spell of the machine spanning a round cancels out
    of. Then, for each GRU size, where the time of a step goes: the library's parts
    (`step_parts`) and the fused reference's phases."""
    with tempfile.TemporaryDirectory() as tmp:
        binaries = build_references(Path(tmp), tuple(dict.fromkeys(c for c, _ in models)))
        rows = [
            against_reference(binaries[cell], hidden, budget_s, 3 * repeats, cell=cell)
            for cell, hidden in models
        ]
        gru_rows = [row for row in rows if row["cell"] == "gru"]
        if gru_rows:
            parts = compile_reference(STEP_PARTS, Path(tmp))
        for row in gru_rows:
            row["library_parts"] = step_parts(parts, row["hidden"])
            row["fused_phases"] = fused_phases(binaries["gru"]["fused"], row["hidden"], repeats)
        return rows


STEP_PARTS = "step_parts.cpp"


def step_parts(binary: Path, hidden: int) -> dict[str, float]:
    """µs per step of the library's C++ step and of its parts, each timed alone
    (reference/step_parts.cpp); `refused` counts the parts' refused updates (0 expected)."""
    out = subprocess.run([str(binary), str(hidden)], capture_output=True, text=True, check=True)
    pairs = (line.split() for line in out.stdout.splitlines() if line)
    return {name: float(value) for name, value in pairs}


def fused_phases(binary: Path, hidden: int, repeats: int) -> dict[str, float]:
    """A fused reference's µs per step by phase, with its recurrent products in the
    previous step's pass (as it runs), and Adam alone over |θ|."""
    steps = max(200, 50_000_000 // (hidden * hidden))
    run = [str(binary), "phases", str(hidden), str(steps), str(repeats)]
    lines = subprocess.run(run, capture_output=True, text=True, check=True).stdout.split("\n")
    phases: dict[str, float] = {}
    # The first run's lines, up to the header of the second ("GRU-64, ...", "LSTM-64, ...").
    for line in lines[1 : lines.index(next(x for x in lines[1:] if not x.startswith(" ")))]:
        value, _, name = line.strip().partition(" us  ")
        if not name.startswith("total"):
            phases[name.split(" (")[0]] = float(value)
    phases["adam alone"] = float(next(x for x in lines if x.startswith("Adam alone")).split()[-2])
    return phases


def parts_table(rows: list[dict]) -> str:
    """The library's step and its parts beside the fused reference's phases, µs per step."""
    lines = [
        "| GRU, float32, µs per step | " + " | ".join(f"{r['hidden']} units" for r in rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]

    def row(label: str, value) -> None:
        lines.append(f"| {label} | " + " | ".join(f"{value(r):.2f}" for r in rows) + " |")

    p = lambda r: r["library_parts"]  # noqa: E731
    row("library: step (C++, no binding)", lambda r: p(r)["step"])
    row("library: forward, loss and c", lambda r: p(r)["forward"])
    row("library: estimator (UORO's update)", lambda r: p(r)["estimator"])
    row("… of which tangent (W_hh·s̃ and gates)", lambda r: p(r)["tangent"])
    row(
        "… of which pass and checks (less tangent, 2 cotangents, signs)",
        lambda r: p(r)["estimator"] - p(r)["tangent"] - 2 * p(r)["cotangents"] - p(r)["signs"],
    )
    row(
        "library: the rest (input, checks, swaps)",
        lambda r: p(r)["step"] - p(r)["forward"] - p(r)["estimator"],
    )
    row("library: Adam alone over θ", lambda r: p(r)["adam"])
    for name in ("forward", "tangent and normalizers", "cell pass", "readout pass"):
        row(f"fused reference: {name}", lambda r, n=name: r["fused_phases"][n])
    row(
        "fused reference: sum of phases",
        lambda r: sum(v for k, v in r["fused_phases"].items() if k != "adam alone"),
    )
    row("fused reference: Adam alone over θ", lambda r: r["fused_phases"]["adam alone"])
    return "\n".join(lines)


def reference_model(cell: str, hidden: int) -> str:
    """A model as the reference table names it: "GRU-64"."""
    return f"{cell.upper()}-{hidden}"


def against_reference(
    binaries: Path | dict[str, Path], hidden: int, budget_s: float, pairs: int, cell: str = "gru"
) -> dict:
    """One model, `cell` with `hidden` units: the library's `fit` and each reference of that
    cell (a binary, or binaries by name), `pairs` rounds. `reference_us` and
    `library_over_reference` are those of the best reference (the least time);
    `references` has every reference's."""
    if isinstance(binaries, Path):
        binaries = {"plain": binaries}

    def fresh() -> uoro.Learner:
        learner = uoro.Learner(cell, VOCAB, hidden, lr=1e-3, seed=0)
        learner.fit(probe[:-1], probe[1:])  # warm caches
        return learner

    def library_us(xs: np.ndarray, ys: np.ndarray) -> float:
        learner = fresh()
        return per_sample_us(lambda: learner.fit(xs, ys), xs.size)

    def reference_us(binary: Path) -> float:
        run = [str(binary), "bench", str(hidden), str(n), "1"]
        timed = subprocess.run(run, capture_output=True, text=True, check=True)
        return float(timed.stdout)

    probe = np.random.default_rng(0).integers(0, VOCAB, 65)
    n = int(np.clip(budget_s / (library_us(probe[:-1], probe[1:]) * 1e-6), 64, 20_000))
    tokens = np.random.default_rng(1).integers(0, VOCAB, n + 1)
    names = ["library", *binaries]
    times: dict[str, list[float]] = {name: [] for name in names}
    for pair in range(pairs):
        for k in range(len(names)):
            name = names[(k + pair) % len(names)]
            if name == "library":
                times[name].append(library_us(tokens[:-1], tokens[1:]))
            else:
                times[name].append(reference_us(binaries[name]))
    library = np.array(times["library"])
    references = {}
    for name in binaries:
        quartiles = np.percentile(library / np.array(times[name]), [25, 50, 75])
        references[name] = {
            "us": float(min(times[name])),
            "library_over": float(quartiles[1]),
            "ratio_quartiles": [float(q) for q in quartiles],
        }
    best = min(references, key=lambda name: references[name]["us"])
    print(
        f"  {reference_model(cell, hidden)}: "
        + ", ".join(f"library / {k} {r['library_over']:.2f}" for k, r in references.items()),
        flush=True,
    )
    return {
        "model": reference_model(cell, hidden),
        "cell": cell,
        "hidden": hidden,
        "samples": n,
        "pairs": pairs,
        "library_us": float(library.min()),
        "reference_us": references[best]["us"],
        "best_reference": best,
        "library_over_reference": references[best]["library_over"],
        "ratio_quartiles": references[best]["ratio_quartiles"],
        "references": references,
    }


def reference_table(rows: list[dict]) -> str:
    """Per model: the library's time, each reference's ("–" where the cell has none), the
    library over each reference and over the best one (median of the rounds, with the
    quartiles)."""
    names = list(dict.fromkeys(k for r in rows for k in r.get("references", {"plain": None})))

    def reference(r: dict, name: str) -> dict | None:
        if "references" in r:
            return r["references"].get(name)
        return {"us": r["reference_us"], "library_over": r["library_over_reference"]}

    lines = [
        "| model, float32, UORO + Adam | µs/sample, library (`fit`) | "
        + " | ".join(f"µs/sample, {name} reference" for name in names)
        + " | "
        + " | ".join(f"library / {name}" for name in names)
        + " | library / best reference, median of pairs (quartiles) |",
        "|---|" + "---:|" * (2 * len(names) + 2),
    ]
    for r in rows:
        refs = [reference(r, name) for name in names]
        lines.append(
            f"| {reference_model(r.get('cell', 'gru'), r['hidden'])} | {r['library_us']:.2f} | "
            + " | ".join("–" if x is None else f"{x['us']:.2f}" for x in refs)
            + " | "
            + " | ".join("–" if x is None else f"{x['library_over']:.2f}" for x in refs)
            + f" | {r['library_over_reference']:.2f} ({r['ratio_quartiles'][0]:.2f}–"
            f"{r['ratio_quartiles'][2]:.2f}) |"
        )
    return "\n".join(lines)


def scaling_table(r: dict) -> str:
    lines = [
        f"UORO, GRU-64: {r['uoro_early_us']:.2f} µs/sample over a fresh learner's first 10⁴ "
        f"samples, {r['uoro_late_us']:.2f} µs/sample for one that has already learned from "
        f"{r['uoro_late_after']:,} samples (timed in alternation).",
        "",
        "| tBPTT window T | " + " | ".join(str(w) for w in r["tbptt_windows"]) + " |",
        "|---|" + "---:|" * len(r["tbptt_windows"]),
        "| µs/sample (GRU-64) | " + " | ".join(f"{t:.1f}" for t in r["tbptt_us"]) + " |",
        "",
        f"Least-squares line: {r['tbptt_intercept_us']:.1f} + {r['tbptt_slope_us']:.2f}·T µs "
        f"(R² = {r['tbptt_r2']:.3f}).",
    ]
    return "\n".join(lines)


def core_table(rows: list[dict]) -> str:
    lines = [
        "| cell | hidden | dtype | µs/sample in `fit` | µs per `step` call | µs forward-only "
        "| fit / forward | samples/s in `fit` | parameters | KiB per learner |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['cell']} | {r['hidden']} | {r['dtype']} | {r['fit_us']:.2f} | {r['step_us']:.2f} "
        f"| {r['forward_us']:.2f} | {r['fit_over_forward']:.1f}× | {r['samples_per_s']:,.0f} "
        f"| {r['params']:,} | {kib(r['bytes_per_learner'])} |"
        for r in rows
    ]
    return "\n".join(lines)


def kib(n: float | None) -> str:
    return "–" if n is None else f"{n / 1024:,.0f}"


def algorithms_table(rows: list[dict]) -> str:
    """Two tables, algorithm × configuration: time per sample (and ratio to the forward
    step), then KiB of heap per learner."""
    order = list(dict.fromkeys(r["cell"] for r in rows))  # the cells in the order run
    configs = sorted(
        {(r["cell"], r["hidden"]) for r in rows}, key=lambda c: (order.index(c[0]), c[1])
    )
    by_key = {(r["algorithm"], r["cell"], r["hidden"]): r for r in rows}
    header = ["| algorithm | " + " | ".join(f"{c}-{h}" for c, h in configs) + " |"]
    header.append("|---|" + "---:|" * len(configs))

    def table(first_rows: list[str], show) -> list[str]:
        lines = header + first_rows
        for name, _ in ALGORITHMS:
            cells = [show(by_key[(name, *c)]) if (name, *c) in by_key else "–" for c in configs]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines

    forward = " | ".join(f"{by_key[('uoro', *c)]['forward_us']:.2f}" for c in configs)
    times = table(
        [f"| forward only | {forward} |"],
        lambda r: f"{r['fit_us']:.1f} ({r['fit_over_forward']:.0f}×)",
    )
    memory = table([], lambda r: kib(r["bytes_per_learner"]))
    return "\n".join([*times, "", "KiB of heap per learner:", "", *memory])


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "uoro": uoro.__version__,
        "variant": uoro._core.VARIANT,
    }


def cell_list(text: str) -> tuple[str, ...]:
    cells = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in cells if c not in ALL_CELLS]
    if unknown or not cells:
        raise argparse.ArgumentTypeError(
            f"unknown cell(s) {', '.join(unknown) or '(none given)'}; choose from "
            + ", ".join(ALL_CELLS)
        )
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--suite",
        choices=("core", "algorithms", "elementwise", "scaling", "reference", "latency", "all"),
        default="all",
    )
    parser.add_argument(
        "--cells",
        type=cell_list,
        help="comma-separated cells for the core, algorithms and elementwise suites "
        f"(any of {', '.join(ALL_CELLS)})",
    )
    parser.add_argument("--quick", action="store_true", help="shorter timings (a smoke run)")
    parser.add_argument(
        "--repeats", type=int, help="timed repeats per measurement, best kept (default 5)"
    )
    parser.add_argument("--json", help="also write the results and the machine here")
    args = parser.parse_args()
    budget_s, repeats = (0.02, 2) if args.quick else (0.25, 5)
    repeats = args.repeats or repeats
    results: dict = {"machine": machine()}
    if args.suite in ("core", "all"):
        results["core"] = core_suite(budget_s, repeats, args.cells or CELLS)
    if args.suite in ("algorithms", "all"):
        results["algorithms"] = algorithms_suite(budget_s, repeats, args.cells or CELLS)
    if args.suite in ("elementwise", "all"):
        cells = args.cells or ELEMENTWISE_DEFAULT_CELLS
        results["elementwise"] = elementwise_suite(budget_s, repeats, cells)
    if args.suite in ("scaling", "all"):
        results["scaling"] = scaling_suite(repeats, 10_000 if args.quick else 1_000_000)
    if args.suite in ("reference", "all"):
        try:
            results["reference"] = reference_suite(budget_s, repeats)
        except (FileNotFoundError, subprocess.CalledProcessError) as error:
            if args.suite == "reference":
                raise
            print(f"  reference suite skipped: {error}", flush=True)
    if args.suite in ("latency", "all"):
        results["latency"] = latency_suite(2_000 if args.quick else 200_000, repeats)
    m = results["machine"]
    print(
        f"\n{m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}, "
        f"core variant {m['variant']}; "
        f"best of {repeats} repeats, one thread, batch 1, {VOCAB}-symbol one-hot input, "
        "UORO + Adam unless named otherwise\n"
    )
    if "core" in results:
        print(core_table(results["core"]) + "\n")
    if "algorithms" in results:
        print("µs per sample inside `fit` (ratio to the forward-only step), float32:\n")
        print(algorithms_table(results["algorithms"]))
    if "elementwise" in results:
        print(
            "\nUORO beside exact RTRL (O(|θ|) on the element-wise cells), and two-layer stacks "
            "with the layer-wise rule; float32, the algorithms of a model timed in turn "
            "(× UORO: median over the repeats of the ratio to UORO's `fit` in the same repeat):\n"
        )
        print(elementwise_table(results["elementwise"]))
    if "scaling" in results:
        print("\nCost against stream length and truncation window:\n")
        print(scaling_table(results["scaling"]))
    if "reference" in results:
        print("\nAgainst hand-written steps (same model and arithmetic, no checks):\n")
        print(reference_table(results["reference"]))
        gru_rows = [r for r in results["reference"] if "library_parts" in r]
        if gru_rows:
            print("\nWhere a GRU step's time goes, each part timed alone (best of many rounds):\n")
            print(parts_table(gru_rows))
    if "latency" in results:
        timer = results["latency"][0]["timer_ns"]
        print(
            "\nOne `step` call from Python, each timed alone (float32, UORO + Adam; every "
            f"time includes the clock's own {timer:.0f} ns), beside `fit` on the same tokens:\n"
        )
        print(latency_table(results["latency"]))
    skipped = [
        f"{r.get('model', model_name(r['cell'], r['hidden']))} {r.get('algorithm', 'uoro')} "
        f"{r['dtype']}: {r['skipped_steps']}"
        for suite in ("core", "algorithms", "elementwise")
        for r in results.get(suite, [])
        if r["skipped_steps"]
    ]
    if skipped:
        print("\nSteps refused by the divergence guard (random tokens): " + "; ".join(skipped))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
