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


# core_checks.cpp builds as this many programs, compiled side by side (UORO_CHECKS_PART):
# one template-heavy translation unit is most of the build's wall time.
CORE_CHECK_PARTS = 2


def compile_flags(variant: str, sanitize: bool) -> list[str]:
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
    return flags


def build_all_and_run(commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Compiles each command's program (compiler arguments without the output) at once,
    then runs them in turn."""
    with tempfile.TemporaryDirectory() as tmp:
        binaries = [Path(tmp) / f"checks{k}" for k in range(len(commands))]
        builds = [
            subprocess.Popen([compiler(), *command, "-o", str(binary)])
            for command, binary in zip(commands, binaries)
        ]
        codes = [build.wait() for build in builds]  # every build ends before any raise
        for code, command in zip(codes, commands):
            if code:
                raise subprocess.CalledProcessError(code, [compiler(), *command])
        return [subprocess.run([str(b)], capture_output=True, text=True) for b in binaries]


def build_and_run_products(variants: list[str]) -> dict[str, subprocess.CompletedProcess[str]]:
    """product_checks.cpp for each instruction-set variant, built side by side."""
    source = str(HERE / "product_checks.cpp")
    runs = build_all_and_run([[*compile_flags(v, False), source] for v in variants])
    return dict(zip(variants, runs))


def build_and_run(
    sanitize: bool = False, source: str = "core_checks.cpp", variant: str = "baseline"
) -> subprocess.CompletedProcess[str]:
    """Builds `source` and runs it. core_checks.cpp builds as CORE_CHECK_PARTS programs
    at once, run in turn: their output is joined, with one "N failed" line summing
    theirs at the end, and the return code is the worst of theirs."""
    flags = [*compile_flags(variant, sanitize), str(HERE / source)]
    if source != "core_checks.cpp":
        return build_all_and_run([flags])[0]
    parts = [[*flags, f"-DUORO_CHECKS_PART={k}"] for k in range(CORE_CHECK_PARTS)]
    runs = build_all_and_run(parts)
    failed, lines = 0, []
    for run in runs:
        *body, last = run.stdout.splitlines() or [""]
        match = re.fullmatch(r"(\d+) failed", last)
        failed += int(match.group(1)) if match else 1  # a part that did not finish failed
        lines += body if match else [*body, last]
    return subprocess.CompletedProcess(
        args=[run.args for run in runs],
        returncode=max(run.returncode for run in runs),
        stdout="\n".join([*lines, f"{failed} failed"]) + "\n",
        stderr="".join(run.stderr for run in runs),
    )


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
