#!/usr/bin/env bash
# Builds the C++ test driver of the kernel core (cpp/tests) with AddressSanitizer and
# UndefinedBehaviorSanitizer in a separate build directory and runs it through ctest.
# Needs only cmake and a C++17 compiler (no Python, no TensorFlow). Exits non-zero when
# the build fails, a check fails, or a sanitizer reports an error.
#
#   tools/sanitize.sh [build-dir]        default: build/sanitize
#   CXX=clang++ tools/sanitize.sh        another compiler
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/sanitize}"
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -g"
generator=()
if command -v ninja > /dev/null; then generator=(-G Ninja); fi

cmake -S "$root" -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DPYOPT_BUILD_PYTHON=OFF -DPYOPT_TF=OFF -DPYOPT_BUILD_TESTS=ON \
  -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined"
cmake --build "$build" --target pyopt_core_tests -j "$(nproc 2> /dev/null || echo 2)"

# halt_on_error: the first report fails the run; detect_leaks: the driver frees everything.
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
log="$build/sanitize.log"
if (cd "$build/cpp/tests" && ctest --output-on-failure -j "$(nproc 2> /dev/null || echo 2)") > "$log" 2>&1; then
  tail -n 12 "$log"
  echo "sanitize.sh: all core tests passed under ASan+UBSan"
else
  tail -n 80 "$log"
  echo "sanitize.sh: FAILED (full log: $log)" >&2
  exit 1
fi
