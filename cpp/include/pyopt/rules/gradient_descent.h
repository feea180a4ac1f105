// Gradient descent:  p = p - lr*wd*p - lr*g
// The parts of a trait are described in adam.h.
#pragma once

#include <array>
#include <cstdint>

#include "../dtypes.h"
#include "../rule_base.h"

namespace pyopt {

struct GradientDescent {
  static constexpr const char* kName = "gradient_descent";
  static constexpr const char* kSummary = "Gradient descent with fused clip-by-norm and decoupled weight decay.";
  static constexpr const char* kFormula = "p = p - lr*wd*p - lr*g\n";

  struct Hyper {
    double lr;
  };
  static constexpr std::array<Param<Hyper>, 1> kParams{{learning_rate<Hyper>(0.01)}};
  static constexpr std::array<Flag<Hyper>, 0> kFlags{};
  static constexpr std::array<Slot<Hyper>, 0> kSlots{};

  struct Scalars {
    double lr;
    double decay, grad_scale;  // per tensor
  };
  static Scalars scalars(const Hyper& h) { return {h.lr, 0.0, 1.0}; }

  // p = p - lr*wd*p - lr*g
  template <class T, bool Decay>
  struct Kernel {
    static PYOPT_INLINE void run(T* __restrict param, const T* __restrict grad, std::int64_t n, const Scalars& s) {
      using C = compute_t<T>;
      const C lr = C(s.lr), decay = C(s.decay), scale = C(s.grad_scale);
      for (std::int64_t i = 0; i < n; ++i) {
        const C g = load(grad[i]) * scale;
        C p = load(param[i]);
        if (Decay) p = p - p * decay;
        param[i] = store<T>(p - g * lr);
      }
    }
  };

  template <class T, class F>
  static void with_kernel(const Hyper&, bool decay, F&& f) {
    with_bools([&](auto d) { f(Kernel<T, decltype(d)::value>{}); }, decay);
  }
};

}  // namespace pyopt
