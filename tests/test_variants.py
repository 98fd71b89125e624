"""The instruction-set variants of the core: the best one the CPU supports is loaded,
each one computes the same thing, and UORO_CPU forces one or says why it cannot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import uoro
from uoro import _core

SCRIPT = """
import json, numpy as np, uoro
t = np.random.default_rng(0).integers(0, 5, 201)
learner = uoro.Learner("lstm", 5, 8, dtype="float64", seed=1)
losses = learner.fit(t[:-1], t[1:])
print(json.dumps({"variant": uoro._core.VARIANT, "losses": losses.tolist()}))
"""

BUILT = [v for v in _core.VARIANTS if importlib.util.find_spec(f"uoro._core_{v}")]
RUNNABLE = _core.runnable_variants()


def run(cpu: str, script: str = SCRIPT) -> subprocess.CompletedProcess:
    env = {**os.environ, "UORO_CPU": cpu}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)


def test_best_variant_is_loaded():
    assert "baseline" in RUNNABLE
    # VARIANTS lists the most capable first; UORO_CPU (if the suite runs with it) forces one.
    assert _core.VARIANT == (os.environ.get("UORO_CPU") or RUNNABLE[0])
    assert uoro.Learner("gru", 3, 4).n_params > 0


@pytest.mark.parametrize("variant", [v for v in RUNNABLE if v != "baseline"])
def test_every_variant_agrees_with_the_portable_one(variant):
    portable, fast = (json.loads(run(v).stdout) for v in ("baseline", variant))
    assert (portable["variant"], fast["variant"]) == ("baseline", variant)
    # FMA contracts roundings differently: equal to float64 precision, not bit for bit.
    for a, b in zip(portable["losses"], fast["losses"], strict=True):
        assert abs(a - b) <= 1e-9 * max(1.0, abs(a))


def test_uoro_cpu_names_a_known_variant():
    result = run("avx9000", "import uoro")
    assert result.returncode != 0
    assert "UORO_CPU must be one of avx512, avx2, baseline" in result.stderr
    assert "'avx9000'" in result.stderr


def test_forcing_a_variant_the_cpu_lacks_is_refused(monkeypatch):
    # Pretend the CPU has no AVX-512: forcing it must fail at import, naming what is missing.
    monkeypatch.setattr(_core, "_cpu_features", lambda: {"AVX2": True, "FMA3": True})
    monkeypatch.setenv("UORO_CPU", "avx512")
    with pytest.raises(ImportError, match=r"UORO_CPU=avx512: this CPU lacks AVX512_SKX$"):
        _core._load()
    monkeypatch.setenv("UORO_CPU", "")
    assert _core._load()[0] == ("avx2" if "avx2" in BUILT else "baseline")


def test_the_checks_and_benchmarks_compile_the_variants_the_build_makes():
    # run_core_checks reads each variant's flags from CMakeLists.txt (the C++ checks and
    # bench_streams' tick parts compile with them): the same variants the package loads.
    sys.path.insert(0, str(Path(__file__).resolve().parent / "cpp"))
    from run_core_checks import VARIANT_FLAGS

    assert set(VARIANT_FLAGS) == set(_core.VARIANTS)
    assert VARIANT_FLAGS["baseline"] == []
    assert {"-mavx2", "-mfma"} <= set(VARIANT_FLAGS["avx2"])
    assert {"-mavx512f", "-mavx512vl", "-mfma"} <= set(VARIANT_FLAGS["avx512"])
