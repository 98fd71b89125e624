"""Soak (slow, run by hand: ``python -m pytest -m slow tests/test_soak.py``): every cell ×
algorithm, 10⁶ samples at an aggressive learning rate with no decay, under
``on_divergence="reset"``: no sample is dropped and θ stays finite. The reset counts
are in the README's robustness paragraph (``python benchmarks/soak.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import soak  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("options", soak.ALGORITHMS.values(), ids=soak.ALGORITHMS.keys())
@pytest.mark.parametrize("cell", soak.CELLS)
def test_a_million_aggressive_steps_drop_nothing(cell, options):
    row = soak.soak(cell, options, samples=1_000_000, lr=0.1)
    assert row["samples"] == 1_000_000
    assert row["dropped"] == 0
    assert row["theta_finite"]


def test_the_soak_stream_is_continuous_across_chunks():
    # Made in two chunks or one, the signal is the same.
    import numpy as np

    whole, _ = soak.regime_signal(0, 3000, 0.0, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    first, phase = soak.regime_signal(0, 1000, 0.0, rng)
    second, _ = soak.regime_signal(1000, 2000, phase, rng)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, atol=1e-9)
