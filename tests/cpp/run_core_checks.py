"""Builds and runs the C++ core checks (core_checks.cpp) with the system compiler, with
warnings as errors (-Wall -Wextra -Wpedantic -Werror).

    python tests/cpp/run_core_checks.py             # optimized build, counts allocations
    python tests/cpp/run_core_checks.py --sanitize  # AddressSanitizer + UBSan build
    python tests/cpp/run_core_checks.py --products avx512  # product_checks.cpp, one variant

Eigen's headers come from the `cmeel-eigen` package (a test dependency) or from
EIGEN3_INCLUDE_DIR.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def eigen_include() -> Path:
    candidates = [os.environ.get("EIGEN3_INCLUDE_DIR", "")]
    for key in ("purelib", "platlib"):
        candidates.append(
            str(Path(sysconfig.get_paths()[key]) / "cmeel.prefix" / "include" / "eigen3")
        )
    for candidate in candidates:
        if candidate and (Path(candidate) / "Eigen" / "Core").is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "Eigen headers not found: pip install cmeel-eigen, or set EIGEN3_INCLUDE_DIR"
    )


def compiler() -> str:
    for name in (os.environ.get("CXX", ""), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    raise FileNotFoundError("no C++ compiler found (set CXX)")


def variant_flags() -> dict[str, list[str]]:
    """The instruction-set flags of each compiled variant, read from CMakeLists.txt's
    `uoro_module(_core_<variant> <flags>)` lines, so checks and benchmarks compile what
    the build compiles (the native build, for the machine it runs on, is not a variant)."""
    text = (ROOT / "CMakeLists.txt").read_text()
    flags = {}
    for name, args in re.findall(r"^\s*uoro_module\(_core_(\w+)([^)]*)\)", text, re.MULTILINE):
        if "-march=native" not in args.split():
            flags[name] = args.split()
    if "baseline" not in flags:
        raise RuntimeError(f"no baseline variant found in CMakeLists.txt (found {sorted(flags)})")
    return flags


VARIANT_FLAGS = variant_flags()


def build_and_run(
    sanitize: bool = False, source: str = "core_checks.cpp", variant: str = "baseline"
) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "checks"
        flags = [
            *VARIANT_FLAGS[variant],
            "-std=c++17",
            "-I",
            str(ROOT / "cpp" / "include"),
            "-isystem",
            str(eigen_include()),
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Werror",
        ]
        if variant == "avx512":
            # GCC 12's own AVX-512 intrinsics (_mm512_undefined_ps, the `__Y = __Y` of
            # _mm256_undefined_pd) trip these warnings.
            flags += ["-Wno-maybe-uninitialized", "-Wno-uninitialized"]
        if sanitize:
            flags += [
                "-O1",
                "-g",
                "-fsanitize=address,undefined",
                "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=all",
                "-DUORO_SANITIZE",
            ]
        else:
            flags += ["-O1", "-DNDEBUG"]
        subprocess.run([compiler(), *flags, str(HERE / source), "-o", str(binary)], check=True)
        return subprocess.run([str(binary)], capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sanitize", action="store_true", help="AddressSanitizer + UBSan build")
    parser.add_argument(
        "--products",
        choices=sorted(VARIANT_FLAGS),
        help="run product_checks.cpp built for this instruction-set variant instead",
    )
    args = parser.parse_args()
    if args.products:
        result = build_and_run(args.sanitize, "product_checks.cpp", args.products)
    else:
        result = build_and_run(args.sanitize)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
