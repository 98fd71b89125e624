"""The compiled core, in the best variant the running CPU supports.

The build makes `_core_baseline` (portable) and, on x86-64, `_core_avx2` (AVX2 + FMA,
about twice as fast). Set UORO_CPU=baseline to force the portable one. Type checkers
read `_core.pyi` (one stub for both: `python tools/make_stub.py` regenerates it).
"""

from __future__ import annotations

import os


def _cpu_has_avx2_fma() -> bool:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features  # type: ignore
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features  # type: ignore
    return bool(features.get("AVX2") and features.get("FMA3"))


VARIANT = "baseline"
if os.environ.get("UORO_CPU", "") != "baseline" and _cpu_has_avx2_fma():
    try:
        from uoro._core_avx2 import *  # noqa: F403
        from uoro._core_avx2 import __doc__  # noqa: F401

        VARIANT = "avx2"
    except ImportError:  # not built for this platform
        pass
if VARIANT == "baseline":
    from uoro._core_baseline import *  # noqa: F403
