// Adagrad, Keras 3 form (epsilon inside the square root):
//   acc = acc + g^2;  p = p - lr*wd*p - lr*g/sqrt(acc + eps)
// The parts of a trait are described in adam.h.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "../dtypes.h"
#include "../rule_base.h"

namespace pyopt {

struct Adagrad {
  static constexpr const char* kName = "adagrad";
  static constexpr const char* kSummary = "Adagrad (Keras 3 form) with fused clip-by-norm and decoupled weight decay.";
  static constexpr const char* kFormula = "acc = acc + g^2;  p = p - lr*wd*p - lr*g/sqrt(acc + epsilon)\n";

  struct Hyper {
    double lr, epsilon;
  };
  static constexpr std::array<Param<Hyper>, 2> kParams{{
      learning_rate<Hyper>(0.001),
      {"epsilon", &Hyper::epsilon, 1e-7, above(0), "added to the accumulator under the square root"},
  }};
  static constexpr std::array<Flag<Hyper>, 0> kFlags{};
  static constexpr std::array<Slot<Hyper>, 1> kSlots{{
      {"accumulator", "accumulators", "sum(s) of squared gradients, shaped like var (Keras starts them at 0.1)."},
  }};

  struct Scalars {
    double lr, epsilon;
    double decay, grad_scale;  // per tensor
  };
  static Scalars scalars(const Hyper& h) { return {h.lr, h.epsilon, 0.0, 1.0}; }

  // acc = acc + g*g;  p = p - lr*wd*p - (g*lr)/sqrt(acc + eps)
  template <class T, bool Decay>
  struct Kernel {
    static PYOPT_INLINE void run(T* __restrict param, const T* __restrict grad, T* __restrict accumulator,
                                 std::int64_t n, const Scalars& s) {
      using C = compute_t<T>;
      const C lr = C(s.lr), eps = C(s.epsilon), decay = C(s.decay), scale = C(s.grad_scale);
      for (std::int64_t i = 0; i < n; ++i) {
        const C g = load(grad[i]) * scale;
        const C acc = load(accumulator[i]) + g * g;
        accumulator[i] = store<T>(acc);
        C p = load(param[i]);
        if (Decay) p = p - p * decay;
        param[i] = store<T>(p - (g * lr) / std::sqrt(acc + eps));
      }
    }
  };

  template <class T, class F>
  static void with_kernel(const Hyper&, bool decay, F&& f) {
    with_bools([&](auto d) { f(Kernel<T, decltype(d)::value>{}); }, decay);
  }
};

}  // namespace pyopt
