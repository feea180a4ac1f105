// Momentum, Keras SGD form (the optimizer chapter's), optionally Nesterov:
//   m = mu*m - lr*g;  p = p - lr*wd*p + m   (nesterov: p = p - lr*wd*p + mu*m - lr*g, with the new m)
// The parts of a trait are described in adam.h.
#pragma once

#include <array>
#include <cstdint>

#include "../dtypes.h"
#include "../rule_base.h"

namespace pyopt {

struct Momentum {
  static constexpr const char* kName = "momentum";
  static constexpr const char* kSummary =
      "Momentum (Keras SGD form, optionally Nesterov) with fused clip-by-norm and decoupled weight decay.";
  static constexpr const char* kFormula =
      "m = mu*m - lr*g;  p = p - lr*wd*p + m   (nesterov: p = p - lr*wd*p + mu*m - lr*g, with the new m)\n";

  struct Hyper {
    double lr, momentum;
    bool nesterov;
  };
  static constexpr std::array<Param<Hyper>, 2> kParams{{
      learning_rate<Hyper>(0.01),
      {"momentum", &Hyper::momentum, 0.9, closed(0, 1), "mu"},
  }};
  static constexpr std::array<Flag<Hyper>, 1> kFlags{{
      {"nesterov", &Hyper::nesterov, "use the Nesterov form of the update."},
  }};
  static constexpr std::array<Slot<Hyper>, 1> kSlots{{
      {"velocity", "velocities", "momentum buffer(s) m, shaped like var."},
  }};

  struct Scalars {
    double lr, momentum;
    double decay, grad_scale;  // per tensor
  };
  static Scalars scalars(const Hyper& h) { return {h.lr, h.momentum, 0.0, 1.0}; }

  // m = mu*m - lr*g;  p = p - lr*wd*p + m   (nesterov: + mu*m - lr*g)
  template <class T, bool Decay, bool Nesterov>
  struct Kernel {
    static PYOPT_INLINE void run(T* __restrict param, const T* __restrict grad, T* __restrict velocity, std::int64_t n,
                                 const Scalars& s) {
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
  };

  template <class T, class F>
  static void with_kernel(const Hyper& h, bool decay, F&& f) {
    with_bools([&](auto d, auto nesterov) { f(Kernel<T, decltype(d)::value, decltype(nesterov)::value>{}); }, decay,
               h.nesterov);
  }
};

}  // namespace pyopt
