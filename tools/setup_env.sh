#!/usr/bin/env bash
# Create ./.venv and install pyopt from this checkout into it.
#   bash tools/setup_env.sh          # pyopt with the chapter demo's extra
#   bash tools/setup_env.sh test     # editable, with the test, benchmark, demo and lint extras and tf_keras
# TensorFlow is both a build and a runtime requirement: a TensorFlow 2.21 already in the venv
# (tensorflow, tensorflow-cpu, ...) is used as it is, else tensorflow-cpu is installed. pyopt
# is then built against it without build isolation, so TensorFlow is downloaded once.
# Environment: PYOPT_VENV (default .venv), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
case "$extras" in
  "" | test) ;;
  *) echo "usage: bash tools/setup_env.sh [test]" >&2; exit 2 ;;
esac
venv="${PYOPT_VENV:-.venv}"
python="${PYTHON:-python3}"
tf_range=">=2.21,<2.22"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q)
"${pip[@]}" --upgrade pip
if ! "$venv/bin/python" -c "import tensorflow" >/dev/null 2>&1; then
  "${pip[@]}" "tensorflow-cpu$tf_range"
fi
"${pip[@]}" "scikit-build-core>=0.11" "pybind11>=2.12" cmake ninja
if [ "$extras" = "test" ]; then
  # Editable, as developers work: the tests (some start subprocesses from the checkout)
  # then import exactly this tree, with the compiled modules built into ./build.
  "${pip[@]}" --no-build-isolation -e ".[test,bench,demo,lint]"
  # tf_keras (the legacy API's tests) requires the `tensorflow` distribution by name; beside
  # tensorflow-cpu that would install a second TensorFlow, so it comes without its requirements.
  "${pip[@]}" --no-deps "tf_keras$tf_range"
else
  "${pip[@]}" --no-build-isolation ".[demo]"
fi
venv_abs="$(cd "$venv" && pwd)"
(cd "${TMPDIR:-/tmp}" && "$venv_abs/bin/python" -c "import pyopt; pyopt.show_config()")
