"""benchmarks/streams_noise_split.py: its split checked on gradients with known shared
part and noise (fixed seeds), and a tiny run whose per-stream exact gradients average to
the many-streams RTRL learner's gradient of the tick's mean loss."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import streams_gradient_quality as sgq  # noqa: E402
import streams_noise_split as split  # noqa: E402

TICKS, PARAMS = 2000, 40


def test_streams_sharing_one_gradient_average_their_noise_away():
    rng = np.random.default_rng(0)
    streams = 4
    exact = np.repeat(rng.standard_normal((TICKS, 1, PARAMS)), streams, axis=1)
    estimate = exact + 2.0 * rng.standard_normal((TICKS, streams, PARAMS))
    values = split.split(exact, estimate)
    assert values["shared"] == pytest.approx(1.0)
    assert values["noise"] == pytest.approx(4.0, rel=0.05)  # ‖n‖² / ‖g‖² = 4 P / P
    assert values["snr"] == pytest.approx(streams / 4.0, rel=0.05)  # P / (4 P / B)
    # The averaged noise is as large as the signal: cos = 1/√2 where both are of equal norm.
    assert values["cosine_pooled"] == pytest.approx(1 / np.sqrt(2), rel=0.05)


def test_uncorrelated_streams_share_one_over_b():
    rng = np.random.default_rng(1)
    for streams in (1, 2, 8):
        exact = rng.standard_normal((TICKS, streams, PARAMS))
        values = split.split(exact, exact + rng.standard_normal(exact.shape))
        assert values["shared"] == pytest.approx(1 / streams, rel=0.05)
        assert values["noise"] == pytest.approx(1.0, rel=0.05)
        # SNR = (1/B) P / (P / B) = 1 whatever B: uncorrelated streams gain nothing.
        assert values["snr"] == pytest.approx(1.0, rel=0.05)


def test_a_tiny_run_is_sane_and_its_exact_gradients_are_the_streams_learners():
    burn_in, ticks, hidden = 4, 8, 4
    exact, estimate = split.per_stream_gradients("anbn", "gru", hidden, 3, burn_in, ticks)
    assert exact.shape == estimate.shape and exact.shape[:2] == (ticks, 3)
    xs, ys = sgq.stream_pairs("anbn", 3, burn_in + ticks)
    network = sgq.network_for("anbn", "gru", hidden)
    learner = sgq.frozen(network, {"algorithm": "rtrl"}, 3, 0)
    n_cell = learner._core.n_cell_params
    mean_loss_gradient = learner.gradients(xs, ys)[1][burn_in:, :n_cell]
    np.testing.assert_allclose(exact.mean(axis=1), mean_loss_gradient, rtol=0, atol=1e-12)
    rows = split.run(["anbn"], "gru", hidden, (1, 3), burn_in, ticks)
    assert [r["streams"] for r in rows] == [1, 3]
    assert rows[0]["shared"] == pytest.approx(1.0)
    for r in rows:
        assert r["noise"] > 0 and r["snr"] > 0
        for key in ("cosine_mean", "cosine_median", "cosine_pooled"):
            assert -1 <= r[key] <= 1
    assert "| 3 |" in split.table(rows, "anbn")
