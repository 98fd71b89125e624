"""The instruction-set variants of the core: the best one the CPU supports is loaded,
and the portable one computes the same thing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import uoro
from uoro import _core

SCRIPT = """
import json, numpy as np, uoro
t = np.random.default_rng(0).integers(0, 5, 201)
learner = uoro.Learner("lstm", 5, 8, dtype="float64", seed=1)
losses = learner.fit(t[:-1], t[1:])
print(json.dumps({"variant": uoro._core.VARIANT, "losses": losses.tolist()}))
"""


def run(cpu: str) -> dict:
    env = {**os.environ, "UORO_CPU": cpu}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def test_best_variant_is_loaded():
    if platform.machine().lower() in ("x86_64", "amd64") and _core._cpu_has_avx2_fma():
        assert _core.VARIANT == "avx2"
    else:
        assert _core.VARIANT == "baseline"
    assert uoro.Learner("gru", 3, 4).n_params > 0


def test_portable_variant_agrees():
    portable, best = run("baseline"), run("")
    assert portable["variant"] == "baseline"
    # FMA contracts roundings differently: equal to float64 precision, not bit for bit.
    for a, b in zip(portable["losses"], best["losses"]):
        assert abs(a - b) <= 1e-9 * max(1.0, abs(a))
