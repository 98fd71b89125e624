"""The experiments of the paper's Section 4 and the `uoro experiment` command line: they
run, write what they say, reject bad options clearly, and show the truncation bias."""

from __future__ import annotations

import csv
import math
import struct
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

import uoro
from uoro import experiments, influence
from uoro.cli import SEEDS, STEP_COUNT, main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMMON_OPTIONS = [
    "--algorithm",
    "--truncation",
    "--memory",
    "--rank",
    "--lr",
    "--lr-decay",
    "--steps",
    "--seeds",
    "--jobs",
    "--chunk",
    "--out",
    "--progress",
]
OPTIONS = {
    "influence": ["--preset", "--units", "--minus", *COMMON_OPTIONS],
    "brackets": [
        "--preset",
        "--repeat",
        "--gap",
        "--alphabet",
        "--cell",
        "--hidden",
        "--optimizer",
        *COMMON_OPTIONS,
    ],
    "anbn": [
        "--preset",
        "--min-n",
        "--max-n",
        "--cell",
        "--hidden",
        "--optimizer",
        *COMMON_OPTIONS,
    ],
    "text": ["--cell", "--hidden", "--optimizer", *COMMON_OPTIONS],
}


def invoke(*args: str) -> click.testing.Result:
    result = CliRunner().invoke(main, ["experiment", *args], catch_exceptions=False)
    return result


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 300 and height >= 200
    assert len(data) > 10_000  # axes, curves and labels, not an empty canvas


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on the mat.\nthe dog sat on the log.\n" * 20, encoding="utf-8")
    return path


# ---- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_help_lists_every_option(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    for option in OPTIONS[command]:
        assert option in result.output, option
    group = CliRunner().invoke(main, ["experiment", "--help"])
    assert command in group.output


