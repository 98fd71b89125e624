"""The hand-written reference steps the benchmark times the library against
(benchmarks/reference/: for the GRU the plain gru_uoro_adam.cpp and the fastest,
gru_uoro_adam_fused.cpp; for the LSTM and the RNN the fastest, lstm_uoro_adam_fused.cpp
and rnn_uoro_adam_fused.cpp), built as the benchmark builds them, must learn exactly as
the library does, or the comparison is not like for like: from the same θ₀ and sign
generator, on the same tokens, each gives the same losses and the same final θ as the
library's learner of that cell (float64, to rounding)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import uoro

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_step  # noqa: E402


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    return bench_step.build_references(tmp_path_factory.mktemp("reference"))


REFERENCE_STEPS = [(cell, name) for cell, names in bench_step.REFERENCES.items() for name in names]


@pytest.mark.parametrize(("cell", "name"), REFERENCE_STEPS)
def test_reference_step_follows_the_library(binaries, cell, name):
    # 11 units: the references' per-unit loops run whole SIMD packets and a scalar rest.
    inputs, hidden, outputs, steps, lr = 5, 11, 4, 400, 3e-3
    binary = binaries[cell][name]
    learner = uoro.Learner(
        cell, inputs, hidden, output_size=outputs, dtype="float64", lr=lr, seed=3
    )
    start = learner.state_dict()
    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, inputs, steps), rng.integers(0, outputs, steps)
    problem = [
        f"{inputs} {hidden} {outputs} {steps} {lr!r}",
        " ".join(repr(float(p)) for p in start["theta"]),
        " ".join(str(int(word)) for word in start["rng_state"]),
        *(f"{x} {y}" for x, y in zip(xs, ys)),
    ]
    out = subprocess.run(
        [str(binary), "check"], input="\n".join(problem), capture_output=True, text=True, check=True
    )
    numbers = np.array(out.stdout.split(), dtype=float)
    ref_losses, ref_theta = numbers[:steps], numbers[steps:]

    losses = learner.fit(xs, ys)
    assert ref_theta.size == learner.n_params
    np.testing.assert_allclose(ref_losses, losses, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref_theta, learner.theta, rtol=1e-10, atol=1e-12)
    # The run moved θ well beyond rounding, so the agreement is not vacuous.
    assert np.abs(learner.theta - start["theta"]).max() > 0.05


def test_a_reference_row_per_model_has_every_column(binaries):
    rows = [
        bench_step.against_reference(binaries[cell], 8, budget_s=0.005, pairs=2, cell=cell)
        for cell in bench_step.REFERENCES
    ]
    for row, cell in zip(rows, bench_step.REFERENCES):
        assert row["cell"] == cell and row["model"] == f"{cell.upper()}-8"
        assert row["library_us"] > 0 and row["reference_us"] > 0
        assert row["pairs"] == 2 and row["library_over_reference"] > 0
        assert set(row["references"]) == set(bench_step.REFERENCES[cell])
        assert row["best_reference"] in row["references"]
        for reference in row["references"].values():
            assert reference["us"] > 0 and reference["library_over"] > 0
    table = bench_step.reference_table(rows)
    assert all(f"library / {name}" in table for name in ("plain", "fused"))
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    header = [x.strip() for x in lines[0].split("|")]
    plain = [header.index("µs/sample, plain reference"), header.index("library / plain")]
    for line in lines[2:]:
        cells = [x.strip() for x in line.split("|")]
        expected = cells[1].startswith("GRU-")  # the plain reference is the GRU's only
        assert [cells[k] != "–" for k in plain] == [expected, expected]
    assert {line.split("|")[1].strip() for line in lines[2:]} == {"GRU-8", "LSTM-8", "RNN-8"}


def test_a_row_against_one_binary_keeps_its_columns(binaries):
    row = bench_step.against_reference(binaries["gru"]["plain"], 8, budget_s=0.005, pairs=2)
    assert set(row["references"]) == {"plain"} and row["best_reference"] == "plain"
    assert "| GRU-8 |" in bench_step.reference_table([row])


@pytest.mark.parametrize("cell", sorted(bench_step.REFERENCES))
def test_each_fused_reference_times_its_phases(binaries, cell):
    phases = bench_step.fused_phases(binaries[cell]["fused"], hidden=16, repeats=1)
    assert set(phases) == {
        "forward",
        "tangent and normalizers",
        "cell pass",
        "readout pass",
        "adam alone",
    }
    assert all(v > 0 for v in phases.values())


def test_the_library_step_and_its_parts_beside_the_fused_phases(binaries, tmp_path):
    parts = bench_step.step_parts(
        bench_step.compile_reference(bench_step.STEP_PARTS, tmp_path), hidden=16
    )
    assert set(parts) == {
        "step",
        "forward",
        "estimator",
        "tangent",
        "cotangents",
        "signs",
        "adam",
        "refused",
    }
    assert parts["refused"] == 0  # every timed update was a full one
    assert all(v > 0 for k, v in parts.items() if k != "refused")
    phases = bench_step.fused_phases(binaries["gru"]["fused"], hidden=16, repeats=1)
    row = {"hidden": 16, "library_parts": parts, "fused_phases": phases}
    table = bench_step.parts_table([row])
    assert "| 16 units |" in table and "fused reference: cell pass" in table
