#!/usr/bin/env bash
# Builds and runs cpp/bench/passes.cc: the kernel core's memory passes (update passes of each
# rule, the clip-norm pass, whole clipped steps) on one big float32 tensor, timed side by side
# on pyopt's own thread pool. Needs only a C++17 compiler. Not part of the tests.
#
#   tools/core_bench.sh [elements] [threads]      default: 16M elements, all cores
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${TMPDIR:-/tmp}/pyopt_core_bench"
"${CXX:-g++}" -O3 -std=c++17 -fno-math-errno -ffp-contract=off -pthread -I"$root/cpp/include" \
  "$root/cpp/bench/passes.cc" -o "$out"
"$out" "$@"
