"""benchmarks/streams_learning_curves.py at quick sizes (GRU-8 on aⁿbⁿ, B = 1 and 4,
4 000 samples for B = 1): every row and column, B = 1's target and time, the B > 1 runs'
budget, variants reaching the learner, and the parsing of ``--variant``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import streams_learning_curves as slc  # noqa: E402

import uoro  # noqa: E402
from uoro import experiments  # noqa: E402

SIZES, HIDDEN, STREAMS = slc.QUICK, slc.QUICK_HIDDEN, slc.QUICK_STREAMS
VARIANTS = (
    slc.Variant("default"),
    slc.Variant("frozen", {"lr": 0}),  # θ must not move
    slc.Variant("sqrt", {"lr_scale": "sqrt", "rank": "B"}),  # lr × √4 = 2, rank 4
)
COLUMNS = {field.name for field in dataclasses.fields(slc.Run)}


@pytest.fixture(scope="module")
def runs():
    """The rows of a quick run, and each run's learner with its starting θ, in order."""
    made = []
    original = slc.new_learner

    def recording(*args, **kwargs):
        learner = original(*args, **kwargs)
        made.append((learner, learner.theta.copy()))
        return learner

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(slc, "new_learner", recording)
        rows = slc.run(["anbn"], ["gru"], HIDDEN, STREAMS, SIZES, VARIANTS)
    assert len(made) == len(rows)
    return rows, made


def by_key(rows):
    return {(r.variant, r.streams): r for r in rows}


def test_a_row_per_variant_and_streams_with_every_column(runs):
    rows, _ = runs
    assert [(r.variant, r.streams) for r in rows] == [
        (slc.BASELINE, 1),
        ("default", 4),
        ("frozen", 4),
        ("sqrt", 4),
    ]
    for row in rows:
        values = dataclasses.asdict(row)
        assert set(values) == COLUMNS
        assert (row.task, row.cell, row.hidden) == ("anbn", "gru", HIDDEN)
        assert row.chunk_ticks == SIZES.chunk // row.streams
        assert row.samples == row.curve_samples[-1] and row.wall_s == row.curve_seconds[-1]
        assert row.samples_per_s == pytest.approx(row.samples / row.wall_s)
        assert len(row.curve_samples) == len(row.curve_seconds) == len(row.curve_loss)
        assert np.all(np.diff(row.curve_samples) == SIZES.chunk)  # whole chunks of B ticks
        assert np.all(np.diff(row.curve_seconds) > 0)
        assert np.all(np.isfinite(row.curve_loss)) and row.resets == row.skipped_ticks == 0
    text = slc.table(rows, "anbn", "gru")
    assert text.splitlines()[0] == (
        "| variant | B | samples | wall s | samples/s | final loss (bits/char) "
        "| time to B = 1's loss (s) | ratio to W1 | loss after B = 1's samples |"
    )
    assert len(text.splitlines()) == 2 + len(rows)
    for row in rows:
        assert sum(f"| {row.variant} | {row.streams} |" in line for line in text.splitlines()) == 1


def test_the_target_is_the_baselines_mean_loss_over_its_last_tenth(runs):
    rows, _ = runs
    baseline = by_key(rows)[slc.BASELINE, 1]
    assert baseline.samples == SIZES.samples and SIZES.window == SIZES.samples // 10
    # From the curve: the trailing chunks until they hold the window (exactly here).
    sizes = np.diff(baseline.curve_samples, prepend=0)
    last = np.cumsum(sizes[::-1]).searchsorted(SIZES.window) + 1
    assert sizes[-last:].sum() == SIZES.window
    by_hand = np.average(baseline.curve_loss[-last:], weights=sizes[-last:])
    assert baseline.target_loss == pytest.approx(by_hand, rel=1e-12)
    assert baseline.final_loss == baseline.target_loss
    for row in rows:
        assert row.target_loss == baseline.target_loss
        assert row.baseline_wall_s == baseline.wall_s


