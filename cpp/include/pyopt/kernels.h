// How the elementwise kernels are written, and the one rule-generic kernel (the clip norm).
//
// Each rule's kernel (Rule::Kernel in rules/<rule>.h) is a single fused pass over a [0, n)
// slice: a plain loop over __restrict pointers, so the compiler vectorises it; dispatch.h
// compiles it once per instruction set. Vector body and scalar remainder are the same source,
// so every element gets the same arithmetic (build with -ffp-contract=off and the results are
// identical on every ISA). Weight decay is a template flag, not a multiply by zero, so Inf/NaN
// parameters are not turned into NaN when weight decay is off (Keras skips the term entirely too).
#pragma once

#include <cstdint>

#include "dtypes.h"

namespace pyopt {
namespace kernels {

// Sum of squares of a gradient slice, accumulated in double. The slice is read as kStreams
// contiguous quarters in lock-step: with one read stream per thread the hardware prefetchers
// keep too few misses in flight and the norm pass falls well behind the update passes
// (tools/core_bench.sh compares them). Each quarter keeps 16 independent partial sums
// (vectorisable without reassociating the loop): 16 AVX2 registers in all, a few of which the
// compiler keeps on the stack; fewer per quarter ran slower. All are combined in a fixed order,
// so the result depends only on the slice.
template <class T>
PYOPT_INLINE double sum_of_squares(const T* __restrict grad, std::int64_t n) {
  constexpr int kStreams = 4;
  constexpr int kLanes = 16;
  const std::int64_t part = n / (kStreams * kLanes) * kLanes;  // elements per stream, a multiple of kLanes
  double acc[kStreams][kLanes] = {};
  for (std::int64_t i = 0; i < part; i += kLanes)
    for (int s = 0; s < kStreams; ++s)
      for (int j = 0; j < kLanes; ++j) {
        const double x = double(load(grad[s * part + i + j]));
        acc[s][j] += x * x;
      }
  double tail = 0.0;  // the last n - kStreams*part elements, in order
  for (std::int64_t i = kStreams * part; i < n; ++i) {
    const double x = double(load(grad[i]));
    tail += x * x;
  }
  double total = 0.0;
  for (int s = 0; s < kStreams; ++s) {
    for (int width = kLanes / 2; width > 0; width /= 2)  // pairwise: acc[s][j] += acc[s][j + width]
      for (int j = 0; j < width; ++j) acc[s][j] += acc[s][j + width];
    total += acc[s][0];
  }
  return total + tail;
}

}  // namespace kernels
}  // namespace pyopt
