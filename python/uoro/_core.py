"""The compiled core, in the best variant the running CPU supports.

The build makes `_core_baseline` (portable) and, on x86-64, `_core_avx2` (AVX2 + FMA)
and `_core_avx512` (AVX-512, the Skylake-server set). The best one the CPU supports is
imported. UORO_CPU=baseline, avx2 or avx512 forces one (for comparisons, or where the
CPU slows its clock for AVX-512); forcing one the CPU lacks is an ImportError, not an
illegal instruction later. Type checkers read `_core.pyi` (one stub for every variant:
`python tools/make_stub.py` regenerates it).
"""

from __future__ import annotations

import importlib
import importlib.util
import os

# Most capable first; each with the CPU features it needs (numpy's names).
VARIANTS = ("avx512", "avx2", "baseline")
_NEEDS = {"avx512": ("AVX512_SKX", "AVX2", "FMA3"), "avx2": ("AVX2", "FMA3"), "baseline": ()}


def _cpu_features() -> dict:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features  # type: ignore
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features  # type: ignore
    return features


def cpu_supports(variant: str) -> bool:
    """Whether the running CPU has every instruction `variant` is built with."""
    features = _cpu_features()
    return all(features.get(name) for name in _NEEDS[variant])


def runnable_variants() -> list[str]:
    """The variants built here that this CPU can run, most capable first."""
    return [v for v in VARIANTS if cpu_supports(v) and importlib.util.find_spec(f"uoro._core_{v}")]


def _load() -> tuple[str, object]:
    forced = os.environ.get("UORO_CPU", "")
    if forced and forced not in VARIANTS:
        known = ", ".join(VARIANTS)
        raise ImportError(f"UORO_CPU must be one of {known} (or unset); got {forced!r}")
    if forced and not cpu_supports(forced):
        features = _cpu_features()
        missing = ", ".join(name for name in _NEEDS[forced] if not features.get(name))
        raise ImportError(f"UORO_CPU={forced}: this CPU lacks {missing}")
    for variant in (forced,) if forced else VARIANTS:
        if not cpu_supports(variant):
            continue
        try:
            return variant, importlib.import_module(f"uoro._core_{variant}")
        except ImportError:  # not built for this platform
            if forced:
                raise
    raise ImportError("uoro._core_baseline is missing: the package is not built")


VARIANT, _module = _load()
# What `from module import *` would bring: the public names.
globals().update({n: getattr(_module, n) for n in dir(_module) if not n.startswith("_")})
__doc__ = _module.__doc__
del _module