def test_the_loss_after_the_baselines_samples_is_the_window_where_b_streams_reach_them(runs):
    rows, _ = runs
    baseline = by_key(rows)[slc.BASELINE, 1]
    assert baseline.loss_at_baseline_samples == baseline.target_loss
    # A curve of chunks of 300 samples, window 1000: B = 1's 4000 samples are first
    # reached at the end of chunk 13 (3900 < 4000 <= 4200), whose window is chunks 10-13.
    sizes = slc.Sizes(samples=4_000, chunk=300, window_fraction=0.25)
    loss = [float(i) for i in range(20)]
    curve = slc.Curve(
        samples=[300 * (i + 1) for i in range(20)], seconds=[0.1 * (i + 1) for i in range(20)],
        loss=loss,
    )  # fmt: skip
    labels = {"task": "anbn", "cell": "gru", "hidden": 8, "variant": "v", "seed": 0}
    row = slc.make_run(curve, sizes, 5.0, 1.0, 4_000, **labels, streams=4, options={})
    assert row.loss_at_baseline_samples == pytest.approx(np.mean(loss[10:14]), rel=1e-12)
    short = slc.make_run(curve, sizes, 5.0, 1.0, 6_001, **labels, streams=4, options={})
    assert short.loss_at_baseline_samples is None  # never as many samples as B = 1


def test_the_baselines_curve_is_its_losses_in_bits(runs):
    # The same learner over the same stream in one `fit`: its last tenth's mean in bits.
    rows, _ = runs
    baseline = by_key(rows)[slc.BASELINE, 1]
    learner = uoro.Learner("gru", 3, HIDDEN, **baseline.options)
    learner.theta = slc.initial_theta("anbn", "gru", HIDDEN, 0, "paper")
    xs, ys = uoro.datasets.anbn(**experiments.ANBN, seed=0).pairs(SIZES.samples)
    losses = learner.fit(xs, ys).astype(np.float64)
    assert baseline.target_loss == pytest.approx(
        losses[-SIZES.window :].mean() / math.log(2), rel=1e-5
    )
    chunk = SIZES.chunk
    assert baseline.curve_loss[0] == pytest.approx(losses[:chunk].mean() / math.log(2), rel=1e-5)


def test_the_baseline_reaches_its_own_loss_within_its_time(runs):
    rows, _ = runs
    baseline = by_key(rows)[slc.BASELINE, 1]
    assert baseline.time_to_target_s is not None
    assert baseline.time_to_target_s <= baseline.wall_s
    assert baseline.ratio_to_baseline == pytest.approx(baseline.time_to_target_s / baseline.wall_s)
    assert baseline.ratio_to_baseline <= 1


def test_more_streams_learn_for_the_baselines_time(runs):
    rows, _ = runs
    w1 = by_key(rows)[slc.BASELINE, 1].wall_s
    for row in rows:
        if row.streams == 1:
            continue
        cap = SIZES.samples * SIZES.max_factor
        assert row.wall_s >= w1 or row.samples >= cap, row.variant
        assert len(row.curve_seconds) == 1 or row.curve_seconds[-2] < w1  # then stopped
        assert row.samples <= cap
        if row.time_to_target_s is not None:
            assert row.ratio_to_baseline == pytest.approx(row.time_to_target_s / w1)
            reached = row.curve_seconds.index(row.time_to_target_s)
            loss = slc.windowed(row.curve_samples, row.curve_loss, SIZES.window)
            assert loss[reached] <= row.target_loss
            assert not np.any(loss[:reached] <= row.target_loss)  # the first such chunk


def test_a_variants_options_reach_the_learner(runs):
    rows, made = runs
    learners = {(r.variant, r.streams): made[i] for i, r in enumerate(rows)}
    frozen, theta0 = learners["frozen", 4]
    assert frozen.config["lr"] == 0 and frozen.samples_seen > 0
    np.testing.assert_array_equal(frozen.theta, theta0)
    moved, theta0 = learners["default", 4]
    assert not np.array_equal(moved.theta, theta0)
    # Every run starts from the same θ, whatever B and variant.
    for _, start in made:
        np.testing.assert_array_equal(start, made[0][1])
    assert by_key(rows)["frozen", 4].options["lr"] == 0


def test_lr_scale_sqrt_multiplies_the_tasks_lr_by_the_root_of_b(runs):
    rows, made = runs
    learners = {(r.variant, r.streams): made[i][0] for i, r in enumerate(rows)}
    scaled = learners["sqrt", 4]
    assert scaled.config["lr"] == pytest.approx(2 * experiments.ANBN_LR)
    assert scaled.config["rank"] == 4  # "B": the run's B
    assert learners["default", 4].config["lr"] == pytest.approx(experiments.ANBN_LR)
    assert learners["default", 4].config["rank"] == 1
    base = slc.base_options("brackets")
    for scale, factor in (("sqrt", 4.0), ("linear", 16.0), ("none", 1.0)):
        options = slc.Variant("v", {"lr_scale": scale}).learner_options(base, 16)
        assert options["lr"] == pytest.approx(factor * experiments.BRACKETS_LR)
        assert options["lr_decay"] == experiments.BRACKETS_LR_DECAY
    own = slc.Variant("v", {"lr": 0.004, "lr_scale": "sqrt", "stream_groups": "B"})
    options = own.learner_options(base, 16)
    assert options["lr"] == pytest.approx(0.016) and options["stream_groups"] == 16
    assert "lr_scale" not in options


