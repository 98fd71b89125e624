"""Checks that ``uoro`` is imported from an installed wheel, not from a source tree, and
that the wheel holds every instruction-set variant: ``python tools/check_installed.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import uoro
from uoro import _core

package = Path(uoro.__file__).resolve().parent
print(f"uoro {uoro.__version__} from {package} (variant {_core.VARIANT})")
if "site-packages" not in package.parts:
    sys.exit(f"uoro must come from an installed wheel (site-packages); got {package}")
names = sorted(path.name for path in package.iterdir())
for variant in ("_core_baseline", "_core_avx2", "_core_avx512"):
    if not any(name.startswith(variant + ".") for name in names):
        sys.exit(f"the wheel must hold {variant}; its package holds {names}")
stubs = [name for name in names if name.endswith(".pyi")]
if stubs != ["_core.pyi"]:
    sys.exit(f"the wheel must ship the one stub _core.pyi; got {stubs}")
forced = subprocess.run(
    [sys.executable, "-c", "from uoro import _core; print(_core.VARIANT)"],
    env={**os.environ, "UORO_CPU": "baseline"},
    capture_output=True,
    text=True,
    check=True,
).stdout.strip()
if forced != "baseline":
    sys.exit(f"UORO_CPU=baseline must load the baseline variant; got {forced!r}")
print("installed wheel: every variant present, UORO_CPU=baseline works")
