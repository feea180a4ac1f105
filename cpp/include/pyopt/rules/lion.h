// Lion, Keras 3 form:
//   p = p - lr*wd*p - lr*sign(b1*m + (1-b1)*g);  m = b2*m + (1-b2)*g
// The parts of a trait are described in adam.h.
#pragma once

#include <array>
#include <cstdint>

#include "../dtypes.h"
#include "../rule_base.h"

namespace pyopt {

struct Lion {
  static constexpr const char* kName = "lion";
  static constexpr const char* kSummary = "Lion (Keras 3 form) with fused clip-by-norm and decoupled weight decay.";
  static constexpr const char* kFormula =
      "p = p - lr*wd*p - lr*sign(beta_1*m + (1-beta_1)*g);  m = beta_2*m + (1-beta_2)*g\n";

  struct Hyper {
    double lr, beta_1, beta_2;
  };
  static constexpr std::array<Param<Hyper>, 3> kParams{{
      learning_rate<Hyper>(0.001),
      {"beta_1", &Hyper::beta_1, 0.9, open_closed(0, 1), "weight of m in the update's direction"},
      {"beta_2", &Hyper::beta_2, 0.99, closed(0, 1), "decay rate of the momentum m"},
  }};
  static constexpr std::array<Flag<Hyper>, 0> kFlags{};
  static constexpr std::array<Slot<Hyper>, 1> kSlots{{
      {"m", "ms", "momentum(s), shaped like var."},
  }};

  struct Scalars {
    double lr, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2;
    double decay, grad_scale;  // per tensor
  };
  static Scalars scalars(const Hyper& h) {
    return {h.lr, h.beta_1, 1.0 - h.beta_1, h.beta_2, 1.0 - h.beta_2, 0.0, 1.0};
  }

  // c = m*b1 + g*(1-b1);  p = p - lr*wd*p - lr*sign(c) (sign: -1, 1, or c itself for 0 and NaN,
  // as tf.sign);  m = m*b2 + g*(1-b2)
  template <class T, bool Decay>
  struct Kernel {
    static PYOPT_INLINE void run(T* __restrict param, const T* __restrict grad, T* __restrict m_slot, std::int64_t n,
                                 const Scalars& s) {
      using C = compute_t<T>;
      const C lr = C(s.lr), b1 = C(s.beta_1), omb1 = C(s.one_minus_beta_1), b2 = C(s.beta_2);
      const C omb2 = C(s.one_minus_beta_2), decay = C(s.decay), scale = C(s.grad_scale);
      for (std::int64_t i = 0; i < n; ++i) {
        const C g = load(grad[i]) * scale;
        const C m = load(m_slot[i]);
        const C c = m * b1 + g * omb1;
        C sign = c > C(0) ? C(1) : C(-1);  // flat selects, so that the loop vectorises
        sign = c == C(0) ? c : sign;
        sign = c != c ? c : sign;
        m_slot[i] = store<T>(m * b2 + g * omb2);
        C p = load(param[i]);
        if (Decay) p = p - p * decay;
        param[i] = store<T>(p - lr * sign);
      }
    }
  };

  template <class T, class F>
  static void with_kernel(const Hyper&, bool decay, F&& f) {
    with_bools([&](auto d) { f(Kernel<T, decltype(d)::value>{}); }, decay);
  }
};

}  // namespace pyopt
