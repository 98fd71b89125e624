"""benchmarks/tune_river_defaults.py on a slice and a two-candidate grid: it ranks the
candidates by their first-half ratio and reports both halves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("river")
pytest.importorskip("click")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import tune_river_defaults as tune  # noqa: E402


def test_candidates_are_ranked_by_their_first_half_ratio(monkeypatch):
    grid = {
        "cell_algorithm": [("gru", "uoro"), ("mingru", "rtrl")],
        "hidden_size": [8],
        "optimizer_lr": [("adam", 0.01)],
        "lr_decay": [0.1],
    }
    monkeypatch.setattr(tune, "GRID", grid)
    tuned = tune.tune("regression", seeds=1, progress=False, limit=60)
    assert set(tuned["best_river"]) == {"TrumpApproval", "ChickWeights"}
    scores = [c["score"] for c in tuned["candidates"]]
    assert len(scores) == 2 and scores == sorted(scores)
    for candidate in tuned["candidates"]:
        ratios = candidate["ratios"]
        assert candidate["score"] == pytest.approx(sum(r[0] for r in ratios.values()) / 2)
        assert all(first > 0 and second > 0 for first, second in ratios.values())
    table = tune.report(tuned)
    assert "| 1 | " in table and "| 2 | " in table and "TrumpApproval" in table
