"""The committed type stub of the compiled core, ``python/uoro/_core.pyi``, is what every
built variant produces: one stub for ``uoro._core``, whichever variant it re-exports.

Regenerate after changing the bindings (with the package installed):
    python tools/make_stub.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from uoro import _core

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "uoro"
VARIANTS = _core.runnable_variants()  # every variant built that this CPU can import


def load_make_stub():
    spec = importlib.util.spec_from_file_location("make_stub", ROOT / "tools" / "make_stub.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_has_the_baseline_variant():
    assert "baseline" in VARIANTS


@pytest.mark.parametrize("variant", VARIANTS)
def test_stub_has_not_drifted(variant):
    generated = load_make_stub().generate(variant)
    committed = (PACKAGE / "_core.pyi").read_text(encoding="utf-8")
    assert generated == committed, "stale stub: regenerate with python tools/make_stub.py"
    assert f"_core_{variant}" not in committed


def test_one_stub_for_the_core():
    assert sorted(p.name for p in PACKAGE.glob("_core*.pyi")) == ["_core.pyi"]


def test_package_is_marked_typed():
    assert (PACKAGE / "py.typed").is_file()
