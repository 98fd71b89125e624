"""The README's example runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has a Python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "next-character probabilities" in out and "bits/char" in out


def test_readme_many_streams_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    streams = [b for b in blocks if "streams=B" in b]
    assert streams, "the README has a many-streams example"
    exec(compile(streams[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "bits/char" in out


def test_readme_test_command_is_what_ci_runs():
    readme = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest" in readme
    assert ci.strip().splitlines()[-1] == "python -m pytest"
    assert 'pip install ".[test]"' in readme
    # CI runs it against the built, repaired wheel, installed with the same test extras.
    assert "bash tools/build_wheel.sh" in ci and '.whl)[test]"' in ci
    assert "tools/build_wheel.sh" in readme


def test_readme_own_cell_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    own = [b for b in blocks if "uoro.Learner(LeakyCell()" in b]
    assert own, "the README has a user-cell example"
    namespace: dict = {}
    exec(compile(own[0], "README.md", "exec"), namespace)
    assert re.search(r"own cell: \d\.\d{3} bits/char", capsys.readouterr().out)
    # Its vjp is right: full-window truncated BPTT equals RTRL with a finite-difference
    # tangent to the latter's accuracy.
    import numpy as np
    import pytest

    import uoro

    cell = namespace["LeakyCell"]()
    xs, ys = namespace["xs"][:12], namespace["ys"][:12]
    bptt = uoro.Learner(cell, algorithm="tbptt_chunk", truncation=12, dtype="float64")
    with pytest.warns(UserWarning, match="finite difference"):
        rtrl = uoro.Learner(cell, algorithm="rtrl", dtype="float64")
    rtrl.theta = bptt.theta
    exact = bptt.gradients(xs, ys)[1][-1]
    approx = rtrl.gradients(xs, ys)[1].sum(axis=0)
    np.testing.assert_allclose(approx, exact, atol=1e-6 * np.abs(exact).max())


def test_the_documentation_builds_without_warnings(tmp_path):
    # The site includes this README and the API pages generated from the docstrings: a
    # broken link or reference there fails the strict build.
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=README.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "own_model" / "index.html").is_file()