def test_the_windowed_loss_spans_whole_chunks():
    samples, loss = [3, 6, 10, 14], [4.0, 2.0, 1.0, 0.5]
    got = slc.windowed(samples, loss, window=7)
    assert np.isnan(got[0]) and np.isnan(got[1])
    assert got[2] == pytest.approx((3 * 2 + 4 * 1) / 7)  # the last two chunks hold 7
    assert got[3] == pytest.approx((4 * 1 + 4 * 0.5) / 8)  # 4 < 7: the chunk before too
    assert slc.windowed(samples, loss, window=4)[3] == pytest.approx(0.5)  # one chunk
    assert np.isnan(slc.windowed(samples, loss, window=15)).all()  # never 15 samples


def test_variants_are_parsed():
    variant = slc.parse_variant("groups:stream_groups=B, lr=4e-3,lr_scale=sqrt,rank=2")
    assert variant.name == "groups"
    assert variant.options == {"stream_groups": "B", "lr": 0.004, "lr_scale": "sqrt", "rank": 2}
    assert isinstance(variant.options["rank"], int)
    assert slc.parse_variant("plain") == slc.Variant("plain")
    assert slc.parse_variant("plain:") == slc.Variant("plain")
    assert slc.parse_variant("r:train_readout=False").options == {"train_readout": False}
    assert slc.parse_variant("o:optimizer=sgd").options == {"optimizer": "sgd"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lr=0.1", "a name first"),
        (":lr=0.1", "a name first"),
        ("x:lr", "'lr' is not key=value"),
        ("x:lr=", "'lr=' is not key=value"),
        ("x:=3", "'=3' is not key=value"),
        ("x:lr=1,,rank=2", "'' is not key=value"),
        ("x:learning_rate=1", "not an option of uoro.Learner"),
        ("x:streams=4", "set by the benchmark"),
        ("x:lr=1,lr=2", "given twice"),
        ("x:lr_scale=cube", "lr_scale is one of none, sqrt, linear"),
        ("baseline:lr=1", "names the B = 1 runs"),
    ],
)
def test_a_malformed_variant_is_refused_with_a_clear_error(spec, message, monkeypatch, capsys):
    with pytest.raises(argparse.ArgumentTypeError, match="expected NAME:key=value") as error:
        slc.parse_variant(spec)
    assert message in str(error.value)
    monkeypatch.setattr(sys, "argv", ["streams_learning_curves.py", "--quick", "--variant", spec])
    with pytest.raises(SystemExit) as exit_:
        slc.main()
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_variant_the_library_refuses_stops_the_run_before_it_starts(monkeypatch, capsys):
    # stream_groups must be at most B: refused at B = 4, before any learning.
    monkeypatch.setattr(slc, "learn", lambda *args: pytest.fail("learned"))
    argv = ["--quick", "--variant", "big:stream_groups=16"]
    monkeypatch.setattr(sys, "argv", ["streams_learning_curves.py", *argv])
    with pytest.raises(SystemExit) as exit_:
        slc.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "variant 'big:stream_groups=16' at B=4" in err
    assert "stream_groups must be at most streams" in err


def test_two_variants_of_one_name_are_refused(monkeypatch, capsys):
    argv = ["--quick", "--variant", "a:lr=1", "--variant", "a:lr=2"]
    monkeypatch.setattr(sys, "argv", ["streams_learning_curves.py", *argv])
    with pytest.raises(SystemExit):
        slc.main()
    assert "--variant names must differ" in capsys.readouterr().err


