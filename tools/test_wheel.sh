#!/usr/bin/env bash
# Test the wheel as users get it: build the repaired manylinux wheel (tools/build_wheel.sh),
# install it (not editable) into a fresh venv beside tensorflow-cpu, and run the smoke subset
# (tests/test_wheel_smoke.py) from an empty directory outside the source tree.
#
#   bash tools/test_wheel.sh
#
# Environment: PYTHON builds the wheel (see tools/build_wheel.sh; PYOPT_BUILD_ISOLATION too);
# the fresh venv is made with python3.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

wheel="$(bash tools/build_wheel.sh "$work/dist" | tail -n 1)"
case "$(basename "$wheel")" in
  *-manylinux_*_x86_64.whl) ;;
  *) echo "test_wheel.sh: not a manylinux wheel: $wheel" >&2; exit 1 ;;
esac

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q "tensorflow-cpu>=2.21,<2.22" "pytest>=8"
"$work/venv/bin/python" -m pip install -q "$wheel"
# The wheel must not have pulled a second TensorFlow distribution beside tensorflow-cpu.
"$work/venv/bin/python" - <<'PY'
import importlib.metadata as md
names = sorted(d.metadata["Name"].lower().replace("_", "-") for d in md.distributions())
tf = [n for n in names if n == "tensorflow" or n.startswith("tensorflow-")]
assert tf == ["tensorflow-cpu"], f"TensorFlow distributions installed: {tf}"
assert "pyopt" in names and "pandas" not in names and "matplotlib" not in names, names
PY

mkdir "$work/smoke"
cp tests/test_wheel_smoke.py tests/reference.py "$work/smoke/"
cd "$work/smoke"
PYOPT_EXPECT_INSTALLED=1 TF_CPP_MIN_LOG_LEVEL=2 "$work/venv/bin/python" -m pytest -q -p no:cacheprovider \
  --rootdir "$work/smoke" test_wheel_smoke.py
"$work/venv/bin/pyopt" info | grep -E "^ *(tf_ops|isa|tf_running):"
echo "test_wheel.sh: $(basename "$wheel") passed the smoke tests in a fresh venv (source tree: $repo)"
