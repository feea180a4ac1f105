#!/usr/bin/env bash
# Create ./.venv and install pyopt from this checkout into it.
#   bash tools/setup_env.sh          # the package
#   bash tools/setup_env.sh test     # the package with its test and benchmark extras
# TensorFlow is both a build and a runtime requirement; to download and install it once,
# the build requirements go into the venv and pyopt is built without build isolation.
# (Plain `pip install .` works too, with TensorFlow fetched into an isolated build env.)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
venv="${PYOPT_VENV:-.venv}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" "tensorflow>=2.21,<2.22" cmake ninja
if [ "$extras" = "test" ]; then
  # Editable, as developers work: the tests (some start subprocesses from the checkout)
  # then import exactly this tree, with the compiled modules built into ./build.
  "$venv/bin/python" -m pip install -q --no-build-isolation -e ".[test,bench]"
else
  "$venv/bin/python" -m pip install -q --no-build-isolation .
fi
venv_abs="$(cd "$venv" && pwd)"
(cd "${TMPDIR:-/tmp}" && "$venv_abs/bin/python" -c "import pyopt; pyopt.show_config()")
