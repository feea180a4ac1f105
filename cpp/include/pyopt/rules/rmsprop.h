// RMSprop, Keras 3 form (epsilon inside the square root), optionally centered and with momentum:
//   v = rho*v + (1-rho)*g^2;  [centered: a = rho*a + (1-rho)*g, v - a^2 in place of v]
//   inc = lr*g/sqrt(v + eps);  p = p - lr*wd*p - inc   [momentum: b = mu*b + inc, p -= b]
// The parts of a trait are described in adam.h.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "../dtypes.h"
#include "../rule_base.h"

namespace pyopt {

struct Rmsprop {
  static constexpr const char* kName = "rmsprop";
  static constexpr const char* kSummary =
      "RMSprop (Keras 3 form, optionally centered and with momentum) with fused clip-by-norm and decoupled weight "
      "decay.";
  static constexpr const char* kFormula =
      "v = rho*v + (1-rho)*g^2;  [centered: a = rho*a + (1-rho)*g, v - a^2 in place of v]\n"
      "inc = lr*g/sqrt(v + epsilon);  p = p - lr*wd*p - inc   [momentum_buffer b: b = momentum*b + inc, p - b]\n";

  struct Hyper {
    double lr, rho, momentum, epsilon;
    bool with_momentum, centered;
  };
  static constexpr std::array<Param<Hyper>, 4> kParams{{
      learning_rate<Hyper>(0.001),
      {"rho", &Hyper::rho, 0.9, closed(0, 1), "decay rate of the mean square v (and of the mean gradient a)"},
      {"momentum", &Hyper::momentum, 0.0, closed(0, 1), "mu of the momentum buffer b", false, &Hyper::with_momentum},
      {"epsilon", &Hyper::epsilon, 1e-7, above(0), "added to v under the square root"},
  }};
  static constexpr std::array<Flag<Hyper>, 0> kFlags{};
  static constexpr std::array<Slot<Hyper>, 3> kSlots{{
      {"velocity", "velocities", "mean square(s) v of the gradient, shaped like var."},
      {"momentum_buffer",
       "momentum_buffers",
       "momentum buffer(s) b, one per variable; none: no momentum (momentum must be 0).",
       {"with_momentum", &Hyper::with_momentum, "keep a momentum buffer b"}},
      {"average_gradient",
       "average_gradients",
       "mean gradient(s) a, one per variable; none: not centered.",
       {"centered", &Hyper::centered, "divide by the centered second moment v - a^2"}},
  }};

  struct Scalars {
    double lr, rho, one_minus_rho, momentum, epsilon;
    double decay, grad_scale;  // per tensor
  };
  static Scalars scalars(const Hyper& h) { return {h.lr, h.rho, 1.0 - h.rho, h.momentum, h.epsilon, 0.0, 1.0}; }

  // v = rho*v + (1-rho)*(g*g);  [a = rho*a + (1-rho)*g;  d = v - a*a + eps, else d = v + eps]
  // inc = (lr*g)/sqrt(d);  [b = mu*b + inc;  p = p - lr*wd*p - b, else p = p - lr*wd*p - inc]
  template <class T, bool Decay, bool WithMomentum, bool Centered>
  struct Kernel {
    static PYOPT_INLINE void run(T* __restrict param, const T* __restrict grad, T* __restrict velocity,
                                 T* __restrict momentum_buffer, T* __restrict average_gradient, std::int64_t n,
                                 const Scalars& s) {
      using C = compute_t<T>;
      const C lr = C(s.lr), rho = C(s.rho), omr = C(s.one_minus_rho), mu = C(s.momentum), eps = C(s.epsilon);
      const C decay = C(s.decay), scale = C(s.grad_scale);
      for (std::int64_t i = 0; i < n; ++i) {
        const C g = load(grad[i]) * scale;
        const C v = rho * load(velocity[i]) + omr * (g * g);
        velocity[i] = store<T>(v);
        C d = v + eps;
        if (Centered) {
          const C a = rho * load(average_gradient[i]) + omr * g;
          average_gradient[i] = store<T>(a);
          d = v - a * a + eps;
        }
        C step = (lr * g) / std::sqrt(d);
        if (WithMomentum) {
          step = mu * load(momentum_buffer[i]) + step;
          momentum_buffer[i] = store<T>(step);
        }
        C p = load(param[i]);
        if (Decay) p = p - p * decay;
        param[i] = store<T>(p - step);
      }
    }
  };

  template <class T, class F>
  static void with_kernel(const Hyper& h, bool decay, F&& f) {
    with_bools(
        [&](auto d, auto m, auto c) { f(Kernel<T, decltype(d)::value, decltype(m)::value, decltype(c)::value>{}); },
        decay, h.with_momentum, h.centered);
  }
};

}  // namespace pyopt
