"""The scripts in examples/ run, with tiny step counts, and print what they promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no warnings either
    return result.stdout


def test_every_example_is_tested_and_documented():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == [
        "checkpoint_resume.py",
        "forecast_signal.py",
        "many_streams.py",
        "next_char.py",
        "own_cell.py",
        "river_pipeline.py",
    ]
    for script in scripts:
        text = (EXAMPLES / script).read_text(encoding="utf-8")
        assert text.startswith('"""'), f"{script} starts with its documentation"
        assert "--steps" in text


def test_next_char_on_the_sample_text():
    out = run("next_char.py", "--steps", "600", "--report", "200", "--hidden", "16")
    assert re.search(
        r"^text: sample\.txt, \d+ characters, \d+ distinct; unigram entropy "
        r"\d\.\d{3} bits/char$",
        out,
        re.M,
    )
    assert len(re.findall(r"^step +[\d,]+  bits/char \d+\.\d{3}$", out, re.M)) == 3
    assert re.search(r"^final: \d+\.\d{3} bits/char over the last 600 characters", out, re.M)


def test_next_char_on_a_given_file(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("abcabcabd\n" * 20, encoding="utf-8")
    out = run("next_char.py", str(text), "--steps", "100", "--report", "50", "--algorithm", "tbptt")
    assert "text: tiny.txt, 200 characters, 5 distinct" in out
    assert "algorithm='tbptt'" in out


def test_forecast_signal():
    out = run("forecast_signal.py", "--steps", "400", "--report", "100", "--regime", "200")
    rows = re.findall(r"^ +[\d,]+-[\d,]+ +(\d+\.\d{4}) +(\d+\.\d{4})", out, re.M)
    assert len(rows) == 4
    assert out.count("<- regime change") == 1
    assert re.search(r"^final: mse \d+\.\d{4} over the last 100 steps", out, re.M)


def test_checkpoint_resume_is_bit_identical(tmp_path):
    checkpoint = tmp_path / "run.npz"
    out = run("checkpoint_resume.py", "--steps", "60", "--checkpoint", str(checkpoint))
    assert "bit-identical continuation: True" in out
    assert checkpoint.is_file()
    rows = re.findall(r"^ +[\d,]+ +(\d+\.\d{6}) +(\d+\.\d{6})$", out, re.M)
    assert len(rows) == 5 and all(a == b for a, b in rows)


def test_own_cell_learns_as_the_builtin_cell():
    out = run("own_cell.py", "--steps", "300", "--cell", "lstm", "--hidden", "4")
    assert "aⁿbⁿ, LSTM-4, UORO + Adam, 300 steps" in out
    rows = re.findall(r"(NumPy|built-in) cell: (\d\.\d{4}) bits/char", out)
    assert len(rows) == 2 and rows[0][1] == rows[1][1]
    gap = float(re.search(r"losses: ([\d.e+-]+)", out).group(1))
    assert gap < 1e-9


def test_river_pipeline():
    out = run("river_pipeline.py", "--steps", "300")
    assert re.search(r"StandardScaler \| RecurrentRegressor +MAE: \d", out)
    assert re.search(r"OneHotEncoder \| RecurrentClassifier +Accuracy: \d", out)
    assert "running mean" in out and "class prior" in out


def test_many_streams():
    out = run("many_streams.py", "--streams", "4", "--steps", "300", "--report", "100")
    assert "4 streams of distant brackets, 300 ticks" in out
    assert len(re.findall(r"^tick +[\d,]+  bits/char \d+\.\d{3}$", out, re.M)) == 3
    assert re.search(r"^final: one model over 4 streams: \d+\.\d{3} bits/char", out, re.M)
    assert re.search(r"4 separate learners: +\d+\.\d{3} bits/char", out)
