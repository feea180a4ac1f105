// Nadam, Keras 3 form, with its momentum schedule u_t = b1*(1 - 0.5*0.96^t) and the running
// product u_product = u_1*...*u_t that the caller keeps (Keras's Nadam._u_product):
//   m = m + (g-m)*(1-b1);  v = v + (g^2-v)*(1-b2)
//   p = p - lr*wd*p - lr*(u_{t+1}*m/(1 - u_product*u_{t+1}) + (1-u_t)*g/(1 - u_product))
//                       / (sqrt(v/(1-b2^t)) + eps)
// The parts of a trait are described in adam.h.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "../dtypes.h"
#include "../rule_base.h"

namespace pyopt {

struct Nadam {
  static constexpr const char* kName = "nadam";
  static constexpr const char* kSummary = "Nadam (Keras 3 form) with fused clip-by-norm and decoupled weight decay.";
  static constexpr const char* kFormula =
      "u_t = beta_1*(1 - 0.5*0.96^t);  m = m + (g-m)*(1-beta_1);  v = v + (g^2-v)*(1-beta_2);\n"
      "p = p - lr*wd*p - lr*(u_{t+1}*m/(1 - u_product*u_{t+1}) + (1-u_t)*g/(1 - u_product))"
      " / (sqrt(v/(1-beta_2^t)) + epsilon)\n";

  struct Hyper {
    double lr, beta_1, beta_2, epsilon, step, u_product;
  };
  static constexpr std::array<Param<Hyper>, 6> kParams{{
      learning_rate<Hyper>(0.001),
      {"beta_1", &Hyper::beta_1, 0.9, closed_open(0, 1), "decay rate of the first moment m"},
      {"beta_2", &Hyper::beta_2, 0.999, closed_open(0, 1), "decay rate of the second moment v"},
      {"epsilon", &Hyper::epsilon, 1e-7, above(0), "added to sqrt(v/(1-beta_2^t)) in the denominator"},
      {"step", &Hyper::step, 1, integer_at_least(1), "t, the 1-based step number (Keras: iterations + 1)"},
      {"u_product", &Hyper::u_product, 0.468, closed_open(0, 1),
       "u_1*...*u_t, the running product of the momentum schedule including this step's u_t (Keras: "
       "Nadam._u_product after its update; 0.468 is step 1's with beta_1 = 0.9)"},
  }};
  static constexpr std::array<Flag<Hyper>, 0> kFlags{};
  static constexpr std::array<Slot<Hyper>, 2> kSlots{{
      {"m", "ms", "first moment(s), shaped like var."},
      {"v", "vs", "second moment(s), shaped like var."},
  }};

  struct Scalars {
    double m_coefficient, g_coefficient, one_minus_beta_1, one_minus_beta_2, v_scale, epsilon;
    double decay, grad_scale;  // per tensor
  };
  // m_coefficient = lr*u_{t+1}/(1 - u_product*u_{t+1});  g_coefficient = lr*(1-u_t)/(1 - u_product);
  // v_scale = 1/(1 - b2^t)
  static Scalars scalars(const Hyper& h) {
    const double t = h.step;
    const double u_t = h.beta_1 * (1.0 - 0.5 * std::pow(0.96, t));
    const double u_next = h.beta_1 * (1.0 - 0.5 * std::pow(0.96, t + 1.0));
    return {h.lr * u_next / (1.0 - h.u_product * u_next),
            h.lr * (1.0 - u_t) / (1.0 - h.u_product),
            1.0 - h.beta_1,
            1.0 - h.beta_2,
            1.0 / (1.0 - std::pow(h.beta_2, t)),
            h.epsilon,
            0.0,
            1.0};
  }

  // m = m + (g-m)*(1-b1);  v = v + (g*g-v)*(1-b2);
  // p = p - lr*wd*p - (m*m_coefficient + g*g_coefficient)/(sqrt(v*v_scale) + eps)
  template <class T, bool Decay>
  struct Kernel {
    static PYOPT_INLINE void run(T* __restrict param, const T* __restrict grad, T* __restrict m_slot,
                                 T* __restrict v_slot, std::int64_t n, const Scalars& s) {
      using C = compute_t<T>;
      const C cm = C(s.m_coefficient), cg = C(s.g_coefficient), omb1 = C(s.one_minus_beta_1);
      const C omb2 = C(s.one_minus_beta_2), v_scale = C(s.v_scale), eps = C(s.epsilon);
      const C decay = C(s.decay), scale = C(s.grad_scale);
      for (std::int64_t i = 0; i < n; ++i) {
        const C g = load(grad[i]) * scale;
        C m = load(m_slot[i]);
        C v = load(v_slot[i]);
        m = m + (g - m) * omb1;
        v = v + (g * g - v) * omb2;
        m_slot[i] = store<T>(m);
        v_slot[i] = store<T>(v);
        C p = load(param[i]);
        if (Decay) p = p - p * decay;
        param[i] = store<T>(p - (m * cm + g * cg) / (std::sqrt(v * v_scale) + eps));
      }
    }
  };

  template <class T, class F>
  static void with_kernel(const Hyper&, bool decay, F&& f) {
    with_bools([&](auto d) { f(Kernel<T, decltype(d)::value>{}); }, decay);
  }
};

}  // namespace pyopt
