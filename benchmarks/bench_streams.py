"""Many streams, one model: per-sample cost as the number of streams B grows, in one run.

For each model (float32, UORO + Adam inside `fit` unless the model names another
algorithm, a 13-symbol one-hot stream) and each B, per sample:
  - `fit`:       one learner with ``streams=B`` learning a (T, B) chunk;
  - `separate`:  B single-stream learners, each learning its own stream's chunk in
                 turn (B copies of θ, B optimizers, B parameter passes per tick);
  - `forward`:   the batched forward-only step of the same learner (`evaluate`, same B).
The speed-up is B = 1's `fit` time over B's; `fit / forward` is the median over the
repeats of a `fit` and the forward pass timed right after it. Every learner first learns
a few ticks untimed, so none is timed straight from its constructor. Every time is the
best of several repeats. Heap per learner is counted by the C allocator (glibc; else "–").

Then where a GRU's tick goes (`reference/tick_parts.cpp`, compiled here as the loaded
extension module is: its instruction-set variant, -O3, GNU C++17; needs a C++ compiler
and Eigen's headers, skipped with a message without them): the tick in C++ beside the
parts of it timed alone, the cell's and readout's products, the estimator's parameter-side
sums and Adam, and the core's multiply-add peak.

`--models` picks the models (e.g. `gru-64,mingru-64,mingru-64-rtrl`: cell, hidden size
and optionally the algorithm), `--streams` the B; `--no-parts` skips the tick's parts.

    python benchmarks/bench_streams.py [--quick] [--repeats N] [--json FILE]
                                       [--models MODEL,...] [--streams B,...] [--no-parts]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import uoro  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import ALL_CELLS, VOCAB, heap_bytes_in_use, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "cpp"))
from run_core_checks import VARIANT_FLAGS, compiler, eigen_include  # noqa: E402

MODELS = (("gru", 64), ("lstm", 64), ("rnn", 64), ("gru", 256))
# A model is (cell, hidden) or (cell, hidden, algorithm); the algorithm defaults to UORO.
ALGORITHMS = ("uoro", "rtrl", "snap1")
NAMES = {"mingru": "minGRU", "minlstm": "minLSTM", "indrnn": "IndRNN"}
# Ticks each learner runs, untimed, before it is timed: a learner fresh from its
# constructor is timed in the state a long stream keeps it in (its arrays in cache),
# as the forward pass timed right after its `fit` already was.
WARM_TICKS = 8
STREAMS = (1, 4, 16, 64)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def model_label(cell: str, hidden: int, algorithm: str = "uoro") -> str:
    name = f"{NAMES.get(cell, cell.upper())}-{hidden}"
    return name if algorithm == "uoro" else f"{name} {algorithm.upper()}"


def learner(cell: str, hidden: int, streams: int, algorithm: str = "uoro") -> uoro.Learner:
    # on_divergence="skip": random tokens can drive a network into exploding
    # sensitivities; such ticks are counted, not fatal. UORO runs as one system
    # (stream_groups=1): this study times the batched kernels; the default's one estimate
    # per stream is timed by streams_gradient_quality.py.
    grouping = {"stream_groups": 1} if algorithm == "uoro" else {}
    return uoro.Learner(
        cell,
        VOCAB,
        hidden,
        lr=1e-3,
        seed=0,
        on_divergence="skip",
        streams=streams,
        algorithm=algorithm,
        **grouping,
    )


def heap_per_learner(cell: str, hidden: int, streams: int, algorithm: str = "uoro") -> float | None:
    before = heap_bytes_in_use()
    kept = []
    for _ in range(4):
        one = learner(cell, hidden, streams, algorithm)
        tokens = np.zeros((1, streams) if streams > 1 else 1, dtype=np.int64)
        one.fit(tokens, tokens)
        kept.append(one)
    after = heap_bytes_in_use()
    return None if before is None or after is None else (after - before) / len(kept)


def measure(
    cell: str, hidden: int, streams: int, budget_s: float, repeats: int, algorithm: str = "uoro"
) -> dict:
    rng = np.random.default_rng(1)
    probe = learner(cell, hidden, 1, algorithm)
    tokens = rng.integers(0, VOCAB, 65)
    probe_s = seconds(lambda: probe.fit(tokens[:-1], tokens[1:])) / 64
    samples = int(np.clip(budget_s / probe_s, 256, 40_000))
    ticks = max(8, samples // streams)
    data = rng.integers(0, VOCAB, (ticks + WARM_TICKS + 1, streams))
    xs, ys = data[WARM_TICKS:-1], data[WARM_TICKS + 1 :]
    warm_xs, warm_ys = data[:WARM_TICKS], data[1 : WARM_TICKS + 1]
    if streams == 1:
        xs, ys, warm_xs, warm_ys = xs[:, 0], ys[:, 0], warm_xs[:, 0], warm_ys[:, 0]
    n = ticks * streams
    best = {"fit_us": np.inf, "forward_us": np.inf, "separate_us": np.inf}
    ratios, skipped = [], 0
    for _ in range(repeats):
        one = learner(cell, hidden, streams, algorithm)
        one.fit(warm_xs, warm_ys)  # untimed: `fit` is timed warm, as `evaluate` after it is
        fit_us = seconds(lambda m=one: m.fit(xs, ys)) / n * 1e6
        forward_us = seconds(lambda m=one: m.evaluate(xs, ys)) / n * 1e6
        best["fit_us"] = min(best["fit_us"], fit_us)
        best["forward_us"] = min(best["forward_us"], forward_us)
        ratios.append(fit_us / forward_us)
        skipped += one.skipped_steps
        if streams > 1:
            many = [learner(cell, hidden, 1, algorithm) for _ in range(streams)]
            for b, m in enumerate(many):
                m.fit(warm_xs[:, b], warm_ys[:, b])

            def in_turn(many=many) -> None:
                for b, m in enumerate(many):
                    m.fit(xs[:, b], ys[:, b])

            best["separate_us"] = min(best["separate_us"], seconds(in_turn) / n * 1e6)
    return {
        "model": model_label(cell, hidden, algorithm),
        "cell": cell,
        "hidden": hidden,
        "algorithm": algorithm,
        "streams": streams,
        "samples": n,
        **{k: (float(v) if np.isfinite(v) else None) for k, v in best.items()},
        "fit_over_forward": float(np.median(ratios)),
        "samples_per_s": float(1e6 / best["fit_us"]),
        "skipped_ticks": skipped,
        "bytes_per_learner": heap_per_learner(cell, hidden, streams, algorithm),
    }


def run(budget_s: float, repeats: int, models=MODELS, streams=STREAMS) -> list[dict]:
    rows = []
    for cell, hidden, *algorithm in models:
        for b in streams:
            row = measure(cell, hidden, b, budget_s, repeats, *algorithm)
            rows.append(row)
            print(f"  {row['model']} B={b}: {row['fit_us']:.2f} µs/sample", flush=True)
    return rows


def key(row: dict) -> tuple:
    return row["cell"], row["hidden"], row.get("algorithm", "uoro")


def table(rows: list[dict]) -> str:
    base = {key(r): r["fit_us"] for r in rows if r["streams"] == 1}
    lines = [
        "| model | B | µs/sample `fit` | samples/s | × B = 1 | B learners in turn µs/sample "
        "| forward µs/sample | fit / forward | KiB heap |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speedup = "–" if key(r) not in base else f"{base[key(r)] / r['fit_us']:.1f}×"
        separate = "–" if r["separate_us"] is None else f"{r['separate_us']:.2f}"
        heap = "–" if r["bytes_per_learner"] is None else f"{r['bytes_per_learner'] / 1024:.0f}"
        lines.append(
            f"| {r['model']} | {r['streams']} | {r['fit_us']:.2f} "
            f"| {r['samples_per_s']:,.0f} | {speedup} | {separate} "
            f"| {r['forward_us']:.2f} | {r['fit_over_forward']:.1f}× | {heap} |"
        )
    return "\n".join(lines)


def tick_lines(rows: list[dict], aim_streams: int = 16, aim_speedup: float = 5.0) -> list[dict]:
    """Per model, the µs of one tick (fit's µs/sample × B) as a least-squares line a + b·B
    over the batched learner's B (B > 1; B = 1 is the single-stream learner): a is what a
    tick costs whatever B (the parameter pass, the readout's copies, calls), b what each
    stream adds (its share of the products, gates and bookkeeping). Also the tick an
    `aim_speedup`× gain over B = 1 at B = `aim_streams` allows: aim_streams × (B = 1's
    µs/sample) / aim_speedup."""
    lines = []
    for cell, hidden, algorithm in dict.fromkeys(key(r) for r in rows):
        mine = [r for r in rows if key(r) == (cell, hidden, algorithm)]
        batched = [r for r in mine if r["streams"] > 1]
        single = [r for r in mine if r["streams"] == 1]
        if len(batched) < 2:
            continue
        b = np.array([r["streams"] for r in batched], dtype=float)
        tick = np.array([r["fit_us"] * r["streams"] for r in batched])
        per_stream, fixed = np.polyfit(b, tick, 1)
        residual = tick - (fixed + per_stream * b)
        spread = np.sum((tick - tick.mean()) ** 2)
        lines.append(
            {
                "model": model_label(cell, hidden, algorithm),
                "cell": cell,
                "hidden": hidden,
                "fixed_us": float(fixed),
                "per_stream_us": float(per_stream),
                "r2": float(1 - np.sum(residual**2) / spread) if spread > 0 else 1.0,
                "aim_tick_us": float(aim_streams * single[0]["fit_us"] / aim_speedup)
                if single
                else None,
                "aim_streams": aim_streams,
                "aim_speedup": aim_speedup,
                "tick_at_aim_us": float(fixed + per_stream * aim_streams),
            }
        )
    return lines


def tick_text(lines: list[dict]) -> str:
    out = []
    for t in lines:
        text = (
            f"{t['model']}: a tick of B streams costs {t['fixed_us']:.2f} + "
            f"{t['per_stream_us']:.3f}·B µs (R² = {t['r2']:.3f})"
        )
        if t["aim_tick_us"] is not None:
            text += (
                f"; {t['aim_speedup']:g}× the samples/s of B = 1 at B = {t['aim_streams']} needs a "
                "tick of "
                f"≤ {t['aim_tick_us']:.2f} µs, the line gives {t['tick_at_aim_us']:.2f}"
            )
        out.append(text)
    return "\n".join(out)


def build_tick_parts(directory: Path) -> Path:
    """Compiles reference/tick_parts.cpp as the loaded extension module is compiled."""
    binary = directory / "tick_parts"
    flags = [*VARIANT_FLAGS.get(uoro._core.VARIANT, []), "-std=gnu++17", "-O3", "-DNDEBUG"]
    flags += ["-fno-math-errno", "-DEIGEN_NO_AUTOMATIC_RESIZING"]
    include = ["-I", str(HERE.parent / "cpp" / "include"), "-isystem", str(eigen_include())]
    source = str(HERE / "reference" / "tick_parts.cpp")
    subprocess.run([compiler(), *flags, *include, source, "-o", str(binary)], check=True)
    return binary


def tick_parts(rows: list[dict], hidden_sizes=(64, 256), streams=(16, 64)) -> list[dict]:
    """Per GRU size and B: the C++ tick and its parts timed alone (see tick_parts.cpp),
    the rest of the tick (what the parts leave), and from `rows` (if they have the model
    and B) the tick `fit` measured and 5× the batched forward step's tick."""
    with tempfile.TemporaryDirectory() as tmp:
        binary = build_tick_parts(Path(tmp))
        parts = []
        for hidden in hidden_sizes:
            args = [str(binary), str(hidden), *map(str, streams)]
            printed = subprocess.run(args, capture_output=True, text=True, check=True).stdout
            parts += [json.loads(line) for line in printed.splitlines()]
    measured = {
        (r["hidden"], r["streams"]): r
        for r in rows
        if r["cell"] == "gru" and r.get("algorithm", "uoro") == "uoro"
    }
    for part in parts:
        row = measured.get((part["hidden"], part["streams"]))
        part["rest_us"] = part["tick_us"] - part["products_us"] - part["sums_us"] - part["adam_us"]
        part["fit_tick_us"] = row["fit_us"] * part["streams"] if row else None
        part["five_forward_ticks_us"] = 5 * row["forward_us"] * part["streams"] if row else None
    return parts


def parts_table(parts: list[dict]) -> str:
    def us(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    lines = [
        "| model | B | tick µs, `fit` | tick µs, C++ | products µs (GMAC/s) | parameter-side sums "
        "µs (GMAC/s) | Adam µs | rest µs | 5 × forward tick µs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in parts:
        lines.append(
            f"| GRU-{p['hidden']} | {p['streams']} | {us(p['fit_tick_us'])} | {p['tick_us']:.1f} "
            f"| {p['products_us']:.1f} ({p['products_macs'] / p['products_us'] * 1e-3:.0f}) "
            f"| {p['sums_us']:.1f} ({p['sums_macs'] / p['sums_us'] * 1e-3:.0f}) "
            f"| {p['adam_us']:.1f} | {p['rest_us']:.1f} | {us(p['five_forward_ticks_us'])} |"
        )
    peak = ", ".join(f"{p:.0f}" for p in dict.fromkeys(round(p["fma_peak_gmacs"]) for p in parts))
    return "\n".join(lines) + f"\n\nMultiply-add peak of one core: {peak} GMAC/s."


def model_list(text: str) -> tuple[tuple, ...]:
    """``"gru-64,mingru-64-rtrl"`` → ``(("gru", 64), ("mingru", 64, "rtrl"))``."""
    models = []
    for spec in filter(None, (part.strip() for part in text.split(","))):
        cell, _, rest = spec.partition("-")
        hidden, _, algorithm = rest.partition("-")
        if cell not in ALL_CELLS or not hidden.isdigit() or int(hidden) < 1:
            raise argparse.ArgumentTypeError(
                f"{spec!r}: expected CELL-HIDDEN[-ALGORITHM], CELL one of {', '.join(ALL_CELLS)}"
            )
        if algorithm and algorithm not in ALGORITHMS:
            raise argparse.ArgumentTypeError(
                f"{spec!r}: the algorithm is one of {', '.join(ALGORITHMS)}"
            )
        models.append((cell, int(hidden), algorithm) if algorithm else (cell, int(hidden)))
    if not models:
        raise argparse.ArgumentTypeError("no model given")
    return tuple(models)


def streams_list(text: str) -> tuple[int, ...]:
    try:
        streams = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        streams = ()
    if not streams or min(streams) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers, e.g. 1,16")
    return streams


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter timings (a smoke run)")
    parser.add_argument("--repeats", type=int, help="timed repeats, best kept (default 5)")
    parser.add_argument("--json", help="also write the results and the machine here")
    parser.add_argument(
        "--models",
        type=model_list,
        default=MODELS,
        help="comma-separated CELL-HIDDEN[-ALGORITHM], e.g. gru-64,mingru-64-rtrl "
        "(default: gru-64,lstm-64,rnn-64,gru-256)",
    )
    parser.add_argument(
        "--streams",
        type=streams_list,
        default=STREAMS,
        help="comma-separated B (default: 1,4,16,64)",
    )
    parser.add_argument(
        "--no-parts", action="store_true", help="skip where a GRU's tick goes (C++ parts)"
    )
    args = parser.parse_args()
    budget_s, repeats = (0.02, 2) if args.quick else (0.3, 5)
    repeats = args.repeats or repeats
    rows = run(budget_s, repeats, args.models, args.streams)
    m = machine()
    print(
        f"\n{m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}, core variant "
        f"{m['variant']}; best of {repeats} repeats, one thread, float32, UORO + Adam unless "
        f"named otherwise, {VOCAB}-symbol one-hot input\n"
    )
    print(table(rows))
    per_tick = tick_lines(rows)
    if per_tick:
        print("\nPer tick (least squares over B > 1):\n" + tick_text(per_tick))
    parts = None
    if not args.no_parts:
        try:
            parts = tick_parts(rows)
            print("\nWhere a tick goes (parts timed alone, in C++):\n" + parts_table(parts))
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"\nThe tick's parts skipped: {error}")
    skipped = [f"{r['model']} B={r['streams']}" for r in rows if r["skipped_ticks"]]
    if skipped:
        print("\nTicks refused by the divergence guard (random tokens): " + ", ".join(skipped))
    if args.json:
        with open(args.json, "w") as f:
            results = {"machine": m, "streams": rows, "per_tick": per_tick, "tick_parts": parts}
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
