#!/usr/bin/env bash
# Lint and format checks of the whole tree, as CI runs them (nothing is changed):
#   ruff check, ruff format --check (Python; config in pyproject.toml) and
#   clang-format --dry-run (C++; config in .clang-format).
# Fix what they report with: ruff check --fix . && ruff format . && clang-format -i <files>
# The tools come from the `lint` extra (pinned: formatters change between versions).
# Environment: BIN, the directory holding ruff and clang-format (default: .venv/bin, else PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${BIN:-$([ -x .venv/bin/ruff ] && echo .venv/bin || dirname "$(command -v ruff)")}"
"$bin/ruff" check .
"$bin/ruff" format --check .
mapfile -t cxx < <(git ls-files 'cpp/*.h' 'cpp/*.cc' 'cpp/*.cpp')
"$bin/clang-format" --dry-run -Werror "${cxx[@]}"
echo "lint.sh: ruff and clang-format found nothing to change (${#cxx[@]} C++ files)"
