// The update rules as single fused passes over a [0, n) slice of raw pointers.
//
// One definition of the maths per rule, written as a plain loop over __restrict pointers
// so the compiler vectorises it; dispatch.h compiles it once per instruction set.
// Vector body and scalar remainder are the same source, so every element gets the same
// arithmetic (build with -ffp-contract=off and the results are identical on every ISA).
// Weight decay is a template flag, not a multiply by zero, so Inf/NaN parameters are
// not turned into NaN when weight decay is off (Keras skips the term entirely too).
#pragma once

#include <cmath>
#include <cstdint>

#include "dtypes.h"
#include "rules.h"

namespace pyopt {
namespace kernels {

// p = p - lr*wd*p - lr*g
template <class T, bool Decay>
PYOPT_INLINE void gradient_descent(T* __restrict param, const T* __restrict grad, std::int64_t n,
                                   const GradientDescentScalars& s) {
  using C = compute_t<T>;
  const C lr = C(s.lr), decay = C(s.decay), scale = C(s.grad_scale);
  for (std::int64_t i = 0; i < n; ++i) {
    const C g = load(grad[i]) * scale;
    C p = load(param[i]);
    if (Decay) p = p - p * decay;
    param[i] = store<T>(p - g * lr);
  }
}

// m = mu*m - lr*g;  p = p - lr*wd*p + m   (nesterov: + mu*m - lr*g)
template <class T, bool Decay, bool Nesterov>
PYOPT_INLINE void momentum(T* __restrict param, const T* __restrict grad, T* __restrict velocity, std::int64_t n,
                           const MomentumScalars& s) {
  using C = compute_t<T>;
  const C lr = C(s.lr), mu = C(s.momentum), decay = C(s.decay), scale = C(s.grad_scale);
  for (std::int64_t i = 0; i < n; ++i) {
    const C g = load(grad[i]) * scale;
    const C m = load(velocity[i]) * mu - g * lr;
    velocity[i] = store<T>(m);
    C p = load(param[i]);
    if (Decay) p = p - p * decay;
    param[i] = store<T>(Nesterov ? p + (m * mu - g * lr) : p + m);
  }
}

// m = m + (g-m)*(1-b1);  v = v + (g*g-v)*(1-b2);  [vhat = max(vhat, v)]
// p = p - lr*wd*p - (m*alpha)/(sqrt(v)+eps)
template <class T, bool Decay, bool Amsgrad>
PYOPT_INLINE void adam(T* __restrict param, const T* __restrict grad, T* __restrict m_slot, T* __restrict v_slot,
                       T* __restrict vhat_slot, std::int64_t n, const AdamScalars& s) {
  using C = compute_t<T>;
  const C alpha = C(s.alpha), omb1 = C(s.one_minus_beta_1), omb2 = C(s.one_minus_beta_2);
  const C eps = C(s.epsilon), decay = C(s.decay), scale = C(s.grad_scale);
  for (std::int64_t i = 0; i < n; ++i) {
    const C g = load(grad[i]) * scale;
    C m = load(m_slot[i]);
    C v = load(v_slot[i]);
    m = m + (g - m) * omb1;
    v = v + (g * g - v) * omb2;
    m_slot[i] = store<T>(m);
    v_slot[i] = store<T>(v);
    if (Amsgrad) {
      const C vhat_old = load(vhat_slot[i]);
      v = vhat_old > v ? vhat_old : v;
      vhat_slot[i] = store<T>(v);
    }
    C p = load(param[i]);
    if (Decay) p = p - p * decay;
    param[i] = store<T>(p - (m * alpha) / (std::sqrt(v) + eps));
  }
}

// Sum of squares of a gradient slice, accumulated in double. The slice is read as kStreams
// contiguous quarters in lock-step: with one read stream per thread the hardware prefetchers
// keep too few misses in flight (12-15 GB/s on 2 cores of an AVX2 EPYC, where the update
// passes get 22-31), with four the norm pass gets 17-25 (tools/core_bench.sh). Each quarter
// keeps 16 independent partial sums (vectorisable without reassociating the loop): 16 AVX2
// registers in all, a few of which the compiler keeps on the stack; 8 per quarter measured
// slower. All are combined in a fixed order, so the result depends only on the slice.
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
