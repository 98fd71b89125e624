"""The C++ core on its own: kernels against finite differences and no heap allocation
inside any learning step (a counting allocator replaces operator new)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from uoro import _core

sys.path.insert(0, str(Path(__file__).parent / "cpp"))
from run_core_checks import build_and_run, build_and_run_products  # noqa: E402


def test_core_checks_pass():
    result = build_and_run()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "0 failed"
    assert sum("0 allocations in 200 steps" in line for line in lines) >= 40
    # Three kernels for seven cells and three stacks, and SnAp-1's state diagonal for the
    # six neural cells (a stack has none).
    assert sum("vs finite differences" in line for line in lines) == 3 * 10 + 6
    assert (
        sum(" snap1 " in line and "0 allocations in 200 steps" in line for line in lines)
        == (6 + 3) * 2 * 2  # six cells and three stacks (the layer-wise rule)
    )
    # RTRL on the element-wise cells runs at every width (O(|θ|)), the dense cells' at 6.
    for cell in ("mingru", "minlstm", "indrnn"):
        assert (
            sum(
                line.startswith(f"ok   {cell}-48 rtrl") and "0 allocations in 200 steps" in line
                for line in lines
            )
            == 2
        )
    # Many streams: the batched kernels, and allocation-free ticks for every estimator: per
    # cell, UORO (rank 1, 2, one estimate per stream, memory 4) at 3 and 64 streams, and the
    # six per-stream estimators (RTRL, two tBPTTs, SnAp-1, KF-RTRL, OK) at 3, each with SGD
    # and Adam, and SnAp-1 at 64 for the nine cells that have it (all but the influence
    # cell); the per-stream UORO pass against the per-group one, in f32 and f64.
    assert sum("equal the one-stream kernels per column" in line for line in lines) == 10
    ticks = sum("0 allocations in 200 ticks" in line for line in lines)
    assert ticks == 10 * (2 * 2 * 4 + 2 * 6) + 9 * 2
    assert sum(" snap1 " in line and "streams 64" in line for line in lines) == 9 * 2
    assert sum("per-stream UORO passes: the per-group passes'" in line for line in lines) == 2
    assert sum(line.startswith("ok   gru_l2-48 ") for line in lines) >= 2 * 4  # stacks step too


# Each variant this CPU runs: the SIMD width decides which paths of the kernel run.
RUNNABLE = [v for v in _core.VARIANTS if _core.cpu_supports(v)]


@pytest.fixture(scope="module")
def product_checks():
    """product_checks.cpp built for every runnable variant at once, and run."""
    return build_and_run_products(RUNNABLE)


@pytest.mark.parametrize("variant", RUNNABLE)
def test_many_streams_products_equal_eigen(variant, product_checks):
    result = product_checks[variant]
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "0 failed"
    assert sum("480 shapes, products equal Eigen's" in line for line in lines) == 2
    assert sum("192 shapes, UORO pass sums equal Eigen's" in line for line in lines) == 2
    assert sum("24 shapes, UORO pass columns of a one-hot" in line for line in lines) == 2
    assert sum("36 shapes, column maxima and squared norms" in line for line in lines) == 2