def test_the_command_line_prints_the_tables_and_writes_json_and_plot(tmp_path, monkeypatch, capsys):
    path, figure = tmp_path / "rows.json", tmp_path / "curves.png"
    argv = ["--quick", "--json", str(path), "--variant", "lr2x:lr_scale=linear"]
    try:
        slc.pyplot()
        argv += ["--plot", str(figure)]
    except RuntimeError:
        figure = None
    monkeypatch.setattr(sys, "argv", ["streams_learning_curves.py", *argv])
    slc.main()
    printed = capsys.readouterr().out
    assert "core variant" in printed  # the machine line
    assert printed.count("| variant | B | samples |") == len(slc.TASKS) * len(slc.DEFAULT_CELLS)
    assert "| lr2x | 4 |" in printed and f"| {slc.BASELINE} | 1 |" in printed
    written = json.loads(path.read_text())
    assert written["machine"]["variant"] == uoro._core.VARIANT
    assert written["settings"]["hidden"] == HIDDEN and written["settings"]["streams"] == [1, 4]
    assert written["settings"]["variants"] == [{"name": "lr2x", "options": {"lr_scale": "linear"}}]
    assert len(written["rows"]) == len(slc.TASKS) * len(slc.DEFAULT_CELLS) * 2
    for row in written["rows"]:
        assert set(row) == COLUMNS and len(row["curve_loss"]) == len(row["curve_samples"])
        assert row["options"]["lr"] == pytest.approx(
            slc.TASK_OPTIONS[row["task"]]["lr"] * row["streams"]
        )
    if figure is not None:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_several_seeds_run_in_turn_and_are_summarized(tmp_path, monkeypatch, capsys):
    path = tmp_path / "rows.json"
    argv = [
        "--quick",
        "--tasks",
        "anbn",
        "--cells",
        "gru",
        "--seeds",
        "0",
        "1",
        "--json",
        str(path),
    ]
    monkeypatch.setattr(sys, "argv", ["streams_learning_curves.py", *argv])
    slc.main()
    printed = capsys.readouterr().out
    assert "seeds 0, 1, one thread" in printed
    assert printed.count("| variant | B | samples |") == 2  # one table per seed
    assert "| variant | B | seed 0 | seed 1 | at most 0.5 of W1 |" in printed
    written = json.loads(path.read_text())
    assert written["settings"]["seeds"] == [0, 1]
    assert [(r["seed"], r["streams"]) for r in written["rows"]] == [(0, 1), (0, 4), (1, 1), (1, 4)]
    first, second = (r for r in written["rows"] if r["streams"] == 1)
    assert first["curve_loss"] != second["curve_loss"]  # another initial θ, other signs


def test_the_seed_summary_counts_the_seeds_within_half_of_w1():
    def row(seed, streams, ratio, target=0.2, half_loss=0.2):
        # B = 1 learns for 2 s; a B = 16 run's loss after 1 s (half of W1) is half_loss,
        # and after that its loss is far above every target (a window of one sample).
        return slc.Run(
            task="anbn", cell="gru", hidden=8, variant="default", streams=streams, seed=seed,
            options={}, chunk_ticks=1, samples=2, wall_s=2.0, samples_per_s=1.0,
            final_loss=0.2, target_loss=target, baseline_wall_s=2.0, time_to_target_s=ratio,
            ratio_to_baseline=ratio, loss_at_baseline_samples=0.19 + seed / 100, resets=0,
            skipped_ticks=0, curve_samples=[1, 2], curve_seconds=[0.9, 1.5],
            curve_loss=[half_loss, 5.0],
        )  # fmt: skip

    targets, halves = [0.20, 0.22, 0.24, 0.26], [0.19, 0.23, 0.25, 0.30]
    ratios = [0.46, 0.5, None, 0.91]
    rows = [row(s, 1, 1.0, target=targets[s]) for s in range(4)]
    rows += [row(s, 16, ratios[s], targets[s], halves[s]) for s in range(4)]
    summary = slc.seed_summary(rows, "anbn", "gru", [0, 1, 2, 3], window=1)
    lines = summary.splitlines()
    assert "| default | 16 | 0.46 | 0.50 | — | 0.91 | 2 of 4 |" in lines
    assert (
        "| default | 16 | 0.190 (0.200) | 0.200 (0.220) | 0.210 (0.240) | 0.220 (0.260) |" in lines
    )
    # Below the targets: 0.19 all four, 0.23 two, 0.25 one, 0.30 none: 7 of 16 pairs.
    assert lines[-1] == "| default | 16 | 0.230 | 0.240 | 0.44 |"


def test_seed_and_seeds_are_refused_together(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["streams_learning_curves.py", "--seed", "1", "--seeds", "0"])
    with pytest.raises(SystemExit):
        slc.main()
    assert "not allowed with argument" in capsys.readouterr().err


def test_plot_without_matplotlib_says_what_it_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    with pytest.raises(RuntimeError, match=r"--plot needs matplotlib"):
        slc.pyplot()