def test_module_entry_point_runs():
    completed = subprocess.run(
        [sys.executable, "-m", "uoro", "experiment", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    for command in OPTIONS:
        assert command in completed.stdout


@pytest.mark.parametrize(
    ("command", "extra", "columns"),
    [
        (
            "influence",
            ["--algorithm", "tbptt_chunk", "--truncation", "10"],
            ["step", "loss", "cumulative_loss", "theta", "elapsed_seconds"],
        ),
        (
            "brackets",
            ["--cell", "lstm", "--hidden", "16"],
            ["step", "loss", "cumulative_loss", "elapsed_seconds"],
        ),
        ("anbn", ["--memory", "2"], ["step", "loss", "cumulative_loss", "elapsed_seconds"]),
        (
            "text",
            ["--algorithm", "tbptt", "--truncation", "3", "--hidden", "16"],
            ["step", "loss", "cumulative_loss", "elapsed_seconds"],
        ),
    ],
)
def test_each_experiment_writes_csv_png_and_summary(tmp_path, text_file, command, extra, columns):
    out = tmp_path / "out"
    arguments = [command] + ([str(text_file)] if command == "text" else [])
    result = invoke(
        *arguments,
        *extra,
        "--steps",
        "2.5e3",
        "--chunk",
        "1000",
        "--seeds",
        "0,3",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    run_files = sorted(out.glob(f"{command}-*.csv"))
    run_files = [path for path in run_files if not path.name.endswith("summary.csv")]
    assert len(run_files) == 2  # one per seed
    assert {path.stem.rsplit("-", 1)[1] for path in run_files} == {"seed0", "seed3"}
    for path in run_files:
        rows = read_csv(path)
        assert list(rows[0]) == columns
        assert [int(row["step"]) for row in rows] == [1000, 2000, 2500]
        losses = np.array([float(row["loss"]) for row in rows])
        cumulative = np.array([float(row["cumulative_loss"]) for row in rows])
        assert np.all(np.isfinite(losses)) and np.all(losses >= 0)
        # The cumulative average is the chunk means weighted by the chunk lengths.
        assert cumulative[-1] == pytest.approx(np.dot(losses, [1000, 1000, 500]) / 2500)
    assert_valid_png(out / f"{command}.png")
    summary = read_csv(out / f"{command}-summary.csv")
    assert [row["seed"] for row in summary] == ["0", "3"]
    assert all(row["steps"] == "2500" and row["status"] == "ok" for row in summary)
    assert "recent" in result.output and summary[0]["configuration"] in result.output


def test_token_losses_are_bits_per_character(tmp_path):
    out = tmp_path / "out"
    assert (
        invoke(
            "anbn",
            "--steps",
            "200",
            "--chunk",
            "100",
            "--lr",
            "1e-12",
            "--init",
            "library",  # small input weights: the untrained model predicts near uniformly
            "--out",
            str(out),
            "--no-progress",
        ).exit_code
        == 0
    )
    first = read_csv(next(out.glob("anbn-k1l32-*seed0.csv")))[0]
    # A (practically) untrained 3-way softmax is near log2(3) bits, not ln(3) nats.
    assert float(first["loss"]) == pytest.approx(math.log2(3), rel=0.1)


@pytest.mark.parametrize(
    ("command", "labels"),
    [
        (
            "brackets",
            {
                f"{cell} {algorithm} η=0.001"
                for cell in ("GRU", "LSTM")
                for algorithm in ("UORO", "tBPTT T=4")
            },
        ),
        (
            "anbn",
            {
                f"{cell} {algorithm} η=0.001"
                for cell in ("GRU", "LSTM")
                for algorithm in (
                    "UORO",
                    "UORO memory-2",
                    "UORO memory-16",
                    "tBPTT T=1",
                    "tBPTT T=2",
                    "tBPTT T=16",
                )
            },
        ),
        (
            "influence",
            {
                f"{algorithm} η={lr:g}"
                for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
                for algorithm in ("UORO", "tBPTT T=1", "tBPTT T=10", "tBPTT T=100")
            },
        ),
    ],
)
def test_paper_preset_runs_the_papers_configurations(tmp_path, command, labels):
    out = tmp_path / "out"
    jobs = "2" if command == "brackets" else "1"
    result = invoke(
        command,
        "--preset",
        "paper",
        "--steps",
        "1000",
        "--chunk",
        "500",
        "--jobs",
        jobs,
        "--out",
        str(out),
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    summary = read_csv(out / f"{command}-paper-summary.csv")
    assert {row["configuration"] for row in summary} == labels
    assert len(summary) == len(labels)
    assert len([p for p in out.glob("*.csv") if not p.name.endswith("summary.csv")]) == len(labels)
    assert_valid_png(out / f"{command}-paper.png")


def test_paper_preset_settings():
    for config in experiments.paper_configs("anbn", steps=10):
        assert (config.hidden, config.optimizer, config.lr, config.lr_decay) == (
            64,
            "adam",
            1e-3,
            0.03,
        )
        assert config.data == {"k": 1, "l": 32}
    for config in experiments.paper_configs("brackets", steps=10):
        assert (config.hidden, config.lr, config.lr_decay) == (64, 1e-3, 0.015)
        assert config.data == {"s": 1, "k": 5, "a": 10}
    for config in experiments.paper_configs("influence", steps=10):
        assert config.lr_decay == 1.0 and config.data == {"n": 23, "n_minus": 13}
    for name in ("anbn", "brackets"):
        inits = {
            c.cell: (c.input_std, c.forget_bias) for c in experiments.paper_configs(name, steps=10)
        }
        # As the authors' code (see PAPER_INIT).
        assert inits == {"gru": (1.0, 0.0), "lstm": (pytest.approx(3**-0.5), -0.3)}
    with pytest.raises(ValueError, match="no paper preset"):
        experiments.paper_configs("text", steps=10)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["anbn", "--steps", "1.5"], "'--steps'"),
        (["anbn", "--steps", "lots"], "is not a number"),
        (["anbn", "--steps", "0"], "whole number >= 1"),
        (["anbn", "--seeds", "two"], "'--seeds'"),
        (["anbn", "--seeds", "0"], "count of seeds must be >= 1"),
        (["anbn", "--seeds", "1,1"], "seed listed twice"),
        (["anbn", "--algorithm", "bptt"], "'--algorithm'"),
        (["anbn", "--cell", "transformer"], "'--cell'"),
        (["anbn", "--jobs", "0"], "'--jobs'"),
        (["anbn", "--lr", "0"], "'--lr'"),
        (["anbn", "--algorithm", "tbptt_chunk"], "needs --truncation"),
        (["anbn", "--truncation", "4"], "truncation applies to"),
        (["anbn", "--algorithm", "rtrl", "--memory", "2"], "memory applies to"),
        (["anbn", "--min-n", "5", "--max-n", "2"], "'--min-n'"),
        (["anbn", "--preset", "paper", "--cell", "lstm"], "fixes --cell"),
        (["anbn", "--preset", "fig3"], "'--preset'"),
        (["anbn", "--preset", "paper", "--init", "library"], "fixes --init"),
        (["anbn", "--init", "xavier"], "'--init'"),
        (["influence", "--minus", "30"], "'--minus'"),
        (["influence", "--cell", "gru"], "No such option"),
        (["text", "no-such-file.txt"], "does not exist"),
    ],
)
def test_bad_options_give_a_clear_usage_error(tmp_path, arguments, message):
    result = CliRunner().invoke(main, ["experiment", *arguments, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("*.csv"))  # nothing ran


def test_step_count_and_seeds_notation():
    assert STEP_COUNT.convert("1e6", None, None) == 1_000_000
    assert STEP_COUNT.convert("2_500", None, None) == 2500
    assert STEP_COUNT.convert(300, None, None) == 300
    assert SEEDS.convert("3", None, None) == (0, 1, 2)
    assert SEEDS.convert("4, 7,9", None, None) == (4, 7, 9)
    assert SEEDS.convert("7,", None, None) == (7,)


def test_init_option_resolves_per_cell(tmp_path):
    for cell, init, expected in [
        ("gru", "paper", "-gru64-in1-uoro"),
        ("rnn", "paper", "-rnn64-in1-uoro"),
        ("lstm", "paper", "-lstm64-in0.577-fb-0.3-uoro"),
        ("gru", "library", "-gru64-uoro"),
        ("lstm", "library", "-lstm64-uoro"),
    ]:
        out = tmp_path / f"{cell}-{init}"
        result = invoke(
            "anbn", "--cell", cell, "--init", init, "--steps", "100", "--chunk", "100",
            "--out", str(out), "--no-progress",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        [csv_file] = out.glob("*seed0.csv")
        assert expected in csv_file.name


# ---- the runs ----------------------------------------------------------------------------------


def test_paper_init_changes_only_the_input_weights_and_the_forget_bias():
    """input_std replaces weight_ih by seeded N(0, σ²) draws, forget_bias shifts the LSTM's
    forget-gate bias, and every other parameter keeps the learner's own seeded init."""
    library = experiments.make_learner(
        experiments.anbn_config(cell="lstm", input_std=None, forget_bias=0.0, seed=5)
    )
    paper = experiments.make_learner(experiments.anbn_config(cell="lstm", seed=5))
    again = experiments.make_learner(experiments.anbn_config(cell="lstm", seed=5))
    other_seed = experiments.make_learner(experiments.anbn_config(cell="lstm", seed=6))
    weights = paper.parameters()["weight_ih"]
    assert weights.shape == (256, 3)
    # 768 draws: the sample std is within 10 % of σ with overwhelming probability.
    assert weights.std() == pytest.approx(3**-0.5, rel=0.1)
    assert abs(weights.mean()) < 0.1
    assert np.abs(library.parameters()["weight_ih"]).max() <= 1 / 8  # PyTorch: ±1/√64
    np.testing.assert_array_equal(again.parameters()["weight_ih"], weights)
    assert not np.array_equal(other_seed.parameters()["weight_ih"], weights)
    shift = paper.parameters()["bias_ih"] - library.parameters()["bias_ih"]
    np.testing.assert_allclose(shift[64:128], -0.3, rtol=1e-6)  # forget gate: rows n..2n
    np.testing.assert_array_equal(np.delete(shift, np.s_[64:128]), 0.0)
    for name, value in library.parameters().items():
        if name not in ("weight_ih", "bias_ih"):
            np.testing.assert_array_equal(paper.parameters()[name], value)
    gru = experiments.make_learner(experiments.anbn_config(cell="gru", seed=5, hidden=16))
    assert gru.parameters()["weight_ih"].std() == pytest.approx(1.0, rel=0.15)  # 144 draws
    assert experiments.anbn_config(cell="gru").forget_bias == 0.0
    assert experiments.influence_config().input_std is None
    with pytest.raises(ValueError, match="input_std must be"):
        experiments.anbn_config(input_std=0.0)
    with pytest.raises(ValueError, match="forget_bias applies to the lstm cell only"):
        experiments.anbn_config(cell="gru", forget_bias=1.0)


def test_curve_matches_a_direct_run(monkeypatch):
    """Chunk means, cumulative and recent losses are those of the same learner fed the
    same stream by hand, in bits per character."""
    monkeypatch.setattr(experiments, "RECENT_WINDOW", 1000)
    curve = experiments.run_anbn(
        steps=3000, chunk=700, seed=3, hidden=16, cell="lstm", input_std=None, forget_bias=0.0
    )
    learner = uoro.Learner("lstm", 3, 16, lr=1e-3, lr_decay=0.03, seed=3)
    losses = learner.fit(*uoro.datasets.anbn(1, 32, seed=3).pairs(3000)) / math.log(2)
    np.testing.assert_array_equal(curve.steps, [700, 1400, 2100, 2800, 3000])
    bounds = [0, 700, 1400, 2100, 2800, 3000]
    expected = [losses[a:b].mean() for a, b in zip(bounds, bounds[1:])]
    np.testing.assert_allclose(curve.loss, expected, rtol=1e-6)
    np.testing.assert_allclose(
        curve.cumulative_loss, [losses[:b].mean() for b in bounds[1:]], rtol=1e-6
    )
    assert curve.recent_window == 1000
    assert curve.recent_loss == pytest.approx(losses[-1000:].mean(), rel=1e-6)
    assert curve.references["entropy rate"] == pytest.approx(0.14, abs=0.005)
    assert curve.references["memoryless"] == pytest.approx(0.28, abs=0.01)


@pytest.mark.parametrize(
    ("algorithm", "window"),
    [
        ({"algorithm": "uoro"}, 1),
        ({"algorithm": "uoro", "memory": 4}, 4),
        ({"algorithm": "tbptt_chunk", "truncation": 4}, 4),
        ({"algorithm": "tbptt", "truncation": 4}, 1),
    ],
)
def test_learning_rate_schedule_counts_samples(algorithm, window):
    config = experiments.anbn_config(lr=1e-2, lr_decay=0.5, hidden=8, **algorithm)
    assert config.window == window
    learner = experiments.make_learner(config)
    learner.fit(*experiments.make_stream(config).pairs(400))
    assert learner.learning_rate == pytest.approx(1e-2 / (1 + 0.5 * math.sqrt(400)), rel=1e-6)


def influence_optimum(n: int = 23, n_minus: int = 13) -> float:
    """θ* with s¹ = 1 at the fixed point s = A s + θ x of eq. 18."""
    a = np.diag(np.full(n, 0.5)) + np.diag(np.full(n - 1, 0.5), 1)
    unit_response = np.linalg.solve(np.eye(n) - a, influence.signs(n, n_minus))[0]
    return 1.0 / unit_response


@pytest.mark.parametrize(
    "truncated", [("tbptt_chunk", 1), ("tbptt_chunk", 10), ("tbptt", 1), ("tbptt", 10)]
)
def test_truncated_bptt_drives_theta_away_from_the_optimum(truncated):
    theta_star = influence_optimum()
    theta0 = 0.0
    settings = {"steps": 20_000, "chunk": 2000, "lr": 1e-3}
    exact = experiments.run_influence(algorithm="rtrl", **settings)
    # The exact online gradient finds the optimum of the task...
    assert exact.final_theta == pytest.approx(theta_star, abs=1e-3)
    assert exact.loss[-1] < 1e-3 * exact.loss[0]
    # ... truncated ones push θ the other way from where it started, and the loss grows.
    algorithm, truncation = truncated
    curve = experiments.run_influence(algorithm=algorithm, truncation=truncation, **settings)
    assert curve.theta is not None and not curve.diverged
    assert np.sign(curve.final_theta - theta0) == -np.sign(theta_star - theta0)
    assert abs(curve.final_theta - theta_star) > 2 * abs(theta0 - theta_star)
    assert curve.loss[-1] > curve.loss[0]


def test_uoro_finds_the_influence_optimum():
    curve = experiments.run_influence(steps=50_000, chunk=5000, seed=1)
    assert curve.final_theta == pytest.approx(influence_optimum(), abs=1e-3)
    assert curve.loss[-1] < 1e-4 * curve.loss[0]


def test_a_diverging_run_is_reported_not_raised(tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "influence",
        "--algorithm",
        "tbptt_chunk",
        "--truncation",
        "10",
        "--lr",
        "0.03",
        "--steps",
        "1e5",
        "--out",
        str(out),
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "diverged at" in result.output
    summary = read_csv(out / "influence-summary.csv")[0]
    assert summary["status"].startswith("diverged at")
    diverged_at = int(summary["status"].split()[-1])
    rows = read_csv(next(p for p in out.glob("influence-*.csv") if "summary" not in p.name))
    assert int(rows[-1]["step"]) < diverged_at <= 100_000
    assert all(math.isfinite(float(row["theta"])) for row in rows)
    assert_valid_png(out / "influence.png")


def test_import_uoro_needs_none_of_the_cli_dependencies():
    code = (
        "import sys\n"
        "for name in ('click', 'tqdm', 'matplotlib'): sys.modules[name] = None\n"
        "import uoro, uoro.experiments\n"
        "curve = uoro.experiments.run_influence(steps=100, chunk=50)\n"
        "assert curve.steps_done == 100\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_many_names_a_failing_run_and_finishes_the_others(tmp_path, jobs):
    good = [experiments.influence_config(steps=500, chunk=250, seed=seed) for seed in (0, 1)]
    missing = experiments.text_config(tmp_path / "nowhere.txt", hidden=8, steps=100, chunk=50)
    with pytest.raises(experiments.RunsFailed, match="1 of 3 run") as raised:
        experiments.run_many([good[0], missing, good[1]], jobs=jobs)
    [failure] = raised.value.failures
    assert failure.config == missing
    assert str(failure).startswith(f"{missing.label} seed 0: FileNotFoundError:")
    assert [curve.config for curve in raised.value.curves] == good
    assert experiments.run_many(good, jobs=jobs)[1].final_theta == pytest.approx(
        raised.value.curves[1].final_theta, abs=0
    )


def test_cli_reports_a_failing_run_by_name_and_keeps_the_others(monkeypatch, tmp_path):
    run = experiments.run

    def run_failing_seed_1(config, progress=None):
        if config.seed == 1:
            raise RuntimeError("worker lost")
        return run(config, progress)

    monkeypatch.setattr(experiments, "run", run_failing_seed_1)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["experiment", "influence", "--seeds", "3", "--steps", "200", "--chunk", "100"]
        + ["--out", str(out)],
    )
    assert result.exit_code == 1, result.output
    assert "FAILED UORO η=0.0003 seed 1: RuntimeError: worker lost" in result.output
    assert "1 of 3 run(s) failed" in result.output and "Traceback" not in result.output
    assert sorted(row["seed"] for row in read_csv(out / "influence-summary.csv")) == ["0", "2"]
    assert len(list(out.glob("*seed*.csv"))) == 2
