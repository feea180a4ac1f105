// Adamax, Keras 3 form:
//   m = m + (g-m)*(1-b1);  u = max(b2*u, |g|);  p = p - lr*wd*p - lr/(1-b1^t) * m/(u + eps)
// The parts of a trait are described in adam.h.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "../dtypes.h"
#include "../rule_base.h"

namespace pyopt {

struct Adamax {
  static constexpr const char* kName = "adamax";
  static constexpr const char* kSummary = "Adamax (Keras 3 form) with fused clip-by-norm and decoupled weight decay.";
  static constexpr const char* kFormula =
      "alpha = lr/(1-beta_1^t);  m = m + (g-m)*(1-beta_1);  u = max(beta_2*u, |g|);\n"
      "p = p - lr*wd*p - alpha*m/(u+epsilon)\n";

  struct Hyper {
    double lr, beta_1, beta_2, epsilon, step;
  };
  static constexpr std::array<Param<Hyper>, 5> kParams{{
      learning_rate<Hyper>(0.001),
      {"beta_1", &Hyper::beta_1, 0.9, closed_open(0, 1), "decay rate of the first moment m"},
      {"beta_2", &Hyper::beta_2, 0.999, closed(0, 1), "decay rate of the infinity norm u"},
      {"epsilon", &Hyper::epsilon, 1e-7, above(0), "added to u in the denominator"},
      {"step", &Hyper::step, 1, integer_at_least(1), "t, the 1-based step number (Keras: iterations + 1)"},
  }};
  static constexpr std::array<Flag<Hyper>, 0> kFlags{};
  static constexpr std::array<Slot<Hyper>, 2> kSlots{{
      {"m", "ms", "first moment(s), shaped like var."},
      {"u", "us", "exponentially weighted infinity norm(s), shaped like var."},
  }};

  struct Scalars {
    double alpha, one_minus_beta_1, beta_2, epsilon;
    double decay, grad_scale;  // per tensor
  };
  static Scalars scalars(const Hyper& h) {
    return {h.lr / (1.0 - std::pow(h.beta_1, h.step)), 1.0 - h.beta_1, h.beta_2, h.epsilon, 0.0, 1.0};
  }

  // m = m + (g-m)*(1-b1);  u = max(b2*u, |g|) (NaN from either side, as tf.maximum);
  // p = p - lr*wd*p - (m*alpha)/(u+eps)
  template <class T, bool Decay>
  struct Kernel {
    static PYOPT_INLINE void run(T* __restrict param, const T* __restrict grad, T* __restrict m_slot,
                                 T* __restrict u_slot, std::int64_t n, const Scalars& s) {
      using C = compute_t<T>;
      const C alpha = C(s.alpha), omb1 = C(s.one_minus_beta_1), b2 = C(s.beta_2), eps = C(s.epsilon);
      const C decay = C(s.decay), scale = C(s.grad_scale);
      for (std::int64_t i = 0; i < n; ++i) {
        const C g = load(grad[i]) * scale;
        C m = load(m_slot[i]);
        m = m + (g - m) * omb1;
        const C decayed = b2 * load(u_slot[i]), abs_g = std::fabs(g);
        const C u = (decayed > abs_g || decayed != decayed) ? decayed : abs_g;
        m_slot[i] = store<T>(m);
        u_slot[i] = store<T>(u);
        C p = load(param[i]);
        if (Decay) p = p - p * decay;
        param[i] = store<T>(p - (m * alpha) / (u + eps));
      }
    }
  };

  template <class T, class F>
  static void with_kernel(const Hyper&, bool decay, F&& f) {
    with_bools([&](auto d) { f(Kernel<T, decltype(d)::value>{}); }, decay);
  }
};

}  // namespace pyopt
