"""The committed type stubs of the compiled core match what the build produces.

Regenerate after changing the bindings:
    python -m pybind11_stubgen uoro._core_baseline -o python
    python -m pybind11_stubgen uoro._core_avx2 -o python
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "uoro"
VARIANTS = [v for v in ("baseline", "avx2") if importlib.util.find_spec(f"uoro._core_{v}")]


@pytest.mark.parametrize("variant", VARIANTS)
def test_stubs_have_not_drifted(variant, tmp_path):
    module = f"uoro._core_{variant}"
    subprocess.run(
        [sys.executable, "-m", "pybind11_stubgen", module, "-o", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = (tmp_path / "uoro" / f"_core_{variant}.pyi").read_text()
    committed = (PACKAGE / f"_core_{variant}.pyi").read_text()
    assert generated == committed, (
        f"stale stubs: regenerate with pybind11-stubgen {module} -o python"
    )


def test_package_is_marked_typed():
    assert (PACKAGE / "py.typed").is_file()
