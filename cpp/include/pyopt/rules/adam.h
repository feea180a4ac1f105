// Adam, "epsilon hat" form as Keras 3, optionally AMSGrad:
//   t = step;  alpha = lr*sqrt(1-b2^t)/(1-b1^t)
//   m = m + (g-m)*(1-b1);  v = v + (g^2-v)*(1-b2);  [amsgrad: vhat = max(vhat, v), used in place of v]
//   p = p - lr*wd*p - alpha*m/(sqrt(v) + eps)
//
// The parts of every rule trait, in order: names and docs, Hyper, the hyperparameter table
// (kParams), flags (kFlags), slots (kSlots), the per-step scalars (Scalars, scalars()), the
// elementwise kernel (Kernel) and the choice of its instance per tensor (with_kernel).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "../dtypes.h"
#include "../rule_base.h"

namespace pyopt {

struct Adam {
  static constexpr const char* kName = "adam";  // the NumPy functions: _core.adam, _core.adam_sparse
  static constexpr const char* kSummary =
      "Adam (Keras 3 form, optionally AMSGrad) with fused clip-by-norm and decoupled weight decay.";
  static constexpr const char* kFormula =
      "alpha = lr*sqrt(1-beta_2^t)/(1-beta_1^t);  m = m + (g-m)*(1-beta_1);  v = v + (g^2-v)*(1-beta_2);\n"
      "[amsgrad: vhat = max(vhat, v), used in place of v];  p = p - lr*wd*p - alpha*m/(sqrt(v)+epsilon)\n";

  struct Hyper {
    double lr, beta_1, beta_2, epsilon, step;  // step: an integer, 1-based (Keras: iterations + 1)
    bool amsgrad;
  };
  static constexpr std::array<Param<Hyper>, 5> kParams{{
      learning_rate<Hyper>(0.001),
      {"beta_1", &Hyper::beta_1, 0.9, closed_open(0, 1), "decay rate of the first moment m"},
      {"beta_2", &Hyper::beta_2, 0.999, closed_open(0, 1), "decay rate of the second moment v"},
      {"epsilon", &Hyper::epsilon, 1e-7, above(0), "added to sqrt(v) in the denominator"},
      {"step", &Hyper::step, 1, integer_at_least(1), "t, the 1-based step number (Keras: iterations + 1)"},
  }};
  static constexpr std::array<Flag<Hyper>, 0> kFlags{};
  static constexpr std::array<Slot<Hyper>, 3> kSlots{{
      {"m", "ms", "first moment(s), shaped like var."},
      {"v", "vs", "second moment(s), shaped like var."},
      {"vhat",
       "vhats",
       "amsgrad maxima of v, one per variable; none: plain Adam.",
       {"amsgrad", &Hyper::amsgrad, "use vhat = max(vhat, v) in place of v"}},
  }};

  // In double, once per step; decay (lr*wd) and grad_scale (the clip factor) are set per tensor.
  struct Scalars {
    double alpha, one_minus_beta_1, one_minus_beta_2, epsilon;
    double decay, grad_scale;
  };
  // alpha = lr * sqrt(1 - b2^t) / (1 - b1^t): two pow calls cost more than updating a small tensor.
  static Scalars scalars(const Hyper& h) {
    const double t = h.step;
    const double alpha = h.lr * std::sqrt(1.0 - std::pow(h.beta_2, t)) / (1.0 - std::pow(h.beta_1, t));
    return {alpha, 1.0 - h.beta_1, 1.0 - h.beta_2, h.epsilon, 0.0, 1.0};
  }

  // m = m + (g-m)*(1-b1);  v = v + (g*g-v)*(1-b2);  [vhat = max(vhat, v)]
  // p = p - lr*wd*p - (m*alpha)/(sqrt(v)+eps)
  template <class T, bool Decay, bool Amsgrad>
  struct Kernel {
    static PYOPT_INLINE void run(T* __restrict param, const T* __restrict grad, T* __restrict m_slot,
                                 T* __restrict v_slot, T* __restrict vhat_slot, std::int64_t n, const Scalars& s) {
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
  };

  // f(Kernel<T, ...>{}) for a tensor with weight decay (decay) or not.
  template <class T, class F>
  static void with_kernel(const Hyper& h, bool decay, F&& f) {
    with_bools([&](auto d, auto amsgrad) { f(Kernel<T, decltype(d)::value, decltype(amsgrad)::value>{}); }, decay,
               h.amsgrad);
  }
};

}  // namespace pyopt
