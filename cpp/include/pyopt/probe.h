// A memory-bandwidth probe for benchmark reports: STREAM's triad a = b + s*c over the same
// chunking and executor as the kernels, so "fraction of the probe" compares like with like.
#pragma once

#include <cstdint>
#include <vector>

#include "parallel.h"

namespace pyopt {

// a = b + s*c (reads 8, writes 4 bytes per float element).
inline void stream_triad(float* __restrict a, const float* __restrict b, const float* __restrict c, float s,
                         std::int64_t n, const Executor& exec) {
  const ChunkPlan plan = plan_chunks(std::vector<std::int64_t>{n});
  for_each_slice(plan, exec, [&](std::int64_t k) {
    const Slice& sl = plan.slices[size_t(k)];
    for (std::int64_t i = sl.begin; i < sl.end; ++i) a[i] = b[i] + s * c[i];
  });
}

}  // namespace pyopt
